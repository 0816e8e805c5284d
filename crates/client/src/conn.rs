//! One pipelined connection to one node.
//!
//! A writer task batches queued requests into as few writes as possible; a reader task matches
//! replies to requests in FIFO order, which the protocol guarantees. The writer hands each request
//! to the reader *before* writing its bytes, so a reply can never arrive for a request the reader
//! does not know about, and so the reader can tell, when the connection breaks, exactly which
//! requests may have reached the server.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use raftkv_tls::rustls::ClientConfig;
use raftkv_tls::tokio_rustls::TlsConnector;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Notify, OwnedSemaphorePermit, Semaphore};

use crate::proto::{self, Parsed, Reply, ReplyKind};

/// Why a call got no reply.
#[derive(Debug, Clone)]
pub(crate) enum CallError {
    /// The request's bytes were never written: retrying it anywhere is safe.
    NotSent(String),
    /// The request may have reached the server, and its reply is lost.
    LostAfterSend(String),
}

/// Writes are coalesced up to this size: large enough to amortise the syscall over many pipelined
/// requests, small enough not to delay the first of them.
const MAX_WRITE_BATCH: usize = 256 * 1024;

struct Request {
    bytes: Bytes,
    pending: Pending,
}

struct Pending {
    kind: ReplyKind,
    reply: oneshot::Sender<Result<Reply, CallError>>,
    // Held until the reply is delivered: this is what bounds the requests in flight.
    _permit: OwnedSemaphorePermit,
}

#[derive(Default)]
struct Shared {
    dead: AtomicBool,
    write_failed: Notify,
}

/// Handle to a connection; the tasks end once every handle is gone and every reply delivered.
pub(crate) struct Connection {
    address: String,
    requests: mpsc::UnboundedSender<Request>,
    in_flight: Arc<Semaphore>,
    shared: Arc<Shared>,
}

impl Connection {
    /// Connects to `address`, over TLS when `tls` is given (checking the node's certificate against
    /// the address's host).
    pub(crate) async fn open(
        address: &str,
        max_in_flight: usize,
        max_value_size: usize,
        tls: Option<&Arc<ClientConfig>>,
    ) -> std::io::Result<Connection> {
        let stream = TcpStream::connect(address).await?;
        // Requests are small and latency matters more than packet count; batching is done above.
        stream.set_nodelay(true)?;
        let (request_tx, request_rx) = mpsc::unbounded_channel();
        let (pending_tx, pending_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::default());
        match tls {
            None => {
                let (read_half, write_half) = stream.into_split();
                start_tasks(
                    read_half,
                    write_half,
                    request_rx,
                    pending_tx,
                    pending_rx,
                    &shared,
                    max_value_size,
                );
            }
            Some(tls) => {
                let name = raftkv_tls::server_name_of(address).map_err(std::io::Error::other)?;
                let tls = TlsConnector::from(tls.clone())
                    .connect(name, stream)
                    .await?;
                let (read_half, write_half) = tokio::io::split(tls);
                start_tasks(
                    read_half,
                    write_half,
                    request_rx,
                    pending_tx,
                    pending_rx,
                    &shared,
                    max_value_size,
                );
            }
        }
        Ok(Connection {
            address: address.to_string(),
            requests: request_tx,
            in_flight: Arc::new(Semaphore::new(max_in_flight.max(1))),
            shared,
        })
    }

    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    /// Whether the connection is known to be unusable (closed by the peer, or failed).
    pub(crate) fn is_dead(&self) -> bool {
        self.shared.dead.load(Ordering::Acquire) || self.requests.is_closed()
    }

    /// Sends one request and waits for its reply.
    pub(crate) async fn call(&self, bytes: Bytes, kind: ReplyKind) -> Result<Reply, CallError> {
        let not_sent = || CallError::NotSent(format!("connection to {} is closed", self.address));
        if self.is_dead() {
            return Err(not_sent());
        }
        let permit = self
            .in_flight
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| not_sent())?;
        let (reply_tx, reply_rx) = oneshot::channel();
        let pending = Pending {
            kind,
            reply: reply_tx,
            _permit: permit,
        };
        self.requests
            .send(Request { bytes, pending })
            .map_err(|_| not_sent())?;
        // Every path that has handed a request to the reader answers it explicitly, so a dropped
        // sender means the request was discarded before being written.
        reply_rx.await.unwrap_or_else(|_| Err(not_sent()))
    }
}

/// Starts the writer and reader tasks of one connection.
fn start_tasks<R, W>(
    reader: R,
    writer: W,
    requests: mpsc::UnboundedReceiver<Request>,
    to_reader: mpsc::UnboundedSender<Pending>,
    from_writer: mpsc::UnboundedReceiver<Pending>,
    shared: &Arc<Shared>,
    max_value_size: usize,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(run_writer(writer, requests, to_reader, shared.clone()));
    tokio::spawn(run_reader(
        reader,
        from_writer,
        shared.clone(),
        max_value_size,
    ));
}

async fn run_writer(
    mut socket: impl AsyncWrite + Unpin,
    mut requests: mpsc::UnboundedReceiver<Request>,
    to_reader: mpsc::UnboundedSender<Pending>,
    shared: Arc<Shared>,
) {
    let mut batch = Vec::with_capacity(16 * 1024);
    while let Some(first) = requests.recv().await {
        batch.clear();
        let mut next = Some(first);
        while let Some(request) = next {
            if shared.dead.load(Ordering::Acquire) {
                let _ = request
                    .pending
                    .reply
                    .send(Err(CallError::NotSent("connection is closed".into())));
            } else if let Err(rejected) = to_reader.send(request.pending) {
                let _ = rejected
                    .0
                    .reply
                    .send(Err(CallError::NotSent("connection is closed".into())));
            } else {
                batch.extend_from_slice(&request.bytes);
            }
            next = if batch.len() < MAX_WRITE_BATCH {
                requests.try_recv().ok()
            } else {
                None
            };
        }
        if !batch.is_empty() && write_flushed(&mut socket, &batch).await.is_err() {
            shared.dead.store(true, Ordering::Release);
            shared.write_failed.notify_one();
            return;
        }
    }
}

/// Writes and flushes: over TLS, `write_all` alone can leave the last records in the session.
async fn write_flushed(
    socket: &mut (impl AsyncWrite + Unpin),
    bytes: &[u8],
) -> std::io::Result<()> {
    socket.write_all(bytes).await?;
    socket.flush().await
}

async fn run_reader(
    mut socket: impl AsyncRead + Unpin,
    mut from_writer: mpsc::UnboundedReceiver<Pending>,
    shared: Arc<Shared>,
    max_value_size: usize,
) {
    let mut buffer = BytesMut::with_capacity(16 * 1024);
    let mut waiting: VecDeque<Pending> = VecDeque::new();
    let mut writer_done = false;
    // A reply can arrive before its request is taken from the channel, so unmatched bytes are
    // allowed, but only as many as one reply can hold.
    let unmatched_limit = max_value_size + proto::limits::MAX_REPLY_LINE + 2;
    let failure = 'connection: loop {
        while let Some(front) = waiting.front() {
            match proto::parse_reply(&buffer, front.kind, max_value_size) {
                Ok(Parsed::Complete { reply, consumed }) => {
                    let frame = buffer.split_to(consumed).freeze();
                    if let Some(pending) = waiting.pop_front() {
                        let _ = pending
                            .reply
                            .send(Ok(reply.map_value(|value| frame.slice(value))));
                    }
                }
                Ok(Parsed::Incomplete) => break,
                Err(error) => break 'connection error.to_string(),
            }
        }
        if writer_done && waiting.is_empty() {
            return;
        }
        if waiting.is_empty() && buffer.len() > unmatched_limit {
            break "server sent data nobody asked for".to_string();
        }
        tokio::select! {
            biased;
            _ = shared.write_failed.notified() => break "writing to the server failed".to_string(),
            pending = from_writer.recv(), if !writer_done => match pending {
                Some(pending) => waiting.push_back(pending),
                None => writer_done = true,
            },
            read = socket.read_buf(&mut buffer) => match read {
                Ok(0) => break "server closed the connection".to_string(),
                Ok(_) => {}
                Err(error) => break error.to_string(),
            },
        }
    };
    shared.dead.store(true, Ordering::Release);
    let lost = || CallError::LostAfterSend(failure.clone());
    for pending in waiting.drain(..) {
        let _ = pending.reply.send(Err(lost()));
    }
    // Closing first makes the writer's later hand-offs fail, so it reports those as not sent.
    from_writer.close();
    while let Ok(pending) = from_writer.try_recv() {
        let _ = pending.reply.send(Err(lost()));
    }
}

/// Opens a connection within `limit`.
pub(crate) async fn open_within(
    address: &str,
    limit: Duration,
    max_in_flight: usize,
    max_value_size: usize,
    tls: Option<&Arc<ClientConfig>>,
) -> Result<Connection, String> {
    match tokio::time::timeout(
        limit,
        Connection::open(address, max_in_flight, max_value_size, tls),
    )
    .await
    {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(error)) => Err(format!("{address}: {error}")),
        Err(_) => Err(format!("{address}: connect timed out after {limit:?}")),
    }
}

//! Snapshot streams: how an `InstallSnapshot` travels between two nodes without holding up anything else.
//!
//! The Raft core hands the transport one whole `InstallSnapshot` message (metadata plus the serialised
//! state, possibly hundreds of MiB) and, when no answer comes, the same message again much later. Sent as
//! one frame on the peer's message connection, it would be copied in full by the encoder and, while it is
//! written, heartbeats to that follower would wait behind it (long enough for it to start pre-voting) and
//! its appends would stall. So the transport gives snapshots a path of their own:
//!
//! - Each peer has a [`SnapshotSender`] task and a one-message slot. [`crate::transport::Transport::send`]
//!   puts an `InstallSnapshot` in the slot and returns at once; the task sends at most one snapshot at a
//!   time. A different snapshot arriving meanwhile (newer index, or a new term) cancels the transfer in
//!   progress and replaces it; the same snapshot again (the core's retry) does not restart a transfer that
//!   is still running.
//! - A transfer opens its own TCP connection to the peer, with the usual handshake marked
//!   [`StreamKind::Snapshot`](crate::wire::StreamKind::Snapshot). Heartbeats and appends keep flowing
//!   on the message connection meanwhile.
//! - Protocol, after the handshake:
//!   1. dialler: one frame holding a [`SnapshotHeader`] (message from/to/term, snapshot meta, data
//!      length, crc32c of the data);
//!   2. acceptor: one status byte: [`STATUS_OK`] to go on, or a refusal ([`STATUS_TOO_LARGE`],
//!      [`STATUS_INVALID`]) so an oversized snapshot is refused before its bytes are sent;
//!   3. dialler: the data, raw, written chunk by chunk straight from the snapshot's `Bytes` (no copy in
//!      user space; TCP's window is the flow control: a slow receiver slows the writer, nothing piles up);
//!   4. acceptor: one status byte once the data is checked and the message queued for the node
//!      ([`STATUS_OK`]) or refused ([`STATUS_INVALID`]: wrong checksum), then both sides close.
//! - The acceptor reads the data into one buffer that grows as bytes actually arrive (never by the
//!   length a peer merely claims), checks the crc32c as it goes, and only then delivers the complete
//!   `InstallSnapshot` to the inbound queue, so the node sees exactly what the core sent, or nothing.
//! - A dropped or stalled connection discards the partial data on the receiver. The sender retries a
//!   failed transfer from the start a few times ([`SEND_ATTEMPTS`]); after that the core's own re-send
//!   starts it again. Restarting is always clean because nothing is delivered before the end.

use crate::metrics::Metrics;
use crate::sync::lock;
use crate::transport::dial::{dial, WRITE_TIMEOUT};
use crate::transport::framing::{encode_frame, read_frame};
use crate::wire::{Handshake, SnapshotHeader};
use anyhow::{anyhow, bail, Context};
use bytes::{Bytes, BytesMut};
use raftkv_raft::{Message, MessageBody};
use raftkv_tls::{PeerTls, Reloadable, Stream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// Largest snapshot a node accepts (the data, as declared in the header). Far above what a node's memory
/// budget allows for the store, still a bound on what a confused peer can make us allocate.
pub const MAX_SNAPSHOT_BYTES: u64 = 4 << 30;

/// Bytes handed to the socket per write.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// A header is small (its size grows only with the number of voters).
pub const MAX_SNAPSHOT_HEADER_BYTES: usize = 64 * 1024;

/// Status byte: go on (after the header) or delivered (after the data).
pub const STATUS_OK: u8 = 0;
/// Status byte: the header or the data is not acceptable (bad checksum, wrong addressee...).
pub const STATUS_INVALID: u8 = 1;
/// Status byte: the declared length exceeds the receiver's limit. Retrying is pointless.
pub const STATUS_TOO_LARGE: u8 = 2;

/// Transfers of one snapshot before giving up until the core sends it again.
pub const SEND_ATTEMPTS: u32 = 3;
const RETRY_BACKOFF: Duration = Duration::from_millis(200);

/// The receiver gives up on a sender that sends no byte for this long, and frees the partial data.
const RECEIVE_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the header exchange and the final answer may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// The receive buffer starts at most this big and then grows with what arrives.
const INITIAL_BUFFER_BYTES: usize = 8 << 20;

/// The one snapshot waiting for a peer's sender task.
#[derive(Default)]
pub(crate) struct SnapshotSlot {
    pending: Mutex<Option<Message>>,
    notify: Notify,
}

impl SnapshotSlot {
    /// Puts `msg` in the slot for the sender task. Returns true if it replaced a message the task had not
    /// picked up yet (that one will never be sent).
    pub(crate) fn offer(&self, msg: Message) -> bool {
        let replaced = lock(&self.pending).replace(msg).is_some();
        self.notify.notify_one();
        replaced
    }

    fn take(&self) -> Option<Message> {
        lock(&self.pending).take()
    }
}

/// Whether two InstallSnapshot messages carry the same snapshot for the same leader term, so a transfer
/// of one also serves the other. The data is not compared: the state covering the log up to a committed
/// (index, term) is the same on every node, so meta and length identify it (and comparing hundreds of MiB
/// on a runtime thread would stall it).
fn same_snapshot(a: &Message, b: &Message) -> bool {
    match (&a.body, &b.body) {
        (
            MessageBody::InstallSnapshot { snapshot: x },
            MessageBody::InstallSnapshot { snapshot: y },
        ) => {
            a.from == b.from && a.term == b.term && x.meta == y.meta && x.data.len() == y.data.len()
        }
        _ => false,
    }
}

/// Sends the snapshots queued in one peer's slot, one at a time, each on a connection of its own.
pub(crate) struct SnapshotSender {
    pub(crate) peer_id: u64,
    pub(crate) peer_addr: String,
    /// This node's handshake, marked as a snapshot stream.
    pub(crate) hello: Handshake,
    pub(crate) tls: Option<Arc<Reloadable<PeerTls>>>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) slot: Arc<SnapshotSlot>,
    pub(crate) dropped: Arc<AtomicU64>,
    pub(crate) shutdown: CancellationToken,
}

/// What ended the transfers of one snapshot.
enum Next {
    /// Done (sent, or given up): wait for the next snapshot.
    Idle,
    /// A different snapshot came in and must be sent instead.
    Replaced(Message),
    Stopped,
}

impl SnapshotSender {
    pub(crate) async fn run(self) {
        let mut next = None;
        loop {
            let msg = match next.take() {
                Some(msg) => msg,
                None => match self.slot.take() {
                    Some(msg) => msg,
                    None => {
                        tokio::select! {
                            _ = self.shutdown.cancelled() => return,
                            _ = self.slot.notify.notified() => continue,
                        }
                    }
                },
            };
            match self.send_with_retries(&msg).await {
                Next::Idle => {}
                Next::Replaced(newer) => {
                    // The abandoned snapshot never reached the peer.
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    next = Some(newer);
                }
                Next::Stopped => return,
            }
        }
    }

    /// Runs `work` unless the transport stops or a different snapshot arrives first. The same snapshot
    /// arriving again is absorbed: the work in progress already serves it.
    async fn unless_replaced<T>(
        &self,
        current: &Message,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, Next> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return Err(Next::Stopped),
                _ = self.slot.notify.notified() => {
                    if let Some(newer) = self.slot.take() {
                        if same_snapshot(&newer, current) {
                            debug!(peer = self.peer_id, "snapshot re-sent while its transfer runs; keeping the transfer");
                        } else {
                            return Err(Next::Replaced(newer));
                        }
                    }
                }
                done = &mut work => return Ok(done),
            }
        }
    }

    async fn send_with_retries(&self, msg: &Message) -> Next {
        let MessageBody::InstallSnapshot { snapshot } = &msg.body else {
            return Next::Idle;
        };
        let data = snapshot.data.clone();
        // Hardware-assisted, yet ~30 ms for 300 MiB: not on a runtime thread.
        let checksum = tokio::task::spawn_blocking(move || crc32c::crc32c(&data));
        let crc = match self.unless_replaced(msg, checksum).await {
            Ok(Ok(crc)) => crc,
            Ok(Err(err)) => {
                error!(peer = self.peer_id, "checksumming a snapshot failed: {err}");
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return Next::Idle;
            }
            Err(next) => return next,
        };
        let Some(header) = SnapshotHeader::for_message(msg, crc) else {
            return Next::Idle;
        };
        for attempt in 1..=SEND_ATTEMPTS {
            let started = Instant::now();
            let outcome = match self
                .unless_replaced(msg, self.transfer(&header, &snapshot.data))
                .await
            {
                Ok(outcome) => outcome,
                Err(next) => return next,
            };
            match outcome {
                Ok(()) => {
                    let elapsed = started.elapsed();
                    info!(
                        node = self.hello.node_id,
                        peer = self.peer_id,
                        index = header.meta.index,
                        bytes = header.data_len,
                        elapsed_ms = elapsed.as_millis() as u64,
                        mib_per_s = (header.data_len as f64
                            / (1 << 20) as f64
                            / elapsed.as_secs_f64().max(1e-9))
                            as u64,
                        "snapshot sent"
                    );
                    return Next::Idle;
                }
                Err(TransferError::Refused(reason)) => {
                    error!(
                        node = self.hello.node_id,
                        peer = self.peer_id,
                        index = header.meta.index,
                        bytes = header.data_len,
                        "peer refused the snapshot: {reason}"
                    );
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    return Next::Idle;
                }
                Err(TransferError::Failed(err)) => {
                    warn!(
                        node = self.hello.node_id,
                        peer = self.peer_id,
                        index = header.meta.index,
                        attempt,
                        "snapshot transfer failed: {err:#}"
                    );
                }
            }
            if attempt < SEND_ATTEMPTS {
                match self
                    .unless_replaced(msg, tokio::time::sleep(RETRY_BACKOFF * attempt))
                    .await
                {
                    Ok(()) => {}
                    Err(next) => return next,
                }
            }
        }
        // The core sends it again if the follower still needs it.
        self.dropped.fetch_add(1, Ordering::Relaxed);
        Next::Idle
    }

    /// One attempt: connect, header, data, answer.
    async fn transfer(&self, header: &SnapshotHeader, data: &Bytes) -> Result<(), TransferError> {
        let started = std::time::Instant::now();
        let mut stream = dial(
            &self.peer_addr,
            &self.hello,
            self.peer_id,
            self.tls.as_deref(),
        )
        .await?;
        let mut payload = BytesMut::new();
        header.encode(&mut payload);
        let mut frame = BytesMut::new();
        encode_frame(&payload, &mut frame);
        let go = async {
            stream.write_all(&frame).await?;
            stream.flush().await?;
            stream.read_u8().await
        };
        let status = tokio::time::timeout(EXCHANGE_TIMEOUT, go)
            .await
            .map_err(|_| anyhow!("no answer to the snapshot header"))?
            .context("sending the snapshot header")?;
        check_status(status, "header")?;
        for chunk in data.chunks(SNAPSHOT_CHUNK_BYTES) {
            tokio::time::timeout(WRITE_TIMEOUT, write_flushed(&mut stream, chunk))
                .await
                .map_err(|_| anyhow!("peer accepted no data for {WRITE_TIMEOUT:?}"))?
                .context("sending snapshot data")?;
        }
        let status = tokio::time::timeout(EXCHANGE_TIMEOUT, stream.read_u8())
            .await
            .map_err(|_| anyhow!("peer did not confirm the snapshot"))?
            .context("waiting for the snapshot confirmation")?;
        check_status(status, "data")?;
        self.metrics
            .snapshot_send_duration
            .observe(started.elapsed().as_secs_f64());
        self.metrics.snapshot_sent_bytes.inc_by(data.len() as u64);
        Ok(())
    }
}

/// Writes `bytes` and flushes them: over TLS, `write_all` alone can leave the last records buffered in
/// the session, where the receiver would wait for them forever.
async fn write_flushed(stream: &mut Stream, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

/// Sends the one-byte answer of a snapshot stream.
async fn send_status(stream: &mut Stream, status: u8) -> std::io::Result<()> {
    write_flushed(stream, &[status]).await
}

enum TransferError {
    /// The peer will not take this snapshot: do not retry.
    Refused(String),
    /// Anything that a new connection may cure.
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for TransferError {
    fn from(err: anyhow::Error) -> Self {
        TransferError::Failed(err)
    }
}

fn check_status(status: u8, stage: &str) -> Result<(), TransferError> {
    match status {
        STATUS_OK => Ok(()),
        STATUS_TOO_LARGE => Err(TransferError::Refused(
            "larger than the peer's snapshot size limit".into(),
        )),
        STATUS_INVALID => Err(TransferError::Failed(anyhow!(
            "peer found the snapshot {stage} invalid"
        ))),
        other => Err(TransferError::Failed(anyhow!(
            "unexpected status {other} after the snapshot {stage}"
        ))),
    }
}

/// Receives the one snapshot of a snapshot stream from `peer_id` (handshake done; `buf` holds whatever
/// was read past it), checks it, and delivers it to `inbound` as a one-message batch. Nothing is delivered
/// unless the whole snapshot arrived intact. `max_len` bounds the declared data length.
pub(crate) async fn receive_snapshot(
    stream: &mut Stream,
    buf: &mut BytesMut,
    peer_id: u64,
    me: u64,
    max_len: u64,
    inbound: &mpsc::Sender<Vec<Message>>,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    let header = tokio::time::timeout(
        EXCHANGE_TIMEOUT,
        read_frame(stream, buf, MAX_SNAPSHOT_HEADER_BYTES),
    )
    .await
    .map_err(|_| anyhow!("no snapshot header within {EXCHANGE_TIMEOUT:?}"))??
    .ok_or_else(|| anyhow!("closed before the snapshot header"))?;
    let header = match SnapshotHeader::decode(header) {
        Ok(header) => header,
        Err(err) => {
            let _ = send_status(stream, STATUS_INVALID).await;
            bail!("bad snapshot header: {err}");
        }
    };
    if header.from != peer_id || header.to != me {
        let _ = send_status(stream, STATUS_INVALID).await;
        bail!(
            "snapshot from {} to {} on a stream of node {peer_id} to node {me}",
            header.from,
            header.to
        );
    }
    if header.data_len > max_len {
        let _ = send_status(stream, STATUS_TOO_LARGE).await;
        bail!(
            "refused a snapshot of {} bytes (limit {max_len})",
            header.data_len
        );
    }
    let len = usize::try_from(header.data_len)
        .map_err(|_| anyhow!("snapshot of {} bytes", header.data_len))?;
    if buf.len() > len {
        let _ = send_status(stream, STATUS_INVALID).await;
        bail!("peer sent data before it was asked to");
    }
    send_status(stream, STATUS_OK).await?;

    let started = Instant::now();
    let mut data = BytesMut::with_capacity(len.min(INITIAL_BUFFER_BYTES).max(buf.len()));
    data.extend_from_slice(buf);
    buf.clear();
    let mut crc = crc32c::crc32c(&data);
    while data.len() < len {
        let remaining = len - data.len();
        // Grows by what is about to arrive (amortised doubling), never by what is merely claimed.
        data.reserve(remaining.min(SNAPSHOT_CHUNK_BYTES));
        let before = data.len();
        let mut limited = (&mut *stream).take(remaining as u64);
        let read = tokio::time::timeout(RECEIVE_IDLE_TIMEOUT, limited.read_buf(&mut data))
            .await
            .map_err(|_| {
                anyhow!(
                    "no snapshot data for {RECEIVE_IDLE_TIMEOUT:?} ({} of {len} bytes received)",
                    data.len()
                )
            })??;
        if read == 0 {
            bail!(
                "connection closed after {} of {len} snapshot bytes",
                data.len()
            );
        }
        crc = crc32c::crc32c_append(crc, &data[before..]);
    }
    if crc != header.data_crc {
        let _ = send_status(stream, STATUS_INVALID).await;
        bail!("snapshot checksum mismatch");
    }
    let elapsed = started.elapsed();
    info!(
        node = me,
        peer = peer_id,
        index = header.meta.index,
        bytes = len,
        elapsed_ms = elapsed.as_millis() as u64,
        "snapshot received"
    );
    metrics
        .snapshot_install_duration
        .observe(elapsed.as_secs_f64());
    metrics.snapshot_received_bytes.inc_by(len as u64);
    let message = header.into_message(data.freeze());
    if inbound.send(vec![message]).await.is_err() {
        // The node is shutting down.
        return Ok(());
    }
    let _ = send_status(stream, STATUS_OK).await;
    Ok(())
}

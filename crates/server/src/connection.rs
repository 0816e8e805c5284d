//! One client connection: parse pipelined commands, hand them to the node loop, write the replies
//! back in request order.
//!
//! A reader task parses and forwards; a writer task awaits each reply in turn. The queue between them
//! is bounded, so a client that pipelines faster than the cluster commits is slowed down by TCP
//! back-pressure rather than by our memory.

use bytes::{BufMut, BytesMut};
use raftkv_kv::ClientWrite;
use raftkv_protocol::{ParseError, ParseOutcome, Parser, Reply, Request};
use raftkv_tls::Stream;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tracing::debug;

use crate::metrics::{AllRequestHandles, Metrics, OpKind, Outcome};
use crate::reply_budget::{ChargedReply, ConnectionReplies, ReplyBudget};
use crate::request::{ClientRequest, Op, ReplyHandle};

/// Replies a connection may owe at once; beyond this its reader stops reading.
const MAX_PIPELINE: usize = 1024;
/// Bytes a connection may read beyond the value it has budget for (a command line is at most ~300).
const READ_AHEAD: usize = 16 * 1024;
/// Replies buffered before the writer flushes even if more are ready.
const MAX_WRITE_BUFFER: usize = 256 * 1024;
/// A write buffer grown past this (by a large value) is given back after it is flushed.
const KEEP_WRITE_BUFFER: usize = 2 * MAX_WRITE_BUFFER;
/// How long a client may take to accept a flush of replies.
const REPLY_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

enum Slot {
    /// A reply known at parse time (a protocol error); `close` ends the connection after it.
    Immediate { reply: Reply, close: bool },
    /// A reply the node loop will send.
    Pending {
        reply: oneshot::Receiver<ChargedReply>,
        noreply: bool,
        op: OpKind,
        started: Instant,
        /// The request's share of the connection's and the node's byte budgets, returned with the reply.
        _permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
        /// For a backup: the node's one backup slot, held until the file has been written.
        _backup: Option<OwnedSemaphorePermit>,
    },
}

/// What bounds one connection's appetite.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_value_size: usize,
    /// Bytes of requests (keys and values) whose replies are still owed; past it the reader waits.
    pub max_bytes_in_flight: usize,
    /// A request begun and then stalled for this long closes the connection.
    pub request_timeout: Duration,
    /// Nothing received for this long closes the connection (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// The node-wide budget of buffered request bytes, shared by every connection, and its size.
    pub node_budget: Arc<Semaphore>,
    pub node_budget_bytes: usize,
    /// The node-wide budget of queued reply bytes; past it, connections stop reading requests.
    pub reply_budget: Arc<ReplyBudget>,
    /// Where the connection reports (open connections, failed proposals).
    pub metrics: Arc<Metrics>,
    /// Per-operation request counters and latency histograms.
    pub requests: AllRequestHandles,
    /// One backup at a time per node, from the request until its file is written: each holds a copy
    /// of the store and the encoded file. Another `backup` meanwhile is answered `ERR_INTERNAL` at once.
    pub backup_slot: Arc<Semaphore>,
}

pub async fn serve(socket: Stream, limits: Limits, node: mpsc::Sender<ClientRequest>) {
    let _ = socket.tcp().set_nodelay(true);
    let metrics = limits.metrics.clone();
    metrics.client_connections.inc();
    match socket {
        // A plain socket splits into halves without a lock between them.
        Stream::Plain(tcp) => {
            let (reader, writer) = tcp.into_split();
            serve_halves(reader, writer, limits, node).await;
        }
        tls => {
            let (reader, writer) = tokio::io::split(tls);
            serve_halves(reader, writer, limits, node).await;
        }
    }
    metrics.client_connections.dec();
}

async fn serve_halves<R, W>(reader: R, writer: W, limits: Limits, node: mpsc::Sender<ClientRequest>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (slots_tx, slots_rx) = mpsc::channel(MAX_PIPELINE);
    let report = Report {
        requests: limits.requests.clone(),
        metrics: limits.metrics.clone(),
    };
    let writer_task = tokio::spawn(write_replies(writer, slots_rx, report));
    read_requests(reader, limits, node, slots_tx).await;
    let _ = writer_task.await;
}

async fn read_requests(
    mut reader: impl AsyncRead + Unpin,
    limits: Limits,
    node: mpsc::Sender<ClientRequest>,
    slots: mpsc::Sender<Slot>,
) {
    let mut parser = Parser::new(limits.max_value_size);
    // Permits are bytes; a request holds its own until its reply is written.
    let budget = limits.max_bytes_in_flight.clamp(1, u32::MAX as usize);
    let in_flight = Arc::new(Semaphore::new(budget));
    let node_budget = limits.node_budget.clone();
    let node_cost = |bytes: usize| {
        bytes
            .max(1)
            .min(limits.node_budget_bytes.max(1))
            .min(u32::MAX as usize) as u32
    };
    // This connection's replies queued for it: past its own limit it takes no new requests.
    let replies = Arc::new(ConnectionReplies::default());
    // The node-wide share reserved for a value being read, before its bytes are buffered.
    let mut reserved: Option<OwnedSemaphorePermit> = None;
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        loop {
            let slot = match parser.parse(&mut buf) {
                ParseOutcome::NeedMore => break,
                ParseOutcome::Request(request) => {
                    if request_bytes(&request) > READ_AHEAD {
                        // The value was split off `buf` without a copy, so `buf` still shares its
                        // allocation: move the few bytes after it to a buffer of their own, or an idle
                        // connection would keep a large value's memory alive after the value is gone.
                        buf = BytesMut::from(&buf[..]);
                    }
                    // A request larger than the whole budget waits for everything else to drain.
                    let cost = (request_bytes(&request).max(1)).min(budget) as u32;
                    let Ok(permit) = in_flight.clone().acquire_many_owned(cost).await else {
                        return;
                    };
                    let node_permit = match reserved.take() {
                        Some(permit) => permit,
                        None => {
                            let bytes = request_bytes(&request);
                            let Ok(permit) = node_budget
                                .clone()
                                .acquire_many_owned(node_cost(bytes))
                                .await
                            else {
                                return;
                            };
                            permit
                        }
                    };
                    // Requests already buffered are also held back while replies exceed the budget.
                    limits
                        .reply_budget
                        .wait_admitted(&replies, limits.max_bytes_in_flight)
                        .await;
                    let backup = match request {
                        Request::Backup => match limits.backup_slot.clone().try_acquire_owned() {
                            Ok(slot) => Some(slot),
                            Err(_) => {
                                debug!("a backup is in progress; refusing another");
                                slots
                                    .send(Slot::Immediate {
                                        reply: Reply::ErrInternal,
                                        close: false,
                                    })
                                    .await
                                    .ok();
                                continue;
                            }
                        },
                        _ => None,
                    };
                    match submit(request, (permit, node_permit), backup, &node, &replies).await {
                        Some(slot) => slot,
                        None => return,
                    }
                }
                ParseOutcome::Error(ParseError::Recoverable) => Slot::Immediate {
                    reply: Reply::ErrCmdErr,
                    close: false,
                },
                ParseOutcome::Error(ParseError::Fatal) => {
                    let _ = slots
                        .send(Slot::Immediate {
                            reply: Reply::ErrCmdErr,
                            close: true,
                        })
                        .await;
                    return;
                }
            };
            if slots.send(slot).await.is_err() {
                return;
            }
        }
        // A value is buffered only within the node's budget: reserve its share before reading it, so
        // that a thousand connections sending large values cannot buffer a thousand values at once.
        if reserved.is_none() {
            if let Some(len) = parser.pending_value_len() {
                let Ok(permit) = node_budget.clone().acquire_many_owned(node_cost(len)).await
                else {
                    return;
                };
                reserved = Some(permit);
            }
        }
        // Read no further ahead than the reservation covers: a command line is short, so beyond the
        // value being read (if any) a connection buffers at most READ_AHEAD unbudgeted bytes.
        // The value being read (and its CR LF), once its share of the budget is held. Its length, not
        // the permit count: the permits are capped at the node's budget, which may be smaller.
        let reserved_bytes = match (&reserved, parser.pending_value_len()) {
            (Some(_), Some(len)) => len + 2,
            _ => 0,
        };
        let room = (READ_AHEAD + reserved_bytes)
            .saturating_sub(buf.len())
            .max(1);
        let spare = buf.capacity() - buf.len();
        if reserved_bytes > 0 && spare < room {
            // Sized to the value being read, so the value's allocation is not much larger than it.
            buf.reserve(room);
        } else if spare < 4096 {
            // Keys parsed out of `buf` share its allocation, so growing it allocates anew: do it once
            // per READ_AHEAD bytes of small requests, not once per request.
            buf.reserve(READ_AHEAD);
        }
        // A stalled request holds a buffer and a connection slot: give it a bounded time. An idle
        // connection holds little, and is closed only if the operator asked for it.
        let limit = if !buf.is_empty() || parser.mid_request() {
            Some(limits.request_timeout)
        } else {
            limits.idle_timeout
        };
        // While replies owed to clients exceed the node's budget, take no new requests: the writers
        // drain them (or time out), and only then do more replies get made.
        limits
            .reply_budget
            .wait_admitted(&replies, limits.max_bytes_in_flight)
            .await;
        let mut window = (&mut buf).limit(room);
        let read = reader.read_buf(&mut window);
        let read = match limit {
            Some(limit) => match tokio::time::timeout(limit, read).await {
                Ok(read) => read,
                Err(_) => {
                    debug!(
                        ?limit,
                        "closing a client connection that sent nothing in time"
                    );
                    return;
                }
            },
            None => read.await,
        };
        match read {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Bytes of keys and values a request carries: its cost against the connection's in-flight budget.
fn request_bytes(request: &Request) -> usize {
    match request {
        Request::Set { key, value, .. } | Request::Cas { key, value, .. } => {
            key.len() + value.len()
        }
        Request::Get { key }
        | Request::Getm { key }
        | Request::Delete { key }
        | Request::Pttl { key } => key.len(),
        Request::Keys { pattern } => pattern.len(),
        Request::Scan { pattern, .. } => pattern.as_ref().map_or(0, |p| p.len()),
        Request::Register
        | Request::Backup
        | Request::Members(_)
        | Request::RandomKey { .. }
        | Request::DbSize => 0,
        Request::Stale { read, .. } => request_bytes(read),
        Request::InSession { write, .. } => request_bytes(write),
    }
}

/// The metrics' name for a request: a write in a session counts as that write.
fn op_kind(request: &Request) -> OpKind {
    match request {
        Request::Set { .. } => OpKind::set,
        Request::Cas { .. } => OpKind::cas,
        Request::Delete { .. } => OpKind::delete,
        Request::Get { .. } => OpKind::get,
        Request::Getm { .. } | Request::Pttl { .. } => OpKind::getm,
        Request::Keys { .. }
        | Request::Scan { .. }
        | Request::RandomKey { .. }
        | Request::DbSize => OpKind::get,
        Request::Register => OpKind::register,
        Request::Backup => OpKind::backup,
        Request::Members(_) => OpKind::members,
        Request::Stale { read, .. } => op_kind(read),
        Request::InSession { write, .. } => op_kind(write),
    }
}

/// Hands a parsed request to the node loop. `None` if the node is shutting down.
async fn submit(
    request: Request,
    permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
    backup: Option<OwnedSemaphorePermit>,
    node: &mpsc::Sender<ClientRequest>,
    replies: &Arc<ConnectionReplies>,
) -> Option<Slot> {
    let started = Instant::now();
    let kind = op_kind(&request);
    let (op, noreply) = match request {
        Request::Get { .. }
        | Request::Getm { .. }
        | Request::Pttl { .. }
        | Request::Keys { .. }
        | Request::Scan { .. }
        | Request::RandomKey { .. }
        | Request::DbSize
        | Request::Backup => (Op::Read(request), false),
        Request::Members(members) => (Op::Members(members), false),
        Request::Stale { max_lag, read } => (
            Op::StaleRead {
                read: *read,
                max_lag,
            },
            false,
        ),
        write => match ClientWrite::from_request(write) {
            Some(write) => (
                Op::Write {
                    command: write.command,
                    session: write.session,
                },
                write.noreply,
            ),
            None => {
                return Some(Slot::Immediate {
                    reply: Reply::ErrCmdErr,
                    close: false,
                })
            }
        },
    };
    let (tx, rx) = oneshot::channel();
    let handle = ReplyHandle {
        sender: tx,
        connection: replies.clone(),
    };
    node.send(ClientRequest { op, handle }).await.ok()?;
    Some(Slot::Pending {
        reply: rx,
        noreply,
        op: kind,
        started,
        _permits: permits,
        _backup: backup,
    })
}

/// Where a connection's writer reports each reply.
struct Report {
    requests: AllRequestHandles,
    metrics: Arc<Metrics>,
}

impl Report {
    fn reply(&self, op: OpKind, started: Instant, reply: &Reply) {
        let handles = self.requests.of(op);
        let outcome = Outcome::of(reply);
        handles.count(outcome).inc();
        handles.duration.observe(started.elapsed().as_secs_f64());
        let write = matches!(op, OpKind::set | OpKind::cas | OpKind::delete);
        if write && outcome == Outcome::error {
            self.metrics.proposals_failed.inc();
        }
    }
}

async fn write_replies(
    mut writer: impl AsyncWrite + Unpin,
    mut slots: mpsc::Receiver<Slot>,
    report: Report,
) {
    let mut out = BytesMut::with_capacity(16 * 1024);
    while let Some(mut slot) = slots.recv().await {
        loop {
            let close = match slot {
                Slot::Immediate { reply, close } => {
                    reply.encode(&mut out);
                    close
                }
                Slot::Pending {
                    mut reply,
                    noreply,
                    op,
                    started,
                    ..
                } => {
                    let (answer, charge) = match reply.try_recv() {
                        Ok(answer) => answer,
                        Err(oneshot::error::TryRecvError::Empty) => {
                            // Flush what is ready before waiting, so earlier replies are not held back.
                            if flush(&mut writer, &mut out).await.is_err() {
                                return;
                            }
                            reply.await.unwrap_or((Reply::ErrInternal, None))
                        }
                        Err(oneshot::error::TryRecvError::Closed) => (Reply::ErrInternal, None),
                    };
                    report.reply(op, started, &answer);
                    if let Reply::Backup { file } = &answer {
                        // Too large to copy into the write buffer: written from where it is.
                        if write_backup(&mut writer, &mut out, file).await.is_err() {
                            return;
                        }
                    } else if !(noreply && answer.suppressed_by_noreply()) {
                        answer.encode(&mut out);
                    }
                    // The bytes are in this connection's bounded buffer now.
                    drop(charge);
                    false
                }
            };
            if close {
                let _ = flush(&mut writer, &mut out).await;
                let _ = writer.shutdown().await;
                debug!("closed a client connection after a fatal protocol error");
                return;
            }
            if out.len() >= MAX_WRITE_BUFFER && flush(&mut writer, &mut out).await.is_err() {
                return;
            }
            match slots.try_recv() {
                Ok(next) => slot = next,
                Err(_) => break,
            }
        }
        if flush(&mut writer, &mut out).await.is_err() {
            return;
        }
    }
    let _ = writer.shutdown().await;
}

/// Writes a backup reply: what is buffered, the header line, then the file in chunks, each under the
/// same timeout as any reply.
async fn write_backup(
    writer: &mut (impl AsyncWrite + Unpin),
    out: &mut BytesMut,
    file: &bytes::Bytes,
) -> std::io::Result<()> {
    out.extend_from_slice(&Reply::<bytes::Bytes>::backup_header(file.len()));
    flush(writer, out).await?;
    for chunk in file.chunks(1 << 20) {
        out.extend_from_slice(chunk);
        flush(writer, out).await?;
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// Writes `out`. A client that accepts none of it for [`REPLY_WRITE_TIMEOUT`] is given up on: its
/// replies would otherwise hold the node's reply budget, and pause every other client, forever.
pub(crate) async fn flush(
    writer: &mut (impl AsyncWrite + Unpin),
    out: &mut BytesMut,
) -> std::io::Result<()> {
    if !out.is_empty() {
        let write = async {
            writer.write_all(out).await?;
            // Over TLS the last records may sit in the session until flushed.
            writer.flush().await
        };
        tokio::time::timeout(REPLY_WRITE_TIMEOUT, write)
            .await
            .map_err(|_| std::io::Error::other("the client read no replies in time"))??;
        out.clear();
        if out.capacity() > KEEP_WRITE_BUFFER {
            // An idle connection should not keep a large reply's buffer.
            *out = BytesMut::with_capacity(16 * 1024);
        }
    }
    Ok(())
}

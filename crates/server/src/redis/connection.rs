//! One Redis client connection on the leader: parse pipelined commands, hand their requests to the
//! node loop in order, write the replies back in order.
//!
//! As on the CS733 port, a reader task parses and submits and a writer task awaits each command's
//! replies in turn; the queue between them is bounded, and every command holds its bytes against the
//! connection's and the node's budgets until its reply is written, so a client that pipelines faster
//! than the cluster commits is slowed by TCP back-pressure, not by our memory.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use raftkv_kv::{Reply, Request, Watch};
use raftkv_resp::{parse_command, Parsed, Value};
use raftkv_tls::Stream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tracing::debug;

use super::commands::{self, Finish, LocalQuery, Plan, TxCommand};
use super::transaction::{self, Exec, Part, Permits, Step, Transaction};
use super::{wait, Context};
use crate::connection::flush;
use crate::reply_budget::{ChargedReply, ConnectionReplies};
use crate::request::{ClientRequest, Op, ReplyHandle};

/// Commands a connection may have in progress; beyond this its reader stops reading.
const MAX_PIPELINE: usize = 1024;
/// Bytes read at a time, and read past what a command still arriving holds budget for.
const READ_AHEAD: usize = 16 * 1024;
/// Replies handed to a connection's writer, and replies it has written.
#[derive(Default)]
struct Owed {
    sent: AtomicUsize,
    written: AtomicUsize,
}

impl Owed {
    /// Whether a reply is still owed, or one was written since `written_before` was read.
    fn busy_since(&self, written_before: usize) -> bool {
        let written = self.written.load(Ordering::Relaxed);
        self.sent.load(Ordering::Relaxed) != written || written != written_before
    }
}

/// Replies made without the node larger than this hold the budgets until written.
const HELD_REPLY: usize = 1024;

/// About how many bytes a reply takes (its strings; framing counted roughly).
fn reply_size(value: &Value) -> usize {
    match value {
        Value::Bulk(bytes) => bytes.len() + 16,
        Value::Simple(text) | Value::Error(text) => text.len() + 8,
        Value::Array(values) => values.iter().map(reply_size).sum::<usize>() + 16,
        Value::Map(pairs) => pairs
            .iter()
            .map(|(key, value)| reply_size(key) + reply_size(value))
            .sum::<usize>()
            .saturating_add(16),
        Value::Integer(_) | Value::Null | Value::NullArray | Value::Double(_) => 24,
    }
}
/// Replies buffered before the writer flushes even if more are ready.
const MAX_WRITE_BUFFER: usize = 256 * 1024;

static NEXT_CLIENT_ID: AtomicU64 = AtomicU64::new(1);

enum Slot {
    Now {
        value: Value,
        close: bool,
    },
    /// A large reply known now, holding its bytes against the budgets until written.
    Held {
        value: Value,
        close: bool,
        _permits: Permits,
    },
    /// The protocol version changes from this reply on.
    Protocol {
        value: Value,
        resp3: bool,
    },
    Node {
        replies: Vec<oneshot::Receiver<ChargedReply>>,
        finish: Finish,
        _permits: Permits,
    },
    /// WAIT: answered once every earlier reply is out.
    Wait {
        replicas: i64,
        timeout: Option<std::time::Duration>,
    },
    /// EXEC: one reply, read through the transaction's parts.
    Exec {
        reply: oneshot::Receiver<ChargedReply>,
        parts: Vec<Part>,
        _permits: (Permits, Vec<Permits>),
    },
}

pub(super) async fn serve(stream: Stream, ctx: Arc<Context>) {
    let _ = stream.tcp().set_nodelay(true);
    match stream {
        // Owned halves of a plain socket need no lock between the reader and the writer.
        Stream::Plain(socket) => {
            let (reader, writer) = socket.into_split();
            serve_halves(reader, writer, ctx).await
        }
        tls => {
            let (reader, writer) = tokio::io::split(tls);
            serve_halves(reader, writer, ctx).await
        }
    }
}

async fn serve_halves(
    reader: impl AsyncRead + Unpin,
    writer: impl AsyncWrite + Unpin + Send + 'static,
    ctx: Arc<Context>,
) {
    let (slots_tx, slots_rx) = mpsc::channel(MAX_PIPELINE);
    let owed = Arc::new(Owed::default());
    let writer_task = tokio::spawn(write_replies(writer, slots_rx, ctx.clone(), owed.clone()));
    read_commands(reader, ctx, slots_tx, owed).await;
    let _ = writer_task.await;
}

struct Session {
    id: u64,
    name: Option<Bytes>,
    resp3: bool,
    tx: Transaction,
}

/// What a connection's reader needs to hand requests to the node loop.
struct Submitter {
    ctx: Arc<Context>,
    in_flight: Arc<Semaphore>,
    budget: usize,
    replies: Arc<ConnectionReplies>,
}

impl Submitter {
    /// Sends `ops` in order, holding `cost` bytes against the budgets; `None` if the node or the
    /// connection is closing.
    /// Takes `cost` bytes from both budgets (waiting for room); `None` if the node is closing.
    async fn reserve(&self, cost: usize) -> Option<Permits> {
        let cost = cost.clamp(1, self.budget) as u32;
        let own = self.in_flight.clone().acquire_many_owned(cost).await.ok()?;
        let node_cost = cost.min(self.ctx.node_budget_permits);
        let node = self
            .ctx
            .limits
            .node_budget
            .clone()
            .acquire_many_owned(node_cost)
            .await
            .ok()?;
        Some((own, node))
    }

    async fn submit(
        &self,
        ops: Vec<Op>,
        cost: usize,
    ) -> Option<(Vec<oneshot::Receiver<ChargedReply>>, Permits)> {
        let permits = self.reserve(cost).await?;
        let mut receivers = Vec::with_capacity(ops.len());
        for op in ops {
            let (tx, rx) = oneshot::channel();
            let handle = ReplyHandle {
                sender: tx,
                connection: self.replies.clone(),
            };
            self.ctx
                .node
                .send(ClientRequest { op, handle })
                .await
                .ok()?;
            receivers.push(rx);
        }
        Some((receivers, permits))
    }

    /// WATCH: each key's version now (0 if absent), read through ReadIndex; `Err` with the answer
    /// if a read failed.
    async fn watch(&self, keys: Vec<Bytes>, tx: &mut Transaction) -> Result<(), (Value, bool)> {
        for key in keys {
            if !raftkv_protocol::limits::is_valid_key(&key) {
                return Err((
                    Value::err("raftkv keys are 1 to 250 bytes of printable ASCII without spaces"),
                    false,
                ));
            }
            let cost = key.len();
            let read = Op::Read(Request::Getm { key: key.clone() });
            let Some((mut receivers, _permits)) = self.submit(vec![read], cost).await else {
                return Err((Value::err("the node is shutting down"), true));
            };
            let reply = match receivers.pop() {
                Some(receiver) => receiver
                    .await
                    .map_or(Reply::ErrInternal, |(reply, _)| reply),
                None => Reply::ErrInternal,
            };
            let version = match reply {
                Reply::ValueMeta { version, .. } => version,
                Reply::ErrNotFound => 0,
                other => {
                    return Err(match commands::finish(Finish::Ok, vec![other]) {
                        Some(value) => (value, false),
                        None => (not_leader(), true),
                    })
                }
            };
            tx.watched(Watch { key, version });
        }
        Ok(())
    }
}

fn not_leader() -> Value {
    Value::Error("READONLY this node is no longer the leader; reconnect".into())
}

/// `owed` counts the replies sent to the writer and not written yet: a connection owed replies (a
/// WAIT, a slow commit) is not idle.
async fn read_commands(
    mut reader: impl AsyncRead + Unpin,
    ctx: Arc<Context>,
    slots: mpsc::Sender<Slot>,
    owed: Arc<Owed>,
) {
    let budget = ctx.limits.max_bytes_in_flight.clamp(1, u32::MAX as usize);
    let in_flight = Arc::new(Semaphore::new(budget));
    let replies = Arc::new(ConnectionReplies::default());
    let mut session = Session {
        id: NEXT_CLIENT_ID.fetch_add(1, Ordering::Relaxed),
        name: None,
        resp3: false,
        tx: Transaction::default(),
    };
    let submitter = Submitter {
        ctx: ctx.clone(),
        in_flight,
        budget,
        replies,
    };
    let limits = raftkv_resp::Limits {
        max_bulk: ctx.limits.max_value_size,
        ..raftkv_resp::Limits::default()
    };
    let mut buf = BytesMut::with_capacity(READ_AHEAD);
    // The node's budget held for the bytes of a command still arriving, and how many it covers.
    let mut partial: Option<(OwnedSemaphorePermit, usize)> = None;
    loop {
        loop {
            let args = match parse_command(&mut buf, &limits) {
                Ok(Parsed::Command(args)) => {
                    // The command's own charge replaces what its bytes held while they arrived
                    // (released first: holding both could wait for ever on the connection's budget).
                    partial = None;
                    args
                }
                Ok(Parsed::Empty) => continue,
                Ok(Parsed::Incomplete { .. }) => break,
                Err(error) => {
                    let value = Value::err(error);
                    owed.sent.fetch_add(1, Ordering::Relaxed);
                    let _ = slots.send(Slot::Now { value, close: true }).await;
                    return;
                }
            };
            ctx.stats.command();
            let cost = args.iter().map(Bytes::len).sum::<usize>();
            let plan = commands::plan(&args, ctx.limits.max_value_size);
            let queued = session.tx.in_multi() && !matches!(plan, Plan::Transaction(_));
            let too_large = queued && !session.tx.fits(cost, submitter.budget);
            if queued && !too_large {
                let Some(permits) = submitter.reserve(cost).await else {
                    return;
                };
                session.tx.hold(permits, cost);
            }
            // RESET also forgets the connection's name and returns it to RESP2, as in Redis.
            let resets = matches!(plan, Plan::Transaction(TxCommand::Reset));
            let plan = match session.tx.step(plan, too_large) {
                Step::Run(plan) => plan,
                Step::Answer(value) => Plan::Now {
                    value,
                    close: false,
                },
                Step::Watch(keys) => {
                    let (value, close) = match submitter.watch(keys, &mut session.tx).await {
                        Ok(()) => (Value::ok(), false),
                        Err(answer) => answer,
                    };
                    Plan::Now { value, close }
                }
                Step::Exec => {
                    let mut tx = std::mem::take(&mut session.tx);
                    let exec = tx.exec(|query| local(query, &session, &ctx));
                    session.tx = tx;
                    match exec {
                        Exec::Answer(value) => Plan::Now {
                            value,
                            close: false,
                        },
                        Exec::Submit { op, parts, held } => {
                            let Some((mut receivers, permits)) =
                                submitter.submit(vec![op], cost).await
                            else {
                                return;
                            };
                            let Some(reply) = receivers.pop() else { return };
                            let slot = Slot::Exec {
                                reply,
                                parts,
                                _permits: (permits, held),
                            };
                            owed.sent.fetch_add(1, Ordering::Relaxed);
                            if slots.send(slot).await.is_err() {
                                return;
                            }
                            continue;
                        }
                    }
                }
            };
            let slot = match plan {
                // A reply of any size made here (ECHO, PING with a message, an EXEC of such
                // commands) holds the budgets until it is written, like a reply from the node: a
                // client that reads none could otherwise queue a whole pipeline of them.
                Plan::Now { value, close } if reply_size(&value) > HELD_REPLY => {
                    let Some(permits) = submitter.reserve(reply_size(&value)).await else {
                        return;
                    };
                    Slot::Held {
                        value,
                        close,
                        _permits: permits,
                    }
                }
                Plan::Now { value, close } => Slot::Now { value, close },
                Plan::Hello { resp3, name } => {
                    if name.is_some() {
                        session.name = name;
                    }
                    session.resp3 = resp3;
                    Slot::Protocol {
                        value: hello_reply(&session, &ctx),
                        resp3,
                    }
                }
                Plan::SetName(name) => {
                    session.name = (!name.is_empty()).then_some(name);
                    Slot::Now {
                        value: Value::ok(),
                        close: false,
                    }
                }
                Plan::Local(query) => Slot::Now {
                    value: local(query, &session, &ctx),
                    close: false,
                },
                Plan::Wait { replicas, timeout } => Slot::Wait { replicas, timeout },
                Plan::Node { ops, finish } => {
                    let Some((replies, permits)) = submitter.submit(ops, cost).await else {
                        return;
                    };
                    Slot::Node {
                        replies,
                        finish,
                        _permits: permits,
                    }
                }
                Plan::Transaction(_) => unreachable!("the transaction state takes these"),
            };
            let slot = match slot {
                Slot::Now { value, .. } if resets => {
                    session.name = None;
                    session.resp3 = false;
                    Slot::Protocol {
                        value,
                        resp3: false,
                    }
                }
                slot => slot,
            };
            owed.sent.fetch_add(1, Ordering::Relaxed);
            if slots.send(slot).await.is_err() {
                return;
            }
        }
        // As on the client port: a command begun and stalled holds a buffer and a connection slot,
        // so it gets `client_request_timeout_s`; an idle connection is closed only if the operator
        // asked for it (`client_idle_timeout_s`, Redis's `timeout`), and only while it is owed no
        // replies (a WAIT, a slow commit: Redis does not time out blocked clients either).
        let limit = if buf.is_empty() {
            ctx.limits.idle_timeout
        } else {
            Some(ctx.limits.request_timeout)
        };
        // A command still arriving holds the node's budget for its bytes before more are read, so
        // clients streaming endless commands cannot make the node buffer more than its budget. One
        // larger than both the connection's budget and the largest value (with its framing) is
        // refused. Inside MULTI the queued commands already hold node budget that only this
        // command's end (EXEC) can release, so nothing more is taken there: the size cap bounds it.
        let mut room = READ_AHEAD;
        if !buf.is_empty() {
            let largest = submitter.budget.max(limits.max_bulk + READ_AHEAD);
            if buf.len() >= largest {
                let value = Value::err(
                    "Protocol error: a command larger than the connection's budget \
                     (max_request_bytes_in_flight)",
                );
                owed.sent.fetch_add(1, Ordering::Relaxed);
                let _ = slots.send(Slot::Now { value, close: true }).await;
                return;
            }
            let wanted = (buf.len() + READ_AHEAD).min(largest);
            let held = partial.as_ref().map_or(0, |(_, held)| *held);
            if !session.tx.in_multi() && held < wanted {
                // What is held is given back first, so no two waits overlap.
                drop(partial.take());
                let permits = (wanted as u32).min(ctx.node_budget_permits);
                let node = ctx.limits.node_budget.clone();
                let Ok(held) = node.acquire_many_owned(permits).await else {
                    return;
                };
                partial = Some((held, wanted));
            }
            room = wanted - buf.len();
        }
        // While replies owed to clients exceed the node's budget (or this connection's share),
        // take no new commands: the writers drain them, or give up on clients that read nothing.
        ctx.limits
            .reply_budget
            .wait_admitted(&submitter.replies, ctx.limits.max_bytes_in_flight)
            .await;
        if buf.capacity() - buf.len() < room.min(READ_AHEAD) {
            buf.reserve(room.min(READ_AHEAD));
        }
        let written_before = owed.written.load(Ordering::Relaxed);
        let mut window = (&mut buf).limit(room);
        let read = reader.read_buf(&mut window);
        let read = match limit {
            Some(limit) => match tokio::time::timeout(limit, read).await {
                Ok(read) => read,
                // Reading is cancel-safe: nothing was read. A connection owed replies, or sent
                // one meanwhile, was not idle: wait again, the idle time restarting.
                Err(_) if buf.is_empty() && owed.busy_since(written_before) => continue,
                Err(_) => {
                    debug!(
                        ?limit,
                        "closing a Redis connection that sent nothing in time"
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

fn hello_reply(session: &Session, ctx: &Context) -> Value {
    let text = |s: &str| Value::bulk(s.to_string());
    Value::Map(vec![
        (text("server"), text("redis")),
        (text("version"), text(super::REDIS_VERSION)),
        (
            text("proto"),
            Value::Integer(if session.resp3 { 3 } else { 2 }),
        ),
        (text("id"), Value::Integer(session.id as i64)),
        (text("mode"), text("standalone")),
        (
            text("role"),
            text(if ctx.is_leader() { "master" } else { "replica" }),
        ),
        (text("modules"), Value::Array(Vec::new())),
    ])
}

/// What `CONFIG GET` answers: the settings clients and `redis-benchmark` ask for, with raftkv's
/// truth where one exists (every write is on disk on a majority before it is acknowledged:
/// `appendfsync always`, in effect; the limits and timeouts are the cluster file's).
fn settings(ctx: &Context) -> [(&'static str, String); 9] {
    let idle_s = ctx.limits.idle_timeout.map_or(0, |idle| idle.as_secs());
    [
        ("appendonly", "yes".into()),
        ("appendfsync", "always".into()),
        ("save", String::new()),
        ("databases", "1".into()),
        ("maxmemory", "0".into()),
        ("maxmemory-policy", "noeviction".into()),
        ("maxclients", ctx.max_connections.to_string()),
        ("timeout", idle_s.to_string()),
        ("proto-max-bulk-len", ctx.limits.max_value_size.to_string()),
    ]
}

fn local(query: LocalQuery, session: &Session, ctx: &Context) -> Value {
    match query {
        LocalQuery::ClientName => session.name.clone().map_or(Value::Null, Value::Bulk),
        LocalQuery::ClientId => Value::Integer(session.id as i64),
        LocalQuery::Time => {
            let micros = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros());
            Value::Array(vec![
                Value::bulk((micros / 1_000_000).to_string()),
                Value::bulk((micros % 1_000_000).to_string()),
            ])
        }
        LocalQuery::ConfigGet(patterns) => commands::config_get(&patterns, &settings(ctx)),
        LocalQuery::Info(sections) => Value::bulk(super::info::info(ctx, &sections)),
    }
}

async fn write_replies(
    mut writer: impl AsyncWrite + Unpin,
    mut slots: mpsc::Receiver<Slot>,
    ctx: Arc<Context>,
    owed: Arc<Owed>,
) {
    let mut out = BytesMut::with_capacity(16 * 1024);
    let mut resp3 = false;
    while let Some(slot) = slots.recv().await {
        let close = match slot {
            Slot::Now { value, close } | Slot::Held { value, close, .. } => {
                value.encode(&mut out, resp3);
                close
            }
            Slot::Protocol { value, resp3: next } => {
                resp3 = next;
                value.encode(&mut out, resp3);
                false
            }
            Slot::Node {
                replies, finish, ..
            } => {
                let mut answers = Vec::with_capacity(replies.len());
                for mut reply in replies {
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
                    drop(charge);
                    answers.push(answer);
                }
                answer(commands::finish(finish, answers), &mut out, resp3)
            }
            Slot::Wait { replicas, timeout } => {
                if flush(&mut writer, &mut out).await.is_err() {
                    return;
                }
                let count = wait::replicas(&ctx, replicas, timeout, || slots.is_closed()).await;
                Value::Integer(count).encode(&mut out, resp3);
                false
            }
            Slot::Exec { reply, parts, .. } => {
                if flush(&mut writer, &mut out).await.is_err() {
                    return;
                }
                let reply = reply.await.map_or(Reply::ErrInternal, |(reply, _)| reply);
                answer(transaction::exec_reply(reply, parts), &mut out, resp3)
            }
        };
        owed.written.fetch_add(1, Ordering::Relaxed);
        if close {
            let _ = flush(&mut writer, &mut out).await;
            let _ = writer.shutdown().await;
            debug!("closed a Redis connection");
            return;
        }
        if (out.len() >= MAX_WRITE_BUFFER || slots.is_empty())
            && flush(&mut writer, &mut out).await.is_err()
        {
            return;
        }
    }
    let _ = flush(&mut writer, &mut out).await;
}

/// Encodes a command's answer; `None` (leadership moved) answers READONLY and asks to close: Redis
/// clients do not follow redirects, and a reconnect reaches the new leader through any node.
fn answer(value: Option<Value>, out: &mut BytesMut, resp3: bool) -> bool {
    match value {
        Some(value) => {
            value.encode(out, resp3);
            false
        }
        None => {
            not_leader().encode(out, resp3);
            true
        }
    }
}

//! One Redis client connection on the leader: parse pipelined commands, hand their requests to the
//! node loop in order, write the replies back in order.
//!
//! As on the CS733 port, a reader task parses and submits and a writer task awaits each command's
//! replies in turn; the queue between them is bounded, and every command holds its bytes against the
//! connection's and the node's budgets until its reply is written, so a client that pipelines faster
//! than the cluster commits is slowed by TCP back-pressure, not by our memory.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use raftkv_kv::Reply;
use raftkv_resp::{parse_command, Parsed, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tracing::debug;

use super::commands::{self, Finish, LocalQuery, Plan};
use super::Context;
use crate::reply_budget::{ChargedReply, ConnectionReplies};
use crate::request::{ClientRequest, ReplyHandle};

/// Commands a connection may have in progress; beyond this its reader stops reading.
const MAX_PIPELINE: usize = 1024;
/// Replies buffered before the writer flushes even if more are ready.
const MAX_WRITE_BUFFER: usize = 256 * 1024;

static NEXT_CLIENT_ID: AtomicU64 = AtomicU64::new(1);

enum Slot {
    Now {
        value: Value,
        close: bool,
    },
    /// The protocol version changes from this reply on.
    Protocol {
        value: Value,
        resp3: bool,
    },
    Node {
        replies: Vec<oneshot::Receiver<ChargedReply>>,
        finish: Finish,
        _permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
    },
}

pub(super) async fn serve(socket: TcpStream, ctx: Arc<Context>) {
    let _ = socket.set_nodelay(true);
    let (reader, writer) = socket.into_split();
    let (slots_tx, slots_rx) = mpsc::channel(MAX_PIPELINE);
    let writer_task = tokio::spawn(write_replies(writer, slots_rx));
    read_commands(reader, ctx, slots_tx).await;
    let _ = writer_task.await;
}

struct Session {
    id: u64,
    name: Option<Bytes>,
    resp3: bool,
}

async fn read_commands(
    mut reader: impl AsyncRead + Unpin,
    ctx: Arc<Context>,
    slots: mpsc::Sender<Slot>,
) {
    let budget = ctx.limits.max_bytes_in_flight.clamp(1, u32::MAX as usize);
    let in_flight = Arc::new(Semaphore::new(budget));
    let replies = Arc::new(ConnectionReplies::default());
    let mut session = Session {
        id: NEXT_CLIENT_ID.fetch_add(1, Ordering::Relaxed),
        name: None,
        resp3: false,
    };
    let limits = raftkv_resp::Limits {
        max_bulk: ctx.limits.max_value_size,
        ..raftkv_resp::Limits::default()
    };
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        loop {
            let args = match parse_command(&mut buf, &limits) {
                Ok(Parsed::Command(args)) => args,
                Ok(Parsed::Empty) => continue,
                Ok(Parsed::Incomplete { .. }) => break,
                Err(error) => {
                    let value = Value::err(error);
                    let _ = slots.send(Slot::Now { value, close: true }).await;
                    return;
                }
            };
            let slot = match commands::plan(&args, ctx.limits.max_value_size) {
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
                Plan::Node { ops, finish } => {
                    let cost = args.iter().map(Bytes::len).sum::<usize>().clamp(1, budget) as u32;
                    let Ok(own) = in_flight.clone().acquire_many_owned(cost).await else {
                        return;
                    };
                    let node_cost = cost.min(ctx.node_budget_permits);
                    let Ok(node) = ctx
                        .limits
                        .node_budget
                        .clone()
                        .acquire_many_owned(node_cost)
                        .await
                    else {
                        return;
                    };
                    let mut receivers = Vec::with_capacity(ops.len());
                    for op in ops {
                        let (tx, rx) = oneshot::channel();
                        let handle = ReplyHandle {
                            sender: tx,
                            connection: replies.clone(),
                        };
                        if ctx.node.send(ClientRequest { op, handle }).await.is_err() {
                            return;
                        }
                        receivers.push(rx);
                    }
                    Slot::Node {
                        replies: receivers,
                        finish,
                        _permits: (own, node),
                    }
                }
            };
            if slots.send(slot).await.is_err() {
                return;
            }
        }
        match reader.read_buf(&mut buf).await {
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

fn local(query: LocalQuery, session: &Session, ctx: &Context) -> Value {
    match query {
        LocalQuery::ClientName => session.name.clone().map_or(Value::Null, Value::Bulk),
        LocalQuery::ClientId => Value::Integer(session.id as i64),
        LocalQuery::DbSize => Value::Integer(ctx.status.borrow().store_keys as i64),
        LocalQuery::Time => {
            let micros = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros());
            Value::Array(vec![
                Value::bulk((micros / 1_000_000).to_string()),
                Value::bulk((micros % 1_000_000).to_string()),
            ])
        }
        LocalQuery::Info(section) => Value::bulk(super::info(ctx, section.as_deref())),
    }
}

async fn write_replies(mut writer: impl AsyncWrite + Unpin, mut slots: mpsc::Receiver<Slot>) {
    let mut out = BytesMut::with_capacity(16 * 1024);
    let mut resp3 = false;
    while let Some(slot) = slots.recv().await {
        let close = match slot {
            Slot::Now { value, close } => {
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
                match commands::finish(finish, answers) {
                    Some(value) => {
                        value.encode(&mut out, resp3);
                        false
                    }
                    None => {
                        // Leadership moved: Redis clients do not follow redirects, so end the
                        // connection; the client's reconnect reaches the new leader through any node.
                        Value::Error(
                            "READONLY this node is no longer the leader; reconnect".into(),
                        )
                        .encode(&mut out, resp3);
                        true
                    }
                }
            }
        };
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

async fn flush(writer: &mut (impl AsyncWrite + Unpin), out: &mut BytesMut) -> std::io::Result<()> {
    if !out.is_empty() {
        writer.write_all(out).await?;
        out.clear();
    }
    Ok(())
}

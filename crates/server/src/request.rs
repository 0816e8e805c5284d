//! What a client connection asks of the node loop, and how the answer comes back.

use raftkv_kv::{Command, Reply, Request};
use tokio::sync::oneshot;

/// One client command on its way to the node loop. The connection keeps the receiving half of
/// `reply` in request order, which is how pipelined replies stay in order.
#[derive(Debug)]
pub struct ClientRequest {
    pub op: Op,
    pub reply: oneshot::Sender<Reply>,
}

#[derive(Debug)]
pub enum Op {
    /// A write, validated by the parser, to go through the log.
    Write(Command),
    /// `get` or `getm`, served through ReadIndex.
    Read(Request),
}

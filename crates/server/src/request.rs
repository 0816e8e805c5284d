//! What a client connection asks of the node loop, and how the answer comes back: the replica's
//! request with a oneshot channel as its handle.

use crate::reply_budget::{ChargedReply, ConnectionReplies};
use std::sync::Arc;
use tokio::sync::oneshot;

pub use raftkv_replica::Op;

/// One client command on its way to the node loop. The connection keeps the receiving half of the
/// handle in request order, which is how pipelined replies stay in order.
pub type ClientRequest = raftkv_replica::ClientRequest<ReplyHandle>;

/// Where the node loop sends one request's reply, with its share of the reply budget, and the
/// connection that share is also charged to.
pub struct ReplyHandle {
    pub sender: oneshot::Sender<ChargedReply>,
    pub connection: Arc<ConnectionReplies>,
}

//! The Redis front end: a RESP listener on each node's `resp_addr`, sharing the store and the log with
//! the CS733 port (a key set over one protocol is visible over the other).
//!
//! Redis clients do not follow redirects, so any node serves any client: on the leader a connection is
//! served here ([`connection`]); on a follower it is relayed, byte for byte, to the leader's RESP port
//! ([`proxy`]), which keeps the order of one connection's commands and their linearizability exactly
//! as on the leader. When leadership moves, the leader's connections end with a `READONLY` error and
//! the client's reconnect finds the new leader through any node. What each command does is in
//! [`commands`]; `docs/redis.md` lists them and the differences from Redis.

mod commands;
mod connection;
mod info;
mod proxy;
mod transaction;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tracing::{debug, warn};

use crate::connection::Limits;
use crate::request::ClientRequest;
use crate::status::NodeStatus;
pub use info::PortStats;

/// What `HELLO` and `INFO` say the server is: the Redis version whose commands and replies this
/// front end follows.
pub const REDIS_VERSION: &str = "7.0.0";

/// What every Redis connection of a node shares.
pub struct Context {
    pub id: u64,
    /// The node loop.
    pub node: mpsc::Sender<ClientRequest>,
    /// The node's published status (role, leader, key count), refreshed every 100 ms.
    pub status: watch::Receiver<NodeStatus>,
    /// The budgets and limits of client connections (the CS733 port's).
    pub limits: Limits,
    /// The node-wide budget in permits (bytes, capped to what a semaphore holds).
    pub node_budget_permits: u32,
    /// Every node's RESP address, from the cluster file, to relay followers' connections.
    pub resp_addrs: HashMap<u64, String>,
    /// How long a connection waits for a leader to be known.
    pub leader_wait: Duration,
    /// The port the Redis listener is bound to, and how many clients it takes at once (for `INFO`).
    pub port: u16,
    pub max_connections: usize,
    /// Connections and commands counted for `INFO`.
    pub stats: PortStats,
}

impl Context {
    pub fn is_leader(&self) -> bool {
        let status = self.status.borrow();
        status.leader == Some(self.id) && status.role == "leader"
    }
}

/// Accepts Redis clients until `shutdown`: each is served on the leader or relayed to it.
pub async fn accept(
    listener: TcpListener,
    ctx: Arc<Context>,
    max_connections: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let socket = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(err) => {
                    warn!("accept failed on the Redis port: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tokio::spawn(proxy::refuse(socket, "ERR max number of clients reached"));
            continue;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let counted = ctx.clone();
            let _connected = counted.stats.connected();
            match proxy::route(&ctx).await {
                proxy::Route::Here => connection::serve(socket, ctx).await,
                proxy::Route::Relay(addr) => proxy::relay(socket, &addr).await,
                proxy::Route::Refuse(why) => proxy::refuse(socket, &why).await,
            }
            debug!("Redis connection ended");
            drop(permit);
        });
    }
}

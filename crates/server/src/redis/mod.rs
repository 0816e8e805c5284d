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
mod wait;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tracing::{debug, warn};

use raftkv_tls::rustls::ClientConfig;
use raftkv_tls::tokio_rustls::TlsAcceptor;
use raftkv_tls::{Reloadable, Stream};

use crate::connection::Limits;
use crate::listener::{accept_tls, ClientTls};
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
    /// TLS as on the client port (`[tls] client`): demanded of Redis clients too, and used to
    /// relay them to the leader.
    pub tls: ClientTls,
    pub relay_tls: Option<Arc<Reloadable<Arc<ClientConfig>>>>,
}

/// What a plain-text client of a Redis port that demands TLS is told.
const TLS_REQUIRED: &[u8] = b"-ERR this port requires TLS\r\n";

impl Context {
    pub fn is_leader(&self) -> bool {
        let status = self.status.borrow();
        status.leads(self.id)
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
            let refused = Stream::from(socket);
            tokio::spawn(proxy::refuse(refused, "ERR max number of clients reached"));
            continue;
        };
        let ctx = ctx.clone();
        let tls = ctx.tls.as_ref().map(|tls| TlsAcceptor::from(tls.get()));
        tokio::spawn(async move {
            let counted = ctx.clone();
            let _connected = counted.stats.connected();
            let stream = match tls {
                None => Stream::from(socket),
                Some(acceptor) => {
                    let timeout = ctx.limits.request_timeout;
                    let accepted = accept_tls(socket, acceptor, timeout, TLS_REQUIRED).await;
                    let Some(stream) = accepted else {
                        return;
                    };
                    stream
                }
            };
            match proxy::route(&ctx).await {
                proxy::Route::Here => connection::serve(stream, ctx).await,
                proxy::Route::Relay { id, addr } => {
                    let tls = ctx.relay_tls.as_ref().map(|tls| tls.get());
                    proxy::relay(stream, id, &addr, tls).await
                }
                proxy::Route::Refuse(why) => proxy::refuse(stream, &why).await,
            }
            debug!("Redis connection ended");
            drop(permit);
        });
    }
}

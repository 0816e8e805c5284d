//! Where a new Redis connection goes: served here on the leader, relayed to the leader's RESP port on a
//! follower (every byte both ways, so the leader sees the client's commands in order and the client
//! its replies), relayed to a voter by a learner or removed node that knows no leader (it can never
//! lead; the voter relays on), or refused with a reason when no leader is known.

use std::sync::Arc;
use std::time::{Duration, Instant};

use raftkv_tls::rustls::pki_types::ServerName;
use raftkv_tls::rustls::ClientConfig;
use raftkv_tls::tokio_rustls::TlsConnector;
use raftkv_tls::Stream;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::debug;

use super::Context;

pub(super) enum Route {
    Here,
    /// Relay to node `id`'s Redis port at `addr`.
    Relay {
        id: u64,
        addr: String,
    },
    Refuse(String),
}

/// Decides from the node's status, waiting up to `leader_wait` for a leader to be known.
pub(super) async fn route(ctx: &Context) -> Route {
    let deadline = Instant::now() + ctx.leader_wait;
    let mut status = ctx.status.clone();
    loop {
        if ctx.is_leader() {
            return Route::Here;
        }
        let known = {
            let status = status.borrow();
            let leader = status.leader.filter(|l| *l != ctx.id);
            // The membership in the log knows nodes that joined later; the cluster file, founders.
            leader.map(|leader| {
                let addr = status
                    .resp_addrs
                    .get(&leader)
                    .or(ctx.resp_addrs.get(&leader));
                (leader, addr.cloned())
            })
        };
        // A learner or removed node knows no election of its own to wait for: it relays to a voter,
        // which relays on to the leader it knows (or waits for one).
        let fallback = known.is_none().then(|| {
            let status = status.borrow();
            status.voters_to_try.iter().find_map(|voter| {
                let addr = status.resp_addrs.get(voter).or(ctx.resp_addrs.get(voter));
                addr.map(|addr| (*voter, addr.clone()))
            })
        });
        if let Some(Some((id, addr))) = fallback {
            return Route::Relay { id, addr };
        }
        if let Some((leader, addr)) = known {
            return match addr {
                Some(addr) => Route::Relay { id: leader, addr },
                None => Route::Refuse(format!(
                    "ERR the leader (node {leader}) has no Redis address (resp_addr) in the \
                     membership or this node's cluster file; connect to it directly"
                )),
            };
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || tokio::time::timeout(left, status.changed()).await.is_err() {
            return Route::Refuse("ERR no leader is known; retry".into());
        }
    }
}

/// How long a relay waits to be connected to the other node (TLS handshake included): an address
/// that drops packets would otherwise hold the client's slot for the kernel's two minutes.
const RELAY_DIAL: Duration = Duration::from_secs(5);

/// Relays `client` to node `id`'s Redis port at `addr` until either side closes. With `tls` (the
/// node's client ports demand TLS) the relay dials over TLS too, presenting this node's certificate
/// and checking that the other end's names node `id`.
pub(super) async fn relay(mut client: Stream, id: u64, addr: &str, tls: Option<Arc<ClientConfig>>) {
    let _ = client.tcp().set_nodelay(true);
    let dialled = tokio::time::timeout(RELAY_DIAL, dial(id, addr, tls)).await;
    let mut upstream = match dialled {
        Ok(Ok(upstream)) => upstream,
        Ok(Err(err)) => {
            refuse(
                client,
                &format!("ERR cannot reach the leader at {addr}: {err}"),
            )
            .await;
            return;
        }
        Err(_) => {
            refuse(
                client,
                &format!("ERR cannot reach the leader at {addr}: timed out"),
            )
            .await;
            return;
        }
    };
    if let Err(err) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        debug!("relay to {addr} ended: {err}");
    }
}

/// Connects to node `id`'s Redis port at `addr`, over TLS when `tls` is given (checking that the
/// other end's certificate names node `id`).
async fn dial(id: u64, addr: &str, tls: Option<Arc<ClientConfig>>) -> std::io::Result<Stream> {
    let tcp = TcpStream::connect(addr).await?;
    let _ = tcp.set_nodelay(true);
    let Some(config) = tls else {
        return Ok(Stream::from(tcp));
    };
    let name = ServerName::try_from(raftkv_tls::node_name(id))
        .map_err(|_| std::io::Error::other("not a valid TLS name"))?;
    let tls = TlsConnector::from(config).connect(name, tcp).await?;
    Ok(Stream::from(tls))
}

/// Answers the client's first command with `error` and closes.
pub(super) async fn refuse(mut client: Stream, error: &str) {
    let _ = client.write_all(format!("-{error}\r\n").as_bytes()).await;
    let _ = client.shutdown().await;
}

//! Where a new Redis connection goes: served here on the leader, relayed to the leader's RESP port on a
//! follower (every byte both ways, so the leader sees the client's commands in order and the client
//! its replies), relayed to a voter by a learner or removed node that knows no leader (it can never
//! lead; the voter relays on), or refused with a reason when no leader is known.

use std::time::Instant;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::debug;

use super::Context;

pub(super) enum Route {
    Here,
    Relay(String),
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
                status
                    .resp_addrs
                    .get(voter)
                    .or(ctx.resp_addrs.get(voter))
                    .cloned()
            })
        });
        if let Some(Some(addr)) = fallback {
            return Route::Relay(addr);
        }
        if let Some((leader, addr)) = known {
            return match addr {
                Some(addr) => Route::Relay(addr),
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

/// Relays `client` to the leader at `addr` until either side closes.
pub(super) async fn relay(mut client: TcpStream, addr: &str) {
    let _ = client.set_nodelay(true);
    let mut upstream = match TcpStream::connect(addr).await {
        Ok(upstream) => upstream,
        Err(err) => {
            refuse(
                client,
                &format!("ERR cannot reach the leader at {addr}: {err}"),
            )
            .await;
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    if let Err(err) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        debug!("relay to {addr} ended: {err}");
    }
}

/// Answers the client's first command with `error` and closes.
pub(super) async fn refuse(mut client: TcpStream, error: &str) {
    let _ = client.write_all(format!("-{error}\r\n").as_bytes()).await;
    let _ = client.shutdown().await;
}

//! `WAIT numreplicas timeout`: how many other nodes hold every write this connection has been
//! answered for.
//!
//! A write is answered only once a majority of the voters has it on disk, so `quorum - 1` other
//! nodes hold it by the time its reply is out: WAIT answers that at once when it is enough. Asked for
//! more, it counts the followers whose log matches the leader's up to a commit index published after
//! the connection's earlier replies (the node's status, refreshed every 100 ms), until enough do or
//! the timeout passes (none when 0, as in Redis: a WAIT for more nodes than there are waits until the
//! client goes away).

use std::time::Duration;

use super::Context;

pub(super) async fn replicas(
    ctx: &Context,
    wanted: i64,
    timeout: Option<Duration>,
    client_gone: impl Fn() -> bool,
) -> i64 {
    let mut status = ctx.status.clone();
    // Marks the status published so far as seen: every one `changed` yields from here on was taken
    // after the earlier replies were sent, so its commit index covers their writes.
    let quorum = status.borrow_and_update().quorum;
    let guaranteed = quorum.saturating_sub(1) as i64;
    if wanted <= guaranteed {
        return guaranteed;
    }
    let deadline = timeout.map(|timeout| tokio::time::Instant::now() + timeout);
    let mut best = guaranteed;
    loop {
        let changed = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, status.changed()).await {
                Ok(changed) => changed,
                Err(_) => return best,
            },
            None => status.changed().await,
        };
        if changed.is_err() || client_gone() {
            return best;
        }
        let status = status.borrow_and_update();
        if !status.leads(ctx.id) {
            // Only the leader knows its followers' logs; what was guaranteed still is.
            return best;
        }
        let holding = status
            .peers
            .iter()
            .filter(|peer| peer.match_index >= status.commit_index)
            .count() as i64;
        best = best.max(holding);
        if best >= wanted {
            return best;
        }
    }
}

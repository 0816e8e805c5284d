//! `WAIT numreplicas timeout`: how many other nodes hold every write this connection has been
//! answered for.
//!
//! A write is answered only once a majority of the voters has it on disk, so `quorum - 1` other
//! nodes hold it by the time its reply is out: WAIT answers that at once when it is enough. Asked for
//! more, it takes the commit index of the first status published after the connection's earlier
//! replies (the node's status, refreshed every 100 ms; it covers their writes) and counts the
//! followers whose log matches the leader's up to it, as later statuses come, until enough do or the
//! timeout passes. Unlike Redis, a WAIT never blocks longer than `client_request_timeout_s` (a
//! timeout of 0 means that long): a connection blocked for ever would hold its budgets for ever.

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
    let longest = ctx.limits.request_timeout;
    let timeout = timeout.map_or(longest, |timeout| timeout.min(longest));
    let deadline = tokio::time::Instant::now() + timeout;
    let mut best = guaranteed;
    // The commit index of the first status taken after the earlier replies: fixed from then on, as
    // later ones move past what this connection wrote.
    let mut target = None;
    loop {
        match tokio::time::timeout_at(deadline, status.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return best,
        }
        if client_gone() {
            return best;
        }
        let status = status.borrow_and_update();
        if !status.leads(ctx.id) {
            // Only the leader knows its followers' logs; what was guaranteed still is.
            return best;
        }
        let target = *target.get_or_insert(status.commit_index);
        let holding = status
            .peers
            .iter()
            .filter(|peer| peer.match_index >= target)
            .count() as i64;
        best = best.max(holding);
        if best >= wanted {
            return best;
        }
    }
}

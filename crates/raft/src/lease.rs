//! The leader lease (dissertation §6.4.1): reads served without a heartbeat round while a majority is
//! known to refuse any other candidate. Opt-in ([`crate::Config::lease_reads`]); ReadIndex is the
//! default because the lease trades a network round for an assumption about clocks.
//!
//! **Why it is safe.** With check-quorum a follower that heard from the leader refuses (pre-)votes for
//! `election_ticks` of its own ticks (`in_leader_lease`). So when a majority has answered a heartbeat
//! the leader sent at tick `T`, none of them helps elect anyone else until at least
//! `election_ticks - 1` of their tick periods after `T`, and no other leader can exist before then.
//! The leader counts its lease from `T` (when it sent, not when the answers came) for
//! [`lease_ticks`] of its own ticks, a margin below that.
//!
//! **What it assumes.** Every node's ticks follow its monotonic clock, and those clocks run at rates
//! within [`MAX_CLOCK_RATE_DIFFERENCE_PERCENT`] of each other. Wall clocks may still skew and jump:
//! nothing here reads them. A paused process is safe only if its driver catches its ticks up before it
//! serves a read (the server and the simulator's nodes do, through `raftkv-replica`).
//!
//! **What ends a lease early.** Losing leadership; handing leadership over (a transfer's vote is
//! granted inside the voters' refusal window, so the leader gives up its lease for the rest of the
//! term the moment it sends `TimeoutNow`); a membership change (acknowledgements count only from
//! rounds sent under the current voters). A node that restarts refuses votes for an election timeout
//! before anything else, so a crash cannot shorten its refusal window either.

use std::collections::VecDeque;

/// How much faster one node's ticks may run than another's for a lease to stay safe.
pub const MAX_CLOCK_RATE_DIFFERENCE_PERCENT: u64 = 10;

/// Rounds remembered while waiting for their acknowledgements. Dropping the oldest only loses lease
/// renewals, never safety.
const MAX_ROUNDS: usize = 1024;

/// Ticks a lease lasts after the heartbeat round that earned it was sent: `election_ticks - 1` (the
/// shortest refusal window a follower's ticks can give), divided by the tolerated clock rate
/// difference, minus one for the sender's tick rounding. 0 disables leases (too few ticks).
pub fn lease_ticks(election_ticks: u32) -> u64 {
    let window = u64::from(election_ticks.saturating_sub(1));
    (window * 100 / (100 + MAX_CLOCK_RATE_DIFFERENCE_PERCENT)).saturating_sub(1)
}

/// The leader's lease: the heartbeat rounds it sent, and until which tick a majority's answers hold.
#[derive(Debug, Default)]
pub(crate) struct Lease {
    /// Rounds sent and not yet known to be acknowledged by a majority: (round, tick it was sent at).
    sent: VecDeque<(u64, u64)>,
    /// The lease holds while the node's tick count is below this.
    until: u64,
    /// Given up for the rest of the term (a leadership transfer was started).
    revoked: bool,
}

impl Lease {
    /// A new term of leadership: nothing earned or given up before counts.
    pub(crate) fn new_term(&mut self) {
        self.forget_rounds();
        self.revoked = false;
    }

    /// A change of voters: what the old ones acknowledged is no lease over the new ones.
    pub(crate) fn forget_rounds(&mut self) {
        self.sent.clear();
        self.until = 0;
    }

    /// A heartbeat round `round` leaves at tick `now`.
    pub(crate) fn sent(&mut self, round: u64, now: u64) {
        if self.sent.len() == MAX_ROUNDS {
            self.sent.pop_front();
        }
        self.sent.push_back((round, now));
    }

    /// A majority has acknowledged every round up to `round`: the lease runs from when it was sent.
    pub(crate) fn confirmed(&mut self, round: u64, lease_ticks: u64) {
        while let Some(&(sent_round, sent_at)) = self.sent.front() {
            if sent_round > round {
                break;
            }
            self.until = self.until.max(sent_at + lease_ticks);
            self.sent.pop_front();
        }
    }

    /// For the rest of this term: the voters may be electing our successor inside their window.
    pub(crate) fn revoke(&mut self) {
        self.revoked = true;
    }

    pub(crate) fn holds(&self, now: u64) -> bool {
        !self.revoked && now < self.until
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_is_shorter_than_the_shortest_refusal_window() {
        // The server's defaults: 500 ms elections at 10 ms ticks.
        assert_eq!(lease_ticks(50), 43);
        for election_ticks in 2..200u32 {
            let lease = lease_ticks(election_ticks);
            if lease == 0 {
                continue;
            }
            // Even with the follower's ticks 10 % fast, its window outlasts the lease plus rounding.
            assert!((lease + 1) * 110 <= u64::from(election_ticks - 1) * 100);
        }
        assert_eq!(lease_ticks(2), 0);
    }

    #[test]
    fn lease_runs_from_when_the_round_was_sent() {
        let mut lease = Lease::default();
        lease.sent(1, 100);
        lease.sent(2, 105);
        assert!(!lease.holds(100));
        lease.confirmed(1, 43);
        assert!(lease.holds(142));
        assert!(!lease.holds(143));
        lease.revoke();
        assert!(!lease.holds(101));
        lease.forget_rounds();
        lease.sent(3, 110);
        lease.confirmed(3, 43);
        assert!(
            !lease.holds(111),
            "a revoked lease stays revoked for the term"
        );
        lease.new_term();
        assert!(!lease.holds(111));
    }
}

//! ReadIndex (dissertation §6.4): linearizable reads without writing the log.
//!
//! A read arriving at the leader joins the next *round*. When a round starts, the leader records its
//! commit index and sends a heartbeat carrying the round number. Once a majority (counting the leader)
//! has answered a heartbeat of that round or a later one, nobody else can have been leader at a higher
//! term when the round began, so every read of the round may be served once the state machine has applied
//! the recorded index. Many reads share one round, so the heartbeat cost is paid per batch, not per read.

use std::collections::VecDeque;

use crate::types::{Index, ReadState};

#[derive(Debug, Default)]
pub(crate) struct ReadIndexQueue {
    /// Reads that wait for the leader to commit an entry of its own term: until then its commit index
    /// may be behind what an earlier leader acknowledged (§8).
    awaiting_leader_commit: Vec<u64>,
    /// Reads that will join the next round.
    unsent: Vec<u64>,
    /// Rounds under way, oldest first: (round, commit index at its start, contexts).
    rounds: VecDeque<(u64, Index, Vec<u64>)>,
    last_round: u64,
}

impl ReadIndexQueue {
    pub(crate) fn push(&mut self, ctx: u64, leader_has_committed_in_term: bool) {
        if leader_has_committed_in_term {
            self.unsent.push(ctx);
        } else {
            self.awaiting_leader_commit.push(ctx);
        }
    }

    /// The leader has committed an entry of its term: held reads may now take part in rounds.
    pub(crate) fn leader_committed_in_term(&mut self) {
        self.unsent.append(&mut self.awaiting_leader_commit);
    }

    /// Starts a round for the unsent reads, if any; returns its number.
    pub(crate) fn start_round(&mut self, commit: Index) -> Option<u64> {
        if self.unsent.is_empty() {
            return None;
        }
        self.last_round += 1;
        let reads = std::mem::take(&mut self.unsent);
        self.rounds.push_back((self.last_round, commit, reads));
        Some(self.last_round)
    }

    /// A round of its own for a heartbeat that carries no new reads (the leader lease renews on it).
    pub(crate) fn next_round(&mut self) -> u64 {
        self.last_round += 1;
        self.last_round
    }

    /// Serves, into `out`, every read of rounds up to `confirmed`.
    pub(crate) fn confirm(&mut self, confirmed: u64, out: &mut Vec<ReadState>) {
        while let Some((round, _, _)) = self.rounds.front() {
            if *round > confirmed {
                break;
            }
            if let Some((_, index, reads)) = self.rounds.pop_front() {
                out.extend(reads.into_iter().map(|ctx| ReadState { ctx, index }));
            }
        }
    }

    /// The newest round still waiting for acknowledgements, or 0 if none.
    pub(crate) fn newest_pending_round(&self) -> u64 {
        self.rounds.back().map_or(0, |(round, _, _)| *round)
    }

    /// No read waits in any stage.
    pub(crate) fn is_empty(&self) -> bool {
        self.awaiting_leader_commit.is_empty() && self.unsent.is_empty() && self.rounds.is_empty()
    }

    pub(crate) fn has_unsent(&self) -> bool {
        !self.unsent.is_empty()
    }

    /// Forgets every read (leadership lost); the driver fails the requests it still holds.
    pub(crate) fn clear(&mut self) {
        self.awaiting_leader_commit.clear();
        self.unsent.clear();
        self.rounds.clear();
    }
}

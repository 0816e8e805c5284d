//! Membership changes (dissertation chapter 4, single-server changes): proposing one, the rule that a
//! node follows the newest membership in its log whether committed or not (§4.1), keeping the leader's
//! follower list in step with it, and a removed leader stepping down once its removal commits (§4.2.2).

use bytes::Bytes;

use super::*;
use crate::membership::{ConfChange, ConfChangeError};

impl Raft {
    /// Proposes one membership change, with `context` as the new membership's driver context. Returns
    /// the index and term of its `Config` entry, which takes effect on this node at once and on every
    /// other node as soon as the entry reaches its log. A promotion is refused while the learner is
    /// more than `max_lag` entries behind this leader's log.
    ///
    /// Refused with [`ConfChangeError::InProgress`] until this leader has committed an entry of its own
    /// term and the previous change has committed: with one change at a time between memberships that
    /// differ by one voter, every majority of the old overlaps every majority of the new (§4.1), and
    /// the first rule closes the hole in single-server changes across leader changes (Ongaro, raft-dev
    /// 2015: without it, two changes proposed by successive leaders can each commit on a disjoint
    /// majority).
    pub fn propose_conf_change(
        &mut self,
        change: ConfChange,
        context: Bytes,
        max_lag: u64,
    ) -> Result<(Index, Term), ConfChangeError> {
        match self.ensure_leader() {
            Err(ProposeError::NotLeader { leader }) => {
                return Err(ConfChangeError::NotLeader { leader })
            }
            Err(ProposeError::Transferring) => return Err(ConfChangeError::Transferring),
            Ok(()) => {}
        }
        if !self.committed_in_current_term() || self.config_index > self.log.commit {
            return Err(ConfChangeError::InProgress);
        }
        let next = self.membership.apply(change, context)?;
        // A change commits only on a majority of the new voters; with no such majority alive it would
        // hang, and the cluster with it (the old majority can no longer decide anything either).
        let responding = next
            .voters
            .iter()
            .filter(|id| **id == self.id || self.progress.get(id).is_some_and(|p| p.is_alive()))
            .count();
        if responding < next.quorum() {
            return Err(ConfChangeError::NoLiveMajority {
                responding,
                needed: next.quorum(),
            });
        }
        if let ConfChange::Promote(id) = change {
            let matched = self.progress.get(&id).map_or(0, |p| p.match_index);
            let lag = self.log.last_index().saturating_sub(matched);
            // Also: the learner must hold the current membership (the entry that made it a learner or
            // a later one). On a log shorter than `max_lag`, a learner that never answered at all is
            // within the lag, and promoting it would make a voter of a node that may not exist yet.
            if lag > max_lag || matched < self.config_index {
                return Err(ConfChangeError::NotCaughtUp { id, lag });
            }
        }
        let (index, term) = self.append_entry(EntryKind::Config, next.to_bytes());
        self.set_membership(next, index);
        Ok((index, term))
    }

    /// The membership in force at `index` (at least the snapshot's index): the newest `Config` entry at
    /// or before it, else the snapshot's, else the bootstrap membership. What a snapshot taken at
    /// `index` must carry.
    pub fn membership_at(&self, index: Index) -> Membership {
        let newest = self
            .log
            .entries()
            .iter()
            .rev()
            .skip_while(|e| e.index > index)
            .find(|e| e.kind == EntryKind::Config)
            .and_then(|e| Membership::from_entry_data(&e.data));
        newest.unwrap_or_else(|| self.base_membership())
    }

    /// The index of the entry the current membership comes from (the snapshot's index, or 0 for the
    /// bootstrap membership). The membership is committed once the commit index reaches it.
    pub fn config_index(&self) -> Index {
        self.config_index
    }

    /// The membership below the log: the snapshot's, or the configured one for a log that starts at 1.
    fn base_membership(&self) -> Membership {
        if self.log.base.membership.voters.is_empty() {
            self.bootstrap.clone()
        } else {
            self.log.base.membership.clone()
        }
    }

    /// Makes `membership` (from the entry at `index`) the one in force. A leader starts replicating to
    /// new members at once; it keeps sending to removed ones until the change commits, so that they
    /// usually learn of their removal.
    pub(super) fn set_membership(&mut self, membership: Membership, index: Index) {
        self.membership = membership;
        self.config_index = index;
        // Acknowledgements counted under the old voters say nothing about a majority of the new ones.
        self.lease.forget_rounds();
        if self.role == Role::Leader {
            let next = self.log.last_index() + 1;
            for id in self.membership.members().collect::<Vec<_>>() {
                if id != self.id {
                    self.progress
                        .entry(id)
                        .or_insert_with(|| Progress::new(next));
                }
            }
            self.broadcast_pending = true;
            // Left the only voter, it must answer the rounds it sent to the voters it had.
            self.release_reads_as_sole_voter();
        }
        if matches!(self.role, Role::PreCandidate | Role::Candidate) && !self.may_campaign() {
            self.become_follower(self.term, None);
        }
    }

    /// Whether this node may start an election: it is a voter of its newest membership, or that
    /// membership has not committed yet (as far as it knows) and it is a voter of the one before, which
    /// may still need it (§4.2.2). A node removed by an entry a majority holds must be able to win
    /// with the new membership's votes, commit its removal and step down; otherwise a cluster whose
    /// other voters lack that entry could never elect anyone. Votes are counted among the newest
    /// membership's voters either way.
    pub(super) fn may_campaign(&self) -> bool {
        self.membership.is_voter(self.id)
            || (self.config_index > self.log.commit
                && self.membership_at(self.log.commit).is_voter(self.id))
    }

    /// After the log changed below the current membership's entry (a follower's conflicting suffix
    /// was replaced), or a `Config` entry arrived: adopt the newest membership in the log.
    pub(super) fn refresh_membership(&mut self) {
        let newest = self
            .log
            .entries()
            .iter()
            .rev()
            .find(|e| e.kind == EntryKind::Config)
            .and_then(|e| Some((Membership::from_entry_data(&e.data)?, e.index)));
        let (membership, index) =
            newest.unwrap_or_else(|| (self.base_membership(), self.log.base.index));
        if (index, &membership) != (self.config_index, &self.membership) {
            self.set_membership(membership, index);
        }
    }

    /// Once the current membership has committed, a leader forgets removed followers, and a leader
    /// that is no longer a voter hands leadership to the most caught-up voter and steps down (§4.2.2).
    pub(super) fn after_commit_advanced(&mut self) {
        if self.role != Role::Leader || self.log.commit < self.config_index {
            return;
        }
        // Removed followers that hold the change learn that it committed from one last heartbeat, so
        // that they stop serving and stop campaigning.
        let leaving: Vec<(NodeId, Index)> = self
            .progress
            .iter()
            .filter(|(id, _)| !self.membership.contains(**id))
            .map(|(id, p)| (*id, p.match_index))
            .collect();
        for (to, matched) in leaving {
            let commit = self.log.commit.min(matched);
            self.send(
                to,
                MessageBody::Heartbeat {
                    commit,
                    read_round: 0,
                },
            );
        }
        let membership = &self.membership;
        self.progress.retain(|id, _| membership.contains(*id));
        if self.membership.is_voter(self.id) {
            return;
        }
        let successor = self
            .membership
            .voters
            .iter()
            .copied()
            .max_by_key(|id| self.progress.get(id).map_or(0, |p| p.match_index));
        if let Some(to) = successor {
            // Bring it up to date first if it is behind; TimeoutNow then makes it campaign at once.
            while self.send_append(to, false) {}
            self.send(to, MessageBody::TimeoutNow);
        }
        self.become_follower(self.term, None);
    }

    /// Whether this node alone makes a majority.
    pub(super) fn is_sole_voter(&self) -> bool {
        self.membership.voters == [self.id]
    }
}

/// Whether any of `entries` changes the membership.
pub(super) fn has_config(entries: &[Entry]) -> bool {
    entries.iter().any(|e| e.kind == EntryKind::Config)
}

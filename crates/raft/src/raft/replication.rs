//! Log replication (§5.3, §5.4.2, dissertation §10.2.1): the leader's side (sending Appends and
//! snapshots, handling answers, committing, ReadIndex rounds) and the follower's (the consistency
//! check, truncation, installing snapshots).

use bytes::Bytes;

use super::*;

impl Raft {
    // ----- Leader: replication -----------------------------------------------------------------

    pub(super) fn append_entry(&mut self, kind: EntryKind, data: Bytes) -> (Index, Term) {
        let index = self.log.last_index() + 1;
        self.log.append(Entry {
            index,
            term: self.term,
            kind,
            data,
        });
        self.broadcast_pending = true;
        (index, self.term)
    }

    /// Sends what accumulated since the last `ready()`: new entries to every follower that can take them
    /// (one Append per batch, §10.2.1 lets them leave before our own write is durable), and a heartbeat
    /// round for reads that arrived.
    pub(super) fn flush_leader(&mut self) {
        if std::mem::take(&mut self.broadcast_pending) {
            let followers: Vec<NodeId> = self.progress.keys().copied().collect();
            for to in followers {
                while self.send_append(to, false) {}
            }
        }
        if let Some(round) = self.reads.start_round(self.log.commit) {
            if self.lease_reads_enabled() {
                self.lease.sent(round, self.ticks);
            }
            self.broadcast_heartbeat(round);
        }
    }

    /// Sends one Append (or a snapshot) to `to` if its progress allows. Returns whether another might
    /// follow right away (pipelined replication of a long backlog).
    pub(super) fn send_append(&mut self, to: NodeId, allow_empty: bool) -> bool {
        let Some(progress) = self.progress.get(&to) else {
            return false;
        };
        if progress.is_paused(
            self.config.max_inflight_msgs,
            max_inflight_bytes(&self.config),
        ) {
            return false;
        }
        let prev_index = progress.next_index - 1;
        let Some(prev_term) = self.log.term(prev_index) else {
            self.send_snapshot(to);
            return false;
        };
        let entries = self
            .log
            .slice(
                progress.next_index,
                self.config.max_entries_per_msg,
                self.config.max_bytes_per_msg,
            )
            .to_vec();
        if entries.is_empty() && !allow_empty {
            return false;
        }
        let last = entries.last().map_or(prev_index, |e| e.index);
        let bytes: usize = entries.iter().map(Entry::size).sum();
        let more = !entries.is_empty() && last < self.log.last_index();
        let commit = self.log.commit;
        let Some(progress) = self.progress.get_mut(&to) else {
            return false;
        };
        progress.sent(last, bytes);
        let pipelined = progress.state == ReplicationState::Replicate;
        self.send(
            to,
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            },
        );
        more && pipelined
    }

    pub(super) fn send_snapshot(&mut self, to: NodeId) {
        let Some(snapshot) = self.log.snapshot.clone() else {
            return;
        };
        if let Some(progress) = self.progress.get_mut(&to) {
            progress.become_snapshot(snapshot.meta.index);
        }
        self.send(to, MessageBody::InstallSnapshot { snapshot });
    }

    pub(super) fn broadcast_heartbeat(&mut self, read_round: u64) {
        let followers: Vec<(NodeId, Index)> = self
            .progress
            .iter()
            .map(|(id, p)| (*id, p.match_index))
            .collect();
        for (to, matched) in followers {
            // Never tell a follower to commit past what it is known to hold: its log beyond that may
            // still differ from ours.
            let commit = self.log.commit.min(matched);
            self.send(to, MessageBody::Heartbeat { commit, read_round });
            if let Some(p) = self.progress.get_mut(&to) {
                // An InstallSnapshot may have been lost with its connection; after a generous wait, probe
                // again, which re-sends it if the follower still needs it.
                if let ReplicationState::Snapshot { .. } = p.state {
                    p.snapshot_wait += 1;
                    if p.snapshot_wait > SNAPSHOT_RETRY_HEARTBEATS {
                        p.become_probe();
                    }
                }
            }
        }
    }

    /// The progress of follower `from`, marked active for check-quorum (§6.2), if we lead and know it.
    fn responding_follower(&mut self, from: NodeId) -> Option<&mut Progress> {
        if self.role != Role::Leader {
            return None;
        }
        let progress = self.progress.get_mut(&from)?;
        progress.recent_active = true;
        Some(progress)
    }

    /// Figure 2, Rules for Servers, Leaders: on success update the follower's `matchIndex` and
    /// `nextIndex`; on a rejection decrement `nextIndex` (here: skip the follower's conflicting term at
    /// once, §5.3's optimisation) and retry.
    pub(super) fn handle_append_response(&mut self, from: NodeId, result: AppendResult) {
        let last_index = self.log.last_index();
        let Some(progress) = self.responding_follower(from) else {
            return;
        };
        match result {
            AppendResult::Accepted { last_index: acked } => {
                let acked = acked.min(last_index);
                let advanced = progress.acknowledge(acked);
                match progress.state {
                    ReplicationState::Probe => progress.become_replicate(),
                    ReplicationState::Snapshot { pending } if progress.match_index >= pending => {
                        progress.become_probe();
                        progress.become_replicate();
                    }
                    _ => {}
                }
                let caught_up = progress.match_index == last_index;
                if advanced {
                    self.maybe_commit();
                }
                if caught_up && self.transfer_target == Some(from) {
                    self.send(from, MessageBody::TimeoutNow);
                }
                while self.send_append(from, false) {}
            }
            AppendResult::Rejected {
                prev_index,
                hint_index,
                hint_term,
            } => {
                let stale = match progress.state {
                    ReplicationState::Replicate => prev_index <= progress.match_index,
                    ReplicationState::Probe => {
                        prev_index.checked_add(1) != Some(progress.next_index)
                    }
                    ReplicationState::Snapshot { .. } => true,
                };
                if stale {
                    return;
                }
                // Skip the follower's whole conflicting term at once: if we hold entries of that term,
                // resume after our last one; otherwise resume at the follower's first entry of it.
                let resume = match self.log.last_index_of_term(hint_term) {
                    Some(ours) if hint_term > 0 => ours + 1,
                    _ => hint_index,
                };
                let Some(progress) = self.progress.get_mut(&from) else {
                    return;
                };
                progress.become_probe();
                // Indexes in a rejection come from the peer: never resume past our own log, or a
                // bogus hint would stall replication to that follower.
                progress.next_index = resume
                    .min(prev_index)
                    .min(last_index + 1)
                    .max(progress.match_index + 1);
                self.send_append(from, true);
            }
        }
    }

    pub(super) fn handle_heartbeat_response(&mut self, from: NodeId, read_round: u64) {
        let last_index = self.log.last_index();
        let (max_msgs, max_bytes) = (
            self.config.max_inflight_msgs,
            max_inflight_bytes(&self.config),
        );
        let Some(progress) = self.responding_follower(from) else {
            return;
        };
        progress.probe_sent = false;
        progress.read_round_acked = progress.read_round_acked.max(read_round);
        // If every answer to a full window of Appends was lost, the window would never drain: free a
        // slot so the next Append (or an empty one) goes out and its answer resynchronises us.
        progress.free_one_if_window_full(max_msgs, max_bytes);
        if progress.match_index < last_index {
            // An empty Append detects a lost one: the follower rejects it if it misses entries.
            self.send_append(from, true);
        }
        if read_round > 0 {
            self.confirm_reads();
        }
    }

    /// Releases every read round that a majority has acknowledged, and renews the lease from it.
    pub(super) fn confirm_reads(&mut self) {
        let confirmed = self.quorum_acked_round();
        if confirmed > 0 {
            self.reads.confirm(confirmed, &mut self.read_states);
            if self.lease_reads_enabled() {
                let lease_ticks = crate::lease::lease_ticks(self.config.election_ticks);
                self.lease.confirmed(confirmed, lease_ticks);
            }
        }
    }

    /// The newest heartbeat round a majority of voters has answered (the leader answers its own).
    fn quorum_acked_round(&self) -> u64 {
        self.quorum_value(u64::MAX, |p| p.read_round_acked)
            .unwrap_or(0)
    }

    /// The highest value a majority of voters has reached: each follower's `of` its progress (0 if
    /// unknown), the leader's `own`. None if the voters cannot make a quorum.
    fn quorum_value(&self, own: u64, of: impl Fn(&Progress) -> u64) -> Option<u64> {
        let quorum = self.membership.quorum();
        let mut values: Vec<u64> = self
            .membership
            .voters
            .iter()
            .map(|id| match *id == self.id {
                true => own,
                false => self.progress.get(id).map_or(0, &of),
            })
            .collect();
        if quorum == 0 || values.len() < quorum {
            return None;
        }
        values.sort_unstable_by(|a, b| b.cmp(a));
        Some(values[quorum - 1])
    }

    /// §5.3, §5.4.2: the highest index stored on a majority commits, if it is from the current term.
    /// The leader's own index counts only once durable.
    pub(super) fn maybe_commit(&mut self) {
        let Some(candidate) = self.quorum_value(self.log.persisted, |p| p.match_index) else {
            return;
        };
        if self.log.term(candidate) == Some(self.term) && self.log.commit_to(candidate) {
            self.reads.leader_committed_in_term();
            self.release_reads_as_sole_voter();
            self.after_commit_advanced();
        }
    }

    /// A leader that is the only voter is a majority by itself: it confirms its own rounds, so every
    /// read waiting for one — including a round sent to voters it no longer has — is released, in
    /// order. Called when its commit advances, when its membership changes and for each new read.
    pub(super) fn release_reads_as_sole_voter(&mut self) {
        if self.role != Role::Leader || !self.is_sole_voter() || !self.committed_in_current_term() {
            return;
        }
        self.reads.start_round(self.log.commit);
        let mut released = Vec::new();
        self.reads
            .confirm(self.reads.newest_pending_round(), &mut released);
        self.read_states.extend(released);
    }

    pub(super) fn committed_in_current_term(&self) -> bool {
        self.log.term(self.log.commit) == Some(self.term)
    }

    // ----- Follower ----------------------------------------------------------------------------

    pub(super) fn step_from_leader(&mut self, msg: Message) {
        // Same term (check_term ran): whoever sends these is the term's one leader.
        if self.role == Role::Leader {
            return;
        }
        if self.role != Role::Follower {
            self.become_follower(self.term, Some(msg.from));
        }
        self.leader = Some(msg.from);
        self.election_elapsed = 0;
        self.leader_contact_at = Some(self.ticks);
        match msg.body {
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => self.handle_append(msg.from, prev_index, prev_term, &entries, commit),
            MessageBody::Heartbeat { commit, read_round } => {
                self.log.commit_to(commit.min(self.log.last_index()));
                self.send(msg.from, MessageBody::HeartbeatResponse { read_round });
            }
            MessageBody::InstallSnapshot { snapshot } => self.handle_snapshot(msg.from, snapshot),
            MessageBody::TimeoutNow if self.may_campaign() => self.campaign(true),
            _ => {}
        }
    }

    /// Figure 2, AppendEntries RPC, receiver implementation (§5.3): reject if the log has no entry at
    /// `prev_index` with `prev_term` (rule 2; rule 1, a stale term, is [`Raft::check_term`]'s); delete a
    /// conflicting entry and all that follow it (rule 3); append new entries (rule 4); advance the
    /// commit index to min(leader commit, index of the last new entry) (rule 5). The acknowledgement
    /// waits until the entries are durable (`messages_after_persist`).
    pub(super) fn handle_append(
        &mut self,
        leader: NodeId,
        prev_index: Index,
        prev_term: Term,
        entries: &[Entry],
        commit: Index,
    ) {
        if prev_index < self.log.commit {
            // Everything up to our commit index is known to match; say so and let the leader go on.
            let result = AppendResult::Accepted {
                last_index: self.log.commit,
            };
            self.reply_after_persist(leader, MessageBody::AppendResponse(result));
            return;
        }
        let contiguous = entries
            .iter()
            .enumerate()
            .all(|(i, e)| prev_index.checked_add(1 + i as u64) == Some(e.index));
        if !contiguous {
            return;
        }
        if self.log.matches(prev_index, prev_term) {
            if !self.log.append_after(entries) {
                return;
            }
            // The newest membership in the log rules, committed or not (§4.1); a replaced suffix may
            // have taken the current one away.
            if super::membership::has_config(entries) || self.config_index > prev_index {
                self.refresh_membership();
            }
            let last_new = prev_index + entries.len() as u64;
            self.log.commit_to(commit.min(last_new));
            let result = AppendResult::Accepted {
                last_index: last_new,
            };
            self.reply_after_persist(leader, MessageBody::AppendResponse(result));
            return;
        }
        let (hint_index, hint_term) = if prev_index > self.log.last_index() {
            (self.log.last_index() + 1, 0)
        } else {
            let term = self.log.term(prev_index).unwrap_or(0);
            (self.log.first_index_of_term_at(prev_index), term)
        };
        let result = AppendResult::Rejected {
            prev_index,
            hint_index,
            hint_term,
        };
        self.reply_after_persist(leader, MessageBody::AppendResponse(result));
    }

    /// InstallSnapshot RPC, receiver implementation (§7, Figure 13): keep the log after the snapshot if
    /// it holds the snapshot's last entry with the same term, otherwise discard it; reset the state
    /// machine from the snapshot.
    pub(super) fn handle_snapshot(&mut self, leader: NodeId, snapshot: Snapshot) {
        let (index, term) = (snapshot.meta.index, snapshot.meta.term);
        if index <= self.log.commit {
            let result = AppendResult::Accepted {
                last_index: self.log.commit,
            };
            self.reply_after_persist(leader, MessageBody::AppendResponse(result));
            return;
        }
        if self.log.matches(index, term) {
            // We already hold the entries the snapshot covers; just learn that they are committed.
            self.log.commit_to(index);
        } else {
            self.log.restore(snapshot.clone());
            self.refresh_membership();
            self.pending_snapshot = Some(snapshot);
        }
        let result = AppendResult::Accepted { last_index: index };
        self.reply_after_persist(leader, MessageBody::AppendResponse(result));
    }

    // ----- Messages ----------------------------------------------------------------------------

    /// A message that does not depend on this node's unsaved state.
    pub(super) fn send(&mut self, to: NodeId, body: MessageBody) {
        if matches!(body, MessageBody::TimeoutNow) {
            // Its recipient's election is granted inside the voters' refusal window.
            self.lease.revoke();
        }
        self.messages.push(Message {
            from: self.id,
            to,
            term: self.term,
            body,
        });
    }

    /// A message that promises the receiver something (an entry, a term, a vote) is on our disk.
    pub(super) fn reply_after_persist(&mut self, to: NodeId, body: MessageBody) {
        self.messages_after_persist.push(Message {
            from: self.id,
            to,
            term: self.term,
            body,
        });
    }
}

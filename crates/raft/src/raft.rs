//! The node: roles, elections, replication, reads and leadership transfer, as in the Raft paper.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::config::Config;
use crate::log::RaftLog;
use crate::progress::{Progress, ReplicationState};
use crate::read_index::ReadIndexQueue;
use crate::ready::Ready;
use crate::rng::Rng;
use crate::types::*;

/// Heartbeats to wait for a follower to acknowledge an InstallSnapshot before sending it again.
const SNAPSHOT_RETRY_HEARTBEATS: u32 = 100;

/// Bytes of un-acknowledged Appends one follower may have in flight.
fn max_inflight_bytes(config: &Config) -> usize {
    config.max_bytes_per_msg.saturating_mul(4)
}

/// What a node recovered from its storage at start-up (all empty for a fresh node).
#[derive(Clone, Debug, Default)]
pub struct InitialState {
    pub hard_state: HardState,
    /// The newest durable snapshot; the log continues right after it.
    pub snapshot: Option<Snapshot>,
    /// The durable log after the snapshot, in order, contiguous.
    pub entries: Vec<Entry>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProposeError {
    /// This node is not the leader; `leader` is who it believes is.
    NotLeader { leader: Option<NodeId> },
    /// A leadership transfer is under way; proposals would be lost.
    Transferring,
}

impl std::fmt::Display for ProposeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProposeError::NotLeader { leader: Some(id) } => {
                write!(f, "not the leader (node {id} is)")
            }
            ProposeError::NotLeader { leader: None } => write!(f, "not the leader (none known)"),
            ProposeError::Transferring => write!(f, "leadership transfer in progress"),
        }
    }
}

impl std::error::Error for ProposeError {}

/// A snapshot of the node's volatile position, for drivers, tests and the simulator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub role: Role,
    pub term: Term,
    pub leader: Option<NodeId>,
    pub commit: Index,
    pub applied: Index,
    pub first_index: Index,
    pub last_index: Index,
    pub persisted: Index,
}

/// One Raft node. See the crate documentation for the contract with its driver.
pub struct Raft {
    config: Config,
    id: NodeId,
    term: Term,
    vote: Option<NodeId>,
    role: Role,
    leader: Option<NodeId>,
    membership: Membership,
    log: RaftLog,
    applied: Index,

    /// Ticks since the last heartbeat from a valid leader (follower) or since the last quorum
    /// check (leader).
    election_elapsed: u32,
    heartbeat_elapsed: u32,
    randomized_election_timeout: u32,
    rng: Rng,

    /// Votes received in the current (pre-)campaign.
    votes: BTreeMap<NodeId, bool>,
    /// Per-follower replication state; only meaningful on a leader.
    progress: BTreeMap<NodeId, Progress>,
    reads: ReadIndexQueue,
    transfer_target: Option<NodeId>,
    transfer_elapsed: u32,
    /// New entries on the leader that followers have not been offered yet.
    broadcast_pending: bool,

    messages: Vec<Message>,
    messages_after_persist: Vec<Message>,
    read_states: Vec<ReadState>,
    pending_snapshot: Option<Snapshot>,
    last_hard_state: HardState,
    last_soft_state: SoftState,
}

impl Raft {
    pub fn new(config: Config, initial: InitialState) -> Raft {
        let membership = match &initial.snapshot {
            Some(s) if !s.meta.membership.voters.is_empty() => s.meta.membership.clone(),
            _ => Membership::new(config.voters.clone()),
        };
        let hs = initial.hard_state;
        let log = RaftLog::new(initial.snapshot, initial.entries, hs.commit);
        let mut raft = Raft {
            id: config.id,
            rng: Rng::new(config.seed),
            term: hs.term,
            vote: hs.vote,
            role: Role::Follower,
            leader: None,
            membership,
            applied: log.handed_to_apply,
            log,
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: 0,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            reads: ReadIndexQueue::default(),
            transfer_target: None,
            transfer_elapsed: 0,
            broadcast_pending: false,
            messages: Vec::new(),
            messages_after_persist: Vec::new(),
            read_states: Vec::new(),
            pending_snapshot: None,
            last_hard_state: HardState::default(),
            last_soft_state: SoftState {
                role: Role::Follower,
                leader: None,
                term: 0,
            },
            config,
        };
        raft.last_hard_state = raft.hard_state();
        raft.last_soft_state = raft.soft_state();
        raft.reset_election_timer();
        raft
    }

    // ----- Driver interface --------------------------------------------------------------------

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        match self.role {
            Role::Leader => self.tick_leader(),
            _ => self.tick_election(),
        }
    }

    /// Handles a message from a peer. Messages from stale terms or unknown senders are ignored.
    pub fn step(&mut self, msg: Message) {
        if msg.from == self.id || msg.to != self.id || !self.membership.contains(msg.from) {
            return;
        }
        if !self.check_term(&msg) {
            return;
        }
        match msg.body {
            MessageBody::PreVote {
                last_index,
                last_term,
            } => self.handle_vote_request(&msg, last_index, last_term, true),
            MessageBody::Vote {
                last_index,
                last_term,
                ..
            } => self.handle_vote_request(&msg, last_index, last_term, false),
            MessageBody::PreVoteResponse { granted } if self.role == Role::PreCandidate => {
                // Only answers to our current pre-campaign (for term + 1) count.
                if !granted || msg.term == self.term + 1 {
                    self.record_vote(msg.from, granted);
                }
            }
            MessageBody::VoteResponse { granted } if self.role == Role::Candidate => {
                self.record_vote(msg.from, granted);
            }
            MessageBody::PreVoteResponse { .. } | MessageBody::VoteResponse { .. } => {}
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. }
            | MessageBody::TimeoutNow => self.step_from_leader(msg),
            MessageBody::AppendResponse(result) => self.handle_append_response(msg.from, result),
            MessageBody::HeartbeatResponse { read_round } => {
                self.handle_heartbeat_response(msg.from, read_round)
            }
        }
    }

    /// Appends `data` to the log if this node is the leader; returns its index and term. The entry is
    /// committed once `committed` in a later `Ready` contains it; if a different entry shows up at that
    /// index, the proposal was lost.
    pub fn propose(&mut self, data: Bytes) -> Result<(Index, Term), ProposeError> {
        self.ensure_leader()?;
        Ok(self.append_entry(EntryKind::Normal, data))
    }

    /// Requests a linearizable read. `ctx` comes back in a `ReadState` once the read is safe. Reads are
    /// dropped if this node loses leadership before that: the driver sees the role change in
    /// `Ready::soft_state` and must fail every read it still waits for.
    pub fn read_index(&mut self, ctx: u64) -> Result<(), ProposeError> {
        self.ensure_leader()?;
        if self.membership.quorum() == 1 && self.committed_in_current_term() {
            self.read_states.push(ReadState {
                ctx,
                index: self.log.commit,
            });
            return Ok(());
        }
        self.reads.push(ctx, self.committed_in_current_term());
        Ok(())
    }

    /// Asks the leader to hand leadership to `to` (dissertation §3.10). Proposals are refused until the
    /// transfer completes or times out after an election timeout.
    pub fn transfer_leadership(&mut self, to: NodeId) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if to == self.id || !self.membership.contains(to) {
            return Ok(());
        }
        if self.transfer_target != Some(to) {
            self.transfer_target = Some(to);
            self.transfer_elapsed = 0;
        }
        let caught_up = self
            .progress
            .get(&to)
            .is_some_and(|p| p.match_index == self.log.last_index());
        if caught_up {
            self.send(to, MessageBody::TimeoutNow);
        } else {
            self.broadcast_pending = true;
        }
        Ok(())
    }

    pub fn has_ready(&self) -> bool {
        self.soft_state() != self.last_soft_state
            || self.hard_state() != self.last_hard_state
            || self.pending_snapshot.is_some()
            || self.log.unstable <= self.log.last_index()
            || !self.messages.is_empty()
            || !self.messages_after_persist.is_empty()
            || self.log.commit > self.log.handed_to_apply
            || !self.read_states.is_empty()
            || self.broadcast_pending
            || (self.role == Role::Leader && self.reads.has_unsent())
    }

    /// Collects the work for the driver. See [`Ready`] for what to do with it.
    pub fn ready(&mut self) -> Ready {
        if self.role == Role::Leader {
            self.flush_leader();
        }
        let soft = self.soft_state();
        let hard = self.hard_state();
        let ready = Ready {
            soft_state: (soft != self.last_soft_state).then_some(soft),
            hard_state: (hard != self.last_hard_state).then_some(hard),
            snapshot: self.pending_snapshot.take(),
            entries: self.log.take_unstable(),
            messages: std::mem::take(&mut self.messages),
            messages_after_persist: std::mem::take(&mut self.messages_after_persist),
            committed: self.log.take_committed(),
            read_states: std::mem::take(&mut self.read_states),
        };
        self.last_soft_state = soft;
        self.last_hard_state = hard;
        ready
    }

    /// Reports that entries up to `index` (whose entry has `term`) and every hard state handed out with
    /// them are durable. Stale reports (the entry was since replaced) are ignored.
    pub fn persisted(&mut self, index: Index, term: Term) {
        if self.log.mark_persisted(index, term) && self.role == Role::Leader {
            self.maybe_commit();
        }
    }

    /// Reports that the state machine has applied everything up to `index`.
    pub fn applied(&mut self, index: Index) {
        if index > self.applied && index <= self.log.handed_to_apply {
            self.applied = index;
        }
    }

    /// Installs the driver's newest snapshot as the log's base: entries up to `snapshot.meta.index`
    /// (which must be applied) are dropped from memory and the snapshot is what lagging followers will
    /// receive.
    pub fn compact(&mut self, snapshot: Snapshot) {
        if snapshot.meta.index <= self.applied {
            self.log.compact_to(snapshot);
        }
    }

    pub fn status(&self) -> Status {
        Status {
            id: self.id,
            role: self.role,
            term: self.term,
            leader: self.leader,
            commit: self.log.commit,
            applied: self.applied,
            first_index: self.log.first_index(),
            last_index: self.log.last_index(),
            persisted: self.log.persisted,
        }
    }

    /// The in-memory log after the snapshot, for checks and tests.
    pub fn entries(&self) -> &[Entry] {
        self.log.entries()
    }

    /// The snapshot the log starts after, if any.
    pub fn snapshot_meta(&self) -> &SnapshotMeta {
        &self.log.base
    }

    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// On a leader, how far `id`'s log is known to match ours (e.g. to pick a transfer target).
    pub fn match_index(&self, id: NodeId) -> Option<Index> {
        if self.role != Role::Leader {
            return None;
        }
        self.progress.get(&id).map(|p| p.match_index)
    }

    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.commit,
        }
    }

    fn soft_state(&self) -> SoftState {
        SoftState {
            role: self.role,
            leader: self.leader,
            term: self.term,
        }
    }

    // ----- Time --------------------------------------------------------------------------------

    fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.election_elapsed >= self.randomized_election_timeout
            && self.membership.contains(self.id)
        {
            self.campaign(false);
        }
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.config.election_ticks {
            self.election_elapsed = 0;
            if self.config.check_quorum && !self.quorum_active() {
                self.become_follower(self.term, None);
                return;
            }
        }
        if self.transfer_target.is_some() {
            // A transfer that did not finish within an election timeout is abandoned (§3.10). It has its
            // own clock so that repeated transfer requests cannot postpone the check-quorum above.
            self.transfer_elapsed += 1;
            if self.transfer_elapsed >= self.config.election_ticks {
                self.transfer_target = None;
            }
        }
        if self.heartbeat_elapsed >= self.config.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            // Re-ask for the newest read round, in case its own heartbeats or their answers were lost.
            let round = self.reads.newest_pending_round();
            self.broadcast_heartbeat(round);
        }
    }

    /// Check-quorum (§6.2): has a majority been heard from since the last check? Resets the marks.
    fn quorum_active(&mut self) -> bool {
        let id = self.id;
        let mut active = 0;
        for voter in &self.membership.voters {
            if *voter == id {
                active += 1;
            } else if let Some(p) = self.progress.get_mut(voter) {
                if p.recent_active {
                    active += 1;
                }
                p.recent_active = false;
            }
        }
        active >= self.membership.quorum()
    }

    fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        let base = self.config.election_ticks.max(1);
        self.randomized_election_timeout = base + self.rng.below(base as u64) as u32;
    }

    // ----- Terms and roles ---------------------------------------------------------------------

    /// §5.1: adopt a newer term, refuse an older one. Returns whether the message should be handled.
    fn check_term(&mut self, msg: &Message) -> bool {
        if msg.term > self.term {
            match msg.body {
                MessageBody::PreVote { .. } => return !self.in_leader_lease(),
                // A granted pre-vote names the term we would campaign in; it changes nothing yet.
                MessageBody::PreVoteResponse { granted: true } => return true,
                MessageBody::Vote { transfer, .. } if !transfer && self.in_leader_lease() => {
                    return false
                }
                _ => {}
            }
            let leader = match msg.body {
                MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. } => Some(msg.from),
                _ => None,
            };
            self.become_follower(msg.term, leader);
            return true;
        }
        if msg.term < self.term {
            match msg.body {
                // A stale leader (e.g. back from a partition) must learn the new term, or with
                // check-quorum and pre-vote it could hold on to followers that never campaign.
                MessageBody::Append { .. } | MessageBody::Heartbeat { .. } => {
                    self.send(msg.from, MessageBody::HeartbeatResponse { read_round: 0 });
                }
                MessageBody::PreVote { .. } => {
                    self.send(msg.from, MessageBody::PreVoteResponse { granted: false });
                }
                _ => {}
            }
            return false;
        }
        true
    }

    /// With check-quorum, a node that heard from a leader within the minimum election timeout refuses to
    /// help depose it (§4.2.3), so a node that rejoins after a partition cannot disrupt a healthy leader.
    fn in_leader_lease(&self) -> bool {
        self.config.check_quorum
            && self.leader.is_some()
            && self.election_elapsed < self.config.election_ticks
    }

    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        if term > self.term {
            self.term = term;
            self.vote = None;
        }
        if self.role == Role::Leader {
            self.reads.clear();
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.transfer_target = None;
        self.broadcast_pending = false;
        self.reset_election_timer();
    }

    /// Starts an election: first a pre-vote round if configured (§9.6), unless leadership is being
    /// handed to us, in which case the old leader has already stepped aside.
    fn campaign(&mut self, transfer: bool) {
        if self.config.pre_vote && !transfer {
            self.role = Role::PreCandidate;
            self.leader = None;
            self.votes.clear();
            self.reset_election_timer();
            self.request_votes(true, false);
        } else {
            self.start_election(transfer);
        }
    }

    /// §5.2: increment the term, vote for ourselves, ask everyone else.
    fn start_election(&mut self, transfer: bool) {
        self.role = Role::Candidate;
        self.term += 1;
        self.vote = Some(self.id);
        self.leader = None;
        self.votes.clear();
        self.reset_election_timer();
        self.request_votes(false, transfer);
    }

    fn request_votes(&mut self, pre: bool, transfer: bool) {
        // Our own vote counts first; a one-node cluster wins at once.
        if self.record_vote(self.id, true) {
            return;
        }
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        let term = if pre { self.term + 1 } else { self.term };
        for &to in &self.membership.voters {
            if to == self.id {
                continue;
            }
            let body = if pre {
                MessageBody::PreVote {
                    last_index,
                    last_term,
                }
            } else {
                MessageBody::Vote {
                    last_index,
                    last_term,
                    transfer,
                }
            };
            let msg = Message {
                from: self.id,
                to,
                term,
                body,
            };
            // A real vote request announces a term and a self-vote that must be durable first.
            if pre {
                self.messages.push(msg);
            } else {
                self.messages_after_persist.push(msg);
            }
        }
    }

    /// Counts a (pre-)vote. Returns true if the campaign ended (won or lost).
    fn record_vote(&mut self, from: NodeId, granted: bool) -> bool {
        self.votes.entry(from).or_insert(granted);
        let granted_count = self.votes.values().filter(|g| **g).count();
        let rejected_count = self.votes.len() - granted_count;
        let quorum = self.membership.quorum();
        if granted_count >= quorum {
            if self.role == Role::PreCandidate {
                self.start_election(false);
                return true;
            }
            self.become_leader();
            return true;
        }
        if rejected_count >= quorum {
            self.become_follower(self.term, None);
            return true;
        }
        false
    }

    fn handle_vote_request(
        &mut self,
        msg: &Message,
        last_index: Index,
        last_term: Term,
        pre: bool,
    ) {
        let can_vote = self.vote == Some(msg.from)
            || (self.vote.is_none() && self.leader.is_none())
            || (pre && msg.term > self.term);
        let granted = can_vote && self.log.is_up_to_date(last_index, last_term);
        if pre {
            let term = if granted { msg.term } else { self.term };
            let response = MessageBody::PreVoteResponse { granted };
            self.messages.push(Message {
                from: self.id,
                to: msg.from,
                term,
                body: response,
            });
            return;
        }
        if granted {
            self.vote = Some(msg.from);
            self.reset_election_timer();
        }
        let response = Message {
            from: self.id,
            to: msg.from,
            term: self.term,
            body: MessageBody::VoteResponse { granted },
        };
        self.messages_after_persist.push(response);
    }

    fn become_leader(&mut self) {
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.transfer_target = None;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        let next = self.log.last_index() + 1;
        self.progress = self
            .membership
            .voters
            .iter()
            .filter(|id| **id != self.id)
            .map(|id| (*id, Progress::new(next)))
            .collect();
        // §8: an entry of the new term, so that committing it commits everything before it.
        self.append_entry(EntryKind::Noop, Bytes::new());
    }

    fn ensure_leader(&self) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if self.transfer_target.is_some() {
            return Err(ProposeError::Transferring);
        }
        Ok(())
    }

    // ----- Leader: replication -----------------------------------------------------------------

    fn append_entry(&mut self, kind: EntryKind, data: Bytes) -> (Index, Term) {
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
    fn flush_leader(&mut self) {
        if std::mem::take(&mut self.broadcast_pending) {
            let followers: Vec<NodeId> = self.progress.keys().copied().collect();
            for to in followers {
                while self.send_append(to, false) {}
            }
        }
        if let Some(round) = self.reads.start_round(self.log.commit) {
            self.broadcast_heartbeat(round);
        }
    }

    /// Sends one Append (or a snapshot) to `to` if its progress allows. Returns whether another might
    /// follow right away (pipelined replication of a long backlog).
    fn send_append(&mut self, to: NodeId, allow_empty: bool) -> bool {
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

    fn send_snapshot(&mut self, to: NodeId) {
        let Some(snapshot) = self.log.snapshot.clone() else {
            return;
        };
        if let Some(progress) = self.progress.get_mut(&to) {
            progress.become_snapshot(snapshot.meta.index);
        }
        self.send(to, MessageBody::InstallSnapshot { snapshot });
    }

    fn broadcast_heartbeat(&mut self, read_round: u64) {
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

    fn handle_append_response(&mut self, from: NodeId, result: AppendResult) {
        if self.role != Role::Leader {
            return;
        }
        let last_index = self.log.last_index();
        let Some(progress) = self.progress.get_mut(&from) else {
            return;
        };
        progress.recent_active = true;
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
                    ReplicationState::Probe => prev_index + 1 != progress.next_index,
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
                progress.next_index = resume.min(prev_index).max(progress.match_index + 1);
                self.send_append(from, true);
            }
        }
    }

    fn handle_heartbeat_response(&mut self, from: NodeId, read_round: u64) {
        if self.role != Role::Leader {
            return;
        }
        let last_index = self.log.last_index();
        let Some(progress) = self.progress.get_mut(&from) else {
            return;
        };
        progress.recent_active = true;
        progress.probe_sent = false;
        progress.read_round_acked = progress.read_round_acked.max(read_round);
        // If every answer to a full window of Appends was lost, the window would never drain: free a
        // slot so the next Append (or an empty one) goes out and its answer resynchronises us.
        progress.free_one_if_window_full(
            self.config.max_inflight_msgs,
            max_inflight_bytes(&self.config),
        );
        if progress.match_index < last_index {
            // An empty Append detects a lost one: the follower rejects it if it misses entries.
            self.send_append(from, true);
        }
        if read_round > 0 {
            self.confirm_reads();
        }
    }

    /// Releases every read round that a majority has acknowledged.
    fn confirm_reads(&mut self) {
        let quorum = self.membership.quorum();
        let mut confirmed = 0;
        for round in self.reads.pending_rounds() {
            let acks = 1 + self
                .progress
                .values()
                .filter(|p| p.read_round_acked >= round)
                .count();
            if acks >= quorum {
                confirmed = round;
            }
        }
        if confirmed > 0 {
            self.reads.confirm(confirmed, &mut self.read_states);
        }
    }

    /// §5.3, §5.4.2: the highest index stored on a majority commits, if it is from the current term.
    /// The leader's own index counts only once durable.
    fn maybe_commit(&mut self) {
        let mut matched: Vec<Index> = self
            .membership
            .voters
            .iter()
            .map(|id| {
                if *id == self.id {
                    self.log.persisted
                } else {
                    self.progress.get(id).map_or(0, |p| p.match_index)
                }
            })
            .collect();
        if matched.len() < self.membership.quorum() {
            return;
        }
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let candidate = matched[self.membership.quorum() - 1];
        if self.log.term(candidate) == Some(self.term) && self.log.commit_to(candidate) {
            self.reads.leader_committed_in_term();
            if self.membership.quorum() == 1 {
                let mut released = Vec::new();
                if let Some(round) = self.reads.start_round(self.log.commit) {
                    self.reads.confirm(round, &mut released);
                }
                self.read_states.extend(released);
            }
        }
    }

    fn committed_in_current_term(&self) -> bool {
        self.log.term(self.log.commit) == Some(self.term)
    }

    // ----- Follower ----------------------------------------------------------------------------

    fn step_from_leader(&mut self, msg: Message) {
        // Same term (check_term ran): whoever sends these is the term's one leader.
        if self.role == Role::Leader {
            return;
        }
        if self.role != Role::Follower {
            self.become_follower(self.term, Some(msg.from));
        }
        self.leader = Some(msg.from);
        self.election_elapsed = 0;
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
            MessageBody::TimeoutNow if self.membership.contains(self.id) => self.campaign(true),
            _ => {}
        }
    }

    fn handle_append(
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
            .all(|(i, e)| e.index == prev_index + 1 + i as u64);
        if !contiguous {
            return;
        }
        if self.log.matches(prev_index, prev_term) {
            if !self.log.append_after(entries) {
                return;
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

    fn handle_snapshot(&mut self, leader: NodeId, snapshot: Snapshot) {
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
            if !snapshot.meta.membership.voters.is_empty() {
                self.membership = snapshot.meta.membership.clone();
            }
            self.log.restore(snapshot.clone());
            self.pending_snapshot = Some(snapshot);
        }
        let result = AppendResult::Accepted { last_index: index };
        self.reply_after_persist(leader, MessageBody::AppendResponse(result));
    }

    // ----- Messages ----------------------------------------------------------------------------

    /// A message that does not depend on this node's unsaved state.
    fn send(&mut self, to: NodeId, body: MessageBody) {
        self.messages.push(Message {
            from: self.id,
            to,
            term: self.term,
            body,
        });
    }

    /// A message that promises the receiver something (an entry, a term, a vote) is on our disk.
    fn reply_after_persist(&mut self, to: NodeId, body: MessageBody) {
        self.messages_after_persist.push(Message {
            from: self.id,
            to,
            term: self.term,
            body,
        });
    }
}

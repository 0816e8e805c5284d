//! The node: its state and the interface its driver calls. Elections live in [`election`], log
//! replication (both sides) in [`replication`].

mod election;
mod membership;
mod replication;

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::config::Config;
use crate::lease::Lease;
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
    /// The newest membership in the log (committed or not, §4.1), else the snapshot's, else `bootstrap`.
    membership: Membership,
    /// The index of the entry `membership` comes from (the snapshot's index, or 0 for `bootstrap`).
    config_index: Index,
    /// The membership of a cluster whose log and snapshot hold none: the configured voters.
    bootstrap: Membership,
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
    /// Ticks since this node started: the leader lease's clock.
    ticks: u64,
    /// The tick at which a leader (of any term) was last heard from: with leases, votes are refused
    /// for an election timeout after it, even if a higher term has since made us forget the leader.
    leader_contact_at: Option<u64>,
    lease: Lease,
    /// Reads released from the lease, for drivers' metrics and the simulator's coverage.
    lease_reads_served: u64,
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
        let hs = initial.hard_state;
        let log = RaftLog::new(initial.snapshot, initial.entries, hs.commit);
        let mut raft = Raft {
            id: config.id,
            rng: Rng::new(config.seed),
            term: hs.term,
            vote: hs.vote,
            role: Role::Follower,
            leader: None,
            membership: Membership::default(),
            config_index: 0,
            bootstrap: Membership::new(config.voters.clone()),
            applied: log.handed_to_apply,
            log,
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: 0,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            reads: ReadIndexQueue::default(),
            ticks: 0,
            leader_contact_at: None,
            lease: Lease::default(),
            lease_reads_served: 0,
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
        raft.refresh_membership();
        raft.last_hard_state = raft.hard_state();
        raft.last_soft_state = raft.soft_state();
        raft.reset_election_timer();
        raft
    }

    // ----- Driver interface --------------------------------------------------------------------

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        self.ticks += 1;
        match self.role {
            Role::Leader => self.tick_leader(),
            _ => self.tick_election(),
        }
    }

    /// Handles a message from a peer. Messages from stale terms, messages with a term or index past
    /// [`MAX_INDEX`] and messages carrying a `Config` entry that does not decode are ignored.
    ///
    /// Senders outside the membership are heard: a node that is joining knows no membership until the
    /// leader's log reaches it, a removed leader hands over with TimeoutNow, and a vote from a
    /// non-member is harmless because candidates count only their voters' answers and leaders only
    /// their followers'. Removed nodes that campaign are held off by pre-vote and the leader lease.
    pub fn step(&mut self, msg: Message) {
        // The only message a node sends itself is a sole voter's own vote, delivered after its disk.
        let own_vote = msg.from == self.id && matches!(msg.body, MessageBody::VoteResponse { .. });
        if (msg.from == self.id && !own_vote) || msg.to != self.id || msg.from == 0 {
            return;
        }
        if !msg.within_bounds() || !msg.config_entries_decode() {
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
    ///
    /// With [`Config::lease_reads`], a read that arrives while the leader's lease holds is released at
    /// once, at the commit index (the lease stands in for the heartbeat round).
    pub fn read_index(&mut self, ctx: u64) -> Result<(), ProposeError> {
        self.ensure_leader()?;
        // Not past a read still waiting for its round: one connection's reads take effect in order.
        if self.holds_lease() && self.reads.is_empty() {
            self.lease_reads_served += 1;
            self.read_states.push(ReadState {
                ctx,
                index: self.log.commit,
            });
            return Ok(());
        }
        self.reads.push(ctx, self.committed_in_current_term());
        self.release_reads_as_sole_voter();
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
        if to == self.id || !self.membership.is_voter(to) {
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

    /// Whether this leader may serve reads from its lease now (always false without
    /// [`Config::lease_reads`]).
    pub fn holds_lease(&self) -> bool {
        self.role == Role::Leader
            && self.lease_reads_enabled()
            && self.transfer_target.is_none()
            && self.committed_in_current_term()
            && self.lease.holds(self.ticks)
    }

    /// How many reads this node has released from its lease since it started.
    pub fn lease_reads_served(&self) -> u64 {
        self.lease_reads_served
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

    /// A leader's view of each follower's replication, for traces and debugging.
    pub fn progress_summary(&self) -> String {
        format!("{:?}", self.progress)
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
}

//! The replica: the Raft core and the store, driven by inputs, leaving its work in [`Outputs`].
//!
//! Inputs are methods ([`Replica::tick`], [`Replica::step`], [`Replica::request`],
//! [`Replica::persisted`], [`Replica::snapshot_built`]); after a batch of them the driver calls
//! [`Replica::advance`], which turns every Ready of the core into outputs in the order the core's
//! contract requires: messages and persist jobs first, then the snapshot and committed entries applied to
//! the store, then the reads they unblock. Client requests are routed in `routing.rs`.

use std::collections::{BTreeMap, VecDeque};

use bytes::{Bytes, BytesMut};
use raftkv_kv::{Proposal, Reply, SessionLimits, Store};
use raftkv_raft::{
    Entry, EntryKind, Index, InitialState, Message, NodeId, Raft, Ready, Role, SnapshotMeta,
    SoftState, Term,
};
use tracing::{error, info, warn};

use crate::clock::Now;
use crate::members::AddressBook;
use crate::mutation::Mutation;
use crate::request::{ClientRequest, PendingRead, PendingWrite};
use crate::snapshot::{BuiltSnapshot, SnapshotPolicy, SnapshotTask};
use crate::storage::{Durable, PersistJob};

/// How often the leader considers proposing an `Expire` to reclaim expired keys.
const EXPIRE_EVERY_MS: u64 = 1_000;

/// What a replica is and how it behaves.
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    pub raft: raftkv_raft::Config,
    /// The client address (`host:port`) of every node in the cluster file, for redirects where the
    /// membership in the log carries no addresses (clusters bootstrapped before it did).
    pub client_addrs: BTreeMap<NodeId, String>,
    /// The same for peer addresses.
    pub peer_addrs: BTreeMap<NodeId, String>,
    /// A learner is promoted only when at most this many entries behind the leader.
    pub promote_max_lag: u64,
    /// The leader removes a member it has not heard from for this long; 0 = never.
    pub auto_remove_after_ms: u64,
    /// Requests wait this long for a leader to be known; a shutdown waits this long for a handover.
    pub leader_wait_ms: u64,
    pub snapshot_entries: u64,
    pub snapshot_bytes: u64,
    /// How many client sessions the store keeps, and for how long. Every replica of a cluster must use
    /// the same limits: the server always uses [`SessionLimits::DEFAULT`]; the simulator draws smaller
    /// ones to exercise expiry and eviction.
    pub session_limits: SessionLimits,
    /// The period of [`Replica::tick`]. With leader leases the replica delivers every tick its
    /// monotonic clock says is due (a paused process catches up before it serves a read).
    pub tick_ms: u64,
    /// A deliberate bug, for tests of the simulator only (see [`Mutation`]).
    pub mutation: Option<Mutation>,
    /// Copy every applied entry into [`Outputs::applied`] (the simulator's safety checks use it).
    pub record_applied: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("snapshot from the leader does not decode: {0}")]
    SnapshotDecode(raftkv_kv::DecodeError),
    #[error(
        "committed entry {index} does not decode ({error}): written by a newer release, or corrupt; \
         this node cannot apply it and stops rather than skip it"
    )]
    EntryDecode {
        index: Index,
        error: raftkv_kv::DecodeError,
    },
    #[error("cannot write a snapshot: {0}")]
    SnapshotWrite(raftkv_wal::WalError),
    #[error("storage failed")]
    StorageFailed,
}

/// Everything a replica wants done, accumulated across inputs until the driver takes it.
#[derive(Debug)]
pub struct Outputs<H> {
    /// Messages to send now.
    pub messages: Vec<Message>,
    /// Work for the disk, in order (see [`crate::storage`]).
    pub persist: Vec<PersistJob>,
    /// Answers to client requests, each to the handle it came with.
    pub replies: Vec<(H, Reply)>,
    /// A snapshot to build off the hot path and report back with [`Replica::snapshot_built`].
    pub snapshot: Option<SnapshotTask>,
    /// Stores replaced by an installed snapshot: freeing a large one takes a while, so the driver may
    /// drop it elsewhere.
    pub released: Vec<Store>,
    /// Entries applied, in order, with what applying each answered (None for entries that carry no
    /// command), if [`ReplicaConfig::record_applied`] is set.
    pub applied: Vec<(Entry, Option<Reply>)>,
    /// `backup` requests whose linearizable point has been applied: the driver encodes each store copy
    /// (a cheap clone) into a backup file off the hot path and sends it to the handle.
    pub backups: Vec<(H, BackupCopy)>,
    /// Every node this one must reach, when that changed (and once at start): the members, and while
    /// a change is uncommitted the members before it. The driver connects to new peers and forgets
    /// the others.
    pub membership: Option<AddressBook>,
}

/// A copy of the store for a backup, taken at a point that follows every write acknowledged before the
/// request arrived.
#[derive(Debug)]
pub struct BackupCopy {
    pub store: Store,
    /// The term of the entry at the copy's applied index.
    pub term: Term,
}

impl<H> Default for Outputs<H> {
    fn default() -> Self {
        Outputs {
            messages: Vec::new(),
            persist: Vec::new(),
            replies: Vec::new(),
            snapshot: None,
            released: Vec::new(),
            applied: Vec::new(),
            backups: Vec::new(),
            membership: None,
        }
    }
}

/// One raftkv node's logic. `H` is the driver's handle for a client request (a channel in the server,
/// an operation id in the simulator): the replica only carries it to the reply.
pub struct Replica<H> {
    pub(crate) id: NodeId,
    pub(crate) raft: Raft,
    pub(crate) store: Store,
    pub(crate) config: ReplicaConfig,
    pub(crate) now: Now,
    /// With leader leases: the monotonic time the core's ticks have been delivered up to.
    ticked_to_ms: Option<u64>,
    pub(crate) out: Outputs<H>,
    pub(crate) snapshot_policy: SnapshotPolicy,
    pub(crate) writes: BTreeMap<Index, PendingWrite<H>>,
    pub(crate) reads_awaiting_index: BTreeMap<u64, PendingRead<H>>,
    pub(crate) reads_awaiting_apply: BTreeMap<Index, Vec<PendingRead<H>>>,
    pub(crate) waiting_for_leader: VecDeque<(u64, ClientRequest<H>)>,
    /// Requests that must wait for reads in progress. A read is answered from the state at the moment
    /// its index is applied, so while any read is pending no new write may enter the log, or the read
    /// could observe a write that arrived after it (a pipelined `get` then `set` on one connection
    /// would see the `set`). Everything behind a held request is held too, to keep arrival order.
    pub(crate) held: VecDeque<ClientRequest<H>>,
    pub(crate) next_read_ctx: u64,
    pub(crate) last_stamp_ms: u64,
    /// The newest clock entry proposed for reads this term: reads wait behind it until it is applied.
    pub(crate) clock_entry: Option<Index>,
    /// Reads that need a clock entry that could not be proposed yet (leadership is being
    /// transferred), and every read due after them, in order.
    pub(crate) reads_awaiting_clock: VecDeque<PendingRead<H>>,
    pub(crate) leader: Option<NodeId>,
    pub(crate) role: Option<Role>,
    pub(crate) encode_buf: BytesMut,
    next_expire_ms: u64,
    shutting_down_until: Option<u64>,
    /// The membership last reported in [`Outputs::membership`], and whether it had committed then.
    pub(crate) known_config: Option<(raftkv_raft::Membership, bool)>,
    /// This node has been a member: a membership without it means it was removed (a node that is
    /// joining replays memberships from before it was added, which do not).
    pub(crate) ever_member: bool,
    /// This node was a member and is no longer.
    pub(crate) removed: bool,
    /// Which voter a removed node redirects to next.
    pub(crate) redirect_turn: u64,
    /// When each peer was last heard from (monotonic ms), with auto-removal on.
    pub(crate) last_heard: BTreeMap<NodeId, u64>,
}

impl<H> Replica<H> {
    /// A replica that starts from what its disk recovered.
    pub fn new(config: ReplicaConfig, initial: InitialState) -> Result<Replica<H>, ReplicaError> {
        let limits = config.session_limits;
        let store = match &initial.snapshot {
            Some(snapshot) => Store::restore_with_session_limits(&snapshot.data, limits)
                .map_err(ReplicaError::SnapshotDecode)?,
            None => Store::with_session_limits(limits),
        };
        let snapshot_policy = SnapshotPolicy::new(
            config.snapshot_entries,
            config.snapshot_bytes,
            initial.snapshot.as_ref().map_or(0, |s| s.meta.index),
            config.raft.seed,
        );
        let mut replica = Replica {
            id: config.raft.id,
            raft: Raft::new(config.raft.clone(), initial),
            store,
            config,
            now: Now::default(),
            ticked_to_ms: None,
            out: Outputs::default(),
            snapshot_policy,
            writes: BTreeMap::new(),
            reads_awaiting_index: BTreeMap::new(),
            reads_awaiting_apply: BTreeMap::new(),
            waiting_for_leader: VecDeque::new(),
            held: VecDeque::new(),
            next_read_ctx: 0,
            last_stamp_ms: 0,
            clock_entry: None,
            reads_awaiting_clock: VecDeque::new(),
            leader: None,
            role: None,
            encode_buf: BytesMut::new(),
            next_expire_ms: 0,
            shutting_down_until: None,
            known_config: None,
            ever_member: false,
            removed: false,
            redirect_turn: 0,
            last_heard: BTreeMap::new(),
        };
        replica.ever_member = replica.was_ever_member();
        replica.track_membership();
        Ok(replica)
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The core, for driver-level actions the replica does not decide (a test moving leadership).
    pub fn raft_mut(&mut self) -> &mut Raft {
        &mut self.raft
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Writes proposed and not yet answered: the index and term each will have if it commits.
    pub fn pending_writes(&self) -> impl Iterator<Item = (Index, Term, &H)> {
        self.writes
            .iter()
            .map(|(index, write)| (*index, write.term, &write.handle))
    }

    /// Where the driver collects the work this replica wants done.
    pub fn outputs(&mut self) -> &mut Outputs<H> {
        &mut self.out
    }

    // ----- Inputs --------------------------------------------------------------------------------

    /// One tick of the core's logical clock, at `now`.
    pub fn tick(&mut self, now: Now) {
        self.set_now(now);
        if !self.config.raft.lease_reads {
            // With leases `set_now` delivered every tick due by now, this one included.
            self.raft.tick();
        }
        self.expire_waiting();
        self.retry_clock_entry();
        if !self.waiting_for_leader.is_empty() && self.raft.status().role == Role::Leader {
            // A leadership transfer that ended without a change of leader leaves no other cue.
            self.route_waiting();
            self.release_held();
        }
        if now.mono_ms >= self.next_expire_ms {
            self.next_expire_ms = now.mono_ms + EXPIRE_EVERY_MS;
            self.maybe_propose_expire();
            self.remove_unreachable();
        }
    }

    /// A message from a peer.
    pub fn step(&mut self, msg: Message) {
        if self.config.auto_remove_after_ms > 0 {
            self.last_heard.insert(msg.from, self.now.mono_ms);
        }
        self.raft.step(msg);
    }

    /// The disk made everything up to `durable` durable.
    pub fn persisted(&mut self, durable: Durable) -> Result<(), ReplicaError> {
        if durable.failed {
            return Err(ReplicaError::StorageFailed);
        }
        self.raft.persisted(durable.index, durable.term);
        Ok(())
    }

    /// A snapshot handed out in [`Outputs::snapshot`] is built and durable: the disk adopts it after
    /// everything queued before it and compacts the log; the core drops the entries it covers.
    pub fn snapshot_built(&mut self, built: BuiltSnapshot) -> Result<(), ReplicaError> {
        let (snapshot, written) = built.map_err(ReplicaError::SnapshotWrite)?;
        let policy = &mut self.snapshot_policy;
        policy.set_in_progress(false);
        // A snapshot from the leader installed while this one was built is newer: keep counting
        // from it (the core ignores a stale snapshot, the disk drops its file).
        if snapshot.meta.index > policy.last_index() {
            policy.restart_from(snapshot.meta.index, snapshot.data.len() as u64);
        }
        self.raft.compact(snapshot);
        self.out.persist.push(PersistJob {
            compact_to: Some(written),
            ..PersistJob::default()
        });
        Ok(())
    }

    /// The snapshot handed out could not even be started (e.g. no thread): try again later.
    pub fn snapshot_abandoned(&mut self) {
        self.snapshot_policy.set_in_progress(false);
    }

    pub(crate) fn set_now(&mut self, now: Now) {
        self.now = now;
        if self.config.raft.lease_reads {
            self.catch_up_ticks(now.mono_ms);
        }
    }

    /// Tells the replica the time before inputs that carry none (peer messages): with leader leases
    /// the core's clock must not lag the monotonic clock when it decides whether a lease holds.
    pub fn advance_clock(&mut self, now: Now) {
        self.set_now(now);
    }

    /// The lease's clock assumption made true: the core has had one tick per `tick_ms` of monotonic
    /// time, however long the process was paused or starved. (Without leases a late tick is simply
    /// late, as it always was: elections only get slower.)
    fn catch_up_ticks(&mut self, mono_ms: u64) {
        let tick_ms = self.config.tick_ms.max(1);
        let Some(ticked_to) = self.ticked_to_ms else {
            self.ticked_to_ms = Some(mono_ms);
            return;
        };
        let due = mono_ms.saturating_sub(ticked_to) / tick_ms;
        // Past a few election timeouts every lease has expired and every timer fired: the rest would
        // change nothing.
        let cap = 4 * u64::from(self.config.raft.election_ticks.max(1));
        for _ in 0..due.min(cap) {
            self.raft.tick();
        }
        self.ticked_to_ms = Some(if due > cap {
            mono_ms
        } else {
            ticked_to + due * tick_ms
        });
    }

    // ----- Ready ---------------------------------------------------------------------------------

    /// Turns everything the core has ready into outputs. Call after each batch of inputs.
    pub fn advance(&mut self) -> Result<(), ReplicaError> {
        while self.raft.has_ready() {
            let ready = self.raft.ready();
            self.handle_ready(ready)?;
        }
        Ok(())
    }

    fn handle_ready(&mut self, ready: Ready) -> Result<(), ReplicaError> {
        let Ready {
            soft_state,
            hard_state,
            snapshot,
            entries,
            messages,
            messages_after_persist,
            committed,
            read_states,
        } = ready;
        self.out.messages.extend(messages);
        if let Some(snapshot) = &snapshot {
            let restored =
                Store::restore_with_session_limits(&snapshot.data, self.config.session_limits)
                    .map_err(ReplicaError::SnapshotDecode)?;
            let old = std::mem::replace(&mut self.store, restored);
            self.out.released.push(old);
            info!(
                index = snapshot.meta.index,
                "installed a snapshot from the leader"
            );
            // Proposals at indexes the snapshot covers can no longer be matched to what committed.
            let rest = self.writes.split_off(&(snapshot.meta.index + 1));
            for (_, write) in std::mem::replace(&mut self.writes, rest) {
                self.out.replies.push((write.handle, Reply::ErrInternal));
            }
            // The installed snapshot is the newest one: count the log from it, or the next apply
            // would take a redundant snapshot of the state just installed.
            self.snapshot_policy
                .restart_from(snapshot.meta.index, snapshot.data.len() as u64);
        }
        if snapshot.is_some()
            || !entries.is_empty()
            || hard_state.is_some()
            || !messages_after_persist.is_empty()
        {
            self.out.persist.push(PersistJob {
                snapshot,
                entries,
                hard_state,
                messages_after_persist,
                compact_to: None,
            });
        }
        if let Some(last) = committed.last().map(|e| e.index) {
            for entry in committed {
                self.snapshot_policy
                    .record_applied(entry.term, entry.data.len());
                let reply = self.apply(entry.index, entry.term, entry.kind, &entry.data)?;
                if self.config.record_applied {
                    self.out.applied.push((entry, reply));
                }
            }
            self.raft.applied(last);
            self.serve_applied_reads();
            if self.snapshot_policy.due(last) {
                self.start_snapshot();
            }
        }
        for read in read_states {
            if let Some(pending) = self.reads_awaiting_index.remove(&read.ctx) {
                let index = read.index.max(pending.floor);
                self.reads_awaiting_apply
                    .entry(index)
                    .or_default()
                    .push(pending);
            }
        }
        self.serve_applied_reads();
        if let Some(soft) = soft_state {
            self.on_soft_state(soft);
        }
        self.track_membership();
        self.release_held();
        Ok(())
    }

    /// Applies one committed entry and answers the write waiting for it; returns what applying answered.
    /// An entry that does not decode stops the node: skipping it would silently drop a write that every
    /// replica able to read it applies.
    fn apply(
        &mut self,
        index: Index,
        term: Term,
        kind: EntryKind,
        data: &Bytes,
    ) -> Result<Option<Reply>, ReplicaError> {
        let reply = match kind {
            EntryKind::Noop => {
                self.store.skip_index(index);
                None
            }
            EntryKind::Config => {
                self.store.skip_index(index);
                // The change committed: its proposer answers with the membership it made.
                self.writes
                    .contains_key(&index)
                    .then(|| self.members_reply())
            }
            EntryKind::Normal => match Proposal::decode(data) {
                Ok(mut proposal) => {
                    if self.config.mutation == Some(Mutation::WritesAppliedTwice) {
                        proposal.session = None;
                    }
                    if let Some(mutation) = self.config.mutation {
                        mutation.apply_to(&mut proposal.command);
                    }
                    Some(self.store.apply_proposal(index, &proposal))
                }
                Err(error) => {
                    error!(index, "committed entry does not decode: {error}");
                    return Err(ReplicaError::EntryDecode { index, error });
                }
            },
        };
        // Writes proposed at indexes the log has now passed were overwritten by another leader's.
        while let Some(entry) = self.writes.first_entry() {
            if *entry.key() > index {
                break;
            }
            let (at, write) = entry.remove_entry();
            let answer = match &reply {
                Some(reply) if at == index && write.term == term => reply.clone(),
                _ => Reply::ErrInternal,
            };
            self.out.replies.push((write.handle, answer));
        }
        Ok(reply)
    }

    fn on_soft_state(&mut self, soft: SoftState) {
        let was_leader = self.role == Some(Role::Leader);
        if soft.leader != self.leader {
            match soft.leader {
                Some(leader) => info!(term = soft.term, leader, "leader changed"),
                None => info!(term = soft.term, "no leader known"),
            }
        }
        if soft.role == Role::Leader && !was_leader {
            info!(term = soft.term, "became leader");
            // Everyone gets a full grace period from the start of this term.
            let now = self.now.mono_ms;
            for id in self.raft.membership().members().collect::<Vec<_>>() {
                self.last_heard.insert(id, now);
            }
        }
        if was_leader && soft.role != Role::Leader {
            // Whether these writes commit is now up to the next leader: the outcome is unknown.
            for (_, write) in std::mem::take(&mut self.writes) {
                self.out.replies.push((write.handle, Reply::ErrInternal));
            }
            for (_, read) in std::mem::take(&mut self.reads_awaiting_index) {
                self.out.replies.push((read.handle, Reply::ErrInternal));
            }
            for (_, reads) in std::mem::take(&mut self.reads_awaiting_apply) {
                for read in reads {
                    self.out.replies.push((read.handle, Reply::ErrInternal));
                }
            }
            for read in std::mem::take(&mut self.reads_awaiting_clock) {
                self.out.replies.push((read.handle, Reply::ErrInternal));
            }
            self.clock_entry = None;
        }
        self.leader = soft.leader;
        self.role = Some(soft.role);
        self.route_waiting();
    }

    // ----- Snapshots -----------------------------------------------------------------------------

    fn start_snapshot(&mut self) {
        self.snapshot_policy.set_in_progress(true);
        let meta = SnapshotMeta {
            index: self.store.applied_index(),
            term: self.snapshot_policy.applied_term(),
            membership: self.raft.membership_at(self.store.applied_index()),
        };
        if self.out.snapshot.is_some() {
            warn!("a snapshot task was not taken by the driver; replacing it");
        }
        self.out.snapshot = Some(SnapshotTask {
            meta,
            store: self.store.clone(),
        });
    }

    // ----- Shutdown ------------------------------------------------------------------------------

    /// A graceful stop: a leader hands leadership to the most caught-up follower first, so clients see
    /// a short redirect rather than an election timeout.
    pub fn begin_shutdown(&mut self, now: Now) {
        self.set_now(now);
        self.shutting_down_until = Some(now.mono_ms + self.config.leader_wait_ms);
        if self.raft.status().role == Role::Leader {
            let target = self
                .raft
                .membership()
                .voters
                .iter()
                .copied()
                .filter(|id| *id != self.id)
                .max_by_key(|id| self.raft.match_index(*id).unwrap_or(0));
            if let Some(target) = target {
                info!(target, "shutting down: transferring leadership");
                let _ = self.raft.transfer_leadership(target);
            }
        } else {
            info!("shutting down");
        }
    }

    pub fn shutting_down(&self) -> bool {
        self.shutting_down_until.is_some()
    }

    /// Whether a shutdown begun earlier may finish now (handed over, or out of time).
    pub fn shutdown_complete(&self, now: Now) -> bool {
        let Some(until) = self.shutting_down_until else {
            return false;
        };
        let status = self.raft.status();
        let handed_over = status.role != Role::Leader && self.writes.is_empty();
        if handed_over || now.mono_ms >= until {
            if status.role == Role::Leader {
                warn!("leadership transfer did not finish in time; stopping anyway");
            }
            return true;
        }
        false
    }
}

impl<H> Replica<H> {
    /// What the replica holds for clients, for a trace: reads waiting for their round and for the
    /// state machine, requests parked for a leader and held behind others, writes in the log.
    pub fn queues_summary(&self) -> String {
        format!(
            "reads awaiting index {}, clock {}, apply {}; parked {}; held {}; writes {}",
            self.reads_awaiting_index.len(),
            self.reads_awaiting_clock.len(),
            self.reads_awaiting_apply
                .values()
                .map(Vec::len)
                .sum::<usize>(),
            self.waiting_for_leader.len(),
            self.held.len(),
            self.writes.len()
        )
    }
}

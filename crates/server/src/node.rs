//! The node loop: the one task that owns the Raft core and the key-value store.
//!
//! Everything that changes consensus or state-machine state happens here, in order: ticks, peer
//! messages, client requests and disk reports go in; each Ready batch comes out and is split between
//! the transport (messages that may leave now), the disk thread (what must become durable, and the
//! messages that must wait for it) and the store (committed entries, then the reads they unblock).
//! Nothing here blocks on the disk or on a peer, and no lock is ever held.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::BuildHasher;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use raftkv_kv::{Command, Proposal, Reply, Request, Store};
use raftkv_raft::{
    EntryKind, Index, Message, NodeId, ProposeError, Raft, Ready, Role, Snapshot, SnapshotMeta,
    SoftState, Term,
};
use raftkv_wal::{SnapshotWriter, WrittenSnapshot};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::MissedTickBehavior;
use tracing::{error, info, warn};

use crate::config::ClusterConfig;
use crate::persist::{Durable, PersistJob};
use crate::request::{ClientRequest, Op};
use crate::transport::Transport;

/// Requests parked while no leader is known.
const MAX_WAITING_FOR_LEADER: usize = 65_536;
/// Requests taken from the client queue per loop turn, so ticks and peers are never starved.
const MAX_REQUESTS_PER_TURN: usize = 4096;
/// Requests held back to keep one connection's pipeline in order (see `NodeState::held`).
const MAX_HELD: usize = 65_536;
/// How often the leader considers proposing an `Expire` to reclaim expired keys.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);

/// A snapshot serialised and made durable in the background, or why that failed.
pub type BuiltSnapshot = Result<(Snapshot, WrittenSnapshot), raftkv_wal::WalError>;

struct PendingWrite {
    term: Term,
    reply: oneshot::Sender<Reply>,
}

struct PendingRead {
    request: Request,
    reply: oneshot::Sender<Reply>,
    /// The log's last index when the read arrived. Serving only after it is applied makes a pipelined
    /// `set` followed by `get` on one connection read its own write, as a client would expect, even
    /// though linearizability alone would allow ordering the concurrent read first.
    floor: Index,
}

pub struct NodeLoop {
    pub id: NodeId,
    pub raft: Raft,
    pub store: Store,
    pub config: ClusterConfig,
    pub transport: Transport,
    pub persist: mpsc::Sender<PersistJob>,
    pub durable: watch::Receiver<Durable>,
    pub inbound: mpsc::Receiver<Vec<Message>>,
    pub requests: mpsc::Receiver<ClientRequest>,
    pub shutdown: watch::Receiver<bool>,
    /// Snapshots built and written in the background come back here.
    pub snapshots: (mpsc::Sender<BuiltSnapshot>, mpsc::Receiver<BuiltSnapshot>),
    /// Writes snapshot files off the disk thread, so a large fdatasync never stalls group commit.
    pub snapshot_writer: SnapshotWriter,
    pub state: NodeState,
}

/// The loop's bookkeeping of client work in progress.
#[derive(Default)]
pub struct NodeState {
    snapshot_policy: SnapshotPolicy,
    writes: BTreeMap<Index, PendingWrite>,
    reads_awaiting_index: HashMap<u64, PendingRead>,
    reads_awaiting_apply: BTreeMap<Index, Vec<PendingRead>>,
    waiting_for_leader: VecDeque<(Instant, ClientRequest)>,
    /// Requests that must wait for reads in progress. A read is answered from the state at the moment
    /// its index is applied, so while any read is pending no new write may enter the log, or the read
    /// could observe a write that arrived after it (a pipelined `get` then `set` on one connection
    /// would see the `set`). Everything behind a held request is held too, to keep arrival order.
    held: VecDeque<ClientRequest>,
    next_read_ctx: u64,
    last_stamp_ms: u64,
    leader: Option<NodeId>,
    role: Option<Role>,
    encode_buf: BytesMut,
    shutting_down_until: Option<Instant>,
}

/// When to take a snapshot: once the log since the last one holds `entries` entries or as many bytes as
/// the larger of `bytes` and the last snapshot's size. The second rule keeps the cost of snapshotting a
/// large store proportional to the log it replaces.
#[derive(Default)]
pub struct SnapshotPolicy {
    pub entries: u64,
    pub bytes: u64,
    last_index: Index,
    last_size: u64,
    bytes_since: u64,
    applied_term: Term,
    in_progress: bool,
    stretch_permille: u64,
}

impl SnapshotPolicy {
    pub fn new(entries: u64, bytes: u64, base: Index) -> SnapshotPolicy {
        let mut policy = SnapshotPolicy {
            entries,
            bytes,
            ..SnapshotPolicy::default()
        };
        policy.restart_from(base, 0);
        policy
    }

    fn due(&self, applied: Index) -> bool {
        let stretch = |limit: u64| {
            limit
                .max(1)
                .saturating_add(limit / 1000 * self.stretch_permille)
        };
        !self.in_progress
            && (applied.saturating_sub(self.last_index) >= stretch(self.entries)
                || self.bytes_since >= stretch(self.bytes.max(self.last_size)))
    }

    /// A snapshot at `index` of `size` bytes is now the newest one.
    fn restart_from(&mut self, index: Index, size: u64) {
        self.last_index = index;
        self.last_size = size;
        self.bytes_since = 0;
        // Replicas that applied the same log would otherwise all snapshot at the same index, and the
        // cluster would lose its majority's CPU and disk at once; each node waits 0–50 % longer, drawn
        // afresh every time.
        self.stretch_permille =
            std::collections::hash_map::RandomState::new().hash_one(index) % 500;
    }
}

impl NodeState {
    pub fn new(snapshot_policy: SnapshotPolicy) -> NodeState {
        NodeState {
            snapshot_policy,
            ..NodeState::default()
        }
    }
}

impl NodeLoop {
    pub async fn run(mut self) -> anyhow::Result<()> {
        let tick = Duration::from_millis(self.config.tunables.tick_ms);
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut expire_at = Instant::now() + EXPIRE_EVERY;
        loop {
            tokio::select! {
                biased;
                changed = self.durable.changed() => {
                    if changed.is_err() {
                        anyhow::bail!("the storage thread stopped");
                    }
                    let durable = *self.durable.borrow_and_update();
                    if durable.failed {
                        anyhow::bail!("storage failed; see the error above");
                    }
                    self.raft.persisted(durable.index, durable.term);
                }
                Some(snapshot) = self.snapshots.1.recv() => self.snapshot_built(snapshot).await?,
                Some(batch) = self.inbound.recv() => {
                    self.step_all(batch);
                    while let Ok(batch) = self.inbound.try_recv() {
                        self.step_all(batch);
                    }
                }
                _ = ticker.tick() => {
                    self.raft.tick();
                    self.expire_waiting();
                    if Instant::now() >= expire_at {
                        expire_at = Instant::now() + EXPIRE_EVERY;
                        self.maybe_propose_expire();
                    }
                    if self.shutdown_complete() {
                        self.process_ready().await?;
                        // Replicas that applied the same log report the same digest: tests compare them.
                        info!(
                            applied = self.store.applied_index(),
                            keys = self.store.len(),
                            digest = self.store.digest(),
                            "final state"
                        );
                        return Ok(());
                    }
                }
                changed = self.shutdown.changed(), if self.state.shutting_down_until.is_none() => {
                    if changed.is_err() || *self.shutdown.borrow() {
                        self.begin_shutdown();
                    }
                }
                Some(request) = self.requests.recv(), if self.state.held.len() < MAX_HELD => {
                    self.handle_request(request);
                    for _ in 0..MAX_REQUESTS_PER_TURN {
                        match self.requests.try_recv() {
                            Ok(request) => self.handle_request(request),
                            Err(_) => break,
                        }
                    }
                }
            }
            self.process_ready().await?;
        }
    }

    fn step_all(&mut self, batch: Vec<Message>) {
        for msg in batch {
            self.raft.step(msg);
        }
    }

    // ----- Client requests ---------------------------------------------------------------------

    fn handle_request(&mut self, request: ClientRequest) {
        let status = self.raft.status();
        if status.role == Role::Leader {
            let is_write = matches!(request.op, Op::Write(_));
            if !self.state.held.is_empty() || (is_write && self.reads_pending()) {
                self.state.held.push_back(request);
                return;
            }
            match request.op {
                Op::Write(command) => self.propose_write(command, request.reply),
                Op::Read(read) => self.start_read(read, request.reply),
            }
            return;
        }
        match status.leader {
            Some(leader) if leader != self.id => {
                let _ = request.reply.send(self.redirect_to(leader));
            }
            _ => self.park(request),
        }
    }

    fn reads_pending(&self) -> bool {
        !self.state.reads_awaiting_index.is_empty() || !self.state.reads_awaiting_apply.is_empty()
    }

    /// Lets held requests go, in order, as far as the reads in progress allow.
    fn release_held(&mut self) {
        while let Some(request) = self.state.held.front() {
            let is_write = matches!(request.op, Op::Write(_));
            if is_write && self.reads_pending() && self.raft.status().role == Role::Leader {
                return;
            }
            if let Some(request) = self.state.held.pop_front() {
                self.dispatch(request);
            }
        }
    }

    /// Routes a request without the ordering check of `handle_request`.
    fn dispatch(&mut self, request: ClientRequest) {
        if self.raft.status().role == Role::Leader {
            match request.op {
                Op::Write(command) => self.propose_write(command, request.reply),
                Op::Read(read) => self.start_read(read, request.reply),
            }
        } else {
            self.handle_request(request);
        }
    }

    fn park(&mut self, request: ClientRequest) {
        if self.state.waiting_for_leader.len() >= MAX_WAITING_FOR_LEADER {
            let _ = request.reply.send(Reply::ErrInternal);
            return;
        }
        let wait = Duration::from_millis(self.config.tunables.election_timeout_ms * 2);
        self.state
            .waiting_for_leader
            .push_back((Instant::now() + wait, request));
    }

    fn redirect_to(&self, leader: NodeId) -> Reply {
        let Some(node) = self.config.node(leader) else {
            return Reply::ErrInternal;
        };
        match node
            .client_addr
            .rsplit_once(':')
            .and_then(|(host, port)| Some((host, port.parse().ok()?)))
        {
            Some((host, port)) => Reply::ErrRedirect {
                host: host.trim_matches(['[', ']']).to_string(),
                port,
            },
            None => Reply::ErrInternal,
        }
    }

    fn propose_write(&mut self, command: Command, reply: oneshot::Sender<Reply>) {
        let stamp_ms = self.next_stamp();
        let proposal = Proposal { stamp_ms, command };
        self.state.encode_buf.reserve(proposal.encoded_len());
        proposal.encode(&mut self.state.encode_buf);
        let data: Bytes = self.state.encode_buf.split().freeze();
        match self.raft.propose(data) {
            Ok((index, term)) => {
                self.state
                    .writes
                    .insert(index, PendingWrite { term, reply });
            }
            Err(ProposeError::Transferring) => {
                // Leadership is moving away; the new leader will take it.
                let request = ClientRequest {
                    op: Op::Write(proposal.command),
                    reply,
                };
                self.park(request);
            }
            Err(ProposeError::NotLeader { .. }) => {
                let _ = reply.send(Reply::ErrInternal);
            }
        }
    }

    /// The leader's wall clock, never behind a stamp already used, so expiry never runs backwards.
    fn next_stamp(&mut self) -> u64 {
        let now = wall_clock_ms()
            .max(self.store.clock_ms())
            .max(self.state.last_stamp_ms);
        self.state.last_stamp_ms = now;
        now
    }

    fn start_read(&mut self, request: Request, reply: oneshot::Sender<Reply>) {
        self.state.next_read_ctx += 1;
        let ctx = self.state.next_read_ctx;
        let floor = self.raft.status().last_index;
        match self.raft.read_index(ctx) {
            Ok(()) => {
                self.state.reads_awaiting_index.insert(
                    ctx,
                    PendingRead {
                        request,
                        reply,
                        floor,
                    },
                );
            }
            Err(_) => self.park(ClientRequest {
                op: Op::Read(request),
                reply,
            }),
        }
    }

    fn maybe_propose_expire(&mut self) {
        let leader = self.raft.status().role == Role::Leader;
        if !leader || self.reads_pending() || !self.store.has_expired(wall_clock_ms()) {
            return;
        }
        let stamp_ms = self.next_stamp();
        let proposal = Proposal {
            stamp_ms,
            command: Command::Expire,
        };
        proposal.encode(&mut self.state.encode_buf);
        let data = self.state.encode_buf.split().freeze();
        let _ = self.raft.propose(data);
    }

    /// Answers requests that waited too long for a leader, and re-routes the rest once one is known.
    fn expire_waiting(&mut self) {
        let now = Instant::now();
        while let Some((deadline, _)) = self.state.waiting_for_leader.front() {
            if *deadline > now {
                break;
            }
            if let Some((_, request)) = self.state.waiting_for_leader.pop_front() {
                let _ = request.reply.send(Reply::ErrInternal);
            }
        }
    }

    fn route_waiting(&mut self) {
        let status = self.raft.status();
        let ready = status.leader.is_some()
            && (status.leader != Some(self.id) || status.role == Role::Leader);
        if !ready {
            return;
        }
        let waiting = std::mem::take(&mut self.state.waiting_for_leader);
        for (_, request) in waiting {
            self.handle_request(request);
        }
    }

    // ----- Ready ---------------------------------------------------------------------------------

    async fn process_ready(&mut self) -> anyhow::Result<()> {
        while self.raft.has_ready() {
            let ready = self.raft.ready();
            self.handle_ready(ready).await?;
        }
        Ok(())
    }

    async fn handle_ready(&mut self, ready: Ready) -> anyhow::Result<()> {
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
        for msg in messages {
            self.transport.send(msg);
        }
        if let Some(snapshot) = &snapshot {
            let restored = Store::restore(&snapshot.data).map_err(|err| {
                anyhow::anyhow!("snapshot from the leader does not decode: {err}")
            })?;
            // Freeing a large store takes long enough to stall the loop; let another thread do it.
            let old = std::mem::replace(&mut self.store, restored);
            tokio::task::spawn_blocking(move || drop(old));
            info!(
                index = snapshot.meta.index,
                "installed a snapshot from the leader"
            );
            // The installed snapshot is the newest one: count the log from it, or the next apply
            // would take a redundant snapshot of the state just installed.
            let policy = &mut self.state.snapshot_policy;
            policy.restart_from(snapshot.meta.index, snapshot.data.len() as u64);
        }
        if snapshot.is_some()
            || !entries.is_empty()
            || hard_state.is_some()
            || !messages_after_persist.is_empty()
        {
            let job = PersistJob {
                snapshot,
                entries,
                hard_state,
                messages_after_persist,
                compact_to: None,
            };
            self.persist
                .send(job)
                .await
                .map_err(|_| anyhow::anyhow!("the storage thread stopped"))?;
        }
        if let Some(last) = committed.last().map(|e| e.index) {
            for entry in committed {
                self.state.snapshot_policy.bytes_since += entry.data.len() as u64;
                self.state.snapshot_policy.applied_term = entry.term;
                self.apply(entry.index, entry.term, entry.kind, &entry.data);
            }
            self.raft.applied(last);
            self.serve_applied_reads();
            if self.state.snapshot_policy.due(last) {
                self.start_snapshot();
            }
        }
        for read in read_states {
            if let Some(pending) = self.state.reads_awaiting_index.remove(&read.ctx) {
                let index = read.index.max(pending.floor);
                self.state
                    .reads_awaiting_apply
                    .entry(index)
                    .or_default()
                    .push(pending);
            }
        }
        self.serve_applied_reads();
        if let Some(soft) = soft_state {
            self.on_soft_state(soft);
        }
        self.release_held();
        Ok(())
    }

    fn apply(&mut self, index: Index, term: Term, kind: EntryKind, data: &Bytes) {
        let reply = match kind {
            EntryKind::Noop => {
                self.store.skip_index(index);
                None
            }
            EntryKind::Normal => match Proposal::decode(data) {
                Ok(proposal) => Some(
                    self.store
                        .apply(index, proposal.stamp_ms, &proposal.command),
                ),
                Err(err) => {
                    // Only this node's own leader encodes entries, so this is a bug, not input.
                    error!(index, "committed entry does not decode: {err}");
                    self.store.skip_index(index);
                    Some(Reply::ErrInternal)
                }
            },
        };
        // Writes proposed at indexes the log has now passed were overwritten by another leader's.
        while let Some(entry) = self.state.writes.first_entry() {
            if *entry.key() > index {
                break;
            }
            let (at, write) = entry.remove_entry();
            let answer = match &reply {
                Some(reply) if at == index && write.term == term => reply.clone(),
                _ => Reply::ErrInternal,
            };
            let _ = write.reply.send(answer);
        }
    }

    fn serve_applied_reads(&mut self) {
        let applied = self.store.applied_index();
        let now = wall_clock_ms();
        while let Some(entry) = self.state.reads_awaiting_apply.first_entry() {
            if *entry.key() > applied {
                break;
            }
            for read in entry.remove() {
                let _ = read.reply.send(self.store.read(&read.request, now));
            }
        }
    }

    fn on_soft_state(&mut self, soft: SoftState) {
        let was_leader = self.state.role == Some(Role::Leader);
        if soft.leader != self.state.leader {
            match soft.leader {
                Some(leader) => info!(term = soft.term, leader, "leader changed"),
                None => info!(term = soft.term, "no leader known"),
            }
        }
        if soft.role == Role::Leader && !was_leader {
            info!(term = soft.term, "became leader");
        }
        if was_leader && soft.role != Role::Leader {
            // Whether these writes commit is now up to the next leader: the outcome is unknown.
            for (_, write) in std::mem::take(&mut self.state.writes) {
                let _ = write.reply.send(Reply::ErrInternal);
            }
            for (_, read) in std::mem::take(&mut self.state.reads_awaiting_index) {
                let _ = read.reply.send(Reply::ErrInternal);
            }
            for (_, reads) in std::mem::take(&mut self.state.reads_awaiting_apply) {
                for read in reads {
                    let _ = read.reply.send(Reply::ErrInternal);
                }
            }
        }
        self.state.leader = soft.leader;
        self.state.role = Some(soft.role);
        self.route_waiting();
    }

    // ----- Snapshots -----------------------------------------------------------------------------

    /// Copies the store and serialises the copy on a blocking thread, so the node keeps serving.
    fn start_snapshot(&mut self) {
        let policy = &mut self.state.snapshot_policy;
        policy.in_progress = true;
        let meta = SnapshotMeta {
            index: self.store.applied_index(),
            term: policy.applied_term,
            membership: self.raft.membership().clone(),
        };
        let copied = Instant::now();
        let store = self.store.clone();
        let pause = copied.elapsed();
        let done = self.snapshots.0.clone();
        let writer = self.snapshot_writer.clone();
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let mut data = Vec::new();
            store.snapshot(&mut data);
            let serialised = started.elapsed();
            let snapshot = Snapshot {
                meta,
                data: Bytes::from(data),
            };
            let built = writer.write(&snapshot).map(|written| (snapshot, written));
            if let Ok((snapshot, _)) = &built {
                info!(
                    index = snapshot.meta.index,
                    keys = store.len(),
                    bytes = snapshot.data.len(),
                    copy_ms = pause.as_millis() as u64,
                    serialise_ms = serialised.as_millis() as u64,
                    write_ms = (started.elapsed() - serialised).as_millis() as u64,
                    "snapshot taken"
                );
            }
            let _ = done.blocking_send(built);
        });
    }

    /// A background snapshot is ready and durable: the disk thread adopts it after everything queued
    /// before it and compacts the log; the core drops the entries it covers and will send it to lagging followers.
    async fn snapshot_built(&mut self, built: BuiltSnapshot) -> anyhow::Result<()> {
        let (snapshot, written) =
            built.map_err(|err| anyhow::anyhow!("cannot write a snapshot: {err}"))?;
        let policy = &mut self.state.snapshot_policy;
        policy.in_progress = false;
        // A snapshot from the leader installed while this one was built is newer: keep counting
        // from it (the core ignores a stale snapshot, the disk thread drops its file).
        if snapshot.meta.index > policy.last_index {
            policy.restart_from(snapshot.meta.index, snapshot.data.len() as u64);
        }
        self.raft.compact(snapshot.clone());
        let job = PersistJob {
            snapshot: None,
            entries: Vec::new(),
            hard_state: None,
            messages_after_persist: Vec::new(),
            compact_to: Some(written),
        };
        self.persist
            .send(job)
            .await
            .map_err(|_| anyhow::anyhow!("the storage thread stopped"))
    }

    // ----- Shutdown ------------------------------------------------------------------------------

    /// SIGTERM: a leader hands leadership to a follower first, so clients see a short redirect rather
    /// than an election timeout.
    fn begin_shutdown(&mut self) {
        let wait = Duration::from_millis(self.config.tunables.election_timeout_ms * 2);
        self.state.shutting_down_until = Some(Instant::now() + wait);
        if self.raft.status().role == Role::Leader {
            // The most caught-up follower can take over soonest.
            let target = self
                .config
                .node_ids()
                .into_iter()
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

    fn shutdown_complete(&self) -> bool {
        let Some(until) = self.state.shutting_down_until else {
            return false;
        };
        let status = self.raft.status();
        let handed_over = status.role != Role::Leader && self.state.writes.is_empty();
        if handed_over || Instant::now() >= until {
            if status.role == Role::Leader {
                warn!("leadership transfer did not finish in time; stopping anyway");
            }
            return true;
        }
        false
    }
}

pub fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

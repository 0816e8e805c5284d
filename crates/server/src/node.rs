//! The node loop: the one task that owns the Raft core and the key-value store.
//!
//! Everything that changes consensus or state-machine state happens here, in order: ticks, peer
//! messages, client requests and disk reports go in; each Ready batch comes out and is split between
//! the transport (messages that may leave now), the disk thread (what must become durable, and the
//! messages that must wait for it) and the store (committed entries, then the reads they unblock).
//! Nothing here blocks on the disk or on a peer, and no lock is ever held. Client requests are routed
//! in [`clients`], snapshots taken in [`snapshot`].

mod clients;
mod snapshot;

pub use snapshot::SnapshotPolicy;

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
                self.state
                    .snapshot_policy
                    .record_applied(entry.term, entry.data.len());
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

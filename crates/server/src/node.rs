//! The node loop: the one task that drives this node's [`Replica`] with real time, sockets and disk.
//!
//! Every decision — consensus, the store, client requests in progress, expiry, snapshots — is the
//! replica's (`raftkv-replica`), the same code the simulator proves. This loop only feeds it inputs
//! (ticks with the clocks, peer messages, client requests, durable positions, built snapshots) and
//! carries its outputs out: messages to the transport, persist jobs to the disk thread, replies to the
//! connections, snapshot work to a background thread. Nothing here blocks on the disk or on a peer, and
//! no lock is ever held.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use raftkv_kv::Reply;
use raftkv_raft::Message;
use raftkv_replica::{BackupCopy, BuiltSnapshot, Now, Replica, SnapshotTask};
use raftkv_wal::SnapshotWriter;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio::time::MissedTickBehavior;
use tracing::{info, warn};

use crate::metrics::Metrics;
use crate::persist::{Durable, PersistJob};
use crate::reply_budget::ReplyBudget;
use crate::request::{ClientRequest, ReplyHandle};
use crate::round_trips::RoundTrips;
use crate::status::{self, Member, NodeStatus};
use crate::transport::Transport;

/// Requests taken from the client queue per loop turn, so ticks and peers are never starved.
const MAX_REQUESTS_PER_TURN: usize = 4096;

pub struct NodeLoop {
    pub replica: Replica<ReplyHandle>,
    /// Charged with every reply's value bytes until its connection has taken it.
    pub reply_budget: Arc<ReplyBudget>,
    pub tick: Duration,
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
    /// The origin of the replica's monotonic clock.
    pub started: Instant,
    pub metrics: Arc<Metrics>,
    /// Where the node's status is published for the HTTP endpoint.
    pub status: watch::Sender<NodeStatus>,
    /// `GET /digest` requests so far: the status carries the state's digest until it has answered
    /// the newest.
    pub digest_requests: Arc<std::sync::atomic::AtomicU64>,
    pub members: Vec<Member>,
    pub round_trips: RoundTrips,
    /// Written into every backup's header.
    pub cluster_id: String,
    /// With `raftkv server --join`: the members' peer addresses the cluster reported.
    pub join_peers: Vec<(u64, String)>,
}

/// How often the status and the gauges are refreshed.
const STATUS_PERIOD: Duration = Duration::from_millis(100);

/// What the status publisher remembers between refreshes.
#[derive(Default)]
struct Published {
    at: Option<Instant>,
    leader: Option<u64>,
    role: String,
    term: u64,
    commit: u64,
    /// Reads served from the lease, as last counted.
    lease_reads: u64,
    /// The newest digest request answered.
    digest_answered: u64,
}

impl NodeLoop {
    pub async fn run(mut self) -> anyhow::Result<()> {
        let mut published = Published::default();
        let mut ticker = tokio::time::interval(self.tick);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                changed = self.durable.changed() => {
                    if changed.is_err() {
                        anyhow::bail!("the storage thread stopped");
                    }
                    let durable = *self.durable.borrow_and_update();
                    self.replica.persisted(durable)?;
                }
                Some(built) = self.snapshots.1.recv() => self.replica.snapshot_built(built)?,
                Some(batch) = self.inbound.recv() => {
                    self.step_all(batch);
                    while let Ok(batch) = self.inbound.try_recv() {
                        self.step_all(batch);
                    }
                }
                _ = ticker.tick() => {
                    let now = self.now();
                    self.replica.tick(now);
                    self.publish_status(&mut published);
                    if self.replica.shutdown_complete(now) {
                        self.flush().await?;
                        let store = self.replica.store();
                        // Replicas that applied the same log report the same digest: tests compare them.
                        info!(
                            applied = store.applied_index(),
                            keys = store.len(),
                            digest = store.digest(),
                            "final state"
                        );
                        return Ok(());
                    }
                }
                changed = self.shutdown.changed(), if !self.replica.shutting_down() => {
                    if changed.is_err() || *self.shutdown.borrow() {
                        let now = self.now();
                        self.replica.begin_shutdown(now);
                    }
                }
                Some(request) = self.requests.recv(), if self.replica.accepting_requests() => {
                    let now = self.now();
                    self.replica.request(now, request);
                    for _ in 0..MAX_REQUESTS_PER_TURN {
                        match self.requests.try_recv() {
                            Ok(request) => self.replica.request(now, request),
                            Err(_) => break,
                        }
                    }
                }
            }
            self.flush().await?;
        }
    }

    /// Refreshes the published status and the gauges (every [`STATUS_PERIOD`]), and logs the changes
    /// an operator cares about.
    fn publish_status(&mut self, published: &mut Published) {
        let digest_wanted = self
            .digest_requests
            .load(std::sync::atomic::Ordering::SeqCst);
        let digest_due = digest_wanted > published.digest_answered;
        if !digest_due && published.at.is_some_and(|at| at.elapsed() < STATUS_PERIOD) {
            return;
        }
        published.at = Some(Instant::now());
        let mut status = status::observe(
            &self.replica,
            &self.members,
            &self.metrics,
            self.started,
            self.replica.shutting_down(),
        );
        if status.leader != published.leader && status.leader.is_some() {
            self.metrics.leader_changes.inc();
        }
        if status.role != published.role {
            info!(role = %status.role, term = status.term, "role changed");
        } else if status.term != published.term {
            info!(term = status.term, "term changed");
        }
        if status.role == "leader" && published.role == "leader" {
            self.metrics
                .proposals_committed
                .inc_by(status.commit_index.saturating_sub(published.commit));
        }
        let lease_reads = self.replica.raft().lease_reads_served();
        self.metrics
            .reads_lease
            .inc_by(lease_reads.saturating_sub(published.lease_reads));
        published.lease_reads = lease_reads;
        published.leader = status.leader;
        published.role.clone_from(&status.role);
        published.term = status.term;
        published.commit = status.commit_index;
        status.wall_clock_ms = wall_clock_ms();
        if digest_due {
            let store = self.replica.store();
            status.digest = Some(status::StateDigest {
                request: digest_wanted,
                applied_index: store.applied_index(),
                keys: store.len() as u64,
                digest: format!("{:016x}", store.digest()),
            });
            published.digest_answered = digest_wanted;
        }
        self.status.send_replace(status);
    }

    fn now(&self) -> Now {
        Now {
            mono_ms: self.started.elapsed().as_millis() as u64,
            wall_ms: wall_clock_ms(),
        }
    }

    fn step_all(&mut self, batch: Vec<Message>) {
        // A message may make this node leader and route waiting reads: its clock must be current.
        let clock = self.now();
        self.replica.advance_clock(clock);
        let now = Instant::now();
        for msg in batch {
            self.round_trips.received(&msg, now, &self.metrics);
            self.replica.step(msg);
        }
    }

    /// Runs the replica's Ready processing and carries out everything it asked for.
    async fn flush(&mut self) -> anyhow::Result<()> {
        self.replica.advance()?;
        let out = self.replica.outputs();
        if let Some(book) = out.membership.take() {
            // Before the messages below: some may be for a member that just joined.
            self.follow_membership(book);
        }
        let out = self.replica.outputs();
        let now = Instant::now();
        for msg in out.messages.drain(..) {
            self.round_trips.sending(&msg, now);
            self.transport.send(msg);
        }
        // The disk first: the leader's fsync runs while the replies below are written.
        let jobs = std::mem::take(&mut out.persist);
        for job in jobs {
            self.persist
                .send(job)
                .await
                .map_err(|_| anyhow::anyhow!("the storage thread stopped"))?;
        }
        let out = self.replica.outputs();
        for (handle, reply) in out.replies.drain(..) {
            // A connection that is gone drops the reply, and with it the charge.
            let charged = self.reply_budget.charge(reply, &handle.connection);
            let _ = handle.sender.send(charged);
        }
        if !out.released.is_empty() {
            // Freeing a large store takes long enough to stall the loop; let another thread do it.
            let released = std::mem::take(&mut out.released);
            tokio::task::spawn_blocking(move || drop(released));
        }
        let backups = std::mem::take(&mut out.backups);
        if let Some(task) = out.snapshot.take() {
            self.spawn_snapshot(task);
        }
        for (handle, copy) in backups {
            self.spawn_backup(handle, copy);
        }
        Ok(())
    }

    /// Connects to the members of a new membership (and drops the ones that left), and shows them in
    /// the status.
    fn follow_membership(&mut self, book: raftkv_replica::AddressBook) {
        let peers: Vec<(u64, String)> = book
            .members
            .iter()
            .map(|(id, addrs)| (*id, addrs.peer.clone()))
            .collect();
        // A node that knows no membership yet is joining: whoever leads must be able to reach it.
        let joining = self.replica.raft().membership().voters.is_empty();
        let mut peers = peers;
        if joining {
            // Until the log tells it the membership, a joining node answers the members the cluster
            // named when it joined.
            peers.extend(self.join_peers.iter().cloned());
        }
        self.transport.set_peers(&peers);
        let http: std::collections::HashMap<u64, Option<String>> = self
            .members
            .iter()
            .map(|m| (m.id, m.http_addr.clone()))
            .collect();
        self.members = book
            .members
            .into_iter()
            .map(|(id, addrs)| crate::status::Member {
                id,
                client_addr: addrs.client,
                peer_addr: addrs.peer,
                http_addr: http.get(&id).cloned().flatten(),
            })
            .collect();
    }

    /// Encodes a backup file from a copy of the store on a blocking thread and sends it to the client.
    /// Not charged to the reply budget: a backup is written to its client straight from this buffer,
    /// and a node has one in progress at most (the connections' backup slot).
    fn spawn_backup(&self, handle: ReplyHandle, copy: BackupCopy) {
        let cluster_id = self.cluster_id.clone();
        tokio::spawn(async move {
            if handle.sender.is_closed() {
                // The client is gone: no one to encode it for.
                return;
            }
            let started = Instant::now();
            let encoded = tokio::task::spawn_blocking(move || {
                let mut file = Vec::new();
                raftkv_kv::backup::write_backup(
                    &copy.store,
                    copy.term,
                    &cluster_id,
                    wall_clock_ms(),
                    &mut file,
                );
                (file, copy.store.applied_index(), copy.store.len())
            })
            .await;
            let reply = match encoded {
                Ok((file, index, keys)) => {
                    info!(
                        index,
                        keys,
                        bytes = file.len(),
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "backup encoded"
                    );
                    Reply::Backup {
                        file: bytes::Bytes::from(file),
                    }
                }
                Err(_) => Reply::ErrInternal,
            };
            let _ = handle.sender.send((reply, None));
        });
    }

    /// Serialises and writes a snapshot on a low-priority thread, so the node keeps serving.
    fn spawn_snapshot(&mut self, task: SnapshotTask) {
        let done = self.snapshots.0.clone();
        let writer = self.snapshot_writer.clone();
        let metrics = self.metrics.clone();
        let spawned = std::thread::Builder::new()
            .name("raftkv-snapshot".into())
            .spawn(move || {
                crate::background::lower_this_thread_priority();
                let started = Instant::now();
                let keys = task.store.len();
                let built = task.build(&writer);
                if let Ok((snapshot, _)) = &built {
                    metrics
                        .snapshot_save_duration
                        .observe(started.elapsed().as_secs_f64());
                    metrics
                        .snapshot_size_bytes
                        .set(i64::try_from(snapshot.data.len()).unwrap_or(i64::MAX));
                    info!(
                        index = snapshot.meta.index,
                        keys,
                        bytes = snapshot.data.len(),
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "snapshot taken"
                    );
                }
                let _ = done.blocking_send(built);
            });
        if let Err(err) = spawned {
            warn!("cannot start a snapshot thread, will retry later: {err}");
            self.replica.snapshot_abandoned();
        }
    }
}

pub fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

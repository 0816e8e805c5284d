//! The whole cluster in one thread, in virtual time (1 step = 1 virtual ms), from one seed.
//!
//! A run has two phases. During the fault phase (`Options::steps` ms) the nemesis crashes and restarts
//! nodes, fails their disks, partitions and heals the network, slows disks, jumps clocks and moves
//! leadership, while clients run their workload; the safety checks run after every step. Then the
//! liveness phase heals everything and requires, within `LIVENESS_MS`, one leader known to all, every
//! client finishing new operations, and every node applying everything committed. Finally the history is
//! checked for linearizability.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use raftkv_kv::SessionLimits;
use raftkv_raft::{Config, Index, NodeId, Role, Term};
use raftkv_replica::{AddressBook, MemberAddrs, Mutation, ReplicaConfig};

use crate::checks::Checks;
use crate::client::{self, Client, Fate, History};
use crate::clock::NodeClock;
use crate::disk::Disk;
use crate::linearizability::{self, Verdict};
use crate::network::{Network, NetworkFaults, NetworkStats};
use crate::node::{Env, Node, OpId};
use crate::rng::Rng;

mod clients;
mod membership;
mod nemesis;
mod params;

pub use membership::MembershipPlan;
pub use params::Params;

/// After the faults stop, the cluster must settle within this bound.
const LIVENESS_MS: u64 = 15_000;
/// A leader re-offers a snapshot whose acknowledgement was lost after this many heartbeats (the core's
/// `SNAPSHOT_RETRY_HEARTBEATS`), so settling may take that long with slow heartbeats.
const SNAPSHOT_RETRY_HEARTBEATS: u64 = 100;
/// Past the liveness bound, how much longer members still catching up (their applied index moving
/// every second) may take.
const CATCH_UP_MS: u64 = 45_000;
/// Operations each client must complete after the faults stop.
const LIVENESS_OPS: u64 = 3;
/// Search steps the linearizability checker may spend on one key.
const CHECK_BUDGET: u64 = 20_000_000;
/// More messages than this due in one virtual ms is a message storm (a 5-node cluster under load
/// sends a few dozen).
const MAX_DUE_MESSAGES: usize = 5_000;
/// Client ports are `BASE_PORT + node id`, so a redirect names its node.
const BASE_PORT: u16 = 9000;

pub const DEFAULT_STEPS: u64 = 10_000;

#[derive(Clone, Debug)]
pub struct Options {
    /// Virtual ms of the fault phase.
    pub steps: u64,
    /// Print what happens to stderr (for replaying one seed).
    pub trace: bool,
    /// A deliberate bug in every node (tests that the simulator finds bugs).
    pub mutation: Option<Mutation>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            steps: DEFAULT_STEPS,
            trace: false,
            mutation: None,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub virtual_ms: u64,
    pub ops_ok: usize,
    pub ops_unknown: usize,
    pub ops_dropped: usize,
    /// Writes in a session sent again after an attempt with an unknown outcome.
    pub retries: u64,
    /// Writes in a session answered `ERR_SESSION_EXPIRED` (evicted or expired under tiny limits).
    pub sessions_lost: u64,
    pub committed: u64,
    pub max_term: u64,
    pub crashes: u64,
    pub storage_failures: u64,
    pub clock_jumps: u64,
    /// Membership changes asked of the leader (some refused).
    pub membership_requests: u64,
    /// Membership changes that committed and were answered.
    pub membership_changes: u64,
    /// Reads served from a leader lease (seeds with leases on).
    pub lease_reads: u64,
    /// Answered operations of the Redis front end's compound commands (`crate::compound`).
    pub compound_ops: u64,
    pub net: NetworkStats,
}

/// The result of one seed.
#[derive(Clone, Debug)]
pub struct Report {
    pub seed: u64,
    pub options: Options,
    pub params: Option<Params>,
    /// Safety or liveness violations, and panics (of the code under test or of the simulator).
    pub violations: Vec<String>,
    pub linearizability: Verdict,
    pub stats: Stats,
}

impl Report {
    pub fn non_linearizable(&self) -> bool {
        self.linearizability.illegal()
    }

    pub fn inconclusive(&self) -> bool {
        self.linearizability.inconclusive()
    }

    pub fn failed(&self) -> bool {
        !self.violations.is_empty() || self.non_linearizable() || self.inconclusive()
    }

    pub fn replay_command(&self) -> String {
        let mutation = self
            .options
            .mutation
            .map(|m| format!(" --mutation {m:?}"))
            .unwrap_or_default();
        format!(
            "cargo run --release -p raftkv-sim -- --seed {} --steps {}{mutation} --trace",
            self.seed, self.options.steps
        )
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "seed {}: {:?}", self.seed, self.params)?;
        writeln!(f, "  stats: {:?}", self.stats)?;
        for v in &self.violations {
            writeln!(f, "  violation: {v}")?;
        }
        writeln!(f, "  history: {}", self.linearizability)
    }
}

/// How far (parts per million, either way) a node's monotonic clock may run from true time in a seed
/// with leader leases.
const MAX_LEASE_SEED_MONO_RATE_PPM: u64 = 40_000;

/// Runs one seed. Panics inside (the replica's, the core's or the simulator's own assertions) become
/// violations.
pub fn run_seed(seed: u64, options: &Options) -> Report {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Simulator::new(seed, options).run()
    }));
    outcome.unwrap_or_else(|payload| {
        let message = crate::panic_message(payload.as_ref());
        Report {
            seed,
            options: options.clone(),
            params: Some(Params::draw(&mut Rng::new(seed))),
            violations: vec![format!("panic: {message}")],
            linearizability: Verdict {
                outcome: linearizability::Outcome::Linearizable,
                inconclusive_keys: Vec::new(),
            },
            stats: Stats::default(),
        }
    })
}

struct Simulator {
    seed: u64,
    options: Options,
    params: Params,
    rng: Rng,
    now: u64,
    nodes: Vec<Node>,
    net: Network,
    checks: Checks,
    clients: Vec<Client>,
    history: History,
    replies: Vec<(OpId, raftkv_kv::Reply)>,
    /// Which client sent each request in flight.
    owner: BTreeMap<OpId, usize>,
    /// The index and term each write was proposed at (by attempt), as seen in the replicas' pending writes.
    proposals: BTreeMap<OpId, (Index, Term)>,
    /// Every attempt of each write in a session (the first attempt's id is the operation's).
    attempts: BTreeMap<OpId, Vec<OpId>>,
    next_op_id: u64,
    next_conn: u64,
    stats: Stats,
    /// Set once the faults stop: (time, completed ops per client at that time).
    healed: Option<(u64, Vec<u64>)>,
    /// The lowest and highest any node's wall clock has been ahead of virtual time, in ms.
    clock_lead_range: (i64, i64),
    /// Membership changes, if this seed has them.
    membership: Option<MembershipPlan>,
    /// Draws when membership changes happen (apart from `rng`, as for sessions).
    membership_rng: Rng,
}

impl Simulator {
    fn new(seed: u64, options: &Options) -> Simulator {
        let mut rng = Rng::new(seed);
        let mut params = Params::draw(&mut rng);
        // Drawn apart from the main generator, so that seeds without sessions run as they always did.
        let mut session_rng = Rng::new(seed ^ 0x5E55_1015);
        let sessions = session_rng.chance(500_000);
        if sessions && session_rng.chance(400_000) {
            // Tiny limits, so that sessions are evicted and expire while clients use them. At least one
            // session per client: with fewer, clients evict each other's sessions in turn and, with
            // slow disks, may never get a write through (a livelock the limits invite, not a bug).
            // Likewise a session must outlive a commit: with disks kept slow after the faults (each
            // write 250-350 ms, a commit twice that), a session idle for 300 ms expires between its
            // registration and its first write, every time (seed 177606).
            let clients = params.clients as u64;
            let min_idle_ms = if params.slow_disks_after_heal {
                2_000
            } else {
                0
            };
            params.session_limits = SessionLimits {
                max_sessions: session_rng.range(clients, clients + 2) as usize,
                idle_ms: session_rng.range(300, 3_000).max(min_idle_ms),
            };
        }
        let membership = MembershipPlan::draw(seed, params.nodes);
        if membership.is_some() {
            // As deployed: without pre-vote and check-quorum a removed node that never learned of its
            // removal disrupts the cluster with ever higher terms (dissertation §4.2.3).
            params.pre_vote = true;
            params.check_quorum = true;
        }
        // Drawn apart too: seeds drawn before leases existed keep running as they did.
        params.lease_reads = params.check_quorum && Rng::new(seed ^ 0x1EA5_E5EE).chance(400_000);
        params.redis_ops = Rng::new(seed ^ 0x4ED1_5C0D).chance(500_000);
        params.compound_ops = params.redis_ops && Rng::new(seed ^ 0xC0_4B0D).chance(500_000);
        params.instant_expiry = params.redis_ops && Rng::new(seed ^ 0x0125_7A47).chance(500_000);
        let membership_rng = Rng::new(seed ^ 0x3E3B_E126);
        let initial_voters = membership
            .as_ref()
            .map_or(params.nodes, |plan| plan.initial_voters);
        let all: Vec<NodeId> = (1..=params.nodes as NodeId).collect();
        let voters: Vec<NodeId> = all[..initial_voters].to_vec();
        let client_addrs: BTreeMap<NodeId, String> = all
            .iter()
            .map(|&id| (id, format!("node{id}:{}", BASE_PORT + id as u16)))
            .collect();
        let mut checks = Checks::new(params.nodes);
        let book = AddressBook {
            members: voters
                .iter()
                .map(|&id| {
                    let addrs = MemberAddrs {
                        client: client_addrs[&id].clone(),
                        peer: format!("node{id}:peer"),
                        resp: None,
                    };
                    (id, addrs)
                })
                .collect(),
        };
        let nodes = all
            .iter()
            .map(|&id| {
                let founder = voters.contains(&id);
                // A node outside the initial cluster starts empty, as `raftkv server --join` does.
                let bootstrap_voters = if founder { voters.clone() } else { Vec::new() };
                let mut raft = Config::new(id, bootstrap_voters);
                raft.election_ticks = params.election_ticks;
                raft.heartbeat_ticks = params.heartbeat_ticks;
                raft.pre_vote = params.pre_vote;
                raft.check_quorum = params.check_quorum;
                raft.lease_reads = params.lease_reads;
                raft.max_entries_per_msg = params.max_entries_per_msg;
                raft.max_inflight_msgs = params.max_inflight_msgs;
                raft.seed = rng.next_u64();
                let config = ReplicaConfig {
                    raft,
                    client_addrs: client_addrs.clone(),
                    peer_addrs: Default::default(),
                    promote_max_lag: raftkv_replica::DEFAULT_PROMOTE_MAX_LAG,
                    auto_remove_after_ms: 0,
                    leader_wait_ms: u64::from(params.election_ticks) * params.tick_ms * 2,
                    snapshot_entries: params.snapshot_entries,
                    snapshot_bytes: params.snapshot_bytes,
                    session_limits: params.session_limits,
                    tick_ms: params.tick_ms,
                    mutation: options.mutation,
                    record_applied: true,
                };
                let disk = Disk::new(
                    params.disk_latency,
                    params.slow_disk_latency,
                    params.segment_bytes,
                );
                let mut clock = NodeClock::draw(&mut rng, params.max_skew_ms, params.max_drift_ppm);
                if params.lease_reads {
                    // Monotonic clocks (and so ticks) at rates up to 4 % apart from true, at most
                    // ~8 % apart from each other: inside the 10 % a lease tolerates. Drawn apart.
                    let mut rates = Rng::new(seed ^ 0x70CC_4A7E ^ id);
                    let max = MAX_LEASE_SEED_MONO_RATE_PPM;
                    clock.set_mono_rate_ppm(rates.range(0, 2 * max) as i64 - max as i64);
                }
                let mut node =
                    Node::new(config, disk, clock, params.tick_ms, params.snapshot_delay);
                if founder {
                    node.bootstrap = Some(book.clone());
                } else {
                    node.join_peers = all.iter().copied().collect();
                }
                node.start(0, &mut checks);
                node
            })
            .collect();
        let clients = (0..params.clients)
            .map(|i| Client {
                id: i as u64 + 1,
                conn: i as u64 + 1,
                target: rng.range(1, params.nodes as u64),
                in_flight: VecDeque::new(),
                deadline: 0,
                next_at: 0,
                completed: 0,
                versions: BTreeMap::new(),
                session: (sessions && session_rng.chance(700_000)).then(client::Session::default),
                retry: None,
            })
            .collect();
        Simulator {
            seed,
            options: options.clone(),
            net: Network::new(params.nodes, params.net),
            checks,
            next_conn: params.clients as u64 + 1,
            params,
            rng,
            now: 0,
            nodes,
            clients,
            history: History::default(),
            replies: Vec::new(),
            owner: BTreeMap::new(),
            proposals: BTreeMap::new(),
            attempts: BTreeMap::new(),
            next_op_id: 1,
            stats: Stats::default(),
            healed: None,
            clock_lead_range: (0, 0),
            membership,
            membership_rng,
        }
    }

    fn trace(&self, what: impl FnOnce() -> String) {
        if self.options.trace {
            eprintln!("[{:>6}ms] {}", self.now, what());
        }
    }

    fn run(mut self) -> Report {
        self.trace(|| format!("seed {} params {:?}", self.seed, self.params));
        while self.now < self.options.steps && self.checks.violations.is_empty() {
            if self.rng.chance(self.params.nemesis_ppm) {
                self.nemesis();
            }
            if self.rng.chance(self.params.clock_jump_ppm) {
                self.jump_a_clock();
            }
            if let Some(ppm) = self.membership.as_ref().map(|plan| plan.change_ppm) {
                if self.membership_rng.chance(ppm) {
                    self.change_membership();
                }
            }
            self.step();
        }
        if self.checks.violations.is_empty() {
            self.heal_everything();
            let liveness_ms = self.liveness_ms();
            let deadline = self.now + liveness_ms;
            // A member still catching up a long log (tiny messages, no snapshots) may take longer;
            // it gets up to CATCH_UP_MS more while its applied index keeps moving every second.
            let hard_deadline = deadline + CATCH_UP_MS;
            let mut applied = self.applied_indexes();
            let mut checked_at = self.now;
            while !self.settled() && self.now < hard_deadline && self.checks.violations.is_empty() {
                if self.now >= deadline && self.now >= checked_at + 1_000 {
                    let now_applied = self.applied_indexes();
                    if now_applied == applied {
                        break;
                    }
                    (applied, checked_at) = (now_applied, self.now);
                }
                self.step();
            }
            if !self.settled() && self.checks.violations.is_empty() {
                let why = self.unsettled_reason();
                self.checks.fail(
                    0,
                    format!(
                        "liveness: not settled {liveness_ms}ms after the faults stopped: {why}"
                    ),
                );
            }
        }
        self.trace(|| {
            let nodes: Vec<String> = self
                .nodes
                .iter()
                .map(|n| match &n.replica {
                    Some(r) => format!(
                        "{:?} {:?}; {}; disk next due {:?}; progress {}",
                        r.raft().status(),
                        r.raft().membership(),
                        r.queues_summary(),
                        n.disk.next_due(),
                        r.raft().progress_summary()
                    ),
                    None => "down".to_string(),
                })
                .collect();
            format!("final node states:\n  {}", nodes.join("\n  "))
        });
        let (history, contradictions) = self.history.for_checker(|record| self.effect_of(record));
        for what in contradictions {
            self.checks.fail(0, what);
        }
        // No stamp is older than virtual time 0 plus the slowest clock, and no replicated clock ever
        // got ahead of the end plus the fastest one: a longer lifetime cannot have run out.
        let (low, high) = self.clock_lead_range;
        let span_ms = (self.now as i64 + high - low).max(0) as u64;
        let lasting_ttl_s = u32::try_from(span_ms / 1000 + 1).unwrap_or(u32::MAX);
        let linearizability =
            linearizability::check_with(&history, CHECK_BUDGET, Some(lasting_ttl_s));
        self.trace(|| {
            let optional = history.iter().filter(|op| op.ret.is_none()).count();
            format!(
                "history of {} ops ({} checked, {optional} of unknown outcome): {linearizability}",
                self.history.records.len(),
                history.len(),
            )
        });
        let mut stats = std::mem::take(&mut self.stats);
        stats.virtual_ms = self.now;
        stats.ops_ok = self.history.count(Fate::Ok);
        stats.ops_unknown = self.history.count(Fate::Unknown);
        stats.ops_dropped = self.history.count(Fate::Dropped);
        stats.compound_ops = self
            .history
            .records
            .iter()
            .filter(|r| r.fate == Fate::Ok && crate::compound::is_compound(&r.op.kind))
            .count() as u64;
        stats.committed = self.checks.committed_len();
        stats.max_term = self
            .nodes
            .iter()
            .filter_map(|n| n.replica.as_ref())
            .map(|r| r.raft().status().term)
            .max()
            .unwrap_or(0);
        stats.crashes = self.nodes.iter().map(|n| n.crashes).sum();
        stats.lease_reads = self
            .nodes
            .iter()
            .map(|n| {
                n.lease_reads
                    + n.replica
                        .as_ref()
                        .map_or(0, |r| r.raft().lease_reads_served())
            })
            .sum();
        stats.net = self.net.stats;
        Report {
            seed: self.seed,
            options: self.options,
            params: Some(self.params),
            violations: self.checks.violations,
            linearizability,
            stats,
        }
    }

    fn step(&mut self) {
        self.now += 1;
        self.checks.now = self.now;
        let now = self.now;
        for node in &self.nodes {
            let lead = node.clock.lead_ms(now);
            let (low, high) = &mut self.clock_lead_range;
            (*low, *high) = ((*low).min(lead), (*high).max(lead));
        }
        let due = self.net.deliver_due(now);
        if due.len() > MAX_DUE_MESSAGES {
            // Nothing in a healthy cluster comes close: the nodes amplify their own traffic.
            self.checks.fail(
                0,
                format!("message storm: {} messages due in one ms", due.len()),
            );
            return;
        }
        for msg in due {
            let node = &mut self.nodes[(msg.to - 1) as usize];
            if node.is_up() {
                node.heard_from(msg.from);
            }
            if let Some(replica) = node.replica.as_mut() {
                replica.step(msg);
            }
        }
        // Disk completions, snapshot work and ticks, then what they produced; then the clients'
        // requests, and what those produced.
        self.drive_nodes(true);
        self.run_clients();
        self.drive_nodes(false);
        self.handle_replies();
        self.checks.stamp_applied(self.history.clock());
        for node in &self.nodes {
            if let Some(replica) = &node.replica {
                for (index, term, op_id) in replica.pending_writes() {
                    self.proposals.entry(*op_id).or_insert((index, term));
                }
            }
        }
        for node in &self.nodes {
            if let Some(replica) = &node.replica {
                let status = replica.raft().status();
                if self.options.trace
                    && status.role == Role::Leader
                    && !self.checks.is_known_leader(status.term)
                {
                    let m = replica.raft().membership();
                    eprintln!(
                        "[{now:>6}ms] node {} leads term {} (voters {:?}, learners {:?}, config at {}, log {}..={}, commit {})",
                        node.id,
                        status.term,
                        m.voters,
                        m.learners,
                        replica.raft().config_index(),
                        status.first_index,
                        status.last_index,
                        status.commit
                    );
                }
                self.checks.after_step(
                    &status,
                    replica.store().applied_index(),
                    replica.raft().entries(),
                );
            }
        }
    }

    /// Runs every node's driver for this ms (`step`: its disk, snapshot work and tick too) and carries
    /// out its outputs.
    fn drive_nodes(&mut self, step: bool) {
        for i in 0..self.nodes.len() {
            let was_up = self.nodes[i].is_up();
            let mut env = Env {
                now: self.now,
                rng: &mut self.rng,
                net: &mut self.net,
                checks: &mut self.checks,
                replies: &mut self.replies,
            };
            if step {
                self.nodes[i].step(&mut env);
            }
            self.nodes[i].flush(&mut env);
            if was_up && !self.nodes[i].is_up() {
                self.on_node_stopped(i as NodeId + 1);
            }
        }
    }

    /// A node stopped by itself (its storage failed): its connections break like a crash's.
    fn on_node_stopped(&mut self, id: NodeId) {
        self.stats.storage_failures += 1;
        let why = self.nodes[(id - 1) as usize].stopped.clone();
        self.trace(|| format!("node {id} stopped: {why:?}"));
        self.break_connections_to(id);
    }

    fn heal_everything(&mut self) {
        self.trace(|| "faults stop: heal network, restart stopped nodes, disks normal".into());
        self.net.heal();
        self.net.faults = NetworkFaults::calm(self.params.net.delay);
        for i in 0..self.nodes.len() {
            self.nodes[i].disk.slow = false;
            if self.params.slow_disks_after_heal {
                self.nodes[i].disk.set_latency((250, 350));
            }
            self.nodes[i].disk.fs.cancel_failure();
            if self.nodes[i].is_up() && self.nodes[i].disk.fs.is_dead() {
                // Its disk already failed; it would stop at its next write.
                self.crash(i as NodeId + 1);
            }
            if !self.nodes[i].is_up() {
                self.restart(i as NodeId + 1);
            }
        }
        self.healed = Some((self.now, self.clients.iter().map(|c| c.completed).collect()));
    }

    /// How long the cluster may take to settle once the faults stop: 15 s, or longer when heartbeats
    /// are so slow that a lost snapshot acknowledgement takes longer to be retried.
    fn liveness_ms(&self) -> u64 {
        let heartbeat_ms = u64::from(self.params.heartbeat_ticks) * self.params.tick_ms;
        LIVENESS_MS.max(SNAPSHOT_RETRY_HEARTBEATS * heartbeat_ms + 5_000)
    }

    /// Each running node's applied index (how the liveness phase sees progress).
    fn applied_indexes(&self) -> Vec<Index> {
        self.nodes
            .iter()
            .filter_map(|n| n.replica.as_ref())
            .map(|r| r.store().applied_index())
            .collect()
    }

    fn client_quota_met(&self, client: usize) -> bool {
        self.healed
            .as_ref()
            .is_some_and(|(_, base)| self.clients[client].completed >= base[client] + LIVENESS_OPS)
    }

    fn settled(&self) -> bool {
        self.unsettled_reason().is_empty()
    }

    /// Empty when the cluster has settled; otherwise what is still missing.
    fn unsettled_reason(&self) -> String {
        let mut why = Vec::new();
        for (i, client) in self.clients.iter().enumerate() {
            if !self.client_quota_met(i) || !client.in_flight.is_empty() || client.retry.is_some() {
                why.push(format!(
                    "client {} has completed {} ops ({} in flight)",
                    client.id,
                    client.completed,
                    client.in_flight.len()
                ));
            }
        }
        let statuses: Vec<_> = self
            .nodes
            .iter()
            .filter_map(|n| {
                n.replica
                    .as_ref()
                    .map(|r| (r.raft().status(), r.store().applied_index()))
            })
            .collect();
        if statuses.len() < self.nodes.len() {
            why.push(format!("{} nodes down", self.nodes.len() - statuses.len()));
        }
        let leaders: Vec<_> = statuses
            .iter()
            .filter(|(s, _)| s.role == Role::Leader)
            .collect();
        match leaders.as_slice() {
            [(leader, _)] => {
                // Only members follow the leader; a removed node, or one never added, need not.
                let membership = self.nodes[(leader.id - 1) as usize]
                    .replica
                    .as_ref()
                    .map(|r| r.raft().membership().clone())
                    .unwrap_or_default();
                for (s, applied) in &statuses {
                    if !membership.contains(s.id) {
                        continue;
                    }
                    if s.term != leader.term
                        || s.leader != Some(leader.id)
                        || *applied != leader.commit
                    {
                        why.push(format!(
                            "node {} not caught up with leader {}: {s:?} applied {applied}",
                            s.id, leader.id
                        ));
                    }
                }
                if leader.commit != leader.last_index {
                    why.push(format!(
                        "leader {} has uncommitted entries: {leader:?}",
                        leader.id
                    ));
                }
            }
            _ => why.push(format!("{} leaders: {statuses:?}", leaders.len())),
        }
        why.join("; ")
    }
}

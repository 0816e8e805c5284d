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

use raftkv_raft::{Config, Index, NodeId, Role, Term};
use raftkv_replica::{Mutation, ReplicaConfig};

use crate::checks::Checks;
use crate::client::{self, Client, Effect, Fate, History, InFlight, Meaning};
use crate::clock::NodeClock;
use crate::disk::Disk;
use crate::linearizability::{self, OpKind, Verdict};
use crate::network::{Network, NetworkFaults, NetworkStats};
use crate::node::{Env, Node, OpId};
use crate::rng::Rng;

/// After the faults stop, the cluster must settle within this bound.
const LIVENESS_MS: u64 = 15_000;
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

/// What one seed chose (swarm testing: every seed draws its own fault mix).
#[derive(Clone, Debug)]
pub struct Params {
    pub nodes: usize,
    pub clients: usize,
    pub keys: u64,
    /// Requests one connection may have in flight.
    pub pipeline: usize,
    pub read_ppm: u32,
    pub ttl_ppm: u32,
    pub think_ms: u64,
    /// A client gives up on a request (and its connection) after this long.
    pub op_timeout_ms: u64,
    pub net: NetworkFaults,
    pub nemesis_ppm: u32,
    pub disk_latency: (u64, u64),
    pub slow_disk_latency: (u64, u64),
    pub segment_bytes: u64,
    pub snapshot_entries: u64,
    pub snapshot_bytes: u64,
    pub snapshot_delay: (u64, u64),
    pub max_skew_ms: u64,
    pub max_drift_ppm: u64,
    /// Chance (per million, per ms) of a wall-clock step on some node, besides the nemesis's.
    pub clock_jump_ppm: u32,
    pub tick_ms: u64,
    pub election_ticks: u32,
    pub heartbeat_ticks: u32,
    pub pre_vote: bool,
    pub check_quorum: bool,
    pub max_entries_per_msg: usize,
    pub max_inflight_msgs: usize,
}

impl Params {
    fn draw(rng: &mut Rng) -> Params {
        let election_ticks = rng.range(5, 15) as u32;
        let tiny_snapshots = rng.chance(500_000);
        // One seed in five stresses time: mostly reads of keys that expire, clocks seconds apart.
        let time_heavy = rng.chance(200_000);
        let mut params = Params {
            nodes: if rng.chance(500_000) { 3 } else { 5 },
            clients: rng.range(1, 5) as usize,
            keys: rng.range(1, 4),
            pipeline: [1, 1, 2, 4][rng.index(4)],
            read_ppm: rng.range(200_000, 950_000) as u32,
            ttl_ppm: [0, 100_000, 400_000][rng.index(3)],
            think_ms: rng.range(0, 30),
            op_timeout_ms: rng.range(300, 2_000),
            net: NetworkFaults {
                drop_ppm: [0, 10_000, 50_000, 150_000][rng.index(4)],
                duplicate_ppm: [0, 10_000, 50_000][rng.index(3)],
                delay: (1, rng.range(2, 30)),
            },
            nemesis_ppm: rng.range(1_000, 10_000) as u32,
            disk_latency: (1, rng.range(1, 5)),
            slow_disk_latency: (20, rng.range(50, 400)),
            segment_bytes: [1 << 10, 8 << 10, 1 << 20][rng.index(3)],
            snapshot_entries: if tiny_snapshots {
                rng.range(3, 30)
            } else {
                1 << 40
            },
            snapshot_bytes: if rng.chance(200_000) {
                rng.range(200, 4_000)
            } else {
                1 << 40
            },
            snapshot_delay: (0, rng.range(1, 100)),
            max_skew_ms: [0, 50, 1_000, 5_000][rng.index(4)],
            max_drift_ppm: [0, 1_000, 20_000][rng.index(3)],
            clock_jump_ppm: 0,
            tick_ms: 10,
            election_ticks,
            heartbeat_ticks: rng.range(1, u64::from(election_ticks / 3)) as u32,
            pre_vote: rng.chance(750_000),
            check_quorum: rng.chance(750_000),
            max_entries_per_msg: rng.range(1, 64) as usize,
            max_inflight_msgs: rng.range(1, 16) as usize,
        };
        if time_heavy {
            params.read_ppm = rng.range(850_000, 980_000) as u32;
            params.ttl_ppm = 800_000;
            params.max_skew_ms = [3_000, 10_000][rng.index(2)];
            params.clock_jump_ppm = 5_000;
        }
        params
    }
}

#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub virtual_ms: u64,
    pub ops_ok: usize,
    pub ops_unknown: usize,
    pub ops_dropped: usize,
    pub committed: u64,
    pub max_term: u64,
    pub crashes: u64,
    pub storage_failures: u64,
    pub clock_jumps: u64,
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
    /// The index and term each write was proposed at, as seen in the replicas' pending writes.
    proposals: BTreeMap<OpId, (Index, Term)>,
    next_op_id: u64,
    next_conn: u64,
    stats: Stats,
    /// Set once the faults stop: (time, completed ops per client at that time).
    healed: Option<(u64, Vec<u64>)>,
}

impl Simulator {
    fn new(seed: u64, options: &Options) -> Simulator {
        let mut rng = Rng::new(seed);
        let params = Params::draw(&mut rng);
        let voters: Vec<NodeId> = (1..=params.nodes as NodeId).collect();
        let client_addrs: BTreeMap<NodeId, String> = voters
            .iter()
            .map(|&id| (id, format!("node{id}:{}", BASE_PORT + id as u16)))
            .collect();
        let mut checks = Checks::new(params.nodes);
        let nodes = voters
            .iter()
            .map(|&id| {
                let mut raft = Config::new(id, voters.clone());
                raft.election_ticks = params.election_ticks;
                raft.heartbeat_ticks = params.heartbeat_ticks;
                raft.pre_vote = params.pre_vote;
                raft.check_quorum = params.check_quorum;
                raft.max_entries_per_msg = params.max_entries_per_msg;
                raft.max_inflight_msgs = params.max_inflight_msgs;
                raft.seed = rng.next_u64();
                let config = ReplicaConfig {
                    raft,
                    client_addrs: client_addrs.clone(),
                    leader_wait_ms: u64::from(params.election_ticks) * params.tick_ms * 2,
                    snapshot_entries: params.snapshot_entries,
                    snapshot_bytes: params.snapshot_bytes,
                    mutation: options.mutation,
                    record_applied: true,
                };
                let disk = Disk::new(
                    params.disk_latency,
                    params.slow_disk_latency,
                    params.segment_bytes,
                );
                let clock = NodeClock::draw(&mut rng, params.max_skew_ms, params.max_drift_ppm);
                let mut node =
                    Node::new(config, disk, clock, params.tick_ms, params.snapshot_delay);
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
            next_op_id: 1,
            stats: Stats::default(),
            healed: None,
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
            self.step();
        }
        if self.checks.violations.is_empty() {
            self.heal_everything();
            let deadline = self.now + LIVENESS_MS;
            while !self.settled() && self.now < deadline && self.checks.violations.is_empty() {
                self.step();
            }
            if !self.settled() && self.checks.violations.is_empty() {
                let why = self.unsettled_reason();
                self.checks.fail(
                    0,
                    format!(
                        "liveness: not settled {LIVENESS_MS}ms after the faults stopped: {why}"
                    ),
                );
            }
        }
        let (history, contradictions) = self.history.for_checker(|record| self.effect_of(record));
        for what in contradictions {
            self.checks.fail(0, what);
        }
        let linearizability = linearizability::check(&history, CHECK_BUDGET);
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
        stats.committed = self.checks.committed_len();
        stats.max_term = self
            .nodes
            .iter()
            .filter_map(|n| n.replica.as_ref())
            .map(|r| r.raft().status().term)
            .max()
            .unwrap_or(0);
        stats.crashes = self.nodes.iter().map(|n| n.crashes).sum();
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
            if let Some(replica) = self.nodes[(msg.to - 1) as usize].replica.as_mut() {
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
                    eprintln!("[{now:>6}ms] node {} leads term {}", node.id, status.term);
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

    // ---- nemesis ----

    fn random_node(&mut self, up: bool) -> Option<NodeId> {
        let candidates: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|n| n.is_up() == up)
            .map(|n| n.id)
            .collect();
        (!candidates.is_empty()).then(|| candidates[self.rng.index(candidates.len())])
    }

    fn leader(&self) -> Option<NodeId> {
        // The leader of the highest term, if any node leads.
        self.nodes
            .iter()
            .filter_map(|n| n.replica.as_ref().map(|r| r.raft().status()))
            .filter(|s| s.role == Role::Leader)
            .max_by_key(|s| s.term)
            .map(|s| s.id)
    }

    fn nemesis(&mut self) {
        let n = self.params.nodes as NodeId;
        match self.rng.below(15) {
            0 | 1 => {
                if let Some(id) = self.random_node(true) {
                    self.crash(id);
                }
            }
            2 | 3 => {
                if let Some(id) = self.random_node(false) {
                    self.restart(id);
                }
            }
            4 => {
                let mut ids: Vec<NodeId> = (1..=n).collect();
                self.rng.shuffle(&mut ids);
                let side = &ids[..self.rng.range(1, n / 2) as usize];
                self.trace(|| format!("nemesis: partition {side:?} | rest"));
                self.net.partition(side);
            }
            5 => {
                for _ in 0..self.rng.range(1, n) {
                    let (from, to) = (self.rng.range(1, n), self.rng.range(1, n));
                    if from != to {
                        self.trace(|| format!("nemesis: block {from} -> {to}"));
                        self.net.block(from, to);
                    }
                }
            }
            6 => {
                if let Some(id) = self.leader() {
                    self.trace(|| format!("nemesis: isolate leader {id}"));
                    self.net.partition(&[id]);
                }
            }
            7 | 8 => {
                self.trace(|| "nemesis: heal network".into());
                self.net.heal();
            }
            9 => {
                let i = self.rng.index(self.nodes.len());
                let disk = &mut self.nodes[i].disk;
                disk.slow = !disk.slow;
                let slow = disk.slow;
                self.trace(|| format!("nemesis: node {} disk slow={slow}", i + 1));
            }
            10 => {
                if let Some(id) = self.leader() {
                    let to = (id + self.rng.range(1, n - 1) - 1) % n + 1; // Anyone but the leader.
                    let replica = self.nodes[(id - 1) as usize].replica.as_mut();
                    let result = replica.map(|r| r.raft_mut().transfer_leadership(to));
                    self.trace(|| format!("nemesis: transfer leadership {id} -> {to}: {result:?}"));
                }
            }
            11 | 12 => self.jump_a_clock(),
            13 => {
                // The disk fails a few operations from now: the node stops, as on a real fsync error.
                if let Some(id) = self.random_node(true) {
                    let after = self.rng.range(1, 30);
                    self.nodes[(id - 1) as usize].disk.fs.fail_after(after);
                    self.trace(|| {
                        format!("nemesis: node {id} disk fails after {after} operations")
                    });
                }
            }
            _ => {
                if let Some(id) = self.leader() {
                    self.crash(id);
                }
            }
        }
    }

    /// A wall-clock step, forward or back, on one node (the leader half the time), as NTP makes.
    fn jump_a_clock(&mut self) {
        let id = match self.leader() {
            Some(id) if self.rng.chance(500_000) => id,
            _ => self.rng.range(1, self.params.nodes as u64),
        };
        let size = [200, 1_000, 3_000, 10_000][self.rng.index(4)];
        let delta = self.rng.range(0, 2 * size) as i64 - size as i64;
        self.nodes[(id - 1) as usize].clock.jump(delta);
        self.stats.clock_jumps += 1;
        self.trace(|| format!("node {id} wall clock jumps {delta:+}ms"));
    }

    fn crash(&mut self, id: NodeId) {
        self.trace(|| format!("nemesis: crash node {id}"));
        let seed = self.rng.next_u64();
        self.nodes[(id - 1) as usize].crash(seed);
        self.break_connections_to(id);
    }

    fn restart(&mut self, id: NodeId) {
        let seed = self.rng.next_u64();
        self.trace(|| format!("nemesis: restart node {id}"));
        self.nodes[(id - 1) as usize].start(seed, &mut self.checks);
    }

    fn heal_everything(&mut self) {
        self.trace(|| "faults stop: heal network, restart stopped nodes, disks normal".into());
        self.net.heal();
        self.net.faults = NetworkFaults::calm(self.params.net.delay);
        for i in 0..self.nodes.len() {
            self.nodes[i].disk.slow = false;
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
            if !self.client_quota_met(i) || !client.in_flight.is_empty() {
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
                for (s, applied) in &statuses {
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

    /// What the cluster did with a write: found by the index and term it was proposed at (the
    /// simulator records every pending write after every step, and a proposal stays pending at least
    /// until the step ends), or else (a `set` or `cas`) by its unique value. A write never seen pending
    /// and never applied was never proposed.
    fn effect_of(&self, record: &client::Record) -> Effect {
        let applied_at = |index: Index| {
            let (_, reply, clock) = self.checks.applied_replies.get(&index)?;
            Some(Effect::Applied {
                index,
                reply: reply.clone(),
                clock: *clock,
            })
        };
        if let Some(&(index, term)) = self.proposals.get(&record.op_id) {
            return match self.checks.applied_replies.get(&index) {
                Some((applied_term, _, _)) if *applied_term == term => {
                    applied_at(index).unwrap_or(Effect::Never)
                }
                _ => Effect::Never,
            };
        }
        match record.op.kind {
            OpKind::Set { write, .. } | OpKind::Cas { write, .. } => {
                match self.checks.write_outcomes.get(&client::value_bytes(write)) {
                    Some((index, _)) => applied_at(*index).unwrap_or(Effect::Unresolved),
                    None => Effect::Never,
                }
            }
            _ => Effect::Never,
        }
    }

    // ---- clients ----

    fn run_clients(&mut self) {
        for c in 0..self.clients.len() {
            let client = &self.clients[c];
            if !client.in_flight.is_empty() && self.now >= client.deadline {
                self.trace(|| format!("client {} gives up on its connection", c + 1));
                self.reconnect(c, true);
                continue;
            }
            let open = self.healed.is_none() || !self.client_quota_met(c);
            if open && self.now >= client.next_at && client.in_flight.len() < self.params.pipeline {
                self.send(c);
            }
        }
    }

    /// Sends the client's next request on its connection.
    fn send(&mut self, c: usize) {
        let op_id = self.next_op_id;
        self.next_op_id += 1;
        let key = self.rng.below(self.params.keys);
        let last_version = self.clients[c].versions.get(&key).copied();
        let (request, kind, noreply) = client::draw_op(
            &mut self.rng,
            op_id,
            key,
            self.params.read_ppm,
            self.params.ttl_ppm,
            last_version,
        );
        let conn = self.clients[c].conn;
        let target = self.clients[c].target;
        let slot = self.history.invoke(op_id, conn, key, kind, self.now);
        self.trace(|| {
            format!(
                "client {} conn {conn} -> node {target}: op {op_id} {request:?} noreply={noreply}",
                c + 1
            )
        });
        if !self.nodes[(target - 1) as usize].is_up() {
            // Connection refused: nothing happened; try another node a little later.
            self.history.settle(slot, Fate::Dropped);
            self.retarget(c, None);
            return;
        }
        self.nodes[(target - 1) as usize].request(self.now, request, op_id);
        let client = &mut self.clients[c];
        if noreply {
            // The client will never know: the write may or may not happen.
            self.history.settle(slot, Fate::Unknown);
            client.next_at = self.now + self.rng.range(0, self.params.think_ms);
            return;
        }
        if client.in_flight.is_empty() {
            client.deadline = self.now + self.params.op_timeout_ms;
        }
        client.in_flight.push_back(InFlight {
            op_id,
            slot,
            reply: None,
        });
        self.owner.insert(op_id, c);
        client.next_at = self.now + self.rng.range(0, self.params.think_ms / 4 + 1);
    }

    /// Points the client at another node (the one named by a redirect, or a random one), after a pause.
    fn retarget(&mut self, c: usize, to: Option<NodeId>) {
        let target = to.unwrap_or_else(|| self.rng.range(1, self.params.nodes as u64));
        let pause = if to.is_some() {
            1
        } else {
            self.rng.range(5, 20)
        };
        let client = &mut self.clients[c];
        if client.target != target && !client.in_flight.is_empty() {
            // A new node means a new connection; what is in flight on the old one is abandoned.
            self.reconnect(c, false);
        }
        let client = &mut self.clients[c];
        client.target = target;
        client.next_at = self.now + pause;
    }

    /// Closes the client's connection: requests in flight end with an unknown outcome (writes) or no
    /// answer (reads), and the next request goes out on a new connection.
    fn reconnect(&mut self, c: usize, random_target: bool) {
        let abandoned: Vec<InFlight> = self.clients[c].in_flight.drain(..).collect();
        for request in abandoned {
            self.owner.remove(&request.op_id);
            let is_read = client::is_read(&self.history.records[request.slot].op.kind);
            let fate = if is_read {
                Fate::Dropped
            } else {
                Fate::Unknown
            };
            self.history.settle(request.slot, fate);
        }
        let conn = self.next_conn;
        self.next_conn += 1;
        let target = self.rng.range(1, self.params.nodes as u64);
        let pause = self.rng.range(5, 20);
        let client = &mut self.clients[c];
        client.conn = conn;
        if random_target {
            client.target = target;
            client.next_at = self.now + pause;
        }
    }

    fn break_connections_to(&mut self, id: NodeId) {
        for c in 0..self.clients.len() {
            if self.clients[c].target == id {
                self.reconnect(c, true);
            }
        }
    }

    fn handle_replies(&mut self) {
        for (op_id, reply) in std::mem::take(&mut self.replies) {
            // The client may have given up already, or never waited (noreply).
            let Some(&c) = self.owner.get(&op_id) else {
                continue;
            };
            let client = &mut self.clients[c];
            let Some(request) = client.in_flight.iter_mut().find(|r| r.op_id == op_id) else {
                continue;
            };
            assert!(request.reply.is_none(), "op {op_id} answered twice");
            request.reply = Some(reply);
            // The connection delivers replies in request order.
            while self.clients[c]
                .in_flight
                .front()
                .is_some_and(|r| r.reply.is_some())
            {
                let Some(done) = self.clients[c].in_flight.pop_front() else {
                    break;
                };
                self.deliver(c, done);
                if self.clients[c].in_flight.is_empty() {
                    break;
                }
            }
            let now = self.now;
            let timeout = self.params.op_timeout_ms;
            let client = &mut self.clients[c];
            if !client.in_flight.is_empty() {
                client.deadline = now + timeout;
            }
        }
    }

    fn deliver(&mut self, c: usize, done: InFlight) {
        self.owner.remove(&done.op_id);
        let Some(reply) = done.reply else { return };
        let record = &self.history.records[done.slot];
        let kind = record.op.kind;
        let key = record.op.key;
        self.trace(|| format!("client {} op {}: {reply:?}", c + 1, done.op_id));
        let node_of_port = |port: u16| {
            let id = u64::from(port.checked_sub(BASE_PORT)?);
            (1..=self.params.nodes as u64).contains(&id).then_some(id)
        };
        match client::interpret(kind, &reply, node_of_port) {
            Ok(Meaning::Done(kind)) => {
                self.history.respond(done.slot, kind, self.now);
                let client = &mut self.clients[c];
                client.completed += 1;
                let version = match kind {
                    OpKind::Set { version, .. } | OpKind::Cas { version, .. } => version,
                    OpKind::Getm {
                        value: Some((_, version, _)),
                    } => Some(version),
                    _ => None,
                };
                if let Some(version) = version {
                    client.versions.insert(key, version);
                }
                client.next_at = client
                    .next_at
                    .max(self.now + self.rng.range(0, self.params.think_ms));
            }
            Ok(Meaning::Redirect(to)) => {
                self.history.settle(done.slot, Fate::Dropped);
                self.retarget(c, to);
            }
            Ok(Meaning::Failed) => {
                let fate = if client::is_read(&kind) {
                    Fate::Dropped
                } else {
                    Fate::Unknown
                };
                self.history.settle(done.slot, fate);
                self.retarget(c, None);
            }
            Err(what) => {
                self.history.settle(done.slot, Fate::Dropped);
                self.checks.fail(0, format!("protocol: {what}"));
            }
        }
    }
}

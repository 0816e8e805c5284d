//! The whole cluster in one thread, in virtual time (1 step = 1 virtual ms), from one seed.
//!
//! A run has two phases. During the fault phase (`Options::steps` ms) the nemesis crashes and restarts
//! nodes, partitions and heals the network, slows disks and moves leadership, while clients run their
//! workload; the safety checks run after every step. Then the liveness phase heals everything and
//! requires, within `LIVENESS_MS`, one leader known to all, every client finishing new operations, and
//! every node applying everything committed. Finally the history is checked for linearizability.

use std::collections::BTreeMap;
use std::fmt;

use raftkv_raft::{Config, NodeId, ProposeError, Role};

use crate::checks::Checks;
use crate::client::{Client, Current, Fate, History, Stage};
use crate::disk::Disk;
use crate::kv::Put;
use crate::linearizability::{self, OpKind, Outcome};
use crate::network::{Network, NetworkFaults, NetworkStats};
use crate::node::{Env, Node, Reply};
use crate::rng::Rng;

/// Virtual ms between two ticks of a node's core.
const TICK_MS: u64 = 10;
/// After the faults stop, the cluster must settle within this bound.
const LIVENESS_MS: u64 = 10_000;
/// Operations each client must complete after the faults stop.
const LIVENESS_OPS: u64 = 3;
/// Search steps the linearizability checker may spend on one key.
const CHECK_BUDGET: u64 = 5_000_000;

pub const DEFAULT_STEPS: u64 = 10_000;

#[derive(Clone, Debug)]
pub struct Options {
    /// Virtual ms of the fault phase.
    pub steps: u64,
    /// Print what happens to stderr (for replaying one seed).
    pub trace: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            steps: DEFAULT_STEPS,
            trace: false,
        }
    }
}

/// What one seed chose (swarm testing: every seed draws its own fault mix).
#[derive(Clone, Debug)]
pub struct Params {
    pub nodes: usize,
    pub clients: usize,
    pub keys: u64,
    pub read_ppm: u32,
    pub think_ms: u64,
    /// A client gives up on an operation after this long (a write then has an unknown outcome).
    pub op_timeout_ms: u64,
    pub net: NetworkFaults,
    pub nemesis_ppm: u32,
    pub disk_latency: (u64, u64),
    pub slow_disk_latency: (u64, u64),
    /// Log compaction test mode: snapshot every this many applied entries.
    pub snapshot_threshold: Option<u64>,
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
        Params {
            nodes: if rng.chance(500_000) { 3 } else { 5 },
            clients: rng.range(1, 5) as usize,
            keys: rng.range(1, 4),
            read_ppm: rng.range(200_000, 700_000) as u32,
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
            snapshot_threshold: rng.chance(500_000).then(|| rng.range(3, 30)),
            election_ticks,
            heartbeat_ticks: rng.range(1, u64::from(election_ticks / 3)) as u32,
            pre_vote: rng.chance(750_000),
            check_quorum: rng.chance(750_000),
            max_entries_per_msg: rng.range(1, 64) as usize,
            max_inflight_msgs: rng.range(1, 16) as usize,
        }
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
    pub net: NetworkStats,
}

/// The result of one seed.
#[derive(Clone, Debug)]
pub struct Report {
    pub seed: u64,
    pub steps: u64,
    pub params: Option<Params>,
    /// Safety or liveness violations, and panics (of the core or of the simulator's own assertions).
    pub violations: Vec<String>,
    pub linearizability: Outcome,
    pub stats: Stats,
}

impl Report {
    pub fn non_linearizable(&self) -> bool {
        matches!(self.linearizability, Outcome::Illegal { .. })
    }

    pub fn failed(&self) -> bool {
        !self.violations.is_empty() || self.non_linearizable()
    }

    pub fn replay_command(&self) -> String {
        format!(
            "cargo run --release -p raftkv-sim -- --seed {} --steps {} --trace",
            self.seed, self.steps
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
        match &self.linearizability {
            Outcome::Linearizable => writeln!(f, "  history: linearizable"),
            Outcome::Inconclusive { key } => {
                writeln!(f, "  history: inconclusive (search budget) on key {key}")
            }
            Outcome::Illegal { key, ops } => {
                writeln!(f, "  history: NOT linearizable on key {key}:")?;
                for op in ops {
                    writeln!(f, "    {op:?}")?;
                }
                Ok(())
            }
        }
    }
}

/// Runs one seed. Panics inside (the core's or the simulator's own assertions) become violations.
pub fn run_seed(seed: u64, options: &Options) -> Report {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Simulator::new(seed, options).run()
    }));
    outcome.unwrap_or_else(|payload| {
        let message = crate::panic_message(payload.as_ref());
        Report {
            seed,
            steps: options.steps,
            params: Some(Params::draw(&mut Rng::new(seed))),
            violations: vec![format!("panic: {message}")],
            linearizability: Outcome::Linearizable,
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
    replies: Vec<Reply>,
    /// Which client runs each operation in flight.
    owner: BTreeMap<u64, usize>,
    next_op_id: u64,
    /// Set once the faults stop: (time, completed ops per client at that time).
    healed: Option<(u64, Vec<u64>)>,
}

impl Simulator {
    fn new(seed: u64, options: &Options) -> Simulator {
        let mut rng = Rng::new(seed);
        let params = Params::draw(&mut rng);
        let voters: Vec<NodeId> = (1..=params.nodes as NodeId).collect();
        let nodes = voters
            .iter()
            .map(|&id| {
                let mut config = Config::new(id, voters.clone());
                config.election_ticks = params.election_ticks;
                config.heartbeat_ticks = params.heartbeat_ticks;
                config.pre_vote = params.pre_vote;
                config.check_quorum = params.check_quorum;
                config.max_entries_per_msg = params.max_entries_per_msg;
                config.max_inflight_msgs = params.max_inflight_msgs;
                config.seed = rng.next_u64();
                let disk = Disk::new(params.disk_latency, params.slow_disk_latency);
                Node::new(config, disk, params.snapshot_threshold, rng.below(TICK_MS))
            })
            .collect();
        let clients = (0..params.clients)
            .map(|i| Client {
                id: i as u64 + 1,
                leader_guess: rng.range(1, params.nodes as u64),
                current: None,
                next_at: 0,
                completed: 0,
            })
            .collect();
        Simulator {
            seed,
            options: options.clone(),
            net: Network::new(params.nodes, params.net),
            checks: Checks::new(params.nodes),
            params,
            rng,
            now: 0,
            nodes,
            clients,
            history: History::default(),
            replies: Vec::new(),
            owner: BTreeMap::new(),
            next_op_id: 1,
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
        let linearizability = linearizability::check(&self.history.for_checker(), CHECK_BUDGET);
        self.trace(|| {
            format!(
                "history of {} ops: {linearizability:?}",
                self.history.records.len()
            )
        });
        let stats = Stats {
            virtual_ms: self.now,
            ops_ok: self.history.count(Fate::Ok),
            ops_unknown: self.history.count(Fate::Unknown),
            ops_dropped: self.history.count(Fate::Dropped),
            committed: self.checks.committed_len(),
            max_term: self
                .nodes
                .iter()
                .filter_map(|n| n.raft.as_ref())
                .map(|r| r.status().term)
                .max()
                .unwrap_or(0),
            crashes: self.nodes.iter().map(|n| n.crashes).sum(),
            net: self.net.stats,
        };
        Report {
            seed: self.seed,
            steps: self.options.steps,
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
        for msg in self.net.deliver_due(now) {
            if let Some(raft) = self.nodes[(msg.to - 1) as usize].raft.as_mut() {
                raft.step(msg);
            }
        }
        let mut env = Env {
            now,
            rng: &mut self.rng,
            net: &mut self.net,
            checks: &mut self.checks,
            replies: &mut self.replies,
        };
        for node in &mut self.nodes {
            node.complete_disk_writes(&mut env);
        }
        for node in &mut self.nodes {
            if (now + node.tick_phase).is_multiple_of(TICK_MS) {
                if let Some(raft) = node.raft.as_mut() {
                    raft.tick();
                }
            }
        }
        self.run_clients();
        let mut env = Env {
            now,
            rng: &mut self.rng,
            net: &mut self.net,
            checks: &mut self.checks,
            replies: &mut self.replies,
        };
        for node in &mut self.nodes {
            node.drain(&mut env);
        }
        self.handle_replies();
        for node in &self.nodes {
            if let Some(raft) = &node.raft {
                let status = raft.status();
                if self.options.trace
                    && status.role == Role::Leader
                    && !self.checks.is_known_leader(status.term)
                {
                    eprintln!("[{now:>6}ms] node {} leads term {}", node.id, status.term);
                }
                self.checks
                    .after_step(&status, node.sm.applied, raft.entries());
            }
        }
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
            .filter_map(|n| n.raft.as_ref().map(|r| r.status()))
            .filter(|s| s.role == Role::Leader)
            .max_by_key(|s| s.term)
            .map(|s| s.id)
    }

    fn nemesis(&mut self) {
        let n = self.params.nodes as NodeId;
        match self.rng.below(12) {
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
                    let result = self.nodes[(id - 1) as usize].raft().transfer_leadership(to);
                    self.trace(|| format!("nemesis: transfer leadership {id} -> {to}: {result:?}"));
                }
            }
            _ => {
                if let Some(id) = self.leader() {
                    self.crash(id);
                }
            }
        }
    }

    fn crash(&mut self, id: NodeId) {
        self.trace(|| format!("nemesis: crash node {id}"));
        self.nodes[(id - 1) as usize].crash(&mut self.replies);
    }

    fn restart(&mut self, id: NodeId) {
        let seed = self.rng.next_u64();
        self.trace(|| format!("nemesis: restart node {id}"));
        self.checks.on_restart(id);
        self.nodes[(id - 1) as usize].start(seed);
    }

    fn heal_everything(&mut self) {
        self.trace(|| "faults stop: heal network, restart crashed nodes, disks normal".into());
        self.net.heal();
        self.net.faults = NetworkFaults::calm(self.params.net.delay);
        for i in 0..self.nodes.len() {
            self.nodes[i].disk.slow = false;
            if !self.nodes[i].is_up() {
                self.restart(i as NodeId + 1);
            }
        }
        self.healed = Some((self.now, self.clients.iter().map(|c| c.completed).collect()));
        for node in &self.nodes {
            self.trace(|| format!("  {:?}", node.raft.as_ref().map(|r| r.status())));
        }
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
            if !self.client_quota_met(i) || client.current.is_some() {
                why.push(format!(
                    "client {} has completed {} ops (op in flight: {:?})",
                    client.id, client.completed, client.current
                ));
            }
        }
        let statuses: Vec<_> = self
            .nodes
            .iter()
            .filter_map(|n| n.raft.as_ref().map(|r| (r.status(), n.sm.applied)))
            .collect();
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

    // ---- clients ----

    fn run_clients(&mut self) {
        for c in 0..self.clients.len() {
            match self.clients[c].current {
                None => {
                    let open = self.healed.is_none() || !self.client_quota_met(c);
                    if open && self.now >= self.clients[c].next_at {
                        self.start_op(c);
                        self.route(c);
                    }
                }
                Some(current) if self.now >= current.deadline => self.give_up(c),
                Some(Current {
                    stage: Stage::Routing { retry_at },
                    ..
                }) if self.now >= retry_at => self.route(c),
                Some(_) => {}
            }
        }
    }

    fn start_op(&mut self, c: usize) {
        let op_id = self.next_op_id;
        self.next_op_id += 1;
        let key = self.rng.below(self.params.keys);
        // Write values are the op ids: unique, so a read names the write it saw.
        let kind = if self.rng.chance(self.params.read_ppm) {
            OpKind::Read { value: None }
        } else {
            OpKind::Write { value: op_id }
        };
        let client = &mut self.clients[c];
        let slot = self.history.invoke(client.id, key, kind, self.now);
        client.current = Some(Current {
            op_id,
            slot,
            stage: Stage::Routing { retry_at: self.now },
            deadline: self.now + self.params.op_timeout_ms,
        });
        self.owner.insert(op_id, c);
    }

    /// Offers the current operation to the node the client believes leads.
    fn route(&mut self, c: usize) {
        let current = self.clients[c].current.expect("an op to route");
        let target = self.clients[c].leader_guess;
        let op = self.history.records[current.slot].op;
        let node = &mut self.nodes[(target - 1) as usize];
        let result = match node.raft.as_mut() {
            None => Err(ProposeError::NotLeader { leader: None }),
            Some(raft) => match op.kind {
                OpKind::Write { value } => raft
                    .propose(
                        Put {
                            op_id: current.op_id,
                            key: op.key,
                            value,
                        }
                        .encode(),
                    )
                    .map(|(index, _)| node.proposed(index, current.op_id, &mut self.replies)),
                OpKind::Read { .. } => raft
                    .read_index(current.op_id)
                    .map(|()| node.read_requested(current.op_id, op.key)),
            },
        };
        self.trace(|| {
            format!(
                "client {} op {} -> node {target}: {result:?}",
                self.clients[c].id, current.op_id
            )
        });
        let client = &mut self.clients[c];
        let stage = match result {
            Ok(()) => Stage::Accepted { node: target },
            Err(ProposeError::NotLeader {
                leader: Some(leader),
            }) if leader != target => {
                client.leader_guess = leader;
                Stage::Routing {
                    retry_at: self.now + 1,
                }
            }
            Err(_) => {
                client.leader_guess = self.rng.range(1, self.params.nodes as u64);
                Stage::Routing {
                    retry_at: self.now + self.rng.range(5, 20),
                }
            }
        };
        client.current.as_mut().expect("op").stage = stage;
    }

    fn give_up(&mut self, c: usize) {
        let current = self.clients[c].current.expect("an op to give up");
        let accepted = match current.stage {
            Stage::Accepted { node } => {
                self.nodes[(node - 1) as usize].forget(current.op_id);
                true
            }
            Stage::Routing { .. } => false,
        };
        let is_write = matches!(
            self.history.records[current.slot].op.kind,
            OpKind::Write { .. }
        );
        // A write no node ever accepted certainly did not happen.
        let fate = if is_write && accepted {
            Fate::Unknown
        } else {
            Fate::Dropped
        };
        self.trace(|| {
            format!(
                "client {} gives up on op {} ({fate:?})",
                self.clients[c].id, current.op_id
            )
        });
        self.finish(c, current, fate);
    }

    fn finish(&mut self, c: usize, current: Current, fate: Fate) {
        if fate != Fate::Ok {
            self.history.settle(current.slot, fate);
        }
        self.owner.remove(&current.op_id);
        let client = &mut self.clients[c];
        client.current = None;
        client.next_at = self.now + self.rng.range(0, self.params.think_ms);
        if fate == Fate::Ok {
            client.completed += 1;
        }
    }

    fn handle_replies(&mut self) {
        for reply in std::mem::take(&mut self.replies) {
            let op_id = match reply {
                Reply::WriteApplied { op_id }
                | Reply::WriteLost { op_id }
                | Reply::WriteUnknown { op_id }
                | Reply::ReadServed { op_id, .. }
                | Reply::ReadDropped { op_id } => op_id,
            };
            // The client may have given up already.
            let Some(&c) = self.owner.get(&op_id) else {
                continue;
            };
            let current = self.clients[c].current.expect("owner has an op");
            assert_eq!(current.op_id, op_id, "a client runs one op at a time");
            let fate = match reply {
                Reply::WriteApplied { .. } => {
                    self.history.respond(current.slot, None, self.now);
                    Fate::Ok
                }
                Reply::ReadServed { value, .. } => {
                    self.history.respond(current.slot, Some(value), self.now);
                    Fate::Ok
                }
                Reply::WriteLost { .. } | Reply::ReadDropped { .. } => Fate::Dropped,
                Reply::WriteUnknown { .. } => Fate::Unknown,
            };
            self.trace(|| format!("client {} op {op_id}: {reply:?}", self.clients[c].id));
            self.finish(c, current, fate);
        }
    }
}

//! Randomised fault runs of whole clusters, checking Raft's safety properties after every step:
//! at most one leader per term, state machine safety (no two nodes commit different entries at one
//! index), committed entries never change, and ReadIndex never returns an index older than a commit
//! that completed before the read began. Disks are slow (batches become durable later, in order) and
//! crashes lose whatever was not yet durable, together with the messages that waited for it.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use raftkv_raft::*;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// One `Ready`'s worth of disk work and the messages that wait for it.
struct Batch {
    hard_state: Option<HardState>,
    snapshot: Option<Snapshot>,
    entries: Vec<Entry>,
    after: Vec<Message>,
}

#[derive(Default, Clone)]
struct Disk {
    hard_state: HardState,
    snapshot: Option<Snapshot>,
    log: Vec<Entry>,
}

struct Node {
    raft: Raft,
    disk: Disk,
    pending: VecDeque<Batch>,
    /// Reads in flight: ctx -> highest commit index in the cluster when the read began.
    reads: BTreeMap<u64, Index>,
}

struct World {
    rng: Rng,
    n: u64,
    seed: u64,
    nodes: BTreeMap<NodeId, Node>,
    net: Vec<Message>,
    partitioned: Option<NodeId>,
    split: Option<NodeId>,
    leaders: BTreeMap<Term, NodeId>,
    committed: BTreeMap<Index, (Term, Bytes)>,
    next_value: u64,
    next_ctx: u64,
    reads_served: usize,
}

fn cfg(id: NodeId, n: u64, seed: u64) -> Config {
    let mut c = Config::new(id, (1..=n).collect());
    c.election_ticks = 10;
    c.heartbeat_ticks = 2;
    c.seed = seed.wrapping_mul(31).wrapping_add(id);
    c.max_inflight_msgs = 4;
    c.max_entries_per_msg = 8;
    c
}

impl World {
    fn new(seed: u64, n: u64) -> World {
        let nodes = (1..=n)
            .map(|id| {
                let raft = Raft::new(cfg(id, n, seed), InitialState::default());
                let node = Node {
                    raft,
                    disk: Disk::default(),
                    pending: VecDeque::new(),
                    reads: BTreeMap::new(),
                };
                (id, node)
            })
            .collect();
        World {
            rng: Rng(seed),
            n,
            seed,
            nodes,
            net: Vec::new(),
            partitioned: None,
            split: None,
            leaders: BTreeMap::new(),
            committed: BTreeMap::new(),
            next_value: 0,
            next_ctx: 0,
            reads_served: 0,
        }
    }

    fn max_commit(&self) -> Index {
        self.committed.keys().next_back().copied().unwrap_or(0)
    }

    fn ready(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).unwrap();
        while node.raft.has_ready() {
            let rd = node.raft.ready();
            self.net.extend(rd.messages);
            for e in &rd.committed {
                match self.committed.get(&e.index) {
                    Some((t, d)) => assert!(
                        *t == e.term && *d == e.data,
                        "seed {}: node {id} commits {}@{} but {}@{} was committed",
                        self.seed,
                        e.index,
                        e.term,
                        e.index,
                        t
                    ),
                    None => {
                        self.committed.insert(e.index, (e.term, e.data.clone()));
                    }
                }
            }
            if let Some(last) = rd.committed.last() {
                node.raft.applied(last.index);
            }
            if let Some(s) = &rd.snapshot {
                if let Some((t, _)) = self.committed.get(&s.meta.index) {
                    assert_eq!(*t, s.meta.term, "seed {}: snapshot term", self.seed);
                }
            }
            for rs in &rd.read_states {
                if let Some(floor) = node.reads.remove(&rs.ctx) {
                    assert!(
                        rs.index >= floor,
                        "seed {}: node {id} read {} at index {} older than commit {} completed before",
                        self.seed,
                        rs.ctx,
                        rs.index,
                        floor
                    );
                    self.reads_served += 1;
                }
            }
            node.pending.push_back(Batch {
                hard_state: rd.hard_state,
                snapshot: rd.snapshot,
                entries: rd.entries,
                after: rd.messages_after_persist,
            });
        }
        let st = node.raft.status();
        if st.role == Role::Leader {
            if let Some(other) = self.leaders.insert(st.term, id) {
                assert_eq!(
                    other, id,
                    "seed {}: two leaders in term {}",
                    self.seed, st.term
                );
            }
        }
    }

    fn sync_disk(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).unwrap();
        let Some(b) = node.pending.pop_front() else {
            return;
        };
        if let Some(s) = &b.snapshot {
            node.disk.snapshot = Some(s.clone());
            node.disk.log.clear();
        }
        if let Some(first) = b.entries.first() {
            node.disk.log.retain(|e| e.index < first.index);
            node.disk.log.extend(b.entries.iter().cloned());
        }
        if let Some(hs) = b.hard_state {
            node.disk.hard_state = hs;
        }
        if let Some(last) = b.entries.last() {
            node.raft.persisted(last.index, last.term);
        } else if let Some(s) = &b.snapshot {
            node.raft.persisted(s.meta.index, s.meta.term);
            node.raft.applied(s.meta.index);
        }
        self.net.extend(b.after);
    }

    fn crash(&mut self, id: NodeId) {
        let n = self.n;
        let seed = self.seed;
        let node = self.nodes.get_mut(&id).unwrap();
        node.pending.clear();
        node.reads.clear();
        let d = node.disk.clone();
        node.raft = Raft::new(
            cfg(id, n, seed),
            InitialState {
                hard_state: d.hard_state,
                snapshot: d.snapshot,
                entries: d.log,
            },
        );
    }

    fn compact(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).unwrap();
        let st = node.raft.status();
        let durable_last = node.disk.log.last().map_or(0, |e| e.index);
        let index = st.applied.min(durable_last);
        if index < st.first_index + 4 {
            return;
        }
        // The entry must be the same in memory (committed, authoritative) and on disk (a truncation
        // may not have reached the disk yet).
        let Some(term) = node
            .raft
            .entries()
            .iter()
            .find(|e| e.index == index)
            .map(|e| e.term)
        else {
            return;
        };
        if !node
            .disk
            .log
            .iter()
            .any(|e| e.index == index && e.term == term)
        {
            return;
        }
        let snap = Snapshot {
            meta: SnapshotMeta {
                index,
                term,
                membership: node.raft.membership().clone(),
            },
            data: Bytes::new(),
        };
        node.disk.snapshot = Some(snap.clone());
        node.disk.log.retain(|e| e.index > index);
        node.raft.compact(snap);
    }

    fn linked(&self, a: NodeId, b: NodeId) -> bool {
        self.partitioned.is_none_or(|p| p != a && p != b)
            && self.split.is_none_or(|s| (a < s) == (b < s))
    }

    fn step(&mut self) {
        let id = 1 + self.rng.below(self.n);
        match self.rng.below(100) {
            0..=24 => self.nodes.get_mut(&id).unwrap().raft.tick(),
            25..=59 => {
                if !self.net.is_empty() {
                    let i = self.rng.below(self.net.len() as u64) as usize;
                    let m = self.net.swap_remove(i);
                    if self.rng.chance(5) {
                        self.net.push(m.clone());
                    }
                    if self.linked(m.from, m.to) && !self.rng.chance(5) {
                        let to = m.to;
                        self.nodes.get_mut(&to).unwrap().raft.step(m);
                        self.ready(to);
                    }
                }
            }
            60..=74 => self.sync_disk(id),
            75..=84 => {
                self.next_value += 1;
                let v = Bytes::from(format!("v{}", self.next_value));
                let _ = self.nodes.get_mut(&id).unwrap().raft.propose(v);
            }
            85..=89 => {
                self.next_ctx += 1;
                let ctx = self.next_ctx;
                let floor = self.max_commit();
                let node = self.nodes.get_mut(&id).unwrap();
                if node.raft.read_index(ctx).is_ok() {
                    node.reads.insert(ctx, floor);
                }
            }
            90 => {
                if self.rng.chance(30) {
                    self.crash(id)
                }
            }
            91 => {
                self.partitioned = if self.rng.chance(50) { Some(id) } else { None };
            }
            96 => {
                // Minority/majority split: cut nodes below `id` from the rest.
                self.split = if self.rng.chance(50) { Some(id) } else { None };
            }
            92 => {
                let to = 1 + self.rng.below(self.n);
                let _ = self
                    .nodes
                    .get_mut(&id)
                    .unwrap()
                    .raft
                    .transfer_leadership(to);
            }
            93 => self.compact(id),
            _ => {
                if self.net.len() > 200 {
                    self.net.drain(..100);
                }
            }
        }
        self.ready(id);
    }
}

impl World {
    /// No more faults: every disk syncs, every message arrives, time passes.
    fn calm(&mut self, rounds: usize) {
        self.partitioned = None;
        self.split = None;
        for round in 0..rounds {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for &id in &ids {
                if round % 4 == 0 {
                    self.nodes.get_mut(&id).unwrap().raft.tick();
                }
                self.ready(id);
                while !self.nodes[&id].pending.is_empty() {
                    self.sync_disk(id);
                }
            }
            for m in std::mem::take(&mut self.net) {
                let to = m.to;
                self.nodes.get_mut(&to).unwrap().raft.step(m);
                self.ready(to);
            }
        }
    }

    fn leader(&self) -> Option<NodeId> {
        let top = self.nodes.values().map(|n| n.raft.status().term).max()?;
        self.nodes
            .iter()
            .find(|(_, n)| n.raft.status().role == Role::Leader && n.raft.status().term == top)
            .map(|(id, _)| *id)
    }
}

fn run(seed: u64, n: u64, steps: usize) -> (usize, usize) {
    let mut w = World::new(seed, n);
    for _ in 0..steps {
        w.step();
    }
    // Liveness once the faults stop: a leader emerges and a new proposal commits everywhere.
    w.calm(200);
    let leader = w
        .leader()
        .unwrap_or_else(|| panic!("seed {seed} n {n}: no leader after the faults stopped"));
    let (index, _) = w
        .nodes
        .get_mut(&leader)
        .unwrap()
        .raft
        .propose(Bytes::from_static(b"final"))
        .unwrap_or_else(|e| panic!("seed {seed} n {n}: {e}"));
    // Allow for a lost InstallSnapshot, which is re-sent after SNAPSHOT_RETRY_HEARTBEATS heartbeats.
    for _ in 0..40 {
        w.calm(25);
        if w.nodes.values().all(|n| n.raft.status().commit >= index) {
            break;
        }
    }
    for (id, node) in &w.nodes {
        assert!(
            node.raft.status().commit >= index,
            "seed {seed} n {n}: node {id} did not commit {index}: {:?}",
            node.raft.status()
        );
    }
    (w.committed.len(), w.reads_served)
}

#[test]
fn random_faults_keep_raft_safe() {
    let mut committed = 0;
    let mut reads = 0;
    // `RAFT_FAULT_SEEDS=5000 RAFT_FAULT_STEPS=20000 cargo test --release -p raftkv-raft --test random_faults` runs longer.
    let seeds: u64 = std::env::var("RAFT_FAULT_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(150);
    let steps: usize = std::env::var("RAFT_FAULT_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    for seed in 0..seeds {
        for n in [3, 5] {
            let (c, r) = run(seed, n, steps);
            committed += c;
            reads += r;
        }
    }
    // The runs must make progress, or they prove nothing.
    assert!(committed > 3_000, "only {committed} entries committed");
    assert!(reads > 300, "only {reads} reads served");
}

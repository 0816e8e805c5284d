//! The nemesis: crashes, restarts, partitions, slow and failing disks, clock steps, leadership moves.

use raftkv_raft::{NodeId, Role};

use super::Simulator;

impl Simulator {
    pub(super) fn random_node(&mut self, up: bool) -> Option<NodeId> {
        let candidates: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|n| n.is_up() == up)
            .map(|n| n.id)
            .collect();
        (!candidates.is_empty()).then(|| candidates[self.rng.index(candidates.len())])
    }

    pub(super) fn leader(&self) -> Option<NodeId> {
        // The leader of the highest term, if any node leads.
        self.nodes
            .iter()
            .filter_map(|n| n.replica.as_ref().map(|r| r.raft().status()))
            .filter(|s| s.role == Role::Leader)
            .max_by_key(|s| s.term)
            .map(|s| s.id)
    }

    pub(super) fn nemesis(&mut self) {
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
    pub(super) fn jump_a_clock(&mut self) {
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

    pub(super) fn crash(&mut self, id: NodeId) {
        self.trace(|| format!("nemesis: crash node {id}"));
        let seed = self.rng.next_u64();
        self.nodes[(id - 1) as usize].crash(seed);
        self.break_connections_to(id);
    }

    pub(super) fn restart(&mut self, id: NodeId) {
        let seed = self.rng.next_u64();
        self.trace(|| format!("nemesis: restart node {id}"));
        self.nodes[(id - 1) as usize].start(seed, &mut self.checks);
        if let Some(replica) = self.nodes[(id - 1) as usize].replica.as_ref() {
            let raft = replica.raft();
            let (hard_state, status) = (raft.hard_state(), raft.status());
            let membership = raft.membership();
            self.trace(|| {
                format!(
                    "node {id} recovered: {hard_state:?}, log {}..={}, voters {:?}, learners {:?}",
                    status.first_index, status.last_index, membership.voters, membership.learners
                )
            });
        }
    }
}

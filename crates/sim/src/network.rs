//! The fault model of the network between nodes: loss, delay (and so reordering), duplication, and
//! partitions (symmetric or one-way) that the nemesis opens and heals.

use std::collections::BTreeMap;

use raftkv_raft::{Message, NodeId};

use crate::rng::Rng;

#[derive(Clone, Copy, Debug)]
pub struct NetworkFaults {
    /// Probability (per million) that a message is lost.
    pub drop_ppm: u32,
    /// Probability (per million) that a message is delivered twice.
    pub duplicate_ppm: u32,
    /// One-way latency range in virtual ms; a wide range reorders messages.
    pub delay: (u64, u64),
}

impl NetworkFaults {
    pub fn calm(delay: (u64, u64)) -> NetworkFaults {
        NetworkFaults {
            drop_ppm: 0,
            duplicate_ppm: 0,
            delay,
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct NetworkStats {
    pub sent: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub delivered: u64,
}

pub struct Network {
    nodes: usize,
    /// `blocked[from][to]`: messages on this directed link are lost (indices are `id - 1`).
    blocked: Vec<Vec<bool>>,
    /// In flight, keyed by (delivery time, send order) so equal times deliver deterministically.
    in_flight: BTreeMap<(u64, u64), Message>,
    sequence: u64,
    pub faults: NetworkFaults,
    pub stats: NetworkStats,
}

impl Network {
    pub fn new(nodes: usize, faults: NetworkFaults) -> Network {
        Network {
            nodes,
            blocked: vec![vec![false; nodes]; nodes],
            in_flight: BTreeMap::new(),
            sequence: 0,
            faults,
            stats: NetworkStats::default(),
        }
    }

    fn link(&self, from: NodeId, to: NodeId) -> bool {
        !self.blocked[(from - 1) as usize][(to - 1) as usize]
    }

    pub fn send(&mut self, rng: &mut Rng, now: u64, msg: Message) {
        assert!(
            msg.from != msg.to,
            "a node sent a message to itself: {msg:?}"
        );
        assert!(
            msg.to >= 1 && msg.to as usize <= self.nodes,
            "message to an unknown node: {msg:?}"
        );
        self.stats.sent += 1;
        if !self.link(msg.from, msg.to) || rng.chance(self.faults.drop_ppm) {
            self.stats.dropped += 1;
            return;
        }
        if rng.chance(self.faults.duplicate_ppm) {
            self.stats.duplicated += 1;
            self.enqueue(rng, now, msg.clone());
        }
        self.enqueue(rng, now, msg);
    }

    fn enqueue(&mut self, rng: &mut Rng, now: u64, msg: Message) {
        let at = now + rng.range(self.faults.delay.0, self.faults.delay.1);
        self.sequence += 1;
        self.in_flight.insert((at, self.sequence), msg);
    }

    /// Messages due by `now`, in delivery order. A partition that opened while a message was in flight
    /// loses it.
    pub fn deliver_due(&mut self, now: u64) -> Vec<Message> {
        let mut due = Vec::new();
        while let Some(entry) = self.in_flight.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let msg = entry.remove();
            if self.link(msg.from, msg.to) {
                self.stats.delivered += 1;
                due.push(msg);
            } else {
                self.stats.dropped += 1;
            }
        }
        due
    }

    pub fn heal(&mut self) {
        for row in &mut self.blocked {
            row.fill(false);
        }
    }

    /// Cuts every link between `side` and the rest, both ways.
    pub fn partition(&mut self, side: &[NodeId]) {
        for a in 1..=self.nodes as NodeId {
            for b in 1..=self.nodes as NodeId {
                if side.contains(&a) != side.contains(&b) {
                    self.block(a, b);
                }
            }
        }
    }

    /// Cuts one direction of one link.
    pub fn block(&mut self, from: NodeId, to: NodeId) {
        self.blocked[(from - 1) as usize][(to - 1) as usize] = true;
    }

    pub fn is_healed(&self) -> bool {
        self.blocked.iter().all(|row| row.iter().all(|b| !b))
    }
}

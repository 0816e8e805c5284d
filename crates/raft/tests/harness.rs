//! A tiny synchronous cluster for the paper tests: messages are delivered in rounds, disks are
//! instantly durable unless a node is told otherwise, and links can be cut.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use raftkv_raft::*;

pub struct Node {
    pub raft: Raft,
    /// What the node has made durable (simulated disk).
    pub hard_state: HardState,
    pub log: Vec<Entry>,
    pub applied: Vec<Entry>,
    pub reads: Vec<ReadState>,
}

pub struct Cluster {
    pub nodes: BTreeMap<NodeId, Node>,
    /// Messages in flight, delivered on `deliver_all`.
    pub in_flight: Vec<Message>,
    /// Directed links that drop everything.
    pub cut: BTreeSet<(NodeId, NodeId)>,
}

pub fn config(id: NodeId, n: u64) -> Config {
    let mut c = Config::new(id, (1..=n).collect());
    c.election_ticks = 10;
    c.heartbeat_ticks = 1;
    c.seed = id * 7919;
    c
}

impl Cluster {
    pub fn new(n: u64) -> Cluster {
        Cluster::with_config(n, |c| c)
    }

    pub fn with_config(n: u64, tune: impl Fn(Config) -> Config) -> Cluster {
        let nodes = (1..=n)
            .map(|id| {
                let raft = Raft::new(tune(config(id, n)), InitialState::default());
                (
                    id,
                    Node {
                        raft,
                        hard_state: HardState::default(),
                        log: Vec::new(),
                        applied: Vec::new(),
                        reads: Vec::new(),
                    },
                )
            })
            .collect();
        Cluster {
            nodes,
            in_flight: Vec::new(),
            cut: BTreeSet::new(),
        }
    }

    pub fn node(&mut self, id: NodeId) -> &mut Raft {
        &mut self.nodes.get_mut(&id).expect("node").raft
    }

    /// Processes every node's Ready, persisting instantly and queueing messages.
    pub fn process(&mut self) {
        for node in self.nodes.values_mut() {
            while node.raft.has_ready() {
                let ready = node.raft.ready();
                if let Some(snapshot) = &ready.snapshot {
                    node.log.clear();
                    node.applied.clear();
                    let _ = snapshot;
                }
                if let Some(first) = ready.entries.first() {
                    node.log.retain(|e| e.index < first.index);
                    node.log.extend(ready.entries.iter().cloned());
                }
                if let Some(hs) = ready.hard_state {
                    node.hard_state = hs;
                }
                self.in_flight.extend(ready.messages);
                if let Some(last) = ready.entries.last() {
                    node.raft.persisted(last.index, last.term);
                }
                self.in_flight.extend(ready.messages_after_persist);
                if let Some(last) = ready.committed.last() {
                    let last_index = last.index;
                    node.applied.extend(ready.committed);
                    node.raft.applied(last_index);
                }
                node.reads.extend(ready.read_states);
            }
        }
    }

    /// Delivers messages until the network is quiet (at most `limit` rounds).
    pub fn settle(&mut self) {
        for _ in 0..100 {
            self.process();
            if self.in_flight.is_empty() {
                return;
            }
            let batch = std::mem::take(&mut self.in_flight);
            for msg in batch {
                if self.cut.contains(&(msg.from, msg.to)) {
                    continue;
                }
                if let Some(node) = self.nodes.get_mut(&msg.to) {
                    node.raft.step(msg);
                }
            }
        }
    }

    pub fn tick_all(&mut self, ticks: u32) {
        for _ in 0..ticks {
            for node in self.nodes.values_mut() {
                node.raft.tick();
            }
            self.settle();
        }
    }

    /// Ticks until some node is leader; returns it.
    pub fn elect(&mut self) -> NodeId {
        for _ in 0..200 {
            self.tick_all(1);
            if let Some(id) = self.leader() {
                return id;
            }
        }
        panic!("no leader elected");
    }

    pub fn leader(&self) -> Option<NodeId> {
        let leaders: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.raft.status().role == Role::Leader)
            .map(|(id, _)| *id)
            .collect();
        let max_term = self.nodes.values().map(|n| n.raft.status().term).max()?;
        leaders
            .into_iter()
            .find(|id| self.nodes[id].raft.status().term == max_term)
    }

    pub fn isolate(&mut self, id: NodeId) {
        for other in self.nodes.keys().copied().collect::<Vec<_>>() {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    pub fn applied_data(&self, id: NodeId) -> Vec<Bytes> {
        self.nodes[&id]
            .applied
            .iter()
            .filter(|e| e.kind == EntryKind::Normal)
            .map(|e| e.data.clone())
            .collect()
    }
}

pub fn msg(from: NodeId, to: NodeId, term: Term, body: MessageBody) -> Message {
    Message {
        from,
        to,
        term,
        body,
    }
}

pub fn entry(index: Index, term: Term) -> Entry {
    Entry {
        index,
        term,
        kind: EntryKind::Normal,
        data: Bytes::from(format!("{index}/{term}")),
    }
}

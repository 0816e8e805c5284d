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
    /// The newest snapshot the node made durable.
    pub snapshot: Option<Snapshot>,
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
                        snapshot: None,
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
                    node.snapshot = Some(snapshot.clone());
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
                } else if let Some(snapshot) = &ready.snapshot {
                    node.raft.persisted(snapshot.meta.index, snapshot.meta.term);
                    node.raft.applied(snapshot.meta.index);
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

/// An Append from `from` to `to` in `term`: `entries` after `prev` (index, term), leader commit `commit`.
pub fn append_msg(
    from: NodeId,
    to: NodeId,
    term: Term,
    prev: (Index, Term),
    entries: Vec<Entry>,
    commit: Index,
) -> Message {
    msg(
        from,
        to,
        term,
        MessageBody::Append {
            prev_index: prev.0,
            prev_term: prev.1,
            entries,
            commit,
        },
    )
}

pub fn entry(index: Index, term: Term) -> Entry {
    Entry {
        index,
        term,
        kind: EntryKind::Normal,
        data: Bytes::from(format!("{index}/{term}")),
    }
}

// ----- Driving one node by hand ------------------------------------------------------------------

/// The configuration of plain Raft as in the paper: no pre-vote, no check-quorum.
pub fn plain_config(id: NodeId, n: u64) -> Config {
    let mut c = config(id, n);
    c.pre_vote = false;
    c.check_quorum = false;
    c
}

/// A fresh node of an `n`-node cluster running plain Raft.
pub fn plain(id: NodeId, n: u64) -> Raft {
    Raft::new(plain_config(id, n), InitialState::default())
}

/// A fresh node with a tuned configuration.
pub fn node_with(id: NodeId, n: u64, tune: impl FnOnce(Config) -> Config) -> Raft {
    Raft::new(tune(config(id, n)), InitialState::default())
}

/// Takes a `Ready`, reports its entries (or snapshot) durable and its committed entries applied.
pub fn flush(r: &mut Raft) -> Ready {
    let rd = r.ready();
    if let Some(last) = rd.entries.last() {
        r.persisted(last.index, last.term);
    } else if let Some(s) = &rd.snapshot {
        r.persisted(s.meta.index, s.meta.term);
        r.applied(s.meta.index);
    }
    if let Some(last) = rd.committed.last() {
        r.applied(last.index);
    }
    rd
}

/// Every message of a `Ready`, both lists.
pub fn all_messages(rd: &Ready) -> Vec<Message> {
    rd.messages
        .iter()
        .chain(rd.messages_after_persist.iter())
        .cloned()
        .collect()
}

/// Ticks until the node leaves the follower role (at most 100 ticks); returns the ticks taken.
pub fn tick_until_campaign(r: &mut Raft) -> u32 {
    for t in 1..=100 {
        r.tick();
        if r.status().role != Role::Follower {
            return t;
        }
    }
    panic!("node {} never campaigned", r.status().id);
}

/// Makes `r` leader by timing it out and granting every (pre-)vote it asks for. Returns the `Ready`
/// produced right after it won (holding the no-op and its first Appends), already flushed.
pub fn make_leader(r: &mut Raft) -> Ready {
    if r.status().role == Role::Follower {
        tick_until_campaign(r);
    }
    for _ in 0..4 {
        let rd = flush(r);
        if r.status().role == Role::Leader {
            return rd;
        }
        for m in all_messages(&rd) {
            let body = match m.body {
                MessageBody::PreVote { .. } => MessageBody::PreVoteResponse { granted: true },
                MessageBody::Vote { .. } => MessageBody::VoteResponse { granted: true },
                _ => continue,
            };
            r.step(msg(m.to, m.from, m.term, body));
        }
    }
    assert_eq!(r.status().role, Role::Leader);
    flush(r)
}

/// The Append messages of `msgs` addressed to `to`.
pub fn appends_to(msgs: &[Message], to: NodeId) -> Vec<(Index, Term, Vec<Entry>, Index)> {
    msgs.iter()
        .filter(|m| m.to == to)
        .filter_map(|m| match &m.body {
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => Some((*prev_index, *prev_term, entries.clone(), *commit)),
            _ => None,
        })
        .collect()
}

/// Acknowledges, as each follower, every Append in `msgs` (the follower now holds up to its end).
pub fn ack_appends(r: &mut Raft, msgs: &[Message]) {
    for m in msgs {
        if let MessageBody::Append {
            prev_index,
            entries,
            ..
        } = &m.body
        {
            let last_index = entries.last().map_or(*prev_index, |e| e.index);
            r.step(msg(
                m.to,
                m.from,
                m.term,
                MessageBody::AppendResponse(AppendResult::Accepted { last_index }),
            ));
        }
    }
}

/// Answers, as each follower, every Heartbeat in `msgs`.
pub fn ack_heartbeats(r: &mut Raft, msgs: &[Message], from: &[NodeId]) {
    for m in msgs {
        if let MessageBody::Heartbeat { read_round, .. } = m.body {
            if from.contains(&m.to) {
                r.step(msg(
                    m.to,
                    m.from,
                    m.term,
                    MessageBody::HeartbeatResponse { read_round },
                ));
            }
        }
    }
}

/// A node restarted from the given durable state.
pub fn restart(
    config: Config,
    hard_state: HardState,
    snapshot: Option<Snapshot>,
    entries: Vec<Entry>,
) -> Raft {
    Raft::new(
        config,
        InitialState {
            hard_state,
            snapshot,
            entries,
        },
    )
}

/// Entries with the given terms, starting at index `first`.
pub fn entries_with_terms(first: Index, terms: &[Term]) -> Vec<Entry> {
    terms
        .iter()
        .enumerate()
        .map(|(i, t)| entry(first + i as u64, *t))
        .collect()
}

/// A snapshot covering everything up to `index` (at `term`) of an `n`-node cluster.
pub fn snapshot(index: Index, term: Term, n: u64) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            index,
            term,
            membership: Membership::new((1..=n).collect()),
        },
        data: Bytes::from(format!("snap@{index}")),
    }
}

impl Cluster {
    /// Restarts node `id` from exactly what it made durable.
    pub fn restart(&mut self, id: NodeId, tune: impl FnOnce(Config) -> Config) {
        let n = self.nodes.len() as u64;
        let node = self.nodes.get_mut(&id).expect("node");
        node.raft = restart(
            tune(config(id, n)),
            node.hard_state,
            node.snapshot.clone(),
            node.log.clone(),
        );
        node.applied.clear();
    }
}

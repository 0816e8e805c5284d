//! One simulated node: a Raft core driven exactly per the `Ready` contract, its disk, its state machine,
//! and the client requests it has accepted.

use std::collections::BTreeMap;

use raftkv_raft::{
    Config, Entry, EntryKind, Index, InitialState, NodeId, Raft, ReadState, Snapshot, SnapshotMeta,
    Term,
};

use crate::checks::Checks;
use crate::disk::Disk;
use crate::kv::{Put, StateMachine};
use crate::linearizability::{Key, Value};
use crate::network::Network;
use crate::rng::Rng;

/// What a node tells the client layer about the operations it accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The write was applied at the index it was proposed at.
    WriteApplied {
        op_id: u64,
    },
    /// Another entry was applied at the write's index: the write did not happen and never will.
    WriteLost {
        op_id: u64,
    },
    /// The node can no longer tell (it crashed, its log was rewritten, a snapshot skipped the index).
    WriteUnknown {
        op_id: u64,
    },
    ReadServed {
        op_id: u64,
        value: Option<Value>,
    },
    /// The read can no longer be served here.
    ReadDropped {
        op_id: u64,
    },
}

/// The shared things a node's driver touches.
pub struct Env<'a> {
    pub now: u64,
    pub rng: &'a mut Rng,
    pub net: &'a mut Network,
    pub checks: &'a mut Checks,
    pub replies: &'a mut Vec<Reply>,
}

pub struct Node {
    pub id: NodeId,
    config: Config,
    pub raft: Option<Raft>,
    pub disk: Disk,
    pub sm: StateMachine,
    /// Take a snapshot once this many entries were applied since the last one (None: never).
    pub snapshot_threshold: Option<u64>,
    /// Writes accepted by `propose`, by log index.
    proposals: BTreeMap<Index, u64>,
    /// Reads accepted by `read_index`, by op id (the read's ctx): the key to read.
    reads: BTreeMap<u64, Key>,
    /// Read states the core released, waiting for `applied` to reach their index.
    ready_reads: Vec<ReadState>,
    /// Term of each entry handed out for persistence, for the log-matching check (index -> term).
    log_terms: BTreeMap<Index, Term>,
    /// This node ticks when `(now + tick_phase) % tick_ms == 0`.
    pub tick_phase: u64,
    pub crashes: u64,
}

impl Node {
    pub fn new(
        config: Config,
        disk: Disk,
        snapshot_threshold: Option<u64>,
        tick_phase: u64,
    ) -> Node {
        let mut node = Node {
            id: config.id,
            config,
            raft: None,
            disk,
            sm: StateMachine::default(),
            snapshot_threshold,
            proposals: BTreeMap::new(),
            reads: BTreeMap::new(),
            ready_reads: Vec::new(),
            log_terms: BTreeMap::new(),
            tick_phase,
            crashes: 0,
        };
        node.start(0);
        node
    }

    pub fn is_up(&self) -> bool {
        self.raft.is_some()
    }

    /// Starts the core from exactly what is durable.
    pub fn start(&mut self, seed: u64) {
        assert!(self.raft.is_none(), "node {} started twice", self.id);
        let durable = &self.disk.durable;
        let initial = InitialState {
            hard_state: durable.hard_state,
            snapshot: durable.snapshot.clone(),
            entries: durable.entries.clone(),
        };
        self.sm = durable
            .snapshot
            .as_ref()
            .map_or_else(StateMachine::default, StateMachine::restore);
        self.log_terms.clear();
        if let Some(s) = &durable.snapshot {
            self.log_terms.insert(s.meta.index, s.meta.term);
        }
        self.log_terms
            .extend(durable.entries.iter().map(|e| (e.index, e.term)));
        let mut config = self.config.clone();
        config.seed = config.seed.wrapping_add(seed);
        self.raft = Some(Raft::new(config, initial));
    }

    /// Loses everything that is not durable.
    pub fn crash(&mut self, replies: &mut Vec<Reply>) {
        assert!(self.raft.is_some(), "node {} crashed twice", self.id);
        self.raft = None;
        self.crashes += 1;
        self.disk.crash();
        self.sm = StateMachine::default();
        self.ready_reads.clear();
        replies.extend(
            std::mem::take(&mut self.proposals)
                .into_values()
                .map(|op_id| Reply::WriteUnknown { op_id }),
        );
        replies.extend(
            std::mem::take(&mut self.reads)
                .into_keys()
                .map(|op_id| Reply::ReadDropped { op_id }),
        );
    }

    pub fn raft(&mut self) -> &mut Raft {
        self.raft.as_mut().expect("node is up")
    }

    /// Records an accepted proposal. If another proposal of ours already waited at that index, this
    /// node's log was rewritten under it and its fate is unknown here.
    pub fn proposed(&mut self, index: Index, op_id: u64, replies: &mut Vec<Reply>) {
        if let Some(old) = self.proposals.insert(index, op_id) {
            replies.push(Reply::WriteUnknown { op_id: old });
        }
    }

    pub fn read_requested(&mut self, op_id: u64, key: Key) {
        self.reads.insert(op_id, key);
    }

    /// Completes due disk writes: reports them to the core and releases the messages that waited.
    pub fn complete_disk_writes(&mut self, env: &mut Env) {
        if self.raft.is_none() {
            return;
        }
        for done in self.disk.complete_due(env.now) {
            env.checks.on_durable_hard_state(
                self.id,
                done.hard_state_before,
                done.hard_state_after,
            );
            if let Some((index, term)) = done.persisted {
                self.raft().persisted(index, term);
            }
            for msg in done.messages {
                env.net.send(env.rng, env.now, msg);
            }
        }
    }

    /// Handles every `Ready` the core has, in contract order.
    pub fn drain(&mut self, env: &mut Env) {
        for round in 0.. {
            let Some(raft) = self.raft.as_mut() else {
                return;
            };
            if !raft.has_ready() {
                return;
            }
            assert!(
                round < 1000,
                "node {}: has_ready() stays true after 1000 rounds",
                self.id
            );
            let rd = raft.ready();
            // 1. Persist (to the disk's pending queue; it becomes durable later).
            if let Some(snapshot) = &rd.snapshot {
                self.note_snapshot(&snapshot.meta, env.checks);
            }
            if let Some(first) = rd.entries.first() {
                self.note_entries(&rd.entries, first.index, env.checks);
            }
            if rd.must_persist() || !rd.messages_after_persist.is_empty() {
                self.disk.submit(
                    env.rng,
                    env.now,
                    rd.snapshot.clone(),
                    rd.entries,
                    rd.hard_state,
                    rd.messages_after_persist,
                );
            }
            // 2. Send what need not wait for the disk.
            for msg in rd.messages {
                env.net.send(env.rng, env.now, msg);
            }
            // 3. Apply: a snapshot first, then committed entries.
            if let Some(snapshot) = rd.snapshot {
                self.restore(&snapshot, env);
            }
            if let Some(last) = rd.committed.last().map(|e| e.index) {
                for entry in &rd.committed {
                    self.apply(entry, env);
                }
                self.raft().applied(last);
            }
            // 4. Serve reads whose index is applied.
            self.ready_reads.extend(rd.read_states);
            self.serve_reads(env.replies);
            self.maybe_compact();
        }
    }

    fn note_snapshot(&mut self, meta: &SnapshotMeta, checks: &mut Checks) {
        checks.on_snapshot(self.id, meta.index, meta.term);
        if self.log_terms.get(&meta.index) != Some(&meta.term) {
            self.log_terms.clear();
        } else {
            self.log_terms = self.log_terms.split_off(&meta.index);
        }
        self.log_terms.insert(meta.index, meta.term);
    }

    fn note_entries(&mut self, entries: &[Entry], first: Index, checks: &mut Checks) {
        self.log_terms.split_off(&first);
        let prev_term = if first == 1 {
            0
        } else {
            match self.log_terms.get(&(first - 1)) {
                Some(term) => *term,
                None => {
                    checks.fail(
                        self.id,
                        format!(
                            "entries from {first} handed out with no entry {} before them",
                            first - 1
                        ),
                    );
                    0
                }
            }
        };
        checks.on_append(self.id, prev_term, entries);
        self.log_terms
            .extend(entries.iter().map(|e| (e.index, e.term)));
    }

    fn restore(&mut self, snapshot: &Snapshot, env: &mut Env) {
        if snapshot.meta.index <= self.sm.applied {
            env.checks.fail(
                self.id,
                format!(
                    "asked to restore snapshot at {} over applied state at {}",
                    snapshot.meta.index, self.sm.applied
                ),
            );
            return;
        }
        self.sm = StateMachine::restore(snapshot);
        // The snapshot skipped these indices: whether our proposals made it is unknown here.
        let rest = self.proposals.split_off(&(snapshot.meta.index + 1));
        let skipped = std::mem::replace(&mut self.proposals, rest);
        env.replies.extend(
            skipped
                .into_values()
                .map(|op_id| Reply::WriteUnknown { op_id }),
        );
    }

    fn apply(&mut self, entry: &Entry, env: &mut Env) {
        if entry.index != self.sm.applied + 1 {
            env.checks.fail(
                self.id,
                format!(
                    "committed entry {} handed out after applied {}",
                    entry.index, self.sm.applied
                ),
            );
            return;
        }
        env.checks.on_apply(self.id, entry);
        let put = (entry.kind == EntryKind::Normal).then(|| Put::decode(&entry.data));
        self.sm.apply(entry.index, entry.term, put);
        if let Some(op_id) = self.proposals.remove(&entry.index) {
            env.replies.push(if put.is_some_and(|p| p.op_id == op_id) {
                Reply::WriteApplied { op_id }
            } else {
                Reply::WriteLost { op_id }
            });
        }
    }

    fn serve_reads(&mut self, replies: &mut Vec<Reply>) {
        let applied = self.sm.applied;
        let (due, waiting): (Vec<ReadState>, Vec<ReadState>) =
            self.ready_reads.drain(..).partition(|r| r.index <= applied);
        self.ready_reads = waiting;
        for read in due {
            // A read state for a ctx we never asked about (or already answered) is ignored.
            if let Some(key) = self.reads.remove(&read.ctx) {
                replies.push(Reply::ReadServed {
                    op_id: read.ctx,
                    value: self.sm.map.get(&key).copied(),
                });
            }
        }
    }

    /// Log compaction (issue 6 test mode): snapshot the state machine once enough was applied.
    fn maybe_compact(&mut self) {
        let Some(threshold) = self.snapshot_threshold else {
            return;
        };
        if self.sm.applied < self.sm.snapshot_index + threshold {
            return;
        }
        let raft = self.raft.as_mut().expect("node is up");
        let snapshot = Snapshot {
            meta: SnapshotMeta {
                index: self.sm.applied,
                term: self.sm.applied_term,
                membership: raft.membership().clone(),
            },
            data: self.sm.encode(),
        };
        raft.compact(snapshot.clone());
        self.disk.save_snapshot(snapshot);
        self.sm.snapshot_index = self.sm.applied;
    }

    /// A read the core will never answer any more (the client gave up): forget it.
    pub fn forget(&mut self, op_id: u64) {
        self.reads.remove(&op_id);
        self.proposals.retain(|_, op| *op != op_id);
    }
}

//! Throughput of the core alone: proposals per second through propose → replicate → commit on a
//! 3-node cluster whose disks and network are instant and in memory, so only the core's own work is
//! measured. Each round proposes a batch of 256-byte commands on the leader and drives every node's
//! `Ready` until the batch is committed on the leader.

use std::collections::VecDeque;
use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use raftkv_raft::*;

const NODES: u64 = 3;
const PAYLOAD: usize = 256;
/// Compact once the in-memory log holds this many entries, so long runs stay bounded.
const COMPACT_EVERY: u64 = 8192;

struct Cluster {
    nodes: Vec<Raft>,
    queue: VecDeque<Message>,
}

impl Cluster {
    fn new() -> Cluster {
        let nodes = (1..=NODES)
            .map(|id| {
                Raft::new(
                    Config::new(id, (1..=NODES).collect()),
                    InitialState::default(),
                )
            })
            .collect();
        let mut c = Cluster {
            nodes,
            queue: VecDeque::new(),
        };
        for _ in 0..1000 {
            c.nodes[0].tick();
            c.drive();
            if c.nodes[0].status().role == Role::Leader {
                c.drive();
                return c;
            }
        }
        panic!("node 1 was not elected");
    }

    /// Runs every node's `Ready` loop and delivers messages until the network is quiet. Returns how
    /// many normal entries the leader (node 1) applied.
    fn drive(&mut self) -> usize {
        let mut applied = 0;
        loop {
            for (i, raft) in self.nodes.iter_mut().enumerate() {
                while raft.has_ready() {
                    let rd = raft.ready();
                    self.queue.extend(rd.messages);
                    if let Some(last) = rd.entries.last() {
                        raft.persisted(last.index, last.term);
                    }
                    self.queue.extend(rd.messages_after_persist);
                    if let Some(last) = rd.committed.last() {
                        raft.applied(last.index);
                        if i == 0 {
                            applied += rd
                                .committed
                                .iter()
                                .filter(|e| e.kind == EntryKind::Normal)
                                .count();
                        }
                    }
                    black_box(&rd.committed);
                }
            }
            if self.queue.is_empty() {
                return applied;
            }
            while let Some(m) = self.queue.pop_front() {
                let to = (m.to - 1) as usize;
                self.nodes[to].step(m);
            }
        }
    }

    fn compact_if_long(&mut self) {
        for raft in &mut self.nodes {
            let st = raft.status();
            if st.applied >= st.first_index + COMPACT_EVERY {
                let term = raft
                    .entries()
                    .iter()
                    .find(|e| e.index == st.applied)
                    .map(|e| e.term)
                    .expect("applied entry in memory");
                raft.compact(Snapshot {
                    meta: SnapshotMeta {
                        index: st.applied,
                        term,
                        membership: raft.membership().clone(),
                    },
                    data: Bytes::new(),
                });
            }
        }
    }

    fn round(&mut self, batch: usize, payload: &Bytes) {
        for _ in 0..batch {
            self.nodes[0].propose(payload.clone()).expect("leader");
        }
        let applied = self.drive();
        assert_eq!(applied, batch, "a round commits its whole batch");
        self.compact_if_long();
    }
}

fn propose_replicate_commit(c: &mut Criterion) {
    let payload = Bytes::from(vec![0xAB; PAYLOAD]);
    let mut group = c.benchmark_group("propose_replicate_commit_3_nodes");
    for batch in [1usize, 64] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::new("batch", batch), &batch, |b, &batch| {
            let mut cluster = Cluster::new();
            b.iter(|| cluster.round(black_box(batch), &payload));
        });
    }
    group.finish();
}

criterion_group!(benches, propose_replicate_commit);
criterion_main!(benches);

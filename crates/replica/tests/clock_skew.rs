//! Expiry when node clocks disagree: a fast-clocked leader, then a slow-clocked one. Three replicas
//! wired by hand (messages delivered at once, every persist job durable at once), so the scenario is
//! exact and needs no simulator.
//!
//! Before the replicated-clock rule, a leader judged a read's expiry by its own wall clock: the fast
//! leader answered `ERR_NOT_FOUND` for a key that, after failover to the slow leader, answered `VALUE`
//! again, and a `cas` on it succeeded. [`Mutation::ExpiryAtLocalClock`] brings that rule back, and the
//! last test shows the scenario catches it.

use std::collections::BTreeMap;

use bytes::Bytes;
use raftkv_kv::{Command, Reply, Request};
use raftkv_raft::{Config, NodeId, Role};
use raftkv_replica::{ClientRequest, Durable, Mutation, Now, Op, Replica, ReplicaConfig};

const NODES: u64 = 3;
const WALL_BASE_MS: u64 = 1_780_000_000_000;

struct Cluster {
    nodes: BTreeMap<NodeId, Replica<u64>>,
    /// Each node's wall clock offset from the cluster's time.
    offsets: BTreeMap<NodeId, i64>,
    time_ms: u64,
    replies: BTreeMap<u64, Reply>,
    next_handle: u64,
    down: Option<NodeId>,
    /// How long every disk write takes (0: durable at once).
    disk_delay_ms: u64,
    /// Disk writes in progress: (due, node, index, term, messages that wait for them).
    writing: Vec<(u64, NodeId, u64, u64, Vec<raftkv_raft::Message>)>,
}

impl Cluster {
    fn new(mutation: Option<Mutation>, offsets: [i64; 3]) -> Cluster {
        let voters: Vec<NodeId> = (1..=NODES).collect();
        let nodes = voters
            .iter()
            .map(|&id| {
                let mut raft = Config::new(id, voters.clone());
                raft.election_ticks = 10;
                raft.heartbeat_ticks = 2;
                raft.seed = id * 7919;
                let config = ReplicaConfig {
                    raft,
                    peer_addrs: Default::default(),
                    promote_max_lag: raftkv_replica::DEFAULT_PROMOTE_MAX_LAG,
                    auto_remove_after_ms: 0,
                    client_addrs: voters
                        .iter()
                        .map(|&n| (n, format!("127.0.0.1:{}", 9000 + n)))
                        .collect(),
                    leader_wait_ms: 2_000,
                    snapshot_entries: 1 << 40,
                    snapshot_bytes: 1 << 40,
                    session_limits: raftkv_kv::SessionLimits::DEFAULT,
                    tick_ms: 10,
                    mutation,
                    record_applied: false,
                };
                (id, Replica::new(config, Default::default()).unwrap())
            })
            .collect();
        Cluster {
            nodes,
            offsets: voters.iter().copied().zip(offsets).collect(),
            time_ms: 0,
            replies: BTreeMap::new(),
            next_handle: 1,
            down: None,
            disk_delay_ms: 0,
            writing: Vec::new(),
        }
    }

    fn now(&self, id: NodeId) -> Now {
        Now {
            mono_ms: self.time_ms,
            wall_ms: (WALL_BASE_MS as i64 + self.time_ms as i64 + self.offsets[&id]) as u64,
        }
    }

    /// Runs every node's outputs to a fixed point: messages delivered, persist jobs durable at once.
    fn settle(&mut self) {
        for _ in 0..100 {
            let mut messages = Vec::new();
            for (&id, node) in self.nodes.iter_mut() {
                node.advance().unwrap();
                let out = node.outputs();
                messages.append(&mut out.messages);
                for (handle, reply) in out.replies.drain(..) {
                    self.replies.insert(handle, reply);
                }
                let jobs: Vec<_> = out.persist.drain(..).collect();
                out.snapshot = None;
                for mut job in jobs {
                    let last = job
                        .entries
                        .last()
                        .map(|e| (e.index, e.term))
                        .or(job.snapshot.as_ref().map(|s| (s.meta.index, s.meta.term)));
                    if self.disk_delay_ms > 0 {
                        let (index, term) = last.unwrap_or((0, 0));
                        let due = self.time_ms + self.disk_delay_ms;
                        let waiting = std::mem::take(&mut job.messages_after_persist);
                        self.writing.push((due, id, index, term, waiting));
                        continue;
                    }
                    messages.append(&mut job.messages_after_persist);
                    if let Some((index, term)) = last {
                        node.persisted(Durable {
                            index,
                            term,
                            ..Durable::default()
                        })
                        .unwrap();
                    }
                }
            }
            if messages.is_empty() && self.nodes.values().all(|n| !n.raft().has_ready()) {
                return;
            }
            for msg in messages {
                if Some(msg.to) == self.down || Some(msg.from) == self.down {
                    continue;
                }
                if let Some(node) = self.nodes.get_mut(&msg.to) {
                    node.step(msg);
                }
            }
        }
        panic!("the cluster did not settle");
    }

    /// Advances time by `ms`, ticking every node every 10 ms.
    fn run(&mut self, ms: u64) {
        for _ in 0..ms / 10 {
            self.time_ms += 10;
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                if Some(id) == self.down {
                    continue;
                }
                let now = self.now(id);
                self.nodes.get_mut(&id).unwrap().tick(now);
            }
            self.complete_disk_writes();
            self.settle();
        }
    }

    /// Disk writes due by now become durable, in order per node, and release their messages.
    fn complete_disk_writes(&mut self) {
        let now = self.time_ms;
        let (due, rest): (Vec<_>, Vec<_>) = self.writing.drain(..).partition(|(at, ..)| *at <= now);
        self.writing = rest;
        for (_, id, index, term, messages) in due {
            if index > 0 {
                let node = self.nodes.get_mut(&id).unwrap();
                node.persisted(Durable {
                    index,
                    term,
                    ..Durable::default()
                })
                .unwrap();
            }
            for msg in messages {
                if Some(msg.to) == self.down || Some(msg.from) == self.down {
                    continue;
                }
                if let Some(node) = self.nodes.get_mut(&msg.to) {
                    node.step(msg);
                }
            }
        }
    }

    fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter(|(id, _)| Some(**id) != self.down)
            .find(|(_, n)| n.raft().status().role == Role::Leader)
            .map(|(id, _)| *id)
    }

    fn elect(&mut self, id: NodeId) {
        for _ in 0..50 {
            if self.leader() == Some(id) {
                return;
            }
            if let Some(leader) = self.leader() {
                let _ = self
                    .nodes
                    .get_mut(&leader)
                    .unwrap()
                    .raft_mut()
                    .transfer_leadership(id);
            }
            self.run(100);
        }
        panic!("node {id} did not become leader");
    }

    fn ask(&mut self, op: Op) -> Reply {
        let leader = self.leader().expect("a leader");
        let handle = self.next_handle;
        self.next_handle += 1;
        let now = self.now(leader);
        self.nodes
            .get_mut(&leader)
            .unwrap()
            .request(now, ClientRequest { op, handle });
        for _ in 0..500 {
            self.settle();
            if let Some(reply) = self.replies.remove(&handle) {
                return reply;
            }
            self.run(10);
        }
        panic!("no reply within 5 s");
    }
}

fn key() -> Bytes {
    Bytes::from_static(b"session")
}

fn set_with_ttl(ttl_s: u32) -> Op {
    Op::write(Command::Set {
        key: key(),
        exptime: ttl_s,
        value: Bytes::from_static(b"token"),
    })
}

fn get() -> Op {
    Op::Read(Request::Get { key: key() })
}

fn cas(version: u64) -> Op {
    Op::write(Command::Cas {
        key: key(),
        exptime: 0,
        version,
        value: Bytes::from_static(b"renewed"),
    })
}

/// Node 1's clock runs 10 s ahead, node 2's 10 s behind. The key is written with a 5 s lifetime
/// through node 2 (slow), read through node 1 (fast: 20 s ahead of the write's stamp), then node 1 dies
/// and node 2 leads again, well within the key's lifetime by its own clock. Returns (read on the fast
/// leader, read on the slow one, cas on it).
fn fast_then_slow(mutation: Option<Mutation>) -> (Reply, Reply, Reply) {
    let mut cluster = Cluster::new(mutation, [10_000, -10_000, 0]);
    cluster.run(500);
    cluster.elect(2);
    let version = match cluster.ask(set_with_ttl(5)) {
        Reply::Ok { version } => version,
        other => panic!("set: {other:?}"),
    };
    cluster.elect(1);
    let on_fast = cluster.ask(get());
    cluster.down = Some(1);
    cluster.run(300);
    cluster.elect(2);
    let on_slow = cluster.ask(get());
    let cas_on_slow = cluster.ask(cas(version));
    (on_fast, on_slow, cas_on_slow)
}

#[test]
fn an_expiry_seen_on_a_fast_clocked_leader_never_un_fires_on_a_slow_one() {
    let (on_fast, on_slow, cas_on_slow) = fast_then_slow(None);
    assert_eq!(
        on_fast,
        Reply::ErrNotFound,
        "the fast leader sees the key expired"
    );
    assert_eq!(
        on_slow,
        Reply::ErrNotFound,
        "the slow leader must not bring it back"
    );
    assert_eq!(
        cas_on_slow,
        Reply::ErrNotFound,
        "a cas on the expired key must fail"
    );
}

#[test]
fn the_scenario_catches_expiry_judged_at_the_local_clock() {
    let (on_fast, on_slow, cas_on_slow) = fast_then_slow(Some(Mutation::ExpiryAtLocalClock));
    assert_eq!(on_fast, Reply::ErrNotFound);
    assert!(
        matches!(on_slow, Reply::Value { .. }),
        "with the old rule the key comes back: {on_slow:?}"
    );
    assert!(matches!(cas_on_slow, Reply::Ok { .. }), "{cas_on_slow:?}");
}

#[test]
fn a_key_expires_for_readers_without_any_later_write() {
    let mut cluster = Cluster::new(None, [0, 0, 0]);
    cluster.run(500);
    cluster.elect(1);
    assert!(matches!(cluster.ask(set_with_ttl(1)), Reply::Ok { .. }));
    assert!(matches!(cluster.ask(get()), Reply::Value { .. }));
    cluster.run(1_100);
    assert_eq!(cluster.ask(get()), Reply::ErrNotFound);
}

/// Found in review: with commits slower than the read clock slack (a slow disk, a WAN), a `getm` of an
/// expiring key was judged again at the leader's wall clock after its clock entry applied, found it
/// lagging again, and waited for another entry, forever. A read is now judged once.
#[test]
fn a_getm_is_answered_when_commits_are_slower_than_the_clock_slack() {
    let mut cluster = Cluster::new(None, [0, 0, 0]);
    cluster.run(500);
    cluster.elect(1);
    assert!(matches!(cluster.ask(set_with_ttl(60)), Reply::Ok { .. }));
    // From now on every disk write takes 400 ms, so every commit does too.
    cluster.disk_delay_ms = 400;
    cluster.run(1_000);
    let getm = Op::Read(Request::Getm { key: key() });
    match cluster.ask(getm) {
        Reply::ValueMeta { exptime, .. } => assert!((1..=60).contains(&exptime), "{exptime}"),
        other => panic!("getm: {other:?}"),
    }
}

/// Simulator seed 142709: a `getm` whose clock entry could not be proposed (leadership was being
/// transferred) was parked to wait for the next leader, and a `get` pipelined after it on the same
/// connection was answered at once from the older clock. The `getm` then took effect later, found
/// the key expired, and the `get` sent after it still saw the value: an expiry un-fired in one
/// connection's order. Now the `getm` waits, on this leader, for the transfer to end and its clock
/// entry to apply, and every read due after it waits behind it.
#[test]
fn a_read_behind_one_parked_for_a_transfer_waits_for_it() {
    let mut cluster = Cluster::new(None, [0, 0, 0]);
    cluster.run(500);
    cluster.elect(1);
    assert!(matches!(cluster.ask(set_with_ttl(1)), Reply::Ok { .. }));
    // No write for 900 ms: the store's clock lags the leader's by more than a getm's slack, but the
    // key is still live by either clock.
    cluster.run(900);
    // Both reads start their ReadIndex round; before it returns, a transfer to node 2 (which cannot
    // answer) begins, and proposals are refused until it times out.
    cluster.down = Some(2);
    let now = cluster.now(1);
    let node = cluster.nodes.get_mut(&1).unwrap();
    let getm = Op::Read(Request::Getm { key: key() });
    node.request(
        now,
        ClientRequest {
            op: getm,
            handle: 1_001,
        },
    );
    node.request(
        now,
        ClientRequest {
            op: get(),
            handle: 1_002,
        },
    );
    node.raft_mut().transfer_leadership(2).unwrap();
    for _ in 0..300 {
        if cluster.replies.contains_key(&1_001) && cluster.replies.contains_key(&1_002) {
            break;
        }
        cluster.run(10);
    }
    let (first, second) = (&cluster.replies[&1_001], &cluster.replies[&1_002]);
    assert_eq!(
        *first,
        Reply::ErrNotFound,
        "judged after the transfer timed out"
    );
    assert_eq!(
        *second,
        Reply::ErrNotFound,
        "the getm saw the key expired, so the get sent after it must too"
    );
}

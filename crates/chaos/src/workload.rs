//! Concurrent clients over the real protocol, each recording every operation it invokes with its
//! call and return times and what it learned: a definite answer, a definite failure (refused or
//! redirected before anything was applied; dropped from the history), or an unknown outcome (a write
//! sent whose reply never came, or `ERR_INTERNAL`).
//!
//! Two kinds of keys: a few registers (`r<k>`) that every client reads, writes, swaps and deletes,
//! the odd ones sometimes with a lifetime of 1–3 s, for the linearizability check; and a ledger
//! (`l<n>`), each key written once and never touched again, for the lost-write check.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raftkv_protocol::{
    encode_cas, encode_delete, encode_get, encode_getm, encode_set, Reply, ReplyKind,
};
use raftkv_sim::linearizability::{CasOutcome, Key, Op, OpKind, Value};
use raftkv_sim::rng::Rng;

use crate::history::{key_name, value_of, write_of, FINAL_CONN, LEDGER_BASE};
use crate::wire::{CallError, Conn};

/// Where the clients connect, and how redirects map to nodes.
#[derive(Clone, Debug)]
pub struct Targets {
    /// What a client dials, per node.
    pub dial: Vec<String>,
    /// What a redirect names, per node.
    pub advertised: Vec<String>,
}

impl Targets {
    fn index_of(&self, addr: &str) -> Option<usize> {
        self.advertised.iter().position(|a| a == addr)
    }
}

#[derive(Clone, Debug)]
pub struct Settings {
    pub clients: usize,
    /// Register keys in use at a time.
    pub keys: u64,
    /// Clients move to a fresh set of registers this often (Jepsen's independent keys), so that no
    /// key's history grows without bound in a long run and the checker's work stays linear.
    pub key_lifetime: Duration,
    /// Longest wait for a reply before the outcome is unknown.
    pub op_timeout: Duration,
    /// Pause between a client's operations.
    pub think: Duration,
    pub seed: u64,
}

/// How operations ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// A definite answer (including "not found" and "version mismatch").
    pub ok: u64,
    /// Refused, redirected, or a read without an answer: nothing happened.
    pub failed: u64,
    /// A write whose fate the client cannot know.
    pub unknown: u64,
    /// Replies that no correct node sends (garbled, or not one of the command's replies).
    pub anomalies: u64,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.ok += other.ok;
        self.failed += other.failed;
        self.unknown += other.unknown;
        self.anomalies += other.anomalies;
    }
}

/// What the clients recorded.
#[derive(Debug, Default)]
pub struct Recorded {
    pub ops: Vec<Op>,
    pub counts: Counts,
    /// The first anomalies, described.
    pub anomalies: Vec<String>,
    /// Register generations used (see [`Settings::key_lifetime`]): registers `0..generations * keys`.
    pub generations: u64,
}

/// Anomalies described per client; the rest are only counted.
const DESCRIBED_ANOMALIES: usize = 10;

/// The clients, running until [`Workload::stop`] (or until dropped).
pub struct Workload {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Recorded>>,
    shared: Arc<Shared>,
}

struct Shared {
    targets: Targets,
    settings: Settings,
    start: Instant,
    stop: Arc<AtomicBool>,
    next_write: AtomicU64,
    next_ledger: AtomicU64,
}

impl Workload {
    /// Starts the clients; `start` is time zero of the history.
    pub fn start(targets: Targets, settings: Settings, start: Instant) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            targets,
            settings,
            start,
            stop: stop.clone(),
            next_write: AtomicU64::new(1),
            next_ledger: AtomicU64::new(0),
        });
        let threads = (0..shared.settings.clients)
            .map(|id| {
                let shared = shared.clone();
                std::thread::spawn(move || Client::new(id as u64, &shared).run(&shared))
            })
            .collect();
        Workload {
            stop,
            threads,
            shared,
        }
    }

    /// Stops the clients (each finishes its operation in flight); what they recorded. `Err` if a
    /// client panicked: its history is gone, so nothing could be concluded.
    pub fn stop(mut self) -> Result<Recorded, String> {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = Recorded::default();
        for thread in std::mem::take(&mut self.threads) {
            let mine = thread
                .join()
                .map_err(|_| "a client thread panicked; its history is lost".to_string())?;
            all.ops.extend(mine.ops);
            all.counts.add(mine.counts);
            all.anomalies.extend(mine.anomalies);
        }
        all.ops.sort_by_key(|op| op.call);
        all.generations = self.shared.generation() + 1;
        Ok(all)
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        // Unwinding past a running workload must not leave its clients hammering the cluster.
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Shared {
    /// The register generation in use now.
    fn generation(&self) -> u64 {
        let lifetime = self.settings.key_lifetime.as_millis().max(1);
        (self.start.elapsed().as_millis() / lifetime) as u64
    }
}

/// One operation about to be sent.
#[derive(Clone, Copy, Debug)]
enum Plan {
    Set {
        write: u64,
        ttl_s: u32,
    },
    Cas {
        write: u64,
        ttl_s: u32,
        expected: u64,
    },
    Delete,
    Get,
    Getm,
}

impl Plan {
    fn reply_kind(self) -> ReplyKind {
        match self {
            Plan::Set { .. } => ReplyKind::Set,
            Plan::Cas { .. } => ReplyKind::Cas,
            Plan::Delete => ReplyKind::Delete,
            Plan::Get => ReplyKind::Get,
            Plan::Getm => ReplyKind::Getm,
        }
    }

    fn is_write(self) -> bool {
        !matches!(self, Plan::Get | Plan::Getm)
    }

    fn encode(self, key: &str, out: &mut Vec<u8>) {
        let key = key.as_bytes();
        match self {
            Plan::Set { write, ttl_s } => {
                encode_set(out, key, ttl_s, value_of(write, padding(write)).as_bytes())
            }
            Plan::Cas {
                write,
                ttl_s,
                expected,
            } => encode_cas(
                out,
                key,
                ttl_s,
                expected,
                value_of(write, padding(write)).as_bytes(),
            ),
            Plan::Delete => encode_delete(out, key),
            Plan::Get => encode_get(out, key),
            Plan::Getm => encode_getm(out, key),
        }
    }

    /// The operation as the checker sees it, with its outcome unknown.
    fn unknown(self) -> OpKind {
        match self {
            Plan::Set { write, ttl_s } => OpKind::Set {
                write,
                ttl_s,
                version: None,
            },
            Plan::Cas {
                write,
                ttl_s,
                expected,
            } => OpKind::Cas {
                write,
                ttl_s,
                expected,
                outcome: None,
                version: None,
            },
            Plan::Delete => OpKind::Delete { deleted: None },
            Plan::Get => OpKind::Get { value: None },
            Plan::Getm => OpKind::Getm { value: None },
        }
    }
}

/// Padding of a write's value: 0 to 896 bytes, so the log grows fast enough to roll segments.
fn padding(write: u64) -> usize {
    (write % 8) as usize * 128
}

/// What a reply means for the operation.
enum Answer {
    Known(OpKind),
    /// Nothing was applied; try `Some(node)` next if the reply named the leader.
    Failed(Option<String>),
    Unknown,
    /// No correct node answers this (described): a write's fate is then unknown, a read says nothing.
    Anomaly(String),
}

/// A value nobody wrote reads as this write, which no operation has: the checker flags it.
fn interpret(plan: Plan, reply: Reply) -> Answer {
    if let Some(addr) = reply.redirect_address() {
        return Answer::Failed(Some(addr));
    }
    // A value that is not one of the workload's writes' is named as the checker names any bytes.
    let read_of = |value: &[u8]| write_of(value).map_or_else(|| Value::of(value), Value::Write);
    match (plan, reply) {
        (Plan::Set { write, ttl_s }, Reply::Ok { version }) => Answer::Known(OpKind::Set {
            write,
            ttl_s,
            version: Some(version),
        }),
        (
            Plan::Cas {
                write,
                ttl_s,
                expected,
            },
            reply @ (Reply::Ok { .. } | Reply::ErrVersion | Reply::ErrNotFound),
        ) => {
            let (outcome, version) = match reply {
                Reply::Ok { version } => (CasOutcome::Ok, Some(version)),
                Reply::ErrVersion => (CasOutcome::VersionMismatch, None),
                _ => (CasOutcome::NotFound, None),
            };
            Answer::Known(OpKind::Cas {
                write,
                ttl_s,
                expected,
                outcome: Some(outcome),
                version,
            })
        }
        (Plan::Delete, Reply::Deleted) => Answer::Known(OpKind::Delete {
            deleted: Some(true),
        }),
        (Plan::Delete, Reply::ErrNotFound) => Answer::Known(OpKind::Delete {
            deleted: Some(false),
        }),
        (Plan::Get, Reply::Value { value }) => Answer::Known(OpKind::Get {
            value: Some(read_of(&value)),
        }),
        (Plan::Get, Reply::ErrNotFound) => Answer::Known(OpKind::Get { value: None }),
        (
            Plan::Getm,
            Reply::ValueMeta {
                version,
                exptime,
                value,
            },
        ) => Answer::Known(OpKind::Getm {
            value: Some((read_of(&value), version, exptime)),
        }),
        (Plan::Getm, Reply::ErrNotFound) => Answer::Known(OpKind::Getm { value: None }),
        // The leader lost its leadership (or knew none) with the write in flight.
        (plan, Reply::ErrInternal) if plan.is_write() => Answer::Unknown,
        // A read refused for want of a leader: nothing to learn.
        (_, Reply::ErrInternal) => Answer::Failed(None),
        (plan, other) => Answer::Anomaly(format!("{plan:?} answered {other:?}")),
    }
}

struct Client {
    id: u64,
    rng: Rng,
    target: usize,
    conn: Option<Conn>,
    conn_id: u64,
    connections: u64,
    /// The newest version this client saw per register, for its `cas` guesses.
    versions: HashMap<Key, u64>,
    recorded: Recorded,
    request: Vec<u8>,
}

impl Client {
    fn new(id: u64, shared: &Shared) -> Client {
        let nodes = shared.targets.dial.len();
        Client {
            id,
            rng: Rng::new(shared.settings.seed.wrapping_mul(1000).wrapping_add(id)),
            target: id as usize % nodes,
            conn: None,
            conn_id: 0,
            connections: 0,
            versions: HashMap::new(),
            recorded: Recorded::default(),
            request: Vec::with_capacity(256),
        }
    }

    fn run(mut self, shared: &Shared) -> Recorded {
        while !shared.stop.load(Ordering::Relaxed) {
            let (key, plan) = self.choose(shared);
            self.perform(shared, key, plan);
            std::thread::sleep(shared.settings.think);
        }
        self.recorded
    }

    fn choose(&mut self, shared: &Shared) -> (Key, Plan) {
        let write = || shared.next_write.fetch_add(1, Ordering::Relaxed);
        let roll = self.rng.below(100);
        if roll >= 90 {
            let n = shared.next_ledger.fetch_add(1, Ordering::Relaxed);
            return (
                LEDGER_BASE + n,
                Plan::Set {
                    write: write(),
                    ttl_s: 0,
                },
            );
        }
        let keys = shared.settings.keys;
        let key = shared.generation() * keys + self.rng.below(keys);
        // Odd registers sometimes get a lifetime; even ones never expire.
        let ttl_s = if key % 2 == 1 && self.rng.below(2) == 0 {
            1 + self.rng.below(3) as u32
        } else {
            0
        };
        let plan = match roll {
            0..=21 => Plan::Get,
            22..=35 => Plan::Getm,
            36..=59 => Plan::Set {
                write: write(),
                ttl_s,
            },
            60..=79 => Plan::Cas {
                write: write(),
                ttl_s,
                expected: self
                    .versions
                    .get(&key)
                    .copied()
                    .unwrap_or_else(|| 1 + self.rng.below(50)),
            },
            _ => Plan::Delete,
        };
        (key, plan)
    }

    fn now_us(shared: &Shared) -> u64 {
        shared.start.elapsed().as_micros() as u64
    }

    fn next_target(&mut self, nodes: usize) {
        self.conn = None;
        self.target = (self.target + 1) % nodes;
    }

    fn perform(&mut self, shared: &Shared, key: Key, plan: Plan) {
        let nodes = shared.targets.dial.len();
        if self.conn.is_none() {
            match Conn::connect(
                &shared.targets.dial[self.target],
                shared.settings.op_timeout,
            ) {
                Ok(conn) => {
                    self.conn = Some(conn);
                    self.connections += 1;
                    self.conn_id = (self.id << 24) | self.connections;
                }
                Err(_) => {
                    self.next_target(nodes);
                    std::thread::sleep(Duration::from_millis(20));
                    return;
                }
            }
        }
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        self.request.clear();
        plan.encode(&key_name(key), &mut self.request);
        let call = Self::now_us(shared);
        let result = conn.call(&self.request, plan.reply_kind());
        let ret = Self::now_us(shared).max(call);
        let answer = match result {
            Ok(reply) => interpret(plan, reply),
            Err(CallError::Garbled(why)) => {
                self.next_target(nodes);
                Answer::Anomaly(format!("{plan:?}: {why}"))
            }
            Err(CallError::NotSent(_) | CallError::Lost(_)) => {
                self.next_target(nodes);
                if plan.is_write() {
                    Answer::Unknown
                } else {
                    Answer::Failed(None)
                }
            }
        };
        let answer = match answer {
            Answer::Anomaly(what) => {
                self.recorded.counts.anomalies += 1;
                if self.recorded.anomalies.len() < DESCRIBED_ANOMALIES {
                    self.recorded.anomalies.push(what);
                }
                if plan.is_write() {
                    Answer::Unknown
                } else {
                    Answer::Failed(None)
                }
            }
            other => other,
        };
        let (kind, ret) = match answer {
            Answer::Known(kind) => {
                self.recorded.counts.ok += 1;
                self.learn(key, kind);
                (kind, Some(ret))
            }
            Answer::Unknown => {
                self.recorded.counts.unknown += 1;
                (plan.unknown(), None)
            }
            Answer::Anomaly(_) => unreachable!("turned into unknown or failed above"),
            Answer::Failed(redirect) => {
                self.recorded.counts.failed += 1;
                match redirect.and_then(|addr| shared.targets.index_of(&addr)) {
                    Some(leader) if leader != self.target => {
                        self.conn = None;
                        self.target = leader;
                    }
                    // No leader known (or a redirect to itself): look elsewhere after a pause.
                    _ => {
                        self.next_target(nodes);
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
                return;
            }
        };
        self.recorded.ops.push(Op {
            conn: self.conn_id,
            key,
            kind,
            call,
            ret,
            index: None,
        });
    }

    fn learn(&mut self, key: Key, kind: OpKind) {
        if let Some(version) = kind.version() {
            self.versions.insert(key, version);
        }
    }
}

/// After healing: reads every register (`getm`) and every ledger key written (`get`) until each has a
/// definite answer from the leader, giving up if no key gets one for `limit`. The reads join the
/// history (connection [`FINAL_CONN`]); `Err` names a key no node would answer for.
pub fn final_reads(
    targets: &Targets,
    keys: impl IntoIterator<Item = Key>,
    start: Instant,
    limit: Duration,
) -> Result<Vec<Op>, String> {
    let mut deadline = Instant::now() + limit;
    let nodes = targets.dial.len();
    let mut target = 0;
    let mut conn: Option<Conn> = None;
    let mut ops = Vec::new();
    let mut request = Vec::new();
    for key in keys {
        let plan = if key >= LEDGER_BASE {
            Plan::Get
        } else {
            Plan::Getm
        };
        request.clear();
        plan.encode(&key_name(key), &mut request);
        loop {
            if Instant::now() >= deadline {
                return Err(format!("no node answered a read of {}", key_name(key)));
            }
            if conn.is_none() {
                conn = Conn::connect(&targets.dial[target], Duration::from_secs(2)).ok();
                if conn.is_none() {
                    target = (target + 1) % nodes;
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            }
            let Some(c) = conn.as_mut() else { continue };
            let call = start.elapsed().as_micros() as u64;
            let reply = c.call(&request, plan.reply_kind());
            let ret = (start.elapsed().as_micros() as u64).max(call);
            match reply.map(|reply| interpret(plan, reply)) {
                Ok(Answer::Known(kind)) => {
                    deadline = Instant::now() + limit;
                    ops.push(Op {
                        conn: FINAL_CONN,
                        key,
                        kind,
                        call,
                        ret: Some(ret),
                        index: None,
                    });
                    break;
                }
                Ok(Answer::Failed(Some(addr))) => {
                    conn = None;
                    target = targets.index_of(&addr).unwrap_or((target + 1) % nodes);
                }
                _ => {
                    conn = None;
                    target = (target + 1) % nodes;
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
    Ok(ops)
}

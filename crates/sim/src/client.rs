//! The workload: clients speaking the real protocol (`set`, `get`, `getm`, `cas`, `delete`, with
//! expiry and `noreply`), each over one connection that may pipeline several requests, and the
//! history of what they saw. Some clients write through a session, one request at a time, and retry
//! a write whose outcome they do not know (with its sequence number) until it has a definite answer:
//! the history holds it as one operation, from its first attempt to its answer.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use raftkv_kv::{Command, Reply, Request, SetExpiry};
use raftkv_raft::NodeId;
use raftkv_replica::Op as Request2;

use crate::compound;
use crate::linearizability::{
    CasOutcome, Key, Op, OpKind, SetCondition, Value, FAR_LIFETIME_S, PAST_LIFETIME_S,
    SET_CONDITIONS,
};
use crate::rng::Rng;

/// A request on a connection, waiting for its reply (replies are delivered in request order).
#[derive(Clone, Debug)]
pub struct InFlight {
    /// The handle the request was sent with: the operation's id for its first attempt, a fresh id for
    /// each retry and each registration.
    pub attempt: u64,
    /// The history's record of the operation; None for a session registration.
    pub slot: Option<usize>,
    /// The request, kept to send again if this is a write in a session.
    pub request: Option<Request2>,
    /// For a write in a session: whether an earlier attempt may have been applied.
    pub uncertain: bool,
    pub reply: Option<Reply>,
}

/// A session client's session: its id once registered, and the next write's sequence number.
#[derive(Clone, Copy, Debug, Default)]
pub struct Session {
    pub id: Option<u64>,
    pub next_seq: u64,
}

/// A write in a session whose outcome is unknown, to be sent again.
#[derive(Clone, Debug)]
pub struct Retry {
    pub slot: usize,
    pub request: Request2,
    /// Whether an attempt may have been applied (else every attempt was refused or never sent).
    pub uncertain: bool,
}

#[derive(Clone, Debug)]
pub struct Client {
    pub id: u64,
    /// The current connection (a new id after every reconnect).
    pub conn: u64,
    pub target: NodeId,
    pub in_flight: VecDeque<InFlight>,
    /// When the oldest request in flight is given up (and the connection with it).
    pub deadline: u64,
    /// When the next request may be sent (think time, or back-off after a failure).
    pub next_at: u64,
    pub completed: u64,
    /// The last version this client saw for each key, for its next `cas`.
    pub versions: BTreeMap<Key, u64>,
    /// Set for a client that writes through a session (then it has one request in flight at most).
    pub session: Option<Session>,
    pub retry: Option<Retry>,
}

/// What the cluster did with a write, as the simulator saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Applied at `index`, answering `reply`, by history clock `clock`.
    Applied {
        index: u64,
        reply: Option<Reply>,
        clock: u64,
    },
    /// Never applied.
    Never,
    /// The simulator cannot tell.
    Unresolved,
}

/// How an operation ended, as the history records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    Pending,
    Ok,
    /// A write that may or may not have happened: it stays in the history without a return.
    Unknown,
    /// An operation that certainly did not happen (redirected, refused), or a read with no answer.
    Dropped,
}

#[derive(Clone, Debug)]
pub struct Record {
    pub op_id: u64,
    pub op: Op,
    pub fate: Fate,
    /// Virtual times, for humans reading a failure.
    pub called_at: u64,
    pub returned_at: Option<u64>,
}

/// The client-visible history. `clock` orders every invocation and response in the one thread, so that
/// the checker sees real-time order exactly.
#[derive(Default)]
pub struct History {
    pub records: Vec<Record>,
    clock: u64,
}

impl History {
    pub fn invoke(&mut self, op_id: u64, conn: u64, key: Key, kind: OpKind, now: u64) -> usize {
        self.clock += 1;
        self.records.push(Record {
            op_id,
            op: Op {
                conn,
                key,
                kind,
                call: self.clock,
                ret: None,
                index: None,
            },
            fate: Fate::Pending,
            called_at: now,
            returned_at: None,
        });
        self.records.len() - 1
    }

    pub fn respond(&mut self, slot: usize, kind: OpKind, now: u64) {
        self.clock += 1;
        let record = &mut self.records[slot];
        assert_eq!(record.fate, Fate::Pending, "answered twice: {record:?}");
        record.op.kind = kind;
        record.op.ret = Some(self.clock);
        record.fate = Fate::Ok;
        record.returned_at = Some(now);
    }

    pub fn settle(&mut self, slot: usize, fate: Fate) {
        let record = &mut self.records[slot];
        assert_eq!(record.fate, Fate::Pending, "settled twice: {record:?}");
        assert!(matches!(fate, Fate::Unknown | Fate::Dropped));
        record.fate = fate;
    }

    pub fn clock(&self) -> u64 {
        self.clock
    }

    /// The history the checker sees: answered operations, and writes whose client never heard back,
    /// resolved by what the cluster applied (`resolve`). Every write gets the log index it was applied
    /// at, so the checker knows the order of writes. A write that took effect without its client
    /// hearing back is completed with what applying it answered, its return placed when it had been
    /// applied; one never applied is left out (it changed nothing, and an operation that changed nothing
    /// can always be placed where it changes nothing). A write the simulator cannot resolve stays
    /// optional. Also returns contradictions: a write applied although its client was told it was
    /// refused, or answered with another version than the one it was applied at.
    pub fn for_checker(&self, resolve: impl Fn(&Record) -> Effect) -> (Vec<Op>, Vec<String>) {
        let mut ops = Vec::new();
        let mut contradictions = Vec::new();
        for record in &self.records {
            let mut op = record.op;
            if is_read(&op.kind) {
                if record.fate == Fate::Ok {
                    ops.push(op);
                }
                continue;
            }
            let effect = resolve(record);
            match (record.fate, effect) {
                (Fate::Ok, Effect::Applied { index, reply, .. }) => {
                    let version = op.kind.version();
                    if version.is_some_and(|v| v != index) {
                        contradictions.push(format!("{op:?} was applied at index {index}"));
                    }
                    // The answer must be what taking effect answered (for a retried write in a
                    // session: what its first application answered, not what a later attempt met).
                    if let Some(applied) = complete(op.kind, reply.as_ref()) {
                        if applied != op.kind {
                            contradictions.push(format!(
                                "{op:?} was answered otherwise than applying it answered: {applied:?}"
                            ));
                        }
                    }
                    op.index = Some(index);
                    ops.push(op);
                }
                (Fate::Ok, _) => ops.push(op),
                (Fate::Dropped, Effect::Applied { index, .. }) => contradictions.push(format!(
                    "{op:?} was refused or redirected, yet applied at {index}"
                )),
                (Fate::Dropped, _) | (_, Effect::Never) => {}
                (_, Effect::Unresolved) => ops.push(op),
                (
                    _,
                    Effect::Applied {
                        index,
                        reply,
                        clock,
                    },
                ) => {
                    match complete(op.kind, reply.as_ref()) {
                        Some(kind) => op.kind = kind,
                        None => {
                            contradictions.push(format!("{op:?} applied with reply {reply:?}"));
                            continue;
                        }
                    }
                    op.index = Some(index);
                    op.ret = Some(clock.max(op.call));
                    ops.push(op);
                }
            }
        }
        (ops, contradictions)
    }

    pub fn count(&self, fate: Fate) -> usize {
        self.records.iter().filter(|r| r.fate == fate).count()
    }
}

pub fn is_read(kind: &OpKind) -> bool {
    matches!(kind, OpKind::Get { .. } | OpKind::Getm { .. })
}

pub fn key_bytes(key: Key) -> Bytes {
    Bytes::from(format!("k{key}"))
}

/// Write values name their write: `v<op id>`.
pub fn value_bytes(write: u64) -> Bytes {
    Bytes::from(format!("v{write}"))
}

/// What a client's operations are drawn from.
#[derive(Clone, Copy, Debug)]
pub struct Mix {
    pub read_ppm: u32,
    pub ttl_ppm: u32,
    /// Some writes are the Redis front end's single-key commands (SET NX/XX/GET, GETDEL).
    pub redis_ops: bool,
    /// Some writes are its compound commands ([`compound`]); the number of keys in play.
    pub compound_keys: Option<u64>,
    /// Some of the Redis SETs keep the key's lifetime (KEEPTTL) or expire at an instant (EXAT/PXAT).
    pub instants: bool,
}

/// A random operation for `key`: the request to send, the history's record of it, and `noreply`.
pub fn draw_op(
    rng: &mut Rng,
    op_id: u64,
    key: Key,
    last_version: Option<u64>,
    mix: Mix,
) -> (Request2, OpKind, bool) {
    let Mix {
        read_ppm,
        ttl_ppm,
        redis_ops,
        compound_keys,
        instants,
    } = mix;
    let k = key_bytes(key);
    if rng.chance(read_ppm) {
        return if rng.chance(500_000) {
            (
                Request2::Read(Request::Get { key: k }),
                OpKind::Get { value: None },
                false,
            )
        } else {
            (
                Request2::Read(Request::Getm { key: k }),
                OpKind::Getm { value: None },
                false,
            )
        };
    }
    // Mostly lifetimes that run out during the run; some that outlive it.
    let ttl_s = match rng.chance(ttl_ppm) {
        false => 0,
        true if rng.chance(200_000) => rng.range(30, 100) as u32,
        true => rng.range(1, 3) as u32,
    };
    let noreply = rng.chance(50_000);
    let value = value_bytes(op_id);
    // Drawn only in seeds with Redis commands, so that the others replay as they always did.
    if redis_ops && rng.chance(400_000) {
        let (request, kind) = redis_write(rng, op_id, k, ttl_s, value, instants);
        return (request, kind, false);
    }
    if let Some(keys) = compound_keys.filter(|_| rng.chance(700_000)) {
        let (request, kind) = compound::draw(rng, op_id, key, keys, ttl_s, last_version);
        return (request, kind, false);
    }
    match rng.below(10) {
        0..=4 => (
            Request2::write(Command::Set {
                key: k,
                exptime: ttl_s,
                value,
            }),
            OpKind::Set {
                write: op_id,
                ttl_s,
                version: None,
            },
            noreply,
        ),
        5..=7 => {
            let expected = match last_version {
                Some(v) if rng.chance(800_000) => v,
                _ => rng.range(1, 50),
            };
            (
                Request2::write(Command::Cas {
                    key: k,
                    exptime: ttl_s,
                    version: expected,
                    value,
                }),
                OpKind::Cas {
                    write: op_id,
                    ttl_s,
                    expected,
                    outcome: None,
                    version: None,
                },
                noreply,
            )
        }
        _ => (
            Request2::write(Command::Delete { key: k }),
            OpKind::Delete { deleted: None },
            false,
        ),
    }
}

/// A Redis single-key write (as `raftkv-server`'s RESP front end proposes it): SET with NX, XX and
/// GET, or GETDEL.
fn redis_write(
    rng: &mut Rng,
    op_id: u64,
    key: Bytes,
    ttl_s: u32,
    value: Bytes,
    instants: bool,
) -> (Request2, OpKind) {
    if rng.chance(250_000) {
        return (
            Request2::write(Command::GetDel { key }),
            OpKind::GetDel { value: None },
        );
    }
    let condition = SET_CONDITIONS[rng.index(3)];
    let get = rng.chance(500_000);
    let (expiry, ttl_s, keep_ttl) = set_expiry(op_id, ttl_s, instants);
    let command = Command::SetWith {
        key,
        value,
        condition,
        get,
        expiry,
    };
    let kind = OpKind::SetWith {
        write: op_id,
        ttl_s,
        keep_ttl,
        condition,
        get,
        wrote: None,
        old: None,
        version: None,
    };
    (Request2::write(command), kind)
}

/// A Redis SET's expiry, the lifetime the model gives it and whether it keeps the key's own
/// (KEEPTTL). With `instants`, one SET in four keeps the lifetime, one in sixteen expires at an
/// instant far beyond the run and one in sixteen at an instant long past; the choice comes from the op's id, so the random
/// stream (and with it every other choice of the seed) stays as it was.
fn set_expiry(op_id: u64, ttl_s: u32, instants: bool) -> (SetExpiry, u32, bool) {
    /// 2100-01-01 on any node's wall clock; the simulated clocks start in 2026.
    const FAR_INSTANT_MS: u64 = 4_102_444_800_000;
    match Rng::choice_of(op_id, 32) {
        0..=7 if instants => (SetExpiry::Keep, 0, true),
        8..=9 if instants => (SetExpiry::AtMs(FAR_INSTANT_MS), FAR_LIFETIME_S, false),
        // Already past: the key is written and gone at once.
        10..=11 if instants => (SetExpiry::AtMs(1_000), PAST_LIFETIME_S, false),
        _ if ttl_s == 0 => (SetExpiry::Never, 0, false),
        _ => (SetExpiry::AfterMs(u64::from(ttl_s) * 1000), ttl_s, false),
    }
}

/// A write's record completed with what applying it answered.
fn complete(kind: OpKind, reply: Option<&Reply>) -> Option<OpKind> {
    match interpret(kind, reply?, |_| None).ok()? {
        Meaning::Done(kind) => Some(kind),
        _ => None,
    }
}

/// What a reply means for an operation: its completed record, or how it ended otherwise. `Err` is a
/// reply the protocol does not allow for this request.
pub enum Meaning {
    Done(OpKind),
    /// Another node leads: the request did not happen; try there.
    Redirect(Option<NodeId>),
    /// The node could not tell (a write's outcome is unknown; a read has no answer).
    Failed,
}

pub fn interpret(
    kind: OpKind,
    reply: &Reply,
    node_of_port: impl Fn(u16) -> Option<NodeId>,
) -> Result<Meaning, String> {
    use Meaning::*;
    let bad = || Err(format!("reply {reply:?} to {kind:?}"));
    Ok(match (kind, reply) {
        (_, Reply::ErrRedirect { port, .. }) => Redirect(node_of_port(*port)),
        (_, Reply::ErrInternal) => Failed,
        (OpKind::Set { write, ttl_s, .. }, Reply::Ok { version }) => Done(OpKind::Set {
            write,
            ttl_s,
            version: Some(*version),
        }),
        (
            OpKind::Cas {
                write,
                ttl_s,
                expected,
                ..
            },
            r,
        ) => {
            let (outcome, version) = match r {
                Reply::Ok { version } => (CasOutcome::Ok, Some(*version)),
                Reply::ErrVersion => (CasOutcome::VersionMismatch, None),
                Reply::ErrNotFound => (CasOutcome::NotFound, None),
                _ => return bad(),
            };
            Done(OpKind::Cas {
                write,
                ttl_s,
                expected,
                outcome: Some(outcome),
                version,
            })
        }
        (OpKind::Delete { .. }, Reply::Deleted) => Done(OpKind::Delete {
            deleted: Some(true),
        }),
        (OpKind::Delete { .. }, Reply::ErrNotFound) => Done(OpKind::Delete {
            deleted: Some(false),
        }),
        (OpKind::Get { .. }, Reply::ErrNotFound) => Done(OpKind::Get { value: None }),
        (OpKind::Get { .. }, Reply::Value { value }) => Done(OpKind::Get {
            value: Some(Value::of(value)),
        }),
        (OpKind::Getm { .. }, Reply::ErrNotFound) => Done(OpKind::Getm { value: None }),
        (
            OpKind::SetWith {
                write,
                ttl_s,
                keep_ttl,
                condition,
                get,
                ..
            },
            r,
        ) => {
            // With GET the reply is the old value, and the condition says whether it wrote.
            let (wrote, old, version) = match (get, r) {
                (false, Reply::Ok { version }) => (true, None, Some(*version)),
                (false, Reply::ErrNotFound) => (false, None, None),
                (true, Reply::Value { value }) => (
                    condition != SetCondition::IfAbsent,
                    Some(Some(Value::of(value))),
                    None,
                ),
                (true, Reply::ErrNotFound) => {
                    (condition != SetCondition::IfPresent, Some(None), None)
                }
                _ => return bad(),
            };
            Done(OpKind::SetWith {
                write,
                ttl_s,
                keep_ttl,
                condition,
                get,
                wrote: Some(wrote),
                old,
                version,
            })
        }
        (OpKind::GetDel { .. }, Reply::ErrNotFound) => Done(OpKind::GetDel { value: Some(None) }),
        (OpKind::GetDel { .. }, Reply::Value { value }) => Done(OpKind::GetDel {
            value: Some(Some(Value::of(value))),
        }),
        (
            OpKind::Getm { .. },
            Reply::ValueMeta {
                version,
                exptime,
                value,
            },
        ) => Done(OpKind::Getm {
            value: Some((Value::of(value), *version, *exptime)),
        }),
        (kind, reply) if compound::is_compound(&kind) => match compound::interpret(kind, reply) {
            Some(kind) => Done(kind),
            None => return bad(),
        },
        _ => return bad(),
    })
}

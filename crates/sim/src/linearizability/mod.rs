//! A Porcupine-style linearizability checker for raftkv's key-value model: `set`, `cas`, `delete`,
//! `get`, `getm`, with versions and expiry, and the Redis front end's writes: SET with NX/XX/GET,
//! GETDEL, INCRBY, APPEND, SETRANGE, EXPIRE/PERSIST, and the ones that span keys, MSET/MSETNX,
//! RENAME/RENAMENX and MULTI/EXEC (with WATCH).
//!
//! Keys are independent unless one operation spans them, so the history is split into groups of
//! keys that multi-key operations join (a key no such operation touches is a group of its own), and
//! the history is linearizable iff every group's sub-history is. **Every** group is checked: any
//! illegal group fails the history, and a group whose search exceeds its budget is counted as
//! inconclusive, never as a pass. Each sub-history is searched with the Wing–Gong algorithm as
//! improved by Lowe (see [`search`]).
//!
//! The model of one key ([`model`]): absent, or live with a value, the write that last changed it
//! (whose log index is the key's version) and its lifetime. Values are named ([`Value`]): a write's
//! own value `v<write>` is unique, so a read names the write it saw; INCR, APPEND and SETRANGE make
//! values the model computes. **Expiry** is nondeterministic in the model — before any operation, a
//! key it touches that has a lifetime may have vanished — but it never un-fires: once absent a key
//! stays absent until written again. That is exactly what raftkv promises when node clocks disagree
//! (an expiry may fire early or late, never un-fire). **Versions** are log indexes, learned from
//! `OK <version>` and `getm` replies and from the index a write was applied at, where known; a `cas`
//! succeeds only on the version of the write it replaces.
//!
//! An operation with an unknown outcome (the client timed out, its node crashed, a `noreply` write) may
//! take effect at any point after its call, or never: its return is placed at +infinity, and once only
//! such operations are left the search succeeds. Operations of one connection take effect in the order
//! they were sent: an operation may be linearized only after the connection's previous operation in
//! its group with a known outcome.

mod model;
mod search;
mod value;

use std::collections::BTreeMap;
use std::fmt;

pub use raftkv_kv::{SetCondition, TtlCondition};
pub use value::{Value, WriteId};

use model::{Facts, Group};

/// Every condition a Redis SET may carry (none, NX, XX), for drawing one.
pub const SET_CONDITIONS: [SetCondition; 3] = [
    SetCondition::Always,
    SetCondition::IfAbsent,
    SetCondition::IfPresent,
];

/// The most keys one group may join (the simulator uses at most four keys); a larger group is
/// counted as inconclusive.
pub const MAX_GROUP: usize = 4;
/// The lifetime, in seconds, the model gives an expiry instant far beyond any simulated run (SET
/// EXAT/PXAT in the year 2100): it never runs out where the clocks' bound is known.
pub const FAR_LIFETIME_S: u32 = u32::MAX - 1;
/// The lifetime the model records for an expiry instant already past (SET PXAT 1000): the key is
/// written (the write has its version) and gone at once.
pub const PAST_LIFETIME_S: u32 = u32::MAX;
/// The most steps one MULTI/EXEC of the workload holds.
pub const MAX_TX_STEPS: usize = 3;

pub type Key = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CasOutcome {
    Ok,
    VersionMismatch,
    NotFound,
}

/// How a RENAME (RENAMENX) ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RenameOutcome {
    /// `OK` (RENAMENX: 1): the value and its lifetime moved.
    Moved,
    /// The source key was absent.
    NotFound,
    /// RENAMENX answered 0: the target existed (or was the source).
    TargetExists,
}

/// One command of a MULTI/EXEC and, once answered, what it answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxAction {
    /// SET to the transaction's value, without expiry.
    Set,
    /// GET: Some(None) not found.
    Get { value: Option<Option<Value>> },
    /// INCR: the new value, Some(None) for "not an integer".
    Incr { result: Option<Option<i64>> },
    /// DEL of one key: whether it deleted it.
    Delete { deleted: Option<bool> },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxStep {
    pub key: Key,
    pub action: TxAction,
}

/// MULTI/EXEC: `steps[..len]` applied at one log index, unless a watched key changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tx {
    pub write: WriteId,
    /// A key WATCHed at a version (0: absent): EXEC aborts if the key's version is another when the
    /// transaction applies.
    pub watch: Option<(Key, u64)>,
    pub steps: [TxStep; MAX_TX_STEPS],
    pub len: usize,
    /// Once answered: whether EXEC aborted.
    pub aborted: Option<bool>,
    /// The version a SET step's `OK` reported (the transaction's index), if it has one.
    pub version: Option<u64>,
}

impl Tx {
    pub fn steps(&self) -> &[TxStep] {
        &self.steps[..self.len]
    }
}

/// What one operation did, as far as its client saw it. Writes are named by a `write` id unique to
/// the operation: the value it stores is `v<write>` (APPEND appends `a<write>`, SETRANGE writes
/// `r<write>`), and the key's version becomes the index it was applied at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// `set` of a new value (`ttl_s` 0: never expires); `version` from its `OK` reply, if seen.
    Set {
        write: WriteId,
        ttl_s: u32,
        version: Option<u64>,
    },
    /// `cas` expecting `expected`; `outcome` None if unknown (a success then has `version` unknown too).
    Cas {
        write: WriteId,
        ttl_s: u32,
        expected: u64,
        outcome: Option<CasOutcome>,
        version: Option<u64>,
    },
    /// `delete`: Some(true) `DELETED`, Some(false) `ERR_NOT_FOUND`, None unknown.
    Delete { deleted: Option<bool> },
    /// `get`: the value it returned, or None for `ERR_NOT_FOUND`.
    Get { value: Option<Value> },
    /// `getm`: (value, version, remaining seconds) or None for `ERR_NOT_FOUND`.
    Getm { value: Option<(Value, u64, u64)> },
    /// Redis's SET with a condition (NX: `IfAbsent`, XX: `IfPresent`) and, with `get`, the old value.
    /// Once answered, `wrote` says whether it wrote and `old` (with `get`) what it found (Some(None):
    /// nothing); `version` is from an `OK` reply. All None while the outcome is unknown. With
    /// `keep_ttl` (KEEPTTL) the key keeps the lifetime it had and `ttl_s` is unused; an instant
    /// (EXAT/PXAT) is recorded as [`PAST_LIFETIME_S`] if already past, [`FAR_LIFETIME_S`] if beyond
    /// any run.
    SetWith {
        write: WriteId,
        ttl_s: u32,
        keep_ttl: bool,
        condition: SetCondition,
        get: bool,
        wrote: Option<bool>,
        old: Option<Option<Value>>,
        version: Option<u64>,
    },
    /// GETDEL: once answered, the value it took (Some(None): not found); None unknown.
    GetDel { value: Option<Option<Value>> },
    /// INCRBY `by` (INCR, DECR, DECRBY): once answered, the new value, or Some(None) when the value
    /// was not an integer (or the sum would overflow).
    IncrBy {
        write: WriteId,
        by: i64,
        result: Option<Option<i64>>,
    },
    /// INCRBYFLOAT by the float whose bits are `by_bits`: once answered, the new value, or Some(None)
    /// when the value was not a float (or the sum not finite).
    IncrByFloat {
        write: WriteId,
        by_bits: u64,
        result: Option<Option<Value>>,
    },
    /// APPEND of `a<write>`: once answered, the new length.
    Append { write: WriteId, len: Option<u64> },
    /// SETRANGE writing `r<write>` at `offset`: once answered, the new length.
    SetRange {
        write: WriteId,
        offset: u32,
        len: Option<u64>,
    },
    /// EXPIRE by `ttl_s` seconds (with NX or XX as `condition`), or PERSIST for 0: once answered,
    /// whether it changed the key. (GT and LT compare instants the model does not know.)
    SetTtl {
        write: WriteId,
        ttl_s: u32,
        condition: TtlCondition,
        changed: Option<bool>,
    },
    /// GETEX giving the key `ttl_s` seconds, or PERSIST for 0: once answered, the value it read
    /// (Some(None): not found).
    GetEx {
        write: WriteId,
        ttl_s: u32,
        value: Option<Option<Value>>,
    },
    /// FLUSHALL, with keys `0..keys` in play (it joins them all); `version` from its `OK`.
    Flush { keys: u64, version: Option<u64> },
    /// MSET (MSETNX with `nx`) of the op's key and `other` to `v<write>`, without expiry: once
    /// answered, whether it wrote; `version` from MSET's `OK`.
    MSet {
        write: WriteId,
        other: Key,
        nx: bool,
        wrote: Option<bool>,
        version: Option<u64>,
    },
    /// RENAME (RENAMENX with `nx`) of the op's key to `to`; `version` from RENAME's `OK`.
    Rename {
        write: WriteId,
        to: Key,
        nx: bool,
        outcome: Option<RenameOutcome>,
        version: Option<u64>,
    },
    /// MULTI/EXEC; the op's key is its first step's.
    Tx(Tx),
}

impl OpKind {
    /// The version this operation learned of its key, if its reply told one.
    pub fn version(&self) -> Option<u64> {
        match *self {
            OpKind::Set { version, .. }
            | OpKind::Cas { version, .. }
            | OpKind::SetWith { version, .. }
            | OpKind::MSet { version, .. }
            | OpKind::Rename { version, .. }
            | OpKind::Flush { version, .. } => version,
            OpKind::Tx(tx) => tx.version,
            OpKind::Getm {
                value: Some((_, version, _)),
            } => Some(version),
            _ => None,
        }
    }

    /// The id this operation's writes are named by, if it may write.
    pub fn write(&self) -> Option<WriteId> {
        match *self {
            OpKind::Set { write, .. }
            | OpKind::Cas { write, .. }
            | OpKind::SetWith { write, .. }
            | OpKind::IncrBy { write, .. }
            | OpKind::IncrByFloat { write, .. }
            | OpKind::Append { write, .. }
            | OpKind::SetRange { write, .. }
            | OpKind::SetTtl { write, .. }
            | OpKind::GetEx { write, .. }
            | OpKind::MSet { write, .. }
            | OpKind::Rename { write, .. } => Some(write),
            OpKind::Tx(tx) => Some(tx.write),
            OpKind::Delete { .. }
            | OpKind::Get { .. }
            | OpKind::Getm { .. }
            | OpKind::GetDel { .. }
            | OpKind::Flush { .. } => None,
        }
    }

    /// The values of single writes this operation reports having seen.
    pub fn saw(&self) -> Vec<WriteId> {
        let values: Vec<Value> = match *self {
            OpKind::Get { value: Some(v) }
            | OpKind::Getm {
                value: Some((v, _, _)),
            }
            | OpKind::SetWith {
                old: Some(Some(v)), ..
            }
            | OpKind::GetDel {
                value: Some(Some(v)),
            }
            | OpKind::GetEx {
                value: Some(Some(v)),
                ..
            } => vec![v],
            OpKind::Tx(tx) => tx
                .steps()
                .iter()
                .filter_map(|step| match step.action {
                    TxAction::Get { value: Some(v) } => v,
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        values.into_iter().filter_map(Value::write).collect()
    }

    /// The write whose own value (`v<write>`) this operation may store, if it stores one.
    pub fn stores(&self) -> Option<WriteId> {
        match *self {
            OpKind::Set { write, .. }
            | OpKind::Cas { write, .. }
            | OpKind::SetWith { write, .. }
            | OpKind::MSet { write, .. } => Some(write),
            OpKind::Tx(tx) => tx
                .steps()
                .iter()
                .any(|step| step.action == TxAction::Set)
                .then_some(tx.write),
            _ => None,
        }
    }
}

/// One client operation: invocation time, response time (None: unknown outcome), what it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Op {
    /// The connection that sent it (operations of one connection take effect in order).
    pub conn: u64,
    /// The key it is about (for an operation on several keys, the first; see [`Op::keys`]).
    pub key: Key,
    pub kind: OpKind,
    pub call: u64,
    pub ret: Option<u64>,
    /// For a write, the log index it was applied at, if known: writes take effect in index order
    /// (the checker then need not guess their order, only where the reads fall between them).
    pub index: Option<u64>,
}

impl Op {
    fn is_read(&self) -> bool {
        matches!(self.kind, OpKind::Get { .. } | OpKind::Getm { .. })
    }

    /// Every key this operation reads or writes, its own first.
    pub fn keys(&self) -> Vec<Key> {
        let mut keys = vec![self.key];
        match self.kind {
            OpKind::MSet { other: k, .. } | OpKind::Rename { to: k, .. } => keys.push(k),
            OpKind::Flush { keys: n, .. } => keys.extend(0..n),
            OpKind::Tx(tx) => {
                keys.extend(tx.steps().iter().map(|step| step.key));
                keys.extend(tx.watch.map(|(key, _)| key));
            }
            _ => {}
        }
        let mut seen = Vec::with_capacity(keys.len());
        for key in keys {
            if !seen.contains(&key) {
                seen.push(key);
            }
        }
        seen
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Linearizable,
    /// Some group of keys has no linearization (or breaks a rule of versions); `key` is the group's
    /// first key and `ops` its sub-history.
    Illegal {
        key: Key,
        why: String,
        ops: Vec<Op>,
    },
}

/// The verdict on a whole history: the first illegal group, if any, and the groups (by their first
/// key) the search could neither prove nor refute within its budget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub outcome: Outcome,
    pub inconclusive_keys: Vec<Key>,
}

impl Verdict {
    pub fn illegal(&self) -> bool {
        matches!(self.outcome, Outcome::Illegal { .. })
    }
    pub fn inconclusive(&self) -> bool {
        !self.inconclusive_keys.is_empty()
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            Outcome::Linearizable => write!(f, "linearizable")?,
            Outcome::Illegal { key, why, ops } => {
                writeln!(f, "NOT linearizable on key {key}: {why}")?;
                for op in ops {
                    writeln!(f, "    {op:?}")?;
                }
            }
        }
        if self.inconclusive() {
            write!(f, " (inconclusive keys: {:?})", self.inconclusive_keys)?;
        }
        Ok(())
    }
}

/// Checks a whole history, every group of keys. `budget` bounds the search steps spent on any one
/// group.
pub fn check(history: &[Op], budget: u64) -> Verdict {
    check_with(history, budget, None)
}

/// [`check`], knowing that no lifetime of `lasting_ttl_s` seconds or more can have run out during
/// the history (the caller bounds how far any clock ran ahead): such keys never vanish.
pub fn check_with(history: &[Op], budget: u64, lasting_ttl_s: Option<u32>) -> Verdict {
    let mut verdict = Verdict {
        outcome: Outcome::Linearizable,
        inconclusive_keys: Vec::new(),
    };
    for (keys, ops) in groups(history) {
        let first = keys[0];
        if keys.len() > MAX_GROUP {
            verdict.inconclusive_keys.push(first);
            continue;
        }
        let result = check_group(&keys, &ops, budget, lasting_ttl_s).map(|conclusive| {
            if !conclusive {
                verdict.inconclusive_keys.push(first);
            }
        });
        if let Err(why) = result {
            if !verdict.illegal() {
                verdict.outcome = Outcome::Illegal {
                    key: first,
                    why,
                    ops,
                };
            }
        }
    }
    verdict
}

/// One group's sub-history: Ok(true) linearizable, Ok(false) out of budget, Err(why) illegal.
fn check_group(
    keys: &[Key],
    ops: &[Op],
    budget: u64,
    lasting_ttl_s: Option<u32>,
) -> Result<bool, String> {
    let facts = Facts::gather(ops)?;
    let group = Group::new(keys, &facts, lasting_ttl_s);
    match search::search(ops, &group, budget) {
        Some(true) => Ok(true),
        Some(false) => Err("no linearization exists".to_string()),
        None => Ok(false),
    }
}

/// The history split into groups of keys joined by operations that span them (sorted keys, the
/// group's operations in history order). A read without a response says nothing and is left out.
fn groups(history: &[Op]) -> Vec<(Vec<Key>, Vec<Op>)> {
    let mut parent: BTreeMap<Key, Key> = BTreeMap::new();
    fn root(parent: &mut BTreeMap<Key, Key>, key: Key) -> Key {
        let up = *parent.entry(key).or_insert(key);
        if up == key {
            return key;
        }
        let top = root(parent, up);
        parent.insert(key, top);
        top
    }
    let kept: Vec<&Op> = history
        .iter()
        .inspect(|op| {
            assert!(
                op.ret.is_none_or(|ret| op.call <= ret),
                "op returns before its call: {op:?}"
            )
        })
        .filter(|op| !(op.is_read() && op.ret.is_none()))
        .collect();
    for op in &kept {
        let keys = op.keys();
        for &key in &keys[1..] {
            let (a, b) = (root(&mut parent, keys[0]), root(&mut parent, key));
            if a != b {
                parent.insert(a.max(b), a.min(b));
            }
        }
        root(&mut parent, keys[0]);
    }
    let mut by_root: BTreeMap<Key, (Vec<Key>, Vec<Op>)> = BTreeMap::new();
    let all: Vec<Key> = parent.keys().copied().collect();
    for key in all {
        let top = root(&mut parent, key);
        by_root.entry(top).or_default().0.push(key);
    }
    for op in kept {
        let top = root(&mut parent, op.key);
        if let Some(group) = by_root.get_mut(&top) {
            group.1.push(*op);
        }
    }
    by_root.into_values().collect()
}

/// A smallest-found illegal sub-history of one group's `ops` (greedily drops each operation whose
/// removal keeps the history illegal), for reading a failure. Writes that compute a value or move
/// one (INCR, APPEND, RENAME, ...) are kept: without them a read of what they made would be illegal
/// trivially.
pub fn shrink(ops: &[Op], budget: u64) -> Vec<Op> {
    // A read of a write that is no longer in the history would be illegal trivially: keep writes read.
    let self_contained = |ops: &[Op]| {
        ops.iter().all(|op| {
            op.kind
                .saw()
                .into_iter()
                .all(|w| ops.iter().any(|o| o.kind.stores() == Some(w)))
        })
    };
    let illegal = |ops: &[Op]| {
        self_contained(ops)
            && groups(ops)
                .iter()
                .any(|(keys, ops)| check_group(keys, ops, budget, None).is_err())
    };
    let mut kept = ops.to_vec();
    let mut i = 0;
    while i < kept.len() {
        if kept[i].kind.write().is_some() && kept[i].kind.stores().is_none() {
            i += 1;
            continue;
        }
        let mut candidate = kept.clone();
        candidate.remove(i);
        if illegal(&candidate) {
            kept = candidate;
        } else {
            i += 1;
        }
    }
    kept
}

#[cfg(test)]
mod tests;

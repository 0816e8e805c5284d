//! A Porcupine-style linearizability checker for raftkv's key-value model: `set`, `cas`, `delete`,
//! `get`, `getm`, with versions and expiry, and the single-key Redis commands that keep a value one
//! write's: SET with NX/XX/GET (`SetWith`) and GETDEL.
//!
//! The history is split by key (keys are independent, so the history is linearizable iff every key's
//! sub-history is), and **every** key is checked: any illegal key fails the history, and a key whose
//! search exceeds its budget is counted as inconclusive, never as a pass. Each sub-history is searched
//! with the Wing–Gong algorithm as improved by Lowe: calls and returns form a doubly linked list in time
//! order; the search repeatedly linearizes the earliest call it can, and backtracks when it meets a
//! return whose call has not been linearized yet; a cache of (linearized set, state) pairs already
//! explored keeps it from revisiting a configuration.
//!
//! The model of one key: absent, or live with the value of one write, which may carry an expiry. Write
//! values are unique, so a read names the write it saw. **Expiry** is nondeterministic in the model —
//! an expiring key may vanish at any moment — but it never un-fires: once absent it stays absent until
//! written again. That is exactly what raftkv promises when node clocks disagree (an expiry may fire
//! early or late, never un-fire). **Versions** are log indexes, learned from `OK <version>` and `getm`
//! replies; a `cas` succeeds only on the version of the write it replaces.
//!
//! An operation with an unknown outcome (the client timed out, its node crashed, a `noreply` write) may
//! take effect at any point after its call, or never: its return is placed at +infinity, and once only
//! such operations are left the search succeeds. Operations of one connection on one key take effect in
//! the order they were sent: an operation may be linearized only after the connection's previous
//! operation on that key with a known outcome.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

pub use raftkv_kv::SetCondition;

/// Every condition a Redis SET may carry (none, NX, XX), for drawing one.
pub const SET_CONDITIONS: [SetCondition; 3] = [
    SetCondition::Always,
    SetCondition::IfAbsent,
    SetCondition::IfPresent,
];

pub type Key = u64;
/// The id of the write whose value a key holds (values are unique per write).
pub type WriteId = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CasOutcome {
    Ok,
    VersionMismatch,
    NotFound,
}

/// What one operation did, as far as its client saw it.
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
    /// `get`: the write whose value it returned, or None for `ERR_NOT_FOUND`.
    Get { value: Option<WriteId> },
    /// `getm`: (write, version, remaining seconds) or None for `ERR_NOT_FOUND`.
    Getm { value: Option<(WriteId, u64, u64)> },
    /// Redis's SET with a condition (NX: `IfAbsent`, XX: `IfPresent`) and, with `get`, the old value.
    /// Once answered, `wrote` says whether it wrote and `old` (with `get`) what it found (Some(None):
    /// nothing); `version` is from an `OK` reply. All None while the outcome is unknown.
    SetWith {
        write: WriteId,
        ttl_s: u32,
        condition: SetCondition,
        get: bool,
        wrote: Option<bool>,
        old: Option<Option<WriteId>>,
        version: Option<u64>,
    },
    /// GETDEL: once answered, the write whose value it took (Some(None): not found); None unknown.
    GetDel { value: Option<Option<WriteId>> },
}

impl OpKind {
    /// The version this operation learned of its key, if its reply told one.
    pub fn version(&self) -> Option<u64> {
        match *self {
            OpKind::Set { version, .. }
            | OpKind::Cas { version, .. }
            | OpKind::SetWith { version, .. } => version,
            OpKind::Getm {
                value: Some((_, version, _)),
            } => Some(version),
            _ => None,
        }
    }

    /// The write whose value this operation reports having seen, if any.
    pub fn saw(&self) -> Option<WriteId> {
        match *self {
            OpKind::Get { value: Some(w) }
            | OpKind::Getm {
                value: Some((w, _, _)),
            }
            | OpKind::SetWith {
                old: Some(Some(w)), ..
            }
            | OpKind::GetDel {
                value: Some(Some(w)),
            } => Some(w),
            _ => None,
        }
    }

    /// The write whose value this operation may store, if it is a write that stores one.
    pub fn stores(&self) -> Option<WriteId> {
        match *self {
            OpKind::Set { write, .. }
            | OpKind::Cas { write, .. }
            | OpKind::SetWith { write, .. } => Some(write),
            _ => None,
        }
    }
}

/// One client operation: invocation time, response time (None: unknown outcome), what it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Op {
    /// The connection that sent it (operations of one connection take effect in order).
    pub conn: u64,
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
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Linearizable,
    /// Some key has no linearization (or breaks a rule of versions); `ops` is that key's sub-history.
    Illegal {
        key: Key,
        why: String,
        ops: Vec<Op>,
    },
}

/// The verdict on a whole history: the first illegal key, if any, and how many keys the search could
/// neither prove nor refute within its budget.
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

/// Checks a whole history, every key. `budget` bounds the search steps spent on any one key.
pub fn check(history: &[Op], budget: u64) -> Verdict {
    let mut by_key: BTreeMap<Key, Vec<Op>> = BTreeMap::new();
    for op in history {
        assert!(
            op.ret.is_none_or(|ret| op.call <= ret),
            "op returns before its call: {op:?}"
        );
        // A read without a response says nothing.
        if op.is_read() && op.ret.is_none() {
            continue;
        }
        by_key.entry(op.key).or_default().push(*op);
    }
    let mut verdict = Verdict {
        outcome: Outcome::Linearizable,
        inconclusive_keys: Vec::new(),
    };
    for (key, ops) in by_key {
        let result = Facts::gather(&ops).and_then(|facts| match search(&ops, &facts, budget) {
            Some(true) => Ok(()),
            Some(false) => Err("no linearization exists".to_string()),
            None => {
                verdict.inconclusive_keys.push(key);
                Ok(())
            }
        });
        if let Err(why) = result {
            if !verdict.illegal() {
                verdict.outcome = Outcome::Illegal { key, why, ops };
            }
        }
    }
    verdict
}

/// A smallest-found illegal sub-history of one key's `ops` (greedily drops each operation whose removal
/// keeps the history illegal), for reading a failure.
pub fn shrink(ops: &[Op], budget: u64) -> Vec<Op> {
    // A read of a write that is no longer in the history would be illegal trivially: keep writes read.
    let self_contained = |ops: &[Op]| {
        ops.iter().all(|op| match op.kind.saw() {
            Some(w) => ops.iter().any(|o| o.kind.stores() == Some(w)),
            None => true,
        })
    };
    let illegal = |ops: &[Op]| {
        self_contained(ops)
            && Facts::gather(ops).map_or(true, |facts| search(ops, &facts, budget) == Some(false))
    };
    let mut kept = ops.to_vec();
    let mut i = 0;
    while i < kept.len() {
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

/// What the whole sub-history of a key says about its writes, independent of order.
struct Facts {
    /// The version (log index) of each write, where some reply told it.
    versions: HashMap<WriteId, u64>,
    /// Which write holds each known version.
    owners: HashMap<u64, WriteId>,
    /// Each write's time to live, for checking `getm`'s remaining seconds.
    ttls: HashMap<WriteId, u32>,
}

impl Facts {
    fn gather(ops: &[Op]) -> Result<Facts, String> {
        let mut facts = Facts {
            versions: HashMap::new(),
            owners: HashMap::new(),
            ttls: HashMap::new(),
        };
        let learn = |facts: &mut Facts, write: WriteId, version: u64| -> Result<(), String> {
            if let Some(old) = facts.versions.insert(write, version) {
                if old != version {
                    return Err(format!(
                        "write {write} seen with versions {old} and {version}"
                    ));
                }
            }
            if let Some(other) = facts.owners.insert(version, write) {
                if other != write {
                    return Err(format!(
                        "version {version} belongs to writes {other} and {write}"
                    ));
                }
            }
            Ok(())
        };
        for op in ops {
            match op.kind {
                OpKind::Set {
                    write,
                    ttl_s,
                    version,
                }
                | OpKind::Cas {
                    write,
                    ttl_s,
                    version,
                    ..
                }
                | OpKind::SetWith {
                    write,
                    ttl_s,
                    version,
                    ..
                } => {
                    facts.ttls.insert(write, ttl_s);
                    if let Some(version) = version {
                        learn(&mut facts, write, version)?;
                    }
                }
                OpKind::Getm {
                    value: Some((write, version, _)),
                } => learn(&mut facts, write, version)?,
                _ => {}
            }
        }
        for op in ops {
            let OpKind::Getm {
                value: Some((write, _, remaining)),
            } = op.kind
            else {
                continue;
            };
            let Some(&ttl) = facts.ttls.get(&write) else {
                return Err(format!("getm returned write {write}, which nobody sent"));
            };
            let legal = if ttl == 0 {
                remaining == 0
            } else {
                (1..=u64::from(ttl)).contains(&remaining)
            };
            if !legal {
                return Err(format!(
                    "getm of write {write} (ttl {ttl}s) reports {remaining}s left"
                ));
            }
        }
        Ok(facts)
    }

    /// Whether write `holder` has version `expected`: Some(answer), or None if the history cannot tell.
    fn has_version(&self, holder: WriteId, expected: u64) -> Option<bool> {
        if let Some(&version) = self.versions.get(&holder) {
            return Some(version == expected);
        }
        self.owners.get(&expected).map(|&owner| owner == holder)
    }
}

/// What one key holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Holds {
    Absent,
    Live { write: WriteId, expiring: bool },
}

/// The state of one key: what it holds, and the newest log index of a write to it so far (writes take
/// effect in log order; a version is the index of the write that made it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct State {
    holds: Holds,
    last_index: u64,
}

impl State {
    const INITIAL: State = State {
        holds: Holds::Absent,
        last_index: 0,
    };

    fn holding(self, holds: Holds) -> State {
        State { holds, ..self }
    }

    /// The state after a write of `write` with `version` (if known) takes effect, if it may.
    fn written(self, write: WriteId, ttl_s: u32, version: Option<u64>) -> Option<State> {
        let last_index = match version {
            Some(v) if v < self.last_index => return None,
            Some(v) => v,
            None => self.last_index,
        };
        Some(State {
            holds: Holds::Live {
                write,
                expiring: ttl_s > 0,
            },
            last_index,
        })
    }
}

/// The model, log order first: a write applied at a known index comes after every write applied at an
/// earlier one.
fn step(state: State, op: &Op, facts: &Facts) -> Option<State> {
    let state = match op.index {
        Some(index) if index <= state.last_index => return None,
        Some(index) => State {
            last_index: index,
            ..state
        },
        None => state,
    };
    step_kind(state, op, facts)
}

/// The state after `op` takes effect in `state`, if it may. An unknown outcome takes effect as the
/// success it may have been (its failure changes nothing, which "never" already covers).
fn step_kind(state: State, op: &Op, facts: &Facts) -> Option<State> {
    let may_vanish = matches!(
        state.holds,
        Holds::Absent | Holds::Live { expiring: true, .. }
    );
    let holds_version = |expected: u64| match state.holds {
        Holds::Live { write, .. } => Some(facts.has_version(write, expected)),
        Holds::Absent => None,
    };
    match op.kind {
        OpKind::Set {
            write,
            ttl_s,
            version,
        } => state.written(write, ttl_s, version),
        OpKind::Cas {
            write,
            ttl_s,
            expected,
            outcome,
            version,
        } => match outcome {
            None | Some(CasOutcome::Ok) => match holds_version(expected) {
                Some(Some(true) | None) => state.written(write, ttl_s, version),
                _ => None,
            },
            Some(CasOutcome::VersionMismatch) => match holds_version(expected) {
                Some(Some(false) | None) => Some(state),
                _ => None,
            },
            Some(CasOutcome::NotFound) => may_vanish.then_some(state.holding(Holds::Absent)),
        },
        OpKind::Delete { deleted } => match deleted {
            None | Some(true) => {
                matches!(state.holds, Holds::Live { .. }).then_some(state.holding(Holds::Absent))
            }
            Some(false) => may_vanish.then_some(state.holding(Holds::Absent)),
        },
        OpKind::Get { value: None } | OpKind::Getm { value: None } => {
            may_vanish.then_some(state.holding(Holds::Absent))
        }
        OpKind::Get { value: Some(seen) }
        | OpKind::Getm {
            value: Some((seen, _, _)),
        } => match state.holds {
            Holds::Live { write, .. } if write == seen => Some(state),
            _ => None,
        },
        OpKind::SetWith {
            write,
            ttl_s,
            condition,
            wrote,
            old,
            version,
            ..
        } => {
            let found_live = set_with_found_live(state, may_vanish, condition, wrote, old)?;
            let writes = match condition {
                SetCondition::Always => true,
                SetCondition::IfAbsent => !found_live,
                SetCondition::IfPresent => found_live,
            };
            if wrote.is_some_and(|wrote| wrote != writes) {
                return None;
            }
            let before = if found_live {
                state
            } else {
                state.holding(Holds::Absent)
            };
            if writes {
                before.written(write, ttl_s, version)
            } else {
                Some(before)
            }
        }
        OpKind::GetDel { value } => {
            let took = match value {
                Some(Some(seen)) => {
                    matches!(state.holds, Holds::Live { write, .. } if write == seen)
                }
                Some(None) => may_vanish,
                // As the success it may have been: it took a live value.
                None => matches!(state.holds, Holds::Live { .. }),
            };
            took.then_some(state.holding(Holds::Absent))
        }
    }
}

/// Whether a `SetWith` found its key live when it took effect in `state`, from what its reply says
/// (the old value it read, or whether its condition let it write); None if it cannot have taken
/// effect here. An unknown outcome is taken as the write it may have been.
fn set_with_found_live(
    state: State,
    may_vanish: bool,
    condition: SetCondition,
    wrote: Option<bool>,
    old: Option<Option<WriteId>>,
) -> Option<bool> {
    let live = matches!(state.holds, Holds::Live { .. });
    let found_live = match old {
        Some(Some(seen)) => {
            return matches!(state.holds, Holds::Live { write, .. } if write == seen)
                .then_some(true)
        }
        Some(None) => return may_vanish.then_some(false),
        None => match (condition, wrote) {
            (SetCondition::Always, _) => return Some(live),
            (SetCondition::IfAbsent, Some(false))
            | (SetCondition::IfPresent, Some(true) | None) => true,
            (SetCondition::IfAbsent, Some(true) | None)
            | (SetCondition::IfPresent, Some(false)) => false,
        },
    };
    match found_live {
        true => live.then_some(true),
        false => may_vanish.then_some(false),
    }
}

const HEAD: usize = 0;
const NIL: usize = usize::MAX;

/// The event list of Lowe's algorithm, as index-linked nodes. Node 0 is the head sentinel; node
/// `1 + 2 * i` is op i's call and `2 + 2 * i` its return.
struct Events {
    prev: Vec<usize>,
    next: Vec<usize>,
}

impl Events {
    fn call(op: usize) -> usize {
        1 + 2 * op
    }
    fn op(node: usize) -> usize {
        (node - 1) / 2
    }
    fn is_call(node: usize) -> bool {
        node % 2 == 1
    }

    fn new(ops: &[Op]) -> Events {
        // (time, is_return, op): calls sort before returns at equal times; unknown returns go last.
        let mut order: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            order.push((op.call, false, i));
            order.push((op.ret.unwrap_or(u64::MAX), true, i));
        }
        order.sort_unstable();
        let n = 1 + 2 * ops.len();
        let mut events = Events {
            prev: vec![NIL; n],
            next: vec![NIL; n],
        };
        let mut last = HEAD;
        for (_, is_return, i) in order {
            let node = if is_return {
                2 + 2 * i
            } else {
                Events::call(i)
            };
            events.next[last] = node;
            events.prev[node] = last;
            last = node;
        }
        events
    }

    fn unlink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = node;
        if n != NIL {
            self.prev[n] = node;
        }
    }

    /// Removes a call and its return (dancing links: `unlift` restores in reverse order).
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        self.unlink(call + 1);
    }

    fn unlift(&mut self, call: usize) {
        self.relink(call + 1);
        self.relink(call);
    }
}

/// For each op, the connection's previous op on this key with a known outcome, which must take effect
/// first.
fn predecessors(ops: &[Op]) -> Vec<Option<usize>> {
    let mut order: Vec<usize> = (0..ops.len()).collect();
    order.sort_by_key(|&i| ops[i].call);
    let mut last_known: HashMap<u64, usize> = HashMap::new();
    let mut pred = vec![None; ops.len()];
    for i in order {
        pred[i] = last_known.get(&ops[i].conn).copied();
        if ops[i].ret.is_some() {
            last_known.insert(ops[i].conn, i);
        }
    }
    pred
}

/// Lowe's search on one key. Some(true): linearizable; Some(false): not; None: out of budget.
fn search(ops: &[Op], facts: &Facts, budget: u64) -> Option<bool> {
    let mut events = Events::new(ops);
    let pred = predecessors(ops);
    let words = ops.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let is_linearized = |set: &[u64], i: usize| set[i / 64] & (1 << (i % 64)) != 0;
    let mut cache: HashSet<(Vec<u64>, State)> = HashSet::new();
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut state = State::INITIAL;
    let mut entry = events.next[HEAD];
    let mut steps = 0u64;
    while events.next[HEAD] != NIL {
        steps += 1;
        if steps > budget {
            return None;
        }
        assert!(
            entry != NIL,
            "every call is followed by its return in the list"
        );
        let i = Events::op(entry);
        if Events::is_call(entry) {
            let ordered = pred[i].is_none_or(|p| is_linearized(&linearized, p));
            if let Some(next_state) = step(state, &ops[i], facts).filter(|_| ordered) {
                linearized[i / 64] |= 1 << (i % 64);
                if cache.insert((linearized.clone(), next_state)) {
                    stack.push((entry, state));
                    state = next_state;
                    events.lift(entry);
                    entry = events.next[HEAD];
                    continue;
                }
                linearized[i / 64] &= !(1 << (i % 64));
            }
            entry = events.next[entry];
        } else {
            if ops[i].ret.is_none() {
                // Only operations of unknown outcome are left (their returns sort last): each may
                // never have happened.
                return Some(true);
            }
            // A return whose call is still in the list: that op must have been linearized by now.
            let Some((call, prev_state)) = stack.pop() else {
                return Some(false);
            };
            let j = Events::op(call);
            linearized[j / 64] &= !(1 << (j % 64));
            state = prev_state;
            events.unlift(call);
            entry = events.next[call];
        }
    }
    Some(true)
}

#[cfg(test)]
mod tests;

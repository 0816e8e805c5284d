//! A Porcupine-style linearizability checker for a map of registers (one register per key).
//!
//! The history is split by key (registers are independent, so the history is linearizable iff every key's
//! sub-history is), then each sub-history is searched with the Wing–Gong algorithm as improved by Lowe:
//! calls and returns form a doubly linked list in time order; the search repeatedly linearizes the
//! earliest call it can, lifting the call and its return out of the list, and backtracks when it meets a
//! return whose call has not been linearized yet. A cache of (linearized set, register state) pairs
//! already explored keeps the search from revisiting a configuration.
//!
//! Outcomes the history may hold:
//! - a write whose response was seen (`ret: Some`): it took effect exactly once between call and return;
//! - a write with an unknown outcome (`ret: None`, e.g. the client timed out or its node crashed): it may
//!   take effect at any point after its call, or never. Its return is placed at +infinity, so it can be
//!   linearized after everything else, which is the same as never for every read in the history;
//! - a read with a response: it returned `value` (None: the key was absent) between call and return;
//! - a read with no response (`ret: None`) says nothing and is dropped.
//!
//! Times (`call`, `ret`) are any totally ordered stamps; the simulator uses a global event counter so that
//! no two events tie. On a tie a call is ordered before a return (the two operations count as concurrent).

use std::collections::{BTreeMap, HashSet};

pub type Key = u64;
pub type Value = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Write { value: Value },
    Read { value: Option<Value> },
}

/// One client operation: invocation time, response time (None: unknown), what it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Op {
    pub client: u64,
    pub key: Key,
    pub kind: OpKind,
    pub call: u64,
    pub ret: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Linearizable,
    /// No linearization exists for the sub-history of `key`; `ops` is that sub-history.
    Illegal {
        key: Key,
        ops: Vec<Op>,
    },
    /// The search for `key` exceeded its step budget: neither proven nor refuted.
    Inconclusive {
        key: Key,
    },
}

/// Checks a whole history. `budget` bounds the search steps spent on any one key.
pub fn check(history: &[Op], budget: u64) -> Outcome {
    let mut by_key: BTreeMap<Key, Vec<Op>> = BTreeMap::new();
    for op in history {
        assert!(
            op.ret.is_none_or(|ret| op.call <= ret),
            "op returns before its call: {op:?}"
        );
        by_key.entry(op.key).or_default().push(*op);
    }
    for (key, ops) in by_key {
        let ops = prune(ops);
        match check_register(&ops, budget) {
            Some(true) => {}
            Some(false) => return Outcome::Illegal { key, ops },
            None => return Outcome::Inconclusive { key },
        }
    }
    Outcome::Linearizable
}

/// Drops what cannot change the verdict: reads without a response, and writes with an unknown outcome
/// whose value no read returned (when write values are unique within the key, such a write can always be
/// placed "never": no read sits between it and the next write, so removing it changes no read's result).
fn prune(ops: Vec<Op>) -> Vec<Op> {
    let mut written = HashSet::new();
    let mut unique = true;
    let mut observed = HashSet::new();
    for op in &ops {
        match op.kind {
            OpKind::Write { value } => unique &= written.insert(value),
            OpKind::Read { value: Some(value) } if op.ret.is_some() => {
                observed.insert(value);
            }
            OpKind::Read { .. } => {}
        }
    }
    ops.into_iter()
        .filter(|op| match op.kind {
            OpKind::Read { .. } => op.ret.is_some(),
            OpKind::Write { value } => op.ret.is_some() || !unique || observed.contains(&value),
        })
        .collect()
}

/// The register model: the state is the current value (None: absent). Returns the next state if `op`
/// may take effect in `state`.
fn step(state: Option<Value>, op: &Op) -> Option<Option<Value>> {
    match op.kind {
        OpKind::Write { value } => Some(Some(value)),
        OpKind::Read { value } => (value == state).then_some(state),
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
    fn ret(op: usize) -> usize {
        2 + 2 * op
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
                Events::ret(i)
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

/// Lowe's search on one register. Some(true): linearizable; Some(false): not; None: out of budget.
fn check_register(ops: &[Op], budget: u64) -> Option<bool> {
    let mut events = Events::new(ops);
    let words = ops.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, Option<Value>)> = HashSet::new();
    let mut stack: Vec<(usize, Option<Value>)> = Vec::new();
    let mut state: Option<Value> = None;
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
        if Events::is_call(entry) {
            let i = Events::op(entry);
            if let Some(next_state) = step(state, &ops[i]) {
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
            // A return whose call is still in the list: that op must have been linearized by now.
            let Some((call, prev_state)) = stack.pop() else {
                return Some(false);
            };
            let i = Events::op(call);
            linearized[i / 64] &= !(1 << (i % 64));
            state = prev_state;
            events.unlift(call);
            entry = events.next[call];
        }
    }
    Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    const BUDGET: u64 = 10_000_000;

    fn w(key: Key, value: Value, call: u64, ret: Option<u64>) -> Op {
        Op {
            client: 0,
            key,
            kind: OpKind::Write { value },
            call,
            ret,
        }
    }
    fn r(key: Key, value: Option<Value>, call: u64, ret: u64) -> Op {
        Op {
            client: 0,
            key,
            kind: OpKind::Read { value },
            call,
            ret: Some(ret),
        }
    }
    fn ok(history: &[Op]) -> bool {
        match check(history, BUDGET) {
            Outcome::Linearizable => true,
            Outcome::Illegal { .. } => false,
            Outcome::Inconclusive { .. } => panic!("inconclusive"),
        }
    }

    #[test]
    fn empty_and_sequential_histories_pass() {
        assert!(ok(&[]));
        assert!(ok(&[r(1, None, 0, 1)]));
        assert!(ok(&[
            w(1, 10, 0, Some(1)),
            r(1, Some(10), 2, 3),
            w(1, 11, 4, Some(5)),
            r(1, Some(11), 6, 7)
        ]));
    }

    #[test]
    fn stale_read_after_completed_write_is_rejected() {
        assert!(!ok(&[w(1, 10, 0, Some(1)), r(1, None, 2, 3)]));
        assert!(!ok(&[
            w(1, 10, 0, Some(1)),
            w(1, 11, 2, Some(3)),
            r(1, Some(10), 4, 5)
        ]));
    }

    #[test]
    fn read_of_a_value_never_written_is_rejected() {
        assert!(!ok(&[w(1, 10, 0, Some(1)), r(1, Some(99), 2, 3)]));
        assert!(!ok(&[r(1, Some(10), 0, 1)]));
    }

    #[test]
    fn read_before_the_write_is_invoked_cannot_see_it() {
        assert!(!ok(&[r(1, Some(10), 0, 1), w(1, 10, 2, Some(3))]));
    }

    #[test]
    fn concurrent_read_may_see_old_or_new() {
        assert!(ok(&[w(1, 10, 0, Some(10)), r(1, None, 5, 15)]));
        assert!(ok(&[w(1, 10, 0, Some(10)), r(1, Some(10), 5, 15)]));
    }

    #[test]
    fn new_then_old_inversion_is_rejected() {
        // A long write; one read sees it, a strictly later read does not: the write cannot un-happen.
        assert!(!ok(&[
            w(1, 10, 0, Some(100)),
            r(1, Some(10), 10, 20),
            r(1, None, 30, 40)
        ]));
        // The other order is fine.
        assert!(ok(&[
            w(1, 10, 0, Some(100)),
            r(1, None, 10, 20),
            r(1, Some(10), 30, 40)
        ]));
    }

    #[test]
    fn two_readers_disagreeing_on_order_of_two_writes_is_rejected() {
        // Writes 1 and 2 concurrent; reader A sees 1 then 2, reader B sees 2 then 1, all reads sequential
        // after both writes were invoked and overlapping pairwise in a way that forces a contradiction.
        let h = [
            w(1, 1, 0, Some(100)),
            w(1, 2, 0, Some(100)),
            r(1, Some(1), 10, 20),
            r(1, Some(2), 30, 40),
            r(1, Some(1), 50, 60),
        ];
        assert!(!ok(&h));
    }

    #[test]
    fn unknown_write_may_happen_or_not() {
        // Never observed: fine.
        assert!(ok(&[
            w(1, 10, 0, None),
            r(1, None, 5, 6),
            r(1, None, 50, 60)
        ]));
        // Observed late: fine (it took effect after the first read).
        assert!(ok(&[
            w(1, 10, 0, None),
            r(1, None, 5, 6),
            r(1, Some(10), 50, 60)
        ]));
        // Observed and then gone without another write: rejected.
        assert!(!ok(&[
            w(1, 10, 0, None),
            r(1, Some(10), 5, 6),
            r(1, None, 50, 60)
        ]));
        // Observed before it was invoked: rejected.
        assert!(!ok(&[r(1, Some(10), 0, 1), w(1, 10, 5, None)]));
    }

    #[test]
    fn unknown_write_cannot_take_effect_twice() {
        // 10 (unknown) then 11 (known), then a read of 10 again: 10 would have to be applied twice.
        let h = [
            w(1, 10, 0, None),
            r(1, Some(10), 5, 6),
            w(1, 11, 10, Some(11)),
            r(1, Some(10), 20, 21),
        ];
        assert!(!ok(&h));
    }

    #[test]
    fn reads_without_response_are_ignored() {
        let h = [
            w(1, 10, 0, Some(1)),
            Op {
                client: 0,
                key: 1,
                kind: OpKind::Read { value: Some(99) },
                call: 2,
                ret: None,
            },
        ];
        assert!(ok(&h));
    }

    #[test]
    fn keys_are_independent_and_each_is_checked() {
        assert!(ok(&[
            w(1, 10, 0, Some(1)),
            w(2, 20, 0, Some(1)),
            r(1, Some(10), 2, 3),
            r(2, Some(20), 2, 3)
        ]));
        match check(
            &[
                w(1, 10, 0, Some(1)),
                r(1, Some(10), 2, 3),
                w(2, 20, 0, Some(1)),
                r(2, None, 2, 3),
            ],
            BUDGET,
        ) {
            Outcome::Illegal { key, ops } => {
                assert_eq!(key, 2);
                assert_eq!(ops.len(), 2);
            }
            other => panic!("expected illegal, got {other:?}"),
        }
    }

    #[test]
    fn budget_exhaustion_is_reported_not_guessed() {
        let h: Vec<Op> = (0..20)
            .map(|i| w(1, i, 0, Some(100)))
            .chain([r(1, Some(999), 200, 201)])
            .collect();
        assert_eq!(check(&h, 5), Outcome::Inconclusive { key: 1 });
    }

    /// A history produced by a real atomic register (each op takes effect at one instant between its
    /// call and return) is always accepted, including with unknown outcomes.
    #[test]
    fn random_histories_of_an_atomic_register_pass() {
        let mut rng = Rng::new(1);
        for _ in 0..300 {
            let h = atomic_history(&mut rng, 40, 4);
            assert!(ok(&h), "{h:?}");
        }
    }

    /// Cross-check against brute force on small random histories, linearizable or not.
    #[test]
    fn agrees_with_brute_force_on_small_histories() {
        let mut rng = Rng::new(2);
        let (mut yes, mut no) = (0, 0);
        for _ in 0..3000 {
            let n = rng.range(1, 6) as usize;
            let unique = rng.chance(500_000);
            let mut h = Vec::new();
            for _ in 0..n {
                let call = rng.below(20);
                let ret = if rng.chance(150_000) {
                    None
                } else {
                    Some(call + rng.below(10))
                };
                let kind = if rng.chance(500_000) {
                    // Half the histories have unique write values (the pruning rule applies to those).
                    OpKind::Write {
                        value: if unique {
                            h.len() as u64 + 1
                        } else {
                            rng.range(1, 3)
                        },
                    }
                } else {
                    let v = rng.below(if unique { n as u64 + 1 } else { 4 });
                    OpKind::Read {
                        value: (v > 0).then_some(v),
                    }
                };
                h.push(Op {
                    client: 0,
                    key: 7,
                    kind,
                    call,
                    ret,
                });
            }
            let expected = brute_force(&h);
            assert_eq!(ok(&h), expected, "{h:?}");
            if expected {
                yes += 1
            } else {
                no += 1
            }
        }
        assert!(
            yes > 300 && no > 300,
            "both verdicts are exercised: {yes} {no}"
        );
    }

    fn atomic_history(rng: &mut Rng, ops: usize, clients: u64) -> Vec<Op> {
        // Each client runs ops back to back; an op's effect happens at a random instant inside it.
        let mut events: Vec<(u64, u64, usize)> = Vec::new(); // (effect time, client, op index)
        let mut h = Vec::new();
        let mut next_free = vec![0u64; clients as usize];
        let mut value = 0;
        for i in 0..ops {
            let c = rng.below(clients);
            let call = next_free[c as usize] + rng.below(5);
            let ret = call + 1 + rng.below(30);
            next_free[c as usize] = ret + 1;
            let at = rng.range(call, ret);
            let kind = if rng.chance(500_000) {
                value += 1;
                OpKind::Write { value }
            } else {
                OpKind::Read { value: None }
            };
            h.push(Op {
                client: c,
                key: 1,
                kind,
                call: call * 2,
                ret: Some(ret * 2 + 1),
            });
            events.push((at, rng.next_u64(), i));
        }
        events.sort_unstable();
        let mut state = None;
        for (_, _, i) in events {
            match &mut h[i].kind {
                OpKind::Write { value } => state = Some(*value),
                OpKind::Read { value } => *value = state,
            }
        }
        // Some writes lose their response; their effect still happened.
        for op in &mut h {
            if matches!(op.kind, OpKind::Write { .. }) && rng.chance(100_000) {
                op.ret = None;
            }
        }
        h
    }

    /// Tries every order of every subset of unknown writes (plus all known ops).
    fn brute_force(h: &[Op]) -> bool {
        let ops: Vec<Op> = h
            .iter()
            .filter(|op| op.ret.is_some() || matches!(op.kind, OpKind::Write { .. }))
            .copied()
            .collect();
        let mut used = vec![false; ops.len()];
        search(&ops, &mut used, None)
    }

    fn search(ops: &[Op], used: &mut [bool], state: Option<Value>) -> bool {
        // Done when every op with a known return is placed (unknown writes may be left out).
        if ops
            .iter()
            .zip(used.iter())
            .all(|(op, u)| *u || op.ret.is_none())
        {
            return true;
        }
        // The next op must not be preceded (in real time) by an unplaced op with a known return.
        let min_ret = ops
            .iter()
            .zip(used.iter())
            .filter(|(op, u)| !**u && op.ret.is_some())
            .map(|(op, _)| op.ret.unwrap())
            .min()
            .unwrap();
        for i in 0..ops.len() {
            if used[i] || ops[i].call > min_ret {
                continue;
            }
            if let Some(next) = step(state, &ops[i]) {
                used[i] = true;
                let found = search(ops, used, next);
                used[i] = false;
                if found {
                    return true;
                }
            }
        }
        false
    }
}

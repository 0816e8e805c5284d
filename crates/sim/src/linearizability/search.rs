//! Lowe's improvement of the Wing–Gong search over one group's sub-history: calls and returns form a
//! doubly linked list in time order; the search repeatedly linearizes the earliest call it can, and
//! backtracks when it meets a return whose call has not been linearized yet; a cache of
//! (linearized set, state) pairs already explored keeps it from revisiting a configuration. An
//! operation may leave more than one state (a key it touches may or may not have expired): each is
//! tried in turn.

use std::collections::{HashMap, HashSet};

use super::model::{Group, State};
use super::Op;

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

/// For each op, the connection's previous op in the group with a known outcome, which must take
/// effect first (a server takes effect a connection's requests in the order sent, whatever keys they
/// touch: docs/protocol.md).
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

/// For each op applied at a known log index, the op applied at the next lower index in the group:
/// writes take effect in index order, so it must be linearized first. (The model rejects the other
/// order too, but only when the lower write comes to be placed; with writes sent long before they
/// were applied that can be hundreds of events later, and the search explodes in between.)
fn index_predecessors(ops: &[Op]) -> Vec<Option<usize>> {
    let mut by_index: Vec<(u64, usize)> = ops
        .iter()
        .enumerate()
        // Only ops that must take effect (an op of unknown outcome may never have).
        .filter(|(_, op)| op.ret.is_some())
        .filter_map(|(i, op)| Some((op.index?, i)))
        .collect();
    by_index.sort_unstable();
    let mut pred = vec![None; ops.len()];
    for pair in by_index.windows(2) {
        pred[pair[1].1] = Some(pair[0].1);
    }
    pred
}

struct Bits(Vec<u64>);

impl Bits {
    fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    fn set(&mut self, i: usize, on: bool) {
        match on {
            true => self.0[i / 64] |= 1 << (i % 64),
            false => self.0[i / 64] &= !(1 << (i % 64)),
        }
    }
}

/// The search on one group. Some(true): linearizable; Some(false): not; None: out of budget.
pub(super) fn search(ops: &[Op], group: &Group, budget: u64) -> Option<bool> {
    let mut events = Events::new(ops);
    let pred = predecessors(ops);
    let index_pred = index_predecessors(ops);
    let mut linearized = Bits(vec![0u64; ops.len().div_ceil(64)]);
    let mut cache: HashSet<(Vec<u64>, State)> = HashSet::new();
    // (call linearized, state before it, which of its successor states was taken)
    let mut stack: Vec<(usize, State, usize)> = Vec::new();
    let mut state = State::INITIAL;
    let mut entry = events.next[HEAD];
    let mut steps = 0u64;
    // Linearizes the op of `call` from `state`, trying its successor states from `first` on.
    let mut take = |call: usize,
                    first: usize,
                    state: &mut State,
                    linearized: &mut Bits,
                    stack: &mut Vec<(usize, State, usize)>|
     -> bool {
        let i = Events::op(call);
        let successors = group.successors(*state, &ops[i]);
        linearized.set(i, true);
        for (branch, next) in successors.into_iter().enumerate().skip(first) {
            if cache.insert((linearized.0.clone(), next)) {
                stack.push((call, *state, branch));
                *state = next;
                return true;
            }
        }
        linearized.set(i, false);
        false
    };
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
            let ordered = pred[i].is_none_or(|p| linearized.get(p))
                && index_pred[i].is_none_or(|p| linearized.get(p));
            if ordered && take(entry, 0, &mut state, &mut linearized, &mut stack) {
                events.lift(entry);
                entry = events.next[HEAD];
                continue;
            }
            entry = events.next[entry];
        } else {
            if ops[i].ret.is_none() {
                // Only operations of unknown outcome are left (their returns sort last): each may
                // never have happened.
                return Some(true);
            }
            // A return whose call is still in the list: that op must have been linearized by now.
            let Some((call, prev_state, branch)) = stack.pop() else {
                return Some(false);
            };
            linearized.set(Events::op(call), false);
            state = prev_state;
            events.unlift(call);
            if take(call, branch + 1, &mut state, &mut linearized, &mut stack) {
                events.lift(call);
                entry = events.next[HEAD];
                continue;
            }
            entry = events.next[call];
        }
    }
    Some(true)
}

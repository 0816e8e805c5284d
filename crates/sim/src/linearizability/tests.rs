//! The checker on known histories, and against a brute-force search on random small ones.

use super::model::{Group, State};
use super::*;
use crate::rng::Rng;

const BUDGET: u64 = 10_000_000;

fn op(conn: u64, kind: OpKind, call: u64, ret: Option<u64>) -> Op {
    Op {
        conn,
        key: 1,
        kind,
        call,
        ret,
        index: None,
    }
}
fn set(write: WriteId, ttl_s: u32, version: u64, call: u64, ret: u64) -> Op {
    let kind = OpKind::Set {
        write,
        ttl_s,
        version: Some(version),
    };
    op(write, kind, call, Some(ret))
}
fn set_unknown(write: WriteId, call: u64) -> Op {
    let kind = OpKind::Set {
        write,
        ttl_s: 0,
        version: None,
    };
    op(write, kind, call, None)
}
fn get(value: Option<WriteId>, call: u64, ret: u64) -> Op {
    let value = value.map(Value::Write);
    op(100 + call, OpKind::Get { value }, call, Some(ret))
}
fn cas(write: WriteId, expected: u64, outcome: CasOutcome, call: u64, ret: u64) -> Op {
    let version = (outcome == CasOutcome::Ok).then_some(1000 + write);
    let kind = OpKind::Cas {
        write,
        ttl_s: 0,
        expected,
        outcome: Some(outcome),
        version,
    };
    op(write, kind, call, Some(ret))
}
fn ok(history: &[Op]) -> bool {
    let verdict = check(history, BUDGET);
    assert!(!verdict.inconclusive(), "inconclusive: {verdict}");
    !verdict.illegal()
}

#[test]
fn empty_and_sequential_histories_pass() {
    assert!(ok(&[]));
    assert!(ok(&[get(None, 0, 1)]));
    assert!(ok(&[
        set(10, 0, 1, 0, 1),
        get(Some(10), 2, 3),
        set(11, 0, 2, 4, 5),
        get(Some(11), 6, 7)
    ]));
}

#[test]
fn stale_read_after_completed_write_is_rejected() {
    assert!(!ok(&[set(10, 0, 1, 0, 1), get(None, 2, 3)]));
    assert!(!ok(&[
        set(10, 0, 1, 0, 1),
        set(11, 0, 2, 2, 3),
        get(Some(10), 4, 5)
    ]));
}

#[test]
fn read_of_a_value_never_written_or_not_yet_written_is_rejected() {
    assert!(!ok(&[set(10, 0, 1, 0, 1), get(Some(99), 2, 3)]));
    assert!(!ok(&[get(Some(10), 0, 1), set(10, 0, 1, 2, 3)]));
}

#[test]
fn concurrent_read_may_see_old_or_new() {
    assert!(ok(&[set(10, 0, 1, 0, 10), get(None, 5, 15)]));
    assert!(ok(&[set(10, 0, 1, 0, 10), get(Some(10), 5, 15)]));
}

#[test]
fn new_then_old_inversion_is_rejected() {
    assert!(!ok(&[
        set(10, 0, 1, 0, 100),
        get(Some(10), 10, 20),
        get(None, 30, 40)
    ]));
    assert!(ok(&[
        set(10, 0, 1, 0, 100),
        get(None, 10, 20),
        get(Some(10), 30, 40)
    ]));
}

#[test]
fn an_expiring_key_may_vanish_but_never_come_back() {
    // The clock-skew bug: a fast leader says expired, a slow one says live again.
    assert!(ok(&[set(10, 2, 1, 0, 1), get(None, 2, 3)]));
    assert!(!ok(&[
        set(10, 2, 1, 0, 1),
        get(None, 2, 3),
        get(Some(10), 4, 5)
    ]));
    // ... and a cas on it after it expired cannot succeed.
    assert!(!ok(&[
        set(10, 2, 1, 0, 1),
        get(None, 2, 3),
        cas(11, 1, CasOutcome::Ok, 4, 5)
    ]));
    // A key without expiry never vanishes by itself.
    assert!(!ok(&[set(10, 0, 1, 0, 1), get(None, 2, 3)]));
}

#[test]
fn cas_needs_the_current_version() {
    assert!(ok(&[set(10, 0, 1, 0, 1), cas(11, 1, CasOutcome::Ok, 2, 3)]));
    assert!(!ok(&[
        set(10, 0, 1, 0, 1),
        cas(11, 7, CasOutcome::Ok, 2, 3)
    ]));
    assert!(!ok(&[
        set(10, 0, 1, 0, 1),
        cas(11, 1, CasOutcome::VersionMismatch, 2, 3)
    ]));
    assert!(!ok(&[cas(11, 1, CasOutcome::Ok, 0, 1)]));
    assert!(ok(&[cas(11, 1, CasOutcome::NotFound, 0, 1)]));
    // The same write seen with two versions, or one version for two writes, is illegal outright.
    let getm = |write, version, call| {
        op(
            50 + call,
            OpKind::Getm {
                value: Some((Value::Write(write), version, 0)),
            },
            call,
            Some(call + 1),
        )
    };
    assert!(!ok(&[set(10, 0, 1, 0, 1), getm(10, 2, 2)]));
    assert!(!ok(&[set(10, 0, 1, 0, 1), set(11, 0, 1, 2, 3)]));
}

#[test]
fn getm_reports_remaining_seconds_within_the_ttl() {
    let getm = |remaining| {
        op(
            9,
            OpKind::Getm {
                value: Some((10.into(), 1, remaining)),
            },
            2,
            Some(3),
        )
    };
    assert!(ok(&[set(10, 5, 1, 0, 1), getm(5)]));
    assert!(ok(&[set(10, 5, 1, 0, 1), getm(1)]));
    assert!(!ok(&[set(10, 5, 1, 0, 1), getm(6)]));
    assert!(!ok(&[set(10, 5, 1, 0, 1), getm(0)]));
    assert!(!ok(&[set(10, 0, 1, 0, 1), getm(3)]));
}

#[test]
fn delete_removes_and_reports() {
    let delete = |deleted, call, ret| op(7, OpKind::Delete { deleted }, call, ret);
    assert!(ok(&[set(10, 0, 1, 0, 1), delete(Some(true), 2, Some(3))]));
    assert!(!ok(&[set(10, 0, 1, 0, 1), delete(Some(false), 2, Some(3))]));
    assert!(!ok(&[delete(Some(true), 0, Some(1))]));
    assert!(!ok(&[
        set(10, 0, 1, 0, 1),
        delete(Some(true), 2, Some(3)),
        get(Some(10), 4, 5)
    ]));
    // An unknown delete may or may not have happened.
    assert!(ok(&[
        set(10, 0, 1, 0, 1),
        delete(None, 2, None),
        get(Some(10), 4, 5)
    ]));
    assert!(ok(&[
        set(10, 0, 1, 0, 1),
        delete(None, 2, None),
        get(None, 4, 5)
    ]));
}

fn set_with(
    write: WriteId,
    condition: SetCondition,
    wrote: bool,
    old: Option<Option<WriteId>>,
    call: u64,
    ret: u64,
) -> Op {
    let kind = OpKind::SetWith {
        write,
        ttl_s: 0,
        keep_ttl: false,
        condition,
        get: old.is_some(),
        wrote: Some(wrote),
        old: old.map(|old| old.map(Value::Write)),
        version: None,
    };
    op(write, kind, call, Some(ret))
}

/// Redis's SET NX/XX/GET: the condition is judged on the key as it was, GET reports it.
#[test]
fn set_with_conditions_and_get_follow_the_key() {
    use SetCondition::*;
    // NX writes only an absent key; XX only a live one.
    assert!(ok(&[
        set_with(10, IfAbsent, true, None, 0, 1),
        get(Some(10), 2, 3)
    ]));
    assert!(!ok(&[
        set(10, 0, 1, 0, 1),
        set_with(11, IfAbsent, true, None, 2, 3)
    ]));
    assert!(ok(&[
        set(10, 0, 1, 0, 1),
        set_with(11, IfAbsent, false, None, 2, 3),
        get(Some(10), 4, 5)
    ]));
    assert!(!ok(&[set_with(11, IfPresent, true, None, 0, 1)]));
    assert!(!ok(&[
        set(10, 0, 1, 0, 1),
        set_with(11, IfPresent, false, None, 2, 3)
    ]));
    // A refused write leaves the old value; a written one replaces it.
    assert!(!ok(&[
        set(10, 0, 1, 0, 1),
        set_with(11, IfAbsent, false, None, 2, 3),
        get(Some(11), 4, 5)
    ]));
    // GET answers the value it replaced, which must be the one there.
    assert!(ok(&[
        set(10, 0, 1, 0, 1),
        set_with(11, Always, true, Some(Some(10)), 2, 3),
        get(Some(11), 4, 5)
    ]));
    assert!(!ok(&[
        set(10, 0, 1, 0, 1),
        set_with(11, Always, true, Some(None), 2, 3)
    ]));
    assert!(!ok(&[
        set(10, 0, 1, 0, 1),
        set(12, 0, 2, 2, 3),
        set_with(11, Always, true, Some(Some(10)), 4, 5)
    ]));
}

/// GETDEL takes the value there and leaves the key absent.
#[test]
fn getdel_takes_the_value_and_deletes() {
    let getdel = |value: Option<Option<WriteId>>, call, ret| {
        let value = value.map(|value| value.map(Value::Write));
        op(7, OpKind::GetDel { value }, call, ret)
    };
    assert!(ok(&[
        set(10, 0, 1, 0, 1),
        getdel(Some(Some(10)), 2, Some(3)),
        get(None, 4, 5)
    ]));
    assert!(!ok(&[
        set(10, 0, 1, 0, 1),
        getdel(Some(Some(10)), 2, Some(3)),
        get(Some(10), 4, 5)
    ]));
    assert!(!ok(&[set(10, 0, 1, 0, 1), getdel(Some(None), 2, Some(3))]));
    assert!(!ok(&[getdel(Some(Some(10)), 0, Some(1))]));
    // Unknown: it may have taken the value, or not happened.
    assert!(ok(&[
        set(10, 0, 1, 0, 1),
        getdel(None, 2, None),
        get(Some(10), 4, 5)
    ]));
    assert!(ok(&[
        set(10, 0, 1, 0, 1),
        getdel(None, 2, None),
        get(None, 4, 5)
    ]));
}

#[test]
fn unknown_write_may_happen_or_not_but_only_once_and_only_after_its_call() {
    assert!(ok(&[
        set_unknown(10, 0),
        get(None, 1, 2),
        get(Some(10), 3, 4)
    ]));
    assert!(ok(&[set_unknown(10, 0), get(None, 1, 2)]));
    assert!(!ok(&[get(Some(10), 0, 1), set_unknown(10, 2)]));
    assert!(!ok(&[
        set_unknown(10, 0),
        get(Some(10), 1, 2),
        set(11, 0, 2, 3, 4),
        get(Some(10), 5, 6)
    ]));
}

#[test]
fn a_connection_s_operations_take_effect_in_order() {
    // One connection pipelines `set` then `get`: both in flight together, the get must see the set.
    let pipelined_set = op(
        1,
        OpKind::Set {
            write: 10,
            ttl_s: 0,
            version: Some(1),
        },
        0,
        Some(5),
    );
    let pipelined_get = op(1, OpKind::Get { value: None }, 1, Some(6));
    assert!(!ok(&[pipelined_set, pipelined_get]));
    let other_connection = Op {
        conn: 2,
        ..pipelined_get
    };
    assert!(ok(&[pipelined_set, other_connection]));
}

#[test]
fn every_key_is_checked_and_an_illegal_key_fails_even_after_a_legal_one() {
    let mut bad = get(Some(42), 0, 1);
    bad.key = 7;
    let history = [set(10, 0, 1, 0, 1), bad];
    let verdict = check(&history, BUDGET);
    assert!(matches!(verdict.outcome, Outcome::Illegal { key: 7, .. }));
}

#[test]
fn budget_exhaustion_is_counted_and_the_other_keys_still_checked() {
    let mut history: Vec<Op> = (0..40)
        .map(|i| {
            let mut o = set_unknown(i, 0);
            o.kind = OpKind::Set {
                write: i,
                ttl_s: 0,
                version: None,
            };
            o
        })
        .collect();
    history.extend((0..40).map(|i| get(Some(i), 1 + i, 100 + i)));
    let mut bad = get(Some(999), 0, 1);
    bad.key = 2;
    history.push(bad);
    let verdict = check(&history, 50);
    assert_eq!(verdict.inconclusive_keys, vec![1]);
    assert!(verdict.illegal(), "key 2 is checked too: {verdict}");
}

/// MSET is atomic across keys: a reader that sees one key written and, after that, the other key
/// not yet written has seen it torn. Each key's sub-history alone would pass; the two keys are
/// checked together because the MSET joins them.
#[test]
fn a_torn_mset_is_rejected_though_each_key_alone_would_pass() {
    let on = |key: Key, conn, kind, call, ret: Option<u64>| Op {
        conn,
        key,
        kind,
        call,
        ret,
        index: None,
    };
    let mset = on(
        1,
        1,
        OpKind::MSet {
            write: 10,
            other: 2,
            nx: false,
            wrote: Some(true),
            version: None,
        },
        0,
        Some(10),
    );
    let read_1 = on(
        1,
        2,
        OpKind::Get {
            value: Some(10.into()),
        },
        1,
        Some(2),
    );
    let read_2 = on(2, 3, OpKind::Get { value: None }, 3, Some(4));
    assert!(!ok(&[mset, read_1, read_2]));
    assert_eq!(groups(&[mset, read_1, read_2]).len(), 1);
    // Either read alone, or both in the other order, is fine.
    assert!(ok(&[mset, read_1]) && ok(&[mset, read_2]));
    let read_2_first = Op {
        call: 0,
        ret: Some(1),
        ..read_2
    };
    assert!(ok(&[
        mset,
        read_2_first,
        Op {
            call: 2,
            ret: Some(3),
            ..read_1
        }
    ]));
    // A connection's requests take effect in the order sent, whatever keys they touch: a read of
    // key 2 pipelined after the MSET on its connection must see it.
    let pipelined = Op {
        conn: 1,
        call: 1,
        ret: Some(11),
        ..read_2
    };
    assert!(!ok(&[mset, pipelined]));
    assert!(ok(&[
        mset,
        Op {
            conn: 4,
            ..pipelined
        }
    ]));
}

/// RENAME moves the value and its lifetime; MULTI/EXEC applies its steps at one point, unless a key
/// watched while absent exists by then.
#[test]
fn rename_and_transactions_follow_the_keys() {
    let at = |key: Key, kind, call| Op {
        conn: call,
        key,
        kind,
        call,
        ret: Some(call + 1),
        index: None,
    };
    let rename = |outcome| OpKind::Rename {
        write: 20,
        to: 2,
        nx: true,
        outcome: Some(outcome),
        version: None,
    };
    let get = |value: Option<WriteId>| OpKind::Get {
        value: value.map(Value::Write),
    };
    let history = [
        set(10, 0, 1, 0, 1),
        at(1, rename(RenameOutcome::Moved), 2),
        at(1, get(None), 4),
        at(2, get(Some(10)), 6),
    ];
    assert!(ok(&history));
    let mut kept_source = history;
    kept_source[2] = at(1, get(Some(10)), 4);
    assert!(!ok(&kept_source));
    assert!(!ok(&[at(1, rename(RenameOutcome::Moved), 0)]));
    let tx = |aborted, seen: Option<WriteId>| {
        let step = |key, action| TxStep { key, action };
        OpKind::Tx(Tx {
            write: 30,
            watch: Some((2, 0)),
            steps: [
                step(1, TxAction::Set),
                step(
                    2,
                    TxAction::Get {
                        value: Some(seen.map(Value::Write)),
                    },
                ),
                step(1, TxAction::Incr { result: Some(None) }),
            ],
            len: 3,
            aborted: Some(aborted),
            version: None,
        })
    };
    assert!(ok(&[at(1, tx(false, None), 0), at(1, get(Some(30)), 2)]));
    // With key 2 live, EXEC must abort and change nothing.
    let key_2 = Op {
        key: 2,
        ..set(11, 0, 1, 0, 1)
    };
    assert!(ok(&[key_2, at(1, tx(true, None), 2), at(1, get(None), 4)]));
    assert!(!ok(&[key_2, at(1, tx(false, Some(11)), 2)]));
    assert!(!ok(&[at(1, tx(true, None), 0)]));
}

// ----- Cross-checks -------------------------------------------------------------------------------

/// A sequential key-value store run at random points inside each op's interval: always linearizable.
fn atomic_history(rng: &mut Rng, ops: usize, conns: u64) -> Vec<Op> {
    // Each op: (call, point, ret); the effect happens at `point`, in point order.
    let mut timed: Vec<(u64, u64, u64, usize)> = (0..ops)
        .map(|i| {
            let call = rng.range(0, 100);
            let point = call + rng.range(0, 20);
            (call, point, point + rng.range(0, 20), i)
        })
        .collect();
    timed.sort_by_key(|t| t.1);
    let mut state: Option<(WriteId, u64, u32)> = None;
    let mut history = Vec::new();
    let mut next_version = 1;
    for (n, (call, _, ret, i)) in timed.into_iter().enumerate() {
        let write = 1000 + i as u64;
        let known = rng.chance(800_000);
        // Expire nondeterministically, as a replicated clock would.
        if state.is_some_and(|s| s.2 > 0) && rng.chance(200_000) {
            state = None;
        }
        let kind = match rng.below(7) {
            0 => {
                let ttl_s = [0, 0, 3][rng.index(3)];
                next_version += 1;
                state = Some((write, next_version, ttl_s));
                OpKind::Set {
                    write,
                    ttl_s,
                    version: known.then_some(next_version),
                }
            }
            1 => {
                let expected = match state {
                    Some(s) if rng.chance(600_000) => s.1,
                    _ => rng.range(1, next_version + 1),
                };
                let outcome = match state {
                    None => CasOutcome::NotFound,
                    Some(s) if s.1 != expected => CasOutcome::VersionMismatch,
                    Some(_) => {
                        next_version += 1;
                        state = Some((write, next_version, 0));
                        CasOutcome::Ok
                    }
                };
                OpKind::Cas {
                    write,
                    ttl_s: 0,
                    expected,
                    outcome: known.then_some(outcome),
                    version: (known && outcome == CasOutcome::Ok).then_some(next_version),
                }
            }
            2 => {
                let deleted = state.take().is_some();
                OpKind::Delete {
                    deleted: known.then_some(deleted),
                }
            }
            3 => OpKind::Get {
                value: state.map(|s| s.0.into()),
            },
            4 => {
                let condition = SET_CONDITIONS[rng.index(3)];
                let get = rng.chance(500_000);
                let ttl_s = [0, 0, 3][rng.index(3)];
                let old = state.map(|s| s.0);
                let writes = match condition {
                    SetCondition::Always => true,
                    SetCondition::IfAbsent => state.is_none(),
                    SetCondition::IfPresent => state.is_some(),
                };
                if writes {
                    next_version += 1;
                    state = Some((write, next_version, ttl_s));
                }
                OpKind::SetWith {
                    write,
                    ttl_s,
                    keep_ttl: false,
                    condition,
                    get,
                    wrote: known.then_some(writes),
                    old: (known && get).then_some(old.map(Value::Write)),
                    version: (known && writes && !get).then_some(next_version),
                }
            }
            5 => OpKind::GetDel {
                value: known.then_some(state.take().map(|s| s.0.into())),
            },
            _ => OpKind::Getm {
                value: state.map(|s| (s.0.into(), s.1, u64::from(s.2))),
            },
        };
        let is_read = matches!(kind, OpKind::Get { .. } | OpKind::Getm { .. });
        history.push(Op {
            conn: n as u64 % conns + 100,
            key: 1,
            kind,
            call,
            ret: (known || is_read).then_some(ret),
            index: None,
        });
    }
    // Distinct connections per op, so only real time constrains the order.
    for (i, op) in history.iter_mut().enumerate() {
        op.conn = i as u64;
    }
    history
}

#[test]
fn random_histories_of_an_atomic_store_pass() {
    let mut rng = Rng::new(7);
    for round in 0..2_000 {
        let history = atomic_history(&mut rng, 8, 3);
        assert!(ok(&history), "round {round}: {history:#?}");
    }
}

#[test]
fn agrees_with_brute_force_on_small_histories() {
    let mut rng = Rng::new(11);
    let mut illegal = 0;
    for round in 0..3_000 {
        let mut history = atomic_history(&mut rng, 5, 3);
        // Corrupt some: move a call or change what a read saw.
        if rng.chance(600_000) {
            let i = rng.index(history.len());
            match &mut history[i].kind {
                OpKind::Get { value } => {
                    *value = if value.is_some() {
                        None
                    } else {
                        Some(1000.into())
                    }
                }
                _ => history[i].call = history[i].call.saturating_sub(rng.range(0, 40)),
            }
        }
        let facts = Facts::gather(&history);
        let expected = facts.as_ref().is_ok_and(|f| brute_force(&history, f));
        let got = ok(&history);
        illegal += u32::from(!got);
        assert_eq!(got, expected, "round {round}: {history:#?}");
    }
    assert!(illegal > 100, "the corruptions make some histories illegal");
}

/// Every order consistent with real time, each unknown op taken or not (the histories drawn here
/// give each op its own connection).
fn brute_force(ops: &[Op], facts: &Facts) -> bool {
    let keys: Vec<Key> = groups(ops).into_iter().flat_map(|(keys, _)| keys).collect();
    let group = Group::new(&keys, facts, None);
    let mut used = vec![false; ops.len()];
    explore(ops, &group, &mut used, State::INITIAL)
}

fn explore(ops: &[Op], group: &Group, used: &mut [bool], state: State) -> bool {
    let pending: Vec<usize> = (0..ops.len())
        .filter(|&i| !used[i] && ops[i].ret.is_some())
        .collect();
    if pending.is_empty() {
        return true;
    }
    for i in 0..ops.len() {
        if used[i] {
            continue;
        }
        // i may go next only if no unused known op returned before i was called.
        let blocked = (0..ops.len())
            .any(|j| !used[j] && j != i && ops[j].ret.is_some_and(|ret| ret < ops[i].call));
        if blocked {
            continue;
        }
        for next in group.successors(state, &ops[i]) {
            used[i] = true;
            if explore(ops, group, used, next) {
                used[i] = false;
                return true;
            }
            used[i] = false;
        }
    }
    false
}

/// A lifetime the clocks cannot have run through during the history is not the model's to expire:
/// with lifetimes of 30 s known to last, a key written for 40 s read as absent is illegal, one written
/// for 20 s is not.
#[test]
fn a_lifetime_known_to_last_never_runs_out() {
    let lasting = |ops: &[Op]| !check_with(ops, BUDGET, Some(30)).illegal();
    assert!(!lasting(&[set(10, 40, 1, 0, 1), get(None, 2, 3)]));
    assert!(lasting(&[set(10, 20, 1, 0, 1), get(None, 2, 3)]));
    assert!(ok(&[set(10, 40, 1, 0, 1), get(None, 2, 3)]));
}

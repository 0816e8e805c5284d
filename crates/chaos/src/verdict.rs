//! What a history says: linearizable or not (the simulator's checker, every key), which acknowledged
//! writes are missing from the final reads, and how long the cluster took to answer again after each
//! heal. Works the same on a live run and on a history file (`--check`).

use std::collections::BTreeMap;

use raftkv_sim::linearizability::{self, CasOutcome, Key, Op, OpKind, Outcome, Verdict};

use crate::history::{key_name, History, FINAL_CONN, LEDGER_BASE};

/// Search steps allowed per key before it counts as inconclusive.
pub const CHECK_BUDGET: u64 = 20_000_000;

/// Checks the whole history for linearizability.
pub fn linearizable(history: &History) -> Verdict {
    linearizability::check(&history.ops, CHECK_BUDGET)
}

/// The offending key's smallest sub-history that is still illegal, for printing.
pub fn shrunk(verdict: &Verdict) -> Option<(Key, Vec<Op>)> {
    match &verdict.outcome {
        Outcome::Illegal { key, ops, .. } => {
            Some((*key, linearizability::shrink(ops, CHECK_BUDGET)))
        }
        Outcome::Linearizable => None,
    }
}

/// Acknowledged writes that the final reads do not show, one line each.
///
/// A ledger key whose `set` was acknowledged must read back that write. A register must read back a
/// version at least as new as the newest acknowledged write to it; it may read as absent only if it
/// could have been deleted or expired (some `delete` or some write with a lifetime was sent to it).
pub fn lost_writes(history: &History) -> Vec<String> {
    let mut by_key: BTreeMap<Key, Vec<&Op>> = BTreeMap::new();
    for op in &history.ops {
        by_key.entry(op.key).or_default().push(op);
    }
    let mut lost = Vec::new();
    for (key, ops) in by_key {
        let Some(last_read) = ops.iter().rev().find(|op| op.conn == FINAL_CONN) else {
            continue;
        };
        let acked: Vec<(u64, u64)> = ops
            .iter()
            .filter(|op| op.ret.is_some())
            .filter_map(|op| match op.kind {
                OpKind::Set {
                    write,
                    version: Some(v),
                    ..
                }
                | OpKind::Cas {
                    write,
                    outcome: Some(CasOutcome::Ok),
                    version: Some(v),
                    ..
                } => Some((v, write)),
                _ => None,
            })
            .collect();
        let Some(&(newest, newest_write)) = acked.iter().max() else {
            continue;
        };
        let name = key_name(key);
        if key >= LEDGER_BASE {
            if last_read.kind
                != (OpKind::Get {
                    value: Some(newest_write.into()),
                })
            {
                lost.push(format!(
                    "{name}: write {newest_write} acknowledged at version {newest}, final read {:?}",
                    last_read.kind
                ));
            }
            continue;
        }
        // Only a delete or an expiring write that may have taken effect after the newest
        // acknowledged write (it had not returned before that write was sent) explains absence.
        let newest_call = ops
            .iter()
            .filter(|op| op.kind.version() == Some(newest) && op.ret.is_some())
            .map(|op| op.call)
            .min()
            .unwrap_or(0);
        let may_vanish = ops
            .iter()
            .filter(|op| op.ret.is_none_or(|ret| ret >= newest_call))
            .any(|op| match op.kind {
                OpKind::Delete { deleted } => deleted != Some(false),
                OpKind::Set { ttl_s, .. } | OpKind::Cas { ttl_s, .. } => ttl_s > 0,
                _ => false,
            });
        match last_read.kind {
            OpKind::Getm {
                value: Some((_, version, _)),
            } if version < newest => lost.push(format!(
                "{name}: version {newest} acknowledged, final read shows older version {version}"
            )),
            OpKind::Getm { value: None } if !may_vanish => lost.push(format!(
                "{name}: version {newest} acknowledged and never deleted, final read finds nothing"
            )),
            _ => {}
        }
    }
    lost
}

/// Violations of the one order of versions over all keys (each a line): versions are log indexes, so
/// no version may be acknowledged to two writes, and a write acknowledged before another was sent
/// must have the smaller version.
pub fn version_order(history: &History) -> Vec<String> {
    let mut acked: Vec<&Op> = history
        .ops
        .iter()
        .filter(|op| op.ret.is_some() && matches!(op.kind, OpKind::Set { .. } | OpKind::Cas { .. }))
        .filter(|op| op.kind.version().is_some())
        .collect();
    let mut problems = Vec::new();
    let mut owners: std::collections::HashMap<u64, &Op> = Default::default();
    for op in &acked {
        let version = op.kind.version().unwrap_or_default();
        if let Some(other) = owners.insert(version, op) {
            problems.push(format!(
                "version {version} acknowledged twice: {other:?} and {op:?}"
            ));
        }
    }
    // Sweep by call time, knowing the newest version among writes that returned before it.
    let mut by_return = acked.clone();
    by_return.sort_by_key(|op| op.ret);
    acked.sort_by_key(|op| op.call);
    let mut returned = by_return.iter().peekable();
    let mut newest: Option<&Op> = None;
    for op in acked {
        while let Some(done) = returned.next_if(|done| done.ret.is_some_and(|ret| ret < op.call)) {
            if newest.is_none_or(|n| n.kind.version() < done.kind.version()) {
                newest = Some(done);
            }
        }
        if let Some(before) = newest.filter(|n| n.kind.version() >= op.kind.version()) {
            problems.push(format!(
                "{op:?} was sent after {before:?} was acknowledged, yet has an older version"
            ));
        }
    }
    problems
}

/// When the clients' operations got their definite answers (the final reads left out), in order.
fn answer_times(history: &History) -> Vec<u64> {
    let mut answered: Vec<u64> = history
        .ops
        .iter()
        .filter(|op| op.conn != FINAL_CONN)
        .filter_map(|op| op.ret)
        .collect();
    answered.sort_unstable();
    answered
}

/// The longest time no client operation got a definite answer (microseconds), and when it began:
/// the worst unavailability the clients saw, faults included.
pub fn longest_silence(history: &History) -> Option<(u64, u64)> {
    let answered = answer_times(history);
    answered
        .windows(2)
        .map(|pair| (pair[1] - pair[0], pair[0]))
        .max()
}

/// For each heal, how long until the next operation with a definite answer returned (milliseconds);
/// `None` where nothing answered before the history ends.
pub fn recovery_windows(history: &History) -> Vec<Option<u64>> {
    let answered = answer_times(history);
    history
        .events
        .iter()
        .filter(|event| event.heal)
        .map(|event| {
            let i = answered.partition_point(|&ret| ret < event.at_us);
            answered.get(i).map(|ret| (ret - event.at_us) / 1000)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Event;

    fn op(conn: u64, key: Key, kind: OpKind, call: u64, ret: Option<u64>) -> Op {
        Op {
            conn,
            key,
            kind,
            call,
            ret,
            index: None,
        }
    }

    fn set(write: u64, ttl_s: u32, version: Option<u64>) -> OpKind {
        OpKind::Set {
            write,
            ttl_s,
            version,
        }
    }

    #[test]
    fn a_ledger_write_missing_from_the_final_read_is_lost() {
        let key = LEDGER_BASE + 3;
        let history = History {
            ops: vec![
                op(1, key, set(7, 0, Some(10)), 0, Some(5)),
                op(FINAL_CONN, key, OpKind::Get { value: None }, 100, Some(101)),
            ],
            events: vec![],
            notes: vec![],
        };
        let lost = lost_writes(&history);
        assert_eq!(lost.len(), 1, "{lost:?}");
        assert!(lost[0].starts_with("l3:"), "{lost:?}");
        assert!(linearizable(&history).illegal());
    }

    #[test]
    fn a_register_may_vanish_only_if_something_could_remove_it() {
        let durable = History {
            ops: vec![
                op(1, 2, set(7, 0, Some(10)), 0, Some(5)),
                op(FINAL_CONN, 2, OpKind::Getm { value: None }, 100, Some(101)),
            ],
            events: vec![],
            notes: vec![],
        };
        assert_eq!(lost_writes(&durable).len(), 1);
        let mut deleted = durable.clone();
        deleted
            .ops
            .insert(1, op(2, 2, OpKind::Delete { deleted: None }, 6, None));
        assert!(lost_writes(&deleted).is_empty());
        let expiring = History {
            ops: vec![
                op(1, 3, set(7, 2, Some(10)), 0, Some(5)),
                op(FINAL_CONN, 3, OpKind::Getm { value: None }, 100, Some(101)),
            ],
            events: vec![],
            notes: vec![],
        };
        assert!(lost_writes(&expiring).is_empty());
    }

    #[test]
    fn an_older_version_in_the_final_read_is_lost() {
        let history = History {
            ops: vec![
                op(1, 2, set(7, 0, Some(10)), 0, Some(5)),
                op(1, 2, set(8, 0, Some(12)), 6, Some(9)),
                op(
                    FINAL_CONN,
                    2,
                    OpKind::Getm {
                        value: Some((7.into(), 10, 0)),
                    },
                    100,
                    Some(101),
                ),
            ],
            events: vec![],
            notes: vec![],
        };
        assert_eq!(lost_writes(&history).len(), 1);
    }

    #[test]
    fn versions_keep_one_order_across_keys() {
        let fine = History {
            ops: vec![
                op(1, 2, set(7, 0, Some(10)), 0, Some(5)),
                op(2, 3, set(8, 0, Some(12)), 6, Some(9)),
                op(3, 4, set(9, 0, Some(11)), 4, Some(9)),
            ],
            events: vec![],
            notes: vec![],
        };
        assert!(
            version_order(&fine).is_empty(),
            "{:?}",
            version_order(&fine)
        );
        let mut rewritten = fine.clone();
        rewritten
            .ops
            .push(op(4, 5, set(10, 0, Some(9)), 20, Some(25)));
        assert_eq!(version_order(&rewritten).len(), 1);
        let mut twice = fine.clone();
        twice.ops.push(op(4, 5, set(10, 0, Some(12)), 1, Some(30)));
        assert_eq!(version_order(&twice).len(), 1);
    }

    #[test]
    fn recovery_is_measured_from_each_heal() {
        let history = History {
            ops: vec![
                op(1, 2, OpKind::Get { value: None }, 1_000, Some(2_000)),
                op(1, 2, OpKind::Get { value: None }, 9_000, Some(12_000)),
            ],
            events: vec![
                Event {
                    at_us: 5_000,
                    heal: true,
                    what: "heal".into(),
                },
                Event {
                    at_us: 50_000,
                    heal: true,
                    what: "heal".into(),
                },
            ],
            notes: vec![],
        };
        assert_eq!(recovery_windows(&history), vec![Some(7), None]);
    }
}

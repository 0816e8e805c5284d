//! The checker's model against the real store: random sequences of the simulator's operations
//! (the text protocol's and the Redis front end's, compound and multi-key ones included) applied
//! one at a time to `raftkv_kv::Store`, with the replies read as the simulator reads them. Such a
//! history is sequential, so the checker must accept it — unless a reply is changed, which it must
//! then refuse. A difference between the model and the store shows up here, without a cluster.

use raftkv_kv::{Request, Store};
use raftkv_replica::Op as Request2;
use raftkv_sim::client::{draw_op, interpret, Meaning, Mix};
use raftkv_sim::linearizability::{check, Op, OpKind, RenameOutcome, Tx, TxAction, Value};
use raftkv_sim::rng::Rng;

const BUDGET: u64 = 1_000_000;

/// `ops` operations on `keys` keys, each answered by the store before the next is sent; with
/// `lifetimes`, some writes give keys a lifetime, keep one (KEEPTTL) or expire at an instant (which
/// makes expiry the model's choice).
fn sequential_history(rng: &mut Rng, keys: u64, ops: usize, lifetimes: bool) -> Vec<Op> {
    let mut store = Store::new();
    let mut history = Vec::new();
    let mut index = 0;
    let mut now_ms = 1_000_000;
    let mut versions = std::collections::HashMap::new();
    let mix = Mix {
        read_ppm: 400_000,
        ttl_ppm: if lifetimes { 300_000 } else { 0 },
        redis_ops: true,
        compound_keys: Some(keys),
        instants: lifetimes,
    };
    for n in 0..ops as u64 {
        // Now and then long enough for a 1–3 s lifetime to run out.
        now_ms += [1, 10, 400, 1_500][rng.index(4)];
        let key = rng.below(keys);
        // As the simulator's clients do: a `cas` or a WATCH names the version seen last.
        let (request, kind, _noreply) =
            draw_op(rng, 1_000 + n, key, versions.get(&key).copied(), mix);
        let (reply, at) = match request {
            Request2::Write { command, .. } => {
                index += 1;
                (store.apply(index, now_ms, &command), Some(index))
            }
            Request2::Read(read @ (Request::Get { .. } | Request::Getm { .. })) => {
                (store.read(&read, now_ms), None)
            }
            other => panic!("the workload drew {other:?}"),
        };
        let kind = match interpret(kind, &reply, |_| None) {
            Ok(Meaning::Done(kind)) => kind,
            _ => panic!("{kind:?} answered {reply:?}"),
        };
        if let Some(version) = kind.version() {
            versions.insert(key, version);
        }
        history.push(Op {
            conn: n,
            key,
            kind,
            call: 2 * n,
            ret: Some(2 * n + 1),
            index: at,
        });
    }
    history
}

#[test]
fn sequential_histories_of_the_store_pass() {
    let mut rng = Rng::new(5);
    let mut kinds = std::collections::BTreeSet::new();
    for round in 0..400 {
        let keys = rng.range(1, 4);
        let history = sequential_history(&mut rng, keys, 40, true);
        kinds.extend(history.iter().map(|op| {
            format!("{:?}", op.kind)
                .split([' ', '('])
                .next()
                .map(str::to_string)
        }));
        let verdict = check(&history, BUDGET);
        assert!(
            !verdict.illegal() && !verdict.inconclusive(),
            "round {round}: {verdict}"
        );
    }
    for kind in [
        "Set",
        "Cas",
        "Delete",
        "Get",
        "Getm",
        "SetWith",
        "GetDel",
        "IncrBy",
        "IncrByFloat",
        "Append",
        "SetRange",
        "SetTtl",
        "GetEx",
        "Flush",
        "MSet",
        "Rename",
        "Tx",
    ] {
        assert!(
            kinds.contains(&Some(kind.to_string())),
            "never drew {kind}: {kinds:?}"
        );
    }
}

/// One reply changed to another the command could give: the history is no longer one the store
/// could have produced, and the checker says so. (Without lifetimes: an expiring key makes some
/// changes legal, as a late expiry.)
#[test]
fn a_changed_reply_is_refused() {
    let mut rng = Rng::new(9);
    let mut changed = 0;
    for _ in 0..600 {
        let keys = rng.range(1, 4);
        let mut history = sequential_history(&mut rng, keys, 30, false);
        let Some(i) = (0..history.len())
            .rev()
            .find(|&i| change(&mut history[i].kind))
        else {
            continue;
        };
        changed += 1;
        let verdict = check(&history, BUDGET);
        assert!(!verdict.inconclusive(), "{verdict}");
        assert!(
            verdict.illegal(),
            "op {i} changed to {:?}, yet accepted: {:#?}",
            history[i],
            &history[..i]
        );
    }
    assert!(changed > 300, "only {changed} histories changed");
}

/// Changes what a compound command answered; false if `kind` is not one (or has nothing to change).
fn change(kind: &mut OpKind) -> bool {
    match kind {
        OpKind::IncrBy {
            result: Some(Some(n)),
            ..
        } => *n += 1,
        OpKind::Append { len: Some(len), .. } | OpKind::SetRange { len: Some(len), .. } => {
            *len += 1
        }
        OpKind::SetTtl {
            changed: Some(c), ..
        } => *c = !*c,
        OpKind::MSet {
            wrote: Some(w),
            nx: true,
            ..
        } => *w = !*w,
        OpKind::IncrByFloat {
            result: Some(Some(value)),
            ..
        } => *value = Value::Text(0),
        OpKind::GetEx {
            value: Some(value), ..
        } => {
            *value = match value {
                Some(_) => None,
                None => Some(Value::Int(7)),
            }
        }
        OpKind::Rename {
            outcome: Some(outcome),
            nx: true,
            ..
        } => {
            *outcome = match outcome {
                RenameOutcome::Moved => RenameOutcome::TargetExists,
                _ => RenameOutcome::Moved,
            }
        }
        OpKind::Tx(Tx {
            aborted: Some(aborted),
            watch: Some(_),
            ..
        }) => *aborted = !*aborted,
        OpKind::Tx(tx) => {
            let Some(step) = tx.steps[..tx.len].iter_mut().find(|s| {
                matches!(
                    s.action,
                    TxAction::Get { value: Some(_) }
                        | TxAction::Incr {
                            result: Some(Some(_))
                        }
                )
            }) else {
                return false;
            };
            step.action = match step.action {
                TxAction::Get { value: Some(None) } => TxAction::Get {
                    value: Some(Some(Value::Int(7))),
                },
                TxAction::Get {
                    value: Some(Some(_)),
                } => TxAction::Get { value: Some(None) },
                TxAction::Incr {
                    result: Some(Some(n)),
                } => TxAction::Incr {
                    result: Some(Some(n - 1)),
                },
                other => other,
            };
        }
        _ => return false,
    }
    true
}

//! The Redis front end's writes that compute a value from the old one or span keys — INCRBY,
//! APPEND, SETRANGE, EXPIRE/PERSIST, MSET/MSETNX, RENAME/RENAMENX, MULTI/EXEC with WATCH — drawn
//! as the RESP front end proposes them, and their replies read into the history.

use bytes::Bytes;
use raftkv_kv::{Command, Reply, SetCondition, SetExpiry, TtlCondition, TxOp, Watch};
use raftkv_replica::Op as Request2;

use crate::client::key_bytes;
use crate::linearizability::{
    Key, OpKind, RenameOutcome, Tx, TxAction, TxStep, Value, MAX_TX_STEPS,
};
use crate::rng::Rng;

/// A random compound write by op `write` on `key`, with `keys` keys in play (the multi-key ones
/// need two); `ttl_s` is the lifetime EXPIRE gives (0: PERSIST); `last_version` the version of
/// `key` the client saw last, which a WATCH may name.
pub fn draw(
    rng: &mut Rng,
    write: u64,
    key: Key,
    keys: u64,
    ttl_s: u32,
    last_version: Option<u64>,
) -> (Request2, OpKind) {
    let k = key_bytes(key);
    let pick = rng.below(100);
    let (command, kind) = match pick {
        _ if keys >= 2 && pick >= 60 => return multi_key(rng, write, key, keys, last_version),
        18..=24 => {
            let by = [0.5, -1.25, 3.0, 0.1][rng.index(4)];
            (
                Command::incr_by_float(k, by),
                OpKind::IncrByFloat {
                    write,
                    by_bits: by.to_bits(),
                    result: None,
                },
            )
        }
        0..=17 => {
            let by = [1, 1, -1, 5, -3][rng.index(5)];
            (
                Command::IncrBy { key: k, by },
                OpKind::IncrBy {
                    write,
                    by,
                    result: None,
                },
            )
        }
        25..=34 => (
            Command::GetEx {
                key: k,
                expiry: expiry_of(ttl_s),
            },
            OpKind::GetEx {
                write,
                ttl_s,
                value: None,
            },
        ),
        35..=36 => (
            Command::Flush,
            OpKind::Flush {
                keys,
                version: None,
            },
        ),
        37..=44 => (
            Command::Append {
                key: k,
                value: Bytes::from(format!("a{write}")),
            },
            OpKind::Append { write, len: None },
        ),
        45..=52 => {
            let offset = rng.below(6) as u32;
            (
                Command::SetRange {
                    key: k,
                    offset,
                    value: Bytes::from(format!("r{write}")),
                },
                OpKind::SetRange {
                    write,
                    offset,
                    len: None,
                },
            )
        }
        _ => {
            let expiry = expiry_of(ttl_s);
            // EXPIRE may say NX (only a key without a lifetime), XX (only one with), GT, LT or XX LT
            // (comparing instants; GT, LT and XX LT picked by the op's id, not the random stream);
            // PERSIST takes no option.
            let condition = match (ttl_s, rng.below(4)) {
                (0, _) | (_, 0) => TtlCondition::Always,
                (_, 1) => [
                    TtlCondition::IfLater,
                    TtlCondition::IfEarlier,
                    TtlCondition::IfSomeAndEarlier,
                    TtlCondition::IfLater,
                ][Rng::choice_of(write, 4) as usize],
                (_, 2) => TtlCondition::IfNone,
                _ => TtlCondition::IfSome,
            };
            (
                Command::SetTtl {
                    key: k,
                    expiry,
                    condition,
                },
                OpKind::SetTtl {
                    write,
                    ttl_s,
                    condition,
                    changed: None,
                },
            )
        }
    };
    (Request2::write(command), kind)
}

/// The expiry of an EXPIRE or GETEX by `ttl_s` seconds; 0 is PERSIST.
fn expiry_of(ttl_s: u32) -> SetExpiry {
    match ttl_s {
        0 => SetExpiry::Never,
        ttl_s => SetExpiry::AfterMs(u64::from(ttl_s) * 1000),
    }
}

/// MSET/MSETNX, RENAME/RENAMENX or MULTI/EXEC over `key` and others (`keys` ≥ 2).
fn multi_key(
    rng: &mut Rng,
    write: u64,
    key: Key,
    keys: u64,
    last_version: Option<u64>,
) -> (Request2, OpKind) {
    let another = |rng: &mut Rng| (key + 1 + rng.below(keys - 1)) % keys;
    let value = Bytes::from(format!("v{write}"));
    let nx = rng.chance(400_000);
    let (command, kind) = match rng.below(10) {
        0..=2 => {
            let other = another(rng);
            (
                Command::MSet {
                    pairs: vec![(key_bytes(key), value.clone()), (key_bytes(other), value)],
                    nx,
                },
                OpKind::MSet {
                    write,
                    other,
                    nx,
                    wrote: None,
                    version: None,
                },
            )
        }
        3..=5 => {
            let to = another(rng);
            (
                Command::Rename {
                    from: key_bytes(key),
                    to: key_bytes(to),
                    nx,
                },
                OpKind::Rename {
                    write,
                    to,
                    nx,
                    outcome: None,
                    version: None,
                },
            )
        }
        _ => {
            let len = rng.range(2, MAX_TX_STEPS as u64) as usize;
            let mut steps = [TxStep {
                key,
                action: TxAction::Set,
            }; MAX_TX_STEPS];
            let mut ops = Vec::with_capacity(len);
            for (i, step) in steps.iter_mut().take(len).enumerate() {
                step.key = if i == 0 { key } else { rng.below(keys) };
                let k = key_bytes(step.key);
                let (action, op) = match rng.below(4) {
                    0 => (
                        TxAction::Set,
                        TxOp::Write(Command::SetWith {
                            key: k,
                            value: value.clone(),
                            condition: SetCondition::Always,
                            get: false,
                            expiry: SetExpiry::Never,
                        }),
                    ),
                    1 => (TxAction::Get { value: None }, TxOp::Get(k)),
                    2 => (
                        TxAction::Incr { result: None },
                        TxOp::Write(Command::IncrBy { key: k, by: 1 }),
                    ),
                    _ => (
                        TxAction::Delete { deleted: None },
                        TxOp::Write(Command::Delete { key: k }),
                    ),
                };
                step.action = action;
                ops.push(op);
            }
            // WATCH of the key at the version the client saw last, or of a key while absent
            // (version 0): EXEC aborts if its version is another by then.
            let watch = match (rng.chance(300_000), last_version) {
                (false, _) => None,
                (true, Some(version)) if rng.chance(700_000) => Some((key, version)),
                (true, _) => Some((rng.below(keys), 0)),
            };
            let watches = watch
                .map(|(key, version)| Watch {
                    key: key_bytes(key),
                    version,
                })
                .into_iter()
                .collect();
            (
                Command::Transaction { watches, ops },
                OpKind::Tx(Tx {
                    write,
                    watch,
                    steps,
                    len,
                    aborted: None,
                    version: None,
                }),
            )
        }
    };
    (Request2::write(command), kind)
}

/// `kind` completed with `reply`; None if the reply does not fit the command.
pub fn interpret(kind: OpKind, reply: &Reply) -> Option<OpKind> {
    Some(match (kind, reply) {
        (OpKind::IncrByFloat { write, by_bits, .. }, r) => OpKind::IncrByFloat {
            write,
            by_bits,
            result: Some(match r {
                Reply::Value { value } => Some(Value::of(value)),
                Reply::ErrValue { .. } => None,
                _ => return None,
            }),
        },
        (OpKind::IncrBy { write, by, .. }, r) => OpKind::IncrBy {
            write,
            by,
            result: Some(incr_result(r)?),
        },
        (OpKind::GetEx { write, ttl_s, .. }, Reply::Value { value }) => OpKind::GetEx {
            write,
            ttl_s,
            value: Some(Some(Value::of(value))),
        },
        (OpKind::GetEx { write, ttl_s, .. }, Reply::ErrNotFound) => OpKind::GetEx {
            write,
            ttl_s,
            value: Some(None),
        },
        (OpKind::Flush { keys, .. }, Reply::Ok { version }) => OpKind::Flush {
            keys,
            version: Some(*version),
        },
        (OpKind::Append { write, .. }, Reply::Integer { value }) => OpKind::Append {
            write,
            len: Some(u64::try_from(*value).ok()?),
        },
        (OpKind::SetRange { write, offset, .. }, Reply::Integer { value }) => OpKind::SetRange {
            write,
            offset,
            len: Some(u64::try_from(*value).ok()?),
        },
        (
            OpKind::SetTtl {
                write,
                ttl_s,
                condition,
                ..
            },
            Reply::Integer { value },
        ) => OpKind::SetTtl {
            write,
            ttl_s,
            condition,
            changed: Some(one_or_zero(*value)?),
        },
        (
            OpKind::MSet {
                write, other, nx, ..
            },
            r,
        ) => {
            let (wrote, version) = match (nx, r) {
                (false, Reply::Ok { version }) => (true, Some(*version)),
                (true, Reply::Integer { value }) => (one_or_zero(*value)?, None),
                _ => return None,
            };
            OpKind::MSet {
                write,
                other,
                nx,
                wrote: Some(wrote),
                version,
            }
        }
        (OpKind::Rename { write, to, nx, .. }, r) => {
            let (outcome, version) = match (nx, r) {
                (_, Reply::ErrNotFound) => (RenameOutcome::NotFound, None),
                (false, Reply::Ok { version }) => (RenameOutcome::Moved, Some(*version)),
                (true, Reply::Integer { value: 1 }) => (RenameOutcome::Moved, None),
                (true, Reply::Integer { value: 0 }) => (RenameOutcome::TargetExists, None),
                _ => return None,
            };
            OpKind::Rename {
                write,
                to,
                nx,
                outcome: Some(outcome),
                version,
            }
        }
        (OpKind::Tx(mut tx), Reply::ExecAborted) => {
            tx.aborted = Some(true);
            OpKind::Tx(tx)
        }
        (OpKind::Tx(mut tx), Reply::Multi { replies }) => {
            if replies.len() != tx.len {
                return None;
            }
            for (step, reply) in tx.steps.iter_mut().zip(replies) {
                step.action = match (step.action, reply) {
                    (TxAction::Set, Reply::Ok { version }) => {
                        // Every SET of one EXEC happens at its one index.
                        if tx.version.replace(*version).is_some_and(|v| v != *version) {
                            return None;
                        }
                        TxAction::Set
                    }
                    (TxAction::Get { .. }, Reply::Value { value }) => TxAction::Get {
                        value: Some(Some(Value::of(value))),
                    },
                    (TxAction::Get { .. }, Reply::ErrNotFound) => {
                        TxAction::Get { value: Some(None) }
                    }
                    (TxAction::Incr { .. }, r) => TxAction::Incr {
                        result: Some(incr_result(r)?),
                    },
                    (TxAction::Delete { .. }, Reply::Deleted) => TxAction::Delete {
                        deleted: Some(true),
                    },
                    (TxAction::Delete { .. }, Reply::ErrNotFound) => TxAction::Delete {
                        deleted: Some(false),
                    },
                    _ => return None,
                };
            }
            tx.aborted = Some(false);
            OpKind::Tx(tx)
        }
        _ => return None,
    })
}

/// INCRBY's answer: the new value, or None for Redis's "not an integer" (or overflow) error.
fn incr_result(reply: &Reply) -> Option<Option<i64>> {
    match reply {
        Reply::Integer { value } => Some(Some(*value)),
        Reply::ErrValue { .. } => Some(None),
        _ => None,
    }
}

fn one_or_zero(value: i64) -> Option<bool> {
    match value {
        1 => Some(true),
        0 => Some(false),
        _ => None,
    }
}

/// Whether `kind` is one of this module's.
pub fn is_compound(kind: &OpKind) -> bool {
    matches!(
        kind,
        OpKind::IncrBy { .. }
            | OpKind::IncrByFloat { .. }
            | OpKind::Append { .. }
            | OpKind::SetRange { .. }
            | OpKind::SetTtl { .. }
            | OpKind::GetEx { .. }
            | OpKind::Flush { .. }
            | OpKind::MSet { .. }
            | OpKind::Rename { .. }
            | OpKind::Tx(_)
    )
}

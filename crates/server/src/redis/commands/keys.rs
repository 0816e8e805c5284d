//! Key commands: DEL, EXISTS-like walks (KEYS, SCAN, RANDOMKEY), expiry (EXPIRE and its options,
//! PERSIST, TTL), RENAME and FLUSHDB.

use std::hash::BuildHasher;

use bytes::Bytes;
use raftkv_kv::{Command, Request, SetExpiry, TtlCondition};
use raftkv_resp::Value;

use super::{integer, key, now, upper, Finish, Plan, SYNTAX};
use crate::request::Op;

/// `EXPIRE key n [NX | XX | GT | LT]` and PEXPIRE (relative), EXPIREAT and PEXPIREAT (an instant of
/// the replicated clock). A time already past deletes the key, as in Redis.
pub(super) fn expire(name: &str, args: &[Bytes]) -> Plan {
    let invalid = || {
        now(Value::err(format!(
            "invalid expire time in '{}' command",
            name.to_ascii_lowercase()
        )))
    };
    // Options first, as Redis checks them.
    let condition = match ttl_condition(&args[3..]) {
        Ok(condition) => condition,
        Err(error) => return now(error),
    };
    let Some(n) = integer(&args[2]) else {
        return now(Value::err("value is not an integer or out of range"));
    };
    let millis = name.starts_with('P');
    let Some(ms) = (if millis { Some(n) } else { n.checked_mul(1000) }) else {
        return invalid();
    };
    let expiry = if name.ends_with("AT") {
        SetExpiry::AtMs(ms.max(0) as u64)
    } else if ms <= 0 {
        SetExpiry::AtMs(0)
    } else if ms as u64 > raftkv_kv::MAX_EXPIRY_MS {
        return invalid();
    } else {
        SetExpiry::AfterMs(ms as u64)
    };
    match key(&args[1]) {
        Ok(key) => Plan::Node {
            ops: vec![Op::write(Command::SetTtl {
                key,
                expiry,
                condition,
            })],
            finish: Finish::Store,
        },
        Err(error) => now(error),
    }
}

/// EXPIRE's options, with Redis's errors for the combinations it refuses.
fn ttl_condition(options: &[Bytes]) -> Result<TtlCondition, Value> {
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for option in options {
        match upper(option).as_str() {
            "NX" => nx = true,
            "XX" => xx = true,
            "GT" => gt = true,
            "LT" => lt = true,
            _ => {
                return Err(Value::err(format!(
                    "Unsupported option {}",
                    String::from_utf8_lossy(option)
                )))
            }
        }
    }
    if nx && (xx || gt || lt) {
        return Err(Value::err(
            "NX and XX, GT or LT options at the same time are not compatible",
        ));
    }
    if gt && lt {
        return Err(Value::err(
            "GT and LT options at the same time are not compatible",
        ));
    }
    Ok(match (nx, xx, gt, lt) {
        (true, ..) => TtlCondition::IfNone,
        // A key without an expiry never passes GT, so XX adds nothing to it.
        (_, _, true, _) => TtlCondition::IfLater,
        (_, true, _, true) => TtlCondition::IfSomeAndEarlier,
        (_, true, _, _) => TtlCondition::IfSome,
        (_, _, _, true) => TtlCondition::IfEarlier,
        _ => TtlCondition::Always,
    })
}

pub(super) fn persist(word: &Bytes) -> Plan {
    match key(word) {
        Ok(key) => Plan::Node {
            ops: vec![Op::write(Command::SetTtl {
                key,
                expiry: SetExpiry::Never,
                condition: TtlCondition::Always,
            })],
            finish: Finish::Store,
        },
        Err(error) => now(error),
    }
}

/// TTL (seconds) or PTTL (milliseconds).
pub(super) fn ttl(word: &Bytes, millis: bool) -> Plan {
    match key(word) {
        Ok(key) => Plan::Node {
            ops: vec![Op::Read(Request::Pttl { key })],
            finish: if millis { Finish::Store } else { Finish::Ttl },
        },
        Err(error) => now(error),
    }
}

/// DEL and UNLINK: one delete per key, counted.
pub(super) fn del(words: &[Bytes]) -> Plan {
    let mut ops = Vec::with_capacity(words.len());
    for word in words {
        match key(word) {
            Ok(key) => ops.push(Op::write(Command::Delete { key })),
            Err(error) => return now(error),
        }
    }
    Plan::Node {
        ops,
        finish: Finish::Count,
    }
}

/// RENAME and RENAMENX.
pub(super) fn rename(args: &[Bytes], nx: bool) -> Plan {
    match (key(&args[1]), key(&args[2])) {
        (Ok(from), Ok(to)) => Plan::Node {
            ops: vec![Op::write(Command::Rename { from, to, nx })],
            finish: Finish::Rename,
        },
        (Err(error), _) | (_, Err(error)) => now(error),
    }
}

/// `FLUSHDB [ASYNC | SYNC]` and FLUSHALL: every key, on every node, through the log.
pub(super) fn flush(args: &[Bytes]) -> Plan {
    match args.get(1).map(|a| upper(a)).as_deref() {
        None | Some("ASYNC") | Some("SYNC") if args.len() <= 2 => Plan::Node {
            ops: vec![Op::write(Command::Flush)],
            finish: Finish::Ok,
        },
        _ => now(Value::err(SYNTAX)),
    }
}

pub(super) fn keys(pattern: &Bytes) -> Plan {
    Plan::Node {
        ops: vec![Op::Read(Request::Keys {
            pattern: pattern.clone(),
        })],
        finish: Finish::Keys,
    }
}

/// `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]` (every key is a string).
pub(super) fn scan(args: &[Bytes]) -> Plan {
    let Some(cursor) = std::str::from_utf8(&args[1])
        .ok()
        .and_then(|c| c.parse::<u64>().ok())
    else {
        return now(Value::err("invalid cursor"));
    };
    let (mut pattern, mut count, mut strings) = (None, 10u32, true);
    let mut options = args[2..].chunks(2);
    for option in options.by_ref() {
        let [name, value] = option else {
            return now(Value::err(SYNTAX));
        };
        match upper(name).as_str() {
            "MATCH" => pattern = Some(value.clone()),
            "COUNT" => match integer(value) {
                Some(n) if n >= 1 => count = n.min(i64::from(u32::MAX)) as u32,
                Some(_) => return now(Value::err(SYNTAX)),
                None => return now(Value::err("value is not an integer or out of range")),
            },
            "TYPE" => strings = upper(value) == "STRING",
            _ => return now(Value::err(SYNTAX)),
        }
    }
    if !strings {
        // Only strings exist: walk nothing, end at once.
        return now(Value::Array(vec![
            Value::bulk("0"),
            Value::Array(Vec::new()),
        ]));
    }
    Plan::Node {
        ops: vec![Op::Read(Request::Scan {
            cursor,
            pattern,
            count,
        })],
        finish: Finish::Scan,
    }
}

pub(super) fn randomkey() -> Plan {
    // A fresh random seed per call, from the standard library's per-process random keys.
    let seed = std::hash::RandomState::new().hash_one(0u8);
    Plan::Node {
        ops: vec![Op::Read(Request::RandomKey { seed })],
        finish: Finish::Value,
    }
}

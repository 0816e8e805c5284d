//! What each Redis command becomes: an answer known at once, or requests to the node loop (reads
//! through ReadIndex, writes through the log, exactly as the CS733 port sends them) and how to turn
//! their replies into the Redis reply.
//!
//! Commands that need state-machine support raftkv does not have yet (INCR, MSET, SET NX, ...) are
//! answered with an error that says so, never approximated by several non-atomic steps.

use bytes::Bytes;
use raftkv_kv::{Command, Reply, Request, SetCondition, SetExpiry};
use raftkv_protocol::limits::{is_valid_key, MAX_EXPTIME_SECS};
use raftkv_resp::Value;

use crate::request::Op;

/// The commands this front end knows, for `COMMAND COUNT` and error messages.
pub const SUPPORTED: &[&str] = &[
    "PING",
    "ECHO",
    "SELECT",
    "HELLO",
    "CLIENT",
    "QUIT",
    "RESET",
    "COMMAND",
    "CONFIG",
    "TIME",
    "DBSIZE",
    "INFO",
    "GET",
    "SET",
    "SETEX",
    "PSETEX",
    "MGET",
    "DEL",
    "UNLINK",
    "EXISTS",
    "STRLEN",
    "GETRANGE",
    "TTL",
    "TYPE",
    "INCR",
    "INCRBY",
    "DECR",
    "DECRBY",
    "APPEND",
    "MSET",
    "MSETNX",
    "SETNX",
    "GETSET",
    "GETDEL",
    "EXPIRE",
    "PEXPIRE",
    "EXPIREAT",
    "PEXPIREAT",
    "PERSIST",
    "PTTL",
];

/// Commands of Redis that raftkv knows of but cannot run yet.
const NOT_YET: &[&str] = &[
    "INCRBYFLOAT",
    "SETRANGE",
    "GETEX",
    "RENAME",
    "RENAMENX",
    "KEYS",
    "SCAN",
    "RANDOMKEY",
    "MULTI",
    "EXEC",
    "DISCARD",
    "WATCH",
    "UNWATCH",
    "FLUSHDB",
    "FLUSHALL",
];

/// What the connection does with one command.
pub enum Plan {
    /// Answer now (and close the connection after it, for `QUIT`).
    Now { value: Value, close: bool },
    /// `HELLO`: switch protocol version, then answer.
    Hello { resp3: bool, name: Option<Bytes> },
    /// `CLIENT SETNAME`.
    SetName(Bytes),
    /// `CLIENT GETNAME`, `CLIENT ID`, `DBSIZE`, `INFO`, `TIME`: answered from the connection's state or
    /// the node's status.
    Local(LocalQuery),
    /// Send these requests to the node loop, in order, and combine their replies.
    Node { ops: Vec<Op>, finish: Finish },
}

pub enum LocalQuery {
    ClientName,
    ClientId,
    DbSize,
    Info(Option<String>),
    Time,
}

/// How the replies of a command's requests become its Redis reply.
#[derive(Clone, Copy, Debug)]
pub enum Finish {
    /// `+OK` once the write is acknowledged.
    Ok,
    /// The value, or null.
    Value,
    /// An array of values or nulls.
    Values,
    /// How many requests found their key (DEL, EXISTS).
    Count,
    /// The value's length, 0 if absent.
    Len,
    /// A byte range of the value (GETRANGE, inclusive, negative from the end).
    Range(i64, i64),
    /// Seconds to live, from the milliseconds left: -2 absent, -1 no expiry.
    Ttl,
    /// `string` or `none`.
    Type,
    /// The store's own answer: an integer, `+OK`, or the error it gave (INCR, APPEND, MSET...).
    Store,
    /// `+OK` if written, null if the condition failed (SET NX/XX).
    SetWith,
    /// 1 if written, 0 if the key existed (SETNX).
    SetNx,
}

fn upper(word: &[u8]) -> String {
    String::from_utf8_lossy(word).to_ascii_uppercase()
}

/// `-ERR wrong number of arguments for 'x' command`.
fn arity(name: &str) -> Plan {
    now(Value::err(format!(
        "wrong number of arguments for '{}' command",
        name.to_ascii_lowercase()
    )))
}

fn now(value: Value) -> Plan {
    Plan::Now {
        value,
        close: false,
    }
}

const SYNTAX: &str = "syntax error";

/// A key must also be a CS733 key: both protocols share the store.
fn key(word: &Bytes) -> Result<Bytes, Value> {
    if is_valid_key(word) {
        Ok(word.clone())
    } else {
        Err(Value::err(
            "raftkv keys are 1 to 250 bytes of printable ASCII without spaces",
        ))
    }
}

fn integer(word: &[u8]) -> Option<i64> {
    std::str::from_utf8(word).ok()?.parse().ok()
}

/// The plan for one command (`args[0]` is its name).
pub fn plan(args: &[Bytes], max_value_size: usize) -> Plan {
    let name = upper(&args[0]);
    let argc = args.len();
    match name.as_str() {
        "PING" => match argc {
            1 => now(Value::Simple("PONG".into())),
            2 => now(Value::Bulk(args[1].clone())),
            _ => arity(&name),
        },
        "ECHO" if argc == 2 => now(Value::Bulk(args[1].clone())),
        "SELECT" if argc == 2 => match integer(&args[1]) {
            Some(0) => now(Value::ok()),
            Some(_) => now(Value::err("DB index is out of range")),
            None => now(Value::err("value is not an integer or out of range")),
        },
        "QUIT" => Plan::Now {
            value: Value::ok(),
            close: true,
        },
        "RESET" if argc == 1 => now(Value::Simple("RESET".into())),
        "HELLO" => hello(args),
        "CLIENT" if argc >= 2 => client(args),
        "COMMAND" => command(args),
        "CONFIG" if argc >= 3 && upper(&args[1]) == "GET" => now(config_get(&args[2..])),
        "CONFIG" if argc >= 2 && upper(&args[1]) == "RESETSTAT" => now(Value::ok()),
        "TIME" if argc == 1 => Plan::Local(LocalQuery::Time),
        "DBSIZE" if argc == 1 => Plan::Local(LocalQuery::DbSize),
        "INFO" if argc <= 2 => Plan::Local(LocalQuery::Info(
            args.get(1)
                .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase()),
        )),
        "GET" if argc == 2 => read(&args[1], Finish::Value, false),
        "STRLEN" if argc == 2 => read(&args[1], Finish::Len, false),
        "TYPE" if argc == 2 => read(&args[1], Finish::Type, false),
        "TTL" | "PTTL" if argc == 2 => match key(&args[1]) {
            Ok(key) => Plan::Node {
                ops: vec![Op::Read(Request::Pttl { key })],
                finish: if name == "TTL" {
                    Finish::Ttl
                } else {
                    Finish::Store
                },
            },
            Err(error) => now(error),
        },
        "EXPIRE" | "PEXPIRE" | "EXPIREAT" | "PEXPIREAT" if argc == 3 => expire(&name, args),
        "EXPIRE" | "PEXPIRE" | "EXPIREAT" | "PEXPIREAT" if argc > 3 => now(Value::err(format!(
            "{name} with NX, XX, GT or LT is not supported by raftkv yet (see docs/redis.md)"
        ))),
        "PERSIST" if argc == 2 => match key(&args[1]) {
            Ok(key) => Plan::Node {
                ops: vec![Op::write(Command::SetTtl {
                    key,
                    expiry: SetExpiry::Never,
                })],
                finish: Finish::Store,
            },
            Err(error) => now(error),
        },
        "GETRANGE" if argc == 4 => match (integer(&args[2]), integer(&args[3])) {
            (Some(start), Some(end)) => read(&args[1], Finish::Range(start, end), false),
            _ => now(Value::err("value is not an integer or out of range")),
        },
        "MGET" if argc >= 2 => reads(&args[1..], Finish::Values),
        "EXISTS" if argc >= 2 => reads(&args[1..], Finish::Count),
        "DEL" | "UNLINK" if argc >= 2 => {
            let mut ops = Vec::with_capacity(argc - 1);
            for word in &args[1..] {
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
        "SET" if argc >= 3 => set(args, max_value_size),
        "SETNX" if argc == 3 => set_with(
            &args[1],
            &args[2],
            SetCondition::IfAbsent,
            false,
            SetExpiry::Never,
            Finish::SetNx,
            max_value_size,
        ),
        "GETSET" if argc == 3 => set_with(
            &args[1],
            &args[2],
            SetCondition::Always,
            true,
            SetExpiry::Never,
            Finish::Value,
            max_value_size,
        ),
        "GETDEL" if argc == 2 => match key(&args[1]) {
            Ok(key) => Plan::Node {
                ops: vec![Op::write(Command::GetDel { key })],
                finish: Finish::Value,
            },
            Err(error) => now(error),
        },
        "INCR" | "DECR" if argc == 2 => incr(&args[1], if name == "INCR" { 1 } else { -1 }),
        "INCRBY" | "DECRBY" if argc == 3 => match integer(&args[2]) {
            Some(by) if name == "INCRBY" => incr(&args[1], by),
            Some(by) => match by.checked_neg() {
                Some(by) => incr(&args[1], by),
                None => now(Value::err("decrement would overflow")),
            },
            None => now(Value::err("value is not an integer or out of range")),
        },
        "APPEND" if argc == 3 => match key(&args[1]) {
            Ok(key) => Plan::Node {
                ops: vec![Op::write(Command::Append {
                    key,
                    value: args[2].clone(),
                })],
                finish: Finish::Store,
            },
            Err(error) => now(error),
        },
        "MSET" | "MSETNX" if argc >= 3 && argc % 2 == 1 => {
            let mut pairs = Vec::with_capacity(argc / 2);
            for pair in args[1..].chunks(2) {
                match key(&pair[0]) {
                    Ok(key) if pair[1].len() <= max_value_size => {
                        pairs.push((key, pair[1].clone()))
                    }
                    Ok(_) => {
                        return now(Value::err(
                            "value larger than this cluster's max_value_size",
                        ))
                    }
                    Err(error) => return now(error),
                }
            }
            Plan::Node {
                ops: vec![Op::write(Command::MSet {
                    pairs,
                    nx: name == "MSETNX",
                })],
                finish: Finish::Store,
            }
        }
        "SETEX" | "PSETEX" if argc == 4 => {
            let millis = name == "PSETEX";
            match integer(&args[2]) {
                Some(ttl) if ttl > 0 => {
                    store(&args[1], &args[3], Some(ttl), millis, max_value_size)
                }
                _ => now(Value::err(format!(
                    "invalid expire time in '{}' command",
                    name.to_ascii_lowercase()
                ))),
            }
        }
        _ if SUPPORTED.contains(&name.as_str()) => arity(&name),
        _ if NOT_YET.contains(&name.as_str()) => now(Value::err(format!(
            "'{}' is not supported by raftkv yet (see docs/redis.md)",
            name.to_ascii_lowercase()
        ))),
        _ => {
            // Redis's wording exactly: arguments quoted, each followed by a space, until 128 bytes.
            let mut shown = String::new();
            for arg in &args[1..] {
                if shown.len() >= 128 {
                    break;
                }
                let room = 128 - shown.len();
                let text = String::from_utf8_lossy(&arg[..arg.len().min(room)]).into_owned();
                shown.push_str(&format!("'{text}' "));
            }
            now(Value::err(format!(
                "unknown command '{}', with args beginning with: {shown}",
                String::from_utf8_lossy(&args[0])
            )))
        }
    }
}

/// EXPIRE/PEXPIRE (relative) and EXPIREAT/PEXPIREAT (an instant of the replicated clock). A time
/// already past deletes the key, as in Redis.
fn expire(name: &str, args: &[Bytes]) -> Plan {
    let invalid = || {
        now(Value::err(format!(
            "invalid expire time in '{}' command",
            name.to_ascii_lowercase()
        )))
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
            ops: vec![Op::write(Command::SetTtl { key, expiry })],
            finish: Finish::Store,
        },
        Err(error) => now(error),
    }
}

fn incr(word: &Bytes, by: i64) -> Plan {
    match key(word) {
        Ok(key) => Plan::Node {
            ops: vec![Op::write(Command::IncrBy { key, by })],
            finish: Finish::Store,
        },
        Err(error) => now(error),
    }
}

fn read(word: &Bytes, finish: Finish, meta: bool) -> Plan {
    match key(word) {
        Ok(key) => {
            let request = if meta {
                Request::Getm { key }
            } else {
                Request::Get { key }
            };
            Plan::Node {
                ops: vec![Op::Read(request)],
                finish,
            }
        }
        Err(error) => now(error),
    }
}

fn reads(words: &[Bytes], finish: Finish) -> Plan {
    let mut ops = Vec::with_capacity(words.len());
    for word in words {
        match key(word) {
            Ok(key) => ops.push(Op::Read(Request::Get { key })),
            Err(error) => return now(error),
        }
    }
    Plan::Node { ops, finish }
}

/// `SET key value [NX | XX] [GET] [EX s | PX ms | EXAT s | PXAT ms | KEEPTTL]`: a plain write when it
/// has no option or only EX (the CS733 port's own entry), otherwise a `SetWith` entry.
fn set(args: &[Bytes], max_value_size: usize) -> Plan {
    let mut condition = SetCondition::Always;
    let mut get = false;
    let mut expiry: Option<SetExpiry> = None;
    let mut seconds = None;
    let mut i = 3;
    while i < args.len() {
        let option = upper(&args[i]);
        let has_arg = i + 1 < args.len();
        match option.as_str() {
            "NX" if condition == SetCondition::Always => condition = SetCondition::IfAbsent,
            "XX" if condition == SetCondition::Always => condition = SetCondition::IfPresent,
            "GET" => get = true,
            "KEEPTTL" if expiry.is_none() => expiry = Some(SetExpiry::Keep),
            "EX" | "PX" | "EXAT" | "PXAT" if expiry.is_none() && has_arg => {
                let Some(n) = integer(&args[i + 1]) else {
                    return now(Value::err("value is not an integer or out of range"));
                };
                let ms = match option.as_str() {
                    "EX" | "EXAT" => n.checked_mul(1000),
                    _ => Some(n),
                };
                let ms = match ms {
                    Some(ms) if n > 0 => ms as u64,
                    _ => return now(Value::err("invalid expire time in 'set' command")),
                };
                expiry = Some(if option.ends_with("AT") {
                    SetExpiry::AtMs(ms)
                } else if ms > raftkv_kv::MAX_EXPIRY_MS {
                    return now(Value::err("invalid expire time in 'set' command"));
                } else {
                    SetExpiry::AfterMs(ms)
                });
                if option == "EX" {
                    seconds = Some(n);
                }
                i += 1;
            }
            _ => return now(Value::err(SYNTAX)),
        }
        i += 1;
    }
    let plain = condition == SetCondition::Always && !get;
    match expiry {
        None if plain => store(&args[1], &args[2], None, false, max_value_size),
        Some(SetExpiry::AfterMs(_)) if plain && seconds.is_some() => {
            store(&args[1], &args[2], seconds, false, max_value_size)
        }
        expiry => set_with(
            &args[1],
            &args[2],
            condition,
            get,
            expiry.unwrap_or(SetExpiry::Never),
            if get { Finish::Value } else { Finish::SetWith },
            max_value_size,
        ),
    }
}

fn set_with(
    word: &Bytes,
    value: &Bytes,
    condition: SetCondition,
    get: bool,
    expiry: SetExpiry,
    finish: Finish,
    max_value_size: usize,
) -> Plan {
    let key = match key(word) {
        Ok(key) => key,
        Err(error) => return now(error),
    };
    if value.len() > max_value_size {
        return now(Value::err(
            "value larger than this cluster's max_value_size",
        ));
    }
    Plan::Node {
        ops: vec![Op::write(Command::SetWith {
            key,
            value: value.clone(),
            condition,
            get,
            expiry,
        })],
        finish,
    }
}

/// A plain write of `value` under `word`, expiring after `ttl` seconds (or milliseconds, rounded up
/// to whole seconds: the store's expiry times are in seconds on the CS733 side).
fn store(
    word: &Bytes,
    value: &Bytes,
    ttl: Option<i64>,
    millis: bool,
    max_value_size: usize,
) -> Plan {
    let key = match key(word) {
        Ok(key) => key,
        Err(error) => return now(error),
    };
    if value.len() > max_value_size {
        return now(Value::err(format!(
            "value of {} bytes is larger than this cluster's max_value_size ({max_value_size})",
            value.len()
        )));
    }
    let seconds = match ttl {
        None => 0,
        Some(ms) if millis => (ms as u64).div_ceil(1000),
        Some(s) => s as u64,
    };
    let Ok(exptime) = u32::try_from(seconds).map(|s| s.min(MAX_EXPTIME_SECS + 1)) else {
        return now(Value::err("invalid expire time in 'set' command"));
    };
    if exptime > MAX_EXPTIME_SECS {
        return now(Value::err("invalid expire time in 'set' command"));
    }
    Plan::Node {
        ops: vec![Op::write(Command::Set {
            key,
            exptime,
            value: value.clone(),
        })],
        finish: Finish::Ok,
    }
}

fn hello(args: &[Bytes]) -> Plan {
    let mut resp3 = None;
    let mut name = None;
    let mut i = 1;
    if let Some(version) = args.get(1) {
        match integer(version) {
            Some(2) => resp3 = Some(false),
            Some(3) => resp3 = Some(true),
            _ => return now(Value::Error("NOPROTO unsupported protocol version".into())),
        }
        i = 2;
    }
    while i < args.len() {
        match upper(&args[i]).as_str() {
            "AUTH" if i + 2 < args.len() => i += 3,
            "SETNAME" if i + 1 < args.len() => {
                name = Some(args[i + 1].clone());
                i += 2;
            }
            _ => return now(Value::err(SYNTAX)),
        }
    }
    Plan::Hello {
        resp3: resp3.unwrap_or(false),
        name,
    }
}

fn client(args: &[Bytes]) -> Plan {
    match (upper(&args[1]).as_str(), args.len()) {
        ("SETNAME", 3) => Plan::SetName(args[2].clone()),
        ("GETNAME", 2) => Plan::Local(LocalQuery::ClientName),
        ("ID", 2) => Plan::Local(LocalQuery::ClientId),
        ("SETINFO", 4) => now(Value::ok()),
        _ => now(Value::err(format!(
            "unknown subcommand or wrong number of arguments for '{}'",
            String::from_utf8_lossy(&args[1])
        ))),
    }
}

fn command(args: &[Bytes]) -> Plan {
    match args.get(1).map(|a| upper(a)).as_deref() {
        None => now(Value::Array(Vec::new())),
        Some("COUNT") => now(Value::Integer(SUPPORTED.len() as i64)),
        Some("DOCS") => now(Value::Map(Vec::new())),
        Some("INFO") => now(Value::Array(vec![Value::Null; args.len() - 2])),
        Some(_) => now(Value::err("unknown subcommand for 'command'")),
    }
}

/// The settings clients and `redis-benchmark` ask for, with raftkv's truth where one exists: every
/// write is on disk on a majority before it is acknowledged (`appendfsync always`, in effect).
fn config_get(patterns: &[Bytes]) -> Value {
    const SETTINGS: &[(&str, &str)] = &[
        ("appendonly", "yes"),
        ("appendfsync", "always"),
        ("save", ""),
        ("databases", "1"),
        ("maxmemory", "0"),
        ("timeout", "0"),
    ];
    let mut pairs = Vec::new();
    for pattern in patterns {
        let pattern = String::from_utf8_lossy(pattern).to_ascii_lowercase();
        for (name, value) in SETTINGS {
            if pattern == "*" || pattern == *name {
                pairs.push((Value::bulk(*name), Value::bulk(*value)));
            }
        }
    }
    Value::Map(pairs)
}

/// The Redis reply for a command whose requests were answered with `replies` (in order). `None` if a
/// reply says this node is not the leader (any more): the connection must end.
pub fn finish(finish: Finish, replies: Vec<Reply>) -> Option<Value> {
    if replies
        .iter()
        .any(|r| matches!(r, Reply::ErrRedirect { .. }))
    {
        return None;
    }
    if let Some(failed) = replies.iter().find(|r| {
        matches!(
            r,
            Reply::ErrInternal | Reply::ErrCmdErr | Reply::ErrSessionExpired
        )
    }) {
        return Some(match failed {
            Reply::ErrCmdErr => Value::err("the cluster refused the command as malformed"),
            _ => Value::err(
                "no answer from the cluster (leadership changed or no leader): the outcome is unknown",
            ),
        });
    }
    let value_of = |reply: &Reply| match reply {
        Reply::Value { value } | Reply::ValueMeta { value, .. } => Some(value.clone()),
        _ => None,
    };
    Some(match finish {
        Finish::Ok => Value::ok(),
        Finish::Value => replies
            .first()
            .and_then(value_of)
            .map_or(Value::Null, Value::Bulk),
        Finish::Values => Value::Array(
            replies
                .iter()
                .map(|r| value_of(r).map_or(Value::Null, Value::Bulk))
                .collect(),
        ),
        Finish::Count => Value::Integer(
            replies
                .iter()
                .filter(|r| matches!(r, Reply::Deleted | Reply::Value { .. }))
                .count() as i64,
        ),
        Finish::Len => Value::Integer(
            replies
                .first()
                .and_then(value_of)
                .map_or(0, |v| v.len() as i64),
        ),
        Finish::Range(start, end) => {
            let value = replies.first().and_then(value_of).unwrap_or_default();
            Value::Bulk(range(&value, start, end))
        }
        // Redis rounds the milliseconds left to the nearest second.
        Finish::Ttl => match replies.first() {
            Some(Reply::Integer { value }) if *value < 0 => Value::Integer(*value),
            Some(Reply::Integer { value }) => Value::Integer((value + 500) / 1000),
            _ => Value::Integer(-2),
        },
        Finish::Type => match replies.first().and_then(value_of) {
            Some(_) => Value::Simple("string".into()),
            None => Value::Simple("none".into()),
        },
        Finish::SetWith => match replies.first() {
            Some(Reply::Ok { .. }) => Value::ok(),
            _ => Value::Null,
        },
        Finish::SetNx => {
            Value::Integer(i64::from(matches!(replies.first(), Some(Reply::Ok { .. }))))
        }
        Finish::Store => match replies.into_iter().next() {
            Some(Reply::Integer { value }) => Value::Integer(value),
            Some(Reply::ErrValue { message }) => Value::err(message),
            _ => Value::ok(),
        },
    })
}

/// GETRANGE's inclusive range with negative offsets from the end, clamped as Redis clamps it.
fn range(value: &Bytes, start: i64, end: i64) -> Bytes {
    let len = value.len() as i64;
    if len == 0 {
        return Bytes::new();
    }
    let fix = |i: i64| if i < 0 { (len + i).max(0) } else { i };
    let (start, end) = (fix(start), fix(end).min(len - 1));
    if start > end || start >= len {
        return Bytes::new();
    }
    value.slice(start as usize..=end as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getrange_clamps_like_redis() {
        let v = Bytes::from_static(b"This is a string");
        assert_eq!(range(&v, 0, 3), Bytes::from_static(b"This"));
        assert_eq!(range(&v, -3, -1), Bytes::from_static(b"ing"));
        assert_eq!(range(&v, 0, -1), v);
        assert_eq!(range(&v, 10, 100), Bytes::from_static(b"string"));
        assert_eq!(range(&v, 5, 2), Bytes::new());
    }
}

//! Connection and server commands answered without the log: HELLO, CLIENT, COMMAND, CONFIG GET.

use bytes::Bytes;
use raftkv_resp::Value;

use super::{integer, now, upper, LocalQuery, Plan, SUPPORTED, SYNTAX};

pub(super) fn hello(args: &[Bytes]) -> Plan {
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

pub(super) fn client(args: &[Bytes]) -> Plan {
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

pub(super) fn command(args: &[Bytes]) -> Plan {
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
pub(super) fn config_get(patterns: &[Bytes]) -> Value {
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

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
            Some(_) => return now(Value::Error("NOPROTO unsupported protocol version".into())),
            None => {
                return now(Value::err(
                    "Protocol version is not an integer or out of range",
                ))
            }
        }
        i = 2;
    }
    while i < args.len() {
        match upper(&args[i]).as_str() {
            // Redis 7.0 checks the credentials as it meets them, before any later option.
            "AUTH" if i + 2 < args.len() => {
                if let Err(error) = check_credentials(&args[i + 1]) {
                    return now(error);
                }
                i += 3;
            }
            "SETNAME" if i + 1 < args.len() => {
                name = Some(args[i + 1].clone());
                i += 2;
            }
            _ => {
                return now(Value::err(format!(
                    "Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(&args[i])
                )))
            }
        }
    }
    if let Some(Err(error)) = name.as_ref().map(|name| check_client_name(name)) {
        return now(error);
    }
    Plan::Hello {
        resp3: resp3.unwrap_or(false),
        name,
    }
}

/// Redis's rule for connection names: no spaces, newlines or other special characters.
fn check_client_name(name: &[u8]) -> Result<(), Value> {
    if name.iter().any(|b| *b <= b' ' || *b > b'~') {
        Err(Value::err(
            "Client names cannot contain spaces, newlines or special characters.",
        ))
    } else {
        Ok(())
    }
}

/// `AUTH [user] password`, answered as a Redis without a password answers it: raftkv has no Redis
/// users, so the default user (any password) is the only one there is.
pub(super) fn auth(args: &[Bytes]) -> Plan {
    now(match args {
        [_password] => Value::err(
            "AUTH <password> called without any password configured for the default user. \
             Are you sure your configuration is correct?",
        ),
        [user, _password] => match check_credentials(user) {
            Ok(()) => Value::ok(),
            Err(error) => error,
        },
        _ => Value::err(SYNTAX),
    })
}

fn check_credentials(user: &[u8]) -> Result<(), Value> {
    if user == b"default" {
        Ok(())
    } else {
        Err(Value::Error(
            "WRONGPASS invalid username-password pair or user is disabled.".into(),
        ))
    }
}

/// `-ERR wrong number of arguments for 'command|sub' command`, as Redis words it for subcommands.
fn sub_arity(command: &str, sub: &str) -> Plan {
    now(Value::err(format!(
        "wrong number of arguments for '{command}|{}' command",
        sub.to_ascii_lowercase()
    )))
}

/// `-ERR unknown subcommand 'X'. Try COMMAND HELP.` (the name cut at 128 bytes, as Redis cuts it).
fn unknown_sub(command: &str, sub: &[u8]) -> Plan {
    now(Value::err(format!(
        "unknown subcommand '{}'. Try {command} HELP.",
        String::from_utf8_lossy(&sub[..sub.len().min(128)])
    )))
}

pub(super) fn client(args: &[Bytes]) -> Plan {
    let sub = upper(&args[1]);
    match (sub.as_str(), args.len()) {
        ("SETNAME", 3) => match check_client_name(&args[2]) {
            Ok(()) => Plan::SetName(args[2].clone()),
            Err(error) => now(error),
        },
        ("GETNAME", 2) => Plan::Local(LocalQuery::ClientName),
        ("ID", 2) => Plan::Local(LocalQuery::ClientId),
        ("SETINFO", 4) => now(Value::ok()),
        ("SETNAME" | "GETNAME" | "ID" | "SETINFO", _) => sub_arity("client", &sub),
        _ => unknown_sub("CLIENT", &args[1]),
    }
}

pub(super) fn command(args: &[Bytes]) -> Plan {
    let Some(sub) = args.get(1).map(|a| upper(a)) else {
        return now(Value::Array(Vec::new()));
    };
    match (sub.as_str(), args.len()) {
        ("COUNT", 2) => now(Value::Integer(SUPPORTED.len() as i64)),
        ("COUNT", _) => sub_arity("command", &sub),
        ("DOCS", _) => now(Value::Map(Vec::new())),
        ("INFO", _) => now(Value::Array(vec![Value::Null; args.len() - 2])),
        _ => unknown_sub("COMMAND", &args[1]),
    }
}

/// `CONFIG GET pattern...` answers; nothing can be set at run time (the cluster file holds the
/// settings); `CONFIG RESETSTAT` is accepted and does nothing.
pub(super) fn config(args: &[Bytes]) -> Plan {
    let sub = upper(&args[1]);
    match (sub.as_str(), args.len()) {
        ("GET", 3..) => Plan::Local(LocalQuery::ConfigGet(args[2..].to_vec())),
        ("RESETSTAT", 2) => now(Value::ok()),
        ("SET", n) if n >= 4 && n % 2 == 0 => now(Value::err(format!(
            "Unknown option or number of arguments for CONFIG SET - '{}'",
            String::from_utf8_lossy(&args[2])
        ))),
        // Pairs of name and value, as Redis 7.0 wants them.
        ("SET", n) if n >= 4 => now(Value::err(SYNTAX)),
        ("GET" | "SET" | "RESETSTAT", _) => sub_arity("config", &sub),
        _ => unknown_sub("CONFIG", &args[1]),
    }
}

/// `CONFIG GET pattern...`: each of `settings` (name, value) whose name matches a pattern (Redis's
/// glob, case-insensitive), once each, in `settings`' order. A pattern without glob characters is
/// answered under the name as the client wrote it, as Redis 7.0 does.
pub(crate) fn config_get(patterns: &[Bytes], settings: &[(&str, String)]) -> Value {
    let pairs = settings
        .iter()
        .filter_map(|(name, value)| {
            let asked = patterns.iter().find_map(|pattern| {
                let lower = pattern.to_ascii_lowercase();
                let glob = lower.iter().any(|b| matches!(b, b'*' | b'?' | b'['));
                if glob && raftkv_kv::glob::matches(&lower, name.as_bytes()) {
                    Some(Bytes::from(name.to_string()))
                } else if !glob && lower == name.as_bytes() {
                    Some(pattern.clone())
                } else {
                    None
                }
            })?;
            Some((Value::Bulk(asked), Value::bulk(value.clone())))
        })
        .collect();
    Value::Map(pairs)
}

/// `WAIT numreplicas timeout` (milliseconds, 0 for none), its arguments checked as Redis checks them.
pub(super) fn wait(args: &[Bytes]) -> Plan {
    let Some(replicas) = integer(&args[1]) else {
        return now(Value::err("value is not an integer or out of range"));
    };
    match integer(&args[2]) {
        None => now(Value::err("timeout is not an integer or out of range")),
        Some(ms) if ms < 0 => now(Value::err("timeout is negative")),
        Some(0) => Plan::Wait {
            replicas,
            timeout: None,
        },
        Some(ms) => Plan::Wait {
            replicas,
            timeout: Some(std::time::Duration::from_millis(ms as u64)),
        },
    }
}

//! What each Redis command becomes: an answer known at once, or requests to the node loop (reads
//! through ReadIndex, writes through the log, exactly as the CS733 port sends them) and how to turn
//! their replies into the Redis reply.
//!
//! Every write is one log entry, however many keys it touches (MSET, RENAME, EXEC): nothing is
//! approximated by several non-atomic steps.

mod finish;
mod keys;
mod server;
mod strings;

use bytes::Bytes;
use raftkv_kv::{SetCondition, SetExpiry};
use raftkv_protocol::limits::is_valid_key;
use raftkv_resp::Value;

use crate::request::Op;
pub use finish::finish;
pub(crate) use server::config_get;

/// The commands this front end knows, for `COMMAND COUNT` and error messages.
pub const SUPPORTED: &[&str] = &[
    // Connection and server.
    "PING",
    "ECHO",
    "SELECT",
    "HELLO",
    "CLIENT",
    "QUIT",
    "RESET",
    "COMMAND",
    "CONFIG",
    "AUTH",
    "TIME",
    "DBSIZE",
    "INFO",
    "WAIT",
    "FLUSHDB",
    "FLUSHALL",
    // Strings.
    "GET",
    "SET",
    "SETEX",
    "PSETEX",
    "SETNX",
    "GETSET",
    "GETDEL",
    "GETEX",
    "MGET",
    "MSET",
    "MSETNX",
    "STRLEN",
    "GETRANGE",
    "SETRANGE",
    "APPEND",
    "INCR",
    "INCRBY",
    "DECR",
    "DECRBY",
    "INCRBYFLOAT",
    // Keys.
    "DEL",
    "UNLINK",
    "EXISTS",
    "TYPE",
    "TTL",
    "PTTL",
    "EXPIRE",
    "PEXPIRE",
    "EXPIREAT",
    "PEXPIREAT",
    "PERSIST",
    "RENAME",
    "RENAMENX",
    "KEYS",
    "SCAN",
    "RANDOMKEY",
    // Transactions.
    "MULTI",
    "EXEC",
    "DISCARD",
    "WATCH",
    "UNWATCH",
];

/// What the connection does with one command.
pub enum Plan {
    /// Answer now (and close the connection after it, for `QUIT`).
    Now { value: Value, close: bool },
    /// `HELLO`: switch protocol version, then answer.
    Hello { resp3: bool, name: Option<Bytes> },
    /// `CLIENT SETNAME`.
    SetName(Bytes),
    /// `CLIENT GETNAME`, `CLIENT ID`, `INFO`, `TIME`: answered from the connection's state or
    /// the node's status.
    Local(LocalQuery),
    /// Send these requests to the node loop, in order, and combine their replies.
    Node { ops: Vec<Op>, finish: Finish },
    /// `WAIT`: once the earlier replies are out, count the other nodes that hold their writes.
    Wait {
        replicas: i64,
        timeout: Option<std::time::Duration>,
    },
    /// MULTI, EXEC, DISCARD, WATCH, UNWATCH: the connection's transaction state.
    Transaction(TxCommand),
}

pub enum LocalQuery {
    ClientName,
    ClientId,
    ConfigGet(Vec<Bytes>),
    Info(Vec<String>),
    Time,
}

pub enum TxCommand {
    Multi,
    Exec,
    Discard,
    Watch(Vec<Bytes>),
    Unwatch,
    /// RESET: leaves MULTI and forgets watches.
    Reset,
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
    /// The store's own answer: an integer, a value, `+OK`, or the error it gave (INCR, APPEND,
    /// MSET, INCRBYFLOAT...).
    Store,
    /// `+OK` if written, null if the condition failed (SET NX/XX).
    SetWith,
    /// 1 if written, 0 if the key existed (SETNX).
    SetNx,
    /// `+OK`, or 1/0 for RENAMENX, or `no such key`.
    Rename,
    /// The keys found, as an array (KEYS).
    Keys,
    /// `[cursor, [keys]]` (SCAN).
    Scan,
    /// Null if the key is absent, else this error: GETEX looks the key up before it checks the
    /// expiry's argument.
    NullOrError(&'static str),
}

fn upper(word: &[u8]) -> String {
    String::from_utf8_lossy(word).to_ascii_uppercase()
}

/// Whether an answer given while queuing discards the transaction, as in Redis: an unknown command or
/// a wrong number of arguments (found before the command could run). Other errors are the command's
/// own answer, given in its place in EXEC's reply.
pub fn aborts_transaction(value: &Value) -> bool {
    matches!(value, Value::Error(text)
        if text.starts_with("ERR wrong number of arguments") || text.starts_with("ERR unknown command"))
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

/// An integer argument as Redis reads one (`string2ll`): an optional `-` and decimal digits, no `+`,
/// no leading zeros (but `0` itself), no spaces, no `-0`, within `i64`.
fn integer(word: &[u8]) -> Option<i64> {
    let digits = word.strip_prefix(b"-").unwrap_or(word);
    let canonical = match digits {
        [] => false,
        [b'0'] => word.len() == 1,
        [first, rest @ ..] => (b'1'..=b'9').contains(first) && rest.iter().all(u8::is_ascii_digit),
    };
    if !canonical {
        return None;
    }
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
        "RESET" if argc == 1 => Plan::Transaction(TxCommand::Reset),
        "HELLO" => server::hello(args),
        "CLIENT" if argc >= 2 => server::client(args),
        "COMMAND" => server::command(args),
        "CONFIG" if argc >= 2 => server::config(args),
        "AUTH" if argc >= 2 => server::auth(&args[1..]),
        "TIME" if argc == 1 => Plan::Local(LocalQuery::Time),
        "WAIT" if argc == 3 => server::wait(args),
        "DBSIZE" if argc == 1 => Plan::Node {
            ops: vec![Op::Read(raftkv_kv::Request::DbSize)],
            finish: Finish::Store,
        },
        "INFO" => Plan::Local(LocalQuery::Info(
            args[1..]
                .iter()
                .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase())
                .collect(),
        )),
        "FLUSHDB" | "FLUSHALL" => keys::flush(args),
        "MULTI" if argc == 1 => Plan::Transaction(TxCommand::Multi),
        "EXEC" if argc == 1 => Plan::Transaction(TxCommand::Exec),
        "DISCARD" if argc == 1 => Plan::Transaction(TxCommand::Discard),
        "UNWATCH" if argc == 1 => Plan::Transaction(TxCommand::Unwatch),
        "WATCH" if argc >= 2 => Plan::Transaction(TxCommand::Watch(args[1..].to_vec())),
        "GET" if argc == 2 => strings::read(&args[1], Finish::Value, false),
        "STRLEN" if argc == 2 => strings::read(&args[1], Finish::Len, false),
        "TYPE" if argc == 2 => strings::read(&args[1], Finish::Type, false),
        "GETRANGE" if argc == 4 => match (integer(&args[2]), integer(&args[3])) {
            (Some(start), Some(end)) => strings::read(&args[1], Finish::Range(start, end), false),
            _ => now(Value::err("value is not an integer or out of range")),
        },
        "MGET" if argc >= 2 => strings::reads(&args[1..], Finish::Values),
        "EXISTS" if argc >= 2 => strings::reads(&args[1..], Finish::Count),
        "SET" if argc >= 3 => strings::set(args, max_value_size),
        "SETNX" if argc == 3 => strings::set_with(
            &args[1],
            &args[2],
            SetCondition::IfAbsent,
            false,
            SetExpiry::Never,
            Finish::SetNx,
            max_value_size,
        ),
        "GETSET" if argc == 3 => strings::set_with(
            &args[1],
            &args[2],
            SetCondition::Always,
            true,
            SetExpiry::Never,
            Finish::Value,
            max_value_size,
        ),
        "SETEX" | "PSETEX" if argc == 4 => strings::setex(args, name == "PSETEX", max_value_size),
        "GETDEL" if argc == 2 => strings::getdel(&args[1]),
        "GETEX" if argc >= 2 => strings::getex(args),
        "INCR" | "DECR" if argc == 2 => {
            strings::incr(&args[1], if name == "INCR" { 1 } else { -1 })
        }
        "INCRBY" | "DECRBY" if argc == 3 => match integer(&args[2]) {
            Some(by) if name == "INCRBY" => strings::incr(&args[1], by),
            Some(by) => match by.checked_neg() {
                Some(by) => strings::incr(&args[1], by),
                None => now(Value::err("decrement would overflow")),
            },
            None => now(Value::err("value is not an integer or out of range")),
        },
        "INCRBYFLOAT" if argc == 3 => strings::incrbyfloat(args),
        "APPEND" if argc == 3 => strings::append(&args[1], &args[2]),
        "SETRANGE" if argc == 4 => strings::setrange(args, max_value_size),
        "MSET" | "MSETNX" if argc >= 3 && argc % 2 == 1 => {
            strings::mset(args, name == "MSETNX", max_value_size)
        }
        "DEL" | "UNLINK" if argc >= 2 => keys::del(&args[1..]),
        "TTL" | "PTTL" if argc == 2 => keys::ttl(&args[1], name == "PTTL"),
        "EXPIRE" | "PEXPIRE" | "EXPIREAT" | "PEXPIREAT" if argc >= 3 => keys::expire(&name, args),
        "PERSIST" if argc == 2 => keys::persist(&args[1]),
        "RENAME" | "RENAMENX" if argc == 3 => keys::rename(args, name == "RENAMENX"),
        "KEYS" if argc == 2 => keys::keys(&args[1]),
        "SCAN" if argc >= 2 => keys::scan(args),
        "RANDOMKEY" if argc == 1 => keys::randomkey(),
        _ if SUPPORTED.contains(&name.as_str()) => arity(&name),
        _ => unknown(args),
    }
}

/// Redis's wording exactly: the name cut at 128 bytes, arguments quoted, each followed by a space,
/// until 128 bytes.
fn unknown(args: &[Bytes]) -> Plan {
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
        String::from_utf8_lossy(&args[0][..args[0].len().min(128)])
    )))
}

//! String commands: the reads (GET, MGET, ...) and the writes that set or compute a value (SET and
//! its options, SETNX, GETSET, GETEX, MSET, INCR and friends, INCRBYFLOAT, APPEND, SETRANGE).

use bytes::Bytes;
use raftkv_kv::{Command, Request, SetCondition, SetExpiry};
use raftkv_protocol::limits::MAX_EXPTIME_SECS;
use raftkv_resp::Value;

use super::{integer, key, now, upper, Finish, Plan, SYNTAX};
use crate::request::Op;

/// Redis's limit on a string that SETRANGE may grow (proto-max-bulk-len).
const MAX_STRING: i64 = 512 << 20;

pub(super) fn incr(word: &Bytes, by: i64) -> Plan {
    match key(word) {
        Ok(key) => Plan::Node {
            ops: vec![Op::write(Command::IncrBy { key, by })],
            finish: Finish::Store,
        },
        Err(error) => now(error),
    }
}

pub(super) fn read(word: &Bytes, finish: Finish, meta: bool) -> Plan {
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

pub(super) fn reads(words: &[Bytes], finish: Finish) -> Plan {
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
/// has no option or only EX (the CS733 port's own entry), otherwise a `SetWith` entry. Options are
/// read as Redis reads them: repeating one is allowed (the last argument wins), two that exclude each
/// other are a syntax error, and only then is the expiry's argument checked.
pub(super) fn set(args: &[Bytes], max_value_size: usize) -> Plan {
    let mut condition = SetCondition::Always;
    let mut get = false;
    let mut expiry: Option<ExpiryOption> = None;
    let mut i = 3;
    while i < args.len() {
        let option = upper(&args[i]);
        match option.as_str() {
            "NX" if condition != SetCondition::IfPresent => condition = SetCondition::IfAbsent,
            "XX" if condition != SetCondition::IfAbsent => condition = SetCondition::IfPresent,
            "GET" => get = true,
            _ => match ExpiryOption::parse(&option, args.get(i + 1), expiry.as_ref(), false) {
                Some(option) => {
                    i += usize::from(option.argument.is_some());
                    expiry = Some(option);
                }
                None => return now(Value::err(SYNTAX)),
            },
        }
        i += 1;
    }
    let (expiry, seconds) = match expiry.map(|option| option.expiry()) {
        None => (None, None),
        Some(Ok((expiry, seconds))) => (Some(expiry), seconds),
        Some(Err(error)) => return now(error.reply("set")),
    };
    let plain = condition == SetCondition::Always && !get;
    match expiry {
        None if plain => store(&args[1], &args[2], None, "set", max_value_size),
        Some(SetExpiry::AfterMs(_)) if plain && seconds.is_some() => {
            store(&args[1], &args[2], seconds, "set", max_value_size)
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

/// Why an expiry option's argument is refused (Redis: "value is not an integer or out of range", or
/// "invalid expire time in '<command>' command").
enum ExpiryError {
    NotInteger,
    Invalid,
}

const NOT_INTEGER: &str = "value is not an integer or out of range";

impl ExpiryError {
    fn reply(self, command: &str) -> Value {
        match self {
            ExpiryError::NotInteger => Value::err(NOT_INTEGER),
            ExpiryError::Invalid => {
                Value::err(format!("invalid expire time in '{command}' command"))
            }
        }
    }
}

/// One of SET's and GETEX's expiry options, as written: `EX`, `PX`, `EXAT`, `PXAT` with their
/// argument, or `KEEPTTL` (SET) / `PERSIST` (GETEX) without one.
struct ExpiryOption {
    name: &'static str,
    argument: Option<Bytes>,
}

impl ExpiryOption {
    /// `word` (upper case) as an expiry option after `before`, the one already given; `None` if it
    /// is not one, lacks its argument, or excludes `before` (a repeat of the same option does not).
    fn parse(
        word: &str,
        next: Option<&Bytes>,
        before: Option<&ExpiryOption>,
        getex: bool,
    ) -> Option<ExpiryOption> {
        let name = match word {
            "EX" => "EX",
            "PX" => "PX",
            "EXAT" => "EXAT",
            "PXAT" => "PXAT",
            "KEEPTTL" if !getex => "KEEPTTL",
            "PERSIST" if getex => "PERSIST",
            _ => return None,
        };
        if before.is_some_and(|before| before.name != name) {
            return None;
        }
        let argument = match name {
            "KEEPTTL" | "PERSIST" => None,
            _ => Some(next?.clone()),
        };
        Some(ExpiryOption { name, argument })
    }

    /// The expiry it asks for, and the seconds of a plain `EX`.
    fn expiry(&self) -> Result<(SetExpiry, Option<i64>), ExpiryError> {
        let Some(argument) = &self.argument else {
            let expiry = if self.name == "KEEPTTL" {
                SetExpiry::Keep
            } else {
                SetExpiry::Never
            };
            return Ok((expiry, None));
        };
        let n = integer(argument).ok_or(ExpiryError::NotInteger)?;
        if n <= 0 {
            return Err(ExpiryError::Invalid);
        }
        let ms = match self.name {
            "EX" | "EXAT" => n.checked_mul(1000).ok_or(ExpiryError::Invalid)? as u64,
            _ => n as u64,
        };
        if self.name.ends_with("AT") {
            return Ok((SetExpiry::AtMs(ms), None));
        }
        if ms > raftkv_kv::MAX_EXPIRY_MS {
            return Err(ExpiryError::Invalid);
        }
        let seconds = (self.name == "EX").then_some(n);
        Ok((SetExpiry::AfterMs(ms), seconds))
    }
}

/// `SETEX key seconds value` and `PSETEX key milliseconds value`: `SET key value EX|PX ...`, with
/// their own names in the errors.
pub(super) fn setex(args: &[Bytes], millis: bool, max_value_size: usize) -> Plan {
    let (name, command) = if millis {
        ("PX", "psetex")
    } else {
        ("EX", "setex")
    };
    let option = ExpiryOption {
        name,
        argument: Some(args[2].clone()),
    };
    match option.expiry() {
        // SETEX: the CS733 `set` entry, in whole seconds.
        Ok((_, Some(seconds))) => store(&args[1], &args[3], Some(seconds), command, max_value_size),
        // PSETEX: to the millisecond, a `SetWith` entry as `SET ... PX`.
        Ok((expiry, None)) => set_with(
            &args[1],
            &args[3],
            SetCondition::Always,
            false,
            expiry,
            Finish::SetWith,
            max_value_size,
        ),
        Err(error) => now(error.reply(command)),
    }
}

pub(super) fn set_with(
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

/// A plain write of `value` under `word` (the CS733 `set` entry), expiring after `ttl` seconds.
pub(super) fn store(
    word: &Bytes,
    value: &Bytes,
    ttl: Option<i64>,
    command: &str,
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
    let seconds = ttl.map_or(0, |s| s as u64);
    let exptime = u32::try_from(seconds).unwrap_or(u32::MAX);
    if exptime > MAX_EXPTIME_SECS {
        return now(Value::err(format!(
            "invalid expire time in '{command}' command"
        )));
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

pub(super) fn getdel(word: &Bytes) -> Plan {
    write(word, |key| Command::GetDel { key }, Finish::Value)
}

pub(super) fn append(word: &Bytes, value: &Bytes) -> Plan {
    let value = value.clone();
    write(word, |key| Command::Append { key, value }, Finish::Store)
}

/// The single write a command sends, or the error its key got.
fn write(word: &Bytes, command: impl FnOnce(Bytes) -> Command, finish: Finish) -> Plan {
    match key(word) {
        Ok(key) => Plan::Node {
            ops: vec![Op::write(command(key))],
            finish,
        },
        Err(error) => now(error),
    }
}

/// `GETEX key [EX s | PX ms | EXAT s | PXAT ms | PERSIST]`: a plain read without an option.
pub(super) fn getex(args: &[Bytes]) -> Plan {
    let mut option: Option<ExpiryOption> = None;
    let mut i = 2;
    while i < args.len() {
        match ExpiryOption::parse(&upper(&args[i]), args.get(i + 1), option.as_ref(), true) {
            Some(next) => {
                i += 1 + usize::from(next.argument.is_some());
                option = Some(next);
            }
            None => return now(Value::err(SYNTAX)),
        }
    }
    let expiry = match option.map(|option| option.expiry()) {
        None => return read(&args[1], Finish::Value, false),
        Some(Ok((expiry, _))) => expiry,
        // Redis looks the key up first: an absent key answers null whatever the argument.
        Some(Err(error)) => {
            let error = match error {
                ExpiryError::NotInteger => NOT_INTEGER,
                ExpiryError::Invalid => "invalid expire time in 'getex' command",
            };
            return read(&args[1], Finish::NullOrError(error), false);
        }
    };
    write(
        &args[1],
        |key| Command::GetEx { key, expiry },
        Finish::Value,
    )
}

/// `SETRANGE key offset value`.
pub(super) fn setrange(args: &[Bytes], max_value_size: usize) -> Plan {
    let Some(offset) = integer(&args[2]) else {
        return now(Value::err("value is not an integer or out of range"));
    };
    if offset < 0 {
        return now(Value::err("offset is out of range"));
    }
    // An empty value changes nothing whatever the offset (the store answers the length).
    if !args[3].is_empty() && offset > MAX_STRING - args[3].len() as i64 {
        return now(Value::err(
            "string exceeds maximum allowed size (proto-max-bulk-len)",
        ));
    }
    if args[3].len() > max_value_size {
        return now(Value::err(
            "value larger than this cluster's max_value_size",
        ));
    }
    let value = args[3].clone();
    write(
        &args[1],
        |key| Command::SetRange {
            key,
            offset: offset.min(i64::from(u32::MAX)) as u32,
            value,
        },
        Finish::Store,
    )
}

/// `INCRBYFLOAT key increment`.
pub(super) fn incrbyfloat(args: &[Bytes]) -> Plan {
    match raftkv_kv::store::parse_float(&args[2]) {
        Some(by) => write(
            &args[1],
            |key| Command::incr_by_float(key, by),
            Finish::Store,
        ),
        // `inf`, or beyond an f64 (Redis computes in long double, which holds up to ~1e4932).
        None if is_infinite(&args[2]) => now(Value::err("increment would produce NaN or Infinity")),
        None => now(Value::err("value is not a valid float")),
    }
}

fn is_infinite(word: &[u8]) -> bool {
    std::str::from_utf8(word)
        .ok()
        .and_then(|text| text.parse::<f64>().ok())
        .is_some_and(f64::is_infinite)
}

/// `MSET k v [k v ...]` and `MSETNX`: one entry, all or nothing.
pub(super) fn mset(args: &[Bytes], nx: bool, max_value_size: usize) -> Plan {
    let mut pairs = Vec::with_capacity(args.len() / 2);
    for pair in args[1..].chunks(2) {
        match key(&pair[0]) {
            Ok(key) if pair[1].len() <= max_value_size => pairs.push((key, pair[1].clone())),
            Ok(_) => {
                return now(Value::err(
                    "value larger than this cluster's max_value_size",
                ))
            }
            Err(error) => return now(error),
        }
    }
    Plan::Node {
        ops: vec![Op::write(Command::MSet { pairs, nx })],
        finish: Finish::Store,
    }
}

//! The recorded history: every client operation (the simulator checker's [`Op`]) and every fault
//! injected and healed, saved as text, one record per line, so that a failing run can be re-checked
//! offline (`raftkv-chaos --check FILE`) and read by a human.
//!
//! Lines: `op <conn> <key> <call_us> <ret_us|-> <kind> <fields...>`,
//! `event <at_us> <heal|fault> <description>` and `note <name> <number>` (counts that are not in the
//! operations: definite failures, diverged nodes); `#` starts a comment. Times are microseconds since the
//! run started.

use std::fmt::Write as _;
use std::path::Path;

use raftkv_sim::linearizability::{CasOutcome, Key, Op, OpKind, SetCondition, Value};

/// Keys below this are registers (read, written, swapped, deleted by every client); keys from it on are
/// the ledger: each written once, never deleted, read back at the end.
pub const LEDGER_BASE: Key = 1 << 40;

/// The connection id of the reads made after healing, to find lost writes.
pub const FINAL_CONN: u64 = 1 << 32;

/// The key's name on the wire.
pub fn key_name(key: Key) -> String {
    if key >= LEDGER_BASE {
        format!("l{}", key - LEDGER_BASE)
    } else {
        format!("r{key}")
    }
}

/// A value names the write that stored it, followed by `pad` bytes of padding (larger values make
/// the log roll segments and take snapshots sooner).
pub fn value_of(write: u64, pad: usize) -> String {
    let mut value = format!("w{write}");
    if pad > 0 {
        value.push('.');
        value.extend(std::iter::repeat_n('p', pad));
    }
    value
}

/// The write a value names, if it is one of the workload's (and its padding is intact).
pub fn write_of(value: &[u8]) -> Option<u64> {
    let rest = value.strip_prefix(b"w")?;
    let (digits, pad) = match rest.iter().position(|&b| b == b'.') {
        Some(dot) => (&rest[..dot], &rest[dot + 1..]),
        None => (rest, &b""[..]),
    };
    if !pad.iter().all(|&b| b == b'p') {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// A fault injected or healed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub at_us: u64,
    /// True when the event ends the faults (everything healed).
    pub heal: bool,
    pub what: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    pub ops: Vec<Op>,
    pub events: Vec<Event>,
    pub notes: Vec<(String, u64)>,
}

fn opt<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn parse_opt<T: std::str::FromStr>(token: &str) -> Result<Option<T>, String> {
    if token == "-" {
        return Ok(None);
    }
    token
        .parse()
        .map(Some)
        .map_err(|_| format!("not a number: {token}"))
}

impl History {
    pub fn to_text(&self) -> String {
        let mut out = String::from("# raftkv-chaos history v1\n");
        for (name, value) in &self.notes {
            let _ = writeln!(out, "note {name} {value}");
        }
        for event in &self.events {
            let kind = if event.heal { "heal" } else { "fault" };
            let _ = writeln!(out, "event {} {kind} {}", event.at_us, event.what);
        }
        for op in &self.ops {
            let _ = write!(
                out,
                "op {} {} {} {} ",
                op.conn,
                op.key,
                op.call,
                opt(op.ret)
            );
            let _ = match op.kind {
                OpKind::Set {
                    write,
                    ttl_s,
                    version,
                } => writeln!(out, "set {write} {ttl_s} {}", opt(version)),
                OpKind::Cas {
                    write,
                    ttl_s,
                    expected,
                    outcome,
                    version,
                } => {
                    let outcome = match outcome {
                        Some(CasOutcome::Ok) => "ok",
                        Some(CasOutcome::VersionMismatch) => "mismatch",
                        Some(CasOutcome::NotFound) => "notfound",
                        None => "-",
                    };
                    writeln!(
                        out,
                        "cas {write} {ttl_s} {expected} {outcome} {}",
                        opt(version)
                    )
                }
                OpKind::Delete { deleted } => {
                    writeln!(out, "delete {}", opt(deleted.map(u64::from)))
                }
                OpKind::Get { value } => writeln!(out, "get {}", opt(value)),
                OpKind::Getm { value: None } => writeln!(out, "getm -"),
                OpKind::Getm {
                    value: Some((write, version, remaining)),
                } => writeln!(out, "getm {write} {version} {remaining}"),
                OpKind::SetWith {
                    write,
                    ttl_s,
                    keep_ttl,
                    condition,
                    get,
                    wrote,
                    old,
                    version,
                } => {
                    // KEEPTTL in the lifetime's place.
                    let ttl_s = if keep_ttl {
                        "keep".to_string()
                    } else {
                        ttl_s.to_string()
                    };
                    let condition = match condition {
                        SetCondition::Always => "always",
                        SetCondition::IfAbsent => "nx",
                        SetCondition::IfPresent => "xx",
                    };
                    writeln!(
                        out,
                        "setwith {write} {ttl_s} {condition} {} {} {} {}",
                        u64::from(get),
                        opt(wrote.map(u64::from)),
                        found_text(old),
                        opt(version)
                    )
                }
                OpKind::GetDel { value } => writeln!(out, "getdel {}", found_text(value)),
                // The chaos workload does not send the Redis front end's compound commands; such a
                // line is written for a reader and refused by `parse`.
                kind => writeln!(out, "compound {kind:?}"),
            };
        }
        out
    }

    pub fn parse(text: &str) -> Result<History, String> {
        let mut history = History::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |why: String| format!("line {}: {why}: {line}", n + 1);
            let tokens: Vec<&str> = line.split_whitespace().collect();
            match tokens[0] {
                "event" if tokens.len() >= 3 => history.events.push(Event {
                    at_us: tokens[1].parse().map_err(|_| at("bad time".into()))?,
                    heal: tokens[2] == "heal",
                    what: tokens[3..].join(" "),
                }),
                "op" => history.ops.push(parse_op(&tokens[1..]).map_err(at)?),
                "note" if tokens.len() == 3 => history.notes.push((
                    tokens[1].to_string(),
                    tokens[2].parse().map_err(|_| at("bad number".into()))?,
                )),
                _ => return Err(at("unknown record".into())),
            }
        }
        Ok(history)
    }

    pub fn note(&self, name: &str) -> Option<u64> {
        self.notes.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.to_text())
    }

    pub fn load(path: &Path) -> Result<History, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        History::parse(&text)
    }
}

/// What a GET of SET or a GETDEL found: `-` unknown (or not asked), `absent`, or the write's id.
fn found_text(found: Option<Option<Value>>) -> String {
    match found {
        None => "-".to_string(),
        Some(None) => "absent".to_string(),
        Some(Some(write)) => write.to_string(),
    }
}

fn parse_found(token: &str) -> Result<Option<Option<Value>>, String> {
    match token {
        "-" => Ok(None),
        "absent" => Ok(Some(None)),
        n => n.parse().map(|w| Some(Some(w))),
    }
}

fn parse_op(tokens: &[&str]) -> Result<Op, String> {
    let field = |i: usize| tokens.get(i).copied().ok_or("too few fields".to_string());
    let number = |i: usize| -> Result<u64, String> {
        let token = field(i)?;
        token.parse().map_err(|_| format!("not a number: {token}"))
    };
    let conn = number(0)?;
    let key = number(1)?;
    let call = number(2)?;
    let ret = parse_opt(field(3)?)?;
    let kind = match field(4)? {
        "set" => OpKind::Set {
            write: number(5)?,
            ttl_s: u32::try_from(number(6)?).map_err(|e| e.to_string())?,
            version: parse_opt(field(7)?)?,
        },
        "cas" => OpKind::Cas {
            write: number(5)?,
            ttl_s: u32::try_from(number(6)?).map_err(|e| e.to_string())?,
            expected: number(7)?,
            outcome: match field(8)? {
                "ok" => Some(CasOutcome::Ok),
                "mismatch" => Some(CasOutcome::VersionMismatch),
                "notfound" => Some(CasOutcome::NotFound),
                "-" => None,
                other => return Err(format!("unknown cas outcome {other}")),
            },
            version: parse_opt(field(9)?)?,
        },
        "delete" => OpKind::Delete {
            deleted: parse_opt::<u64>(field(5)?)?.map(|d| d == 1),
        },
        "get" => OpKind::Get {
            value: parse_opt(field(5)?)?,
        },
        "getm" if field(5)? == "-" => OpKind::Getm { value: None },
        "getm" => OpKind::Getm {
            value: Some((field(5)?.parse()?, number(6)?, number(7)?)),
        },
        "setwith" => OpKind::SetWith {
            write: number(5)?,
            ttl_s: match field(6)? {
                "keep" => 0,
                _ => u32::try_from(number(6)?).map_err(|e| e.to_string())?,
            },
            keep_ttl: field(6)? == "keep",
            condition: match field(7)? {
                "always" => SetCondition::Always,
                "nx" => SetCondition::IfAbsent,
                "xx" => SetCondition::IfPresent,
                other => return Err(format!("unknown set condition {other}")),
            },
            get: number(8)? == 1,
            wrote: parse_opt::<u64>(field(9)?)?.map(|w| w == 1),
            old: parse_found(field(10)?)?,
            version: parse_opt(field(11)?)?,
        },
        "getdel" => OpKind::GetDel {
            value: parse_found(field(5)?)?,
        },
        other => return Err(format!("unknown operation {other}")),
    };
    if ret.is_some_and(|ret| ret < call) {
        return Err("returns before its call".into());
    }
    Ok(Op {
        conn,
        key,
        kind,
        call,
        ret,
        index: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_record_survives_the_round_trip() {
        let op = |kind, ret| Op {
            conn: 3,
            key: 7,
            kind,
            call: 10,
            ret,
            index: None,
        };
        let history = History {
            ops: vec![
                op(
                    OpKind::Set {
                        write: 1,
                        ttl_s: 2,
                        version: Some(9),
                    },
                    Some(11),
                ),
                op(
                    OpKind::Cas {
                        write: 2,
                        ttl_s: 0,
                        expected: 9,
                        outcome: None,
                        version: None,
                    },
                    None,
                ),
                op(
                    OpKind::Cas {
                        write: 3,
                        ttl_s: 0,
                        expected: 9,
                        outcome: Some(CasOutcome::NotFound),
                        version: None,
                    },
                    Some(12),
                ),
                op(
                    OpKind::Delete {
                        deleted: Some(false),
                    },
                    Some(13),
                ),
                op(
                    OpKind::Get {
                        value: Some(1.into()),
                    },
                    Some(14),
                ),
                op(
                    OpKind::Get {
                        value: Some(Value::Int(-3)),
                    },
                    Some(14),
                ),
                op(OpKind::Getm { value: None }, Some(15)),
                op(
                    OpKind::Getm {
                        value: Some((Value::Text(0xbeef), 9, 2)),
                    },
                    Some(16),
                ),
                op(
                    OpKind::SetWith {
                        write: 4,
                        ttl_s: 0,
                        keep_ttl: true,
                        condition: SetCondition::IfAbsent,
                        get: true,
                        wrote: Some(false),
                        old: Some(Some(1.into())),
                        version: None,
                    },
                    Some(17),
                ),
                op(
                    OpKind::SetWith {
                        write: 5,
                        ttl_s: 3,
                        keep_ttl: false,
                        condition: SetCondition::IfPresent,
                        get: false,
                        wrote: None,
                        old: None,
                        version: None,
                    },
                    None,
                ),
                op(OpKind::GetDel { value: Some(None) }, Some(18)),
                op(OpKind::GetDel { value: None }, None),
            ],
            events: vec![Event {
                at_us: 5,
                heal: false,
                what: "kill node 2".into(),
            }],
            notes: vec![("failed".into(), 4)],
        };
        assert_eq!(History::parse(&history.to_text()), Ok(history));
    }

    #[test]
    fn names_and_values_map_back() {
        assert_eq!(key_name(4), "r4");
        assert_eq!(key_name(LEDGER_BASE + 4), "l4");
        assert_eq!(write_of(value_of(42, 0).as_bytes()), Some(42));
        assert_eq!(write_of(value_of(42, 100).as_bytes()), Some(42));
        assert_eq!(write_of(b"x42"), None);
        assert_eq!(write_of(b"w42.ppq"), None);
    }

    #[test]
    fn garbage_is_refused_with_its_line() {
        let err = History::parse("op 1 2 3\n").unwrap_err();
        assert!(err.contains("line 1"), "{err}");
        assert!(History::parse("op 1 2 30 20 get -\n").is_err());
    }
}

//! The commands replicated through the Raft log and their binary encoding.
//!
//! Entry layout (integers little-endian):
//! `format:u8=1 | stamp_ms:u64 | tag:u8 | fields` for a command outside a session, and
//! `format:u8=2 | stamp_ms:u64 | session:u64 | seq:u64 | tag:u8 | fields` for a write in one, where
//! fields are
//! - Set      (tag 1): `exptime:u32 | key_len:u8 | key | value` (value runs to the end)
//! - Cas      (tag 2): `exptime:u32 | version:u64 | key_len:u8 | key | value`
//! - Delete   (tag 3): `key_len:u8 | key`
//! - Expire   (tag 4): nothing.
//! - Register (tag 5): nothing.
//! - IncrBy   (tag 6): `by:i64 | key_len:u8 | key`
//! - Append   (tag 7): `key_len:u8 | key | value` (value runs to the end)
//! - MSet     (tag 8): `nx:u8 | count:u32 | count × (key_len:u8 | key | value_len:u32 | value)`
//! - SetWith  (tag 9): `condition:u8 (0 always, 1 if absent, 2 if present) | get:u8 |
//!   expiry:u8 (0 never, 1 keep, 2 after ms, 3 at ms) | ms:u64 | key_len:u8 | key | value`
//! - GetDel   (tag 10): `key_len:u8 | key`
//! - SetTtl   (tag 11): `expiry:u8 (0 never, 2 after ms, 3 at ms) | ms:u64 | key_len:u8 | key`
//! - SetTtlIf (tag 12): `condition:u8 (1 NX, 2 XX, 3 GT, 4 LT, 5 XX+LT) | ` then as SetTtl (a
//!   SetTtl whose condition is not `Always`; tag 11 stays what it was)
//! - GetEx    (tag 13): as SetTtl
//! - SetRange (tag 14): `offset:u32 | key_len:u8 | key | value`
//! - IncrByFloat (tag 15): `by:f64 bits | key_len:u8 | key`
//! - Rename   (tag 16): `nx:u8 | key_len:u8 | from | key_len:u8 | to`
//! - Flush    (tag 17): nothing.
//! - Transaction (tag 18): `watch_count:u32 | watch_count × (key_len:u8 | key | version:u64) |
//!   op_count:u32 | op_count × (op_len:u32 | op)`, an op being `0 | tag | fields` (a command as
//!   above, neither Expire, Register nor Transaction), `1 | key_len:u8 | key` (a get) or
//!   `2 | key_len:u8 | key` (a pttl).
//!
//! The leading format byte lets a later release change the layout while still reading old logs.

mod decode;
mod encode;

use bytes::Bytes;

pub use crate::decode_error::DecodeError;
use crate::protocol::{Request, SessionSeq};

const FORMAT_V1: u8 = 1;
const FORMAT_IN_SESSION: u8 = 2;
const TAG_SET: u8 = 1;
const TAG_CAS: u8 = 2;
const TAG_DELETE: u8 = 3;
const TAG_EXPIRE: u8 = 4;
const TAG_REGISTER: u8 = 5;
const TAG_INCR_BY: u8 = 6;
const TAG_APPEND: u8 = 7;
const TAG_MSET: u8 = 8;
const TAG_SET_WITH: u8 = 9;
const TAG_GET_DEL: u8 = 10;
const TAG_SET_TTL: u8 = 11;
const TAG_SET_TTL_IF: u8 = 12;
const TAG_GET_EX: u8 = 13;
const TAG_SET_RANGE: u8 = 14;
const TAG_INCR_BY_FLOAT: u8 = 15;
const TAG_RENAME: u8 = 16;
const TAG_FLUSH: u8 = 17;
const TAG_TRANSACTION: u8 = 18;

/// When a [`Command::SetWith`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetCondition {
    Always,
    /// Only if the key does not exist (Redis's NX).
    IfAbsent,
    /// Only if it does (XX).
    IfPresent,
}

/// The expiry a [`Command::SetWith`] gives the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetExpiry {
    Never,
    /// The key's current expiry (KEEPTTL).
    Keep,
    /// This many milliseconds after the entry's stamp (EX, PX); at least 1, at most ten years.
    AfterMs(u64),
    /// At this instant of the replicated clock, in ms since the Unix epoch (EXAT, PXAT).
    AtMs(u64),
}

impl SetExpiry {
    /// The entry's `expiry:u8 | ms:u64` fields.
    pub fn to_wire(self) -> (u8, u64) {
        match self {
            SetExpiry::Never => (0, 0),
            SetExpiry::Keep => (1, 0),
            SetExpiry::AfterMs(ms) => (2, ms),
            SetExpiry::AtMs(ms) => (3, ms),
        }
    }

    /// The expiry those fields describe, if valid.
    fn from_wire(kind: u8, ms: u64) -> Option<SetExpiry> {
        match (kind, ms) {
            (0, 0) => Some(SetExpiry::Never),
            (1, 0) => Some(SetExpiry::Keep),
            (2, ms) if (1..=MAX_EXPIRY_MS).contains(&ms) => Some(SetExpiry::AfterMs(ms)),
            (3, ms) if ms < u64::MAX => Some(SetExpiry::AtMs(ms)),
            _ => None,
        }
    }
}

/// When a [`Command::SetTtl`] changes the key's expiry (Redis's EXPIRE options; a key without an
/// expiry counts as expiring never, later than any instant).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtlCondition {
    Always,
    /// NX: only if the key has no expiry.
    IfNone,
    /// XX: only if it has one.
    IfSome,
    /// GT (with or without XX): only if the new instant is later than the current one.
    IfLater,
    /// LT: only if the new instant is earlier than the current one (always, for no expiry).
    IfEarlier,
    /// XX and LT: only if the key has an expiry and the new instant is earlier.
    IfSomeAndEarlier,
}

impl TtlCondition {
    fn to_wire(self) -> u8 {
        match self {
            TtlCondition::Always => 0,
            TtlCondition::IfNone => 1,
            TtlCondition::IfSome => 2,
            TtlCondition::IfLater => 3,
            TtlCondition::IfEarlier => 4,
            TtlCondition::IfSomeAndEarlier => 5,
        }
    }

    fn from_wire(byte: u8) -> Option<TtlCondition> {
        Some(match byte {
            0 => TtlCondition::Always,
            1 => TtlCondition::IfNone,
            2 => TtlCondition::IfSome,
            3 => TtlCondition::IfLater,
            4 => TtlCondition::IfEarlier,
            5 => TtlCondition::IfSomeAndEarlier,
            _ => return None,
        })
    }

    /// Whether a key expiring at `current` (`None`: never) may be given `new`.
    pub fn allows(self, current: Option<u64>, new: u64) -> bool {
        match self {
            TtlCondition::Always => true,
            TtlCondition::IfNone => current.is_none(),
            TtlCondition::IfSome => current.is_some(),
            TtlCondition::IfLater => current.is_some_and(|at| new > at),
            TtlCondition::IfEarlier => current.is_none_or(|at| new < at),
            TtlCondition::IfSomeAndEarlier => current.is_some_and(|at| new < at),
        }
    }
}

/// A key a transaction watched and the version it had then (0: absent), checked when it applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    pub key: Bytes,
    pub version: u64,
}

/// One step of a [`Command::Transaction`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxOp {
    /// A write (not `Expire`, `Register` or another transaction).
    Write(Command),
    /// Read the key's value (answered as `get` is).
    Get(Bytes),
    /// Read the key's remaining lifetime (answered as [`Request::Pttl`] is).
    Pttl(Bytes),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Set {
        key: Bytes,
        exptime: u32,
        value: Bytes,
    },
    Cas {
        key: Bytes,
        exptime: u32,
        version: u64,
        value: Bytes,
    },
    Delete {
        key: Bytes,
    },
    /// Reclaim memory of keys that expired at or before the proposal's stamp (proposed
    /// periodically by the leader, so every replica reclaims the same keys at the same index).
    Expire,
    /// Open a client session; its id is this entry's index.
    Register,
    /// Add `by` to the key's value read as a decimal i64 (a missing key counts as 0), keeping its
    /// expiry; answers the new value (Redis's INCRBY, DECRBY, INCR, DECR).
    IncrBy {
        key: Bytes,
        by: i64,
    },
    /// Append `value` to the key's value (creating it), keeping its expiry; answers the new length.
    Append {
        key: Bytes,
        value: Bytes,
    },
    /// Set every pair at once, without expiry; with `nx`, only if none of the keys exists (Redis's
    /// MSET and MSETNX: one log entry, all or nothing).
    MSet {
        pairs: Vec<(Bytes, Bytes)>,
        nx: bool,
    },
    /// Redis's SET with options (and SETNX, GETSET): writes `value` if `condition` holds, with
    /// `expiry`; with `get`, answers the old value (or not found) whether or not it wrote, otherwise
    /// `Ok`, or not found when the condition failed.
    SetWith {
        key: Bytes,
        value: Bytes,
        condition: SetCondition,
        get: bool,
        expiry: SetExpiry,
    },
    /// Delete the key and answer its value (GETDEL).
    GetDel {
        key: Bytes,
    },
    /// Give a live key a new expiry (EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT; an instant already past
    /// deletes it) or none (PERSIST), if `condition` allows. Answers 1 if it changed something,
    /// else 0 (`Keep` is refused).
    SetTtl {
        key: Bytes,
        expiry: SetExpiry,
        condition: TtlCondition,
    },
    /// Answer a live key's value and give it `expiry` (GETEX with an option; `Never` is PERSIST,
    /// `Keep` is refused).
    GetEx {
        key: Bytes,
        expiry: SetExpiry,
    },
    /// Overwrite the value from byte `offset` with `value`, padding with zero bytes (creating the
    /// key if `value` is not empty), keeping its expiry; answers the new length (SETRANGE).
    SetRange {
        key: Bytes,
        offset: u32,
        value: Bytes,
    },
    /// Add the float whose IEEE 754 bits are `by_bits` to the key's value read as a decimal float
    /// (a missing key counts as 0), keeping its expiry; answers the new value (INCRBYFLOAT).
    /// Stored as bits so that commands stay comparable; see [`Command::incr_by_float`].
    IncrByFloat {
        key: Bytes,
        by_bits: u64,
    },
    /// Move a live key's value and expiry to `to` (replacing it; with `nx`, only if `to` is absent):
    /// RENAME answers `Ok`, RENAMENX 1 or 0, a missing `from` not found.
    Rename {
        from: Bytes,
        to: Bytes,
        nx: bool,
    },
    /// Delete every key (FLUSHDB, FLUSHALL); sessions stay.
    Flush,
    /// Redis's MULTI/EXEC: if every watched key still has the version it was watched at, apply
    /// every op in order at this one index and answer their replies (`Reply::Multi`); otherwise
    /// change nothing and answer `Reply::ExecAborted`.
    Transaction {
        watches: Vec<Watch>,
        ops: Vec<TxOp>,
    },
}

impl Command {
    /// [`Command::IncrByFloat`] adding `by`.
    pub fn incr_by_float(key: Bytes, by: f64) -> Command {
        Command::IncrByFloat {
            key,
            by_bits: by.to_bits(),
        }
    }
}

/// What one Raft log entry carries: a command, the session it belongs to if any, and the leader's
/// wall-clock time when it proposed it, which is the only clock the state machine ever consults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    pub stamp_ms: u64,
    pub session: Option<SessionSeq>,
    pub command: Command,
}

/// A client's write as the log will carry it: the command, its session if any, and whether the
/// client asked for `noreply`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientWrite {
    pub command: Command,
    pub session: Option<SessionSeq>,
    pub noreply: bool,
}

impl ClientWrite {
    /// The write to replicate for a client request; `None` for reads, which never enter the log.
    pub fn from_request(request: Request) -> Option<ClientWrite> {
        match request {
            Request::InSession { session, write } => {
                let (command, noreply) = Command::from_request(*write)?;
                if command == Command::Register {
                    return None;
                }
                Some(ClientWrite {
                    command,
                    session: Some(session),
                    noreply,
                })
            }
            request => Command::from_request(request).map(|(command, noreply)| ClientWrite {
                command,
                session: None,
                noreply,
            }),
        }
    }
}

impl Command {
    /// The command to replicate for a request outside a session and whether the client asked for
    /// `noreply`; `None` for reads, which never enter the log, and for a session's write (see
    /// [`ClientWrite::from_request`]).
    pub fn from_request(request: Request) -> Option<(Command, bool)> {
        match request {
            Request::Set {
                key,
                exptime,
                value,
                noreply,
            } => Some((
                Command::Set {
                    key,
                    exptime,
                    value,
                },
                noreply,
            )),
            Request::Cas {
                key,
                exptime,
                version,
                value,
                noreply,
            } => Some((
                Command::Cas {
                    key,
                    exptime,
                    version,
                    value,
                },
                noreply,
            )),
            Request::Delete { key } => Some((Command::Delete { key }, false)),
            Request::Register => Some((Command::Register, false)),
            Request::Get { .. }
            | Request::Getm { .. }
            | Request::Backup
            | Request::Pttl { .. }
            | Request::Keys { .. }
            | Request::Scan { .. }
            | Request::RandomKey { .. }
            | Request::DbSize
            | Request::Members(_)
            | Request::Stale { .. }
            | Request::InSession { .. } => None,
        }
    }
}

/// The longest relative expiry a [`SetExpiry::AfterMs`] may carry: ten years, as for `exptime`.
pub const MAX_EXPIRY_MS: u64 = crate::protocol::MAX_EXPTIME_SECS as u64 * 1000;

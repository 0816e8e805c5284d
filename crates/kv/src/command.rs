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
//!
//! The leading format byte lets a later release change the layout while still reading old logs.

use bytes::{BufMut, Bytes, BytesMut};

use crate::byte_reader::ByteReader;
pub use crate::decode_error::DecodeError;
use crate::limits::{is_valid_exptime, is_valid_key};
use crate::protocol::{Request, SessionSeq, MAX_SESSION_NUMBER};

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
    /// deletes it) or none (PERSIST). Answers 1 if it changed something, else 0 (`Keep` is refused).
    SetTtl {
        key: Bytes,
        expiry: SetExpiry,
    },
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
            | Request::Members(_)
            | Request::Stale { .. }
            | Request::InSession { .. } => None,
        }
    }
}

impl Proposal {
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(self.encoded_len());
        match self.session {
            None => {
                out.put_u8(FORMAT_V1);
                out.put_u64_le(self.stamp_ms);
            }
            Some(at) => {
                out.put_u8(FORMAT_IN_SESSION);
                out.put_u64_le(self.stamp_ms);
                out.put_u64_le(at.session);
                out.put_u64_le(at.seq);
            }
        }
        match &self.command {
            Command::Set {
                key,
                exptime,
                value,
            } => {
                out.put_u8(TAG_SET);
                out.put_u32_le(*exptime);
                put_key(out, key);
                out.put_slice(value);
            }
            Command::Cas {
                key,
                exptime,
                version,
                value,
            } => {
                out.put_u8(TAG_CAS);
                out.put_u32_le(*exptime);
                out.put_u64_le(*version);
                put_key(out, key);
                out.put_slice(value);
            }
            Command::Delete { key } => {
                out.put_u8(TAG_DELETE);
                put_key(out, key);
            }
            Command::Expire => out.put_u8(TAG_EXPIRE),
            Command::Register => out.put_u8(TAG_REGISTER),
            Command::IncrBy { key, by } => {
                out.put_u8(TAG_INCR_BY);
                out.put_i64_le(*by);
                put_key(out, key);
            }
            Command::Append { key, value } => {
                out.put_u8(TAG_APPEND);
                put_key(out, key);
                out.put_slice(value);
            }
            Command::SetWith {
                key,
                value,
                condition,
                get,
                expiry,
            } => {
                out.put_u8(TAG_SET_WITH);
                out.put_u8(match condition {
                    SetCondition::Always => 0,
                    SetCondition::IfAbsent => 1,
                    SetCondition::IfPresent => 2,
                });
                out.put_u8(u8::from(*get));
                let (kind, ms) = expiry.to_wire();
                out.put_u8(kind);
                out.put_u64_le(ms);
                put_key(out, key);
                out.put_slice(value);
            }
            Command::GetDel { key } => {
                out.put_u8(TAG_GET_DEL);
                put_key(out, key);
            }
            Command::SetTtl { key, expiry } => {
                out.put_u8(TAG_SET_TTL);
                let (kind, ms) = expiry.to_wire();
                out.put_u8(kind);
                out.put_u64_le(ms);
                put_key(out, key);
            }
            Command::MSet { pairs, nx } => {
                out.put_u8(TAG_MSET);
                out.put_u8(u8::from(*nx));
                out.put_u32_le(pairs.len() as u32);
                for (key, value) in pairs {
                    put_key(out, key);
                    out.put_u32_le(value.len() as u32);
                    out.put_slice(value);
                }
            }
        }
    }

    pub fn encoded_len(&self) -> usize {
        let session = if self.session.is_some() { 16 } else { 0 };
        let header = 1 + 8 + session + 1;
        header
            + match &self.command {
                Command::Set { key, value, .. } => 4 + 1 + key.len() + value.len(),
                Command::Cas { key, value, .. } => 4 + 8 + 1 + key.len() + value.len(),
                Command::Delete { key } => 1 + key.len(),
                Command::Expire | Command::Register => 0,
                Command::IncrBy { key, .. } => 8 + 1 + key.len(),
                Command::Append { key, value } => 1 + key.len() + value.len(),
                Command::SetWith { key, value, .. } => 3 + 8 + 1 + key.len() + value.len(),
                Command::GetDel { key } => 1 + key.len(),
                Command::SetTtl { key, .. } => 1 + 8 + 1 + key.len(),
                Command::MSet { pairs, .. } => {
                    1 + 4
                        + pairs
                            .iter()
                            .map(|(k, v)| 1 + k.len() + 4 + v.len())
                            .sum::<usize>()
                }
            }
    }

    /// Decodes an entry; keys and values are zero-copy slices of `data`. Validates every field
    /// the parser validates, so a corrupt or hostile entry is rejected rather than applied.
    pub fn decode(data: &Bytes) -> Result<Proposal, DecodeError> {
        let mut reader = ByteReader::new(data);
        let format = reader.u8()?;
        if format != FORMAT_V1 && format != FORMAT_IN_SESSION {
            return Err(DecodeError::UnknownFormat(format));
        }
        let stamp_ms = reader.u64()?;
        let session = if format == FORMAT_IN_SESSION {
            let session = reader.u64()?;
            let seq = reader.u64()?;
            let valid = 1..=MAX_SESSION_NUMBER;
            if !valid.contains(&session) || !valid.contains(&seq) {
                return Err(DecodeError::InvalidEntry);
            }
            Some(SessionSeq { session, seq })
        } else {
            None
        };
        let command = match reader.u8()? {
            TAG_SET => {
                let exptime = read_exptime(&mut reader)?;
                let key = read_key(&mut reader, data)?;
                let value = data.slice(reader.take_range(reader.remaining())?);
                Command::Set {
                    key,
                    exptime,
                    value,
                }
            }
            TAG_CAS => {
                let exptime = read_exptime(&mut reader)?;
                let version = reader.u64()?;
                let key = read_key(&mut reader, data)?;
                let value = data.slice(reader.take_range(reader.remaining())?);
                Command::Cas {
                    key,
                    exptime,
                    version,
                    value,
                }
            }
            TAG_DELETE => {
                let key = read_key(&mut reader, data)?;
                reader.expect_end()?;
                Command::Delete { key }
            }
            TAG_EXPIRE => {
                reader.expect_end()?;
                Command::Expire
            }
            TAG_REGISTER => {
                reader.expect_end()?;
                Command::Register
            }
            TAG_INCR_BY => {
                let by = reader.u64()? as i64;
                let key = read_key(&mut reader, data)?;
                reader.expect_end()?;
                Command::IncrBy { key, by }
            }
            TAG_APPEND => {
                let key = read_key(&mut reader, data)?;
                let value = data.slice(reader.take_range(reader.remaining())?);
                Command::Append { key, value }
            }
            TAG_SET_WITH => {
                let condition = match reader.u8()? {
                    0 => SetCondition::Always,
                    1 => SetCondition::IfAbsent,
                    2 => SetCondition::IfPresent,
                    _ => return Err(DecodeError::InvalidEntry),
                };
                let get = match reader.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(DecodeError::InvalidEntry),
                };
                let kind = reader.u8()?;
                let ms = reader.u64()?;
                let expiry = SetExpiry::from_wire(kind, ms).ok_or(DecodeError::InvalidEntry)?;
                let key = read_key(&mut reader, data)?;
                let value = data.slice(reader.take_range(reader.remaining())?);
                Command::SetWith {
                    key,
                    value,
                    condition,
                    get,
                    expiry,
                }
            }
            TAG_SET_TTL => {
                let kind = reader.u8()?;
                let ms = reader.u64()?;
                let expiry = SetExpiry::from_wire(kind, ms)
                    .filter(|e| *e != SetExpiry::Keep)
                    .ok_or(DecodeError::InvalidEntry)?;
                let key = read_key(&mut reader, data)?;
                reader.expect_end()?;
                Command::SetTtl { key, expiry }
            }
            TAG_GET_DEL => {
                let key = read_key(&mut reader, data)?;
                reader.expect_end()?;
                Command::GetDel { key }
            }
            TAG_MSET => {
                let nx = match reader.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(DecodeError::InvalidEntry),
                };
                let count = reader.u32()? as usize;
                // Each pair takes at least 6 bytes: a count past that is corrupt.
                if count == 0 || count > reader.remaining() / 6 {
                    return Err(DecodeError::InvalidEntry);
                }
                let mut pairs = Vec::with_capacity(count);
                for _ in 0..count {
                    let key = read_key(&mut reader, data)?;
                    let len = reader.u32()? as usize;
                    let value = data.slice(reader.take_range(len)?);
                    pairs.push((key, value));
                }
                reader.expect_end()?;
                Command::MSet { pairs, nx }
            }
            tag => return Err(DecodeError::UnknownCommand(tag)),
        };
        if session.is_some() && matches!(command, Command::Expire | Command::Register) {
            // Only a client's writes belong to a session.
            return Err(DecodeError::InvalidEntry);
        }
        Ok(Proposal {
            stamp_ms,
            session,
            command,
        })
    }
}

/// The longest relative expiry a [`SetExpiry::AfterMs`] may carry: ten years, as for `exptime`.
pub const MAX_EXPIRY_MS: u64 = crate::protocol::MAX_EXPTIME_SECS as u64 * 1000;

fn put_key(out: &mut BytesMut, key: &[u8]) {
    // Keys are at most 250 bytes; a longer one could only come from bypassing the parser, and is
    // written with a length that makes decoding reject it instead of misframing the entry.
    out.put_u8(u8::try_from(key.len()).unwrap_or(0));
    out.put_slice(key);
}

fn read_key(reader: &mut ByteReader<'_>, data: &Bytes) -> Result<Bytes, DecodeError> {
    let len = usize::from(reader.u8()?);
    let range = reader.take_range(len)?;
    if !is_valid_key(&data[range.clone()]) {
        return Err(DecodeError::InvalidKey);
    }
    Ok(data.slice(range))
}

fn read_exptime(reader: &mut ByteReader<'_>) -> Result<u32, DecodeError> {
    let exptime = reader.u32()?;
    if is_valid_exptime(exptime) {
        Ok(exptime)
    } else {
        Err(DecodeError::InvalidExptime)
    }
}

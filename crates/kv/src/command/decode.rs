//! Reading a log entry back into a [`Proposal`], validating every field: a corrupt or hostile entry
//! is rejected, never applied.

use bytes::Bytes;

use super::*;
use crate::byte_reader::ByteReader;
use crate::limits::{is_valid_exptime, is_valid_key};
use crate::protocol::MAX_SESSION_NUMBER;

impl Proposal {
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
        let command = Command::decode_body(&mut reader, data)?;
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

impl Command {
    /// Reads `tag | fields` to the end of `reader`, whose bytes are `data`.
    fn decode_body(reader: &mut ByteReader<'_>, data: &Bytes) -> Result<Command, DecodeError> {
        let command = match reader.u8()? {
            TAG_SET => {
                let exptime = read_exptime(reader)?;
                let key = read_key(reader, data)?;
                let value = read_rest(reader, data)?;
                Command::Set {
                    key,
                    exptime,
                    value,
                }
            }
            TAG_CAS => {
                let exptime = read_exptime(reader)?;
                let version = reader.u64()?;
                let key = read_key(reader, data)?;
                let value = read_rest(reader, data)?;
                Command::Cas {
                    key,
                    exptime,
                    version,
                    value,
                }
            }
            TAG_DELETE => Command::Delete {
                key: read_last_key(reader, data)?,
            },
            TAG_EXPIRE => {
                reader.expect_end()?;
                Command::Expire
            }
            TAG_REGISTER => {
                reader.expect_end()?;
                Command::Register
            }
            TAG_FLUSH => {
                reader.expect_end()?;
                Command::Flush
            }
            TAG_INCR_BY => {
                let by = reader.u64()? as i64;
                Command::IncrBy {
                    key: read_last_key(reader, data)?,
                    by,
                }
            }
            TAG_INCR_BY_FLOAT => {
                let by_bits = reader.u64()?;
                if !f64::from_bits(by_bits).is_finite() {
                    return Err(DecodeError::InvalidEntry);
                }
                Command::IncrByFloat {
                    key: read_last_key(reader, data)?,
                    by_bits,
                }
            }
            TAG_APPEND => {
                let key = read_key(reader, data)?;
                let value = read_rest(reader, data)?;
                Command::Append { key, value }
            }
            TAG_SET_RANGE => {
                let offset = reader.u32()?;
                let key = read_key(reader, data)?;
                let value = read_rest(reader, data)?;
                Command::SetRange { key, offset, value }
            }
            TAG_SET_WITH => {
                let condition = match reader.u8()? {
                    0 => SetCondition::Always,
                    1 => SetCondition::IfAbsent,
                    2 => SetCondition::IfPresent,
                    _ => return Err(DecodeError::InvalidEntry),
                };
                let get = read_flag(reader)?;
                let expiry = read_expiry(reader)?;
                let key = read_key(reader, data)?;
                let value = read_rest(reader, data)?;
                Command::SetWith {
                    key,
                    value,
                    condition,
                    get,
                    expiry,
                }
            }
            tag @ (TAG_SET_TTL | TAG_SET_TTL_IF) => {
                let condition = if tag == TAG_SET_TTL {
                    TtlCondition::Always
                } else {
                    TtlCondition::from_wire(reader.u8()?)
                        .filter(|c| *c != TtlCondition::Always)
                        .ok_or(DecodeError::InvalidEntry)?
                };
                let expiry = read_expiry(reader)?;
                if expiry == SetExpiry::Keep {
                    return Err(DecodeError::InvalidEntry);
                }
                Command::SetTtl {
                    key: read_last_key(reader, data)?,
                    expiry,
                    condition,
                }
            }
            TAG_GET_EX => {
                let expiry = read_expiry(reader)?;
                if expiry == SetExpiry::Keep {
                    return Err(DecodeError::InvalidEntry);
                }
                Command::GetEx {
                    key: read_last_key(reader, data)?,
                    expiry,
                }
            }
            TAG_GET_DEL => Command::GetDel {
                key: read_last_key(reader, data)?,
            },
            TAG_MSET => {
                let nx = read_flag(reader)?;
                let count = reader.u32()? as usize;
                // Each pair takes at least 6 bytes: a count past that is corrupt.
                if count == 0 || count > reader.remaining() / 6 {
                    return Err(DecodeError::InvalidEntry);
                }
                let mut pairs = Vec::with_capacity(count);
                for _ in 0..count {
                    let key = read_key(reader, data)?;
                    let len = reader.u32()? as usize;
                    let value = data.slice(reader.take_range(len)?);
                    pairs.push((key, value));
                }
                reader.expect_end()?;
                Command::MSet { pairs, nx }
            }
            TAG_RENAME => {
                let nx = read_flag(reader)?;
                let from = read_key(reader, data)?;
                let to = read_last_key(reader, data)?;
                Command::Rename { from, to, nx }
            }
            TAG_TRANSACTION => read_transaction(reader, data)?,
            tag => return Err(DecodeError::UnknownCommand(tag)),
        };
        Ok(command)
    }
}

fn read_transaction(reader: &mut ByteReader<'_>, data: &Bytes) -> Result<Command, DecodeError> {
    let count = reader.u32()? as usize;
    // A watch takes at least 10 bytes, an op at least 6: a count past that is corrupt.
    if count > reader.remaining() / 10 {
        return Err(DecodeError::InvalidEntry);
    }
    // Capacity from the data only up to a point: a hostile count must not reserve more than the
    // entry could hold many times over.
    let mut watches = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let key = read_key(reader, data)?;
        let version = reader.u64()?;
        watches.push(Watch { key, version });
    }
    let count = reader.u32()? as usize;
    if count > reader.remaining() / 6 {
        return Err(DecodeError::InvalidEntry);
    }
    let mut ops = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let len = reader.u32()? as usize;
        let op = data.slice(reader.take_range(len)?);
        let mut op_reader = ByteReader::new(&op);
        ops.push(match op_reader.u8()? {
            // The tag is checked before decoding: a transaction nested in a transaction would
            // otherwise be decoded (recursively, as deep as a hostile entry likes) before refusal.
            0 if matches!(
                op.get(1),
                Some(&(TAG_EXPIRE | TAG_REGISTER | TAG_TRANSACTION))
            ) =>
            {
                return Err(DecodeError::InvalidEntry)
            }
            0 => match Command::decode_body(&mut op_reader, &op)? {
                Command::Expire | Command::Register | Command::Transaction { .. } => {
                    return Err(DecodeError::InvalidEntry)
                }
                command => TxOp::Write(command),
            },
            1 => TxOp::Get(read_last_key(&mut op_reader, &op)?),
            2 => TxOp::Pttl(read_last_key(&mut op_reader, &op)?),
            _ => return Err(DecodeError::InvalidEntry),
        });
    }
    reader.expect_end()?;
    Ok(Command::Transaction { watches, ops })
}

fn read_flag(reader: &mut ByteReader<'_>) -> Result<bool, DecodeError> {
    match reader.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::InvalidEntry),
    }
}

fn read_expiry(reader: &mut ByteReader<'_>) -> Result<SetExpiry, DecodeError> {
    let kind = reader.u8()?;
    let ms = reader.u64()?;
    SetExpiry::from_wire(kind, ms).ok_or(DecodeError::InvalidEntry)
}

fn read_key(reader: &mut ByteReader<'_>, data: &Bytes) -> Result<Bytes, DecodeError> {
    let len = usize::from(reader.u8()?);
    let range = reader.take_range(len)?;
    if !is_valid_key(&data[range.clone()]) {
        return Err(DecodeError::InvalidKey);
    }
    Ok(data.slice(range))
}

/// A key that must be the last field.
fn read_last_key(reader: &mut ByteReader<'_>, data: &Bytes) -> Result<Bytes, DecodeError> {
    let key = read_key(reader, data)?;
    reader.expect_end()?;
    Ok(key)
}

/// A value that runs to the end.
fn read_rest(reader: &mut ByteReader<'_>, data: &Bytes) -> Result<Bytes, DecodeError> {
    Ok(data.slice(reader.take_range(reader.remaining())?))
}

fn read_exptime(reader: &mut ByteReader<'_>) -> Result<u32, DecodeError> {
    let exptime = reader.u32()?;
    if is_valid_exptime(exptime) {
        Ok(exptime)
    } else {
        Err(DecodeError::InvalidExptime)
    }
}

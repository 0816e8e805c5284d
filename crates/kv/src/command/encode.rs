//! Writing a [`Proposal`] as the bytes of a log entry (the layout is in the parent module's doc).

use bytes::{BufMut, BytesMut};

use super::*;

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
        self.command.encode_body(out);
    }

    pub fn encoded_len(&self) -> usize {
        let session = if self.session.is_some() { 16 } else { 0 };
        1 + 8 + session + self.command.body_len()
    }
}

impl Command {
    /// Appends `tag | fields`.
    pub(crate) fn encode_body(&self, out: &mut BytesMut) {
        match self {
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
            Command::Flush => out.put_u8(TAG_FLUSH),
            Command::IncrBy { key, by } => {
                out.put_u8(TAG_INCR_BY);
                out.put_i64_le(*by);
                put_key(out, key);
            }
            Command::IncrByFloat { key, by_bits } => {
                out.put_u8(TAG_INCR_BY_FLOAT);
                out.put_u64_le(*by_bits);
                put_key(out, key);
            }
            Command::Append { key, value } => {
                out.put_u8(TAG_APPEND);
                put_key(out, key);
                out.put_slice(value);
            }
            Command::SetRange { key, offset, value } => {
                out.put_u8(TAG_SET_RANGE);
                out.put_u32_le(*offset);
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
                put_expiry(out, *expiry);
                put_key(out, key);
                out.put_slice(value);
            }
            Command::GetDel { key } => {
                out.put_u8(TAG_GET_DEL);
                put_key(out, key);
            }
            Command::SetTtl {
                key,
                expiry,
                condition,
            } => {
                if *condition == TtlCondition::Always {
                    out.put_u8(TAG_SET_TTL);
                } else {
                    out.put_u8(TAG_SET_TTL_IF);
                    out.put_u8(condition.to_wire());
                }
                put_expiry(out, *expiry);
                put_key(out, key);
            }
            Command::GetEx { key, expiry } => {
                out.put_u8(TAG_GET_EX);
                put_expiry(out, *expiry);
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
            Command::Rename { from, to, nx } => {
                out.put_u8(TAG_RENAME);
                out.put_u8(u8::from(*nx));
                put_key(out, from);
                put_key(out, to);
            }
            Command::Transaction { watches, ops } => {
                out.put_u8(TAG_TRANSACTION);
                out.put_u32_le(watches.len() as u32);
                for watch in watches {
                    put_key(out, &watch.key);
                    out.put_u64_le(watch.version);
                }
                out.put_u32_le(ops.len() as u32);
                for op in ops {
                    out.put_u32_le((op_len(op)) as u32);
                    match op {
                        TxOp::Write(command) => {
                            out.put_u8(0);
                            command.encode_body(out);
                        }
                        TxOp::Get(key) => {
                            out.put_u8(1);
                            put_key(out, key);
                        }
                        TxOp::Pttl(key) => {
                            out.put_u8(2);
                            put_key(out, key);
                        }
                    }
                }
            }
        }
    }

    /// The length of what [`Command::encode_body`] appends.
    fn body_len(&self) -> usize {
        1 + match self {
            Command::Set { key, value, .. } => 4 + 1 + key.len() + value.len(),
            Command::Cas { key, value, .. } => 4 + 8 + 1 + key.len() + value.len(),
            Command::Delete { key } | Command::GetDel { key } => 1 + key.len(),
            Command::Expire | Command::Register | Command::Flush => 0,
            Command::IncrBy { key, .. } | Command::IncrByFloat { key, .. } => 8 + 1 + key.len(),
            Command::Append { key, value } => 1 + key.len() + value.len(),
            Command::SetRange { key, value, .. } => 4 + 1 + key.len() + value.len(),
            Command::SetWith { key, value, .. } => 3 + 8 + 1 + key.len() + value.len(),
            Command::SetTtl { key, condition, .. } => {
                usize::from(*condition != TtlCondition::Always) + 1 + 8 + 1 + key.len()
            }
            Command::GetEx { key, .. } => 1 + 8 + 1 + key.len(),
            Command::MSet { pairs, .. } => {
                1 + 4
                    + pairs
                        .iter()
                        .map(|(k, v)| 1 + k.len() + 4 + v.len())
                        .sum::<usize>()
            }
            Command::Rename { from, to, .. } => 1 + 1 + from.len() + 1 + to.len(),
            Command::Transaction { watches, ops } => {
                4 + watches.iter().map(|w| 1 + w.key.len() + 8).sum::<usize>()
                    + 4
                    + ops.iter().map(|op| 4 + op_len(op)).sum::<usize>()
            }
        }
    }
}

/// The length of a transaction op's encoding after its `op_len` field.
fn op_len(op: &TxOp) -> usize {
    1 + match op {
        TxOp::Write(command) => command.body_len(),
        TxOp::Get(key) | TxOp::Pttl(key) => 1 + key.len(),
    }
}

fn put_expiry(out: &mut BytesMut, expiry: SetExpiry) {
    let (kind, ms) = expiry.to_wire();
    out.put_u8(kind);
    out.put_u64_le(ms);
}

fn put_key(out: &mut BytesMut, key: &[u8]) {
    // Keys are at most 250 bytes; a longer one could only come from bypassing the parser, and is
    // written with a length that makes decoding reject it instead of misframing the entry.
    out.put_u8(u8::try_from(key.len()).unwrap_or(0));
    out.put_slice(key);
}

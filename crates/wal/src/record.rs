//! Record framing inside a segment: `crc32c: u32 | payload_len: u32 | type: u8 | payload`, little-endian,
//! the checksum covering everything after itself (length, type and payload), so a damaged length is caught
//! as surely as a damaged payload.

use bytes::Bytes;
use raftkv_raft::{Entry, EntryKind, HardState};

pub(crate) const RECORD_HEADER_LEN: usize = 9;
/// Nothing legitimate comes close; a larger length is damage.
const MAX_PAYLOAD_LEN: u32 = 1 << 30;

const TYPE_ENTRY: u8 = 1;
const TYPE_HARD_STATE: u8 = 2;

const ENTRY_FIXED_LEN: usize = 17;
const HARD_STATE_LEN: usize = 24;
/// Bytes a hard-state record takes, to size fresh segments.
pub(crate) const HARD_STATE_RECORD_LEN: usize = RECORD_HEADER_LEN + HARD_STATE_LEN;

const KIND_NORMAL: u8 = 0;
const KIND_NOOP: u8 = 1;
const KIND_CONFIG: u8 = 2;

pub(crate) fn entry_record_len(entry: &Entry) -> usize {
    RECORD_HEADER_LEN + ENTRY_FIXED_LEN + entry.data.len()
}

/// Appends one framed record whose payload `write_payload` appends, without an intermediate allocation.
fn encode_record(buf: &mut Vec<u8>, record_type: u8, write_payload: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0; RECORD_HEADER_LEN]);
    buf[start + 8] = record_type;
    write_payload(buf);
    let payload_len = (buf.len() - start - RECORD_HEADER_LEN) as u32;
    buf[start + 4..start + 8].copy_from_slice(&payload_len.to_le_bytes());
    let crc = crc32c::crc32c(&buf[start + 4..]);
    buf[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

pub(crate) fn encode_entry(buf: &mut Vec<u8>, entry: &Entry) {
    encode_record(buf, TYPE_ENTRY, |buf| {
        buf.extend_from_slice(&entry.index.to_le_bytes());
        buf.extend_from_slice(&entry.term.to_le_bytes());
        buf.push(match entry.kind {
            EntryKind::Normal => KIND_NORMAL,
            EntryKind::Noop => KIND_NOOP,
            EntryKind::Config => KIND_CONFIG,
        });
        buf.extend_from_slice(&entry.data);
    });
}

pub(crate) fn encode_hard_state(buf: &mut Vec<u8>, hard_state: &HardState) {
    encode_record(buf, TYPE_HARD_STATE, |buf| {
        buf.extend_from_slice(&hard_state.term.to_le_bytes());
        // Node ids are never 0, so 0 can stand for "no vote".
        buf.extend_from_slice(&hard_state.vote.unwrap_or(0).to_le_bytes());
        buf.extend_from_slice(&hard_state.commit.to_le_bytes());
    });
}

#[derive(Debug)]
pub(crate) enum Record {
    Entry(Entry),
    HardState(HardState),
}

/// What lies at some offset of a segment.
#[derive(Debug)]
pub(crate) enum Decoded {
    Record {
        record: Record,
        next_offset: usize,
    },
    /// Clean end of the bytes.
    End,
    /// Damage of the kind an interrupted write leaves; harmless only at the very end of the newest segment
    /// and only if nothing but zeros follows `damage_end`.
    Damaged {
        reason: String,
        damage_end: usize,
    },
    /// A record with a valid checksum that makes no sense: a bug or a newer format, never a torn write.
    Invalid {
        reason: String,
    },
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// Decodes the record at `offset` of `segment`; entry data is a zero-copy slice of `segment`.
pub(crate) fn decode_at(segment: &Bytes, offset: usize) -> Decoded {
    let remaining = segment.len() - offset;
    if remaining == 0 {
        return Decoded::End;
    }
    if remaining < RECORD_HEADER_LEN {
        return Decoded::Damaged {
            reason: format!("record header cut short after {remaining} bytes"),
            damage_end: segment.len(),
        };
    }
    let header = &segment[offset..offset + RECORD_HEADER_LEN];
    if header.iter().all(|&b| b == 0) {
        return Decoded::Damaged {
            reason: "zeroed record header".to_owned(),
            damage_end: offset + RECORD_HEADER_LEN,
        };
    }
    let stored_crc = u32_at(header, 0);
    let payload_len = u32_at(header, 4);
    let record_type = header[8];
    let payload_start = offset + RECORD_HEADER_LEN;
    if payload_len > MAX_PAYLOAD_LEN || payload_start + payload_len as usize > segment.len() {
        return Decoded::Damaged {
            reason: format!("record of {payload_len} bytes runs past the end of the file"),
            damage_end: segment.len(),
        };
    }
    let payload_end = payload_start + payload_len as usize;
    if crc32c::crc32c(&segment[offset + 4..payload_end]) != stored_crc {
        return Decoded::Damaged {
            reason: "record checksum mismatch".to_owned(),
            damage_end: payload_end,
        };
    }
    let payload = &segment[payload_start..payload_end];
    let record = match record_type {
        TYPE_ENTRY if payload.len() >= ENTRY_FIXED_LEN => {
            let kind = match payload[16] {
                KIND_NORMAL => EntryKind::Normal,
                KIND_CONFIG => EntryKind::Config,
                KIND_NOOP => EntryKind::Noop,
                other => {
                    return Decoded::Invalid {
                        reason: format!("unknown entry kind {other}"),
                    }
                }
            };
            Record::Entry(Entry {
                index: u64_at(payload, 0),
                term: u64_at(payload, 8),
                kind,
                data: segment.slice(payload_start + ENTRY_FIXED_LEN..payload_end),
            })
        }
        TYPE_HARD_STATE if payload.len() == HARD_STATE_LEN => {
            let vote = u64_at(payload, 8);
            Record::HardState(HardState {
                term: u64_at(payload, 0),
                vote: (vote != 0).then_some(vote),
                commit: u64_at(payload, 16),
            })
        }
        TYPE_ENTRY | TYPE_HARD_STATE => {
            return Decoded::Invalid {
                reason: format!("type-{record_type} record of wrong length {payload_len}"),
            }
        }
        other => {
            return Decoded::Invalid {
                reason: format!("unknown record type {other}"),
            }
        }
    };
    Decoded::Record {
        record,
        next_offset: payload_end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, data: &'static str) -> Entry {
        Entry {
            index,
            term: 7,
            kind: EntryKind::Normal,
            data: Bytes::from_static(data.as_bytes()),
        }
    }

    #[test]
    fn records_round_trip() {
        let mut buf = Vec::new();
        encode_entry(&mut buf, &entry(3, "hello"));
        let hard_state = HardState {
            term: 9,
            vote: Some(2),
            commit: 3,
        };
        encode_hard_state(&mut buf, &hard_state);
        assert_eq!(
            buf.len(),
            entry_record_len(&entry(3, "hello")) + HARD_STATE_RECORD_LEN
        );
        let bytes = Bytes::from(buf);
        let Decoded::Record {
            record: Record::Entry(decoded),
            next_offset,
        } = decode_at(&bytes, 0)
        else {
            panic!("expected an entry")
        };
        assert_eq!(decoded, entry(3, "hello"));
        let Decoded::Record {
            record: Record::HardState(decoded),
            next_offset,
        } = decode_at(&bytes, next_offset)
        else {
            panic!("expected a hard state")
        };
        assert_eq!(decoded, hard_state);
        assert!(matches!(decode_at(&bytes, next_offset), Decoded::End));
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let mut buf = Vec::new();
        encode_entry(&mut buf, &entry(3, "some payload"));
        for bit in 0..buf.len() * 8 {
            let mut damaged = buf.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            let decoded = decode_at(&Bytes::from(damaged), 0);
            assert!(
                matches!(decoded, Decoded::Damaged { .. }),
                "bit {bit}: {decoded:?}"
            );
        }
    }
}

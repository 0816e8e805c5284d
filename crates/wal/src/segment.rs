//! Segment files: naming, the 32-byte header, and walking the records of one segment.
//!
//! A segment is named `{seq:016x}-{first_index:016x}.wal`. Its header is
//! `magic "RAFTKVWL" | version: u32 | seq: u64 | first_index: u64 | crc32c of the previous 28 bytes: u32`.
//! `first_index` means "the log is cut back to `first_index - 1` here, then continues"; that is how a
//! segment started after a snapshot install discards a conflicting log without rewriting older files.
//!
//! Segments are pre-allocated: created at their full size by writing zeros (and syncing) before any record
//! goes in, so that appending overwrites blocks the file system already has and `fdatasync` has no size or
//! extent metadata to journal. Only the newest segment may therefore end in zeros; a finished segment is cut
//! to its used length before the next one is started. Preparing those zero-filled files is `spare.rs`'s job.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use raftkv_raft::Index;

use crate::error::WalError;
use crate::record::{decode_at, Decoded, Record};

pub(crate) const SEGMENT_HEADER_LEN: usize = 32;
const MAGIC: &[u8; 8] = b"RAFTKVWL";
/// 2: pre-allocated segments (a zero-filled tail is the normal end of the newest segment). Version 1
/// segments are refused rather than read by these rules.
const FORMAT_VERSION: u32 = 2;
const SUFFIX: &str = ".wal";
/// A segment being prepared (zero-filled) under a temporary name, renamed into place when the log rolls.
/// Any such file found at open is a leftover and is deleted.
pub(crate) const SPARE_SUFFIX: &str = ".wal.tmp";
pub(crate) const SPARE_FILE: &str = "next-segment.wal.tmp";

/// A segment file as the writer tracks it.
#[derive(Clone, Debug)]
pub(crate) struct SegmentInfo {
    pub(crate) first_index: Index,
    pub(crate) path: PathBuf,
    /// Bytes of records (and header) written to it (durable or about to be synced).
    pub(crate) len: u64,
    /// The file's size: `len` plus the zero-filled room left in a pre-allocated newest segment.
    pub(crate) allocated: u64,
}

pub(crate) fn segment_file_name(seq: u64, first_index: Index) -> String {
    format!("{seq:016x}-{first_index:016x}{SUFFIX}")
}

/// `(seq, first_index)` of a segment file name; `None` for any other file.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<(u64, Index)> {
    let stem = name.strip_suffix(SUFFIX)?;
    let (seq, first_index) = stem.split_once('-')?;
    if seq.len() != 16 || first_index.len() != 16 {
        return None;
    }
    Some((
        u64::from_str_radix(seq, 16).ok()?,
        u64::from_str_radix(first_index, 16).ok()?,
    ))
}

pub(crate) fn encode_header(buf: &mut Vec<u8>, seq: u64, first_index: Index) {
    let start = buf.len();
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&first_index.to_le_bytes());
    let crc = crc32c::crc32c(&buf[start..]);
    buf.extend_from_slice(&crc.to_le_bytes());
}

pub(crate) fn all_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Header {
    Valid,
    /// The newest segment's first write never completed: the file holds nothing that was ever durable.
    Torn,
}

pub(crate) fn check_header(
    path: &Path,
    bytes: &[u8],
    seq: u64,
    first_index: Index,
    is_newest: bool,
) -> Result<Header, WalError> {
    let torn_ok = is_newest && all_zero(bytes.get(SEGMENT_HEADER_LEN..).unwrap_or(&[]));
    if bytes.len() < SEGMENT_HEADER_LEN {
        return if is_newest {
            Ok(Header::Torn)
        } else {
            Err(WalError::corrupt(
                path,
                0,
                format!("segment header cut short at {} bytes", bytes.len()),
            ))
        };
    }
    let header = &bytes[..SEGMENT_HEADER_LEN];
    let stored_crc = u32::from_le_bytes(header[28..32].try_into().expect("4 bytes"));
    if &header[..8] != MAGIC || crc32c::crc32c(&header[..28]) != stored_crc {
        return if torn_ok {
            Ok(Header::Torn)
        } else {
            Err(WalError::corrupt(
                path,
                0,
                "segment header damaged (bad magic or checksum)",
            ))
        };
    }
    let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(WalError::corrupt(
            path,
            8,
            format!(
                "unsupported segment format version {version} (this build reads only version {FORMAT_VERSION}, and does not migrate older segments)"
            ),
        ));
    }
    let header_seq = u64::from_le_bytes(header[12..20].try_into().expect("8 bytes"));
    let header_first = u64::from_le_bytes(header[20..28].try_into().expect("8 bytes"));
    if (header_seq, header_first) != (seq, first_index) {
        return Err(WalError::corrupt(
            path,
            12,
            format!("header says seq {header_seq} first index {header_first}, file name disagrees"),
        ));
    }
    Ok(Header::Valid)
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SegmentEnd {
    /// The last record ends where the file does.
    Clean,
    /// Only zeros from `offset` on: the unused room of a pre-allocated newest segment.
    ZeroTail { offset: u64 },
    /// The records from `offset` on were being written when the machine died; they must be cut off (only
    /// zeros follow the damaged record).
    TornTail { offset: u64, reason: String },
}

/// Feeds every record after the header to `on_record`, in order, and says how the segment ends.
pub(crate) fn scan_records(
    path: &Path,
    bytes: &Bytes,
    is_newest: bool,
    mut on_record: impl FnMut(u64, Record) -> Result<(), WalError>,
) -> Result<SegmentEnd, WalError> {
    let mut offset = SEGMENT_HEADER_LEN;
    loop {
        match decode_at(bytes, offset) {
            Decoded::Record {
                record,
                next_offset,
            } => {
                on_record(offset as u64, record)?;
                offset = next_offset;
            }
            Decoded::End => return Ok(SegmentEnd::Clean),
            Decoded::Damaged { reason, damage_end } => {
                let zero_tail = all_zero(&bytes[offset..]);
                if is_newest && zero_tail {
                    return Ok(SegmentEnd::ZeroTail {
                        offset: offset as u64,
                    });
                }
                if is_newest && all_zero(&bytes[damage_end..]) {
                    return Ok(SegmentEnd::TornTail {
                        offset: offset as u64,
                        reason,
                    });
                }
                let (reason, why) = if is_newest {
                    (
                        reason.as_str(),
                        "valid-looking data follows it, so it is not an interrupted final write",
                    )
                } else if zero_tail {
                    (
                        "zero-filled tail",
                        "only the newest segment may end in pre-allocated zeros (a finished segment is cut to its used length before the next one starts)",
                    )
                } else {
                    (
                        reason.as_str(),
                        "only the newest segment can end in an interrupted write",
                    )
                };
                return Err(WalError::corrupt(
                    path,
                    offset as u64,
                    format!("{reason}; {why}"),
                ));
            }
            Decoded::Invalid { reason } => {
                return Err(WalError::corrupt(path, offset as u64, reason))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip() {
        let name = segment_file_name(3, 0x1_0000_0001);
        assert_eq!(name, "0000000000000003-0000000100000001.wal");
        assert_eq!(parse_segment_file_name(&name), Some((3, 0x1_0000_0001)));
        assert_eq!(parse_segment_file_name("LOCK"), None);
        assert_eq!(parse_segment_file_name("3-1.wal"), None);
    }

    #[test]
    fn header_checks() {
        let path = Path::new("x.wal");
        let mut buf = Vec::new();
        encode_header(&mut buf, 2, 10);
        assert_eq!(buf.len(), SEGMENT_HEADER_LEN);
        assert_eq!(
            check_header(path, &buf, 2, 10, false).unwrap(),
            Header::Valid
        );
        assert!(check_header(path, &buf, 3, 10, false).is_err());
        assert_eq!(
            check_header(path, &buf[..20], 2, 10, true).unwrap(),
            Header::Torn
        );
        assert!(check_header(path, &buf[..20], 2, 10, false).is_err());
        buf[5] ^= 1;
        assert_eq!(check_header(path, &buf, 2, 10, true).unwrap(), Header::Torn);
        buf.push(1);
        assert!(check_header(path, &buf, 2, 10, true).is_err());
    }
}

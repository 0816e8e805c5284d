//! Snapshot files: `snap-{index:016x}-{term:016x}.snap`, written whole to a `.tmp` name, synced, renamed into
//! place and the directory synced, so a snapshot file that exists under its final name is complete.
//!
//! Format: `magic "RAFTKVSN" | version: u32 | index: u64 | term: u64 | membership | data_len: u64 | data |
//! crc32c of everything before it: u32`, where the membership is `Membership::encode`'s (version 2; files
//! of version 1 held `voter_count: u32 | voters: u64 each` there and are still read).
//!
//! Also the [`SnapshotWriter`], which writes these files away from the log's thread, and the
//! [`WrittenSnapshot`] it hands back for [`crate::Wal::adopt_snapshot`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use raftkv_raft::{Index, Membership, Snapshot, SnapshotMeta, Term};

use crate::error::WalError;
use crate::fs::Fs;

const MAGIC: &[u8; 8] = b"RAFTKVSN";
const FORMAT_VERSION: u32 = 2;
/// Snapshots written before learners and addresses were part of the membership.
const FORMAT_VOTERS_ONLY: u32 = 1;
const PREFIX: &str = "snap-";
const SUFFIX: &str = ".snap";
pub(crate) const TMP_SUFFIX: &str = ".snap.tmp";

pub(crate) fn snapshot_file_name(index: Index, term: Term) -> String {
    format!("{PREFIX}{index:016x}-{term:016x}{SUFFIX}")
}

/// `(index, term)` of a snapshot file name; `None` for any other file.
pub(crate) fn parse_snapshot_file_name(name: &str) -> Option<(Index, Term)> {
    let stem = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    let (index, term) = stem.split_once('-')?;
    if index.len() != 16 || term.len() != 16 {
        return None;
    }
    Some((
        u64::from_str_radix(index, 16).ok()?,
        u64::from_str_radix(term, 16).ok()?,
    ))
}

fn encode_head(meta: &SnapshotMeta, data_len: usize) -> Vec<u8> {
    let mut head = Vec::with_capacity(36 + meta.membership.encoded_len());
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    head.extend_from_slice(&meta.index.to_le_bytes());
    head.extend_from_slice(&meta.term.to_le_bytes());
    meta.membership.encode(&mut head);
    head.extend_from_slice(&(data_len as u64).to_le_bytes());
    head
}

/// Bytes of a snapshot written between two fdatasyncs.
const SYNC_EVERY_BYTES: usize = 4 << 20;

/// Writes snapshot files off the log's thread. A large snapshot's fdatasync takes long enough to stall
/// group commit if the log's own thread did it; with a writer, the file is made durable elsewhere and
/// [`Wal::adopt_snapshot`](crate::Wal::adopt_snapshot) takes it over in a moment. Crash-safety is the same
/// as [`Wal::save_snapshot`](crate::Wal::save_snapshot)'s: a durable snapshot file that the log never
/// adopted is simply the newest snapshot at recovery.
#[derive(Clone)]
pub struct SnapshotWriter {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
}

impl fmt::Debug for SnapshotWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotWriter")
            .field("dir", &self.dir)
            .finish()
    }
}

/// A snapshot file made durable by a [`SnapshotWriter`], waiting for
/// [`Wal::adopt_snapshot`](crate::Wal::adopt_snapshot).
#[derive(Debug)]
pub struct WrittenSnapshot {
    pub(crate) path: PathBuf,
    pub(crate) size: u64,
    pub(crate) index: Index,
    pub(crate) term: Term,
}

impl WrittenSnapshot {
    pub fn index(&self) -> Index {
        self.index
    }
}

impl SnapshotWriter {
    /// A writer for snapshot files in `dir` on `fs`.
    pub(crate) fn new(fs: Arc<dyn Fs>, dir: PathBuf) -> SnapshotWriter {
        SnapshotWriter { fs, dir }
    }

    /// Writes `snapshot` to a temporary file, fdatasyncs it, renames it into place and fsyncs the
    /// directory.
    pub fn write(&self, snapshot: &Snapshot) -> Result<WrittenSnapshot, WalError> {
        write_snapshot(self.fs.as_ref(), &self.dir, snapshot)
    }
}

/// Writes `snapshot` durably under its final name in `dir` (temporary file, fdatasyncs, rename, directory
/// fsync); returns the file, not yet adopted by the log.
pub(crate) fn write_snapshot(
    fs: &dyn Fs,
    dir: &Path,
    snapshot: &Snapshot,
) -> Result<WrittenSnapshot, WalError> {
    let name = snapshot_file_name(snapshot.meta.index, snapshot.meta.term);
    let path = dir.join(&name);
    let tmp = dir.join(format!("{name}.tmp"));
    let head = encode_head(&snapshot.meta, snapshot.data.len());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&head), &snapshot.data);
    let mut file = fs.create(&tmp).map_err(WalError::io("create", &tmp))?;
    file.write_all(&head).map_err(WalError::io("write", &tmp))?;
    // Written from the caller's buffer (no copy of a possibly large state), and synced every few MiB:
    // one fdatasync of hundreds of MiB of dirty pages would hold up the log's own small fdatasyncs on
    // the same disk for as long, which clients would see as a write stall.
    for chunk in snapshot.data.chunks(SYNC_EVERY_BYTES) {
        file.write_all(chunk).map_err(WalError::io("write", &tmp))?;
        file.sync_data().map_err(WalError::io("fdatasync", &tmp))?;
    }
    file.write_all(&crc.to_le_bytes())
        .map_err(WalError::io("write", &tmp))?;
    file.sync_data().map_err(WalError::io("fdatasync", &tmp))?;
    drop(file);
    fs.rename(&tmp, &path)
        .map_err(WalError::io("rename", &tmp))?;
    fs.sync_dir(dir)
        .map_err(WalError::io("fsync directory", dir))?;
    let size = (head.len() + snapshot.data.len() + 4) as u64;
    Ok(WrittenSnapshot {
        path,
        size,
        index: snapshot.meta.index,
        term: snapshot.meta.term,
    })
}

struct Reader<'a> {
    path: &'a Path,
    bytes: &'a Bytes,
    offset: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize, what: &str) -> Result<&[u8], WalError> {
        let end = self
            .offset
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| {
                WalError::corrupt(
                    self.path,
                    self.offset as u64,
                    format!("snapshot file ends inside its {what}"),
                )
            })?;
        let taken = &self.bytes[self.offset..end];
        self.offset = end;
        Ok(taken)
    }

    fn u64(&mut self, what: &str) -> Result<u64, WalError> {
        Ok(u64::from_le_bytes(
            self.take(8, what)?.try_into().expect("8 bytes"),
        ))
    }

    fn u32(&mut self, what: &str) -> Result<u32, WalError> {
        Ok(u32::from_le_bytes(
            self.take(4, what)?.try_into().expect("4 bytes"),
        ))
    }
}

/// Decodes and verifies a snapshot file; `data` is a zero-copy slice of `bytes`.
pub(crate) fn decode_snapshot(path: &Path, bytes: Bytes) -> Result<Snapshot, WalError> {
    if bytes.len() < 4 {
        return Err(WalError::corrupt(path, 0, "snapshot file too short"));
    }
    let body_len = bytes.len() - 4;
    let stored_crc = u32::from_le_bytes(bytes[body_len..].try_into().expect("4 bytes"));
    if crc32c::crc32c(&bytes[..body_len]) != stored_crc {
        return Err(WalError::corrupt(
            path,
            body_len as u64,
            "snapshot checksum mismatch",
        ));
    }
    let body = bytes.slice(..body_len);
    let mut reader = Reader {
        path,
        bytes: &body,
        offset: 0,
    };
    if reader.take(8, "magic")? != MAGIC {
        return Err(WalError::corrupt(
            path,
            0,
            "not a raftkv snapshot file (bad magic)",
        ));
    }
    let version = reader.u32("version")?;
    if version != FORMAT_VERSION && version != FORMAT_VOTERS_ONLY {
        return Err(WalError::corrupt(
            path,
            8,
            format!("unsupported snapshot format version {version}"),
        ));
    }
    let index = reader.u64("index")?;
    let term = reader.u64("term")?;
    let membership = if version == FORMAT_VOTERS_ONLY {
        let voter_count = reader.u32("voter count")? as usize;
        let mut voters = Vec::with_capacity(voter_count.min(1024));
        for _ in 0..voter_count {
            voters.push(reader.u64("voter list")?);
        }
        Membership::new(voters)
    } else {
        let rest = body.slice(reader.offset..);
        let Some((membership, used)) = Membership::decode(&rest) else {
            return Err(WalError::corrupt(
                path,
                reader.offset as u64,
                "the snapshot's membership does not decode",
            ));
        };
        reader.take(used, "membership")?;
        membership
    };
    let data_len = reader.u64("data length")?;
    let data_start = reader.offset;
    if data_len != (body_len - data_start) as u64 {
        return Err(WalError::corrupt(
            path,
            data_start as u64 - 8,
            format!("snapshot data length {data_len} disagrees with the file size"),
        ));
    }
    Ok(Snapshot {
        meta: SnapshotMeta {
            index,
            term,
            membership,
        },
        data: body.slice(data_start..),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim_fs::SimFs;

    #[test]
    fn snapshot_round_trips_and_detects_damage() {
        let fs = SimFs::new();
        let dir = Path::new("/d");
        let snapshot = Snapshot {
            meta: SnapshotMeta {
                index: 42,
                term: 3,
                membership: Membership::new(vec![3, 1, 2]),
            },
            data: Bytes::from_static(b"state machine"),
        };
        let WrittenSnapshot { path, size, .. } = write_snapshot(&fs, dir, &snapshot).unwrap();
        assert_eq!(
            path.file_name().unwrap().to_str().unwrap(),
            snapshot_file_name(42, 3)
        );
        assert_eq!(
            parse_snapshot_file_name(&snapshot_file_name(42, 3)),
            Some((42, 3))
        );
        let bytes = Bytes::from(fs.read(&path).unwrap());
        assert_eq!(bytes.len() as u64, size);
        assert_eq!(decode_snapshot(&path, bytes.clone()).unwrap(), snapshot);
        for offset in 0..bytes.len() {
            let mut damaged = bytes.to_vec();
            damaged[offset] ^= 0x10;
            assert!(
                decode_snapshot(&path, Bytes::from(damaged)).is_err(),
                "flip at {offset}"
            );
        }
    }
}

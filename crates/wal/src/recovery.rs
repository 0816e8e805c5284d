//! Rebuilding the node's state from the data directory at start-up.
//!
//! Rules (see `docs/storage.md`): the newest snapshot that verifies wins; segments are replayed in sequence
//! order, later records overriding earlier ones at the same index; only the newest segment may end in an
//! interrupted write, which is overwritten with zeros, and only the newest may end in (pre-allocated) zeros;
//! the log must connect to the snapshot, or the node refuses to start.

use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use raftkv_raft::{HardState, Index, Snapshot};

use crate::fs::Fs;
use crate::mem_log::MemLog;
use crate::record::Record;
use crate::segment::{
    check_header, parse_segment_file_name, scan_records, Header, SegmentEnd, SegmentInfo,
    SPARE_SUFFIX,
};
use crate::snapshot_file::{decode_snapshot, parse_snapshot_file_name, TMP_SUFFIX};
use crate::{RecoveryStats, WalError};

pub(crate) struct Recovered {
    pub(crate) log: MemLog,
    pub(crate) hard_state: HardState,
    pub(crate) snapshot: Option<Snapshot>,
    /// Path and size of the snapshot file in use.
    pub(crate) snapshot_file: Option<(PathBuf, u64)>,
    pub(crate) segments: Vec<SegmentInfo>,
    pub(crate) next_seq: u64,
    /// The segments on disk do not lead into the snapshot (a snapshot install was interrupted): the writer
    /// must start a segment at `snapshot index + 1`, or the next recovery would replay the stale log again.
    pub(crate) needs_fresh_segment: bool,
    /// The newest segment lost its leading hard-state record to a torn write; compaction relies on the
    /// newest segment holding the hard state, so the writer must start a segment that does.
    pub(crate) newest_lacks_hard_state: bool,
    pub(crate) stats: RecoveryStats,
}

pub(crate) fn recover(fs: &dyn Fs, dir: &Path) -> Result<Recovered, WalError> {
    let started = Instant::now();
    let names = fs.list_dir(dir).map_err(WalError::io("list", dir))?;
    let mut snapshot_names = Vec::new();
    let mut segment_names = Vec::new();
    for name in names {
        if name.ends_with(TMP_SUFFIX) || name.ends_with(SPARE_SUFFIX) {
            // A snapshot whose write never finished, or a segment prepared for a roll that never came; it
            // was never renamed, so nothing refers to it.
            let path = dir.join(&name);
            fs.remove_file(&path)
                .map_err(WalError::io("remove", &path))?;
        } else if let Some(key) = parse_snapshot_file_name(&name) {
            snapshot_names.push((key, name));
        } else if let Some(key) = parse_segment_file_name(&name) {
            segment_names.push((key, name));
        }
    }
    snapshot_names.sort_unstable();
    segment_names.sort_unstable();

    let mut snapshot = None;
    let mut snapshot_file = None;
    let mut snapshot_error = None;
    for (_, name) in snapshot_names.iter().rev() {
        let path = dir.join(name);
        let bytes = Bytes::from(fs.read(&path).map_err(WalError::io("read", &path))?);
        let size = bytes.len() as u64;
        match decode_snapshot(&path, bytes) {
            Ok(decoded) => {
                snapshot = Some(decoded);
                snapshot_file = Some((path, size));
                break;
            }
            Err(error) => {
                // An older snapshot plus the log may still cover everything; the gap check below decides.
                tracing::warn!(%error, "skipping damaged snapshot");
                snapshot_error.get_or_insert(error);
            }
        }
    }
    let (snapshot_index, snapshot_term) = snapshot
        .as_ref()
        .map_or((0, 0), |s| (s.meta.index, s.meta.term));

    let mut log = MemLog::new(0, 0);
    let mut hard_state = HardState::default();
    let mut segments = Vec::new();
    let mut stats = RecoveryStats::default();
    let mut next_seq = 1;
    let mut newest_lacks_hard_state = false;
    for (position, ((seq, first_index), name)) in segment_names.iter().enumerate() {
        let (seq, first_index) = (*seq, *first_index);
        let is_newest = position + 1 == segment_names.len();
        let path = dir.join(name);
        let bytes = Bytes::from(fs.read(&path).map_err(WalError::io("read", &path))?);
        next_seq = seq + 1;
        stats.segments += 1;
        if check_header(&path, &bytes, seq, first_index, is_newest)? == Header::Torn {
            tracing::warn!(path = %path.display(), "removing newest segment whose first write never completed");
            fs.remove_file(&path)
                .map_err(WalError::io("remove", &path))?;
            fs.sync_dir(dir)
                .map_err(WalError::io("fsync directory", dir))?;
            stats.truncated_torn_bytes += bytes.len() as u64;
            continue;
        }
        cut_back_to(&mut log, first_index - 1);
        let mut has_hard_state = false;
        let end = scan_records(&path, &bytes, is_newest, |offset, record| {
            match record {
                Record::Entry(entry) => {
                    if entry.index > log.last_index() + 1 {
                        return Err(WalError::corrupt(
                            &path,
                            offset,
                            format!(
                                "entry {} does not follow entry {}",
                                entry.index,
                                log.last_index()
                            ),
                        ));
                    }
                    cut_back_to(&mut log, entry.index - 1);
                    log.overwrite(entry);
                }
                Record::HardState(recorded) => {
                    hard_state = recorded;
                    has_hard_state = true;
                }
            }
            Ok(())
        })?;
        let allocated = bytes.len() as u64;
        let len = match end {
            SegmentEnd::Clean => allocated,
            SegmentEnd::ZeroTail { offset } => offset,
            SegmentEnd::TornTail { offset, reason } => {
                // Zeroed rather than truncated: the file keeps its pre-allocated blocks, and no byte of the
                // torn record is left behind the next, possibly shorter, records to be misread later.
                let damage_end = bytes
                    .iter()
                    .rposition(|&b| b != 0)
                    .map_or(offset, |last| last as u64 + 1);
                tracing::warn!(path = %path.display(), offset, damage_end, reason, "zeroing an interrupted final write");
                zero_range(fs, &path, offset, damage_end - offset)?;
                stats.truncated_torn_bytes += damage_end - offset;
                offset
            }
        };
        segments.push(SegmentInfo {
            first_index,
            path,
            len,
            allocated,
        });
        newest_lacks_hard_state = !has_hard_state;
    }

    let needs_fresh_segment = connect_to_snapshot(
        &mut log,
        snapshot_index,
        snapshot_term,
        &segments,
        snapshot_error,
    )?;
    stats.entries = log.entries().len() as u64;
    stats.elapsed = started.elapsed();
    Ok(Recovered {
        log,
        hard_state,
        snapshot,
        snapshot_file,
        segments,
        next_seq,
        needs_fresh_segment,
        newest_lacks_hard_state,
        stats,
    })
}

/// Durably overwrites `len` bytes of `path` from `offset` on with zeros.
fn zero_range(fs: &dyn Fs, path: &Path, offset: u64, len: u64) -> Result<(), WalError> {
    let mut file = fs
        .open_at(path, offset)
        .map_err(WalError::io("open", path))?;
    file.write_all(&vec![0; len as usize])
        .map_err(WalError::io("write", path))?;
    file.sync_data().map_err(WalError::io("fdatasync", path))
}

/// Makes `index` the log's last index if the log reaches that far; if the log starts after it, what came
/// before is gone (compacted, or replaced by a snapshot), so the log restarts there with an unknown base term
/// that `connect_to_snapshot` settles.
fn cut_back_to(log: &mut MemLog, index: Index) {
    if index < log.base() || index > log.last_index() {
        log.restart(index, 0);
    } else {
        log.truncate_after(index);
    }
}

/// After replay, the visible log is what follows the snapshot. Entries the snapshot covers are dropped; a log
/// that disagrees with the snapshot at its index (or stops short of it) was being replaced by it when the
/// machine died; then the answer is true: the replaced log is still on disk.
fn connect_to_snapshot(
    log: &mut MemLog,
    snapshot_index: Index,
    snapshot_term: u64,
    segments: &[SegmentInfo],
    snapshot_error: Option<WalError>,
) -> Result<bool, WalError> {
    if log.base() > snapshot_index {
        if let Some(error) = snapshot_error {
            return Err(error);
        }
        let file = segments.first().map(|s| s.path.clone()).unwrap_or_default();
        return Err(WalError::corrupt(
            file,
            0,
            format!(
                "the log starts at index {} but the newest snapshot ends at {snapshot_index}: entries are missing",
                log.first_index()
            ),
        ));
    }
    if log.base() == snapshot_index {
        log.set_base_term(snapshot_term);
        Ok(false)
    } else if log.term(snapshot_index) == Some(snapshot_term) {
        log.drop_through(snapshot_index);
        Ok(false)
    } else {
        if log.last_index() > snapshot_index {
            tracing::warn!(
                snapshot_index,
                "discarding a log suffix that conflicts with the snapshot"
            );
        }
        log.restart(snapshot_index, snapshot_term);
        Ok(true)
    }
}

//! Rebuilding the node's state from the data directory at start-up.
//!
//! Rules (see `docs/storage.md`): the newest snapshot that verifies wins; segments are replayed in sequence
//! order, later records overriding earlier ones at the same index; only the newest segment may end in an
//! interrupted write, which is overwritten with zeros, and only the newest may end in (pre-allocated) zeros;
//! the log must connect to the snapshot, or the node refuses to start.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use raftkv_raft::{HardState, Index, Snapshot, Term};

use crate::error::WalError;
use crate::fs::Fs;
use crate::mem_log::MemLog;
use crate::record::Record;
use crate::segment::{
    check_header, parse_segment_file_name, scan_records, Header, SegmentEnd, SegmentInfo,
    SPARE_SUFFIX,
};
use crate::snapshot_file::{decode_snapshot, parse_snapshot_file_name, TMP_SUFFIX};

/// What [`Wal::open`](crate::Wal::open) found, for logs and start-up metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryStats {
    /// Log entries handed back in [`InitialState::entries`](crate::InitialState::entries).
    pub entries: u64,
    /// Segment files read.
    pub segments: usize,
    /// Bytes cut from the end of the newest segment because a crash interrupted their write.
    pub truncated_torn_bytes: u64,
    pub elapsed: Duration,
}

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

/// Rebuilds the state kept in `dir`, in four steps: clear away unfinished files and list the rest
/// ([`list_files`]), pick the snapshot ([`load_newest_snapshot`]), replay the segments ([`replay_segments`]),
/// and make the log follow the snapshot ([`connect_to_snapshot`]).
pub(crate) fn recover(fs: &dyn Fs, dir: &Path) -> Result<Recovered, WalError> {
    let started = Instant::now();
    let files = list_files(fs, dir)?;
    let newest = load_newest_snapshot(fs, dir, &files.snapshots)?;
    let (snapshot_index, snapshot_term) = newest
        .snapshot
        .as_ref()
        .map_or((0, 0), |s| (s.meta.index, s.meta.term));
    let mut stats = RecoveryStats::default();
    let mut replay = replay_segments(fs, dir, &files.segments, &mut stats)?;
    let needs_fresh_segment = connect_to_snapshot(
        &mut replay.log,
        snapshot_index,
        snapshot_term,
        &replay.segments,
        newest.error,
    )?;
    stats.entries = replay.log.entries().len() as u64;
    stats.elapsed = started.elapsed();
    Ok(Recovered {
        log: replay.log,
        hard_state: replay.hard_state,
        snapshot: newest.snapshot,
        snapshot_file: newest.file,
        segments: replay.segments,
        next_seq: replay.next_seq,
        needs_fresh_segment,
        newest_lacks_hard_state: replay.newest_lacks_hard_state,
        stats,
    })
}

/// The snapshot and segment files of a data directory, each list sorted by the key in its names
/// (`(index, term)` and `(seq, first_index)`), so oldest first.
struct Files {
    snapshots: Vec<((Index, Term), String)>,
    segments: Vec<((u64, Index), String)>,
}

/// Step 1: lists the directory. Afterwards no unfinished snapshot (`*.snap.tmp`) or spare segment
/// (`*.wal.tmp`) is left in it, and the snapshot and segment files are known, oldest first; any other file is
/// ignored.
fn list_files(fs: &dyn Fs, dir: &Path) -> Result<Files, WalError> {
    let names = fs.list_dir(dir).map_err(WalError::io("list", dir))?;
    let mut files = Files {
        snapshots: Vec::new(),
        segments: Vec::new(),
    };
    for name in names {
        if name.ends_with(TMP_SUFFIX) || name.ends_with(SPARE_SUFFIX) {
            // A snapshot whose write never finished, or a segment prepared for a roll that never came; it
            // was never renamed, so nothing refers to it.
            let path = dir.join(&name);
            fs.remove_file(&path)
                .map_err(WalError::io("remove", &path))?;
        } else if let Some(key) = parse_snapshot_file_name(&name) {
            files.snapshots.push((key, name));
        } else if let Some(key) = parse_segment_file_name(&name) {
            files.segments.push((key, name));
        }
    }
    files.snapshots.sort_unstable();
    files.segments.sort_unstable();
    Ok(files)
}

/// The snapshot recovery starts from, if any.
struct NewestSnapshot {
    snapshot: Option<Snapshot>,
    /// Path and size of `snapshot`'s file.
    file: Option<(PathBuf, u64)>,
    /// Why the newest snapshot file(s) skipped over failed to verify, if any did.
    error: Option<WalError>,
}

/// Step 2: finds the newest snapshot file that verifies. Damaged newer ones are skipped (not removed), and
/// the first such error is kept: if the log does not reach back to the older snapshot, it is what recovery
/// reports.
fn load_newest_snapshot(
    fs: &dyn Fs,
    dir: &Path,
    names: &[((Index, Term), String)],
) -> Result<NewestSnapshot, WalError> {
    let mut newest = NewestSnapshot {
        snapshot: None,
        file: None,
        error: None,
    };
    for (_, name) in names.iter().rev() {
        let path = dir.join(name);
        let bytes = Bytes::from(fs.read(&path).map_err(WalError::io("read", &path))?);
        let size = bytes.len() as u64;
        match decode_snapshot(&path, bytes) {
            Ok(decoded) => {
                newest.snapshot = Some(decoded);
                newest.file = Some((path, size));
                break;
            }
            Err(error) => {
                // An older snapshot plus the log may still cover everything; the gap check decides.
                tracing::warn!(%error, "skipping damaged snapshot");
                newest.error.get_or_insert(error);
            }
        }
    }
    Ok(newest)
}

/// What replaying the segments rebuilt, before it is connected to the snapshot.
struct Replay {
    log: MemLog,
    /// The last hard-state record read.
    hard_state: HardState,
    /// The segments kept, oldest first, with their used lengths.
    segments: Vec<SegmentInfo>,
    /// One past the highest segment sequence number seen (even that of a removed torn segment).
    next_seq: u64,
    newest_lacks_hard_state: bool,
}

/// Step 3: replays every segment in sequence order. Afterwards the log and hard state are what the
/// records say (later records overriding earlier ones at the same index); a newest segment whose header
/// was never completely written is gone, durably; and the newest segment's interrupted final write, if any,
/// has been zeroed durably.
fn replay_segments(
    fs: &dyn Fs,
    dir: &Path,
    names: &[((u64, Index), String)],
    stats: &mut RecoveryStats,
) -> Result<Replay, WalError> {
    let mut replay = Replay {
        log: MemLog::new(0, 0),
        hard_state: HardState::default(),
        segments: Vec::new(),
        next_seq: 1,
        newest_lacks_hard_state: false,
    };
    for (position, ((seq, first_index), name)) in names.iter().enumerate() {
        let (seq, first_index) = (*seq, *first_index);
        let is_newest = position + 1 == names.len();
        let path = dir.join(name);
        let bytes = Bytes::from(fs.read(&path).map_err(WalError::io("read", &path))?);
        replay.next_seq = seq + 1;
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
        replay.replay_segment(fs, path, &bytes, first_index, is_newest, stats)?;
    }
    Ok(replay)
}

impl Replay {
    /// Applies one segment with a valid header: cuts the log back to `first_index - 1`, applies its
    /// records in order, settles its end (see [`settle_segment_end`]) and records it as the newest segment.
    fn replay_segment(
        &mut self,
        fs: &dyn Fs,
        path: PathBuf,
        bytes: &Bytes,
        first_index: Index,
        is_newest: bool,
        stats: &mut RecoveryStats,
    ) -> Result<(), WalError> {
        let log = &mut self.log;
        let hard_state = &mut self.hard_state;
        cut_back_to(log, first_index - 1);
        let mut has_hard_state = false;
        let end = scan_records(&path, bytes, is_newest, |offset, record| {
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
                    cut_back_to(log, entry.index - 1);
                    log.overwrite(entry);
                }
                Record::HardState(recorded) => {
                    *hard_state = recorded;
                    has_hard_state = true;
                }
            }
            Ok(())
        })?;
        let allocated = bytes.len() as u64;
        let len = settle_segment_end(fs, &path, bytes, end, stats)?;
        self.segments.push(SegmentInfo {
            first_index,
            path,
            len,
            allocated,
        });
        self.newest_lacks_hard_state = !has_hard_state;
        Ok(())
    }
}

/// Returns the used length of a segment that ends as `end` says. An interrupted final write is zeroed
/// (durably) first, and its bytes counted in `stats`.
fn settle_segment_end(
    fs: &dyn Fs,
    path: &Path,
    bytes: &Bytes,
    end: SegmentEnd,
    stats: &mut RecoveryStats,
) -> Result<u64, WalError> {
    Ok(match end {
        SegmentEnd::Clean => bytes.len() as u64,
        SegmentEnd::ZeroTail { offset } => offset,
        SegmentEnd::TornTail { offset, reason } => {
            // Zeroed rather than truncated: the file keeps its pre-allocated blocks, and no byte of the
            // torn record is left behind the next, possibly shorter, records to be misread later.
            let damage_end = bytes
                .iter()
                .rposition(|&b| b != 0)
                .map_or(offset, |last| last as u64 + 1);
            tracing::warn!(path = %path.display(), offset, damage_end, reason, "zeroing an interrupted final write");
            zero_range(fs, path, offset, damage_end - offset)?;
            stats.truncated_torn_bytes += damage_end - offset;
            offset
        }
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

/// Step 4: after replay, the visible log is what follows the snapshot. Entries the snapshot covers are
/// dropped; a log that disagrees with the snapshot at its index (or stops short of it) was being replaced by
/// it when the machine died; then the answer is true: the replaced log is still on disk.
fn connect_to_snapshot(
    log: &mut MemLog,
    snapshot_index: Index,
    snapshot_term: Term,
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

//! The write path: the [`Wal`] itself; buffering records, group commit, segment rolling,
//! adopting snapshots and compaction.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use raftkv_raft::{Entry, HardState, Index, InitialState, Snapshot, Term};

use crate::error::WalError;
use crate::fs::{Fs, LockGuard, RealFs, WalFile};
use crate::mem_log::MemLog;
use crate::options::WalOptions;
use crate::record::{encode_entry, encode_hard_state, entry_record_len, HARD_STATE_RECORD_LEN};
use crate::recovery::{recover, RecoveryStats};
use crate::segment::{encode_header, segment_file_name, SegmentInfo, SEGMENT_HEADER_LEN};
use crate::snapshot_file::{
    parse_snapshot_file_name, write_snapshot, SnapshotWriter, WrittenSnapshot,
};
use crate::spare::Spare;

const LOCK_FILE: &str = "LOCK";
/// A segment's size before its first entry: the header and the hard state every segment starts with.
const FRESH_SEGMENT_LEN: u64 = (SEGMENT_HEADER_LEN + HARD_STATE_RECORD_LEN) as u64;
/// A buffer grown beyond this by one huge batch is given back rather than kept for the process's life.
const RETAINED_BUFFER_BYTES: usize = 16 * 1024 * 1024;

/// A place in the pending bytes where a new segment begins; its header is already encoded there.
#[derive(Debug)]
struct PendingRoll {
    at: usize,
    seq: u64,
    first_index: Index,
}

/// Durable storage for one Raft node: see the crate documentation.
pub struct Wal {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    options: WalOptions,
    _lock: LockGuard,
    log: MemLog,
    /// The latest hard state given, durable or not.
    hard_state: HardState,
    durable_hard_state: HardState,
    snapshot_index: Index,
    snapshot_file: Option<(PathBuf, u64)>,
    /// Oldest first; the last one is the one being appended to.
    segments: Vec<SegmentInfo>,
    active: Option<Box<dyn WalFile>>,
    next_seq: u64,
    /// Encoded records waiting for the next `sync`: one reusable buffer, so appending allocates nothing.
    pending: Vec<u8>,
    pending_rolls: Vec<PendingRoll>,
    /// Size the segment receiving the next record will have once `pending` is written.
    tail_segment_len: u64,
    /// Set when a write or sync failed: what the disk holds is then unknown.
    poisoned: Option<String>,
    /// Files to delete, with `defer_deletes`.
    garbage: Vec<PathBuf>,
    spare: Spare,
}

impl fmt::Debug for Wal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.dir)
            .field("first_index", &self.first_index())
            .field("last_index", &self.last_index())
            .field("hard_state", &self.hard_state)
            .field("segments", &self.segments.len())
            .field("pending_bytes", &self.pending.len())
            .field("poisoned", &self.poisoned)
            .field("spare", &self.spare)
            .finish()
    }
}

impl Wal {
    /// Opens (creating if absent) the data directory, takes its lock file (a second open of the same
    /// directory, from this or another process, fails with [`WalError::Locked`]), and recovers: hard state,
    /// newest valid snapshot, log entries after it. A torn final record is truncated; corruption elsewhere is
    /// an error.
    pub fn open(
        dir: &Path,
        options: WalOptions,
    ) -> Result<(Wal, InitialState, RecoveryStats), WalError> {
        Wal::open_with_fs(Arc::new(RealFs), dir, options)
    }

    /// [`Wal::open`] on another file system, such as [`crate::sim_fs::SimFs`] in tests and simulations.
    pub fn open_with_fs(
        fs: Arc<dyn Fs>,
        dir: &Path,
        options: WalOptions,
    ) -> Result<(Wal, InitialState, RecoveryStats), WalError> {
        fs.create_dir_all(dir)
            .map_err(WalError::io("create directory", dir))?;
        // A directory just created is durable only once its parent's entry for it is.
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs.sync_dir(parent)
                .map_err(WalError::io("fsync directory", parent))?;
        }
        let lock_path = dir.join(LOCK_FILE);
        let lock = fs
            .try_lock(&lock_path)
            .map_err(WalError::io("lock", &lock_path))?
            .ok_or_else(|| WalError::Locked(lock_path.clone()))?;
        let recovered = recover(fs.as_ref(), dir)?;
        let initial = InitialState {
            hard_state: recovered.hard_state,
            snapshot: recovered.snapshot,
            entries: recovered.log.entries().to_vec(),
        };
        let active = match recovered.segments.last() {
            Some(segment) => Some(
                fs.open_at(&segment.path, segment.len)
                    .map_err(WalError::io("open", &segment.path))?,
            ),
            None => None,
        };
        let mut wal = Wal {
            dir: dir.to_path_buf(),
            options,
            _lock: lock,
            hard_state: recovered.hard_state,
            durable_hard_state: recovered.hard_state,
            snapshot_index: initial.snapshot.as_ref().map_or(0, |s| s.meta.index),
            snapshot_file: recovered.snapshot_file,
            tail_segment_len: recovered.segments.last().map_or(0, |s| s.len),
            segments: recovered.segments,
            active,
            next_seq: recovered.next_seq,
            log: recovered.log,
            pending: Vec::new(),
            pending_rolls: Vec::new(),
            poisoned: None,
            garbage: Vec::new(),
            spare: Spare::None,
            fs,
        };
        if recovered.needs_fresh_segment {
            let (index, term) = (wal.log.base(), wal.term(wal.log.base())?);
            wal.restart_log_after_snapshot(index, term)?;
        } else if wal.active.is_none() || recovered.newest_lacks_hard_state {
            wal.push_roll(wal.log.last_index() + 1);
            wal.write_pending()?;
        }
        tracing::info!(dir = %dir.display(), stats = ?recovered.stats, "storage recovered");
        Ok((wal, initial, recovered.stats))
    }

    /// Buffers entries for the next [`Wal::sync`]. If `entries[0].index <= last_index()`, the stored suffix
    /// from that index is discarded first (a follower's conflicting suffix). Entries must be contiguous and
    /// start after the newest snapshot, at most at `last_index() + 1`. They are readable at once and
    /// durable after `sync`.
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), WalError> {
        self.check_usable()?;
        let Some(first) = entries.first() else {
            return Ok(());
        };
        // Entries a snapshot covers are committed: replacing one would contradict the snapshot.
        let lowest = self.log.base().max(self.snapshot_index) + 1;
        if first.index < lowest || first.index > self.log.last_index() + 1 {
            return Err(WalError::InvalidRequest(format!(
                "append at index {}: must start in {lowest}..={} (the log holds {}..={}, the snapshot ends at {})",
                first.index,
                self.log.last_index() + 1,
                self.log.first_index(),
                self.log.last_index(),
                self.snapshot_index,
            )));
        }
        if let Some(pair) = entries
            .windows(2)
            .find(|pair| pair[1].index != pair[0].index + 1)
        {
            return Err(WalError::InvalidRequest(format!(
                "append: entry {} follows entry {}; entries must be contiguous",
                pair[1].index, pair[0].index
            )));
        }
        for entry in entries {
            let record_len = entry_record_len(entry) as u64;
            if self.tail_segment_len + record_len > self.options.segment_bytes
                && self.tail_segment_len > FRESH_SEGMENT_LEN
            {
                self.push_roll(entry.index);
            }
            encode_entry(&mut self.pending, entry);
            self.tail_segment_len += record_len;
            self.log.overwrite(entry.clone());
        }
        Ok(())
    }

    /// Buffers a new hard state for the next [`Wal::sync`]; it becomes durable together with the entries of
    /// that sync, and is written after them.
    pub fn set_hard_state(&mut self, hard_state: HardState) -> Result<(), WalError> {
        self.check_usable()?;
        self.hard_state = hard_state;
        Ok(())
    }

    /// Makes everything buffered durable: one write and one `fdatasync` (plus a file creation and a directory
    /// sync when a segment fills up). On error the `Wal` refuses further writes: reopen it.
    pub fn sync(&mut self) -> Result<(), WalError> {
        self.check_usable()?;
        if self.hard_state != self.durable_hard_state {
            encode_hard_state(&mut self.pending, &self.hard_state);
            self.tail_segment_len += HARD_STATE_RECORD_LEN as u64;
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        let result = self.write_pending();
        let result = self.poison_on_error(result);
        if result.is_ok() {
            self.spare.maybe_prepare(
                &self.fs,
                &self.dir,
                self.options.segment_bytes,
                self.tail_segment_len,
            );
        }
        result
    }

    /// Durably writes a snapshot file (temporary file, fdatasync, rename, directory fsync) and then removes
    /// older snapshots. Anything buffered is synced first. If the log holds the snapshot's last entry (same
    /// index and term), the entries after it are kept; otherwise the log is reset to start right after the
    /// snapshot (a follower installing a leader's snapshot). A snapshot older than the current one is ignored.
    pub fn save_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), WalError> {
        self.check_usable()?;
        if snapshot.meta.index < self.snapshot_index {
            tracing::debug!(
                index = snapshot.meta.index,
                current = self.snapshot_index,
                "ignoring stale snapshot"
            );
            return Ok(());
        }
        self.sync()?;
        let result = self.save_snapshot_synced(snapshot);
        self.poison_on_error(result)
    }

    fn save_snapshot_synced(&mut self, snapshot: &Snapshot) -> Result<(), WalError> {
        let written = write_snapshot(self.fs.as_ref(), &self.dir, snapshot)?;
        self.adopt_synced(written)
    }

    /// A writer for snapshot files that works on another thread than the log's (see [`SnapshotWriter`]).
    pub fn snapshot_writer(&self) -> SnapshotWriter {
        SnapshotWriter::new(Arc::clone(&self.fs), self.dir.clone())
    }

    /// Makes a snapshot file that a [`SnapshotWriter`] made durable the base of the log: exactly what
    /// [`Wal::save_snapshot`] does after writing its file. A file older than the current snapshot is
    /// removed instead.
    pub fn adopt_snapshot(&mut self, written: WrittenSnapshot) -> Result<(), WalError> {
        self.check_usable()?;
        if written.index < self.snapshot_index {
            tracing::debug!(
                index = written.index,
                current = self.snapshot_index,
                "dropping a stale snapshot file"
            );
            // Installing a newer snapshot may already have removed it.
            return match self.fs.remove_file(&written.path) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                    Err(WalError::io("remove", &written.path)(err))
                }
                _ => Ok(()),
            };
        }
        self.sync()?;
        let result = self.adopt_synced(written);
        self.poison_on_error(result)
    }

    fn adopt_synced(&mut self, written: WrittenSnapshot) -> Result<(), WalError> {
        let WrittenSnapshot {
            path,
            size,
            index,
            term,
        } = written;
        if self.log.term(index) != Some(term) {
            self.restart_log_after_snapshot(index, term)?;
        }
        self.snapshot_index = index;
        self.snapshot_file = Some((path.clone(), size));
        let names = self
            .fs
            .list_dir(&self.dir)
            .map_err(WalError::io("list", &self.dir))?;
        // Only older files go: a newer one may have been written meanwhile, waiting to be adopted next
        // (found by the simulator: removing it left a compacted log with no snapshot at all).
        for name in names {
            let old = self.dir.join(&name);
            let older = parse_snapshot_file_name(&name).is_some_and(|(at, _)| at <= index);
            if older && old != path {
                self.remove_or_defer(old)?;
            }
        }
        Ok(())
    }

    /// Drops log entries up to `index`, which must not pass the newest snapshot. Reads before `index + 1`
    /// fail with [`WalError::Compacted`] from now on; segment files whose entries are all covered are deleted.
    pub fn compact(&mut self, index: Index) -> Result<(), WalError> {
        self.check_usable()?;
        if index > self.snapshot_index {
            return Err(WalError::InvalidRequest(format!(
                "compact({index}): the newest snapshot only covers up to {}",
                self.snapshot_index
            )));
        }
        let index = index.min(self.log.last_index());
        if index <= self.log.base() {
            return Ok(());
        }
        self.log.drop_through(index);
        // A segment's live entries all precede the next segment's first index, which cuts the log back.
        let mut removable = 0;
        while removable + 1 < self.segments.len()
            && self.segments[removable + 1].first_index <= index + 1
        {
            removable += 1;
        }
        // Oldest first, each removal durable before the next: a crash must leave a suffix of the segment
        // chain. If an older segment came back while a newer one that overwrote part of it stayed gone,
        // the older one's stale entries would be replayed as if current (found by the crash test, seed
        // 8255 of CRASH_RUNS=10000).
        let mut result = Ok(());
        for segment in self.segments.drain(..removable).collect::<Vec<_>>() {
            result = result.and_then(|()| self.remove_segment_in_order(segment.path));
        }
        self.poison_on_error(result)
    }

    /// Replaces the whole log by an empty one following the snapshot at `index`. A segment starting at
    /// `index + 1` only cuts the replayed log back to `index`, which would leave a conflicting entry at or
    /// before `index` in place; so every older segment is removed, durably, before anything is appended.
    fn restart_log_after_snapshot(&mut self, index: Index, term: Term) -> Result<(), WalError> {
        self.push_roll(index + 1);
        self.write_pending()?;
        self.log.restart(index, term);
        self.remove_segments(self.segments.len() - 1)?;
        self.fs
            .sync_dir(&self.dir)
            .map_err(WalError::io("fsync directory", &self.dir))
    }

    /// Unlinks `path` now, or queues it for [`Wal::take_garbage`] with `defer_deletes`.
    fn remove_or_defer(&mut self, path: PathBuf) -> Result<(), WalError> {
        if self.options.defer_deletes {
            self.garbage.push(path);
            return Ok(());
        }
        self.fs
            .remove_file(&path)
            .map_err(WalError::io("remove", &path))
    }

    fn remove_segment_in_order(&mut self, path: PathBuf) -> Result<(), WalError> {
        if self.options.defer_deletes {
            self.garbage.push(path);
            return Ok(());
        }
        self.fs
            .remove_file(&path)
            .map_err(WalError::io("remove", &path))?;
        self.fs
            .sync_dir(&self.dir)
            .map_err(WalError::io("fsync directory", &self.dir))
    }

    /// Files that compaction no longer needs, for the caller to delete (only with `defer_deletes`), in
    /// the order they must be deleted: use [`delete_in_order`](crate::delete_in_order), which makes each
    /// deletion durable before the next (see `compact`). A file may be named twice or already be gone.
    pub fn take_garbage(&mut self) -> Vec<PathBuf> {
        std::mem::take(&mut self.garbage)
    }

    /// Removes the `count` oldest segments, oldest first, each removal durable before the next (see
    /// `compact` for why the order matters).
    fn remove_segments(&mut self, count: usize) -> Result<(), WalError> {
        for segment in self.segments.drain(..count).collect::<Vec<_>>() {
            self.fs
                .remove_file(&segment.path)
                .map_err(WalError::io("remove", &segment.path))?;
            self.fs
                .sync_dir(&self.dir)
                .map_err(WalError::io("fsync directory", &self.dir))?;
        }
        Ok(())
    }

    /// Entries `[lo, hi)`, from memory. Before the first index: [`WalError::Compacted`].
    pub fn entries(&self, lo: Index, hi: Index) -> Result<Vec<Entry>, WalError> {
        Ok(self.log.slice(lo, hi)?.to_vec())
    }

    /// The term of the entry at `index`; `first_index() - 1` answers with the snapshot's (or compaction
    /// point's) term.
    pub fn term(&self, index: Index) -> Result<Term, WalError> {
        self.log.term(index).ok_or_else(|| {
            if index < self.log.base() {
                WalError::Compacted {
                    index,
                    first: self.log.first_index(),
                }
            } else {
                WalError::Unavailable {
                    index,
                    last: self.log.last_index(),
                }
            }
        })
    }

    /// The first index still in the log (the snapshot's index + 1 when the log is empty).
    pub fn first_index(&self) -> Index {
        self.log.first_index()
    }

    /// The last index in the log, including entries not yet synced.
    pub fn last_index(&self) -> Index {
        self.log.last_index()
    }

    /// The latest hard state given, synced or not.
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// Bytes in segment and snapshot files, counting files at their size: the newest segment's
    /// pre-allocated (zero-filled) room and the spare segment prepared for the next roll are included.
    pub fn disk_usage(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| s.allocated.max(s.len))
            .sum::<u64>()
            + self.spare.size()
            + self.snapshot_file.as_ref().map_or(0, |(_, size)| *size)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn check_usable(&self) -> Result<(), WalError> {
        match &self.poisoned {
            Some(reason) => Err(WalError::Poisoned(reason.clone())),
            None => Ok(()),
        }
    }

    fn poison_on_error<T>(&mut self, result: Result<T, WalError>) -> Result<T, WalError> {
        if let Err(error) = &result {
            tracing::error!(%error, "storage write failed; refusing further writes until reopened");
            self.poisoned = Some(error.to_string());
        }
        result
    }

    /// Starts a new segment at the current end of the pending bytes. Every segment begins with the durable
    /// hard state, so deleting older segments never loses it.
    fn push_roll(&mut self, first_index: Index) {
        let at = self.pending.len();
        encode_header(&mut self.pending, self.next_seq, first_index);
        encode_hard_state(&mut self.pending, &self.durable_hard_state);
        self.pending_rolls.push(PendingRoll {
            at,
            seq: self.next_seq,
            first_index,
        });
        self.next_seq += 1;
        self.tail_segment_len = FRESH_SEGMENT_LEN;
    }

    /// Writes and syncs `pending`: the bytes before the first roll go to the newest segment; each roll
    /// first finishes the segment before it (cut to its used length, durably: only the newest segment may
    /// end in zeros), then renames a zero-filled file into place, writes its part into it and syncs the
    /// directory.
    fn write_pending(&mut self) -> Result<(), WalError> {
        let mut pending = std::mem::take(&mut self.pending);
        let rolls = std::mem::take(&mut self.pending_rolls);
        let first_end = rolls.first().map_or(pending.len(), |roll| roll.at);
        if first_end > 0 {
            let segment = self
                .segments
                .last_mut()
                .expect("bytes before any roll go to an existing segment");
            let file = self.active.as_mut().expect("the newest segment is open");
            file.write_all(&pending[..first_end])
                .map_err(WalError::io("write", &segment.path))?;
            segment.len += first_end as u64;
            segment.allocated = segment.allocated.max(segment.len);
            if rolls.is_empty() {
                file.sync_data()
                    .map_err(WalError::io("fdatasync", &segment.path))?;
            }
        }
        for (position, roll) in rolls.iter().enumerate() {
            self.finish_newest_segment()?;
            let end = rolls
                .get(position + 1)
                .map_or(pending.len(), |next| next.at);
            let bytes = &pending[roll.at..end];
            let path = self.dir.join(segment_file_name(roll.seq, roll.first_index));
            let allocated = self.spare.install(
                self.fs.as_ref(),
                &self.dir,
                self.options.segment_bytes,
                &path,
                bytes.len() as u64,
            )?;
            let mut file = self
                .fs
                .open_at(&path, 0)
                .map_err(WalError::io("open", &path))?;
            file.write_all(bytes)
                .map_err(WalError::io("write", &path))?;
            if position + 1 == rolls.len() {
                file.sync_data().map_err(WalError::io("fdatasync", &path))?;
            }
            // The new name must be durable too, or a crash could lose the whole segment after this returns.
            self.fs
                .sync_dir(&self.dir)
                .map_err(WalError::io("fsync directory", &self.dir))?;
            self.segments.push(SegmentInfo {
                first_index: roll.first_index,
                path,
                len: bytes.len() as u64,
                allocated: allocated.max(bytes.len() as u64),
            });
            self.active = Some(file);
        }
        pending.clear();
        if pending.capacity() > RETAINED_BUFFER_BYTES {
            pending = Vec::new();
        }
        self.pending = pending;
        self.durable_hard_state = self.hard_state;
        Ok(())
    }

    /// Makes the newest segment's records durable and cuts off its unused zero-filled room, before a newer
    /// segment exists: recovery takes a zero tail anywhere but in the newest segment for corruption.
    fn finish_newest_segment(&mut self) -> Result<(), WalError> {
        let Some(segment) = self.segments.last_mut() else {
            return Ok(());
        };
        if segment.allocated > segment.len {
            // set_len + fsync: also makes the records written since the last sync durable.
            self.fs
                .truncate(&segment.path, segment.len)
                .map_err(WalError::io("truncate", &segment.path))?;
            segment.allocated = segment.len;
        } else if let Some(file) = self.active.as_mut() {
            file.sync_data()
                .map_err(WalError::io("fdatasync", &segment.path))?;
        }
        Ok(())
    }
}

impl Drop for Wal {
    /// Waits for a spare segment being prepared (no thread may touch the directory once its lock is
    /// released) and removes it: the next open would anyway.
    fn drop(&mut self) {
        self.spare.discard(self.fs.as_ref(), &self.dir);
    }
}

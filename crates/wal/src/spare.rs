//! The spare segment: the zero-filled file (`next-segment.wal.tmp`) that the next roll renames into place,
//! prepared ahead of time so that the roll itself does not pay for the zero-filling.
//!
//! Segments are pre-allocated (see `segment.rs`): [`prepare_segment_file`] writes a file's zeros and
//! syncs them before any record goes in. [`Spare`] tracks the one spare file of a log, prepared on a
//! background thread where the file system allows it.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::error::WalError;
use crate::fs::Fs;
use crate::segment::SPARE_FILE;

/// Zeros written per call, and per `fdatasync`, when preparing a segment: one sync of many MiB of dirty
/// pages would hold up the log's own small syncs on the same disk for as long.
const ZERO_CHUNK: u64 = 1 << 20;

/// Creates (or empties) `path` and fills it with `size` zero bytes, durably: the blocks are then written
/// and allocated, so records written over them later need no metadata update to be synced.
pub(crate) fn prepare_segment_file(fs: &dyn Fs, path: &Path, size: u64) -> io::Result<()> {
    let mut file = fs.create(path)?;
    let zeros = vec![0u8; size.clamp(1, ZERO_CHUNK) as usize];
    let mut left = size;
    while left > 0 {
        let n = left.min(ZERO_CHUNK) as usize;
        file.write_all(&zeros[..n])?;
        file.sync_data()?;
        left -= n as u64;
    }
    if size == 0 {
        file.sync_data()?;
    }
    Ok(())
}

/// The zero-filled file the next roll renames into place (see [`prepare_segment_file`]).
#[derive(Debug)]
pub(crate) enum Spare {
    None,
    /// Being zero-filled on a background thread; `size` bytes once done.
    Preparing {
        thread: JoinHandle<io::Result<()>>,
        size: u64,
    },
    Ready {
        size: u64,
    },
}

impl Spare {
    /// Bytes the spare file takes (or will take once prepared); 0 if there is none.
    pub(crate) fn size(&self) -> u64 {
        match self {
            Spare::None => 0,
            Spare::Preparing { size, .. } | Spare::Ready { size } => *size,
        }
    }

    /// Renames the spare zero-filled file in `dir` to `path` (waiting for it if it is still being
    /// prepared), or, if there is none or it is too small for `needed` bytes, prepares one of
    /// `segment_bytes.max(needed)` bytes now. Returns the file's size.
    pub(crate) fn install(
        &mut self,
        fs: &dyn Fs,
        dir: &Path,
        segment_bytes: u64,
        path: &Path,
        needed: u64,
    ) -> Result<u64, WalError> {
        let spare_path = dir.join(SPARE_FILE);
        let ready = match std::mem::replace(self, Spare::None) {
            Spare::None => None,
            Spare::Ready { size } => Some(size),
            Spare::Preparing { thread, size } => match thread.join() {
                Ok(Ok(())) => Some(size),
                Ok(Err(error)) => {
                    tracing::warn!(%error, "preparing the next segment failed; retrying on the log's thread");
                    None
                }
                Err(_) => {
                    tracing::warn!("the thread preparing the next segment panicked; retrying on the log's thread");
                    None
                }
            },
        };
        let size = match ready {
            Some(size) if size >= needed => size,
            _ => {
                let size = segment_bytes.max(needed);
                prepare_segment_file(fs, &spare_path, size)
                    .map_err(WalError::io("prepare segment", &spare_path))?;
                size
            }
        };
        fs.rename(&spare_path, path)
            .map_err(WalError::io("rename", &spare_path))?;
        Ok(size)
    }

    /// Once the newest segment (`tail_segment_len` bytes) is half full, starts preparing the file the next
    /// roll will use: on a background thread if the file system allows it, else (the simulated one) right
    /// here. Failure only costs speed: the roll then prepares a file itself, and reports its error.
    pub(crate) fn maybe_prepare(
        &mut self,
        fs: &Arc<dyn Fs>,
        dir: &Path,
        segment_bytes: u64,
        tail_segment_len: u64,
    ) {
        if !matches!(self, Spare::None) || tail_segment_len.saturating_mul(2) < segment_bytes {
            return;
        }
        let size = segment_bytes;
        let path = dir.join(SPARE_FILE);
        if !fs.allows_background_work() {
            match prepare_segment_file(fs.as_ref(), &path, size) {
                Ok(()) => *self = Spare::Ready { size },
                Err(error) => tracing::warn!(%error, "cannot prepare the next segment"),
            }
            return;
        }
        let fs = Arc::clone(fs);
        match std::thread::Builder::new()
            .name("raftkv-wal-prepare".into())
            .spawn(move || prepare_segment_file(fs.as_ref(), &path, size))
        {
            Ok(thread) => *self = Spare::Preparing { thread, size },
            Err(error) => {
                tracing::warn!(%error, "cannot start a thread to prepare the next segment")
            }
        }
    }

    /// Waits for a spare being prepared and removes the spare file, if any, ignoring errors (the next open
    /// removes a leftover anyway). Must run while the directory's lock is still held: no thread may touch
    /// the directory once it is released.
    pub(crate) fn discard(&mut self, fs: &dyn Fs, dir: &Path) {
        let had_spare = match std::mem::replace(self, Spare::None) {
            Spare::None => false,
            Spare::Ready { .. } => true,
            Spare::Preparing { thread, .. } => {
                let _ = thread.join();
                true
            }
        };
        if had_spare {
            let _ = fs.remove_file(&dir.join(SPARE_FILE));
        }
    }
}

//! Deleting, outside the log, the files a log with `defer_deletes` hands out: in order, each deletion
//! durable before the next, and never a newer file while an older one could not be deleted.

use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;

use crate::fs::{Fs, RealFs};

/// Files waiting to be deleted, oldest first. A deletion that fails stays at the front, and every
/// later file waits behind it: a crash must always leave a suffix of the segment chain (see
/// [`Wal::compact`](crate::Wal::compact)), so a newer file may never go before an older one.
#[derive(Debug, Default)]
pub struct OrderedDeletions {
    pending: VecDeque<PathBuf>,
}

impl OrderedDeletions {
    /// Queues `files` (in the order given) behind every file already waiting.
    pub fn push(&mut self, files: Vec<PathBuf>) {
        self.pending.extend(files);
    }

    /// Files still waiting.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Deletes the waiting files in order, each made durable (directory fsync) before the next. Stops
    /// at the first error, keeping that file and everything after it for the next call; a file already
    /// gone counts as deleted once its directory is synced.
    pub fn run(&mut self, fs: &dyn Fs) -> io::Result<()> {
        while let Some(path) = self.pending.front() {
            match fs.remove_file(path) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(err),
            }
            if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
                fs.sync_dir(dir)?;
            }
            self.pending.pop_front();
        }
        Ok(())
    }
}

/// Deletes files handed out by [`Wal::take_garbage`](crate::Wal::take_garbage) on the real file system, in
/// order, each deletion made durable (directory fsync) before the next. Files already gone are skipped.
pub fn delete_in_order(paths: &[PathBuf]) -> io::Result<()> {
    let mut deletions = OrderedDeletions::default();
    deletions.push(paths.to_vec());
    deletions.run(&RealFs)
}

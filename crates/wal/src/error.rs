//! [`WalError`]: everything that can go wrong in the storage layer, and helpers to build it.

use std::io;
use std::path::PathBuf;

use raftkv_raft::Index;

/// Everything that can go wrong in the storage layer.
#[derive(thiserror::Error, Debug)]
pub enum WalError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Damaged bytes that cannot be explained by a crash in the middle of a write. The node must not start:
    /// skipping them could silently drop committed entries.
    #[error("corrupt storage file {} at byte offset {offset}: {reason}", file.display())]
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    /// Another `Wal` (in this or another process) holds the data directory.
    #[error("data directory is already in use by another raftkv process or Wal (lock file {} is held)", .0.display())]
    Locked(PathBuf),
    /// The requested entry has been folded into a snapshot and removed from the log.
    #[error("log entry {index} has been compacted; the log now starts at {first}")]
    Compacted { index: Index, first: Index },
    /// The requested entry is past the end of the log.
    #[error("log entry {index} is not in the log, which ends at {last}")]
    Unavailable { index: Index, last: Index },
    /// The caller broke the API's contract (for example, non-contiguous entries).
    #[error("invalid storage request: {0}")]
    InvalidRequest(String),
    /// A write or sync failed earlier, so what is on disk is unknown (after a failed fsync the kernel may have
    /// dropped the dirty pages). Only reopening, which re-reads the disk, can continue safely.
    #[error("storage failed earlier and must be reopened: {0}")]
    Poisoned(String),
}

impl WalError {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> WalError {
        let path = path.into();
        move |source| WalError::Io { op, path, source }
    }

    pub(crate) fn corrupt(
        file: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> WalError {
        WalError::Corrupt {
            file: file.into(),
            offset,
            reason: reason.into(),
        }
    }
}

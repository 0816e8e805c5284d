//! # raftkv-wal: durable storage for one Raft node
//!
//! This crate owns everything a raftkv node keeps on disk for the Raft core: the log entries, the hard state
//! (term, vote, commit) and the state-machine snapshots, all inside one data directory that it locks for
//! its exclusive use. It turns the core's persistence contract ("these entries and this hard state, in this
//! order, durably, before you send the messages that depend on them") into as few `write`/`fdatasync` calls
//! as possible, and rebuilds the core's [`InitialState`] after any crash.
//!
//! What it must not touch: the meaning of entries (opaque bytes), the Raft rules (the core decides what to
//! persist and when), and anything outside its data directory.
//!
//! The on-disk layout, byte formats and recovery rules are described in `docs/storage.md`.
//!
//! ```no_run
//! # use raftkv_wal::*;
//! # fn main() -> Result<(), WalError> {
//! let (mut wal, initial, _stats) = Wal::open(std::path::Path::new("data/node1"), WalOptions::default())?;
//! # let _ = initial;
//! wal.append(&[Entry { index: 1, term: 1, kind: raftkv_raft::EntryKind::Normal, data: "x".into() }])?;
//! wal.set_hard_state(HardState { term: 1, vote: Some(1), commit: 0 })?;
//! wal.sync()?; // one write, one fdatasync: both are now durable
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod error;
pub mod fs;
mod mem_log;
mod record;
mod recovery;
mod segment;
pub mod sim_fs;
mod snapshot_file;
mod wal;

use std::time::Duration;

pub use error::WalError;
pub use raftkv_raft::{Entry, HardState, Index, InitialState, Snapshot, Term};
pub use wal::{delete_in_order, SnapshotWriter, Wal, WrittenSnapshot};

/// How a [`Wal`] lays out its files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalOptions {
    /// A segment is closed and a new one started once the next record would take it past this size. A single
    /// record larger than this still goes into a segment of its own.
    pub segment_bytes: u64,
    /// Leave the deletion of compacted segments and superseded snapshot files to the caller
    /// ([`Wal::take_garbage`]) instead of unlinking them in `compact`/`adopt_snapshot`. Unlinking tens of
    /// MiB can take tens of milliseconds, which would stall group commit if done on the log's thread.
    /// Crash-safe: files left behind are what a crash just before the compaction would have left, and
    /// recovery ignores them.
    pub defer_deletes: bool,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: 64 * 1024 * 1024,
            defer_deletes: false,
        }
    }
}

/// What [`Wal::open`] found, for logs and start-up metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryStats {
    /// Log entries handed back in [`InitialState::entries`].
    pub entries: u64,
    /// Segment files read.
    pub segments: usize,
    /// Bytes cut from the end of the newest segment because a crash interrupted their write.
    pub truncated_torn_bytes: u64,
    pub elapsed: Duration,
}

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

mod delete;
mod error;
pub mod fs;
mod mem_log;
mod options;
mod record;
mod recovery;
mod segment;
pub mod sim_fs;
mod snapshot_file;
mod spare;
mod wal;

pub use delete::{delete_in_order, OrderedDeletions};
pub use error::WalError;
pub use options::WalOptions;
pub use raftkv_raft::{Entry, HardState, Index, InitialState, Snapshot, Term};
pub use recovery::RecoveryStats;
pub use snapshot_file::{SnapshotWriter, WrittenSnapshot};
pub use wal::Wal;

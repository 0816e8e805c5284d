//! What a caller chooses when opening a log: [`WalOptions`].

/// How a [`Wal`](crate::Wal) lays out its files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalOptions {
    /// A segment is closed and a new one started once the next record would take it past this size. A single
    /// record larger than this still goes into a segment of its own.
    pub segment_bytes: u64,
    /// Leave the deletion of compacted segments and superseded snapshot files to the caller
    /// ([`Wal::take_garbage`](crate::Wal::take_garbage)) instead of unlinking them in
    /// `compact`/`adopt_snapshot`. Unlinking tens of MiB can take tens of milliseconds, which would stall
    /// group commit if done on the log's thread. Crash-safe: files left behind are what a crash just before
    /// the compaction would have left, and recovery ignores them.
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

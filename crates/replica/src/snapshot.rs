//! Snapshots of the store: when to take one ([`SnapshotPolicy`]) and the work of taking it
//! ([`SnapshotTask`]), which the driver runs off its hot path and reports back with
//! [`crate::Replica::snapshot_built`].

use bytes::Bytes;
use raftkv_kv::Store;
use raftkv_raft::{Index, Snapshot, SnapshotMeta, Term};
use raftkv_wal::{SnapshotWriter, WalError, WrittenSnapshot};

/// A snapshot serialised and made durable in the background, or why that failed.
pub type BuiltSnapshot = Result<(Snapshot, WrittenSnapshot), WalError>;

/// When to take a snapshot: once the log since the last one holds `entries` entries or as many bytes as
/// the larger of `bytes` and the last snapshot's size. The second rule keeps the cost of snapshotting a
/// large store proportional to the log it replaces.
#[derive(Debug, Default)]
pub struct SnapshotPolicy {
    pub entries: u64,
    pub bytes: u64,
    last_index: Index,
    last_size: u64,
    bytes_since: u64,
    applied_term: Term,
    in_progress: bool,
    stretch_permille: u64,
    /// Seeds the per-snapshot stretch, so a simulated run replays exactly.
    seed: u64,
}

impl SnapshotPolicy {
    pub fn new(entries: u64, bytes: u64, base: Index, seed: u64) -> SnapshotPolicy {
        let mut policy = SnapshotPolicy {
            entries,
            bytes,
            seed,
            ..SnapshotPolicy::default()
        };
        policy.restart_from(base, 0);
        policy
    }

    pub fn due(&self, applied: Index) -> bool {
        let stretch = |limit: u64| {
            limit
                .max(1)
                .saturating_add(limit / 1000 * self.stretch_permille)
        };
        !self.in_progress
            && (applied.saturating_sub(self.last_index) >= stretch(self.entries)
                || self.bytes_since >= stretch(self.bytes.max(self.last_size)))
    }

    /// Counts an applied entry toward the next snapshot.
    pub fn record_applied(&mut self, term: Term, bytes: usize) {
        self.applied_term = term;
        self.bytes_since += bytes as u64;
    }

    /// The term of the last entry applied (the term a snapshot taken now carries).
    pub fn applied_term(&self) -> Term {
        self.applied_term
    }

    pub fn in_progress(&self) -> bool {
        self.in_progress
    }

    pub fn set_in_progress(&mut self, in_progress: bool) {
        self.in_progress = in_progress;
    }

    /// The newest snapshot this node holds or is building from.
    pub fn last_index(&self) -> Index {
        self.last_index
    }

    /// A snapshot at `index` of `size` bytes is now the newest one.
    pub fn restart_from(&mut self, index: Index, size: u64) {
        self.last_index = index;
        self.last_size = size;
        self.bytes_since = 0;
        // Replicas that applied the same log would otherwise all snapshot at the same index, and the
        // cluster would lose its majority's CPU and disk at once; each node waits 0–50 % longer, drawn
        // afresh every time from its own seed.
        self.stretch_permille = mix(self.seed ^ index) % 500;
    }
}

/// SplitMix64's finaliser: a well-spread hash of one word.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A snapshot to take: a clone of the store (cheap: it shares its shards) and where it stands.
#[derive(Debug)]
pub struct SnapshotTask {
    pub meta: SnapshotMeta,
    pub store: Store,
}

impl SnapshotTask {
    /// Serialises the store and writes the snapshot file durably. Slow for a large store: the server
    /// runs it on a thread of its own.
    pub fn build(self, writer: &SnapshotWriter) -> BuiltSnapshot {
        let mut data = Vec::new();
        self.store.snapshot(&mut data);
        let snapshot = Snapshot {
            meta: self.meta,
            data: Bytes::from(data),
        };
        writer.write(&snapshot).map(|written| (snapshot, written))
    }
}

#[cfg(test)]
mod tests {
    use super::SnapshotPolicy;

    #[test]
    fn due_after_the_entry_threshold_stretched_by_at_most_half() {
        for base in [0, 1_000, 77_777] {
            for seed in 0..20 {
                let mut policy = SnapshotPolicy::new(1_000, u64::MAX / 4, base, seed);
                assert!(!policy.due(base + 999), "never before the threshold");
                assert!(policy.due(base + 1_500), "always by 1.5x the threshold");
                policy.set_in_progress(true);
                assert!(!policy.due(base + 10_000), "one snapshot at a time");
            }
        }
    }

    #[test]
    fn due_after_as_many_log_bytes_as_the_larger_of_the_threshold_and_the_last_snapshot() {
        let mut policy = SnapshotPolicy::new(u64::MAX / 4, 1_000, 0, 0);
        policy.restart_from(10, 4_000);
        policy.record_applied(1, 3_999);
        assert!(
            !policy.due(11),
            "a big store is not snapshotted more often than it is rewritten"
        );
        policy.record_applied(1, 2_001);
        assert!(policy.due(12));
    }

    #[test]
    fn the_stretch_is_a_function_of_the_seed() {
        let a = SnapshotPolicy::new(1_000, u64::MAX / 4, 5, 42);
        let b = SnapshotPolicy::new(1_000, u64::MAX / 4, 5, 42);
        assert_eq!(a.stretch_permille, b.stretch_permille);
    }
}

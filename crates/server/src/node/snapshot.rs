//! Snapshots of the store: when to take one, taking it without pausing the loop, and handing it to the
//! disk thread and the core.

use super::*;

/// When to take a snapshot: once the log since the last one holds `entries` entries or as many bytes as
/// the larger of `bytes` and the last snapshot's size. The second rule keeps the cost of snapshotting a
/// large store proportional to the log it replaces.
#[derive(Default)]
pub struct SnapshotPolicy {
    pub entries: u64,
    pub bytes: u64,
    last_index: Index,
    last_size: u64,
    bytes_since: u64,
    applied_term: Term,
    in_progress: bool,
    stretch_permille: u64,
}

impl SnapshotPolicy {
    pub fn new(entries: u64, bytes: u64, base: Index) -> SnapshotPolicy {
        let mut policy = SnapshotPolicy {
            entries,
            bytes,
            ..SnapshotPolicy::default()
        };
        policy.restart_from(base, 0);
        policy
    }

    pub(super) fn due(&self, applied: Index) -> bool {
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
    pub(super) fn record_applied(&mut self, term: Term, bytes: usize) {
        self.applied_term = term;
        self.bytes_since += bytes as u64;
    }

    /// A snapshot at `index` of `size` bytes is now the newest one.
    pub(super) fn restart_from(&mut self, index: Index, size: u64) {
        self.last_index = index;
        self.last_size = size;
        self.bytes_since = 0;
        // Replicas that applied the same log would otherwise all snapshot at the same index, and the
        // cluster would lose its majority's CPU and disk at once; each node waits 0–50 % longer, drawn
        // afresh every time.
        self.stretch_permille =
            std::collections::hash_map::RandomState::new().hash_one(index) % 500;
    }
}

impl NodeLoop {
    // ----- Snapshots -----------------------------------------------------------------------------

    /// Copies the store and serialises the copy on a blocking thread, so the node keeps serving.
    pub(super) fn start_snapshot(&mut self) {
        let policy = &mut self.state.snapshot_policy;
        policy.in_progress = true;
        let meta = SnapshotMeta {
            index: self.store.applied_index(),
            term: policy.applied_term,
            membership: self.raft.membership().clone(),
        };
        let copied = Instant::now();
        let store = self.store.clone();
        let pause = copied.elapsed();
        let done = self.snapshots.0.clone();
        let writer = self.snapshot_writer.clone();
        let spawned = std::thread::Builder::new()
            .name("raftkv-snapshot".into())
            .spawn(move || {
                crate::background::lower_this_thread_priority();
                let started = Instant::now();
                let mut data = Vec::new();
                store.snapshot(&mut data);
                let serialised = started.elapsed();
                let snapshot = Snapshot {
                    meta,
                    data: Bytes::from(data),
                };
                let built = writer.write(&snapshot).map(|written| (snapshot, written));
                if let Ok((snapshot, _)) = &built {
                    info!(
                        index = snapshot.meta.index,
                        keys = store.len(),
                        bytes = snapshot.data.len(),
                        copy_ms = pause.as_millis() as u64,
                        serialise_ms = serialised.as_millis() as u64,
                        write_ms = (started.elapsed() - serialised).as_millis() as u64,
                        "snapshot taken"
                    );
                }
                let _ = done.blocking_send(built);
            });
        if let Err(err) = spawned {
            warn!("cannot start a snapshot thread, will retry later: {err}");
            self.state.snapshot_policy.in_progress = false;
        }
    }

    /// A background snapshot is ready and durable: the disk thread adopts it after everything queued
    /// before it and compacts the log; the core drops the entries it covers and will send it to lagging followers.
    pub(super) async fn snapshot_built(&mut self, built: BuiltSnapshot) -> anyhow::Result<()> {
        let (snapshot, written) =
            built.map_err(|err| anyhow::anyhow!("cannot write a snapshot: {err}"))?;
        let policy = &mut self.state.snapshot_policy;
        policy.in_progress = false;
        // A snapshot from the leader installed while this one was built is newer: keep counting
        // from it (the core ignores a stale snapshot, the disk thread drops its file).
        if snapshot.meta.index > policy.last_index {
            policy.restart_from(snapshot.meta.index, snapshot.data.len() as u64);
        }
        self.raft.compact(snapshot.clone());
        let job = PersistJob {
            snapshot: None,
            entries: Vec::new(),
            hard_state: None,
            messages_after_persist: Vec::new(),
            compact_to: Some(written),
        };
        self.persist
            .send(job)
            .await
            .map_err(|_| anyhow::anyhow!("the storage thread stopped"))
    }
}

#[cfg(test)]
mod tests {
    use super::SnapshotPolicy;

    #[test]
    fn due_after_the_entry_threshold_stretched_by_at_most_half() {
        for base in [0, 1_000, 77_777] {
            let mut policy = SnapshotPolicy::new(1_000, u64::MAX / 4, base);
            assert!(!policy.due(base + 999), "never before the threshold");
            assert!(policy.due(base + 1_500), "always by 1.5x the threshold");
            policy.in_progress = true;
            assert!(!policy.due(base + 10_000), "one snapshot at a time");
        }
    }

    #[test]
    fn due_after_as_many_log_bytes_as_the_larger_of_the_threshold_and_the_last_snapshot() {
        let mut policy = SnapshotPolicy::new(u64::MAX / 4, 1_000, 0);
        policy.restart_from(10, 4_000);
        policy.record_applied(1, 3_999);
        assert!(
            !policy.due(11),
            "a big store is not snapshotted more often than it is rewritten"
        );
        policy.record_applied(1, 2_001);
        assert!(policy.due(12));
    }
}

//! One node's simulated disk: what is durable, and the writes still in flight.
//!
//! Writes complete in submission order (like one fsync'd log file) after a random delay; a "slow" disk
//! takes much longer. A crash loses every write that has not completed. Only `durable` survives a restart.

use std::collections::VecDeque;

use raftkv_raft::{Entry, HardState, Index, Message, Snapshot, Term};

use crate::rng::Rng;

/// What survives a crash.
#[derive(Clone, Debug, Default)]
pub struct Durable {
    pub hard_state: HardState,
    pub snapshot: Option<Snapshot>,
    /// The log after the snapshot: contiguous, starting right after `snapshot` (or at 1).
    pub entries: Vec<Entry>,
}

impl Durable {
    fn snapshot_point(&self) -> (Index, Term) {
        self.snapshot
            .as_ref()
            .map_or((0, 0), |s| (s.meta.index, s.meta.term))
    }

    /// Index and term of the last durable entry (or of the snapshot).
    pub fn last(&self) -> (Index, Term) {
        self.entries
            .last()
            .map_or_else(|| self.snapshot_point(), |e| (e.index, e.term))
    }

    /// Installs a snapshot (§7): log entries after it survive only if the log holds the snapshot's last
    /// entry with the same term; otherwise the whole log is discarded.
    pub fn install_snapshot(&mut self, snapshot: Snapshot) {
        let (index, term) = (snapshot.meta.index, snapshot.meta.term);
        if index <= self.snapshot_point().0 {
            return; // Older than what we hold: nothing to do.
        }
        let matches = self
            .entries
            .iter()
            .any(|e| e.index == index && e.term == term);
        if matches {
            self.entries.retain(|e| e.index > index);
        } else {
            self.entries.clear();
        }
        self.snapshot = Some(snapshot);
    }

    /// Appends with suffix replacement: an entry at an index already held replaces it and all after it.
    /// Entries already covered by the snapshot are skipped.
    pub fn append(&mut self, entries: &[Entry]) {
        let base = self.snapshot_point().0;
        let entries: Vec<&Entry> = entries.iter().filter(|e| e.index > base).collect();
        let Some(first) = entries.first() else { return };
        self.entries.retain(|e| e.index < first.index);
        let expected = self.last().0 + 1;
        assert_eq!(
            first.index, expected,
            "disk: appended entries leave a gap in the log"
        );
        for pair in entries.windows(2) {
            assert_eq!(
                pair[0].index + 1,
                pair[1].index,
                "disk: a batch of entries is not contiguous"
            );
        }
        self.entries.extend(entries.into_iter().cloned());
    }
}

/// One `Ready`'s persistence work, plus the messages that wait for it.
#[derive(Debug)]
pub struct Write {
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Entry>,
    pub hard_state: Option<HardState>,
    pub messages_after_persist: Vec<Message>,
    done_at: u64,
}

/// A completed write: what to report to the core and which messages may now be sent.
#[derive(Debug)]
pub struct Completion {
    /// `(index, term)` for `Raft::persisted`, if the write persisted anything.
    pub persisted: Option<(Index, Term)>,
    pub messages: Vec<Message>,
    /// The durable hard state before and after, for the monotonicity checks.
    pub hard_state_before: HardState,
    pub hard_state_after: HardState,
}

#[derive(Debug, Default)]
pub struct Disk {
    pub durable: Durable,
    pending: VecDeque<Write>,
    /// Latency of a write in virtual ms: normal range and slow range.
    pub latency: (u64, u64),
    pub slow_latency: (u64, u64),
    pub slow: bool,
}

impl Disk {
    pub fn new(latency: (u64, u64), slow_latency: (u64, u64)) -> Disk {
        Disk {
            latency,
            slow_latency,
            ..Disk::default()
        }
    }

    pub fn submit(
        &mut self,
        rng: &mut Rng,
        now: u64,
        snapshot: Option<Snapshot>,
        entries: Vec<Entry>,
        hard_state: Option<HardState>,
        messages_after_persist: Vec<Message>,
    ) {
        let (lo, hi) = if self.slow {
            self.slow_latency
        } else {
            self.latency
        };
        let previous = self.pending.back().map_or(0, |w| w.done_at);
        let done_at = previous.max(now + rng.range(lo, hi));
        self.pending.push_back(Write {
            snapshot,
            entries,
            hard_state,
            messages_after_persist,
            done_at,
        });
    }

    pub fn pending_writes(&self) -> usize {
        self.pending.len()
    }

    /// Completes, in order, every write due by `now`.
    pub fn complete_due(&mut self, now: u64) -> Vec<Completion> {
        let mut done = Vec::new();
        while self.pending.front().is_some_and(|w| w.done_at <= now) {
            let write = self.pending.pop_front().expect("front exists");
            let before = self.durable.hard_state;
            let mut persisted = None;
            if let Some(snapshot) = write.snapshot {
                persisted = Some((snapshot.meta.index, snapshot.meta.term));
                self.durable.install_snapshot(snapshot);
            }
            if let Some(last) = write.entries.last() {
                persisted = Some((last.index, last.term));
                self.durable.append(&write.entries);
            }
            if let Some(hard_state) = write.hard_state {
                self.durable.hard_state = hard_state;
                // A hard state alone (a vote, a term) is reported against the durable log's end.
                persisted = persisted.or(Some(self.durable.last()));
            }
            done.push(Completion {
                persisted,
                messages: write.messages_after_persist,
                hard_state_before: before,
                hard_state_after: self.durable.hard_state,
            });
        }
        done
    }

    /// A crash: every write not yet completed is lost, with the messages that waited for it.
    pub fn crash(&mut self) {
        self.pending.clear();
    }

    /// The application's own snapshot (log compaction), written synchronously.
    pub fn save_snapshot(&mut self, snapshot: Snapshot) {
        self.durable.install_snapshot(snapshot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use raftkv_raft::{EntryKind, SnapshotMeta};

    fn e(index: Index, term: Term) -> Entry {
        Entry {
            index,
            term,
            kind: EntryKind::Normal,
            data: Bytes::new(),
        }
    }

    #[test]
    fn writes_complete_in_order_and_crash_loses_pending() {
        let mut rng = Rng::new(1);
        let mut disk = Disk::new((1, 5), (50, 100));
        disk.submit(&mut rng, 0, None, vec![e(1, 1), e(2, 1)], None, vec![]);
        disk.submit(
            &mut rng,
            0,
            None,
            vec![e(3, 1)],
            Some(HardState {
                term: 1,
                vote: Some(1),
                commit: 0,
            }),
            vec![],
        );
        let done = disk.complete_due(100);
        assert_eq!(done.len(), 2);
        assert_eq!(done[1].persisted, Some((3, 1)));
        assert_eq!(disk.durable.last(), (3, 1));
        disk.submit(&mut rng, 100, None, vec![e(2, 2)], None, vec![]);
        disk.crash();
        assert!(disk.complete_due(1000).is_empty());
        assert_eq!(disk.durable.last(), (3, 1));
    }

    #[test]
    fn suffix_replacement_and_snapshots() {
        let mut d = Durable::default();
        d.append(&[e(1, 1), e(2, 1), e(3, 1)]);
        d.append(&[e(2, 2)]);
        assert_eq!(d.entries.len(), 2);
        assert_eq!(d.last(), (2, 2));
        let snap = |index, term| Snapshot {
            meta: SnapshotMeta {
                index,
                term,
                ..Default::default()
            },
            data: Bytes::new(),
        };
        d.append(&[e(3, 2), e(4, 2)]);
        d.install_snapshot(snap(3, 2));
        assert_eq!(
            d.entries.len(),
            1,
            "entries after a matching snapshot point survive"
        );
        d.install_snapshot(snap(6, 3));
        assert!(
            d.entries.is_empty(),
            "a snapshot beyond the log discards it"
        );
        d.append(&[e(5, 2), e(6, 3), e(7, 3)]);
        assert_eq!(
            d.entries.len(),
            1,
            "entries the snapshot covers are skipped"
        );
        assert_eq!(d.last(), (7, 3));
    }
}

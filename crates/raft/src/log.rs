//! The node's view of the replicated log: a snapshot base, the entries after it, and three cursors.
//!
//! ```text
//!   base (snapshot)   persisted      commit    handed_to_apply     last
//!   ──────┤ entries ──────┤─────────────┤──────────┤─────────────────┤
//! ```
//! `unstable` is the first index not yet handed to the driver for persisting. The core keeps every entry
//! after the newest snapshot in memory; compaction (`compact_to`) bounds that.

use crate::types::{Entry, Index, Snapshot, SnapshotMeta, Term};

#[derive(Debug)]
pub(crate) struct RaftLog {
    /// The last index and term covered by the snapshot the log starts after (0/0 for a fresh log).
    pub(crate) base: SnapshotMeta,
    /// The snapshot itself, kept to send to followers that fell behind the base.
    pub(crate) snapshot: Option<Snapshot>,
    /// `entries[i].index == base.index + 1 + i`.
    entries: Vec<Entry>,
    pub(crate) commit: Index,
    /// Everything up to here has been handed out in `Ready::committed` (or covered by a snapshot).
    pub(crate) handed_to_apply: Index,
    /// Highest index the driver reported durable.
    pub(crate) persisted: Index,
    /// First index not yet handed out in `Ready::entries`.
    pub(crate) unstable: Index,
}

impl RaftLog {
    pub(crate) fn new(snapshot: Option<Snapshot>, entries: Vec<Entry>, commit: Index) -> RaftLog {
        let base = snapshot
            .as_ref()
            .map(|s| s.meta.clone())
            .unwrap_or_default();
        // Entries must continue the snapshot; anything else is a storage bug, and starting from a log
        // with a hole would break log matching, so keep only the contiguous prefix.
        let mut kept = Vec::with_capacity(entries.len());
        for entry in entries {
            if entry.index == base.index + 1 + kept.len() as u64 {
                kept.push(entry);
            }
        }
        let last = base.index + kept.len() as u64;
        // A leader may persist a commit index beyond its own durable log; clamp it.
        let commit = commit.clamp(base.index, last);
        RaftLog {
            handed_to_apply: base.index,
            persisted: last,
            unstable: last + 1,
            base,
            snapshot,
            entries: kept,
            commit,
        }
    }

    pub(crate) fn first_index(&self) -> Index {
        self.base.index + 1
    }

    pub(crate) fn last_index(&self) -> Index {
        self.base.index + self.entries.len() as u64
    }

    pub(crate) fn last_term(&self) -> Term {
        self.entries.last().map_or(self.base.term, |e| e.term)
    }

    /// The term of the entry at `index`, or `None` if it is compacted away or beyond the end.
    pub(crate) fn term(&self, index: Index) -> Option<Term> {
        if index == self.base.index {
            return Some(self.base.term);
        }
        self.entry(index).map(|e| e.term)
    }

    pub(crate) fn entry(&self, index: Index) -> Option<&Entry> {
        if index <= self.base.index {
            return None;
        }
        self.entries.get((index - self.base.index - 1) as usize)
    }

    pub(crate) fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub(crate) fn matches(&self, index: Index, term: Term) -> bool {
        self.term(index) == Some(term)
    }

    /// §5.4.1: a candidate's log is at least as up-to-date as ours.
    pub(crate) fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        (last_term, last_index) >= (self.last_term(), self.last_index())
    }

    /// Entries `[lo, ..]` up to `max_entries` and about `max_bytes` (at least one if any exist).
    pub(crate) fn slice(&self, lo: Index, max_entries: usize, max_bytes: usize) -> &[Entry] {
        if lo <= self.base.index || lo > self.last_index() {
            return &[];
        }
        let start = (lo - self.base.index - 1) as usize;
        let mut end = start;
        let mut bytes = 0;
        while end < self.entries.len() && end - start < max_entries {
            bytes += self.entries[end].size();
            if bytes > max_bytes && end > start {
                break;
            }
            end += 1;
        }
        &self.entries[start..end]
    }

    pub(crate) fn append(&mut self, entry: Entry) {
        debug_assert_eq!(entry.index, self.last_index() + 1);
        self.entries.push(entry);
    }

    /// Appends a leader's entries after `prev`, dropping our conflicting suffix (§5.3). Returns false and
    /// changes nothing if that would remove a committed entry, which a correct leader never asks for.
    pub(crate) fn append_after(&mut self, entries: &[Entry]) -> bool {
        let conflict = entries.iter().find(|e| !self.matches(e.index, e.term));
        let Some(first_new) = conflict else {
            return true;
        };
        let at = first_new.index;
        if at <= self.commit || at <= self.base.index || at > self.last_index() + 1 {
            return false;
        }
        self.entries.truncate((at - self.base.index - 1) as usize);
        self.persisted = self.persisted.min(at - 1);
        self.unstable = self.unstable.min(at);
        let skip = (at - entries[0].index) as usize;
        self.entries.extend_from_slice(&entries[skip..]);
        true
    }

    /// The first index of the term of the entry at `index` (used in a rejection hint).
    pub(crate) fn first_index_of_term_at(&self, index: Index) -> Index {
        let Some(term) = self.term(index) else {
            return index;
        };
        let mut first = index;
        while first > self.first_index() && self.term(first - 1) == Some(term) {
            first -= 1;
        }
        first
    }

    /// The last index whose term is `term`, if the log (after the base) holds any.
    pub(crate) fn last_index_of_term(&self, term: Term) -> Option<Index> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.term == term)
            .map(|e| e.index)
    }

    pub(crate) fn commit_to(&mut self, index: Index) -> bool {
        if index > self.commit {
            debug_assert!(index <= self.last_index());
            self.commit = index;
            return true;
        }
        false
    }

    pub(crate) fn take_unstable(&mut self) -> Vec<Entry> {
        let from = self.unstable.max(self.first_index());
        self.unstable = self.last_index() + 1;
        if from > self.last_index() {
            return Vec::new();
        }
        self.entries[(from - self.base.index - 1) as usize..].to_vec()
    }

    pub(crate) fn take_committed(&mut self) -> Vec<Entry> {
        let from = self.handed_to_apply + 1;
        if from > self.commit {
            return Vec::new();
        }
        self.handed_to_apply = self.commit;
        let lo = (from - self.base.index - 1) as usize;
        let hi = (self.commit - self.base.index) as usize;
        self.entries[lo..hi].to_vec()
    }

    pub(crate) fn mark_persisted(&mut self, index: Index, term: Term) -> bool {
        if index > self.persisted && index < self.unstable && self.matches(index, term) {
            self.persisted = index;
            return true;
        }
        false
    }

    /// Makes `snapshot` the new base, keeping the entries after it (driver-side compaction).
    pub(crate) fn compact_to(&mut self, snapshot: Snapshot) {
        let index = snapshot.meta.index;
        if index <= self.base.index || index > self.handed_to_apply {
            return;
        }
        let drop = (index - self.base.index) as usize;
        self.entries.drain(..drop.min(self.entries.len()));
        self.base = snapshot.meta.clone();
        self.snapshot = Some(snapshot);
        self.unstable = self.unstable.max(index.saturating_add(1));
    }

    /// Replaces the whole log with a leader's snapshot (§7).
    pub(crate) fn restore(&mut self, snapshot: Snapshot) {
        let index = snapshot.meta.index;
        self.entries.clear();
        self.base = snapshot.meta.clone();
        self.snapshot = Some(snapshot);
        self.commit = index;
        self.handed_to_apply = index;
        // Durable only once the driver reports the snapshot persisted.
        self.persisted = self.persisted.min(index.saturating_sub(1));
        self.unstable = index.saturating_add(1);
    }
}

//! The log as the storage layer knows it, in memory: a base (the index and term of the snapshot or
//! compaction point it follows) and the entries after it, with the cut-back and overwrite rules of a Raft log.
//!
//! Recovery replays the segments into a `MemLog`, settles its base against the snapshot, and hands its
//! entries to the Raft core as `InitialState::entries`. From then on the [`crate::Wal`] keeps it up to date
//! so that it can check appends (contiguity, conflicting suffixes, the snapshot bound), tell whether a
//! snapshot matches the log, bound compaction, and answer `first_index`, `last_index`, `term` and
//! `entries`. Replication does not read from here: the Raft core serves it from its own in-memory log.
//! Entry data are reference-counted `Bytes`, shared with the caller on append and with the segment file
//! buffers after recovery.

use raftkv_raft::{Entry, Index, Term};

use crate::error::WalError;

#[derive(Debug, Default)]
pub(crate) struct MemLog {
    /// The index just before the first entry held (a snapshot's or compaction point's index).
    base: Index,
    base_term: Term,
    entries: Vec<Entry>,
}

impl MemLog {
    pub(crate) fn new(base: Index, base_term: Term) -> MemLog {
        MemLog {
            base,
            base_term,
            entries: Vec::new(),
        }
    }

    pub(crate) fn base(&self) -> Index {
        self.base
    }

    pub(crate) fn first_index(&self) -> Index {
        self.base + 1
    }

    pub(crate) fn last_index(&self) -> Index {
        self.base + self.entries.len() as u64
    }

    pub(crate) fn term(&self, index: Index) -> Option<Term> {
        if index == self.base {
            return Some(self.base_term);
        }
        self.position(index).map(|at| self.entries[at].term)
    }

    fn position(&self, index: Index) -> Option<usize> {
        (index > self.base && index <= self.last_index()).then(|| (index - self.base - 1) as usize)
    }

    /// Makes the log `base` followed by nothing.
    pub(crate) fn restart(&mut self, base: Index, base_term: Term) {
        self.base = base;
        self.base_term = base_term;
        self.entries.clear();
    }

    /// Keeps the entries up to `index` (at least `base`).
    pub(crate) fn truncate_after(&mut self, index: Index) {
        self.entries.truncate((index - self.base) as usize);
    }

    /// Appends `entry`, first discarding whatever is held from its index on. `entry.index` must be in
    /// `first_index()..=last_index() + 1`.
    pub(crate) fn overwrite(&mut self, entry: Entry) {
        self.truncate_after(entry.index - 1);
        self.entries.push(entry);
    }

    /// Forgets the entries up to `index`, which must be held (or be `base`).
    pub(crate) fn drop_through(&mut self, index: Index) {
        if index <= self.base {
            return;
        }
        self.base_term = self.term(index).expect("drop_through within the log");
        self.entries.drain(..(index - self.base) as usize);
        self.base = index;
    }

    pub(crate) fn slice(&self, lo: Index, hi: Index) -> Result<&[Entry], WalError> {
        if lo < self.first_index() {
            return Err(WalError::Compacted {
                index: lo,
                first: self.first_index(),
            });
        }
        if hi > self.last_index() + 1 {
            return Err(WalError::Unavailable {
                index: hi - 1,
                last: self.last_index(),
            });
        }
        if lo > hi {
            return Err(WalError::InvalidRequest(format!(
                "entries({lo}, {hi}): lo > hi"
            )));
        }
        Ok(&self.entries[(lo - self.first_index()) as usize..(hi - self.first_index()) as usize])
    }

    pub(crate) fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Records the term of `base`, once recovery has learnt it from the snapshot.
    pub(crate) fn set_base_term(&mut self, term: Term) {
        self.base_term = term;
    }
}

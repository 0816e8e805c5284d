//! A deliberately simple model of what the storage must show, shared by the property and crash tests.
#![allow(dead_code)]

use bytes::Bytes;
use raftkv_raft::{EntryKind, Membership, SnapshotMeta};
use raftkv_wal::{Entry, HardState, InitialState, Snapshot, Wal};

/// The visible state: the log after `base`, the hard state, the newest snapshot's index and term.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Model {
    pub base: u64,
    pub base_term: u64,
    pub entries: Vec<Entry>,
    pub hard_state: HardState,
    pub snapshot: (u64, u64),
}

impl Model {
    pub fn last(&self) -> u64 {
        self.base + self.entries.len() as u64
    }

    pub fn term_at(&self, index: u64) -> Option<u64> {
        if index == self.base {
            Some(self.base_term)
        } else if index > self.base && index <= self.last() {
            Some(self.entries[(index - self.base - 1) as usize].term)
        } else {
            None
        }
    }

    /// States after each entry is applied, in order (what a torn write may leave). A replaced suffix may
    /// be gone before the first replacing entry is on disk: a segment starting there cuts the log back.
    pub fn append(&mut self, entries: &[Entry]) -> Vec<Model> {
        let mut states = Vec::new();
        if let Some(first) = entries.first().filter(|first| first.index <= self.last()) {
            let mut cut = self.clone();
            cut.entries.truncate((first.index - self.base - 1) as usize);
            states.push(cut);
        }
        for entry in entries {
            self.entries
                .truncate((entry.index - self.base - 1) as usize);
            self.entries.push(entry.clone());
            states.push(self.clone());
        }
        states
    }

    pub fn save_snapshot(&mut self, index: u64, term: u64) {
        if index < self.snapshot.0 {
            return;
        }
        if self.term_at(index) != Some(term) {
            self.base = index;
            self.base_term = term;
            self.entries.clear();
        }
        self.snapshot = (index, term);
    }

    pub fn compact(&mut self, index: u64) {
        let index = index.min(self.last());
        if index <= self.base {
            return;
        }
        self.base_term = self.term_at(index).unwrap();
        self.entries.drain(..(index - self.base) as usize);
        self.base = index;
    }

    /// What a reopen shows: the log starts right after the snapshot.
    pub fn reopened(&self) -> Model {
        let mut model = self.clone();
        let (index, term) = self.snapshot;
        if self.term_at(index) == Some(term) {
            model.compact(index);
            model.base_term = term;
        } else {
            model.base = index;
            model.base_term = term;
            model.entries.clear();
        }
        model
    }

    /// One line per state, for failure messages.
    pub fn summary(&self) -> String {
        let terms: Vec<String> = self
            .entries
            .iter()
            .map(|e| format!("{}:{}/{}", e.index, e.term, e.data.len()))
            .collect();
        format!(
            "snapshot {:?} base {} log [{}] {:?}",
            self.snapshot,
            self.base,
            terms.join(" "),
            self.hard_state
        )
    }

    pub fn from_initial(initial: &InitialState) -> Model {
        let snapshot = initial
            .snapshot
            .as_ref()
            .map_or((0, 0), |s| (s.meta.index, s.meta.term));
        Model {
            base: snapshot.0,
            base_term: snapshot.1,
            entries: initial.entries.clone(),
            hard_state: initial.hard_state,
            snapshot,
        }
    }

    /// Asserts that `wal` shows exactly this model.
    pub fn check(&self, wal: &Wal) {
        assert_eq!(wal.first_index(), self.base + 1, "first index");
        assert_eq!(wal.last_index(), self.last(), "last index");
        assert_eq!(
            wal.entries(self.base + 1, self.last() + 1).unwrap(),
            self.entries,
            "entries"
        );
        assert_eq!(wal.term(self.base).unwrap(), self.base_term, "base term");
        assert_eq!(wal.hard_state(), self.hard_state, "hard state");
    }
}

pub fn entry(index: u64, term: u64, size: usize) -> Entry {
    let data: Vec<u8> = (0..size)
        .map(|i| (index as usize * 31 + term as usize * 7 + i) as u8)
        .collect();
    Entry {
        index,
        term,
        kind: EntryKind::Normal,
        data: Bytes::from(data),
    }
}

pub fn snapshot(index: u64, term: u64) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            index,
            term,
            membership: Membership::new(vec![1, 2, 3]),
        },
        data: Bytes::from(format!("state machine at {index}/{term}")),
    }
}

/// An operation on the storage, with its arguments given relative to the state it meets so that every
/// generated sequence is valid.
#[derive(Clone, Debug)]
pub enum Op {
    /// Append `count` entries starting `back` entries before the end (clamped to the first index).
    Append {
        back: u64,
        count: u64,
        size: usize,
    },
    SetHardState {
        vote: u64,
        commit: u64,
    },
    Sync,
    /// Snapshot `back` entries before the end (clamped); `conflicting` gives it a term the log does not have,
    /// or places it past the end, as a leader's snapshot install would.
    Snapshot {
        back: u64,
        conflicting: bool,
    },
    /// Compact `back` entries before the snapshot index.
    Compact {
        back: u64,
    },
    Reopen,
}

/// Terms only grow, as in Raft, so overlapping appends replace older terms' entries.
pub fn entries_for(model: &Model, back: u64, count: u64, size: usize, term: u64) -> Vec<Entry> {
    let start = (model.last() + 1)
        .saturating_sub(back)
        .max(model.base.max(model.snapshot.0) + 1);
    (start..start + count)
        .map(|index| entry(index, term, size))
        .collect()
}

pub fn snapshot_point(model: &Model, back: u64, conflicting: bool, term: u64) -> (u64, u64) {
    if conflicting {
        let index = (model.last() + back).max(model.snapshot.0);
        return (index, term);
    }
    let index = model
        .last()
        .saturating_sub(back)
        .max(model.snapshot.0)
        .max(model.base);
    (index, model.term_at(index).unwrap_or(term))
}

/// SplitMix64, so a failing seed can be replayed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn op(&mut self) -> Op {
        match self.below(20) {
            0..=7 => Op::Append {
                back: self.below(4) * self.below(3),
                count: 1 + self.below(8),
                size: self.below(60) as usize,
            },
            8..=9 => Op::SetHardState {
                vote: self.below(4),
                commit: self.below(50),
            },
            10..=14 => Op::Sync,
            15..=16 => Op::Snapshot {
                back: self.below(6),
                conflicting: self.below(3) == 0,
            },
            17..=18 => Op::Compact {
                back: self.below(4),
            },
            _ => Op::Reopen,
        }
    }
}

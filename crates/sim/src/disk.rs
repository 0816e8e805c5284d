//! One node's simulated disk: the real WAL over the simulated file system, fed by the replica's persist
//! jobs, with a random latency per job and group commit of every job due at once.
//!
//! Jobs complete in submission order. A crash keeps what the last sync made durable plus whatever part
//! of the rest the simulated file system chooses to keep (torn writes included); an injected I/O
//! failure makes the node stop, as a real fsync failure does. With [`Mutation::AckBeforeFsync`] the
//! disk reports each job durable, and releases its messages, as soon as it is submitted.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;

use raftkv_raft::{HardState, InitialState, Message};
use raftkv_replica::storage::{released_messages, write_batches};
use raftkv_replica::{write_bootstrap, AddressBook, Durable, PersistJob};
use raftkv_wal::sim_fs::SimFs;
use raftkv_wal::{SnapshotWriter, Wal, WalError, WalOptions};

use crate::rng::Rng;

const DIR: &str = "/data";

/// What a group commit achieved.
pub struct Completed {
    pub durable: Durable,
    pub messages: Vec<Message>,
    pub hard_state_before: HardState,
    pub hard_state_after: HardState,
}

pub struct Disk {
    pub fs: SimFs,
    wal: Option<Wal>,
    queue: VecDeque<(u64, PersistJob)>,
    position: Durable,
    latency: (u64, u64),
    slow_latency: (u64, u64),
    pub slow: bool,
    segment_bytes: u64,
    /// Chance (per million) that a group commit meets an I/O error.
    pub fail_ppm: u32,
}

impl Disk {
    pub fn new(latency: (u64, u64), slow_latency: (u64, u64), segment_bytes: u64) -> Disk {
        Disk {
            fs: SimFs::new(),
            wal: None,
            queue: VecDeque::new(),
            position: Durable::default(),
            latency,
            slow_latency,
            slow: false,
            segment_bytes,
            fail_ppm: 0,
        }
    }

    /// Opens the WAL and recovers what the file system holds.
    pub fn open(&mut self) -> Result<InitialState, WalError> {
        assert!(self.wal.is_none(), "disk opened twice");
        let options = WalOptions {
            segment_bytes: self.segment_bytes,
            defer_deletes: false,
        };
        let (wal, initial, _) =
            Wal::open_with_fs(Arc::new(self.fs.clone()), Path::new(DIR), options)?;
        let (index, term) = initial
            .entries
            .last()
            .map(|e| (e.index, e.term))
            .or(initial
                .snapshot
                .as_ref()
                .map(|s| (s.meta.index, s.meta.term)))
            .unwrap_or((0, 0));
        self.position = Durable {
            index,
            term,
            ..Durable::default()
        };
        self.wal = Some(wal);
        Ok(initial)
    }

    /// Writes a new cluster's bootstrap entry into a disk that held nothing, as the server does.
    pub fn bootstrap(
        &mut self,
        initial: &mut InitialState,
        book: &AddressBook,
    ) -> Result<(), WalError> {
        let wal = self.wal.as_mut().expect("an open disk");
        write_bootstrap(wal, initial, book)?;
        self.position = Durable {
            index: 1,
            term: 1,
            ..Durable::default()
        };
        Ok(())
    }

    pub fn snapshot_writer(&self) -> Option<SnapshotWriter> {
        self.wal.as_ref().map(Wal::snapshot_writer)
    }

    /// Every later write takes `latency` (a range of virtual ms).
    pub fn set_latency(&mut self, latency: (u64, u64)) {
        self.latency = latency;
    }

    pub fn is_idle(&self) -> bool {
        self.queue.is_empty()
    }

    /// When the oldest queued write is due, if any (for traces).
    pub fn next_due(&self) -> Option<u64> {
        self.queue.front().map(|(due, _)| *due)
    }

    /// Queues a job; it completes after a random delay, never before an earlier one.
    pub fn submit(&mut self, rng: &mut Rng, now: u64, job: PersistJob) {
        let (lo, hi) = if self.slow {
            self.slow_latency
        } else {
            self.latency
        };
        let after = self.queue.back().map_or(0, |(due, _)| *due);
        let due = (now + rng.range(lo, hi)).max(after);
        self.queue.push_back((due, job));
    }

    /// Writes every job due by `now` and syncs once. `Ok(None)`: nothing was due.
    pub fn complete_due(&mut self, rng: &mut Rng, now: u64) -> Result<Option<Completed>, WalError> {
        let due = self.queue.iter().take_while(|(at, _)| *at <= now).count();
        if due == 0 {
            return Ok(None);
        }
        let mut batch: Vec<PersistJob> = self.queue.drain(..due).map(|(_, job)| job).collect();
        if rng.chance(self.fail_ppm) {
            self.fs.fail_after(rng.range(1, 4));
        }
        let wal = self.wal.as_mut().expect("an open disk");
        let hard_state_before = wal.hard_state();
        write_batches(wal, &mut batch, &mut self.position)?;
        let messages = released_messages(&mut batch);
        Ok(Some(Completed {
            durable: self.position,
            messages,
            hard_state_before,
            hard_state_after: wal.hard_state(),
        }))
    }

    /// The machine loses power: everything not yet durable may be lost or torn.
    pub fn crash(&mut self, seed: u64) {
        self.queue.clear();
        self.wal = None;
        self.fs.crash(seed);
    }
}

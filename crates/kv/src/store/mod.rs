//! The replicated state machine: applies committed commands and answers reads.

mod digest;
mod entry;
mod expiry;
mod snapshot;
mod table;

use crate::command::Command;
use crate::limits::{expiry_instant, is_valid_exptime, is_valid_key};
use crate::protocol::{Reply, Request};
use digest::DigestHasher;
use entry::{Entry, NEVER};
use table::KeyTable;

/// The key-value state. Deterministic: its state is a function of the sequence of
/// `(index, stamp_ms, command)` applied, never of the local clock or of hash-table order.
///
/// Time: the store's notion of "now" is the largest stamp applied so far (see [`Store::clock_ms`]),
/// so a new leader whose wall clock lags the old one cannot make expired keys reappear.
///
/// `clone()` is cheap (it copies 2048 shard pointers, not the entries; see `table`), so a
/// snapshot can be taken from a clone on another thread while this store keeps applying.
#[derive(Debug, Clone, Default)]
pub struct Store {
    entries: KeyTable,
    applied_index: u64,
    clock_ms: u64,
}

impl Store {
    pub fn new() -> Store {
        Store::default()
    }

    /// Applies the committed `command` at log `index`, stamped `stamp_ms` by the leader that
    /// proposed it. Never fails: a command that cannot take effect gets its error reply
    /// (`ErrNotFound`, `ErrVersion`, or `ErrCmdErr` for fields that could only come from
    /// bypassing validation). The caller applies each index once, in increasing order.
    /// `Expire` replies `Ok { version: index }`, which nobody is waiting for.
    pub fn apply(&mut self, index: u64, stamp_ms: u64, command: &Command) -> Reply {
        self.applied_index = index;
        self.clock_ms = self.clock_ms.max(stamp_ms);
        let now_ms = self.clock_ms;
        match command {
            Command::Set {
                key,
                exptime,
                value,
            } => self.write(index, now_ms, key, *exptime, value),
            Command::Cas {
                key,
                exptime,
                version,
                value,
            } => match self.live(key, now_ms) {
                None => Reply::ErrNotFound,
                Some(entry) if entry.version != *version => Reply::ErrVersion,
                Some(_) => self.write(index, now_ms, key, *exptime, value),
            },
            Command::Delete { key } => match self.remove(key) {
                Some(entry) if entry.is_live_at(now_ms) => Reply::Deleted,
                _ => Reply::ErrNotFound,
            },
            Command::Expire => {
                self.reclaim_expired(now_ms);
                Reply::Ok { version: index }
            }
        }
    }

    /// Records that `index` was applied without changing the key-value state (for log entries
    /// that carry no command, such as a new leader's no-op).
    pub fn skip_index(&mut self, index: u64) {
        self.applied_index = index;
    }

    /// Answers `get` and `getm` as of the leader's `now_ms`, without writing anything. Any other
    /// request gets `ErrCmdErr`, since writes must go through the log.
    pub fn read(&self, request: &Request, now_ms: u64) -> Reply {
        let now_ms = now_ms.max(self.clock_ms);
        match request {
            Request::Get { key } => match self.live(key, now_ms) {
                Some(entry) => Reply::Value {
                    value: entry.value_bytes(),
                },
                None => Reply::ErrNotFound,
            },
            Request::Getm { key } => match self.live(key, now_ms) {
                Some(entry) => Reply::ValueMeta {
                    version: entry.version,
                    exptime: remaining_whole_seconds(entry.expires_at_ms, now_ms),
                    value: entry.value_bytes(),
                },
                None => Reply::ErrNotFound,
            },
            _ => Reply::ErrCmdErr,
        }
    }

    /// Bytes of keys and values held (what a snapshot's entries carry, without framing).
    pub fn bytes(&self) -> usize {
        self.entries.bytes()
    }

    /// Number of keys held, including expired keys whose memory has not been reclaimed yet.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.len() == 0
    }

    /// Number of held keys that have an expiry time.
    pub fn expiring_len(&self) -> usize {
        self.entries.expiring_len()
    }

    /// Whether an `Expire` at `now_ms` would reclaim anything, so the leader proposes one only
    /// when it is useful.
    pub fn has_expired(&self, now_ms: u64) -> bool {
        self.entries
            .first_expiry()
            .is_some_and(|instant| instant <= now_ms)
    }

    /// When `key` expires (Unix ms, on the store's clock), if it is held and has an expiry time.
    pub fn expires_at(&self, key: &[u8]) -> Option<u64> {
        self.entries
            .get(key)
            .map(|entry| entry.expires_at_ms)
            .filter(|at| *at != NEVER)
    }

    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// The state machine's "now": the largest stamp applied so far.
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    /// Deterministic digest of the whole state (entries, applied index, clock), equal on two
    /// replicas exactly when (barring hash collisions) their states are equal.
    pub fn digest(&self) -> u64 {
        let entries_sum = self.entries.iter_warmed().fold(0u64, |sum, entry| {
            let entry_hash = DigestHasher::new()
                .word(entry.version)
                .word(entry.expires_at_ms)
                .bytes(entry.key())
                .bytes(entry.value())
                .finish();
            sum.wrapping_add(entry_hash)
        });
        DigestHasher::new()
            .word(entries_sum)
            .word(self.entries.len() as u64)
            .word(self.applied_index)
            .word(self.clock_ms)
            .finish()
    }

    fn live(&self, key: &[u8], now_ms: u64) -> Option<&Entry> {
        self.entries
            .get(key)
            .filter(|entry| entry.is_live_at(now_ms))
    }

    fn write(&mut self, index: u64, now_ms: u64, key: &[u8], exptime: u32, value: &[u8]) -> Reply {
        if !is_valid_key(key) || !is_valid_exptime(exptime) || u32::try_from(value.len()).is_err() {
            return Reply::ErrCmdErr;
        }
        let expires_at_ms = expiry_instant(now_ms, exptime).unwrap_or(NEVER);
        let Some(entry) = Entry::new(key, value, index, expires_at_ms) else {
            return Reply::ErrCmdErr;
        };
        self.insert(entry);
        Reply::Ok { version: index }
    }

    fn insert(&mut self, entry: Entry) {
        self.entries.upsert(entry);
    }

    fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        self.entries.take(key)
    }

    fn reclaim_expired(&mut self, now_ms: u64) {
        self.entries.reclaim_expired(now_ms);
    }
}

/// getm's exptime: whole seconds left, rounded up, so a live expiring key never shows 0.
fn remaining_whole_seconds(expires_at_ms: u64, now_ms: u64) -> u64 {
    if expires_at_ms == NEVER {
        0
    } else {
        expires_at_ms.saturating_sub(now_ms).div_ceil(1000)
    }
}

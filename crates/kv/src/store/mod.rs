//! The replicated state machine: applies committed commands and answers reads.

mod digest;
mod entry;
mod expiry;
mod keyspace;
pub mod sessions;
mod snapshot;
mod strings;
mod table;
mod transaction;

use crate::command::{Command, Proposal};
use crate::limits::{expiry_instant, is_valid_exptime, is_valid_key};
use crate::protocol::{Reply, Request, SessionSeq};
use digest::DigestHasher;
use entry::{Entry, NEVER};
use sessions::{Admission, SessionLimits, SessionTable};
use table::KeyTable;

pub use strings::parse_float;

/// The key-value state. Deterministic: its state is a function of the sequence of
/// `(index, stamp_ms, command)` applied, never of the local clock or of hash-table order.
///
/// Time: the store's notion of "now" is the largest stamp applied so far (see [`Store::clock_ms`]),
/// so a new leader whose wall clock lags the old one cannot make expired keys reappear.
///
/// `clone()` is cheap for the keys (it copies 2048 shard pointers, not the entries; see `table`), so a
/// snapshot can be taken from a clone on another thread while this store keeps applying. The session
/// table is copied whole (at most 65,536 small records; some hundreds of µs when full).
#[derive(Debug, Clone, Default)]
pub struct Store {
    entries: KeyTable,
    sessions: SessionTable,
    applied_index: u64,
    clock_ms: u64,
}

impl Store {
    pub fn new() -> Store {
        Store::default()
    }

    /// A store whose session table has other limits than the release's (for tests: every replica of
    /// one cluster must use the same limits).
    pub fn with_session_limits(limits: SessionLimits) -> Store {
        Store {
            sessions: SessionTable::new(limits),
            ..Store::default()
        }
    }

    /// Applies the committed `proposal` at log `index`: a write in a session is applied only if its
    /// sequence number is new (see [`sessions`]); a duplicate gets the reply the original got.
    pub fn apply_proposal(&mut self, index: u64, proposal: &Proposal) -> Reply {
        match proposal.session {
            None => self.apply(index, proposal.stamp_ms, &proposal.command),
            Some(at) => self.apply_in_session(index, proposal.stamp_ms, at, &proposal.command),
        }
    }

    fn apply_in_session(
        &mut self,
        index: u64,
        stamp_ms: u64,
        at: SessionSeq,
        command: &Command,
    ) -> Reply {
        self.advance(index, stamp_ms);
        if matches!(command, Command::Expire | Command::Register) {
            return Reply::ErrCmdErr;
        }
        let fingerprint = fingerprint(command);
        match self.sessions.admit(at, fingerprint) {
            Admission::Answer(reply) => reply,
            Admission::Apply => {
                let reply = self.apply_command(index, command);
                self.sessions.record(at, fingerprint, &reply, self.clock_ms);
                reply
            }
        }
    }

    /// Whether a write in session `at` can only be refused: the session is gone, although the store
    /// has applied the entry that opened it (a session that is not there yet may still be registered
    /// by an entry this replica has not applied). Lets a leader refuse it without a log entry.
    pub fn session_is_gone(&self, at: SessionSeq) -> bool {
        at.session <= self.applied_index && !self.sessions.contains(at.session)
    }

    /// Number of open sessions.
    pub fn sessions_len(&self) -> usize {
        self.sessions.len()
    }

    /// Applies the committed `command` at log `index`, stamped `stamp_ms` by the leader that
    /// proposed it. Never fails: a command that cannot take effect gets its error reply
    /// (`ErrNotFound`, `ErrVersion`, or `ErrCmdErr` for fields that could only come from
    /// bypassing validation). The caller applies each index once, in increasing order.
    /// `Expire` replies `Ok { version: index }`, which nobody is waiting for.
    pub fn apply(&mut self, index: u64, stamp_ms: u64, command: &Command) -> Reply {
        self.advance(index, stamp_ms);
        self.apply_command(index, command)
    }

    /// Moves the applied index and the clock to an entry's, and expires what the clock has passed.
    fn advance(&mut self, index: u64, stamp_ms: u64) {
        self.applied_index = index;
        if stamp_ms > self.clock_ms {
            self.clock_ms = stamp_ms;
            self.sessions.expire(stamp_ms);
        }
    }

    fn apply_command(&mut self, index: u64, command: &Command) -> Reply {
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
            Command::Register => {
                self.sessions.register(index, now_ms);
                Reply::Session { id: index }
            }
            Command::IncrBy { key, by } => self.incr_by(index, now_ms, key, *by),
            Command::IncrByFloat { key, by_bits } => {
                self.incr_by_float(index, now_ms, key, f64::from_bits(*by_bits))
            }
            Command::SetWith {
                key,
                value,
                condition,
                get,
                expiry,
            } => self.set_with(index, now_ms, key, value, *condition, *get, *expiry),
            Command::SetTtl {
                key,
                expiry,
                condition,
            } => self.set_ttl(index, now_ms, key, *expiry, *condition),
            Command::GetEx { key, expiry } => self.get_ex(index, now_ms, key, *expiry),
            Command::GetDel { key } => match self.remove(key) {
                Some(entry) if entry.is_live_at(now_ms) => Reply::Value {
                    value: entry.value_bytes(),
                },
                _ => Reply::ErrNotFound,
            },
            Command::Append { key, value } => self.append(index, now_ms, key, value),
            Command::SetRange { key, offset, value } => {
                self.set_range(index, now_ms, key, *offset, value)
            }
            Command::MSet { pairs, nx } => self.mset(index, now_ms, pairs, *nx),
            Command::Rename { from, to, nx } => self.rename(index, now_ms, from, to, *nx),
            Command::Flush => {
                self.entries = KeyTable::default();
                Reply::Ok { version: index }
            }
            Command::Transaction { watches, ops } => self.transaction(index, now_ms, watches, ops),
        }
    }

    /// Writes `value` under `key` at `index`, expiring at `expires_at_ms`.
    fn put(
        &mut self,
        index: u64,
        key: &[u8],
        value: &[u8],
        expires_at_ms: u64,
    ) -> Result<(), Reply> {
        if !is_valid_key(key) {
            return Err(Reply::ErrCmdErr);
        }
        let entry = Entry::new(key, value, index, expires_at_ms).ok_or(Reply::ErrCmdErr)?;
        self.insert(entry);
        Ok(())
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
            Request::Keys { pattern } => self.keys_matching(pattern, now_ms),
            Request::Scan {
                cursor,
                pattern,
                count,
            } => self.scan(*cursor, pattern.as_deref(), *count, now_ms),
            Request::RandomKey { seed } => self.random_key(*seed, now_ms),
            Request::DbSize => Reply::Integer {
                value: self.len() as i64,
            },
            Request::Pttl { key } => Reply::Integer {
                value: match self.live(key, now_ms) {
                    None => -2,
                    Some(entry) if entry.expires_at_ms == NEVER => -1,
                    Some(entry) => (entry.expires_at_ms - now_ms).min(i64::MAX as u64) as i64,
                },
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

    /// Every held key, in no particular order (expired keys not reclaimed yet included).
    pub fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.entries.iter().map(|entry| entry.key())
    }

    /// Whether `key` is live at the store's clock.
    pub fn is_live(&self, key: &[u8]) -> bool {
        self.live(key, self.clock_ms).is_some()
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

    /// Deterministic digest of the whole state (entries, sessions, applied index, clock), equal on two
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
        let mut sessions = DigestHasher::new();
        self.sessions
            .digest_words(|word| sessions = sessions.word(word));
        DigestHasher::new()
            .word(entries_sum)
            .word(self.entries.len() as u64)
            .word(sessions.finish())
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

/// A deterministic hash of a client's write, to tell a true duplicate from another write sent with the
/// same sequence number.
fn fingerprint(command: &Command) -> u64 {
    // CRC-32C (hardware-accelerated): a write in a session hashes its whole value on the apply path.
    let (tag, exptime, version, key, value): (u8, u32, u64, &[u8], &[u8]) = match command {
        Command::Set {
            key,
            exptime,
            value,
        } => (1, *exptime, 0, key, value),
        Command::Cas {
            key,
            exptime,
            version,
            value,
        } => (2, *exptime, *version, key, value),
        Command::Delete { key } => (3, 0, 0, key, &[]),
        Command::Expire | Command::Register => (4, 0, 0, &[], &[]),
        Command::IncrBy { key, by } => (6, 0, *by as u64, key, &[]),
        Command::Append { key, value } => (7, 0, 0, key, value),
        Command::GetDel { key } => (10, 0, 0, key, &[]),
        Command::SetWith {
            key,
            value,
            condition,
            get,
            expiry,
        } => {
            let (kind, ms) = expiry.to_wire();
            let flags = u32::from(kind) | (u32::from(*get) << 4) | ((*condition as u32) << 8);
            (9, flags, ms, key, value)
        }
        Command::MSet { pairs, nx } => {
            // Every pair, framed, so that no two different MSETs collide by concatenation.
            let mut crc = crc32c::crc32c(&[8, u8::from(*nx)]);
            for (key, value) in pairs {
                crc = crc32c::crc32c_append(crc, &(key.len() as u32).to_le_bytes());
                crc = crc32c::crc32c_append(crc, key);
                crc = crc32c::crc32c_append(crc, &(value.len() as u32).to_le_bytes());
                crc = crc32c::crc32c_append(crc, value);
            }
            return u64::from(crc);
        }
        // The rarer commands: their entry encoding is their identity (an allocation per write,
        // which only the Redis front end's commands pay, and it does not use sessions).
        command => {
            let mut body = bytes::BytesMut::new();
            command.encode_body(&mut body);
            return u64::from(crc32c::crc32c(&body));
        }
    };
    let mut header = [0u8; 1 + 4 + 8 + 4];
    header[0] = tag;
    header[1..5].copy_from_slice(&exptime.to_le_bytes());
    header[5..13].copy_from_slice(&version.to_le_bytes());
    header[13..17].copy_from_slice(&(key.len() as u32).to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&header), key);
    u64::from(crc32c::crc32c_append(crc, value))
}

/// getm's exptime: whole seconds left, rounded up, so a live expiring key never shows 0.
fn remaining_whole_seconds(expires_at_ms: u64, now_ms: u64) -> u64 {
    if expires_at_ms == NEVER {
        0
    } else {
        expires_at_ms.saturating_sub(now_ms).div_ceil(1000)
    }
}

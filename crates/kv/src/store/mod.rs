//! The replicated state machine: applies committed commands and answers reads.

mod digest;
mod entry;
mod expiry;
pub mod sessions;
mod snapshot;
mod table;

use crate::command::{Command, Proposal, SetCondition, SetExpiry};
use crate::limits::{expiry_instant, is_valid_exptime, is_valid_key};
use crate::protocol::{Reply, Request, SessionSeq};
use digest::DigestHasher;
use entry::{Entry, NEVER};
use sessions::{Admission, SessionLimits, SessionTable};
use table::KeyTable;

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
            Command::SetWith {
                key,
                value,
                condition,
                get,
                expiry,
            } => {
                let old = self
                    .live(key, now_ms)
                    .map(|e| (e.value_bytes(), e.expires_at_ms));
                let applies = match condition {
                    SetCondition::Always => true,
                    SetCondition::IfAbsent => old.is_none(),
                    SetCondition::IfPresent => old.is_some(),
                };
                if applies {
                    let expires_at_ms = match expiry {
                        SetExpiry::Never => NEVER,
                        SetExpiry::Keep => old.as_ref().map_or(NEVER, |(_, at)| *at),
                        SetExpiry::AfterMs(ms) => now_ms.saturating_add(*ms).min(NEVER - 1),
                        SetExpiry::AtMs(at) => (*at).min(NEVER - 1),
                    };
                    if let Err(reply) = self.put(index, key, value, expires_at_ms) {
                        return reply;
                    }
                }
                match (get, old, applies) {
                    (true, Some((value, _)), _) => Reply::Value { value },
                    (true, None, _) | (false, _, false) => Reply::ErrNotFound,
                    (false, _, true) => Reply::Ok { version: index },
                }
            }
            Command::SetTtl { key, expiry } => {
                let Some(entry) = self.live(key, now_ms).cloned() else {
                    return Reply::Integer { value: 0 };
                };
                let expires_at_ms = match expiry {
                    SetExpiry::Never if entry.expires_at_ms == NEVER => {
                        return Reply::Integer { value: 0 }
                    }
                    SetExpiry::Never => NEVER,
                    SetExpiry::Keep => return Reply::ErrCmdErr,
                    SetExpiry::AfterMs(ms) => now_ms.saturating_add(*ms).min(NEVER - 1),
                    SetExpiry::AtMs(at) => (*at).min(NEVER - 1),
                };
                if expires_at_ms <= now_ms {
                    self.remove(key);
                } else if let Err(reply) = self.put(index, key, entry.value(), expires_at_ms) {
                    return reply;
                }
                Reply::Integer { value: 1 }
            }
            Command::GetDel { key } => match self.remove(key) {
                Some(entry) if entry.is_live_at(now_ms) => Reply::Value {
                    value: entry.value_bytes(),
                },
                _ => Reply::ErrNotFound,
            },
            Command::Append { key, value } => {
                let (current, expires_at_ms) = self.current(key, now_ms);
                let len = current.len() + value.len();
                if len > MAX_GROWN_VALUE {
                    return Reply::ErrValue {
                        message: format!("string exceeds maximum allowed size ({MAX_GROWN_VALUE})"),
                    };
                }
                let mut grown = Vec::with_capacity(len);
                grown.extend_from_slice(&current);
                grown.extend_from_slice(value);
                match self.put(index, key, &grown, expires_at_ms) {
                    Ok(()) => Reply::Integer { value: len as i64 },
                    Err(reply) => reply,
                }
            }
            Command::MSet { pairs, nx } => {
                if *nx
                    && pairs
                        .iter()
                        .any(|(key, _)| self.live(key, now_ms).is_some())
                {
                    return Reply::Integer { value: 0 };
                }
                if pairs
                    .iter()
                    .any(|(key, value)| !is_valid_key(key) || u32::try_from(value.len()).is_err())
                {
                    return Reply::ErrCmdErr;
                }
                for (key, value) in pairs {
                    // Valid keys and lengths (checked above): cannot fail.
                    let _ = self.put(index, key, value, NEVER);
                }
                if *nx {
                    Reply::Integer { value: 1 }
                } else {
                    Reply::Ok { version: index }
                }
            }
        }
    }

    /// The key's live value and expiry (empty and never-expiring when it is absent).
    fn current(&self, key: &[u8], now_ms: u64) -> (Vec<u8>, u64) {
        match self.live(key, now_ms) {
            Some(entry) => (entry.value().to_vec(), entry.expires_at_ms),
            None => (Vec::new(), NEVER),
        }
    }

    fn incr_by(&mut self, index: u64, now_ms: u64, key: &[u8], by: i64) -> Reply {
        let (current, expires_at_ms) = self.current(key, now_ms);
        let value = if current.is_empty() && self.live(key, now_ms).is_none() {
            Some(0)
        } else {
            parse_integer(&current)
        };
        let Some(value) = value else {
            return Reply::ErrValue {
                message: "value is not an integer or out of range".into(),
            };
        };
        let Some(next) = value.checked_add(by) else {
            return Reply::ErrValue {
                message: "increment or decrement would overflow".into(),
            };
        };
        match self.put(index, key, next.to_string().as_bytes(), expires_at_ms) {
            Ok(()) => Reply::Integer { value: next },
            Err(reply) => reply,
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
        Command::SetTtl { key, expiry } => {
            let (kind, ms) = expiry.to_wire();
            (11, u32::from(kind), ms, key, &[])
        }
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
    };
    let mut header = [0u8; 1 + 4 + 8 + 4];
    header[0] = tag;
    header[1..5].copy_from_slice(&exptime.to_le_bytes());
    header[5..13].copy_from_slice(&version.to_le_bytes());
    header[13..17].copy_from_slice(&(key.len() as u32).to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&header), key);
    u64::from(crc32c::crc32c_append(crc, value))
}

/// A value the Redis front end may grow with APPEND: its limit on a string.
const MAX_GROWN_VALUE: usize = 512 << 20;

/// A value as Redis reads an integer: optional `-`, decimal digits, no spaces, no leading `+` or
/// zeros (other than `0` itself), within i64.
fn parse_integer(value: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(value).ok()?;
    let digits = text.strip_prefix('-').unwrap_or(text);
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && text != "-0";
    if !canonical {
        return None;
    }
    text.parse().ok()
}

/// getm's exptime: whole seconds left, rounded up, so a live expiring key never shows 0.
fn remaining_whole_seconds(expires_at_ms: u64, now_ms: u64) -> u64 {
    if expires_at_ms == NEVER {
        0
    } else {
        expires_at_ms.saturating_sub(now_ms).div_ceil(1000)
    }
}

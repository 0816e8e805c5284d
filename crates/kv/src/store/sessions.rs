//! Client sessions (Raft dissertation §6.3): for each session, the newest sequence number applied and
//! the reply it got, so that a write retried after a lost reply is answered, not applied again.
//!
//! A session is opened by a replicated `register`, and its id is the log index of that entry, so every
//! replica agrees on it without coordination. Everything here is decided on the store's replicated
//! clock (the largest stamp applied), never a local one, so every replica expires and evicts the same
//! sessions at the same index.
//!
//! The table is bounded: at most [`SessionLimits::max_sessions`] sessions; registering one more evicts
//! the least recently active. A session also expires after [`SessionLimits::idle_ms`] without a write.
//! A write in a session that is gone is answered `ERR_SESSION_EXPIRED` and not applied.

use std::collections::{BTreeMap, BTreeSet};

use crate::byte_reader::ByteReader;
use crate::decode_error::DecodeError;
use crate::protocol::{Reply, SessionSeq, MAX_SESSION_NUMBER};

/// How many sessions a store keeps and for how long. The same on every replica: the values are
/// constants of the release, not configuration (two replicas with different limits would diverge).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionLimits {
    pub max_sessions: usize,
    /// A session with no write for this long (on the replicated clock) expires.
    pub idle_ms: u64,
}

impl SessionLimits {
    /// 65,536 sessions of about 100 bytes each (some 6.5 MiB at most), idle for at most an hour.
    pub const DEFAULT: SessionLimits = SessionLimits {
        max_sessions: 65_536,
        idle_ms: 60 * 60 * 1000,
    };
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits::DEFAULT
    }
}

/// How far past a session's newest sequence number a write may be. A client moves on by one after
/// each write, so a larger jump is a bug or an attack, and refusing it keeps a session from being
/// pushed to a sequence number no later write could follow.
pub const MAX_SEQUENCE_STEP: u64 = 1 << 20;

/// The reply to a session's newest write, as kept: a write's reply never carries a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SavedReply {
    /// No write yet.
    Nothing,
    Ok(u64),
    Deleted,
    NotFound,
    VersionMismatch,
    CmdErr,
}

impl SavedReply {
    fn of(reply: &Reply) -> SavedReply {
        match reply {
            Reply::Ok { version } => SavedReply::Ok(*version),
            Reply::Deleted => SavedReply::Deleted,
            Reply::ErrNotFound => SavedReply::NotFound,
            Reply::ErrVersion => SavedReply::VersionMismatch,
            _ => SavedReply::CmdErr,
        }
    }

    fn reply(self) -> Reply {
        match self {
            SavedReply::Ok(version) => Reply::Ok { version },
            SavedReply::Deleted => Reply::Deleted,
            SavedReply::NotFound => Reply::ErrNotFound,
            SavedReply::VersionMismatch => Reply::ErrVersion,
            SavedReply::Nothing | SavedReply::CmdErr => Reply::ErrCmdErr,
        }
    }

    fn encode(self) -> (u8, u64) {
        match self {
            SavedReply::Nothing => (0, 0),
            SavedReply::Ok(version) => (1, version),
            SavedReply::Deleted => (2, 0),
            SavedReply::NotFound => (3, 0),
            SavedReply::VersionMismatch => (4, 0),
            SavedReply::CmdErr => (5, 0),
        }
    }

    fn decode(tag: u8, version: u64) -> Result<SavedReply, DecodeError> {
        Ok(match (tag, version) {
            (0, 0) => SavedReply::Nothing,
            (1, version) => SavedReply::Ok(version),
            (2, 0) => SavedReply::Deleted,
            (3, 0) => SavedReply::NotFound,
            (4, 0) => SavedReply::VersionMismatch,
            (5, 0) => SavedReply::CmdErr,
            _ => return Err(DecodeError::InvalidEntry),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Session {
    last_seq: u64,
    /// A hash of the newest write's command: a "duplicate" carrying another command is not one (a
    /// client that reused a session id from another cluster, or a confused one), and is refused.
    fingerprint: u64,
    reply: SavedReply,
    last_active_ms: u64,
}

/// What to do with a write in a session.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// A new sequence number: apply it, then [`SessionTable::record`] its reply.
    Apply,
    /// Answer this without applying anything: the saved reply of a duplicate, or an error.
    Answer(Reply),
}

/// Every live session. Deterministic: ordered maps only, and time only from the caller.
#[derive(Clone, Debug, Default)]
pub struct SessionTable {
    limits: SessionLimits,
    sessions: BTreeMap<u64, Session>,
    /// One `(time, id)` per session, least recently active first, for expiry and eviction. Updated
    /// lazily: a write moves only its session's `last_active_ms`, so an entry's time may be older than
    /// its session's (never newer). Whoever pops a stale entry puts it back with the session's time, so
    /// the first fresh entry popped is exactly the least recently active session, as an eager index
    /// would give (ties broken by id alike). Not part of the state: a replica restored from a snapshot
    /// rebuilds it fresh and decides the same.
    by_activity: BTreeSet<(u64, u64)>,
}

impl SessionTable {
    pub fn new(limits: SessionLimits) -> SessionTable {
        SessionTable {
            limits,
            ..SessionTable::default()
        }
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    pub fn contains(&self, id: u64) -> bool {
        self.sessions.contains_key(&id)
    }

    /// Opens session `id` (the index of its `register` entry) at `now_ms`, evicting the least recently
    /// active session if the table is full.
    pub fn register(&mut self, id: u64, now_ms: u64) {
        while self.sessions.len() >= self.limits.max_sessions.max(1) {
            let Some(oldest) = self.pop_least_recently_active() else {
                break;
            };
            self.sessions.remove(&oldest);
        }
        let session = Session {
            last_seq: 0,
            fingerprint: 0,
            reply: SavedReply::Nothing,
            last_active_ms: now_ms,
        };
        if let Some(old) = self.sessions.insert(id, session) {
            // Ids are log indexes, each registered once; kept consistent all the same.
            self.by_activity.remove(&(old.last_active_ms, id));
        }
        self.by_activity.insert((now_ms, id));
    }

    /// Whether the write `at`, whose command hashes to `fingerprint`, should be applied, or what to
    /// answer instead.
    pub fn admit(&self, at: SessionSeq, fingerprint: u64) -> Admission {
        let Some(session) = self.sessions.get(&at.session) else {
            return Admission::Answer(Reply::ErrSessionExpired);
        };
        let last = session.last_seq;
        if at.seq == last && fingerprint == session.fingerprint {
            Admission::Answer(session.reply.reply())
        } else if at.seq > last && at.seq - last <= MAX_SEQUENCE_STEP {
            Admission::Apply
        } else {
            // Older, too far ahead, or the newest number with another command.
            Admission::Answer(Reply::ErrSequence { last })
        }
    }

    /// Records that the write `at`, admitted by [`SessionTable::admit`], was applied and answered `reply`.
    pub fn record(&mut self, at: SessionSeq, fingerprint: u64, reply: &Reply, now_ms: u64) {
        let Some(session) = self.sessions.get_mut(&at.session) else {
            return;
        };
        debug_assert!(at.seq > session.last_seq, "a sequence number applied twice");
        session.last_seq = at.seq;
        session.fingerprint = fingerprint;
        session.reply = SavedReply::of(reply);
        // The activity index catches up lazily (see `by_activity`).
        session.last_active_ms = session.last_active_ms.max(now_ms);
    }

    /// Removes and returns the id of the least recently active session, refreshing stale index entries
    /// on the way.
    fn pop_least_recently_active(&mut self) -> Option<u64> {
        while let Some((time, id)) = self.by_activity.pop_first() {
            match self.sessions.get(&id) {
                Some(session) if session.last_active_ms > time => {
                    self.by_activity.insert((session.last_active_ms, id));
                }
                Some(_) => return Some(id),
                None => {}
            }
        }
        None
    }

    /// Drops every session idle for longer than the limit at `now_ms`.
    pub fn expire(&mut self, now_ms: u64) {
        let idle_ms = self.limits.idle_ms;
        // An entry's time is never newer than its session's: if the first is not idle, none is.
        while let Some(&(active_ms, _)) = self.by_activity.first() {
            if active_ms.saturating_add(idle_ms) >= now_ms {
                break;
            }
            let Some(id) = self.pop_least_recently_active() else {
                break;
            };
            match self.sessions.get(&id) {
                Some(session) if session.last_active_ms.saturating_add(idle_ms) >= now_ms => {
                    // Fresh and not idle after all (popped as the least recently active).
                    self.by_activity.insert((session.last_active_ms, id));
                    break;
                }
                _ => {
                    self.sessions.remove(&id);
                }
            }
        }
    }

    /// Feeds every session, in id order, to `word` (for the store's digest).
    pub fn digest_words(&self, mut word: impl FnMut(u64)) {
        word(self.sessions.len() as u64);
        for (id, session) in &self.sessions {
            let (tag, version) = session.reply.encode();
            for w in [
                *id,
                session.last_seq,
                session.fingerprint,
                session.last_active_ms,
                u64::from(tag),
                version,
            ] {
                word(w);
            }
        }
    }

    /// Appends the snapshot encoding: `count:u64`, then per session
    /// `id:u64 | last_seq:u64 | fingerprint:u64 | last_active_ms:u64 | reply_tag:u8 | reply_version:u64`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.sessions.len() as u64).to_le_bytes());
        for (id, session) in &self.sessions {
            let (tag, version) = session.reply.encode();
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&session.last_seq.to_le_bytes());
            out.extend_from_slice(&session.fingerprint.to_le_bytes());
            out.extend_from_slice(&session.last_active_ms.to_le_bytes());
            out.push(tag);
            out.extend_from_slice(&version.to_le_bytes());
        }
    }

    /// Reads [`SessionTable::encode`]'s output, checking every field: ids no later than the snapshot's
    /// index, in increasing order, at most `limits.max_sessions` of them.
    pub(crate) fn decode(
        reader: &mut ByteReader<'_>,
        limits: SessionLimits,
        applied_index: u64,
    ) -> Result<SessionTable, DecodeError> {
        let count = reader.u64()?;
        if count > limits.max_sessions as u64 {
            return Err(DecodeError::InvalidEntry);
        }
        let mut table = SessionTable::new(limits);
        let mut previous = 0;
        for _ in 0..count {
            let id = reader.u64()?;
            let last_seq = reader.u64()?;
            let fingerprint = reader.u64()?;
            let last_active_ms = reader.u64()?;
            let reply = SavedReply::decode(reader.u8()?, reader.u64()?)?;
            if id <= previous || id > applied_index || last_seq > MAX_SESSION_NUMBER {
                return Err(DecodeError::InvalidEntry);
            }
            previous = id;
            table.sessions.insert(
                id,
                Session {
                    last_seq,
                    fingerprint,
                    reply,
                    last_active_ms,
                },
            );
            table.by_activity.insert((last_active_ms, id));
        }
        Ok(table)
    }
}

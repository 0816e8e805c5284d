//! A request as parsed from the wire, every field already validated.

use bytes::Bytes;

use crate::members::MembersRequest;

/// A well-formed client request. Every field has already been validated (key syntax, exptime range,
/// value size), so a write built from it can always be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Set {
        key: Bytes,
        exptime: u32,
        value: Bytes,
        noreply: bool,
    },
    Cas {
        key: Bytes,
        exptime: u32,
        version: u64,
        value: Bytes,
        noreply: bool,
    },
    Get {
        key: Bytes,
    },
    Getm {
        key: Bytes,
    },
    Delete {
        key: Bytes,
    },
    /// `register`: open a session (answered `SESSION <id>`).
    Register,
    /// `backup`: a point-in-time copy of the whole store (answered `BACKUP <numbytes>` and the file).
    Backup,
    /// The key's remaining lifetime in milliseconds (answered `INTEGER <ms>`, -1 for a key that never
    /// expires, -2 for a missing one). Not a CS733 command: only the Redis front end asks it (PTTL, TTL).
    Pttl {
        key: Bytes,
    },
    /// Every live key matching a glob `pattern` (Redis's KEYS). Not a CS733 command.
    Keys {
        pattern: Bytes,
    },
    /// One page of a walk over every key (Redis's SCAN): start at `cursor` (0 first), return live
    /// keys matching `pattern` (all if `None`) from about `count` held keys, and the cursor to go
    /// on from (0 at the end). Not a CS733 command.
    Scan {
        cursor: u64,
        pattern: Option<Bytes>,
        count: u32,
    },
    /// A live key chosen by `seed`, which the asker draws at random (Redis's RANDOMKEY; answered as
    /// a value, or not found when no key is live). Not a CS733 command.
    RandomKey {
        seed: u64,
    },
    /// The number of keys held, expired ones not yet reclaimed included, as Redis's DBSIZE counts
    /// them (answered `INTEGER <n>`). Not a CS733 command.
    DbSize,
    /// `members ...`: list or change the cluster's membership (answered `MEMBERS <numbytes>` and the
    /// table, or `ERR_MEMBERSHIP <reason>`).
    Members(MembersRequest),
    /// `stale <max_lag> <get|getm ...>`: a read any node answers from its own applied state, if that
    /// is at most `max_lag` entries behind the commit index the node knows (not linearizable).
    Stale {
        max_lag: u64,
        read: Box<Request>,
    },
    /// `session <id> <seq> <set|cas|delete ...>`: a write applied at most once per sequence number.
    InSession {
        session: SessionSeq,
        write: Box<Request>,
    },
}

/// Where a write stands in its client's session (see "Sessions" in `docs/protocol.md`): the session's
/// id and the write's sequence number in it. The state machine applies each sequence number once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionSeq {
    pub session: u64,
    pub seq: u64,
}

//! The client's sessions: a pool of them, each carrying one write at a time.
//!
//! The server keeps, per session, only the newest sequence number and its reply (see "Sessions" in
//! `docs/protocol.md`), so a session may have one write outstanding: the write takes a session from
//! the pool, keeps it through every retry, and gives it back with the sequence number moved on once
//! it has its answer. Many tasks writing at once use as many sessions; the pool keeps them for the
//! next writes, so a client opens about as many sessions as it ever has writes in flight.

use std::sync::Mutex;

/// One session and the sequence number its next write will carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Session {
    pub(crate) id: u64,
    pub(crate) next_seq: u64,
}

impl Session {
    /// A session the cluster has just registered.
    pub(crate) fn opened(id: u64) -> Session {
        Session { id, next_seq: 1 }
    }

    /// The session after its write at `next_seq` was settled (answered, or given up on: the server
    /// accepts a gap, and refuses the old number if it ever arrives later).
    pub(crate) fn advanced(self) -> Session {
        Session {
            next_seq: self.next_seq + 1,
            ..self
        }
    }
}

/// Sessions not in use.
#[derive(Debug, Default)]
pub(crate) struct SessionPool {
    idle: Mutex<Vec<Session>>,
}

impl SessionPool {
    pub(crate) fn take(&self) -> Option<Session> {
        self.lock().pop()
    }

    pub(crate) fn give_back(&self, session: Session) {
        self.lock().push(session);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Session>> {
        // Held only for a push or a pop: poisoning cannot leave the pool inconsistent.
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

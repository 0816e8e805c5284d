use bytes::Bytes;

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
}

impl Request {
    pub fn key(&self) -> &Bytes {
        match self {
            Request::Set { key, .. }
            | Request::Cas { key, .. }
            | Request::Get { key }
            | Request::Getm { key }
            | Request::Delete { key } => key,
        }
    }

    /// Whether the request only reads (and so may be served through ReadIndex, not the log).
    pub fn is_read(&self) -> bool {
        matches!(self, Request::Get { .. } | Request::Getm { .. })
    }

    /// Whether the client asked for success and "expected failure" replies to be suppressed.
    pub fn noreply(&self) -> bool {
        match self {
            Request::Set { noreply, .. } | Request::Cas { noreply, .. } => *noreply,
            _ => false,
        }
    }
}

//! A request as parsed from the wire, every field already validated.

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

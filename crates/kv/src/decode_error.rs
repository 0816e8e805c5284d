//! Why bytes from a log entry or a snapshot did not decode: one error type for every decoder in this
//! crate, so that the byte reader and the formats built on it need not know about each other.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("data ends before the encoded structure does")]
    Truncated,
    #[error("unknown format version {0}")]
    UnknownFormat(u8),
    #[error("unknown command tag {0}")]
    UnknownCommand(u8),
    #[error("invalid key")]
    InvalidKey,
    #[error("exptime out of range")]
    InvalidExptime,
    #[error("unexpected bytes after the encoded structure")]
    TrailingBytes,
    #[error("checksum mismatch")]
    Checksum,
    #[error("bad magic number")]
    BadMagic,
    #[error("key appears twice in snapshot")]
    DuplicateKey,
    #[error("invalid entry metadata")]
    InvalidEntry,
}

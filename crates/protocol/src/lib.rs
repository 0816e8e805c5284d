//! # raftkv-protocol: the CS733 text protocol, both directions, without I/O
//!
//! This crate owns the client protocol as both ends speak it: the [`Request`] type and the server's
//! incremental [`Parser`] for it, the one [`Reply`] type with its exact encoding, the client's
//! [`parse_reply`] and request encoders, and the [`limits`] (key syntax, expiry range, value and line
//! sizes) that the server, the state machine and the client all check against. The full specification,
//! with examples, is in `docs/protocol.md`.
//!
//! It must not touch the outside world (no sockets, files, threads or clocks) and knows nothing of
//! Raft, the store or the log-entry format (those are `raftkv-kv`'s).
#![forbid(unsafe_code)]

mod fields;
pub mod limits;
mod members;
mod parser;
mod reply;
mod reply_parser;
mod request;
mod request_encoder;

pub use limits::{
    validate_key, KeyError, DEFAULT_MAX_VALUE_SIZE, MAX_EXPTIME_SECS, MAX_KEY_LEN,
    MAX_SESSION_NUMBER,
};
pub use members::{is_valid_address, MemberRow, MembersRequest, MembersTable, MAX_ADDRESS_LEN};
pub use parser::{ParseError, ParseOutcome, Parser};
pub use reply::Reply;
pub use reply_parser::{parse_reply, Parsed, ProtocolError, ReplyKind};
pub use request::{Request, SessionSeq};
pub use request_encoder::{
    encode_cas, encode_delete, encode_get, encode_getm, encode_register, encode_session_prefix,
    encode_set, push_decimal,
};

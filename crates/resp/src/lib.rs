//! # raftkv-resp: the Redis protocol, both directions, without I/O
//!
//! This crate owns RESP as a raftkv node speaks it to Redis clients: [`parse_command`] takes one
//! command (a multibulk array of bulk strings, or an inline command line) from the front of a buffer,
//! checking every length against [`Limits`] before it buffers anything; [`Value`] is a reply, encoded
//! for RESP2 or (after `HELLO 3`) RESP3 by [`Value::encode`].
//!
//! It must not touch the outside world (no sockets, files, threads or clocks) and knows nothing of
//! Raft, the store or which commands exist (that is the server's `redis` module).
#![forbid(unsafe_code)]

mod inline;
mod parse;
mod value;

pub use parse::{parse_command, Limits, Parsed, ProtocolError};
pub use value::Value;

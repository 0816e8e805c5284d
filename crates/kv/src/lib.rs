//! raftkv's key-value state machine and the CS733 text protocol codec.
//!
//! This crate owns:
//! - the client protocol: [`Parser`] turns a byte stream into [`Request`]s (incrementally, zero-copy,
//!   surviving any input) and [`Reply::encode`] writes the exact reply bytes;
//! - the replicated command format: [`Proposal`] (a [`Command`] plus the leader's wall-clock stamp)
//!   and its compact, versioned binary encoding carried in Raft log entries;
//! - the state machine: [`Store`] applies committed commands deterministically, serves reads without
//!   writing, and produces checksummed snapshots.
//!
//! It must not touch the outside world: no sockets, files, threads or clocks. Time enters only as a
//! parameter (the leader's stamp on a command, or the `now_ms` of a read), so every replica that
//! applies the same log reaches the same state. Sockets, Raft and persistence belong to other crates.
#![forbid(unsafe_code)]

mod byte_reader;
pub mod command;
pub mod limits;
pub mod protocol;
pub mod store;

pub use command::{Command, DecodeError, Proposal};
pub use protocol::{ParseError, ParseOutcome, Parser, Reply, Request};
pub use store::{ReadReply, Store};

/// Largest value a `set` or `cas` may carry unless the server configures otherwise.
pub const DEFAULT_MAX_VALUE_SIZE: usize = 1 << 20;

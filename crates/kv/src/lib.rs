//! raftkv's key-value state machine and its replicated command format.
//!
//! This crate owns:
//! - the replicated command format: [`Proposal`] (a [`Command`] plus the leader's wall-clock stamp)
//!   and its compact, versioned binary encoding carried in Raft log entries;
//! - the state machine: [`Store`] applies committed commands deterministically, serves reads without
//!   writing, and produces checksummed snapshots;
//! - the backup file ([`backup`]): a store's snapshot with a checksummed header;
//! - client sessions ([`SessionTable`]): each session's newest sequence number and reply, so that a
//!   retried write is applied once (Raft dissertation §6.3).
//!
//! It must not touch the outside world: no sockets, files, threads or clocks. Time enters only as a
//! parameter (the leader's stamp on a command, or the `now_ms` of a read), so every replica that
//! applies the same log reaches the same state. Sockets, Raft and persistence belong to other crates.
#![forbid(unsafe_code)]

pub mod backup;
mod byte_reader;
pub mod command;
mod decode_error;
pub mod glob;
pub mod store;

pub use command::{
    ClientWrite, Command, DecodeError, Proposal, SetCondition, SetExpiry, TtlCondition, TxOp,
    Watch, MAX_EXPIRY_MS,
};
/// The client protocol (`raftkv-protocol`), re-exported so that the state machine's users name one
/// crate: requests, the reply type, the limits.
pub use raftkv_protocol::{self as protocol, limits};
pub use raftkv_protocol::{
    ParseError, ParseOutcome, Parser, Reply, Request, DEFAULT_MAX_VALUE_SIZE,
};
pub use store::sessions::{SessionLimits, SessionTable, MAX_SEQUENCE_STEP};
pub use store::Store;

//! # raftkv-replica: one raftkv node's logic, without I/O
//!
//! This crate owns everything a node decides between its sockets and its disk: the Raft core, the
//! key-value [`Store`](raftkv_kv::Store), client requests in progress (writes by log index, reads by
//! ReadIndex context and then by applied index, writes held back behind reads, requests parked while no
//! leader is known), the stamps that carry time into the log, the rule that makes reads see expiry at the
//! replicated clock ([`clock`]), the snapshot policy ([`snapshot`]) and the group commit that makes a
//! node's Ready batches durable ([`storage`]).
//!
//! A [`Replica`] takes inputs — a tick with the time, a peer message, a client request with an opaque
//! handle, a durable position, a snapshot built in the background — and leaves its outputs in an
//! [`Outputs`]: messages to send now, persist jobs for the disk, replies to handles, snapshot work. The
//! server (`raftkv-server`) drives it with tokio, threads and real files; the simulator (`raftkv-sim`)
//! drives the very same type with virtual time, a simulated network and the real WAL over a simulated
//! file system, so everything here is proven under faults.
//!
//! It must not touch the outside world: no sockets, files, threads, clocks or global randomness. Time
//! arrives only as a [`Now`]; the disk only through [`storage::write_batches`], which the driver calls on
//! the thread it chooses.
#![forbid(unsafe_code)]

pub mod clock;
pub mod members;
pub mod mutation;
mod replica;
mod request;
mod routing;
pub mod snapshot;
pub mod storage;

pub use clock::Now;
pub use members::{
    bootstrap_entry, is_fresh, write_bootstrap, AddressBook, MemberAddrs, DEFAULT_PROMOTE_MAX_LAG,
};
pub use mutation::Mutation;
pub use replica::{BackupCopy, Outputs, Replica, ReplicaConfig, ReplicaError};
pub use request::{ClientRequest, Op};
pub use snapshot::{BuiltSnapshot, SnapshotPolicy, SnapshotTask};
pub use storage::{Durable, PersistJob};

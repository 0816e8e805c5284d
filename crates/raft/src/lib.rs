//! # raftkv-raft: Raft consensus as a pure state machine
//!
//! (Crate documentation of the driver contract: see [`Ready`].)
#![forbid(unsafe_code)]

mod config;
mod log;
mod progress;
mod raft;
mod read_index;
mod ready;
mod rng;
mod types;

pub use config::Config;
pub use raft::{InitialState, ProposeError, Raft, Status};
pub use ready::Ready;
pub use types::*;

//! # raftkv-server: the node runtime
//!
//! (placeholder top doc; being written)

pub mod config;
pub mod transport;
pub mod wire;

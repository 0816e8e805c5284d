//! # raftkv-sim: a deterministic whole-cluster simulator for the Raft core
//!
//! One seed fixes everything: cluster size, fault probabilities, workload, timing. The cluster runs in one
//! thread in virtual time; after every step the safety properties of Raft are checked, and at the end the
//! clients' history is checked for linearizability. See `docs/simulation.md`.
#![forbid(unsafe_code)]

pub mod linearizability;
pub mod rng;

//! # raftkv-chaos: real processes, real faults, every history checked
//!
//! Starts a raftkv cluster as real `raftkv server` processes, either on loopback or each node in its
//! own Linux network namespace ([`netns`]), runs concurrent clients against it over the CS733
//! protocol ([`workload`]), injects faults ([`nemesis`]: kills, pauses, partitions, packet loss,
//! slow links, clock jumps, power loss), heals, and then checks the recorded history ([`verdict`]):
//! linearizable per key (with the simulator's checker, the one checker in the repository), no
//! acknowledged write lost, every node's state digest equal at equal applied index.
//!
//! It owns process and network control for tests of the built binary; it must not link the server
//! (it tests the binary as a user runs it) and holds no Raft or store logic of its own.

pub mod cluster;
pub mod history;
pub mod http;
pub mod nemesis;
pub mod netns;
pub mod power;
pub mod run;
pub mod verdict;
pub mod wire;
pub mod workload;

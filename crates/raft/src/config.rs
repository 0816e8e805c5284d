//! Tunables of one node's core.

use crate::types::NodeId;

#[derive(Clone, Debug)]
pub struct Config {
    /// This node's id (non-zero).
    pub id: NodeId,
    /// The voters of a fresh cluster. Ignored when the node starts from a snapshot, whose membership wins.
    pub voters: Vec<NodeId>,
    /// Ticks without hearing from a leader before a follower campaigns. The actual timeout is drawn
    /// uniformly from `[election_ticks, 2 * election_ticks)` each time it is reset (§5.2).
    pub election_ticks: u32,
    /// Ticks between a leader's heartbeats. Must be smaller than `election_ticks`.
    pub heartbeat_ticks: u32,
    /// Ask for pre-votes before campaigning, so a partitioned node cannot force term inflation (§9.6).
    pub pre_vote: bool,
    /// A leader that has not heard from a majority within an election timeout steps down (§6.2).
    pub check_quorum: bool,
    /// Serve reads on the leader without a heartbeat round while its lease holds (see the `lease`
    /// module for the clock assumption it makes). Needs `check_quorum` on every node; off by default.
    pub lease_reads: bool,
    /// Most entries in one Append message.
    pub max_entries_per_msg: usize,
    /// Most entry bytes in one Append message (a single larger entry still goes alone).
    pub max_bytes_per_msg: usize,
    /// Most un-acknowledged Append messages in flight to one follower in pipelined replication.
    pub max_inflight_msgs: usize,
    /// Seed of the core's own deterministic RNG (election jitter only). The caller owns it: the same seed
    /// and the same inputs give the same outputs.
    pub seed: u64,
}

impl Config {
    pub fn new(id: NodeId, voters: Vec<NodeId>) -> Self {
        Config {
            id,
            voters,
            election_ticks: 10,
            heartbeat_ticks: 2,
            pre_vote: true,
            check_quorum: true,
            lease_reads: false,
            max_entries_per_msg: 4096,
            max_bytes_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            seed: id,
        }
    }
}

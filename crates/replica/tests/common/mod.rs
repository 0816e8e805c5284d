//! What the replica's hand-wired tests share: a replica's configuration with everything but Raft's
//! own settings at test values.

use raftkv_raft::{Config, NodeId};
use raftkv_replica::ReplicaConfig;

/// `raft` with client addresses `127.0.0.1:900<id>` for `nodes`, a 1 s leader wait, snapshots and
/// auto-removal off, no mutation.
pub fn replica_config(raft: Config, nodes: &[NodeId]) -> ReplicaConfig {
    ReplicaConfig {
        raft,
        peer_addrs: Default::default(),
        promote_max_lag: raftkv_replica::DEFAULT_PROMOTE_MAX_LAG,
        auto_remove_after_ms: 0,
        client_addrs: nodes
            .iter()
            .map(|&n| (n, format!("127.0.0.1:{}", 9000 + n)))
            .collect(),
        leader_wait_ms: 1_000,
        snapshot_entries: 1 << 40,
        snapshot_bytes: 1 << 40,
        session_limits: raftkv_kv::SessionLimits::DEFAULT,
        tick_ms: 10,
        mutation: None,
        record_applied: false,
    }
}

//! What a node reports about itself: [`NodeStatus`], published by the node loop a few times a second
//! through a `watch` for the HTTP endpoint (`/status`, `/health`) and mirrored into the metrics.

use crate::config::ClusterConfig;
use crate::metrics::Metrics;
use raftkv_raft::Role;
use raftkv_replica::Replica;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// A follower that has applied within this many entries of the commit index it knows serves; one
/// further behind is catching up.
pub const CAUGHT_UP_ENTRIES: u64 = 1000;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    pub client_addr: String,
    pub peer_addr: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_addr: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerProgress {
    pub id: u64,
    pub match_index: u64,
    /// Entries behind the leader's last log index.
    pub lag: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct NodeStatus {
    pub id: u64,
    pub role: String,
    pub term: u64,
    pub leader: Option<u64>,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_log_index: u64,
    pub snapshot_index: u64,
    pub members: Vec<Member>,
    /// Followers' progress, on the leader only.
    pub peers: Vec<PeerProgress>,
    /// Voters that make a majority in the current membership.
    #[serde(default)]
    pub quorum: u64,
    pub disk_bytes: u64,
    pub store_keys: u64,
    /// Keys with an expiry time (Redis's `INFO keyspace` `expires`).
    #[serde(default)]
    pub store_expiring: u64,
    pub store_bytes: u64,
    pub store_sessions: u64,
    pub version: String,
    pub uptime_seconds: f64,
    /// Why the node cannot serve, or `None` when it is healthy.
    pub unhealthy: Option<String>,
    /// This node's wall clock when the status was taken (ms since the Unix epoch): comparing it with
    /// another clock shows skew. Nothing in raftkv's correctness depends on it.
    #[serde(default)]
    pub wall_clock_ms: u64,
    /// The state's digest, present only in the status published to answer a `GET /digest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<StateDigest>,
    /// Each member's Redis address as the membership in the log records it (nodes that joined with
    /// one, and founders whose cluster file named one), by id.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub resp_addrs: std::collections::BTreeMap<u64, String>,
    /// On a learner or a removed node (which can never lead): the voters a client may try when no
    /// leader is known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub voters_to_try: Vec<u64>,
}

/// The node's whole state machine condensed to one number at one applied index: replicas that have
/// applied the same log report the same digest (`raftkv_kv::Store::digest`), so a tester can tell
/// that healed replicas converged. Computing it reads every entry, so it is taken only on request.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StateDigest {
    /// Which `GET /digest` request it answers (they are counted per node).
    pub request: u64,
    pub applied_index: u64,
    pub keys: u64,
    /// 16 hex digits.
    pub digest: String,
}

impl NodeStatus {
    pub fn healthy(&self) -> bool {
        self.unhealthy.is_none()
    }

    /// Whether this status is that of node `id` leading.
    pub fn leads(&self, id: u64) -> bool {
        self.leader == Some(id) && self.role == "leader"
    }
}

/// The members as the configuration names them.
pub fn members(config: &ClusterConfig) -> Vec<Member> {
    config
        .nodes
        .iter()
        .map(|node| Member {
            id: node.id,
            client_addr: node.client_addr.clone(),
            peer_addr: node.peer_addr.clone(),
            http_addr: node.http_addr.clone(),
        })
        .collect()
}

/// Reads the replica's state into a status and the metrics' gauges.
pub fn observe<H>(
    replica: &Replica<H>,
    members: &[Member],
    metrics: &Metrics,
    started: Instant,
    shutting_down: bool,
) -> NodeStatus {
    let raft = replica.raft();
    let status = raft.status();
    let store = replica.store();
    let role = match status.role {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::Candidate => "candidate",
        Role::PreCandidate => "precandidate",
    };
    let peers: Vec<PeerProgress> = members
        .iter()
        .filter(|member| member.id != status.id)
        .filter_map(|member| {
            let match_index = raft.match_index(member.id)?;
            Some(PeerProgress {
                id: member.id,
                match_index,
                lag: status.last_index.saturating_sub(match_index),
            })
        })
        .collect();
    let unhealthy = if shutting_down {
        Some("shutting down".to_string())
    } else if status.leader.is_none() {
        Some("no leader".to_string())
    } else if status.applied + CAUGHT_UP_ENTRIES < status.commit {
        Some(format!(
            "catching up: applied {} of {} committed",
            status.applied, status.commit
        ))
    } else {
        None
    };

    let gauge = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
    metrics
        .is_leader
        .set(i64::from(status.role == Role::Leader));
    metrics.has_leader.set(i64::from(status.leader.is_some()));
    metrics.term.set(gauge(status.term));
    metrics.commit_index.set(gauge(status.commit));
    metrics.applied_index.set(gauge(status.applied));
    metrics.last_log_index.set(gauge(status.last_index));
    metrics
        .snapshot_index
        .set(gauge(raft.snapshot_meta().index));
    metrics
        .proposals_pending
        .set(gauge(replica.pending_writes().count() as u64));
    metrics.store_keys.set(gauge(store.len() as u64));
    metrics.store_bytes.set(gauge(store.bytes() as u64));
    metrics
        .store_sessions
        .set(gauge(store.sessions_len() as u64));
    for member in members.iter().filter(|member| member.id != status.id) {
        let labels = crate::metrics::PeerLabels { peer: member.id };
        match peers.iter().find(|peer| peer.id == member.id) {
            Some(peer) => {
                metrics
                    .peer_match_lag
                    .get_or_create(&labels)
                    .set(gauge(peer.lag));
            }
            // Not leading (or no progress for it): no lag series, so a former leader's last
            // values cannot keep an alert firing.
            None => {
                metrics.peer_match_lag.remove(&labels);
            }
        }
    }
    let uptime = started.elapsed().as_secs_f64();
    metrics.uptime.set(uptime);

    NodeStatus {
        id: status.id,
        role: role.to_string(),
        term: status.term,
        leader: status.leader,
        commit_index: status.commit,
        applied_index: status.applied,
        last_log_index: status.last_index,
        snapshot_index: raft.snapshot_meta().index,
        members: members.to_vec(),
        peers,
        quorum: raft.membership().quorum() as u64,
        disk_bytes: u64::try_from(metrics.disk_bytes.get()).unwrap_or(0),
        store_keys: store.len() as u64,
        store_expiring: store.expiring_len() as u64,
        store_bytes: store.bytes() as u64,
        store_sessions: store.sessions_len() as u64,
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_seconds: uptime,
        unhealthy,
        wall_clock_ms: 0,
        digest: None,
        resp_addrs: replica
            .address_book()
            .members
            .into_iter()
            .filter_map(|(id, addrs)| Some((id, addrs.resp?)))
            .collect(),
        voters_to_try: replica.voters_to_try(),
    }
}

//! The node's Prometheus metrics: one registry per node, every metric named `raftkv_*` with its unit in
//! the name, counters ending in `_total` (added by the encoder), durations as histograms in seconds.
//!
//! Hot paths only touch pre-created handles (an atomic add, or a histogram's uncontended lock): label
//! lookups happen once, when a connection, peer or request kind first needs its handle.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use raftkv_protocol::Reply;
use std::sync::atomic::AtomicU64;

/// A client request's kind.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum OpKind {
    set,
    cas,
    delete,
    get,
    getm,
    register,
    backup,
    members,
}

impl OpKind {
    /// Every kind, in declaration order (each one's index is its `as usize`).
    pub const ALL: [OpKind; 8] = [
        OpKind::set,
        OpKind::cas,
        OpKind::delete,
        OpKind::get,
        OpKind::getm,
        OpKind::register,
        OpKind::backup,
        OpKind::members,
    ];
}

/// How a client request ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    ok,
    not_found,
    version_mismatch,
    redirect,
    bad_request,
    error,
    /// A write in a session that is gone, or with a sequence number out of order.
    session_error,
}

impl Outcome {
    pub fn of(reply: &Reply) -> Outcome {
        match reply {
            Reply::Ok { .. }
            | Reply::Value { .. }
            | Reply::ValueMeta { .. }
            | Reply::Deleted
            | Reply::Session { .. }
            | Reply::Backup { .. }
            | Reply::Members { .. }
            | Reply::Integer { .. }
            | Reply::Keys { .. }
            | Reply::Multi { .. }
            | Reply::ExecAborted => Outcome::ok,
            Reply::ErrMembership { .. } | Reply::ErrValue { .. } => Outcome::bad_request,
            Reply::ErrNotFound => Outcome::not_found,
            Reply::ErrVersion => Outcome::version_mismatch,
            Reply::ErrRedirect { .. } => Outcome::redirect,
            Reply::ErrCmdErr => Outcome::bad_request,
            Reply::ErrInternal => Outcome::error,
            Reply::ErrSessionExpired | Reply::ErrSequence { .. } => Outcome::session_error,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub op: OpKind,
    pub result: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub op: OpKind,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    pub peer: u64,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Every metric of one node.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub is_leader: Gauge,
    pub has_leader: Gauge,
    pub term: Gauge,
    pub leader_changes: Counter,
    pub commit_index: Gauge,
    pub applied_index: Gauge,
    pub last_log_index: Gauge,
    pub snapshot_index: Gauge,
    pub proposals_committed: Counter,
    pub proposals_pending: Gauge,
    pub proposals_failed: Counter,
    pub reads_lease: Counter,
    pub client_requests: Family<RequestLabels, Counter>,
    pub client_connections: Gauge,
    pub request_duration: Family<OpLabels, Histogram>,
    pub wal_sync_duration: Histogram,
    pub wal_written_bytes: Counter,
    pub snapshot_save_duration: Histogram,
    pub snapshot_size_bytes: Gauge,
    pub snapshot_send_duration: Histogram,
    pub snapshot_sent_bytes: Counter,
    pub snapshot_install_duration: Histogram,
    pub snapshot_received_bytes: Counter,
    pub peer_match_lag: Family<PeerLabels, Gauge>,
    pub peer_round_trip: Family<PeerLabels, Histogram>,
    pub peer_sent_messages: Family<PeerLabels, Counter>,
    pub peer_sent_bytes: Family<PeerLabels, Counter>,
    pub peer_received_messages: Family<PeerLabels, Counter>,
    pub peer_received_bytes: Family<PeerLabels, Counter>,
    pub peer_dropped_messages: Family<PeerLabels, Counter>,
    pub disk_bytes: Gauge,
    pub store_keys: Gauge,
    pub store_bytes: Gauge,
    pub store_sessions: Gauge,
    pub uptime: FloatGauge,
}

fn latency_histogram() -> Histogram {
    // 50 µs to ~6.5 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
}

fn long_histogram() -> Histogram {
    // 1 ms to ~16 min.
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut metrics = Metrics {
            registry: Registry::with_prefix("raftkv"),
            is_leader: Gauge::default(),
            has_leader: Gauge::default(),
            term: Gauge::default(),
            leader_changes: Counter::default(),
            commit_index: Gauge::default(),
            applied_index: Gauge::default(),
            last_log_index: Gauge::default(),
            snapshot_index: Gauge::default(),
            proposals_committed: Counter::default(),
            proposals_pending: Gauge::default(),
            proposals_failed: Counter::default(),
            reads_lease: Counter::default(),
            client_requests: Family::default(),
            client_connections: Gauge::default(),
            request_duration: Family::new_with_constructor(latency_histogram),
            wal_sync_duration: latency_histogram(),
            wal_written_bytes: Counter::default(),
            snapshot_save_duration: long_histogram(),
            snapshot_size_bytes: Gauge::default(),
            snapshot_send_duration: long_histogram(),
            snapshot_sent_bytes: Counter::default(),
            snapshot_install_duration: long_histogram(),
            snapshot_received_bytes: Counter::default(),
            peer_match_lag: Family::default(),
            peer_round_trip: Family::new_with_constructor(latency_histogram),
            peer_sent_messages: Family::default(),
            peer_sent_bytes: Family::default(),
            peer_received_messages: Family::default(),
            peer_received_bytes: Family::default(),
            peer_dropped_messages: Family::default(),
            disk_bytes: Gauge::default(),
            store_keys: Gauge::default(),
            store_bytes: Gauge::default(),
            store_sessions: Gauge::default(),
            uptime: FloatGauge::default(),
        };
        metrics.register_all();
        metrics
    }

    fn register_all(&mut self) {
        let r = &mut self.registry;
        r.register(
            "is_leader",
            "1 if this node is the leader",
            self.is_leader.clone(),
        );
        r.register(
            "has_leader",
            "1 if this node knows a leader",
            self.has_leader.clone(),
        );
        r.register("term", "Current Raft term", self.term.clone());
        r.register(
            "leader_changes_seen",
            "Leader changes this node has seen",
            self.leader_changes.clone(),
        );
        r.register(
            "commit_index",
            "Highest log index known committed",
            self.commit_index.clone(),
        );
        r.register(
            "applied_index",
            "Highest log index applied to the store",
            self.applied_index.clone(),
        );
        r.register(
            "last_log_index",
            "Index of the last entry in this node's log",
            self.last_log_index.clone(),
        );
        r.register(
            "snapshot_index",
            "Index of the newest snapshot",
            self.snapshot_index.clone(),
        );
        r.register(
            "proposals_committed",
            "Log entries committed while this node led",
            self.proposals_committed.clone(),
        );
        r.register(
            "proposals_pending",
            "Writes proposed and not yet committed",
            self.proposals_pending.clone(),
        );
        r.register(
            "proposals_failed",
            "Writes answered ERR_INTERNAL (outcome unknown)",
            self.proposals_failed.clone(),
        );
        r.register(
            "reads_lease",
            "Reads served from the leader lease, without a heartbeat round (lease_reads = true)",
            self.reads_lease.clone(),
        );
        r.register(
            "client_requests",
            "Client requests by operation and result",
            self.client_requests.clone(),
        );
        r.register(
            "client_connections",
            "Open client connections",
            self.client_connections.clone(),
        );
        r.register_with_unit(
            "client_request_duration",
            "Time from a request's arrival to its reply",
            Unit::Seconds,
            self.request_duration.clone(),
        );
        r.register_with_unit(
            "wal_sync_duration",
            "Time to write and fdatasync one group commit",
            Unit::Seconds,
            self.wal_sync_duration.clone(),
        );
        r.register_with_unit(
            "wal_written",
            "Bytes of log entries written to the WAL",
            Unit::Bytes,
            self.wal_written_bytes.clone(),
        );
        r.register_with_unit(
            "snapshot_save_duration",
            "Time to serialise and write a snapshot",
            Unit::Seconds,
            self.snapshot_save_duration.clone(),
        );
        r.register_with_unit(
            "snapshot_size",
            "Size of the newest snapshot taken",
            Unit::Bytes,
            self.snapshot_size_bytes.clone(),
        );
        r.register_with_unit(
            "snapshot_send_duration",
            "Time to stream a snapshot to a follower",
            Unit::Seconds,
            self.snapshot_send_duration.clone(),
        );
        r.register_with_unit(
            "snapshot_sent",
            "Snapshot bytes streamed to followers",
            Unit::Bytes,
            self.snapshot_sent_bytes.clone(),
        );
        r.register_with_unit(
            "snapshot_install_duration",
            "Time to receive a snapshot from the leader",
            Unit::Seconds,
            self.snapshot_install_duration.clone(),
        );
        r.register_with_unit(
            "snapshot_received",
            "Snapshot bytes received from the leader",
            Unit::Bytes,
            self.snapshot_received_bytes.clone(),
        );
        r.register(
            "peer_match_lag_entries",
            "Entries a follower is behind the leader's log (leader only)",
            self.peer_match_lag.clone(),
        );
        r.register_with_unit(
            "peer_replication_round_trip",
            "Leader only: from sending an Append to its acknowledgement (follower fsync included)",
            Unit::Seconds,
            self.peer_round_trip.clone(),
        );
        r.register(
            "peer_sent_messages",
            "Raft messages sent to each peer",
            self.peer_sent_messages.clone(),
        );
        r.register_with_unit(
            "peer_sent",
            "Bytes of frames sent to each peer",
            Unit::Bytes,
            self.peer_sent_bytes.clone(),
        );
        r.register(
            "peer_received_messages",
            "Raft messages received from each peer",
            self.peer_received_messages.clone(),
        );
        r.register_with_unit(
            "peer_received",
            "Bytes of frames received from each peer",
            Unit::Bytes,
            self.peer_received_bytes.clone(),
        );
        r.register(
            "peer_dropped_messages",
            "Messages to each peer dropped (queue full, peer down)",
            self.peer_dropped_messages.clone(),
        );
        r.register_with_unit(
            "disk",
            "Bytes of WAL segments and snapshots on disk",
            Unit::Bytes,
            self.disk_bytes.clone(),
        );
        r.register("store_keys", "Keys in the store", self.store_keys.clone());
        r.register_with_unit(
            "store",
            "Bytes of keys and values in the store",
            Unit::Bytes,
            self.store_bytes.clone(),
        );
        r.register(
            "store_sessions",
            "Client sessions open (exactly-once writes)",
            self.store_sessions.clone(),
        );
        r.register_with_unit(
            "uptime",
            "Time since the node started",
            Unit::Seconds,
            self.uptime.clone(),
        );
    }

    /// The registry in the OpenMetrics text format (which Prometheus scrapes).
    pub fn encode(&self) -> String {
        let mut text = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// The counters of traffic with peer `id`.
    pub fn peer(&self, id: u64) -> PeerCounters {
        let labels = PeerLabels { peer: id };
        PeerCounters {
            sent_messages: self.peer_sent_messages.get_or_create(&labels).clone(),
            sent_bytes: self.peer_sent_bytes.get_or_create(&labels).clone(),
            received_messages: self.peer_received_messages.get_or_create(&labels).clone(),
            received_bytes: self.peer_received_bytes.get_or_create(&labels).clone(),
            dropped_messages: self.peer_dropped_messages.get_or_create(&labels).clone(),
        }
    }

    /// The handles one connection uses for a request kind.
    pub fn request_handles(&self, op: OpKind) -> RequestHandles {
        let outcome = |result| {
            self.client_requests
                .get_or_create(&RequestLabels { op, result })
                .clone()
        };
        RequestHandles {
            duration: self
                .request_duration
                .get_or_create(&OpLabels { op })
                .clone(),
            outcomes: [
                outcome(Outcome::ok),
                outcome(Outcome::not_found),
                outcome(Outcome::version_mismatch),
                outcome(Outcome::redirect),
                outcome(Outcome::bad_request),
                outcome(Outcome::error),
                outcome(Outcome::session_error),
            ],
        }
    }
}

/// Pre-created counters of one peer's traffic.
#[derive(Clone, Debug, Default)]
pub struct PeerCounters {
    pub sent_messages: Counter,
    pub sent_bytes: Counter,
    pub received_messages: Counter,
    pub received_bytes: Counter,
    pub dropped_messages: Counter,
}

/// Pre-created handles for one request kind.
#[derive(Clone, Debug)]
pub struct RequestHandles {
    pub duration: Histogram,
    outcomes: [Counter; 7],
}

impl RequestHandles {
    pub fn count(&self, outcome: Outcome) -> &Counter {
        &self.outcomes[outcome as usize]
    }
}

/// The handles for one request kind each, indexed by [`OpKind`].
#[derive(Clone, Debug)]
pub struct AllRequestHandles(pub [RequestHandles; OpKind::ALL.len()]);

impl AllRequestHandles {
    pub fn new(metrics: &Metrics) -> AllRequestHandles {
        AllRequestHandles(OpKind::ALL.map(|op| metrics.request_handles(op)))
    }

    pub fn of(&self, op: OpKind) -> &RequestHandles {
        &self.0[op as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let metrics = Metrics::new();
        let handles = AllRequestHandles::new(&metrics);
        handles.of(OpKind::set).count(Outcome::ok).inc();
        handles.of(OpKind::get).duration.observe(0.001);
        metrics.wal_written_bytes.inc_by(10);
        let text = metrics.encode();
        for needle in [
            "raftkv_is_leader 0",
            "raftkv_client_requests_total{op=\"set\",result=\"ok\"} 1",
            "raftkv_client_request_duration_seconds_bucket{le=",
            "raftkv_wal_written_bytes_total 10",
            "# EOF",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
    }

    #[test]
    fn every_request_kind_has_its_handles() {
        let handles = AllRequestHandles::new(&Metrics::new());
        for (index, op) in OpKind::ALL.into_iter().enumerate() {
            assert_eq!(op as usize, index);
            handles.of(op).count(Outcome::ok).inc();
        }
    }
}

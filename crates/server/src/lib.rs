//! # raftkv-server: the node runtime
//!
//! This crate owns everything a running node does with the outside world: the tokio runtime's tasks,
//! the peer transport ([`transport`], [`wire`]), the client listener ([`listener`], [`connection`]),
//! the disk thread that makes the replica's persist jobs durable ([`persist`]) and the node loop that
//! drives the replica ([`node`]). It is the only crate that touches sockets, signals and the wall clock;
//! every decision of the node (consensus, the store, client requests in progress, expiry, snapshots)
//! is made by `raftkv-replica`, the same code the simulator runs; the consensus rules live in
//! `raftkv-raft`, the protocol and state machine in `raftkv-kv`, and the on-disk formats in
//! `raftkv-wal`. Nothing depends on this crate but the binary.
//!
//! The path of a write: a connection parses `set`, the replica stamps it with the wall clock, encodes
//! it and proposes it; the Ready that carries the new entry sends it to the followers at once and hands
//! it to the disk thread (group commit); once a majority (the leader counting only after its own
//! fdatasync) holds it, it is committed, applied to the store, and the reply goes back to the
//! connection, which writes replies in request order. A read goes through ReadIndex instead: no log
//! write, one heartbeat round shared by every read that arrived meanwhile.

mod background;
mod bootstrap;
pub mod config;
pub mod connection;
pub mod http;
pub mod listener;
pub mod metrics;
pub mod node;
pub mod persist;
pub mod redis;
pub mod reply_budget;
pub mod request;
pub mod restore;
mod round_trips;
pub mod snapshot_stream;
pub mod status;
mod sync;
pub mod tls;
pub mod transport;
pub mod wire;

use std::time::Instant;

use anyhow::Context;
use raftkv_wal::{Wal, WalOptions};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::config::ClusterConfig;
use crate::node::NodeLoop;
use crate::persist::Durable;

/// Client requests queued for the node loop before connections feel back-pressure.
const REQUEST_QUEUE_DEPTH: usize = 8192;
/// Frames of peer messages queued for the node loop before peer readers feel back-pressure.
const INBOUND_QUEUE_DEPTH: usize = 1024;

/// Runs node `id` of `config` until SIGTERM or SIGINT (after a graceful handover) or a fatal error.
pub async fn run_node(config: ClusterConfig, id: u64) -> anyhow::Result<()> {
    run_node_with(config, id, false).await
}

/// [`run_node`], first turning the node's data into a one-voter cluster if `force_new_cluster` (see
/// [`restore::force_new_cluster`]): a last resort after the loss of a majority.
pub async fn run_node_with(
    config: ClusterConfig,
    id: u64,
    force_new_cluster: bool,
) -> anyhow::Result<()> {
    let options = StartOptions {
        force_new_cluster,
        join: None,
    };
    run_node_opts(config, id, options).await
}

/// How a node starts besides its configuration.
#[derive(Clone, Debug, Default)]
pub struct StartOptions {
    /// See [`run_node_with`].
    pub force_new_cluster: bool,
    /// The node joins an existing cluster (`raftkv server --join`) instead of bootstrapping one from
    /// the file: with an empty data directory it knows no membership and waits for the leader. The
    /// list holds the members' peer addresses as the cluster reported them, so that it can answer the
    /// leader before the membership reaches its log.
    pub join: Option<Vec<(u64, String)>>,
}

/// [`run_node`] with every start option.
pub async fn run_node_opts(
    config: ClusterConfig,
    id: u64,
    options: StartOptions,
) -> anyhow::Result<()> {
    let force_new_cluster = options.force_new_cluster;
    let me = config
        .node(id)
        .with_context(|| format!("node {id} is not in the config"))?
        .clone();
    if force_new_cluster {
        let dir = me.data_dir.clone();
        let index = tokio::task::spawn_blocking(move || restore::force_new_cluster(&dir, id))
            .await
            .context("--force-new-cluster panicked")??;
        warn!(
            node = id,
            index,
            "--force-new-cluster: this node is now a cluster of one voter, holding every entry of its \
             log up to {index}; the other members are no longer part of it"
        );
    }
    let started = Instant::now();
    let data_dir = me.data_dir.clone();
    let bootstrap = options
        .join
        .is_none()
        .then(|| bootstrap::address_book(&config));
    let skip_fsync = config.tunables.unsafe_skip_fsync;
    if skip_fsync && std::env::var("RAFTKV_ALLOW_UNSAFE_SKIP_FSYNC").as_deref() != Ok("1") {
        anyhow::bail!(
            "unsafe_skip_fsync is a test-only switch that acknowledges writes before they are on \
             disk; it also needs RAFTKV_ALLOW_UNSAFE_SKIP_FSYNC=1 in the environment"
        );
    }
    if skip_fsync {
        warn!(
            node = id,
            "unsafe_skip_fsync is on: writes are acknowledged before they are on disk, and a power \
             loss loses them. This switch exists for tests only"
        );
    }
    let (wal, initial, stats) = tokio::task::spawn_blocking(move || {
        let fs: std::sync::Arc<dyn raftkv_wal::fs::Fs> = if skip_fsync {
            std::sync::Arc::new(raftkv_wal::fs::UnsyncedFs)
        } else {
            std::sync::Arc::new(raftkv_wal::fs::RealFs)
        };
        let (mut wal, mut initial, stats) = Wal::open_with_fs(fs, &data_dir, wal_options())?;
        if let Some(book) = bootstrap.filter(|_| raftkv_replica::is_fresh(&initial)) {
            bootstrap::write(&mut wal, &mut initial, &book)?;
        }
        Ok::<_, raftkv_wal::WalError>((wal, initial, stats))
    })
    .await
    .context("storage recovery panicked")?
    .with_context(|| format!("cannot open data directory {}", me.data_dir.display()))?;
    info!(
        node = id,
        entries = stats.entries,
        segments = stats.segments,
        snapshot_index = initial.snapshot.as_ref().map_or(0, |s| s.meta.index),
        term = initial.hard_state.term,
        commit = initial.hard_state.commit,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "recovered from disk"
    );
    let mut raft = raft_config(&config, id);
    if options.join.is_some() {
        // A joining node's membership comes only from the cluster's log.
        raft.voters.clear();
    }
    let replica_config = raftkv_replica::ReplicaConfig {
        raft,
        client_addrs: config
            .nodes
            .iter()
            .map(|node| (node.id, node.client_addr.clone()))
            .collect(),
        peer_addrs: config
            .nodes
            .iter()
            .map(|node| (node.id, node.peer_addr.clone()))
            .collect(),
        promote_max_lag: raftkv_replica::DEFAULT_PROMOTE_MAX_LAG,
        auto_remove_after_ms: config.tunables.auto_remove_after_s.saturating_mul(1000),
        leader_wait_ms: config.tunables.election_timeout_ms * 2,
        snapshot_entries: config.tunables.snapshot_entries,
        snapshot_bytes: config.tunables.snapshot_bytes,
        session_limits: raftkv_kv::SessionLimits::DEFAULT,
        tick_ms: config.tunables.tick_ms,
        mutation: None,
        record_applied: false,
    };
    let replica = raftkv_replica::Replica::new(replica_config, initial)
        .context("the newest snapshot does not decode")?;
    bootstrap::report_file_disagreement(&config, replica.raft().membership());

    let tls = tls::NodeTls::load(&config, id)?;
    if tls.peer.is_none() {
        warn!(
            node = id,
            "peer TLS is off: anyone who can reach {} and knows the cluster id can speak for a node; \
             see docs/security.md",
            me.peer_addr
        );
    }
    let metrics = std::sync::Arc::new(metrics::Metrics::new());
    let members = status::members(&config);
    let (status_tx, status_rx) = watch::channel(status::NodeStatus::default());
    let http_listener = match &me.http_addr {
        Some(addr) => Some(
            TcpListener::bind(me.bind_addr(addr))
                .await
                .with_context(|| format!("cannot listen for HTTP on http_addr {addr}"))?,
        ),
        None => None,
    };
    let listener = TcpListener::bind(me.bind_addr(&me.client_addr))
        .await
        .with_context(|| format!("cannot listen for clients on {}", me.client_addr))?;
    let resp_listener = match &me.resp_addr {
        Some(addr) => Some(
            TcpListener::bind(me.bind_addr(addr))
                .await
                .with_context(|| format!("cannot listen for Redis clients on resp_addr {addr}"))?,
        ),
        None => None,
    };
    let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_QUEUE_DEPTH);
    let transport =
        transport::Transport::start(&config, id, inbound_tx, tls.peer.clone(), metrics.clone())
            .await?;
    let (persist_tx, persist_rx) = mpsc::channel(persist::QUEUE_DEPTH);
    let (durable_tx, durable_rx) = watch::channel(Durable::default());
    let snapshot_writer = wal.snapshot_writer();
    let disk_thread = persist::spawn(
        wal,
        persist_rx,
        transport.clone(),
        durable_tx,
        metrics.clone(),
    )
    .context("cannot start the storage thread")?;

    let (requests_tx, requests_rx) = mpsc::channel(REQUEST_QUEUE_DEPTH);
    // The same limit as for buffered requests, counted separately.
    let reply_budget = reply_budget::ReplyBudget::new(config.tunables.max_buffered_request_bytes);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let limits = connection::Limits {
        max_value_size: config.tunables.max_value_size,
        max_bytes_in_flight: config.tunables.max_request_bytes_in_flight,
        request_timeout: std::time::Duration::from_secs(config.tunables.client_request_timeout_s),
        node_budget: std::sync::Arc::new(tokio::sync::Semaphore::new(
            config
                .tunables
                .max_buffered_request_bytes
                .min(tokio::sync::Semaphore::MAX_PERMITS),
        )),
        node_budget_bytes: config.tunables.max_buffered_request_bytes,
        reply_budget: reply_budget.clone(),
        backup_slot: std::sync::Arc::new(tokio::sync::Semaphore::new(1)),
        metrics: metrics.clone(),
        requests: metrics::AllRequestHandles::new(&metrics),
        idle_timeout: (config.tunables.client_idle_timeout_s > 0)
            .then(|| std::time::Duration::from_secs(config.tunables.client_idle_timeout_s)),
    };
    if let Some(resp_listener) = resp_listener {
        info!(node = id, addr = ?resp_listener.local_addr().ok(), "Redis port listening");
        let ctx = redis::Context {
            id,
            node: requests_tx.clone(),
            status: status_rx.clone(),
            limits: limits.clone(),
            node_budget_permits: config
                .tunables
                .max_buffered_request_bytes
                .min(u32::MAX as usize) as u32,
            resp_addrs: config
                .nodes
                .iter()
                .filter_map(|node| Some((node.id, node.resp_addr.clone()?)))
                .collect(),
            leader_wait: std::time::Duration::from_millis(config.tunables.election_timeout_ms * 4),
            port: resp_listener.local_addr().map_or(0, |addr| addr.port()),
            max_connections: config.tunables.max_connections,
            stats: redis::PortStats::default(),
            tls: tls.clients.clone(),
            relay_tls: tls.relay.clone(),
        };
        tokio::spawn(redis::accept(
            resp_listener,
            std::sync::Arc::new(ctx),
            config.tunables.max_connections,
            shutdown_rx.clone(),
        ));
    }
    let accept = tokio::spawn(listener::accept_clients(
        listener,
        requests_tx,
        config.tunables.max_connections,
        limits,
        tls.clients.clone(),
        shutdown_rx.clone(),
    ));
    tokio::spawn(tls.watch(shutdown_rx.clone()));
    let digest_requests = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    if let Some(http_listener) = http_listener {
        info!(node = id, addr = ?http_listener.local_addr().ok(), "HTTP endpoint listening");
        tokio::spawn(http::serve(
            http_listener,
            metrics.clone(),
            status_rx,
            digest_requests.clone(),
            shutdown_rx.clone(),
        ));
    }
    tokio::spawn(listener::forward_signals(shutdown_tx));
    info!(node = id, clients = %me.client_addr, peers = %me.peer_addr, "serving");

    let node = NodeLoop {
        replica,
        reply_budget,
        tick: std::time::Duration::from_millis(config.tunables.tick_ms),
        transport: transport.clone(),
        persist: persist_tx,
        durable: durable_rx,
        inbound: inbound_rx,
        requests: requests_rx,
        shutdown: shutdown_rx,
        snapshots: mpsc::channel(1),
        snapshot_writer,
        started,
        metrics,
        status: status_tx,
        digest_requests,
        members,
        round_trips: Default::default(),
        cluster_id: config.cluster_id.clone(),
        join_peers: options.join.clone().unwrap_or_default(),
    };
    let result = node.run().await;
    accept.abort();
    transport.shutdown();
    // The node loop dropped its side of the disk queue: the thread finishes what it has and stops.
    let _ = tokio::task::spawn_blocking(move || disk_thread.join()).await;
    info!(node = id, "stopped");
    result
}

/// Segments small enough that compaction after a snapshot frees disk space in useful steps.
pub(crate) fn wal_options() -> WalOptions {
    WalOptions {
        segment_bytes: 8 << 20,
        defer_deletes: true,
    }
}

fn raft_config(config: &ClusterConfig, id: u64) -> raftkv_raft::Config {
    let t = &config.tunables;
    let mut raft = raftkv_raft::Config::new(id, config.node_ids());
    raft.election_ticks = (t.election_timeout_ms / t.tick_ms).max(2) as u32;
    raft.heartbeat_ticks = (t.heartbeat_ms / t.tick_ms).max(1) as u32;
    raft.lease_reads = t.lease_reads;
    // The core's only randomness is election jitter; any seed that differs between nodes and runs will do.
    raft.seed = node::wall_clock_ms()
        ^ (u64::from(std::process::id()) << 32)
        ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    raft
}

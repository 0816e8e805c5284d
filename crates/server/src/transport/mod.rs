//! Peer transport: the [`Transport`] handle that carries Raft messages between the nodes of one cluster
//! over persistent TCP connections.
//!
//! Each node listens on its `peer_addr` and dials every other node. Traffic is one-directional per
//! connection: the dialler's writer task sends, the acceptor's reader task receives. So a node has one
//! outgoing connection per peer, owned by that peer's writer task, and one incoming connection per peer.
//!
//! Guarantees the node relies on:
//! - [`Transport::send`] never blocks and never waits for the network. Each peer has its own bounded queue;
//!   when it is full (peer slow or down) the message is dropped and counted. Raft tolerates loss and
//!   retransmits, so losing a message is always safe, while blocking would let one bad peer stall all.
//! - Inbound messages are delivered decoded, one `Vec` per received frame, into a bounded channel; when the
//!   node is behind, readers wait, which stops reading from the socket and pushes back on the sender.
//! - Only nodes of the same cluster, known by id, speaking the same protocol version get through the
//!   handshake; anything else is logged and disconnected. Any node id of the cluster is admitted, not
//!   only the members this node knows: a node that missed a membership change (it was down, or is
//!   joining) must still hear from a leader it has never heard of. The dialler's handshake names its
//!   peer address, so the answers can go back. With TLS the peer must hold a certificate for the id it
//!   claims; without, the cluster id is all that is checked (see `docs/security.md`).
//! - Messages go to the members of the current membership ([`Transport::set_peers`]), and to nodes
//!   that connected to this one with their address.
//!
//! - An `InstallSnapshot` does not use the peer's queue or message connection: it goes to that peer's
//!   snapshot sender, which streams it on a connection of its own (see [`crate::snapshot_stream`]), so a
//!   snapshot of hundreds of MiB neither delays heartbeats and appends nor gets copied into a frame. The
//!   receiver delivers it, checked and whole, as a batch of one message.
//!
//! Framing: `len u32 LE | crc32c u32 LE | payload[len]` (see `framing`). A data frame's payload is one
//! or more messages back to back (see [`crate::wire`]); the first frame in each direction of a connection
//! is a [`Handshake`].
//!
//! Where things live: `framing` (frames), `handshake` (the first frame each way) and `dial` (outbound
//! connections) depend on nothing else in the transport, so [`crate::snapshot_stream`] uses them without
//! depending back on this module; `writer` runs the sending task per peer, `accept` the acceptor and its
//! readers. This module only wires them together behind [`Transport`].

mod accept;
pub(crate) mod dial;
pub(crate) mod framing;
mod handshake;
mod writer;

pub use framing::{decode_frame, encode_batch, encode_frame, FRAME_HEADER_LEN, MAX_FRAME_BYTES};

use crate::config::ClusterConfig;
use crate::metrics::Metrics;
use crate::snapshot_stream::{SnapshotSender, SnapshotSlot};
use crate::sync::lock;
use crate::wire::{Handshake, StreamKind, PROTOCOL_VERSION};
use accept::Acceptor;
use anyhow::{anyhow, Context};
use raftkv_raft::{Message, MessageBody};
use raftkv_tls::{PeerTls, Reloadable};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};
use writer::PeerWriter;

/// Messages waiting for one peer. Sized above the core's pipelining window (256 in-flight appends plus
/// heartbeats and responses) so normal operation never drops.
pub const PEER_QUEUE_CAPACITY: usize = 1024;

/// The peer address each node that connected to this one gave in its handshake, newest first.
/// Bounded: a node of the cluster has at most a few thousand peers.
#[derive(Default)]
pub(crate) struct LearnedPeers {
    addresses: Mutex<HashMap<u64, String>>,
}

/// Most learned addresses kept; past it, new ones replace nothing (the membership still reaches them).
const MAX_LEARNED_PEERS: usize = 4096;

impl LearnedPeers {
    pub(crate) fn record(&self, id: u64, addr: &str) {
        if addr.is_empty() {
            return;
        }
        let mut addresses = lock(&self.addresses);
        if addresses.len() < MAX_LEARNED_PEERS || addresses.contains_key(&id) {
            addresses.insert(id, addr.to_string());
        }
    }

    fn address(&self, id: u64) -> Option<String> {
        lock(&self.addresses).get(&id).cloned()
    }
}

/// Handle to the running transport. Cheap to clone; every clone talks to the same tasks.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

struct Inner {
    my_id: u64,
    local_addr: SocketAddr,
    /// One queue per peer. Read on every send, written only when the membership changes; never held
    /// across an await.
    peers: RwLock<HashMap<u64, PeerQueue>>,
    learned: Arc<LearnedPeers>,
    /// Where messages this node sends itself are delivered: the inbound queue.
    loopback: mpsc::Sender<Vec<Message>>,
    hello: Handshake,
    tls: Option<Arc<Reloadable<PeerTls>>>,
    metrics: Arc<Metrics>,
    /// Messages addressed to a node that is not in the configuration.
    dropped_unknown: AtomicU64,
    shutdown: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

struct PeerQueue {
    addr: String,
    /// Stops this peer's writer and snapshot sender (when it leaves the membership or moves).
    stop: CancellationToken,
    sender: mpsc::Sender<Message>,
    /// The InstallSnapshot waiting for this peer's snapshot sender.
    snapshots: Arc<SnapshotSlot>,
    dropped: Arc<AtomicU64>,
    /// The same drops, as this peer's metric.
    dropped_metric: prometheus_client::metrics::counter::Counter,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The tasks hold no reference to `Inner`, so without this they would outlive every handle.
        self.shutdown.cancel();
    }
}

impl Transport {
    /// Binds the peer listener on this node's peer_addr (error if the port is taken), accepts peers, and
    /// starts one writer task per other node. Inbound messages (already decoded, batched per frame) go to
    /// `inbound`; when `inbound` is full the reader awaits (back-pressure on that TCP connection).
    ///
    /// With `tls`, every connection in either direction is mutual TLS first, and a peer must hold a
    /// certificate from the CA naming the node id it claims.
    pub async fn start(
        config: &ClusterConfig,
        my_id: u64,
        inbound: mpsc::Sender<Vec<Message>>,
        tls: Option<Arc<Reloadable<PeerTls>>>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Transport> {
        let me = config
            .node(my_id)
            .ok_or_else(|| anyhow!("node {my_id} is not in the cluster configuration"))?;
        let listener = TcpListener::bind(me.bind_addr(&me.peer_addr))
            .await
            .with_context(|| {
                format!(
                    "cannot listen for peers on peer_addr {} of node {my_id}",
                    me.peer_addr
                )
            })?;
        let local_addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let hello = Handshake {
            protocol_version: PROTOCOL_VERSION,
            cluster_id: config.cluster_id.clone(),
            node_id: my_id,
            stream: StreamKind::Messages,
            peer_addr: me.peer_addr.clone(),
        };

        let learned = Arc::new(LearnedPeers::default());
        // A live peer connection gives way to a newcomer claiming the same node only after this long
        // without a frame: long enough for a leader's heartbeats, short enough for a real reconnect.
        let replace_after = std::time::Duration::from_millis(config.tunables.election_timeout_ms);
        let loopback = inbound.clone();
        let acceptor = Acceptor::new(
            hello.clone(),
            learned.clone(),
            inbound,
            replace_after,
            tls.clone(),
            metrics.clone(),
        );
        let tasks = vec![tokio::spawn(acceptor.run(listener, shutdown.clone()))];
        info!(node = my_id, addr = %local_addr, "peer transport listening");
        let transport = Transport {
            inner: Arc::new(Inner {
                my_id,
                local_addr,
                peers: RwLock::new(HashMap::new()),
                learned,
                loopback,
                hello,
                tls,
                metrics,
                dropped_unknown: AtomicU64::new(0),
                shutdown,
                tasks: Mutex::new(tasks),
            }),
        };
        // The cluster file's nodes until the node loop reports the membership in the log.
        let peers: Vec<(u64, String)> = config
            .nodes
            .iter()
            .map(|node| (node.id, node.peer_addr.clone()))
            .collect();
        transport.set_peers(&peers);
        Ok(transport)
    }

    /// Queues a message for its `to` node. Never blocks: if that peer's bounded queue is full (peer slow or
    /// down), the message is dropped (Raft retransmits) and a counter is bumped. An `InstallSnapshot` goes
    /// to the peer's snapshot sender instead, replacing any snapshot still waiting there.
    pub fn send(&self, msg: Message) {
        if msg.to == self.inner.my_id {
            // A sole voter's own vote, after its disk (the core's only message to itself). Lost if the
            // node loop is behind, like any message: the election then times out and runs again.
            let _ = self.inner.loopback.try_send(vec![msg]);
            return;
        }
        let Some(msg) = self.offer(msg) else {
            return;
        };
        // Not a peer yet: a node that contacted us with its address may become one.
        self.start_learned_peer(msg.to);
        if let Some(msg) = self.offer(msg) {
            self.inner.dropped_unknown.fetch_add(1, Ordering::Relaxed);
            debug!(
                node = self.inner.my_id,
                to = msg.to,
                "dropping message to a node outside the cluster"
            );
        }
    }

    /// Queues `msg` for its peer, or hands it back if `msg.to` is not a peer.
    fn offer(&self, msg: Message) -> Option<Message> {
        let peers = self
            .inner
            .peers
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(peer) = peers.get(&msg.to) else {
            return Some(msg);
        };
        if let MessageBody::InstallSnapshot { .. } = msg.body {
            if peer.snapshots.offer(msg) {
                peer.dropped.fetch_add(1, Ordering::Relaxed);
                peer.dropped_metric.inc();
            }
            return None;
        }
        if peer.sender.try_send(msg).is_err() {
            peer.dropped.fetch_add(1, Ordering::Relaxed);
            peer.dropped_metric.inc();
        }
        None
    }

    /// Starts sending to `id` if it connected to us with its address (it is not in the membership this
    /// node knows, yet talks to it: a leader this node has not heard of, or a node being added).
    fn start_learned_peer(&self, id: u64) {
        let Some(addr) = self.inner.learned.address(id) else {
            return;
        };
        let mut peers = self
            .inner
            .peers
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let std::collections::hash_map::Entry::Vacant(slot) = peers.entry(id) {
            info!(node = self.inner.my_id, peer = id, %addr, "sending to a node that contacted us");
            slot.insert(self.start_peer(id, addr));
        }
    }

    /// Makes `peers` (id and peer address of every other member) the nodes this one sends to: starts a
    /// writer and a snapshot sender for each new one, stops those of nodes that left, and restarts
    /// those whose address changed.
    pub fn set_peers(&self, peers: &[(u64, String)]) {
        let inner = &self.inner;
        let wanted: HashMap<u64, &String> = peers
            .iter()
            .filter(|(id, _)| *id != inner.my_id)
            .map(|(id, addr)| (*id, addr))
            .collect();
        let mut current = inner
            .peers
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        current.retain(|id, queue| {
            let keep = wanted.get(id).is_some_and(|addr| **addr == queue.addr);
            if !keep {
                info!(
                    node = inner.my_id,
                    peer = id,
                    "no longer sending to this peer"
                );
                queue.stop.cancel();
            }
            keep
        });
        for (id, addr) in wanted {
            if let std::collections::hash_map::Entry::Vacant(slot) = current.entry(id) {
                info!(node = inner.my_id, peer = id, %addr, "sending to this peer");
                slot.insert(self.start_peer(id, addr.clone()));
            }
        }
    }

    /// Starts the writer and the snapshot sender of peer `id` at `addr`.
    fn start_peer(&self, id: u64, addr: String) -> PeerQueue {
        let inner = &self.inner;
        let stop = inner.shutdown.child_token();
        let (sender, queue) = mpsc::channel(PEER_QUEUE_CAPACITY);
        let dropped = Arc::new(AtomicU64::new(0));
        let writer = PeerWriter {
            peer_id: id,
            peer_addr: addr.clone(),
            hello: inner.hello.clone(),
            tls: inner.tls.clone(),
            counters: inner.metrics.peer(id),
            queue,
            dropped: dropped.clone(),
            shutdown: stop.clone(),
        };
        let snapshots = Arc::new(SnapshotSlot::default());
        let snapshot_sender = SnapshotSender {
            peer_id: id,
            peer_addr: addr.clone(),
            hello: Handshake {
                stream: StreamKind::Snapshot,
                ..inner.hello.clone()
            },
            tls: inner.tls.clone(),
            metrics: inner.metrics.clone(),
            slot: snapshots.clone(),
            dropped: dropped.clone(),
            shutdown: stop.clone(),
        };
        let mut tasks = lock(&inner.tasks);
        tasks.retain(|task| !task.is_finished());
        tasks.push(tokio::spawn(writer.run()));
        tasks.push(tokio::spawn(snapshot_sender.run()));
        PeerQueue {
            addr,
            stop,
            sender,
            snapshots,
            dropped,
            dropped_metric: inner.metrics.peer(id).dropped_messages,
        }
    }

    /// Stops every task. Returns at once; [`Transport::closed`] waits for the tasks to finish.
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }

    /// Waits until every task has stopped and the listener is closed (after [`Transport::shutdown`]).
    pub async fn closed(&self) {
        let tasks = std::mem::take(&mut *lock(&self.inner.tasks));
        for task in tasks {
            let _ = task.await;
        }
    }

    /// The address the peer listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Messages dropped so far: queue full, peer down, unknown destination, or too big to send.
    pub fn dropped_messages(&self) -> u64 {
        let per_peer: u64 = self
            .inner
            .peers
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .values()
            .map(|peer| peer.dropped.load(Ordering::Relaxed))
            .sum();
        per_peer + self.inner.dropped_unknown.load(Ordering::Relaxed)
    }
}

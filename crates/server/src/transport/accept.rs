//! Inbound peer connections: the acceptor checks each dialler's handshake, then runs one reader per
//! connection (message stream or snapshot stream), keeping at most one live reader of each kind per peer.

use super::framing::{decode_frame, read_frame, MAX_FRAME_BYTES};
use super::handshake::{read_handshake, write_handshake};
use super::lock;
use super::LearnedPeers;
use crate::metrics::Metrics;
use crate::snapshot_stream::{receive_snapshot, MAX_SNAPSHOT_BYTES};
use crate::wire::{Handshake, StreamKind, PROTOCOL_VERSION};
use anyhow::{anyhow, bail};
use bytes::BytesMut;
use raftkv_raft::Message;
use raftkv_tls::{check_peer_is_node, PeerTls, Reloadable, Stream};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Most simultaneous inbound connections past their handshake; a legitimate cluster needs two per peer
/// (messages and a snapshot stream), briefly more while a peer reconnects.
const MAX_INBOUND_CONNECTIONS: usize = 256;
/// Most connections still in their handshake. Past it the oldest is dropped: a real peer completes its
/// handshake within a round trip of connecting, so a crowd of strangers that never finish theirs cannot
/// keep it out (they would have to open this many connections within that round trip).
const MAX_PENDING_HANDSHAKES: usize = 32;
/// How long a dialler has to complete its handshake here.
const INBOUND_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// Accepts peer connections and runs one reader per connection.
pub(super) struct Acceptor {
    hello: Handshake,
    learned: Arc<LearnedPeers>,
    inbound: mpsc::Sender<Vec<Message>>,
    /// The live reader per peer, so a reconnecting peer replaces its stale connection at once instead of
    /// leaving it to time out.
    readers: Mutex<HashMap<u64, (u64, CancellationToken)>>,
    /// The same for snapshot streams: at most one per peer, the newest (so at most one partial snapshot
    /// per peer is ever buffered).
    snapshot_readers: Mutex<HashMap<u64, (u64, CancellationToken)>>,
    next_generation: AtomicU64,
    max_snapshot_bytes: u64,
    /// Connections in their handshake, oldest first, each with the token that drops it.
    pending: Mutex<VecDeque<(u64, CancellationToken)>>,
    /// When each peer's live message connection last delivered a frame (ms since `started`).
    last_heard: Mutex<HashMap<u64, Arc<AtomicU64>>>,
    /// A live message connection that delivered a frame this recently is not replaced by a second one
    /// claiming the same node: only a connection gone quiet (its peer restarted, or the path broke)
    /// gives way to a newcomer.
    replace_after: Duration,
    started: Instant,
    /// Peer mutual TLS, when the cluster uses it.
    tls: Option<Arc<Reloadable<PeerTls>>>,
    metrics: Arc<Metrics>,
}

impl Acceptor {
    /// An acceptor answering with `hello` (this node's handshake) to the nodes in `known_peers`, and
    /// delivering what they send to `inbound`.
    pub(super) fn new(
        hello: Handshake,
        learned: Arc<LearnedPeers>,
        inbound: mpsc::Sender<Vec<Message>>,
        replace_after: Duration,
        tls: Option<Arc<Reloadable<PeerTls>>>,
        metrics: Arc<Metrics>,
    ) -> Acceptor {
        Acceptor {
            hello,
            learned,
            inbound,
            readers: Mutex::new(HashMap::new()),
            snapshot_readers: Mutex::new(HashMap::new()),
            next_generation: AtomicU64::new(0),
            max_snapshot_bytes: MAX_SNAPSHOT_BYTES,
            pending: Mutex::new(VecDeque::new()),
            last_heard: Mutex::new(HashMap::new()),
            replace_after,
            started: Instant::now(),
            tls,
            metrics,
        }
    }

    pub(super) async fn run(self, listener: TcpListener, shutdown: CancellationToken) {
        let this = Arc::new(self);
        let limit = Arc::new(Semaphore::new(MAX_INBOUND_CONNECTIONS));
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = listener.accept() => match accepted {
                    Ok((stream, remote)) => {
                        let this = this.clone();
                        let shutdown = shutdown.clone();
                        let limit = limit.clone();
                        connections.spawn(async move {
                            this.serve(stream, remote, shutdown, limit).await;
                        });
                    }
                    Err(err) => {
                        // Typically out of file descriptors: back off rather than spin.
                        warn!("accepting a peer connection failed: {err}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        drop(listener);
        connections.shutdown().await;
    }

    async fn serve(
        &self,
        tcp: TcpStream,
        remote: SocketAddr,
        shutdown: CancellationToken,
        limit: Arc<Semaphore>,
    ) {
        let me = self.hello.node_id;
        let _ = tcp.set_nodelay(true);
        let mut buf = BytesMut::new();
        let ticket = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let evicted = self.enter_handshake(ticket);
        let handshake = tokio::time::timeout(
            INBOUND_HANDSHAKE_TIMEOUT,
            self.handshake(tcp, &mut buf, &limit),
        );
        let outcome = tokio::select! {
            _ = evicted.cancelled() => Err(anyhow!("dropped: too many connections in their handshake")),
            done = handshake => done.unwrap_or_else(|_| Err(anyhow!("handshake timed out"))),
        };
        self.leave_handshake(ticket);
        let (peer_id, kind, _permit, mut stream) = match outcome {
            Ok((hello, permit, stream)) => (hello.node_id, hello.stream, permit, stream),
            Err(err) => {
                warn!(node = me, %remote, "rejected peer connection: {err:#}");
                return;
            }
        };
        let registry = match kind {
            StreamKind::Messages => {
                info!(node = me, peer = peer_id, %remote, "peer connected");
                &self.readers
            }
            StreamKind::Snapshot => {
                debug!(node = me, peer = peer_id, %remote, "snapshot stream opened");
                &self.snapshot_readers
            }
        };

        let generation = ticket;
        let connection = shutdown.child_token();
        if let Some((_, stale)) = lock(registry).insert(peer_id, (generation, connection.clone())) {
            stale.cancel();
        }
        let outcome = match kind {
            StreamKind::Messages => {
                let heard = Arc::new(AtomicU64::new(self.elapsed_ms()));
                lock(&self.last_heard).insert(peer_id, heard.clone());
                self.receive(&mut stream, &mut buf, peer_id, &connection, &heard)
                    .await
            }
            StreamKind::Snapshot => {
                let received = receive_snapshot(
                    &mut stream,
                    &mut buf,
                    peer_id,
                    me,
                    self.max_snapshot_bytes,
                    &self.inbound,
                    &self.metrics,
                );
                tokio::select! {
                    _ = connection.cancelled() => Err(anyhow!("replaced by a newer snapshot stream or shut down")),
                    received = received => received,
                }
            }
        };
        {
            let mut registry = lock(registry);
            if registry
                .get(&peer_id)
                .is_some_and(|(current, _)| *current == generation)
            {
                registry.remove(&peer_id);
            }
        }
        if kind == StreamKind::Snapshot {
            if let Err(err) = outcome {
                warn!(node = me, peer = peer_id, "snapshot not received: {err:#}");
            }
            return;
        }
        match outcome {
            Ok(()) => info!(node = me, peer = peer_id, "peer disconnected"),
            Err(err) => warn!(node = me, peer = peer_id, "peer disconnected: {err:#}"),
        }
    }

    /// Runs the TLS handshake (with peer TLS on), then checks the dialler's handshake and, if it may
    /// connect, answers it. Returns the dialler's handshake, its share of the connection limit and the
    /// connection. A dialler refused here gets no answer, so it sees a failed connect and backs off.
    async fn handshake(
        &self,
        tcp: TcpStream,
        buf: &mut BytesMut,
        limit: &Arc<Semaphore>,
    ) -> anyhow::Result<(Handshake, OwnedSemaphorePermit, Stream)> {
        let mut stream = match &self.tls {
            None => Stream::from(tcp),
            Some(tls) => {
                let acceptor = TlsAcceptor::from(tls.get().server);
                let tls = acceptor
                    .accept(tcp)
                    .await
                    .map_err(|err| anyhow!("TLS handshake failed: {err}"))?;
                Stream::from(tls)
            }
        };
        let hello = read_handshake(&mut stream, buf)
            .await?
            .ok_or_else(|| anyhow!("closed before the handshake"))?;
        if let Stream::Tls(tls) = &stream {
            // The certificate chains to our CA (the TLS handshake checked); it must also be the
            // certificate of the node the dialler claims to be.
            check_peer_is_node(tls.get_ref().1.peer_certificates(), hello.node_id)
                .map_err(|err| anyhow!("a peer claiming node {}: {err:#}", hello.node_id))?;
        }
        if hello.protocol_version != PROTOCOL_VERSION {
            bail!(
                "protocol version {} (we speak {PROTOCOL_VERSION})",
                hello.protocol_version
            );
        }
        if hello.cluster_id != self.hello.cluster_id {
            bail!(
                "wrong cluster '{}' (we are '{}')",
                hello.cluster_id,
                self.hello.cluster_id
            );
        }
        if hello.node_id == self.hello.node_id {
            bail!("a peer claiming to be this node ({})", hello.node_id);
        }
        if hello.stream == StreamKind::Messages && self.active(hello.node_id) {
            bail!(
                "a second connection claiming node {}: its current one is active",
                hello.node_id
            );
        }
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            bail!("too many peer connections");
        };
        let answer = Handshake {
            stream: hello.stream,
            ..self.hello.clone()
        };
        write_handshake(&mut stream, &answer).await?;
        self.learned.record(hello.node_id, &hello.peer_addr);
        Ok((hello, permit, stream))
    }

    fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Registers a connection entering its handshake; past the limit the oldest one is dropped. The
    /// returned token is cancelled if this one is dropped in turn.
    fn enter_handshake(&self, ticket: u64) -> CancellationToken {
        let token = CancellationToken::new();
        let mut pending = lock(&self.pending);
        pending.push_back((ticket, token.clone()));
        while pending.len() > MAX_PENDING_HANDSHAKES {
            if let Some((_, oldest)) = pending.pop_front() {
                oldest.cancel();
            }
        }
        token
    }

    fn leave_handshake(&self, ticket: u64) {
        lock(&self.pending).retain(|(t, _)| *t != ticket);
    }

    /// Whether `peer_id` has a message connection that delivered a frame within `replace_after`.
    fn active(&self, peer_id: u64) -> bool {
        let live = lock(&self.readers).contains_key(&peer_id);
        let heard = lock(&self.last_heard)
            .get(&peer_id)
            .map(|at| at.load(Ordering::Relaxed));
        live && heard.is_some_and(|at| {
            self.elapsed_ms().saturating_sub(at) < self.replace_after.as_millis() as u64
        })
    }

    /// Forwards frames from `peer_id` until it disconnects, misbehaves, or `connection` is cancelled.
    async fn receive(
        &self,
        stream: &mut Stream,
        buf: &mut BytesMut,
        peer_id: u64,
        connection: &CancellationToken,
        heard: &AtomicU64,
    ) -> anyhow::Result<()> {
        let me = self.hello.node_id;
        let counters = self.metrics.peer(peer_id);
        loop {
            let frame = tokio::select! {
                _ = connection.cancelled() => return Ok(()),
                frame = read_frame(stream, buf, MAX_FRAME_BYTES) => match frame? {
                    Some(frame) => frame,
                    None => return Ok(()),
                },
            };
            heard.store(self.elapsed_ms(), Ordering::Relaxed);
            let frame_len = frame.len();
            let messages = decode_frame(frame)?;
            counters.received_messages.inc_by(messages.len() as u64);
            counters.received_bytes.inc_by(frame_len as u64);
            if let Some(bad) = messages
                .iter()
                .find(|msg| msg.from != peer_id || msg.to != me)
            {
                bail!(
                    "message from {} to {} on the connection of node {peer_id} to node {me}",
                    bad.from,
                    bad.to
                );
            }
            if messages.is_empty() {
                continue;
            }
            tokio::select! {
                _ = connection.cancelled() => return Ok(()),
                sent = self.inbound.send(messages) => {
                    if sent.is_err() {
                        // The node stopped consuming: it is shutting down.
                        return Ok(());
                    }
                }
            }
        }
    }
}

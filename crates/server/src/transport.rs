//! Peer transport: carries Raft messages between the nodes of one cluster over persistent TCP connections.
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
//!   handshake; anything else is logged and disconnected.
//!
//! - An `InstallSnapshot` does not use the peer's queue or message connection: it goes to that peer's
//!   snapshot sender, which streams it on a connection of its own (see [`crate::snapshot_stream`]), so a
//!   snapshot of hundreds of MiB neither delays heartbeats and appends nor gets copied into a frame. The
//!   receiver delivers it, checked and whole, as a batch of one message.
//!
//! Framing: `len u32 LE | crc32c u32 LE | payload[len]`. The CRC is cheap (hardware-assisted) and catches
//! what TCP's 16-bit checksum lets through. A data frame's payload is one or more messages back to back
//! (see [`crate::wire`]); the first frame in each direction of a connection is a [`Handshake`].

use crate::config::ClusterConfig;
use crate::snapshot_stream::{receive_snapshot, SnapshotSender, SnapshotSlot, MAX_SNAPSHOT_BYTES};
use crate::wire::{
    decode_message, encode_message, encoded_len, Handshake, StreamKind, PROTOCOL_VERSION,
};
use anyhow::{anyhow, bail, Context};
use bytes::{BufMut, Bytes, BytesMut};
use raftkv_raft::{Message, MessageBody};
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// Largest frame accepted or sent. Snapshots travel on snapshot streams, but a frame may still carry an
/// `InstallSnapshot` (the format allows it), so the limit stays generous; it still bounds what a confused
/// or hostile peer can make us buffer, and buffers only grow as bytes actually arrive.
pub const MAX_FRAME_BYTES: usize = 1 << 30;

/// Bytes before a frame's payload: length and CRC.
pub const FRAME_HEADER_LEN: usize = 8;

/// Handshakes are tiny; strangers must not make us buffer more than this before proving who they are.
const MAX_HANDSHAKE_BYTES: usize = 1024;

/// Messages waiting for one peer. Sized above the core's pipelining window (256 in-flight appends plus
/// heartbeats and responses) so normal operation never drops.
pub const PEER_QUEUE_CAPACITY: usize = 1024;

/// The writer closes a frame once it holds this many payload bytes, so one huge batch does not delay the
/// first message of the next; a single bigger message still goes alone.
const SOFT_FRAME_BYTES: usize = 1 << 20;

/// Most messages taken from a queue per write.
const MAX_BATCH_MESSAGES: usize = 512;

/// Reads grow the buffer at most this much at a time, so a frame's claimed length costs nothing until
/// its bytes actually arrive.
const READ_CHUNK: usize = 1 << 20;

/// After a snapshot-sized frame, the writer drops its buffer instead of keeping the memory forever.
const KEEP_WRITE_BUFFER_BYTES: usize = 4 << 20;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// A peer that accepts no bytes for this long is treated as dead, so its connection gets re-established.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const MIN_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Most simultaneous inbound connections, legitimate or not; a legitimate cluster needs one per peer
/// (briefly two while a peer reconnects).
const MAX_INBOUND_CONNECTIONS: usize = 256;

/// Handle to the running transport. Cheap to clone; every clone talks to the same tasks.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

struct Inner {
    my_id: u64,
    local_addr: SocketAddr,
    peers: HashMap<u64, PeerQueue>,
    /// Messages addressed to a node that is not in the configuration.
    dropped_unknown: AtomicU64,
    shutdown: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

struct PeerQueue {
    sender: mpsc::Sender<Message>,
    /// The InstallSnapshot waiting for this peer's snapshot sender.
    snapshots: Arc<SnapshotSlot>,
    dropped: Arc<AtomicU64>,
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
    pub async fn start(
        config: &ClusterConfig,
        my_id: u64,
        inbound: mpsc::Sender<Vec<Message>>,
    ) -> anyhow::Result<Transport> {
        let me = config
            .node(my_id)
            .ok_or_else(|| anyhow!("node {my_id} is not in the cluster configuration"))?;
        let listener = TcpListener::bind(&me.peer_addr).await.with_context(|| {
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
        };

        let mut tasks = Vec::new();
        let mut peers = HashMap::new();
        for node in config.nodes.iter().filter(|node| node.id != my_id) {
            let (sender, queue) = mpsc::channel(PEER_QUEUE_CAPACITY);
            let dropped = Arc::new(AtomicU64::new(0));
            let writer = PeerWriter {
                peer_id: node.id,
                peer_addr: node.peer_addr.clone(),
                hello: hello.clone(),
                queue,
                dropped: dropped.clone(),
                shutdown: shutdown.clone(),
            };
            tasks.push(tokio::spawn(writer.run()));
            let snapshots = Arc::new(SnapshotSlot::default());
            let snapshot_sender = SnapshotSender {
                peer_id: node.id,
                peer_addr: node.peer_addr.clone(),
                hello: Handshake {
                    stream: StreamKind::Snapshot,
                    ..hello.clone()
                },
                slot: snapshots.clone(),
                dropped: dropped.clone(),
                shutdown: shutdown.clone(),
            };
            tasks.push(tokio::spawn(snapshot_sender.run()));
            peers.insert(
                node.id,
                PeerQueue {
                    sender,
                    snapshots,
                    dropped,
                },
            );
        }

        let acceptor = Acceptor {
            hello,
            known_peers: config
                .nodes
                .iter()
                .map(|node| node.id)
                .filter(|&id| id != my_id)
                .collect(),
            inbound,
            readers: Mutex::new(HashMap::new()),
            snapshot_readers: Mutex::new(HashMap::new()),
            next_generation: AtomicU64::new(0),
            max_snapshot_bytes: MAX_SNAPSHOT_BYTES,
        };
        tasks.push(tokio::spawn(acceptor.run(listener, shutdown.clone())));
        info!(node = my_id, addr = %local_addr, "peer transport listening");

        Ok(Transport {
            inner: Arc::new(Inner {
                my_id,
                local_addr,
                peers,
                dropped_unknown: AtomicU64::new(0),
                shutdown,
                tasks: Mutex::new(tasks),
            }),
        })
    }

    /// Queues a message for its `to` node. Never blocks: if that peer's bounded queue is full (peer slow or
    /// down), the message is dropped (Raft retransmits) and a counter is bumped. An `InstallSnapshot` goes
    /// to the peer's snapshot sender instead, replacing any snapshot still waiting there.
    pub fn send(&self, msg: Message) {
        let Some(peer) = self.inner.peers.get(&msg.to) else {
            self.inner.dropped_unknown.fetch_add(1, Ordering::Relaxed);
            debug!(
                node = self.inner.my_id,
                to = msg.to,
                "dropping message to a node outside the cluster"
            );
            return;
        };
        if let MessageBody::InstallSnapshot { .. } = msg.body {
            if peer.snapshots.offer(msg) {
                peer.dropped.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        if peer.sender.try_send(msg).is_err() {
            peer.dropped.fetch_add(1, Ordering::Relaxed);
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
            .values()
            .map(|peer| peer.dropped.load(Ordering::Relaxed))
            .sum();
        per_peer + self.inner.dropped_unknown.load(Ordering::Relaxed)
    }
}

/// Poisoning only means another thread panicked mid-update of a plain map; the map is still usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Owns the outgoing connection to one peer and that peer's queue.
struct PeerWriter {
    peer_id: u64,
    peer_addr: String,
    hello: Handshake,
    queue: mpsc::Receiver<Message>,
    dropped: Arc<AtomicU64>,
    shutdown: CancellationToken,
}

/// The transport is stopping (shutdown, or every handle dropped).
struct Stopped;

impl PeerWriter {
    async fn run(mut self) {
        let mut backoff = MIN_BACKOFF;
        let mut reported_unreachable = false;
        let mut buffer = BytesMut::with_capacity(64 * 1024);
        loop {
            let connected = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                result = self.connect() => result,
            };
            match connected {
                Ok(mut stream) => {
                    info!(node = self.hello.node_id, peer = self.peer_id, addr = %self.peer_addr, "connected to peer");
                    backoff = MIN_BACKOFF;
                    reported_unreachable = false;
                    match self.pump(&mut stream, &mut buffer).await {
                        Ok(Stopped) => return,
                        Err(err) => {
                            info!(
                                node = self.hello.node_id,
                                peer = self.peer_id,
                                "disconnected from peer: {err:#}"
                            )
                        }
                    }
                }
                Err(err) => {
                    // A peer that is down would otherwise log every 1 s forever.
                    if reported_unreachable {
                        debug!(
                            node = self.hello.node_id,
                            peer = self.peer_id,
                            "peer still unreachable: {err:#}"
                        );
                    } else {
                        info!(node = self.hello.node_id, peer = self.peer_id, addr = %self.peer_addr,
                            "cannot reach peer, will keep retrying: {err:#}");
                        reported_unreachable = true;
                    }
                }
            }
            if let Err(Stopped) = self.discard_for(jittered(backoff)).await {
                return;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn connect(&self) -> anyhow::Result<TcpStream> {
        dial(&self.peer_addr, &self.hello, self.peer_id).await
    }

    /// Sends queued messages until the connection fails or the transport stops.
    async fn pump(
        &mut self,
        stream: &mut TcpStream,
        buffer: &mut BytesMut,
    ) -> anyhow::Result<Stopped> {
        let (mut reader, mut writer) = stream.split();
        let mut batch = Vec::with_capacity(MAX_BATCH_MESSAGES);
        let mut probe = [0u8; 64];
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(Stopped),
                received = self.queue.recv_many(&mut batch, MAX_BATCH_MESSAGES) => {
                    if received == 0 {
                        return Ok(Stopped);
                    }
                    buffer.clear();
                    let oversized = encode_batch(&batch, buffer);
                    if oversized > 0 {
                        self.dropped.fetch_add(oversized as u64, Ordering::Relaxed);
                        error!(peer = self.peer_id, count = oversized, "dropped messages larger than the frame limit");
                    }
                    batch.clear();
                    if !buffer.is_empty() {
                        tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(buffer))
                            .await
                            .map_err(|_| anyhow!("peer accepted no data for {WRITE_TIMEOUT:?}"))??;
                    }
                    if buffer.capacity() > KEEP_WRITE_BUFFER_BYTES {
                        *buffer = BytesMut::with_capacity(64 * 1024);
                    }
                }
                // The acceptor never sends after the handshake; reading only notices the peer going away
                // while there is nothing to write.
                read = reader.read(&mut probe) => {
                    match read {
                        Ok(0) => bail!("peer closed the connection"),
                        Ok(_) => bail!("peer sent unexpected data"),
                        Err(err) => return Err(err.into()),
                    }
                }
            }
        }
    }

    /// Waits `delay`, throwing away whatever is queued meanwhile: with the peer unreachable those messages
    /// would be stale by the time they arrive, and Raft resends what still matters.
    async fn discard_for(&mut self, delay: Duration) -> Result<(), Stopped> {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        let mut discarded = Vec::new();
        loop {
            tokio::select! {
                _ = &mut sleep => return Ok(()),
                _ = self.shutdown.cancelled() => return Err(Stopped),
                received = self.queue.recv_many(&mut discarded, MAX_BATCH_MESSAGES) => {
                    if received == 0 {
                        return Err(Stopped);
                    }
                    self.dropped.fetch_add(received as u64, Ordering::Relaxed);
                    discarded.clear();
                }
            }
        }
    }
}

/// Connects to `peer_addr` and exchanges handshakes, checking that node `peer_id` of our cluster answers
/// and agrees on what the connection carries (`hello.stream`).
pub(crate) async fn dial(
    peer_addr: &str,
    hello: &Handshake,
    peer_id: u64,
) -> anyhow::Result<TcpStream> {
    let mut stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(peer_addr))
        .await
        .map_err(|_| anyhow!("connect timed out"))??;
    stream.set_nodelay(true)?;
    let exchange = async {
        let mut out = BytesMut::new();
        let mut payload = BytesMut::new();
        hello.encode(&mut payload);
        encode_frame(&payload, &mut out);
        stream.write_all(&out).await?;
        let mut buf = BytesMut::new();
        let frame = read_frame(&mut stream, &mut buf, MAX_HANDSHAKE_BYTES)
            .await?
            .ok_or_else(|| {
                anyhow!("peer closed the connection during the handshake (rejected us?)")
            })?;
        let answer = Handshake::decode(frame)?;
        if answer.protocol_version != PROTOCOL_VERSION
            || answer.cluster_id != hello.cluster_id
            || answer.node_id != peer_id
            || answer.stream != hello.stream
        {
            bail!(
                "unexpected handshake answer: node {} of cluster '{}' speaking version {}",
                answer.node_id,
                answer.cluster_id,
                answer.protocol_version
            );
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow!("handshake timed out"))??;
    Ok(stream)
}

/// Encodes `batch` as as few frames as the soft frame size allows, appended to `out`. Returns how many
/// messages were skipped because they alone exceed [`MAX_FRAME_BYTES`].
pub fn encode_batch(batch: &[Message], out: &mut BytesMut) -> usize {
    let mut oversized = 0;
    let mut open_frame: Option<usize> = None;
    for msg in batch {
        let len = encoded_len(msg);
        if len > MAX_FRAME_BYTES {
            oversized += 1;
            continue;
        }
        // A frame is only open once it holds a message, so a message bigger than the soft limit still
        // gets a frame of its own.
        if let Some(start) = open_frame {
            let payload_len = out.len() - start - FRAME_HEADER_LEN;
            if payload_len + len > SOFT_FRAME_BYTES {
                seal_frame(out, start);
                open_frame = None;
            }
        }
        if open_frame.is_none() {
            open_frame = Some(out.len());
            out.put_bytes(0, FRAME_HEADER_LEN);
        }
        encode_message(msg, out);
    }
    if let Some(start) = open_frame {
        seal_frame(out, start);
    }
    oversized
}

/// Fills in the header reserved at `start` for the payload that follows it.
fn seal_frame(out: &mut BytesMut, start: usize) {
    let payload = &out[start + FRAME_HEADER_LEN..];
    let len = payload.len() as u32;
    let crc = crc32c::crc32c(payload);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Appends one frame carrying `payload`.
pub fn encode_frame(payload: &[u8], out: &mut BytesMut) {
    out.put_u32_le(payload.len() as u32);
    out.put_u32_le(crc32c::crc32c(payload));
    out.put_slice(payload);
}

/// Reads one frame's payload, or `None` on a clean end of stream between frames. `buf` carries bytes
/// read past the frame over to the next call. The payload is split off `buf` without copying, so entry
/// data decoded from it shares the receive buffer.
pub(crate) async fn read_frame(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    max_len: usize,
) -> anyhow::Result<Option<Bytes>> {
    loop {
        let mut wanted = FRAME_HEADER_LEN;
        if buf.len() >= FRAME_HEADER_LEN {
            let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if len > max_len {
                bail!("frame of {len} bytes exceeds the limit of {max_len}");
            }
            wanted = FRAME_HEADER_LEN + len;
            if buf.len() >= wanted {
                let mut frame = buf.split_to(wanted);
                let header = frame.split_to(FRAME_HEADER_LEN);
                let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
                if crc32c::crc32c(&frame) != crc {
                    bail!("frame checksum mismatch");
                }
                return Ok(Some(frame.freeze()));
            }
        }
        buf.reserve((wanted - buf.len()).clamp(4096, READ_CHUNK));
        if stream.read_buf(buf).await? == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            bail!("connection closed in the middle of a frame");
        }
    }
}

/// Accepts peer connections and runs one reader per connection.
struct Acceptor {
    hello: Handshake,
    known_peers: Vec<u64>,
    inbound: mpsc::Sender<Vec<Message>>,
    /// The live reader per peer, so a reconnecting peer replaces its stale connection at once instead of
    /// leaving it to time out.
    readers: Mutex<HashMap<u64, (u64, CancellationToken)>>,
    /// The same for snapshot streams: at most one per peer, the newest (so at most one partial snapshot
    /// per peer is ever buffered).
    snapshot_readers: Mutex<HashMap<u64, (u64, CancellationToken)>>,
    next_generation: AtomicU64,
    max_snapshot_bytes: u64,
}

impl Acceptor {
    async fn run(self, listener: TcpListener, shutdown: CancellationToken) {
        let this = Arc::new(self);
        let limit = Arc::new(Semaphore::new(MAX_INBOUND_CONNECTIONS));
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = listener.accept() => match accepted {
                    Ok((stream, remote)) => match limit.clone().try_acquire_owned() {
                        Ok(permit) => {
                            let this = this.clone();
                            let shutdown = shutdown.clone();
                            connections.spawn(async move {
                                this.serve(stream, remote, shutdown).await;
                                drop(permit);
                            });
                        }
                        Err(_) => warn!(%remote, "too many peer connections; refusing one"),
                    },
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

    async fn serve(&self, mut stream: TcpStream, remote: SocketAddr, shutdown: CancellationToken) {
        let me = self.hello.node_id;
        let _ = stream.set_nodelay(true);
        let mut buf = BytesMut::new();
        let (peer_id, kind) =
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.handshake(&mut stream, &mut buf))
                .await
            {
                Ok(Ok(hello)) => (hello.node_id, hello.stream),
                Ok(Err(err)) => {
                    warn!(node = me, %remote, "rejected peer connection: {err:#}");
                    return;
                }
                Err(_) => {
                    warn!(node = me, %remote, "rejected peer connection: handshake timed out");
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

        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let connection = shutdown.child_token();
        if let Some((_, stale)) = lock(registry).insert(peer_id, (generation, connection.clone())) {
            stale.cancel();
        }
        let outcome = match kind {
            StreamKind::Messages => {
                self.receive(&mut stream, &mut buf, peer_id, &connection)
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

    /// Checks the dialler's handshake and answers it. Returns the dialler's handshake.
    async fn handshake(
        &self,
        stream: &mut TcpStream,
        buf: &mut BytesMut,
    ) -> anyhow::Result<Handshake> {
        let frame = read_frame(stream, buf, MAX_HANDSHAKE_BYTES)
            .await?
            .ok_or_else(|| anyhow!("closed before the handshake"))?;
        let hello = Handshake::decode(frame)?;
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
        if !self.known_peers.contains(&hello.node_id) {
            bail!("unknown node id {}", hello.node_id);
        }
        let answer = Handshake {
            stream: hello.stream,
            ..self.hello.clone()
        };
        let mut out = BytesMut::new();
        let mut payload = BytesMut::new();
        answer.encode(&mut payload);
        encode_frame(&payload, &mut out);
        stream.write_all(&out).await?;
        Ok(hello)
    }

    /// Forwards frames from `peer_id` until it disconnects, misbehaves, or `connection` is cancelled.
    async fn receive(
        &self,
        stream: &mut TcpStream,
        buf: &mut BytesMut,
        peer_id: u64,
        connection: &CancellationToken,
    ) -> anyhow::Result<()> {
        let me = self.hello.node_id;
        loop {
            let frame = tokio::select! {
                _ = connection.cancelled() => return Ok(()),
                frame = read_frame(stream, buf, MAX_FRAME_BYTES) => match frame? {
                    Some(frame) => frame,
                    None => return Ok(()),
                },
            };
            let messages = decode_frame(frame)?;
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

/// Decodes every message in one data frame's payload.
pub fn decode_frame(mut payload: Bytes) -> Result<Vec<Message>, crate::wire::WireError> {
    let mut messages = Vec::new();
    while !payload.is_empty() {
        messages.push(decode_message(&mut payload)?);
    }
    Ok(messages)
}

/// A random duration in `[d/2, d]`, so peers that lost each other at the same moment do not retry in
/// lockstep.
fn jittered(d: Duration) -> Duration {
    let random = std::collections::hash_map::RandomState::new().hash_one(std::time::Instant::now());
    let half = d / 2;
    let spread = half.as_nanos() as u64 + 1;
    half + Duration::from_nanos(random % spread)
}

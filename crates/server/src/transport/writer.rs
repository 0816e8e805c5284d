//! The writer task per peer: keeps an outbound message connection up (reconnecting with backoff) and
//! sends that peer's queue over it in batched frames.

use super::dial::{dial, WRITE_TIMEOUT};
use super::framing::encode_batch;
use crate::metrics::PeerCounters;
use crate::wire::Handshake;
use anyhow::{anyhow, bail};
use bytes::BytesMut;
use raftkv_raft::Message;
use raftkv_tls::{PeerTls, Reloadable, Stream};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info};

/// Most messages taken from a queue per write.
const MAX_BATCH_MESSAGES: usize = 512;

/// After a snapshot-sized frame, the writer drops its buffer instead of keeping the memory forever.
const KEEP_WRITE_BUFFER_BYTES: usize = 4 << 20;

const MIN_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Owns the outgoing connection to one peer and that peer's queue.
pub(super) struct PeerWriter {
    pub(super) peer_id: u64,
    pub(super) peer_addr: String,
    pub(super) hello: Handshake,
    /// Peer mutual TLS, when the cluster uses it.
    pub(super) tls: Option<Arc<Reloadable<PeerTls>>>,
    pub(super) counters: PeerCounters,
    pub(super) queue: mpsc::Receiver<Message>,
    pub(super) dropped: Arc<AtomicU64>,
    pub(super) shutdown: CancellationToken,
}

/// The transport is stopping (shutdown, or every handle dropped).
struct Stopped;

impl PeerWriter {
    pub(super) async fn run(mut self) {
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

    async fn connect(&self) -> anyhow::Result<Stream> {
        dial(
            &self.peer_addr,
            &self.hello,
            self.peer_id,
            self.tls.as_deref(),
        )
        .await
    }

    /// Sends queued messages until the connection fails or the transport stops.
    async fn pump(
        &mut self,
        stream: &mut Stream,
        buffer: &mut BytesMut,
    ) -> anyhow::Result<Stopped> {
        match stream {
            // A plain socket splits into halves without a lock between them.
            Stream::Plain(tcp) => {
                let (reader, writer) = tcp.split();
                self.pump_halves(reader, writer, buffer).await
            }
            tls => {
                let (reader, writer) = tokio::io::split(tls);
                self.pump_halves(reader, writer, buffer).await
            }
        }
    }

    async fn pump_halves(
        &mut self,
        mut reader: impl AsyncRead + Unpin,
        mut writer: impl AsyncWrite + Unpin,
        buffer: &mut BytesMut,
    ) -> anyhow::Result<Stopped> {
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
                        // Flushed too: over TLS, `write_all` can leave the last records in the session.
                        let write = async {
                            writer.write_all(buffer).await?;
                            writer.flush().await
                        };
                        tokio::time::timeout(WRITE_TIMEOUT, write)
                            .await
                            .map_err(|_| anyhow!("peer accepted no data for {WRITE_TIMEOUT:?}"))??;
                        self.counters.sent_messages.inc_by((received - oversized) as u64);
                        self.counters.sent_bytes.inc_by(buffer.len() as u64);
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
                    self.counters.dropped_messages.inc_by(received as u64);
                    discarded.clear();
                }
            }
        }
    }
}

/// A random duration in `[d/2, d]`, so peers that lost each other at the same moment do not retry in
/// lockstep.
fn jittered(d: Duration) -> Duration {
    let random = std::collections::hash_map::RandomState::new().hash_one(std::time::Instant::now());
    let half = d / 2;
    let spread = half.as_nanos() as u64 + 1;
    half + Duration::from_nanos(random % spread)
}

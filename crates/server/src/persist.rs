//! The disk side of the node: one thread that owns the WAL and makes the replica's persist jobs durable
//! with [`write_batches`], the group commit the simulator runs too.
//!
//! The node loop hands over each batch that must be persisted and goes on (a leader's appends are
//! already on the wire). This thread takes every batch waiting in its queue, writes them all and calls
//! fdatasync once (group commit), then sends the messages that had to wait for durability and
//! publishes the new durable position through a `watch`, which never blocks and coalesces, so the two
//! sides can never wait on each other.

use std::path::PathBuf;
use std::sync::mpsc::{RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use raftkv_replica::storage::{released_messages, write_batches};
use raftkv_wal::fs::RealFs;
use raftkv_wal::Wal;
use tokio::sync::{mpsc, watch};
use tracing::error;

use crate::metrics::Metrics;
use crate::transport::Transport;

/// A group commit slower than this is logged: followers with disks this slow delay commits, and a
/// leader's slow disk delays every write.
const SLOW_SYNC: Duration = Duration::from_millis(200);
/// How long the janitor waits before retrying a deletion that failed.
const JANITOR_RETRY: Duration = Duration::from_secs(1);
/// Batches taken in one group commit at most (bounds the latency of the first one).
const MAX_BATCHES_PER_SYNC: usize = 256;
/// Batches waiting for the disk before the node loop feels back-pressure.
pub const QUEUE_DEPTH: usize = 1024;

pub use raftkv_replica::{Durable, PersistJob};

pub fn spawn(
    mut wal: Wal,
    mut jobs: mpsc::Receiver<PersistJob>,
    transport: Transport,
    durable: watch::Sender<Durable>,
    metrics: Arc<Metrics>,
) -> std::io::Result<JoinHandle<()>> {
    let janitor = spawn_janitor()?;
    std::thread::Builder::new()
        .name("raftkv-wal".into())
        .spawn(move || {
            let mut batch = Vec::with_capacity(MAX_BATCHES_PER_SYNC);
            let mut position = Durable::default();
            while jobs.blocking_recv_many(&mut batch, MAX_BATCHES_PER_SYNC) > 0 {
                let bytes: usize = batch
                    .iter()
                    .flat_map(|job| &job.entries)
                    .map(|entry| entry.data.len())
                    .sum();
                let started = Instant::now();
                let written = write_batches(&mut wal, &mut batch, &mut position);
                let took = started.elapsed();
                metrics.wal_sync_duration.observe(took.as_secs_f64());
                metrics.wal_written_bytes.inc_by(bytes as u64);
                metrics
                    .disk_bytes
                    .set(i64::try_from(wal.disk_usage()).unwrap_or(i64::MAX));
                if took > SLOW_SYNC {
                    tracing::warn!(
                        elapsed_ms = took.as_millis() as u64,
                        bytes,
                        "slow disk: one group commit (write + fdatasync) took over {SLOW_SYNC:?}"
                    );
                }
                if let Err(err) = written {
                    error!("storage failed, stopping the node: {err}");
                    position.failed = true;
                    let _ = durable.send(position);
                    return;
                }
                let _ = durable.send(position);
                let garbage = wal.take_garbage();
                // Blocking only if the janitor is 64 compactions behind; deleting here instead could
                // overtake older batches, and deletions must stay in order (see the WAL's compact).
                if !garbage.is_empty() && janitor.send(garbage).is_err() {
                    tracing::warn!("the janitor thread stopped; compacted files stay on disk");
                }
                for msg in released_messages(&mut batch) {
                    transport.send(msg);
                }
                batch.clear();
            }
        })
}

/// Compacted segments and superseded snapshots, deleted off the disk thread: unlinking tens of MiB can
/// take tens of milliseconds, during which group commit would stall. Deletions a crash leaves undone
/// are harmless (the WAL ignores such files at recovery).
fn spawn_janitor() -> std::io::Result<SyncSender<Vec<PathBuf>>> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<PathBuf>>(64);
    std::thread::Builder::new()
        .name("raftkv-janitor".into())
        .spawn(move || {
            crate::background::lower_this_thread_priority();
            let mut deletions = raftkv_wal::OrderedDeletions::default();
            loop {
                // While a deletion keeps failing, retry it now and then; newer files wait behind it.
                let next = if deletions.is_empty() {
                    rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
                } else {
                    rx.recv_timeout(JANITOR_RETRY)
                };
                match next {
                    Ok(files) => deletions.push(files),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
                if let Err(err) = deletions.run(&RealFs) {
                    tracing::warn!(
                        waiting = deletions.len(),
                        "cannot delete compacted files, will retry in order: {err}"
                    );
                }
            }
        })?;
    Ok(tx)
}

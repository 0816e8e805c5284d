//! The per-connection worker: one task per connection keeps its window of requests in flight,
//! encodes each request straight into a reused buffer, parses replies in place and records their
//! latencies and outcomes, reconnecting to the leader when the connection is lost or redirected.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use raftkv_client::bytes::{Buf, BytesMut};
use raftkv_client::proto::{self, Parsed, Reply, ReplyKind};
use raftkv_tls::Stream;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::stats::{new_histogram, record, ErrorKind, ERROR_KINDS};
use super::workload::{KeySource, Workload};
use super::{Args, Layout, Leader};

/// With no reply for this long, a connection's outstanding requests count as timed out.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest pause before reconnecting after a lost connection.
const RECONNECT_PAUSE: Duration = Duration::from_millis(200);
/// A connection that has had no reply for this long, reconnections included, gives up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(30);

/// Shared between the connection tasks.
pub(super) struct Run {
    workload: Workload,
    value: Arc<[u8]>,
    key_prefix: Vec<u8>,
    key_width: usize,
    pub(super) stop: AtomicBool,
    /// Requests left to issue, when the run is bounded by a count.
    budget: Option<AtomicU64>,
    pub(super) completed: AtomicU64,
    leader: Arc<Leader>,
    /// Send writes in sessions (`--sessions`).
    sessions: bool,
    /// For workloads every node serves: the nodes' addresses, one per connection in turn.
    any_node: Option<Vec<String>>,
}

impl Run {
    pub(super) fn new(
        workload: Workload,
        args: &Args,
        layout: &Layout,
        budget: Option<u64>,
        leader: Arc<Leader>,
    ) -> Arc<Run> {
        Arc::new(Run {
            workload,
            value: layout.value.clone(),
            key_prefix: args.key_prefix.clone().into_bytes(),
            key_width: layout.key_width,
            stop: AtomicBool::new(false),
            budget: budget.map(AtomicU64::new),
            completed: AtomicU64::new(0),
            leader,
            sessions: args.sessions(),
            any_node: workload.any_node().then(|| args.addr.clone()),
        })
    }
}

/// Runs one worker per plan (its key source and window) and collects their results.
pub(super) async fn run_workers(
    run: Arc<Run>,
    plans: Vec<(KeySource, usize)>,
    record: bool,
) -> Vec<WorkerResult> {
    let tasks: Vec<_> = plans
        .into_iter()
        .enumerate()
        .map(|(i, (source, window))| {
            tokio::spawn(worker(run.clone(), i, source, window.max(1), record))
        })
        .collect();
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        match task.await {
            Ok(result) => results.push(result),
            Err(error) => eprintln!("error: a connection task failed: {error}"),
        }
    }
    results
}

struct InFlight {
    sent: Instant,
    kind: ReplyKind,
    key: u64,
}

pub(super) struct WorkerResult {
    pub(super) histogram: Histogram<u64>,
    pub(super) ok: u64,
    pub(super) errors: [u64; ERROR_KINDS.len()],
    /// Versions of the worker's keys after a preload.
    pub(super) versions: Vec<u64>,
}

impl WorkerResult {
    /// Requests that have had an outcome, successful or not.
    fn done(&self) -> u64 {
        self.ok + self.errors.iter().sum::<u64>()
    }
}

struct Worker {
    run: Arc<Run>,
    source: KeySource,
    window: usize,
    record: bool,
    in_flight: VecDeque<InFlight>,
    result: WorkerResult,
    /// Set when the connection should be abandoned once its outstanding replies are in.
    draining: bool,
    last_reply: Instant,
    /// With `--sessions`: one session per request of the window (write `k` uses session `k % window`:
    /// by the time write `k + window` is issued, the in-order reply to write `k` has arrived, so each
    /// session has one write outstanding at most, as the server's table requires).
    sessions: Option<Sessions>,
}

/// The worker's sessions, registered over its first connection.
struct Sessions {
    /// (id, next sequence number) of each session registered so far.
    open: Vec<(u64, u64)>,
    registering: usize,
    writes: u64,
}

async fn worker(
    run: Arc<Run>,
    index: usize,
    source: KeySource,
    window: usize,
    record: bool,
) -> WorkerResult {
    let versions = match &source {
        KeySource::Sequential { next, end } => vec![0; (end - next) as usize],
        _ => Vec::new(),
    };
    let mut worker = Worker {
        run: run.clone(),
        source,
        window,
        record,
        in_flight: VecDeque::with_capacity(window),
        result: WorkerResult {
            histogram: new_histogram(),
            ok: 0,
            errors: [0; ERROR_KINDS.len()],
            versions,
        },
        draining: false,
        last_reply: Instant::now(),
        sessions: run.sessions.then(|| Sessions {
            open: Vec::with_capacity(window),
            registering: 0,
            writes: 0,
        }),
    };
    while !worker.finished() {
        if worker.last_reply.elapsed() > GIVE_UP_AFTER {
            eprintln!("error: no reply for {GIVE_UP_AFTER:?}; a connection gives up");
            break;
        }
        let spread = worker.run.any_node.as_ref();
        let address = match spread.map(|addrs| addrs[index % addrs.len()].clone()) {
            Some(address) => address,
            None => match worker.run.leader.known() {
                Some(address) => address,
                None => match worker.run.leader.find().await {
                    Ok(address) => address,
                    Err(_) => {
                        tokio::time::sleep(RECONNECT_PAUSE).await;
                        continue;
                    }
                },
            },
        };
        let tls = worker.run.leader.client.config().tls.clone();
        match crate::tls_args::connect(&address, tls.as_ref()).await {
            Ok(Stream::Plain(tcp)) => {
                worker.draining = false;
                let (reader, writer) = tcp.into_split();
                worker.drive(reader, writer).await;
            }
            Ok(tls) => {
                worker.draining = false;
                let (reader, writer) = tokio::io::split(tls);
                worker.drive(reader, writer).await;
            }
            Err(_) => {
                worker.run.leader.forget();
                tokio::time::sleep(RECONNECT_PAUSE).await;
            }
        }
    }
    worker.result
}

impl Worker {
    fn finished(&self) -> bool {
        self.run.stop.load(Ordering::Relaxed)
            || self.source.exhausted()
            || self
                .run
                .budget
                .as_ref()
                .is_some_and(|b| b.load(Ordering::Relaxed) == 0)
    }

    /// Runs requests over one connection until the run ends or the connection must be abandoned.
    async fn drive(
        &mut self,
        mut reader: impl AsyncRead + Unpin,
        mut writer: impl AsyncWrite + Unpin,
    ) {
        let mut incoming = BytesMut::with_capacity(64 * 1024);
        let mut writing: Vec<u8> = Vec::with_capacity(64 * 1024);
        let mut queued: Vec<u8> = Vec::with_capacity(64 * 1024);
        let mut written = 0;
        self.fill(&mut queued);
        let idle = tokio::time::sleep(REPLY_TIMEOUT);
        tokio::pin!(idle);
        loop {
            if written == writing.len() {
                writing.clear();
                written = 0;
                std::mem::swap(&mut writing, &mut queued);
            }
            if self.in_flight.is_empty() {
                return;
            }
            tokio::select! {
                read = reader.read_buf(&mut incoming) => {
                    match read {
                        Ok(0) | Err(_) => return self.abandon(ErrorKind::ConnectionLost),
                        Ok(_) => {}
                    }
                    let before = self.result.done();
                    if let Err(kind) = self.take_replies(&mut incoming) {
                        return self.abandon(kind);
                    }
                    let answered = self.result.done() - before;
                    self.run.completed.fetch_add(answered, Ordering::Relaxed);
                    self.fill(&mut queued);
                    idle.as_mut().reset(tokio::time::Instant::now() + REPLY_TIMEOUT);
                }
                wrote = writer.write(&writing[written..]), if written < writing.len() => {
                    match wrote {
                        Ok(n) if n > 0 => {
                            written += n;
                            // Over TLS the last records may sit in the session until flushed.
                            if written == writing.len() && writer.flush().await.is_err() {
                                return self.abandon(ErrorKind::ConnectionLost);
                            }
                        }
                        _ => return self.abandon(ErrorKind::ConnectionLost),
                    }
                }
                _ = &mut idle => return self.abandon(ErrorKind::Timeout),
            }
        }
    }

    /// Counts every outstanding request as failed with `kind` and forgets the leader.
    fn abandon(&mut self, kind: ErrorKind) {
        if let Some(sessions) = &mut self.sessions {
            sessions.registering = 0;
        }
        let lost = self
            .in_flight
            .iter()
            .filter(|request| request.kind != ReplyKind::Register)
            .count() as u64;
        self.result.errors[kind as usize] += lost;
        self.run.completed.fetch_add(lost, Ordering::Relaxed);
        self.in_flight.clear();
        self.run.leader.forget();
    }

    /// Parses every complete reply in `incoming`, recording each.
    fn take_replies(&mut self, incoming: &mut BytesMut) -> Result<(), ErrorKind> {
        let max_value = self.run.value.len().max(proto::DEFAULT_MAX_VALUE_SIZE);
        // One clock read per batch: every reply in it arrived with the same read.
        let arrived = Instant::now();
        while let Some(front) = self.in_flight.front() {
            let (reply, consumed) = match proto::parse_reply(incoming, front.kind, max_value) {
                Ok(Parsed::Complete { reply, consumed }) => (reply, consumed),
                Ok(Parsed::Incomplete) => break,
                Err(_) => return Err(ErrorKind::Protocol),
            };
            let Some(request) = self.in_flight.pop_front() else {
                break;
            };
            self.last_reply = arrived;
            incoming.advance(consumed);
            if request.kind == ReplyKind::Register {
                if let Some(sessions) = &mut self.sessions {
                    sessions.registering = sessions.registering.saturating_sub(1);
                    match reply {
                        Reply::Session { id } => sessions.open.push((id, 1)),
                        _ => self.draining = true,
                    }
                }
                continue;
            }
            let outcome = match reply {
                Reply::Ok { version } => {
                    self.remember_version(request.key, version);
                    Ok(())
                }
                Reply::Value { .. } | Reply::ValueMeta { .. } | Reply::Deleted => Ok(()),
                Reply::ErrNotFound => Err(ErrorKind::NotFound),
                Reply::ErrVersion => Err(ErrorKind::VersionMismatch),
                Reply::ErrCmdErr => Err(ErrorKind::CommandError),
                Reply::ErrInternal => Err(ErrorKind::Internal),
                Reply::Session { .. }
                | Reply::ErrSessionExpired
                | Reply::ErrSequence { .. }
                | Reply::Backup { .. }
                | Reply::Members { .. }
                | Reply::ErrMembership { .. }
                | Reply::Integer { .. }
                | Reply::ErrValue { .. }
                | Reply::Keys { .. }
                | Reply::Multi { .. }
                | Reply::ExecAborted => Err(ErrorKind::Protocol),
                redirect @ Reply::ErrRedirect { .. } => {
                    // Leadership moved: finish what is outstanding, then reconnect there.
                    self.run
                        .leader
                        .set_hint(redirect.redirect_address().unwrap_or_default());
                    self.draining = true;
                    Err(ErrorKind::Redirect)
                }
            };
            match outcome {
                Ok(()) => {
                    self.result.ok += 1;
                    if self.record {
                        record(
                            &mut self.result.histogram,
                            arrived.duration_since(request.sent),
                        );
                    }
                }
                Err(kind) => self.result.errors[kind as usize] += 1,
            }
        }
        // Incomplete replies are bounded by the parser (line length and value size).
        Ok(())
    }

    fn remember_version(&mut self, key: u64, version: u64) {
        match &mut self.source {
            KeySource::Cas {
                start, versions, ..
            } => {
                if let Some(slot) = versions.get_mut((key - *start) as usize) {
                    *slot = version;
                }
            }
            KeySource::Sequential { end, .. } => {
                let count = self.result.versions.len() as u64;
                if let Some(slot) = self.result.versions.get_mut((key + count - *end) as usize) {
                    *slot = version;
                }
            }
            KeySource::Random { .. } => {}
        }
    }

    /// Issues requests into `out` until the window is full or the run says stop.
    fn fill(&mut self, out: &mut Vec<u8>) {
        while self.in_flight.len() < self.window && !self.draining {
            if let Some(sessions) = &mut self.sessions {
                if sessions.open.len() < self.window {
                    if sessions.open.len() + sessions.registering >= self.window {
                        return;
                    }
                    sessions.registering += 1;
                    out.extend_from_slice(b"register\r\n");
                    self.in_flight.push_back(InFlight {
                        sent: Instant::now(),
                        kind: ReplyKind::Register,
                        key: 0,
                    });
                    continue;
                }
            }
            if !self.take_budget() {
                return;
            }
            let Some(request) = self.encode_next(out) else {
                return;
            };
            self.in_flight.push_back(request);
        }
    }

    fn take_budget(&self) -> bool {
        if self.run.stop.load(Ordering::Relaxed) {
            return false;
        }
        match &self.run.budget {
            None => true,
            Some(budget) => budget
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                    left.checked_sub(1)
                })
                .is_ok(),
        }
    }

    fn encode_next(&mut self, out: &mut Vec<u8>) -> Option<InFlight> {
        let (key, version) = self.source.next()?;
        let kind = match self.run.workload {
            Workload::Set => ReplyKind::Set,
            Workload::Get => ReplyKind::Get,
            Workload::Getm => ReplyKind::Getm,
            Workload::Cas => ReplyKind::Cas,
            Workload::Incr => return None,
            Workload::StaleGet { max_lag } => {
                out.extend_from_slice(b"stale ");
                proto::push_decimal(out, max_lag);
                out.push(b' ');
                ReplyKind::Get
            }
            Workload::Mix { reads, writes } => {
                let roll = match &mut self.source {
                    KeySource::Random { state, .. } => KeySource::random(state),
                    _ => key,
                };
                if roll % u64::from(reads + writes) < u64::from(reads) {
                    ReplyKind::Get
                } else {
                    ReplyKind::Set
                }
            }
        };
        if let (Some(sessions), true) = (&mut self.sessions, kind.is_write()) {
            let slot = (sessions.writes % sessions.open.len() as u64) as usize;
            sessions.writes += 1;
            let (id, seq) = &mut sessions.open[slot];
            proto::encode_session_prefix(out, *id, *seq);
            *seq += 1;
        }
        let run = &self.run;
        let verb: &[u8] = match kind {
            ReplyKind::Set => b"set ",
            ReplyKind::Get => b"get ",
            ReplyKind::Getm => b"getm ",
            ReplyKind::Cas => b"cas ",
            ReplyKind::Delete => b"delete ",
            ReplyKind::Register => b"register",
            // The load generator never sends these.
            ReplyKind::MembersList | ReplyKind::MembersChange => return None,
        };
        out.extend_from_slice(verb);
        out.extend_from_slice(&run.key_prefix);
        push_padded(out, key, run.key_width);
        if matches!(kind, ReplyKind::Set | ReplyKind::Cas) {
            out.extend_from_slice(b" 0 ");
            if kind == ReplyKind::Cas {
                proto::push_decimal(out, version);
                out.push(b' ');
            }
            proto::push_decimal(out, run.value.len() as u64);
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&run.value);
        }
        out.extend_from_slice(b"\r\n");
        Some(InFlight {
            sent: Instant::now(),
            kind,
            key,
        })
    }
}

/// Appends `n` in decimal, zero-padded to `width` so that all keys have the same length.
fn push_padded(out: &mut Vec<u8>, n: u64, width: usize) {
    let start = out.len();
    proto::push_decimal(out, n);
    let digits = out.len() - start;
    if digits < width {
        out.splice(start..start, std::iter::repeat_n(b'0', width - digits));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_keys() {
        let mut out = b"k".to_vec();
        push_padded(&mut out, 42, 5);
        assert_eq!(out, b"k00042");
    }
}

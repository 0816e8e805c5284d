//! `raftkv bench`: a closed-loop load generator measuring throughput and latency.
//!
//! N clients are spread over C connections to the leader; each client keeps up to P requests in
//! flight, so a connection carries a window of (its clients × P) outstanding requests and issues a
//! new one whenever a reply arrives. One task drives each connection directly over the socket rather
//! than through `raftkv_client::Client`: the generator shares the cores with the cluster it
//! measures, so per request it only encodes into a reused buffer, parses the reply in place (no
//! allocation) and writes everything issued since the last write in one syscall. The library is
//! used to find the leader.

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use raftkv_client::bytes::{Buf, BytesMut};
use raftkv_client::proto::{self, Parsed, Reply, ReplyKind};
use raftkv_client::{Client, Config};
use std::process::ExitCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(clap::Args)]
#[command(after_help = "\
Workloads (--op): set, get, getm, cas, or mix:R:W (R gets for every W sets).
Read, mix and cas workloads first write every key once (the preload; cas needs each key's version).
cas gives each connection its own keys, so --keys must be at least clients x pipeline.

Output: a table (or, with --json, one JSON object) with throughput, latency percentiles in
microseconds from an HDR histogram, and errors by kind. Exit status 0 if the run had no errors,
1 if it had some, 2 on bad arguments, 4 if no leader could be found.")]
pub struct Args {
    /// Client addresses of the cluster's nodes, comma-separated; the leader is found from them.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.0.0.1:9000,127.0.0.1:9001,127.0.0.1:9002,127.0.0.1:9003,127.0.0.1:9004"
    )]
    addr: Vec<String>,
    /// Concurrent closed-loop clients.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    clients: u32,
    /// TCP connections the clients share (default: clients, at most 64).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    conns: Option<u32>,
    /// Requests each client keeps in flight.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pipeline: u32,
    /// set, get, getm, cas or mix:R:W.
    #[arg(long, default_value = "set", value_parser = parse_workload)]
    op: Workload,
    /// Bytes per value.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Size of the key space.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    keys: u64,
    /// Seconds to run (default 10 unless --requests is given).
    #[arg(long, conflicts_with = "requests", value_parser = parse_duration)]
    duration: Option<f64>,
    /// Total requests to send, instead of a duration.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    requests: Option<u64>,
    /// Print the results as one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Threads for the load generator itself; one is usually enough and leaves the rest to the
    /// cluster when it runs on the same machine.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    threads: u32,
    /// Prefix of every key the benchmark writes.
    #[arg(long, default_value = "bench:")]
    key_prefix: String,
    /// Skip writing the key space before read workloads (it must already be there).
    #[arg(long)]
    no_preload: bool,
    /// First measure the machine's floor for comparison: fdatasync latency of 4 KiB appends to a
    /// file in --calibrate-dir, and the loopback TCP round trip of 64 bytes.
    #[arg(long)]
    calibrate: bool,
    /// Where --calibrate writes its scratch file: put it on the disk the cluster uses.
    #[arg(long, default_value = ".")]
    calibrate_dir: std::path::PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    Set,
    Get,
    Getm,
    Cas,
    Mix { reads: u32, writes: u32 },
}

impl Workload {
    fn needs_preload(self) -> bool {
        self != Workload::Set
    }

    fn name(self) -> String {
        match self {
            Workload::Set => "set".into(),
            Workload::Get => "get".into(),
            Workload::Getm => "getm".into(),
            Workload::Cas => "cas".into(),
            Workload::Mix { reads, writes } => format!("mix:{reads}:{writes}"),
        }
    }
}

fn parse_workload(text: &str) -> Result<Workload, String> {
    Ok(match text {
        "set" => Workload::Set,
        "get" => Workload::Get,
        "getm" => Workload::Getm,
        "cas" => Workload::Cas,
        _ => {
            let ratio = text
                .strip_prefix("mix:")
                .ok_or("expected set, get, getm, cas or mix:R:W")?;
            let (reads, writes) = ratio
                .split_once(':')
                .ok_or("expected mix:R:W, e.g. mix:9:1")?;
            let reads: u32 = reads.parse().map_err(|_| "R in mix:R:W must be a number")?;
            let writes: u32 = writes
                .parse()
                .map_err(|_| "W in mix:R:W must be a number")?;
            if reads.checked_add(writes).is_none_or(|total| total == 0) {
                return Err("mix:R:W needs R + W between 1 and 2^32".into());
            }
            Workload::Mix { reads, writes }
        }
    })
}

fn parse_duration(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs <= 86_400.0 => Ok(secs),
        _ => Err("expected seconds between 0 and 86400".into()),
    }
}

/// Kinds of failed requests, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorKind {
    NotFound,
    VersionMismatch,
    Redirect,
    Internal,
    CommandError,
    ConnectionLost,
    Protocol,
    Timeout,
}

const ERROR_KINDS: [ErrorKind; 8] = [
    ErrorKind::NotFound,
    ErrorKind::VersionMismatch,
    ErrorKind::Redirect,
    ErrorKind::Internal,
    ErrorKind::CommandError,
    ErrorKind::ConnectionLost,
    ErrorKind::Protocol,
    ErrorKind::Timeout,
];

impl ErrorKind {
    fn name(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::VersionMismatch => "version_mismatch",
            ErrorKind::Redirect => "redirect",
            ErrorKind::Internal => "internal",
            ErrorKind::CommandError => "cmd_err",
            ErrorKind::ConnectionLost => "connection_lost",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Timeout => "timeout",
        }
    }
}

/// With no reply for this long, a connection's outstanding requests count as timed out.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest pause before reconnecting after a lost connection.
const RECONNECT_PAUSE: Duration = Duration::from_millis(200);
/// A connection that has had no reply for this long, reconnections included, gives up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(30);

pub fn run(args: Args) -> ExitCode {
    if let Err(message) = check(&args) {
        eprintln!("error: {message}");
        return ExitCode::from(2);
    }
    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads as usize)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(bench(args))
}

fn check(args: &Args) -> Result<(), String> {
    if args.value_size > proto::DEFAULT_MAX_VALUE_SIZE {
        return Err(format!(
            "--value-size is at most {}",
            proto::DEFAULT_MAX_VALUE_SIZE
        ));
    }
    let widest_key = format!("{}{}", args.key_prefix, args.keys - 1);
    proto::validate_key(widest_key.as_bytes())
        .map_err(|error| format!("--key-prefix gives invalid keys: {error}"))?;
    let window = u64::from(args.clients) * u64::from(args.pipeline);
    if args.op == Workload::Cas && args.keys < window {
        return Err(format!("cas needs --keys >= clients x pipeline = {window}"));
    }
    Ok(())
}

/// Shared between the connection tasks.
struct Run {
    workload: Workload,
    value: Vec<u8>,
    key_prefix: Vec<u8>,
    key_width: usize,
    stop: AtomicBool,
    /// Requests left to issue, when the run is bounded by a count.
    budget: Option<AtomicU64>,
    completed: AtomicU64,
    leader: Leader,
}

/// Finds and remembers the leader's address with the client library.
struct Leader {
    client: Client,
    probe_key: String,
    address: Mutex<Option<String>>,
}

impl Leader {
    fn known(&self) -> Option<String> {
        self.address.lock().ok().and_then(|a| a.clone())
    }

    fn set_hint(&self, address: String) {
        if let Ok(mut known) = self.address.lock() {
            *known = Some(address);
        }
    }

    fn forget(&self) {
        if let Ok(mut known) = self.address.lock() {
            *known = None;
        }
    }

    /// Asks the cluster who leads by writing the probe key: only the leader accepts a write.
    async fn find(&self) -> Result<String, raftkv_client::Error> {
        self.client.set(&self.probe_key, b"", None).await?;
        let address = self
            .client
            .connected_to()
            .ok_or_else(|| raftkv_client::Error::Unavailable("lost the leader again".into()))?;
        self.set_hint(address.clone());
        Ok(address)
    }
}

async fn bench(args: Args) -> ExitCode {
    let calibration = if args.calibrate {
        match Calibration::measure(&args.calibrate_dir).await {
            Ok(calibration) => Some(calibration),
            Err(error) => {
                eprintln!("error: calibration failed: {error}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let config = Config {
        deadline: Duration::from_secs(10),
        ..Config::default()
    };
    let client = match Client::new(&args.addr, config) {
        Ok(client) => client,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let leader = Leader {
        client,
        probe_key: format!("{}probe", args.key_prefix),
        address: Mutex::new(None),
    };
    if let Err(error) = leader.find().await {
        eprintln!("error: no leader found: {error}");
        return ExitCode::from(4);
    }
    let conns = args.conns.unwrap_or(args.clients.min(64)).min(args.clients) as usize;
    let windows = spread(args.clients as usize * args.pipeline as usize, conns);
    let partitions = partition(args.keys, conns);
    let value: Vec<u8> = (0..args.value_size)
        .map(|i| b'a' + (i % 26) as u8)
        .collect();
    let key_width = (args.keys - 1).to_string().len();

    let mut versions: Vec<Vec<u64>> = vec![Vec::new(); conns];
    let leader = if args.op.needs_preload() && !args.no_preload {
        let started = Instant::now();
        let run = Arc::new(Run {
            workload: Workload::Set,
            value: value.clone(),
            key_prefix: args.key_prefix.clone().into_bytes(),
            key_width,
            stop: AtomicBool::new(false),
            budget: None,
            completed: AtomicU64::new(0),
            leader,
        });
        let plans = partitions
            .iter()
            .map(|range| {
                (
                    KeySource::Sequential {
                        next: range.start,
                        end: range.end,
                    },
                    64,
                )
            })
            .collect();
        let results = run_workers(run.clone(), plans, false).await;
        let failed: u64 = results.iter().map(|r| r.errors.iter().sum::<u64>()).sum();
        eprintln!(
            "preloaded {} keys in {:.1} s{}",
            args.keys,
            started.elapsed().as_secs_f64(),
            if failed > 0 {
                format!(" ({failed} failed)")
            } else {
                String::new()
            }
        );
        versions = results.into_iter().map(|r| r.versions).collect();
        let Ok(run) = Arc::try_unwrap(run) else {
            eprintln!("error: preload workers still running");
            return ExitCode::FAILURE;
        };
        run.leader
    } else {
        leader
    };
    let layout = Layout {
        value,
        key_width,
        conns,
        windows,
        partitions,
        versions,
    };
    measure(args, leader, layout, calibration).await
}

/// How the load is laid out over the connections.
struct Layout {
    value: Vec<u8>,
    key_width: usize,
    conns: usize,
    /// Requests in flight per connection.
    windows: Vec<usize>,
    /// Keys of each connection, for preload and cas.
    partitions: Vec<std::ops::Range<u64>>,
    /// Versions of each connection's keys after the preload.
    versions: Vec<Vec<u64>>,
}

async fn measure(
    args: Args,
    leader: Leader,
    layout: Layout,
    calibration: Option<Calibration>,
) -> ExitCode {
    let Layout {
        value,
        key_width,
        conns,
        windows,
        partitions,
        versions,
    } = layout;
    let duration = match (args.duration, args.requests) {
        (Some(secs), _) => Some(Duration::from_secs_f64(secs)),
        (None, Some(_)) => None,
        (None, None) => Some(Duration::from_secs(10)),
    };
    let run = Arc::new(Run {
        workload: args.op,
        value,
        key_prefix: args.key_prefix.clone().into_bytes(),
        key_width,
        stop: AtomicBool::new(false),
        budget: args.requests.map(AtomicU64::new),
        completed: AtomicU64::new(0),
        leader,
    });
    let plans: Vec<(KeySource, usize)> = (0..conns)
        .map(|i| {
            let source = if args.op == Workload::Cas {
                let range = partitions[i].clone();
                let mut known = versions.get(i).cloned().unwrap_or_default();
                known.resize((range.end - range.start) as usize, 0);
                KeySource::Cas {
                    start: range.start,
                    cursor: 0,
                    versions: known,
                }
            } else {
                KeySource::Random {
                    keys: args.keys,
                    state: 0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1),
                }
            };
            (source, windows[i])
        })
        .collect();

    let started = Instant::now();
    let progress = (std::io::stderr().is_terminal()).then(|| {
        let run = run.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            let mut previous = 0;
            loop {
                tick.tick().await;
                let done = run.completed.load(Ordering::Relaxed);
                eprint!(
                    "\r{:>6.1} s  {done:>10} requests  {:>9} req/s   ",
                    started.elapsed().as_secs_f64(),
                    done - previous
                );
                previous = done;
            }
        })
    });
    let stopper = duration.map(|duration| {
        let run = run.clone();
        tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            run.stop.store(true, Ordering::Relaxed);
        })
    });
    let results = run_workers(run.clone(), plans, true).await;
    let elapsed = started.elapsed();
    if let Some(progress) = progress {
        progress.abort();
        eprint!("\r{:60}\r", "");
    }
    if let Some(stopper) = stopper {
        stopper.abort();
    }

    let mut summary = Summary::new(&args, conns, elapsed, results);
    summary.calibration = calibration;
    if args.json {
        println!("{}", summary.json());
    } else {
        print!("{}", summary.table());
    }
    let _ = std::io::stdout().flush();
    if summary.errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Splits `total` into `parts` nearly equal shares.
fn spread(total: usize, parts: usize) -> Vec<usize> {
    (0..parts)
        .map(|i| total / parts + usize::from(i < total % parts))
        .collect()
}

fn partition(keys: u64, parts: usize) -> Vec<std::ops::Range<u64>> {
    let mut start = 0;
    spread(keys as usize, parts)
        .into_iter()
        .map(|len| {
            let range = start..start + len as u64;
            start = range.end;
            range
        })
        .collect()
}

async fn run_workers(
    run: Arc<Run>,
    plans: Vec<(KeySource, usize)>,
    record: bool,
) -> Vec<WorkerResult> {
    let tasks: Vec<_> = plans
        .into_iter()
        .map(|(source, window)| tokio::spawn(worker(run.clone(), source, window.max(1), record)))
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

/// Which key each request uses.
enum KeySource {
    Random {
        keys: u64,
        state: u64,
    },
    /// Every key of a range once: the preload.
    Sequential {
        next: u64,
        end: u64,
    },
    /// Round robin over this worker's own keys, tracking each one's version.
    Cas {
        start: u64,
        cursor: usize,
        versions: Vec<u64>,
    },
}

impl KeySource {
    fn random(state: &mut u64) -> u64 {
        // xorshift64*: good enough to spread keys, and far cheaper than a cryptographic generator.
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

struct InFlight {
    sent: Instant,
    kind: ReplyKind,
    key: u64,
}

struct WorkerResult {
    histogram: Histogram<u64>,
    ok: u64,
    errors: [u64; ERROR_KINDS.len()],
    /// Versions of the worker's keys after a preload.
    versions: Vec<u64>,
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
}

async fn worker(run: Arc<Run>, source: KeySource, window: usize, record: bool) -> WorkerResult {
    let versions = match &source {
        KeySource::Sequential { next, end } => vec![0; (end - next) as usize],
        _ => Vec::new(),
    };
    let histogram = new_histogram();
    let mut worker = Worker {
        run,
        source,
        window,
        record,
        in_flight: VecDeque::with_capacity(window),
        result: WorkerResult {
            histogram,
            ok: 0,
            errors: [0; ERROR_KINDS.len()],
            versions,
        },
        draining: false,
        last_reply: Instant::now(),
    };
    while !worker.finished() {
        if worker.last_reply.elapsed() > GIVE_UP_AFTER {
            eprintln!("error: no reply for {GIVE_UP_AFTER:?}; a connection gives up");
            break;
        }
        let address = match worker.run.leader.known() {
            Some(address) => address,
            None => match worker.run.leader.find().await {
                Ok(address) => address,
                Err(_) => {
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                    continue;
                }
            },
        };
        match TcpStream::connect(&address).await {
            Ok(stream) => {
                worker.draining = false;
                worker.drive(stream).await;
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
            || matches!(self.source, KeySource::Sequential { next, end } if next >= end)
            || self
                .run
                .budget
                .as_ref()
                .is_some_and(|b| b.load(Ordering::Relaxed) == 0)
    }

    /// Runs requests over one connection until the run ends or the connection must be abandoned.
    async fn drive(&mut self, stream: TcpStream) {
        if stream.set_nodelay(true).is_err() {
            return;
        }
        let (mut reader, mut writer) = stream.into_split();
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
                    let before = self.result.ok + self.result.errors.iter().sum::<u64>();
                    if let Err(kind) = self.take_replies(&mut incoming) {
                        return self.abandon(kind);
                    }
                    let after = self.result.ok + self.result.errors.iter().sum::<u64>();
                    self.run.completed.fetch_add(after - before, Ordering::Relaxed);
                    self.fill(&mut queued);
                    idle.as_mut().reset(tokio::time::Instant::now() + REPLY_TIMEOUT);
                }
                wrote = writer.write(&writing[written..]), if written < writing.len() => {
                    match wrote {
                        Ok(n) if n > 0 => written += n,
                        _ => return self.abandon(ErrorKind::ConnectionLost),
                    }
                }
                _ = &mut idle => return self.abandon(ErrorKind::Timeout),
            }
        }
    }

    /// Counts every outstanding request as failed with `kind` and forgets the leader.
    fn abandon(&mut self, kind: ErrorKind) {
        let lost = self.in_flight.len() as u64;
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
            let outcome = match reply {
                Reply::Ok(version) => {
                    self.remember_version(request.key, version);
                    Ok(())
                }
                Reply::Value(_) | Reply::ValueMeta { .. } | Reply::Deleted => Ok(()),
                Reply::ErrNotFound => Err(ErrorKind::NotFound),
                Reply::ErrVersion => Err(ErrorKind::VersionMismatch),
                Reply::ErrCmd => Err(ErrorKind::CommandError),
                Reply::ErrInternal => Err(ErrorKind::Internal),
                Reply::Redirect(address) => {
                    // Leadership moved: finish what is outstanding, then reconnect there.
                    self.run.leader.set_hint(address);
                    self.draining = true;
                    Err(ErrorKind::Redirect)
                }
            };
            match outcome {
                Ok(()) => {
                    self.result.ok += 1;
                    if self.record {
                        let micros = arrived.duration_since(request.sent).as_micros();
                        self.result
                            .histogram
                            .saturating_record(micros.max(1) as u64);
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
        while self.in_flight.len() < self.window && !self.draining && self.take_budget() {
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
        let run = &self.run;
        let (key, version) = match &mut self.source {
            KeySource::Random { keys, state } => (KeySource::random(state) % *keys, 0),
            KeySource::Sequential { next, end } => {
                if *next >= *end {
                    return None;
                }
                *next += 1;
                (*next - 1, 0)
            }
            KeySource::Cas {
                start,
                cursor,
                versions,
            } => {
                let index = *cursor;
                *cursor = (*cursor + 1) % versions.len().max(1);
                (
                    *start + index as u64,
                    versions.get(index).copied().unwrap_or(0),
                )
            }
        };
        let kind = match run.workload {
            Workload::Set => ReplyKind::Set,
            Workload::Get => ReplyKind::Get,
            Workload::Getm => ReplyKind::Getm,
            Workload::Cas => ReplyKind::Cas,
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
        let verb: &[u8] = match kind {
            ReplyKind::Set => b"set ",
            ReplyKind::Get => b"get ",
            ReplyKind::Getm => b"getm ",
            ReplyKind::Cas => b"cas ",
            ReplyKind::Delete => b"delete ",
        };
        out.extend_from_slice(verb);
        out.extend_from_slice(&run.key_prefix);
        push_padded(out, key, run.key_width);
        match kind {
            ReplyKind::Set | ReplyKind::Cas => {
                out.extend_from_slice(b" 0 ");
                if kind == ReplyKind::Cas {
                    proto::push_decimal(out, version);
                    out.push(b' ');
                }
                proto::push_decimal(out, run.value.len() as u64);
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(&run.value);
            }
            _ => {}
        }
        out.extend_from_slice(b"\r\n");
        Some(InFlight {
            sent: Instant::now(),
            kind,
            key,
        })
    }
}

/// Latencies from 1 µs to 60 s at 3 significant digits.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant histogram bounds are valid")
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

struct Summary {
    workload: String,
    clients: u32,
    conns: usize,
    pipeline: u32,
    value_size: usize,
    keys: u64,
    elapsed: Duration,
    ok: u64,
    errors: u64,
    errors_by_kind: Vec<(&'static str, u64)>,
    histogram: Histogram<u64>,
    calibration: Option<Calibration>,
}

impl Summary {
    fn new(args: &Args, conns: usize, elapsed: Duration, results: Vec<WorkerResult>) -> Summary {
        let mut histogram = new_histogram();
        let mut ok = 0;
        let mut by_kind = [0u64; ERROR_KINDS.len()];
        for result in results {
            let _ = histogram.add(&result.histogram);
            ok += result.ok;
            for (total, count) in by_kind.iter_mut().zip(result.errors) {
                *total += count;
            }
        }
        let errors_by_kind: Vec<_> = ERROR_KINDS
            .iter()
            .zip(by_kind)
            .filter(|(_, count)| *count > 0)
            .map(|(kind, count)| (kind.name(), count))
            .collect();
        Summary {
            workload: args.op.name(),
            clients: args.clients,
            conns,
            pipeline: args.pipeline,
            value_size: args.value_size,
            keys: args.keys,
            elapsed,
            ok,
            errors: by_kind.iter().sum(),
            errors_by_kind,
            histogram,
            calibration: None,
        }
    }

    fn throughput(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn percentiles(&self) -> [(&'static str, u64); 6] {
        let h = &self.histogram;
        let at = |q: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(q)
            }
        };
        [
            ("p50", at(0.50)),
            ("p90", at(0.90)),
            ("p99", at(0.99)),
            ("p99.9", at(0.999)),
            ("max", if h.is_empty() { 0 } else { h.max() }),
            ("mean", h.mean().round() as u64),
        ]
    }

    fn table(&self) -> String {
        let mut out = String::new();
        let mut row = |name: &str, value: String| out.push_str(&format!("{name:<16}{value}\n"));
        row("workload", self.workload.clone());
        row(
            "clients",
            format!(
                "{} over {} connections, pipeline {}",
                self.clients, self.conns, self.pipeline
            ),
        );
        row(
            "values",
            format!("{} bytes, {} keys", self.value_size, self.keys),
        );
        row("duration", format!("{:.2} s", self.elapsed.as_secs_f64()));
        row(
            "requests",
            format!("{} ok, {} failed", self.ok, self.errors),
        );
        row("throughput", format!("{:.0} req/s", self.throughput()));
        let latency: Vec<String> = self
            .percentiles()
            .iter()
            .map(|(name, micros)| format!("{name} {micros}"))
            .collect();
        row("latency (µs)", latency.join("  "));
        let errors = if self.errors_by_kind.is_empty() {
            "none".to_string()
        } else {
            let kinds: Vec<String> = self
                .errors_by_kind
                .iter()
                .map(|(kind, n)| format!("{kind} {n}"))
                .collect();
            kinds.join("  ")
        };
        row("errors", errors);
        if let Some(calibration) = &self.calibration {
            let [fsync, rtt] = calibration.rows();
            row("fdatasync 4KiB", fsync);
            row("loopback rtt", rtt);
        }
        out
    }

    fn json(&self) -> serde_json::Value {
        let latency: serde_json::Map<String, serde_json::Value> = self
            .percentiles()
            .iter()
            .map(|(name, micros)| (name.to_string(), (*micros).into()))
            .collect();
        let errors: serde_json::Map<String, serde_json::Value> = self
            .errors_by_kind
            .iter()
            .map(|(kind, n)| (kind.to_string(), (*n).into()))
            .collect();
        let mut figures = serde_json::json!({
            "workload": self.workload,
            "clients": self.clients,
            "conns": self.conns,
            "pipeline": self.pipeline,
            "value_size": self.value_size,
            "keys": self.keys,
            "duration_s": self.elapsed.as_secs_f64(),
            "requests_ok": self.ok,
            "errors": self.errors,
            "throughput_per_s": self.throughput(),
            "latency_us": latency,
            "errors_by_kind": errors,
        });
        if let Some(calibration) = &self.calibration {
            figures["machine"] = calibration.json();
        }
        figures
    }
}

/// The machine's floor: no replicated durable write beats one fsync plus one round trip.
struct Calibration {
    fdatasync_us: [(&'static str, u64); 4],
    loopback_rtt_us: [(&'static str, u64); 4],
}

const CALIBRATION_SYNCS: usize = 300;
const CALIBRATION_ROUND_TRIPS: usize = 5000;

impl Calibration {
    async fn measure(dir: &std::path::Path) -> std::io::Result<Calibration> {
        let path = dir.join(format!(".raftkv-bench-fsync-{}", std::process::id()));
        let fsync = tokio::task::spawn_blocking(move || {
            let outcome = time_fdatasync(&path);
            let _ = std::fs::remove_file(&path);
            outcome
        })
        .await
        .map_err(std::io::Error::other)??;
        let rtt = time_loopback().await?;
        Ok(Calibration {
            fdatasync_us: summarize(&fsync),
            loopback_rtt_us: summarize(&rtt),
        })
    }

    fn rows(&self) -> [String; 2] {
        let show = |figures: &[(&str, u64); 4]| {
            let parts: Vec<String> = figures
                .iter()
                .map(|(name, value)| match *name {
                    "per_s" => format!("{value}/s sequential"),
                    _ => format!("{name} {value} µs"),
                })
                .collect();
            parts.join("  ")
        };
        [show(&self.fdatasync_us), show(&self.loopback_rtt_us)]
    }

    fn json(&self) -> serde_json::Value {
        let object = |figures: &[(&str, u64); 4]| {
            figures
                .iter()
                .map(|(n, v)| (n.to_string(), serde_json::Value::from(*v)))
                .collect::<serde_json::Map<_, _>>()
        };
        serde_json::json!({
            "fdatasync_4k_us": object(&self.fdatasync_us),
            "loopback_rtt_64b_us": object(&self.loopback_rtt_us),
        })
    }
}

fn summarize(histogram: &Histogram<u64>) -> [(&'static str, u64); 4] {
    [
        ("p50", histogram.value_at_quantile(0.5)),
        ("p99", histogram.value_at_quantile(0.99)),
        ("max", histogram.max()),
        ("per_s", 1_000_000 / histogram.mean().max(1.0) as u64),
    ]
}

fn time_fdatasync(path: &std::path::Path) -> std::io::Result<Histogram<u64>> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)?;
    let block = [0x5au8; 4096];
    let mut histogram = new_histogram();
    for _ in 0..CALIBRATION_SYNCS {
        let started = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        histogram.saturating_record(started.elapsed().as_micros().max(1) as u64);
    }
    Ok(histogram)
}

async fn time_loopback() -> std::io::Result<Histogram<u64>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let echo = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let mut message = [0u8; 64];
        for _ in 0..CALIBRATION_ROUND_TRIPS {
            stream.read_exact(&mut message).await?;
            stream.write_all(&message).await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let mut stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let mut message = [7u8; 64];
    let mut histogram = new_histogram();
    for _ in 0..CALIBRATION_ROUND_TRIPS {
        let started = Instant::now();
        stream.write_all(&message).await?;
        stream.read_exact(&mut message).await?;
        histogram.saturating_record(started.elapsed().as_micros().max(1) as u64);
    }
    echo.await.map_err(std::io::Error::other)??;
    Ok(histogram)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_workloads() {
        assert_eq!(
            parse_workload("mix:9:1"),
            Ok(Workload::Mix {
                reads: 9,
                writes: 1
            })
        );
        assert_eq!(parse_workload("getm"), Ok(Workload::Getm));
        assert!(parse_workload("mix:0:0").is_err());
        assert!(parse_workload("mix:a:1").is_err());
        assert!(parse_workload("put").is_err());
    }

    #[test]
    fn spreads_and_partitions_evenly() {
        assert_eq!(spread(10, 4), vec![3, 3, 2, 2]);
        assert_eq!(partition(10, 3), vec![0..4, 4..7, 7..10]);
    }

    #[test]
    fn pads_keys() {
        let mut out = b"k".to_vec();
        push_padded(&mut out, 42, 5);
        assert_eq!(out, b"k00042");
    }
}

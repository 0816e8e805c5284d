//! `raftkv bench`: a closed-loop load generator measuring throughput and latency.
//!
//! N clients are spread over C connections to the leader; each client keeps up to P requests in
//! flight, so a connection carries a window of (its clients × P) outstanding requests and issues a
//! new one whenever a reply arrives. One task drives each connection directly over the socket rather
//! than through `raftkv_client::Client`: the generator shares the cores with the cluster it
//! measures, so per request it only encodes into a reused buffer, parses the reply in place (no
//! allocation) and writes everything issued since the last write in one syscall. The library is
//! used to find the leader.
//!
//! This module holds the command line, its checks and the orchestration (finding the leader, the
//! preload, the measured run); the rest lives in:
//! - [`workload`]: the `--op` workloads and which keys each connection uses;
//! - [`worker`]: the task driving one connection, and the state the tasks share;
//! - [`stats`]: error kinds, latency histograms and figures as JSON, shared by the modules below;
//! - [`report`]: the summary table or JSON;
//! - [`calibrate`]: the `--calibrate` measurement of the machine's fdatasync and loopback floors.

mod calibrate;
mod incr;
mod node_cpu;
mod report;
mod stats;
mod worker;
mod workload;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raftkv_client::proto;
use raftkv_client::{Client, Config};

use calibrate::Calibration;
use report::Summary;
use worker::{run_workers, Run};
use workload::{parse_workload, partition, spread, KeySource, Workload};

#[derive(clap::Args)]
#[command(after_help = "\
Workloads (--op): set, get, getm, cas, mix:R:W (R gets for every W sets), incr, or stale-get:N
(`stale N get`, the connections spread over every node in --addr).
Read, mix and cas workloads first write every key once (the preload; cas needs each key's version).
cas gives each connection its own keys, so --keys must be at least clients x pipeline.
incr: each client increments --counters counters with getm + cas through a session, retrying through
failures; at the end every counter is read back and compared with the increments acknowledged:
`verified: A acknowledged, C counted, U unknown`, exit status 0 only if C = A and U = 0.

Output: a table (or, with --json, one JSON object) with throughput, latency percentiles in
microseconds from an HDR histogram, and errors by kind; with --cluster-dir or --node-pids, also the
CPU time the local node processes spent per request (all nodes together). Exit status 0 if the
run had no errors, 1 if it had some, 2 on bad arguments, 4 if no leader could be found.")]
pub struct Args {
    /// Client addresses of the cluster's nodes, comma-separated; the leader is found from them.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = crate::DEFAULT_ADDRS
    )]
    addr: Vec<String>,
    /// Concurrent closed-loop clients.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    clients: u32,
    /// TCP connections the clients share (default: clients, at most 64).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000), conflicts_with = "conn_per_client")]
    conns: Option<u32>,
    /// Give every client its own connection, as independent clients have (same as --conns CLIENTS).
    #[arg(long)]
    conn_per_client: bool,
    /// Report the node processes' CPU time per operation: the pids of the cluster's local nodes.
    #[arg(long, value_delimiter = ',', value_name = "PID,..")]
    node_pids: Vec<u32>,
    /// Report CPU per operation for the local cluster `raftkv cluster --dir DIR` runs (its node pid files).
    #[arg(long, value_name = "DIR")]
    cluster_dir: Option<std::path::PathBuf>,
    /// Requests each client keeps in flight.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pipeline: u32,
    /// set, get, getm, cas, mix:R:W, incr or stale-get:N.
    #[arg(long, default_value = "set", value_parser = parse_workload)]
    op: Workload,
    /// Send writes in sessions (exactly-once; each connection registers one session per request of
    /// its window). The default for incr, which needs them; off otherwise.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    sessions: Option<bool>,
    /// Counters the incr workload increments.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    counters: u32,
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
    #[command(flatten)]
    tls: crate::tls_args::TlsArgs,
}

impl Args {
    pub(super) fn sessions(&self) -> bool {
        self.sessions.unwrap_or(self.op == Workload::Incr)
    }
}

fn parse_duration(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs <= 86_400.0 => Ok(secs),
        _ => Err("expected seconds between 0 and 86400".into()),
    }
}

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

/// How the load is laid out over the connections.
struct Layout {
    value: Arc<[u8]>,
    key_width: usize,
    conns: usize,
    /// Requests in flight per connection.
    windows: Vec<usize>,
    /// Keys of each connection, for preload and cas.
    partitions: Vec<std::ops::Range<u64>>,
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
    let tls = match args.tls.client_config() {
        Ok(tls) => tls,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::from(2);
        }
    };
    let config = Config {
        deadline: Duration::from_secs(10),
        tls,
        ..Config::default()
    };
    if args.op == Workload::Incr {
        let config = Config {
            exactly_once: args.sessions(),
            ..config
        };
        return incr::run(&args, config).await;
    }
    let client = match Client::new(&args.addr, config) {
        Ok(client) => client,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let leader = Arc::new(Leader {
        client,
        probe_key: format!("{}probe", args.key_prefix),
        address: Mutex::new(None),
    });
    if let Err(error) = leader.find().await {
        eprintln!("error: no leader found: {error}");
        return ExitCode::from(4);
    }
    let conns = match (args.conn_per_client, args.conns) {
        (true, _) => args.clients,
        (false, Some(conns)) => conns,
        (false, None) => args.clients.min(64),
    }
    .min(args.clients) as usize;
    let layout = Layout {
        value: (0..args.value_size)
            .map(|i| b'a' + (i % 26) as u8)
            .collect(),
        key_width: (args.keys - 1).to_string().len(),
        conns,
        windows: spread(args.clients as usize * args.pipeline as usize, conns),
        partitions: partition(args.keys, conns),
    };
    let versions = if args.op.needs_preload() && !args.no_preload {
        preload(&args, &leader, &layout).await
    } else {
        Vec::new()
    };
    measure(args, leader, layout, versions, calibration).await
}

/// Writes every key once, each connection its own partition, and returns the versions of each
/// connection's keys.
async fn preload(args: &Args, leader: &Arc<Leader>, layout: &Layout) -> Vec<Vec<u64>> {
    let started = Instant::now();
    let run = Run::new(Workload::Set, args, layout, None, leader.clone());
    let plans = layout
        .partitions
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
    let results = run_workers(run, plans, false).await;
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
    results.into_iter().map(|r| r.versions).collect()
}

/// The measured run: drives the workload over every connection, then prints the summary.
async fn measure(
    args: Args,
    leader: Arc<Leader>,
    layout: Layout,
    versions: Vec<Vec<u64>>,
    calibration: Option<Calibration>,
) -> ExitCode {
    let duration = match (args.duration, args.requests) {
        (Some(secs), _) => Some(Duration::from_secs_f64(secs)),
        (None, Some(_)) => None,
        (None, None) => Some(Duration::from_secs(10)),
    };
    let run = Run::new(args.op, &args, &layout, args.requests, leader);
    let plans: Vec<(KeySource, usize)> = (0..layout.conns)
        .map(|i| {
            let source = if args.op == Workload::Cas {
                let range = layout.partitions[i].clone();
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
            (source, layout.windows[i])
        })
        .collect();

    let node_cpu = match node_cpu::NodeCpu::find(&args.node_pids, args.cluster_dir.as_deref()) {
        Ok(found) => found,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let cpu_before = node_cpu.as_ref().map(|cpu| cpu.sample_us());
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
    let results = run_workers(run, plans, true).await;
    let elapsed = started.elapsed();
    let server_cpu = node_cpu
        .as_ref()
        .zip(cpu_before)
        .map(|(cpu, before)| (cpu.nodes(), cpu.sample_us().saturating_sub(before)));
    if let Some(progress) = progress {
        progress.abort();
        eprint!("\r{:60}\r", "");
    }
    if let Some(stopper) = stopper {
        stopper.abort();
    }

    let summary = Summary::new(
        &args,
        layout.conns,
        elapsed,
        results,
        calibration,
        server_cpu,
    );
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

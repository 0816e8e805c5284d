//! `raftkv-chaos`: runs a real cluster under faults and checks what its clients saw.
//!
//! ```text
//! cargo run --release -p raftkv-chaos -- --nemesis all --duration 120 --netns
//! cargo run --release -p raftkv-chaos -- --check /tmp/raftkv-chaos-1234/history.txt
//! ```
//!
//! Ends with one line, `ops=… ok=… failed=… unknown=… linearizable=yes lost=0 diverged=0`, and exits
//! non-zero on any anomaly (or if the history could not be decided).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use raftkv_chaos::nemesis::{self, Nemesis, Timing};
use raftkv_chaos::run::{self, RunConfig};
use raftkv_chaos::workload::Settings;
use raftkv_chaos::{cluster, netns};

#[derive(Parser, Debug)]
#[command(
    name = "raftkv-chaos",
    about = "Run a raftkv cluster of real processes under faults; check every history"
)]
struct Args {
    /// Faults to inject, in turn: `all`, `none`, or a comma-separated list of kill, kill-leader,
    /// pause, all-kill, partition, isolate-leader, bridge, one-way, loss, slow, clock, power-loss,
    /// membership. Each runs at least once, even past --duration.
    #[arg(long, default_value = "all")]
    nemesis: String,
    /// Seconds of faults (the run then heals, lets the cluster recover and checks).
    #[arg(long, default_value_t = 60)]
    duration: u64,
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Each node in its own network namespace on a bridge (needs root and iproute2; network faults
    /// need it, and nftables). Without it every node runs on 127.0.0.1.
    #[arg(long)]
    netns: bool,
    /// Concurrent clients, one connection each.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Register keys the clients share.
    #[arg(long, default_value_t = 16)]
    keys: u64,
    /// Seconds before the clients move to a fresh set of registers (keeps each key's history, and so
    /// the checker's work, bounded in long runs).
    #[arg(long, default_value_t = 30)]
    key_lifetime_s: u64,
    /// Pause between one client's operations, in milliseconds.
    #[arg(long, default_value_t = 5)]
    think_ms: u64,
    /// Longest wait for a reply, in milliseconds, before its outcome is unknown.
    #[arg(long, default_value_t = 1000)]
    op_timeout_ms: u64,
    /// Seed of the fault schedule and the clients' choices (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// The raftkv binary (default: build the workspace's with `cargo build --release` and use it).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Working directory: cluster file, logs, data, history (default: a new one under /tmp).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the working directory even when the run passes.
    #[arg(long)]
    keep: bool,
    /// Loopback mode: first port (node i uses base+10i .. base+10i+2).
    #[arg(long)]
    base_port: Option<u16>,
    /// TEST ONLY: the nodes acknowledge writes without fsyncing them, to show that power loss
    /// then loses acknowledged writes and that this tool reports it.
    #[arg(long)]
    unsafe_skip_fsync: bool,
    /// The nodes serve reads from leader leases (`lease_reads = true`) instead of ReadIndex rounds:
    /// the faults then test the lease (its clock assumption holds here: libfaketime moves only the
    /// wall clocks).
    #[arg(long)]
    lease_reads: bool,
    /// Re-check a saved history instead of running anything.
    #[arg(long, value_name = "FILE")]
    check: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // The first Ctrl-C (or SIGTERM) ends the faults early: the run still heals, removes its namespaces
    // and mount, and checks what it recorded. A second one exits at once, leaving them behind.
    let handler = ctrlc::set_handler(|| {
        if nemesis::STOP.swap(true, std::sync::atomic::Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("interrupted: healing, then checking what was recorded (again to quit at once)");
    });
    if let Err(err) = handler {
        eprintln!(
            "raftkv-chaos: cannot catch Ctrl-C ({err}); interrupting will leave namespaces behind"
        );
    }
    let result = match &args.check {
        Some(path) => run::check_file(path),
        None => configure(&args).and_then(|config| run::run(&config)),
    };
    match result {
        Ok(summary) => {
            println!("{summary}");
            if summary.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(err) => {
            eprintln!("raftkv-chaos: {err}");
            ExitCode::from(2)
        }
    }
}

/// The nemeses to run, having dropped (and said why) those this machine or mode cannot do.
fn select_nemeses(args: &Args) -> Result<Vec<Nemesis>, String> {
    let asked: Vec<Nemesis> = if args.nemesis == "all" {
        nemesis::ALL.to_vec()
    } else if args.nemesis == "none" {
        Vec::new()
    } else {
        args.nemesis
            .split(',')
            .map(|name| {
                Nemesis::from_name(name.trim()).ok_or_else(|| format!("unknown nemesis {name}"))
            })
            .collect::<Result<_, _>>()?
    };
    let mut chosen = Vec::new();
    for nemesis in asked {
        let why_not = if nemesis.needs_netns() && !args.netns {
            Some("needs --netns".to_string())
        } else if nemesis.needs_netns() {
            netns::packet_rules_unavailable()
        } else if nemesis == Nemesis::Clock && cluster::libfaketime().is_none() {
            Some("libfaketime is not installed (Debian: faketime)".to_string())
        } else if nemesis == Nemesis::PowerLoss {
            raftkv_chaos::power::unavailable()
        } else {
            None
        };
        match why_not {
            Some(why) => eprintln!("skipping nemesis {}: {why}", nemesis.name()),
            None => chosen.push(nemesis),
        }
    }
    if chosen.is_empty() && args.nemesis != "none" {
        return Err("no nemesis can run here (see above)".into());
    }
    Ok(chosen)
}

/// `cargo build --release --bin raftkv` in this workspace: the binary under test is the current code.
fn build_binary() -> Result<PathBuf, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("building the raftkv binary (cargo build --release --bin raftkv)...");
    let status = std::process::Command::new(cargo)
        .args(["build", "--release", "--quiet", "--bin", "raftkv"])
        .current_dir(&root)
        .status()
        .map_err(|e| format!("cargo: {e}"))?;
    if !status.success() {
        return Err("cargo build --release --bin raftkv failed".into());
    }
    let binary = root.join("target/release/raftkv");
    binary
        .canonicalize()
        .map_err(|e| format!("{}: {e}", binary.display()))
}

fn configure(args: &Args) -> Result<RunConfig, String> {
    if args.nodes < 3 || args.clients == 0 || args.keys == 0 {
        return Err("--nodes must be at least 3, --clients and --keys at least 1".into());
    }
    let nemeses = select_nemeses(args)?;
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let binary = match &args.binary {
        Some(binary) => binary.clone(),
        None => build_binary()?,
    };
    let dir = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("raftkv-chaos-{}", std::process::id()))
    });
    Ok(RunConfig {
        nemeses,
        duration: Duration::from_secs(args.duration),
        nodes: args.nodes,
        netns: args.netns,
        workload: Settings {
            clients: args.clients,
            keys: args.keys,
            key_lifetime: Duration::from_secs(args.key_lifetime_s.max(1)),
            op_timeout: Duration::from_millis(args.op_timeout_ms),
            think: Duration::from_millis(args.think_ms),
            seed,
        },
        binary,
        remove_dir_on_pass: !args.keep && args.dir.is_none(),
        dir,
        base_port: args
            .base_port
            .unwrap_or(20_000 + (std::process::id() % 200) as u16 * 50),
        skip_fsync: args.unsafe_skip_fsync,
        lease_reads: args.lease_reads,
        timing: Timing::default(),
    })
}

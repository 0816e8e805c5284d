//! `raftkv server`: runs one node of a cluster.
//!
//! This module only turns the command line into a validated [`ClusterConfig`] and a runtime; the node
//! itself lives in `raftkv_server`. Every configuration problem is reported before anything starts,
//! naming the field or flag at fault, so a misconfigured node never half-starts.

use anyhow::{anyhow, Context};
use raftkv_server::config::ClusterConfig;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Cluster configuration file (TOML), shared by every node.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// This node's id in the configuration.
    #[arg(long)]
    pub id: u64,
    /// Override this node's client address (host:port). Other nodes still redirect clients to the
    /// address in the file, so change the file too for anything but local experiments.
    #[arg(long, value_name = "HOST:PORT")]
    pub client_addr: Option<String>,
    /// Override this node's peer address (host:port); same caveat as --client-addr.
    #[arg(long, value_name = "HOST:PORT")]
    pub peer_addr: Option<String>,
    /// Override this node's data directory.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Override tunables.tick_ms.
    #[arg(long, value_name = "MS")]
    pub tick_ms: Option<u64>,
    /// Override tunables.heartbeat_ms.
    #[arg(long, value_name = "MS")]
    pub heartbeat_ms: Option<u64>,
    /// Override tunables.election_timeout_ms.
    #[arg(long, value_name = "MS")]
    pub election_timeout_ms: Option<u64>,
    /// Override tunables.max_value_size (bytes).
    #[arg(long, value_name = "BYTES")]
    pub max_value_size: Option<usize>,
    /// Override tunables.max_connections.
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
}

pub fn run(args: Args) -> ExitCode {
    init_logging();
    let config = match load_config(&args) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match runtime_builder().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(raftkv_server::run_node(config, args.id));
    // Connection tasks may still be parked on sockets; they hold nothing that needs flushing.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a terminal: `raftkv cluster` sends stderr to log files, where escapes are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // A second initialisation (never expected here) must not abort the server.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

/// Loads the file, applies the flags, and validates the result.
pub fn load_config(args: &Args) -> anyhow::Result<ClusterConfig> {
    let mut config = ClusterConfig::load(&args.config)?;
    let index = config
        .nodes
        .iter()
        .position(|node| node.id == args.id)
        .ok_or_else(|| {
            let ids: Vec<String> = config
                .nodes
                .iter()
                .map(|node| node.id.to_string())
                .collect();
            anyhow!(
                "--id {}: no such node in {} (ids: {})",
                args.id,
                args.config.display(),
                ids.join(", ")
            )
        })?;

    // (field path as validation reports it, flag that set it) so an error caused by a flag names the flag.
    let mut overridden: Vec<(String, String)> = Vec::new();
    let node = &mut config.nodes[index];
    if let Some(addr) = &args.client_addr {
        node.client_addr = addr.clone();
        overridden.push((
            format!("nodes[{index}].client_addr"),
            format!("--client-addr {addr}"),
        ));
    }
    if let Some(addr) = &args.peer_addr {
        node.peer_addr = addr.clone();
        overridden.push((
            format!("nodes[{index}].peer_addr"),
            format!("--peer-addr {addr}"),
        ));
    }
    if let Some(dir) = &args.data_dir {
        node.data_dir = dir.clone();
        overridden.push((
            format!("nodes[{index}].data_dir"),
            format!("--data-dir {}", dir.display()),
        ));
    }
    let tunables = &mut config.tunables;
    let mut set = |field: &mut u64, value: Option<u64>, name: &str, flag: &str| {
        if let Some(value) = value {
            *field = value;
            overridden.push((format!("tunables.{name}"), format!("{flag} {value}")));
        }
    };
    set(&mut tunables.tick_ms, args.tick_ms, "tick_ms", "--tick-ms");
    set(
        &mut tunables.heartbeat_ms,
        args.heartbeat_ms,
        "heartbeat_ms",
        "--heartbeat-ms",
    );
    set(
        &mut tunables.election_timeout_ms,
        args.election_timeout_ms,
        "election_timeout_ms",
        "--election-timeout-ms",
    );
    if let Some(size) = args.max_value_size {
        tunables.max_value_size = size;
        overridden.push((
            "tunables.max_value_size".into(),
            format!("--max-value-size {size}"),
        ));
    }
    if let Some(count) = args.max_connections {
        tunables.max_connections = count;
        overridden.push((
            "tunables.max_connections".into(),
            format!("--max-connections {count}"),
        ));
    }

    if let Err(err) = config.validate() {
        let message = format!("{err:#}");
        // Tunables are matched by bare name because a rule between two of them (heartbeat below the
        // election timeout) is reported under one field but may have been broken by either flag.
        let culprits: Vec<&str> = overridden
            .iter()
            .filter(|(field, _)| message.contains(field.strip_prefix("tunables.").unwrap_or(field)))
            .map(|(_, flag)| flag.as_str())
            .collect();
        let err = if culprits.is_empty() {
            err
        } else {
            err.context(format!(
                "invalid command-line override ({})",
                culprits.join(", ")
            ))
        };
        return Err(err).with_context(|| format!("config {}", args.config.display()));
    }
    Ok(config)
}

/// One thread runs the whole node (peers, clients, the Raft loop); the disk has its own. With several
/// nodes and the clients sharing a few cores, hopping between worker threads costs more than it gains.
/// `RAFTKV_WORKER_THREADS=N` (N > 0) picks a multi-threaded runtime instead, for machines with cores
/// to spare.
fn runtime_builder() -> tokio::runtime::Builder {
    match std::env::var("RAFTKV_WORKER_THREADS")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
    {
        Some(threads) if threads > 0 => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(threads);
            builder
        }
        _ => tokio::runtime::Builder::new_current_thread(),
    }
}

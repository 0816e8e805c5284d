//! `raftkv server`: runs one node of a cluster.
//!
//! This module only turns the command line into a validated [`ClusterConfig`] and a runtime; the node
//! itself lives in `raftkv_server`. Every configuration problem is reported before anything starts,
//! naming the field or flag at fault, so a misconfigured node never half-starts.

use anyhow::{anyhow, Context};
use raftkv_server::config::{ClusterConfig, InvalidConfig};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Cluster configuration file (TOML), shared by every node. Optional with --join (then
    /// --cluster-id, --client-addr, --peer-addr and --data-dir say everything needed).
    #[arg(long, value_name = "FILE", required_unless_present = "join")]
    pub config: Option<PathBuf>,
    /// This node's id in the configuration (with --join: its new id in the cluster).
    #[arg(long)]
    pub id: u64,
    /// Join a running cluster through any of these members' client addresses (comma-separated)
    /// instead of bootstrapping a new one: the node adds itself as a learner (unless it is already a
    /// member with the same addresses) and waits for the leader. Promote it with `raftkv members
    /// promote`. On later restarts the flag does no harm.
    #[arg(long, value_delimiter = ',', value_name = "HOST:PORT")]
    pub join: Vec<String>,
    /// The cluster id, when joining without a cluster file.
    #[arg(long, value_name = "ID")]
    pub cluster_id: Option<String>,
    /// Override this node's client address (host:port). Other nodes still redirect clients to the
    /// address in the file, so change the file too for anything but local experiments.
    #[arg(long, value_name = "HOST:PORT")]
    pub client_addr: Option<String>,
    /// Override this node's peer address (host:port); same caveat as --client-addr.
    #[arg(long, value_name = "HOST:PORT")]
    pub peer_addr: Option<String>,
    /// This node's Redis (RESP) address (host:port): sets or overrides resp_addr. A node that joins
    /// with one records it in the membership, so every node can relay Redis clients to it.
    #[arg(long, value_name = "HOST:PORT")]
    pub resp_addr: Option<String>,
    /// This node's HTTP address (host:port) for /metrics, /health and /status: sets or overrides
    /// http_addr.
    #[arg(long, value_name = "HOST:PORT")]
    pub http_addr: Option<String>,
    /// Bind every port on this host (e.g. 0.0.0.0) instead of the advertised addresses' hosts, which
    /// are what other nodes and redirected clients connect to (listen_host in the file).
    #[arg(long, value_name = "HOST")]
    pub listen_host: Option<String>,
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
    /// Log lines as human-readable text, or as one JSON object per line for log shippers.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Last resort after losing a majority for good: start this node as a cluster of one voter holding
    /// everything in its log (see docs/backup.md). Writes acknowledged by the lost nodes that this node
    /// never received are gone. Other nodes of the old cluster must not be started again.
    #[arg(long)]
    pub force_new_cluster: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn run(args: Args) -> ExitCode {
    init_logging(args.log_format);
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
    let outcome = runtime.block_on(async {
        let join = if args.join.is_empty() {
            None
        } else {
            Some(crate::join::join_cluster(&config, args.id, &args.join).await?)
        };
        let options = raftkv_server::StartOptions {
            force_new_cluster: args.force_new_cluster,
            join,
        };
        raftkv_server::run_node_opts(config, args.id, options).await
    });
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

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if format == LogFormat::Json {
        let _ = tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
        return;
    }
    // Colours only for a terminal: `raftkv cluster` sends stderr to log files, where escapes are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // A second initialisation (never expected here) must not abort the server.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

/// Loads the file, applies the flags, and validates the result. A node that joins need not be in the
/// file (nor need there be a file): its own flags describe it.
pub fn load_config(args: &Args) -> anyhow::Result<ClusterConfig> {
    let source = match &args.config {
        Some(path) => path.display().to_string(),
        None => "the command line".to_string(),
    };
    let mut config = match &args.config {
        Some(path) => ClusterConfig::load(path)?,
        None => ClusterConfig {
            cluster_id: args
                .cluster_id
                .clone()
                .context("--join without --config needs --cluster-id")?,
            tunables: Default::default(),
            tls: None,
            nodes: Vec::new(),
        },
    };
    if let Some(cluster_id) = &args.cluster_id {
        config.cluster_id = cluster_id.clone();
    }
    if !args.join.is_empty() && config.node(args.id).is_none() {
        let missing = || {
            anyhow!("--join as a node not in the cluster file needs --client-addr, --peer-addr and --data-dir")
        };
        config.nodes.push(raftkv_server::config::NodeConfig::new(
            args.id,
            args.client_addr.clone().ok_or_else(missing)?,
            args.peer_addr.clone().ok_or_else(missing)?,
            args.data_dir.clone().ok_or_else(missing)?,
        ));
    }
    let index = node_index(&config, args, &source)?;
    let overrides = apply_overrides(&mut config, index, args);
    config
        .validate()
        .map_err(|err| blame_overrides(err, &overrides))
        .with_context(|| format!("config {source}"))?;
    Ok(config)
}

/// The position of node `--id` in the file.
fn node_index(config: &ClusterConfig, args: &Args, source: &str) -> anyhow::Result<usize> {
    config
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
                source,
                ids.join(", ")
            )
        })
}

/// A flag that replaced a value from the file.
struct Override {
    /// The field's path as validation reports it (`nodes[0].client_addr`, `tunables.tick_ms`).
    field: String,
    /// The flag as given, e.g. `--tick-ms 5`.
    flag: String,
}

/// Writes each flag given into its field of `config` (node `index` for per-node flags), in flag order.
fn apply_overrides(config: &mut ClusterConfig, index: usize, args: &Args) -> Vec<Override> {
    let mut applied = Vec::new();
    let node = &mut config.nodes[index];
    let node_field = |name: &str| format!("nodes[{index}].{name}");
    set(
        &mut applied,
        &mut node.client_addr,
        &args.client_addr,
        node_field("client_addr"),
        "--client-addr",
    );
    set(
        &mut applied,
        &mut node.peer_addr,
        &args.peer_addr,
        node_field("peer_addr"),
        "--peer-addr",
    );
    for (target, value, name, flag) in [
        (
            &mut node.resp_addr,
            &args.resp_addr,
            "resp_addr",
            "--resp-addr",
        ),
        (
            &mut node.http_addr,
            &args.http_addr,
            "http_addr",
            "--http-addr",
        ),
    ] {
        if let Some(addr) = value {
            *target = Some(addr.clone());
            applied.push(Override {
                field: node_field(name),
                flag: format!("{flag} {addr}"),
            });
        }
    }
    if let Some(host) = &args.listen_host {
        node.listen_host = Some(host.clone());
        applied.push(Override {
            field: node_field("listen_host"),
            flag: format!("--listen-host {host}"),
        });
    }
    if let Some(dir) = &args.data_dir {
        node.data_dir = dir.clone();
        applied.push(Override {
            field: node_field("data_dir"),
            flag: format!("--data-dir {}", dir.display()),
        });
    }
    let t = &mut config.tunables;
    set(
        &mut applied,
        &mut t.tick_ms,
        &args.tick_ms,
        "tunables.tick_ms".into(),
        "--tick-ms",
    );
    set(
        &mut applied,
        &mut t.heartbeat_ms,
        &args.heartbeat_ms,
        "tunables.heartbeat_ms".into(),
        "--heartbeat-ms",
    );
    set(
        &mut applied,
        &mut t.election_timeout_ms,
        &args.election_timeout_ms,
        "tunables.election_timeout_ms".into(),
        "--election-timeout-ms",
    );
    set(
        &mut applied,
        &mut t.max_value_size,
        &args.max_value_size,
        "tunables.max_value_size".into(),
        "--max-value-size",
    );
    set(
        &mut applied,
        &mut t.max_connections,
        &args.max_connections,
        "tunables.max_connections".into(),
        "--max-connections",
    );
    applied
}

/// If `value` was given (as `flag`), writes it into `target` and records that it overrode `field`.
fn set<T: Clone + std::fmt::Display>(
    applied: &mut Vec<Override>,
    target: &mut T,
    value: &Option<T>,
    field: String,
    flag: &str,
) {
    if let Some(value) = value {
        *target = value.clone();
        applied.push(Override {
            field,
            flag: format!("{flag} {value}"),
        });
    }
}

/// Names the flags that set a field the broken rule reads (a rule between two fields, such as the
/// heartbeat below the election timeout, is reported under one of them but may be broken by either).
fn blame_overrides(err: anyhow::Error, overrides: &[Override]) -> anyhow::Error {
    let Some(invalid) = err.downcast_ref::<InvalidConfig>() else {
        return err;
    };
    let culprits: Vec<&str> = overrides
        .iter()
        .filter(|o| invalid.involves(&o.field))
        .map(|o| o.flag.as_str())
        .collect();
    if culprits.is_empty() {
        err
    } else {
        err.context(format!(
            "invalid command-line override ({})",
            culprits.join(", ")
        ))
    }
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

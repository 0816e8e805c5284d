//! `raftkv cluster`: starts a local cluster of N `raftkv server` processes and keeps it in the foreground.
//!
//! The directory is the cluster's identity: the first run writes `<dir>/cluster.toml` and every later run
//! with the same directory restarts that same cluster on its data. Children run in their own process
//! group, so a terminal's Ctrl-C reaches only this spawner, which then stops them in order (SIGTERM, so a
//! leader can hand over, then SIGKILL after a grace period).

use anyhow::{anyhow, bail, Context};
use raftkv_server::config::{ClientTls, ClusterConfig, NodeConfig, Tunables};
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};

const DEFAULT_NODES: u64 = 5;
const DEFAULT_CLIENT_PORT: u16 = 9000;
/// Peer ports start this far above the client ports unless `--peer-port` says otherwise.
const DEFAULT_PEER_PORT_OFFSET: u16 = 1000;
/// HTTP ports (metrics, health, status) start this far above the client ports unless `--http-port` says otherwise.
const DEFAULT_HTTP_PORT_OFFSET: u16 = 2000;
/// Redis (RESP) ports are the client ports plus this (9000 -> 12000).
const DEFAULT_RESP_PORT_OFFSET: u16 = 3000;
const CONFIG_FILE: &str = "cluster.toml";
/// How long stopped children get to exit after SIGTERM before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// After this long without a leader the spawner says so (and keeps waiting).
const LEADER_PATIENCE: Duration = Duration::from_secs(30);
/// A key no real client is expected to use: the probe only looks at the kind of answer.
const PROBE_REQUEST: &[u8] = b"get __raftkv_probe\r\n";

#[derive(clap::Args)]
pub struct Args {
    /// Number of nodes of a new cluster [default: 5]. Must match an existing cluster's size.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub nodes: Option<u64>,
    /// The cluster's directory: its config, the nodes' data and logs.
    #[arg(long, default_value = "raftkv-cluster")]
    pub dir: PathBuf,
    /// Client port of node 1; node i uses port + i - 1 [default: 9000].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,
    /// Peer port of node 1; node i uses peer-port + i - 1 [default: port + 1000].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub peer_port: Option<u16>,
    /// HTTP port (metrics, health, status) of node 1; node i uses http-port + i - 1 [default: port + 2000].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub http_port: Option<u16>,
    /// A new cluster uses mutual TLS between its nodes, with a CA and certificates made in <dir>/tls.
    #[arg(long)]
    pub tls: bool,
    /// A new cluster's client ports speak TLS too ("verify": and demand client certificates); clients
    /// then need --tls-ca <dir>/tls/ca.pem (and --tls-cert/--tls-key <dir>/tls/client*.pem).
    #[arg(long, value_name = "MODE", num_args = 0..=1, default_missing_value = "on", value_parser = ["on", "verify"])]
    pub client_tls: Option<String>,
    /// A new cluster starts with the state in this backup file (see `raftkv backup`): every node's
    /// data directory is restored from it before the nodes start.
    #[arg(long, value_name = "FILE")]
    pub restore: Option<PathBuf>,
}

pub fn run(args: Args) -> ExitCode {
    let Some(runtime) = crate::command_runtime() else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(run_cluster(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_cluster(args: Args) -> anyhow::Result<()> {
    let config_path = args.dir.join(CONFIG_FILE);
    let config = if config_path.exists() {
        if args.restore.is_some() {
            bail!(
                "--restore seeds a new cluster, and {} already holds one; use a new --dir",
                args.dir.display()
            );
        }
        let config = ClusterConfig::load(&config_path)?;
        check_flags_match(&args, &config, &config_path)?;
        println!(
            "restarting the cluster in {} ({} nodes)",
            args.dir.display(),
            config.nodes.len()
        );
        config
    } else {
        // A bad backup file is refused before anything is created.
        let backup = match &args.restore {
            Some(file) => {
                let data = std::fs::read(file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                raftkv_kv::backup::read_backup(&data)
                    .with_context(|| format!("--restore {}", file.display()))?;
                Some((file, raftkv_client::bytes::Bytes::from(data)))
            }
            None => None,
        };
        let mut config = new_config(&args)?;
        std::fs::create_dir_all(&args.dir).with_context(|| {
            format!("--dir {}: cannot create the directory", args.dir.display())
        })?;
        if args.tls || args.client_tls.is_some() {
            let client = match args.client_tls.as_deref() {
                Some("verify") => ClientTls::Verify,
                Some(_) => ClientTls::On,
                None => ClientTls::Off,
            };
            crate::certs_cmd::generate(&config, &args.dir.join("tls"), true)?;
            // Relative to the directory, like the data directories, so it can move as a whole.
            crate::certs_cmd::use_files(&mut config, Path::new("tls"), client);
            config.tls.iter_mut().for_each(|tls| tls.peer = args.tls);
        }
        write_atomically(&config_path, &config.to_toml())?;
        println!(
            "created a {}-node cluster in {}",
            config.nodes.len(),
            args.dir.display()
        );
        // Load it back so data directories resolve exactly as the servers will resolve them.
        let config = ClusterConfig::load(&config_path)?;
        if let Some((file, data)) = backup {
            for node in &config.nodes {
                let restored = raftkv_server::restore::restore_node(&config, node.id, &data)
                    .with_context(|| format!("--restore {}", file.display()));
                let header = match restored {
                    Ok(header) => header,
                    Err(err) => {
                        // Leave no half-restored cluster behind: a retry starts from scratch.
                        for node in &config.nodes {
                            let _ = std::fs::remove_dir_all(&node.data_dir);
                        }
                        let _ = std::fs::remove_file(&config_path);
                        return Err(err);
                    }
                };
                if node.id == 1 {
                    println!(
                        "restored every node from {} (index {}, {} keys)",
                        file.display(),
                        header.index,
                        header.keys
                    );
                }
            }
        }
        config
    };
    check_ports_free(&config)?;

    // Catch signals before any child exists, so an early Ctrl-C still stops them.
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;

    let mut nodes: Vec<NodeProcess> = Vec::new();
    for node in &config.nodes {
        match spawn_node(&config_path, &args.dir, node) {
            Ok(process) => nodes.push(process),
            Err(err) => {
                stop_all(&mut nodes, &mut sigint, &mut sigterm).await;
                return Err(err);
            }
        }
    }
    print_table(&config, &nodes);

    let leader_search = find_leader(&config);
    tokio::pin!(leader_search);
    let mut leader_found = false;
    let mut exit_check = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            (id, addr) = &mut leader_search, if !leader_found => {
                leader_found = true;
                println!("leader: node {id} at {addr}");
            }
            _ = exit_check.tick() => {
                report_exits(&mut nodes);
                if nodes.iter().all(|node| node.exited.is_some()) {
                    bail!("every node has exited; see the logs in {}", args.dir.display());
                }
            }
        }
    }
    println!(
        "stopping {} nodes...",
        nodes.iter().filter(|node| node.exited.is_none()).count()
    );
    stop_all(&mut nodes, &mut sigint, &mut sigterm).await;
    for node in &nodes {
        let _ = std::fs::remove_file(pid_file(&args.dir, node.id));
    }
    println!("all nodes stopped");
    Ok(())
}

fn new_config(args: &Args) -> anyhow::Result<ClusterConfig> {
    let count = args.nodes.unwrap_or(DEFAULT_NODES);
    let port = args.port.unwrap_or(DEFAULT_CLIENT_PORT);
    let peer_port = match args.peer_port {
        Some(peer_port) => peer_port,
        None => port.checked_add(DEFAULT_PEER_PORT_OFFSET).ok_or_else(|| {
            anyhow!("--port {port}: the default peer ports (port + {DEFAULT_PEER_PORT_OFFSET}) exceed 65535; set --peer-port")
        })?,
    };
    let last = |first: u16, flag: &str| -> anyhow::Result<u16> {
        u16::try_from(u64::from(first) + count - 1)
            .map_err(|_| anyhow!("{flag} {first}: {count} nodes would need ports beyond 65535"))
    };
    let (last_client, last_peer) = (last(port, "--port")?, last(peer_port, "--peer-port")?);
    if peer_port <= last_client && port <= last_peer {
        bail!(
            "--peer-port {peer_port}: peer ports {peer_port}-{last_peer} overlap client ports {port}-{last_client}"
        );
    }
    let http_port = match args.http_port {
        Some(http_port) => http_port,
        None => port.checked_add(DEFAULT_HTTP_PORT_OFFSET).ok_or_else(|| {
            anyhow!("--port {port}: the default HTTP ports (port + {DEFAULT_HTTP_PORT_OFFSET}) exceed 65535; set --http-port")
        })?,
    };
    let last_http = last(http_port, "--http-port")?;
    for (what, first, end) in [
        ("client", port, last_client),
        ("peer", peer_port, last_peer),
    ] {
        if http_port <= end && first <= last_http {
            bail!(
                "--http-port {http_port}: HTTP ports {http_port}-{last_http} overlap {what} ports {first}-{end}"
            );
        }
    }
    let nodes = (1..=count)
        .map(|id| {
            let offset = (id - 1) as u16;
            let mut node = NodeConfig::new(
                id,
                format!("127.0.0.1:{}", port + offset),
                format!("127.0.0.1:{}", peer_port + offset),
                // Relative, so the directory can be moved as a whole.
                PathBuf::from(format!("node{id}")),
            );
            node.http_addr = Some(format!("127.0.0.1:{}", http_port + offset));
            // The Redis port, when the client port leaves room for it.
            node.resp_addr = port
                .checked_add(DEFAULT_RESP_PORT_OFFSET + offset)
                .map(|resp| format!("127.0.0.1:{resp}"));
            node
        })
        .collect();
    let random = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    let config = ClusterConfig {
        cluster_id: format!("local-{random:016x}"),
        tunables: Tunables::default(),
        tls: None,
        nodes,
    };
    config.validate()?;
    Ok(config)
}

/// An existing cluster keeps its shape; a flag that disagrees is a mistake worth stopping for.
fn check_flags_match(args: &Args, config: &ClusterConfig, path: &Path) -> anyhow::Result<()> {
    let hint = "drop the flag to restart the existing cluster, or use another --dir";
    let peer_tls = config.tls.as_ref().is_some_and(|tls| tls.peer);
    let client_tls = config.tls.as_ref().map_or(ClientTls::Off, |tls| tls.client);
    if args.tls && !peer_tls {
        bail!("--tls: {} has no peer TLS; {hint}", path.display());
    }
    let wanted_client = match args.client_tls.as_deref() {
        Some("verify") => Some(ClientTls::Verify),
        Some(_) => Some(ClientTls::On),
        None => None,
    };
    if wanted_client.is_some_and(|wanted| wanted != client_tls) {
        bail!(
            "--client-tls: {} has client TLS {client_tls:?}; {hint}",
            path.display()
        );
    }
    if let Some(count) = args.nodes {
        if count != config.nodes.len() as u64 {
            bail!(
                "--nodes {count} conflicts with {}, which has {} nodes; {hint}",
                path.display(),
                config.nodes.len()
            );
        }
    }
    let first = &config.nodes[0];
    for (flag, wanted, addr) in [
        ("--port", args.port, &first.client_addr),
        ("--peer-port", args.peer_port, &first.peer_addr),
    ] {
        if let Some(wanted) = wanted {
            let actual = addr
                .rsplit_once(':')
                .and_then(|(_, port)| port.parse::<u16>().ok());
            if actual != Some(wanted) {
                bail!(
                    "{flag} {wanted} conflicts with {}, where node {} uses {addr}; {hint}",
                    path.display(),
                    first.id
                );
            }
        }
    }
    Ok(())
}

pub fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let temporary = path.with_extension("toml.tmp");
    std::fs::write(&temporary, text)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    Ok(())
}

/// Fails early, naming the port, instead of letting a child die with the reason buried in its log.
fn check_ports_free(config: &ClusterConfig) -> anyhow::Result<()> {
    for node in &config.nodes {
        let http = node.http_addr.iter().map(|addr| ("http", addr));
        let resp = node.resp_addr.iter().map(|addr| ("Redis", addr));
        for (what, addr) in [("client", &node.client_addr), ("peer", &node.peer_addr)]
            .into_iter()
            .chain(http)
            .chain(resp)
        {
            if let Err(err) = std::net::TcpListener::bind(addr.as_str()) {
                bail!("node {} {what} address {addr} is unavailable ({err}); is this cluster already running?", node.id);
            }
        }
    }
    Ok(())
}

struct NodeProcess {
    id: u64,
    child: Child,
    log: PathBuf,
    exited: Option<ExitStatus>,
}

/// Where a running node's process id is kept: `<dir>/node<id>.pid`.
fn pid_file(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("node{id}.pid"))
}

fn spawn_node(config_path: &Path, dir: &Path, node: &NodeConfig) -> anyhow::Result<NodeProcess> {
    let exe = std::env::current_exe().context("cannot find the raftkv executable")?;
    let log = dir.join(format!("node{}.log", node.id));
    // Appending keeps the history of earlier runs of the same cluster.
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    let child = Command::new(exe)
        .arg("server")
        .arg("--config")
        .arg(config_path)
        .arg("--id")
        .arg(node.id.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::from(file.try_clone()?))
        .stderr(Stdio::from(file))
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start node {}", node.id))?;
    // For tools on this machine (`raftkv bench --cluster-dir` samples the nodes' CPU time).
    if let Some(pid) = child.id() {
        let _ = std::fs::write(pid_file(dir, node.id), format!("{pid}\n"));
    }
    Ok(NodeProcess {
        id: node.id,
        child,
        log,
        exited: None,
    })
}

fn print_table(config: &ClusterConfig, nodes: &[NodeProcess]) {
    let rows: Vec<[String; 6]> = config
        .nodes
        .iter()
        .zip(nodes)
        .map(|(node, process)| {
            [
                node.id.to_string(),
                node.client_addr.clone(),
                node.resp_addr.clone().unwrap_or_else(|| "-".into()),
                node.peer_addr.clone(),
                node.data_dir.display().to_string(),
                process.log.display().to_string(),
            ]
        })
        .collect();
    let header = [
        "node",
        "client address",
        "redis address",
        "peer address",
        "data dir",
        "log",
    ];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(&header.map(String::from));
    for row in &rows {
        line(row);
    }
    if let Some(tls) = &config.tls {
        let dir = tls
            .ca
            .parent()
            .unwrap_or(Path::new("."))
            .display()
            .to_string();
        if tls.peer {
            println!("peers: mutual TLS (CA {})", tls.ca.display());
        }
        match tls.client {
            ClientTls::Off => {}
            ClientTls::On => println!(
                "clients: TLS; use --tls-ca {dir}/ca.pem (redis-cli: --tls --cacert {dir}/ca.pem)"
            ),
            ClientTls::Verify => println!(
                "clients: TLS with client certificates; use --tls-ca {dir}/ca.pem \
                 --tls-cert {dir}/client.pem --tls-key {dir}/client-key.pem \
                 (redis-cli: --tls --cacert {dir}/ca.pem --cert {dir}/client.pem \
                 --key {dir}/client-key.pem)"
            ),
        }
    }
}

fn report_exits(nodes: &mut [NodeProcess]) {
    for node in nodes.iter_mut().filter(|node| node.exited.is_none()) {
        match node.child.try_wait() {
            Ok(Some(status)) => {
                println!(
                    "node {} exited unexpectedly ({status}); see {}",
                    node.id,
                    node.log.display()
                );
                node.exited = Some(status);
            }
            Ok(None) => {}
            Err(err) => println!("cannot check node {}: {err}", node.id),
        }
    }
}

/// Sends SIGTERM to every running child, waits up to [`STOP_GRACE`], then kills the rest. A second
/// Ctrl-C or SIGTERM skips the wait.
async fn stop_all(
    nodes: &mut [NodeProcess],
    sigint: &mut tokio::signal::unix::Signal,
    sigterm: &mut tokio::signal::unix::Signal,
) {
    for node in nodes.iter().filter(|node| node.exited.is_none()) {
        if let Some(pid) = node.child.id() {
            terminate(pid);
        }
    }
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    for node in nodes.iter_mut().filter(|node| node.exited.is_none()) {
        let outcome = tokio::select! {
            status = node.child.wait() => status.ok(),
            _ = tokio::time::sleep_until(deadline) => None,
            _ = sigint.recv() => None,
            _ = sigterm.recv() => None,
        };
        match outcome {
            Some(status) => node.exited = Some(status),
            None => {
                println!("node {} did not stop in time; killing it", node.id);
                let _ = node.child.start_kill();
                node.exited = node.child.wait().await.ok();
            }
        }
    }
}

fn terminate(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) takes plain integers and touches no memory of ours; `pid` is our own child, which
    // has not been reaped yet (we only reap in `stop_all` after this), so it cannot be a recycled pid.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
}

enum ProbeAnswer {
    Leader,
    NotLeader,
}

/// Polls every node until one answers a read as the leader. Says so once if that takes long.
async fn find_leader(config: &ClusterConfig) -> (u64, String) {
    let started = Instant::now();
    let mut warned = false;
    println!("waiting for a leader...");
    let tls = match probe_tls(config) {
        Ok(tls) => tls,
        Err(err) => {
            println!("cannot probe the TLS client ports ({err:#}); not waiting for a leader");
            return std::future::pending().await;
        }
    };
    loop {
        let mut probes = tokio::task::JoinSet::new();
        for node in &config.nodes {
            let (id, addr) = (node.id, node.client_addr.clone());
            let tls = tls.clone();
            probes.spawn(async move {
                let answer = probe(&addr, tls.as_ref()).await;
                (id, addr, answer)
            });
        }
        while let Some(joined) = probes.join_next().await {
            if let Ok((id, addr, Ok(ProbeAnswer::Leader))) = joined {
                return (id, addr);
            }
        }
        if !warned && started.elapsed() > LEADER_PATIENCE {
            warned = true;
            println!(
                "no leader after {}s yet; still waiting (see the node logs)",
                LEADER_PATIENCE.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// How the spawner reaches TLS client ports: trusting the cluster's CA and, where the ports demand a
/// client certificate, presenting node 1's (node certificates are valid client certificates).
fn probe_tls(
    config: &ClusterConfig,
) -> anyhow::Result<Option<std::sync::Arc<raftkv_tls::rustls::ClientConfig>>> {
    let Some(tls) = config
        .tls
        .as_ref()
        .filter(|tls| tls.client != ClientTls::Off)
    else {
        return Ok(None);
    };
    let first = &config.nodes[0];
    let identity = match (&first.tls_cert, &first.tls_key, tls.client) {
        (Some(cert), Some(key), ClientTls::Verify) => Some((cert.as_path(), key.as_path())),
        _ => None,
    };
    Ok(Some(raftkv_client::tls_config(&tls.ca, identity)?))
}

async fn probe(
    addr: &str,
    tls: Option<&std::sync::Arc<raftkv_tls::rustls::ClientConfig>>,
) -> anyhow::Result<ProbeAnswer> {
    let exchange = async {
        let mut stream = crate::tls_args::connect(addr, tls).await?;
        stream.write_all(PROBE_REQUEST).await?;
        stream.flush().await?;
        let mut line = Vec::new();
        // A reply line is short; cap it so a confused listener cannot make us buffer much.
        let mut reader = BufReader::new(stream).take(1024);
        reader.read_until(b'\n', &mut line).await?;
        anyhow::Ok(line)
    };
    // A node without a leader holds the request up to two election timeouts before answering.
    let line = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| anyhow!("probe timed out"))??;
    if line.starts_with(b"ERR_NOT_FOUND") || line.starts_with(b"VALUE") {
        Ok(ProbeAnswer::Leader)
    } else {
        Ok(ProbeAnswer::NotLeader)
    }
}

//! The cluster configuration: one TOML file shared by every node, naming the cluster, each node's
//! addresses and data directory, and the tunables.
//!
//! Loading always validates, so the rest of the server may rely on what [`ClusterConfig::validate`]
//! checks (unique non-zero ids, parseable distinct addresses, coherent timeouts) without re-checking.
//! Every validation error starts with the path of the offending field (`nodes[2].peer_addr: ...`) so an
//! operator can find it in the file.

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Largest value size a configuration may allow. A value travels inside one Raft entry inside one peer
/// frame, so it must stay well below the transport's frame limit.
pub const MAX_VALUE_SIZE_LIMIT: usize = 64 << 20;

/// Longest accepted cluster id; it is sent in every peer handshake.
pub const MAX_CLUSTER_ID_LEN: usize = 128;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Names the cluster; peers with another id are refused, so two local clusters cannot cross-talk.
    pub cluster_id: String,
    #[serde(default)]
    pub tunables: Tunables,
    pub nodes: Vec<NodeConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Non-zero: 0 means "no node" in the Raft core and on the wire.
    pub id: u64,
    /// `host:port` where clients connect; also what followers put in `ERR_REDIRECT`.
    pub client_addr: String,
    /// `host:port` where the other nodes connect for Raft traffic.
    pub peer_addr: String,
    /// Relative paths in the file are relative to the file's directory (resolved by [`ClusterConfig::load`]).
    pub data_dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tunables {
    /// Period of the Raft core's logical clock.
    pub tick_ms: u64,
    /// Interval between a leader's heartbeats.
    pub heartbeat_ms: u64,
    /// Base election timeout; the core randomises it in `[t, 2t)`.
    pub election_timeout_ms: u64,
    /// Largest value a `set` or `cas` may carry.
    pub max_value_size: usize,
    /// Most simultaneous client connections per node.
    pub max_connections: usize,
    /// Most request bytes buffered per client connection before the server stops reading from it.
    pub max_request_bytes_in_flight: usize,
    /// Log entries since the last snapshot that trigger a new one.
    pub snapshot_entries: u64,
    /// Log bytes since the last snapshot that trigger a new one.
    pub snapshot_bytes: u64,
}

impl Default for Tunables {
    fn default() -> Self {
        // LAN-friendly: a loopback round trip is ~55 µs and an fsync ~0.3 ms, so 50 ms heartbeats and a
        // 500 ms election timeout leave two orders of magnitude of slack against spurious elections.
        Tunables {
            tick_ms: 10,
            heartbeat_ms: 50,
            election_timeout_ms: 500,
            max_value_size: 1 << 20,
            max_connections: 10_000,
            max_request_bytes_in_flight: 4 << 20,
            snapshot_entries: 100_000,
            snapshot_bytes: 8 << 20,
        }
    }
}

impl ClusterConfig {
    /// Reads, parses and validates the file at `path`. Relative data directories are resolved against
    /// the file's directory so the cluster does not depend on the working directory it is started from.
    pub fn load(path: &Path) -> anyhow::Result<ClusterConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let mut config: ClusterConfig = toml::from_str(&text)
            .map_err(|err| anyhow::anyhow!("{}: {}", path.display(), err.to_string().trim_end()))?;
        let base = path.parent().unwrap_or(Path::new(""));
        for node in &mut config.nodes {
            if node.data_dir.is_relative() && !node.data_dir.as_os_str().is_empty() {
                node.data_dir = base.join(&node.data_dir);
            }
        }
        config
            .validate()
            .with_context(|| format!("invalid config {}", path.display()))?;
        Ok(config)
    }

    /// Checks everything the server relies on. The error names the first bad field.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.cluster_id.trim().is_empty() {
            bail!("cluster_id: must not be empty");
        }
        if self.cluster_id.len() > MAX_CLUSTER_ID_LEN {
            bail!("cluster_id: longer than {MAX_CLUSTER_ID_LEN} bytes");
        }
        self.tunables.validate()?;
        if self.nodes.is_empty() {
            bail!("nodes: at least one node is required");
        }

        let mut ids: HashMap<u64, usize> = HashMap::new();
        let mut addrs: HashMap<String, String> = HashMap::new();
        let mut data_dirs: HashMap<&Path, usize> = HashMap::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if node.id == 0 {
                bail!("nodes[{i}].id: must be non-zero");
            }
            if let Some(first) = ids.insert(node.id, i) {
                bail!(
                    "nodes[{i}].id: duplicate id {} (also nodes[{first}].id)",
                    node.id
                );
            }
            for (field, addr) in [
                ("client_addr", &node.client_addr),
                ("peer_addr", &node.peer_addr),
            ] {
                let path = format!("nodes[{i}].{field}");
                let canonical = parse_host_port(addr)
                    .map_err(|why| anyhow::anyhow!("{path}: invalid address '{addr}': {why}"))?;
                if let Some(other) = addrs.insert(canonical, path.clone()) {
                    bail!("{path}: address '{addr}' is already used by {other}");
                }
            }
            if node.data_dir.as_os_str().is_empty() {
                bail!("nodes[{i}].data_dir: must not be empty");
            }
            if let Some(first) = data_dirs.insert(node.data_dir.as_path(), i) {
                bail!(
                    "nodes[{i}].data_dir: '{}' is also the data_dir of nodes[{first}]",
                    node.data_dir.display()
                );
            }
        }
        Ok(())
    }

    pub fn node(&self, id: u64) -> Option<&NodeConfig> {
        self.nodes.iter().find(|node| node.id == id)
    }

    /// The ids of every node, in file order.
    pub fn node_ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|node| node.id).collect()
    }

    pub fn to_toml(&self) -> String {
        // Serialising plain strings, integers and paths cannot fail, except for a non-UTF-8 path, which
        // `toml` rejects; fall back to a lossy rendering rather than panic.
        match toml::to_string_pretty(self) {
            Ok(text) => text,
            Err(_) => {
                let mut lossy = self.clone();
                for node in &mut lossy.nodes {
                    node.data_dir = PathBuf::from(node.data_dir.to_string_lossy().into_owned());
                }
                toml::to_string_pretty(&lossy).unwrap_or_default()
            }
        }
    }
}

impl Tunables {
    pub fn validate(&self) -> anyhow::Result<()> {
        let t = self;
        if t.tick_ms == 0 {
            bail!("tunables.tick_ms: must be at least 1");
        }
        if t.heartbeat_ms < t.tick_ms {
            bail!(
                "tunables.heartbeat_ms: {} is below tick_ms ({}); a heartbeat needs at least one tick",
                t.heartbeat_ms,
                t.tick_ms
            );
        }
        if t.election_timeout_ms <= t.heartbeat_ms {
            bail!(
                "tunables.election_timeout_ms: {} must exceed heartbeat_ms ({}), or followers campaign \
                 against a live leader",
                t.election_timeout_ms,
                t.heartbeat_ms
            );
        }
        // The core counts in ticks; keep the tick counts representable and the ratio meaningful.
        if t.election_timeout_ms / t.tick_ms > u64::from(u32::MAX / 2) {
            bail!(
                "tunables.election_timeout_ms: too many ticks ({} / tick_ms {})",
                t.election_timeout_ms,
                t.tick_ms
            );
        }
        if t.max_value_size == 0 {
            bail!("tunables.max_value_size: must be at least 1");
        }
        if t.max_value_size > MAX_VALUE_SIZE_LIMIT {
            bail!(
                "tunables.max_value_size: {} exceeds the limit of {MAX_VALUE_SIZE_LIMIT} bytes",
                t.max_value_size
            );
        }
        if t.max_connections == 0 {
            bail!("tunables.max_connections: must be at least 1");
        }
        if t.max_request_bytes_in_flight == 0 {
            bail!("tunables.max_request_bytes_in_flight: must be at least 1");
        }
        if t.snapshot_entries == 0 {
            bail!("tunables.snapshot_entries: must be at least 1");
        }
        if t.snapshot_bytes == 0 {
            bail!("tunables.snapshot_bytes: must be at least 1");
        }
        Ok(())
    }
}

/// Checks `host:port` syntax (IPv6 hosts in brackets) without resolving names, since validation must not
/// depend on DNS. Returns a canonical lower-case form used to detect two fields naming the same address.
pub fn parse_host_port(addr: &str) -> Result<String, String> {
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("missing ']' after IPv6 host")?;
        let port = after.strip_prefix(':').ok_or("expected host:port")?;
        host.parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("'{host}' is not an IPv6 address"))?;
        (host, port)
    } else {
        let (host, port) = addr.rsplit_once(':').ok_or("expected host:port")?;
        if host.contains(':') {
            return Err("IPv6 hosts must be written in brackets, e.g. [::1]:9000".into());
        }
        let valid_name = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_';
        if host.is_empty() || !host.chars().all(valid_name) {
            return Err(format!("'{host}' is not a host name or IP address"));
        }
        (host, port)
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("'{port}' is not a port number"))?;
    if port == 0 {
        return Err("port 0 is not allowed; other nodes and clients need a fixed port".into());
    }
    Ok(format!("{}:{port}", host.to_ascii_lowercase()))
}

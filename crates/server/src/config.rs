//! The cluster configuration: one TOML file shared by every node, naming the cluster, each node's
//! addresses and data directory, and the tunables.
//!
//! Loading always validates, so the rest of the server may rely on what [`ClusterConfig::validate`]
//! checks (unique non-zero ids, parseable distinct addresses, coherent timeouts) without re-checking.
//! Every validation error starts with the path of the offending field (`nodes[2].peer_addr: ...`) so an
//! operator can find it in the file, and is an [`InvalidConfig`] that lists every field the broken rule
//! reads, so a caller that set some fields itself can tell whether it is to blame.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Largest value size a configuration may allow. A value travels inside one Raft entry inside one peer
/// frame, so it must stay well below the transport's frame limit.
pub const MAX_VALUE_SIZE_LIMIT: usize = 64 << 20;

/// Longest accepted cluster id; it is sent in every peer handshake.
pub const MAX_CLUSTER_ID_LEN: usize = 128;

/// A validation rule that does not hold. Shown as `<field>: <why>`, `field` being the path of the field
/// it is reported under; [`InvalidConfig::involves`] also knows the other fields the rule compares it with.
#[derive(Debug)]
pub struct InvalidConfig {
    field: String,
    others: Vec<String>,
    why: String,
}

impl InvalidConfig {
    fn new(field: impl Into<String>, why: impl Into<String>) -> InvalidConfig {
        InvalidConfig {
            field: field.into(),
            others: Vec::new(),
            why: why.into(),
        }
    }

    /// Records that the broken rule also reads the field at `path`.
    fn and(mut self, path: impl Into<String>) -> InvalidConfig {
        self.others.push(path.into());
        self
    }

    /// Whether the broken rule reads the field at `path` (`tunables.tick_ms`, `nodes[0].data_dir`...), so
    /// changing that field may have caused the error.
    pub fn involves(&self, path: &str) -> bool {
        self.field == path || self.others.iter().any(|other| other == path)
    }
}

impl fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.why)
    }
}

impl std::error::Error for InvalidConfig {}

/// Fails validation with `error`.
fn reject(error: InvalidConfig) -> anyhow::Result<()> {
    Err(error.into())
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Names the cluster; peers with another id are refused, so two local clusters cannot cross-talk.
    pub cluster_id: String,
    #[serde(default)]
    pub tunables: Tunables,
    /// TLS on the peer and client ports; absent means neither (and a warning at start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSettings>,
    pub nodes: Vec<NodeConfig>,
}

/// The `[tls]` table: the CA every node trusts, and which ports use TLS. Each node's own certificate and
/// key are `tls_cert` / `tls_key` in its `[[nodes]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM file of the CA (or CAs, during a rotation) that signs the nodes' certificates.
    pub ca: PathBuf,
    /// Mutual TLS between nodes (default: on).
    #[serde(default = "yes")]
    pub peer: bool,
    /// TLS on the client port (default: off).
    #[serde(default)]
    pub client: ClientTls,
}

fn yes() -> bool {
    true
}

/// What the client port demands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientTls {
    /// Plain TCP.
    #[default]
    Off,
    /// TLS; any client may connect.
    On,
    /// TLS, and the client must present a certificate signed by the CA.
    Verify,
}

impl TlsSettings {
    /// Whether the nodes need certificates at all.
    pub fn needs_node_certificates(&self) -> bool {
        self.peer || self.client != ClientTls::Off
    }
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
    /// `host:port` of the node's HTTP endpoint (`/metrics`, `/health`, `/status`); none if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_addr: Option<String>,
    /// `host:port` of the node's Redis (RESP) port; none if absent. See `docs/redis.md`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resp_addr: Option<String>,
    /// The host to bind every port on, when it differs from the host others reach this node at: e.g.
    /// `0.0.0.0` in a container whose advertised addresses name a service (`raftkv-0.raftkv:9000`).
    /// Each port is the one of the advertised address. None: bind the advertised addresses themselves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_host: Option<String>,
    /// PEM certificate chain of this node, naming `node-<id>.raftkv` (and its hosts, for clients).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
}

impl NodeConfig {
    /// Where to bind the port others reach at `advertised` (one of this node's addresses): the same
    /// address, or `listen_host` with its port.
    pub fn bind_addr(&self, advertised: &str) -> String {
        let Some(host) = &self.listen_host else {
            return advertised.to_string();
        };
        let port = advertised.rsplit_once(':').map_or("0", |(_, port)| port);
        if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        }
    }

    /// A node with these addresses and data directory and no TLS files.
    pub fn new(id: u64, client_addr: String, peer_addr: String, data_dir: PathBuf) -> NodeConfig {
        NodeConfig {
            id,
            client_addr,
            peer_addr,
            data_dir,
            http_addr: None,
            resp_addr: None,
            listen_host: None,
            tls_cert: None,
            tls_key: None,
        }
    }
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
    /// Bytes of client requests (keys and values) a node buffers in total, over all connections, before
    /// it stops reading from clients until replies free some.
    pub max_buffered_request_bytes: usize,
    /// A client that has sent part of a request and then nothing for this long is disconnected.
    pub client_request_timeout_s: u64,
    /// A client connection with nothing to read for this long is closed; 0 = never (Redis's
    /// `timeout`).
    pub client_idle_timeout_s: u64,
    /// The leader removes a member it has not heard from for this long; 0 = never (the default). It
    /// never removes a voter this way when fewer than three would remain.
    pub auto_remove_after_s: u64,
    /// TEST ONLY, never in production: acknowledge writes without fsyncing the log, so that a power
    /// loss loses them (`raftkv-chaos --unsafe-skip-fsync` shows its power-loss check catches that).
    /// A node refuses it unless `RAFTKV_ALLOW_UNSAFE_SKIP_FSYNC=1` is in its environment too.
    pub unsafe_skip_fsync: bool,
    /// Serve linearizable reads on the leader from its lease, without a heartbeat round, while a
    /// majority is known to refuse any other candidate. Off by default: safe only while the nodes'
    /// monotonic clocks run at rates within 10 % of each other (wall clocks may still skew and jump).
    /// See docs/protocol.md, "Read consistency".
    pub lease_reads: bool,
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
            max_buffered_request_bytes: 256 << 20,
            client_request_timeout_s: 30,
            client_idle_timeout_s: 0,
            auto_remove_after_s: 0,
            unsafe_skip_fsync: false,
            lease_reads: false,
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
        let resolve = |path: &mut PathBuf| {
            if path.is_relative() && !path.as_os_str().is_empty() {
                *path = base.join(&*path);
            }
        };
        for node in &mut config.nodes {
            resolve(&mut node.data_dir);
            node.tls_cert.iter_mut().for_each(resolve);
            node.tls_key.iter_mut().for_each(resolve);
        }
        if let Some(tls) = &mut config.tls {
            resolve(&mut tls.ca);
        }
        config
            .validate()
            .with_context(|| format!("invalid config {}", path.display()))?;
        Ok(config)
    }

    /// Checks everything the server relies on. The error, an [`InvalidConfig`], names the first bad field.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.cluster_id.trim().is_empty() {
            return reject(InvalidConfig::new("cluster_id", "must not be empty"));
        }
        if self.cluster_id.len() > MAX_CLUSTER_ID_LEN {
            return reject(InvalidConfig::new(
                "cluster_id",
                format!("longer than {MAX_CLUSTER_ID_LEN} bytes"),
            ));
        }
        self.tunables.validate()?;
        if self.nodes.is_empty() {
            return reject(InvalidConfig::new("nodes", "at least one node is required"));
        }

        let mut ids: HashMap<u64, usize> = HashMap::new();
        let mut addrs: HashMap<String, String> = HashMap::new();
        // Two nodes may share a data directory path only on different hosts (as every container of
        // deploy/docker-compose.yml uses /var/lib/raftkv): keyed by the client address's host.
        let mut data_dirs: HashMap<(String, &Path), usize> = HashMap::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if node.id == 0 {
                return reject(InvalidConfig::new(
                    format!("nodes[{i}].id"),
                    "must be non-zero",
                ));
            }
            if let Some(first) = ids.insert(node.id, i) {
                return reject(
                    InvalidConfig::new(
                        format!("nodes[{i}].id"),
                        format!("duplicate id {} (also nodes[{first}].id)", node.id),
                    )
                    .and(format!("nodes[{first}].id")),
                );
            }
            let http = node.http_addr.iter().map(|addr| ("http_addr", addr));
            let resp = node.resp_addr.iter().map(|addr| ("resp_addr", addr));
            for (field, addr) in [
                ("client_addr", &node.client_addr),
                ("peer_addr", &node.peer_addr),
            ]
            .into_iter()
            .chain(http)
            .chain(resp)
            {
                let path = format!("nodes[{i}].{field}");
                let canonical = match parse_host_port(addr) {
                    Ok(canonical) => canonical,
                    Err(why) => {
                        return reject(InvalidConfig::new(
                            path,
                            format!("invalid address '{addr}': {why}"),
                        ))
                    }
                };
                if let Some(other) = addrs.insert(canonical, path.clone()) {
                    return reject(
                        InvalidConfig::new(
                            path,
                            format!("address '{addr}' is already used by {other}"),
                        )
                        .and(other),
                    );
                }
            }
            if let Some(host) = &node.listen_host {
                if let Err(why) = parse_host_port(&node.bind_addr("0.0.0.0:1")) {
                    return reject(InvalidConfig::new(
                        format!("nodes[{i}].listen_host"),
                        format!("invalid host '{host}': {why}"),
                    ));
                }
            }
            if node.data_dir.as_os_str().is_empty() {
                return reject(InvalidConfig::new(
                    format!("nodes[{i}].data_dir"),
                    "must not be empty",
                ));
            }
            if let Some(tls) = self
                .tls
                .as_ref()
                .filter(|tls| tls.needs_node_certificates())
            {
                for (field, value) in [("tls_cert", &node.tls_cert), ("tls_key", &node.tls_key)] {
                    if value.is_none() {
                        return reject(
                            InvalidConfig::new(
                                format!("nodes[{i}].{field}"),
                                "is required when [tls] turns TLS on",
                            )
                            .and("tls"),
                        );
                    }
                }
                if tls.ca.as_os_str().is_empty() {
                    return reject(InvalidConfig::new("tls.ca", "must not be empty"));
                }
            }
            let host = machine_of(&node.client_addr);
            if let Some(first) = data_dirs.insert((host, node.data_dir.as_path()), i) {
                return reject(
                    InvalidConfig::new(
                        format!("nodes[{i}].data_dir"),
                        format!(
                            "'{}' is also the data_dir of nodes[{first}]",
                            node.data_dir.display()
                        ),
                    )
                    .and(format!("nodes[{first}].data_dir")),
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
                let lossy_path = |path: &mut PathBuf| {
                    *path = PathBuf::from(path.to_string_lossy().into_owned());
                };
                for node in &mut lossy.nodes {
                    lossy_path(&mut node.data_dir);
                    node.tls_cert.iter_mut().for_each(lossy_path);
                    node.tls_key.iter_mut().for_each(lossy_path);
                }
                if let Some(tls) = &mut lossy.tls {
                    lossy_path(&mut tls.ca);
                }
                toml::to_string_pretty(&lossy).unwrap_or_default()
            }
        }
    }
}

impl Tunables {
    /// Checks the tunables on their own. The error, an [`InvalidConfig`], names the first bad field.
    pub fn validate(&self) -> anyhow::Result<()> {
        const TICK: &str = "tunables.tick_ms";
        const HEARTBEAT: &str = "tunables.heartbeat_ms";
        const ELECTION: &str = "tunables.election_timeout_ms";
        const MAX_VALUE_SIZE: &str = "tunables.max_value_size";
        let t = self;
        if t.tick_ms == 0 {
            return reject(InvalidConfig::new(TICK, "must be at least 1"));
        }
        if t.heartbeat_ms < t.tick_ms {
            return reject(
                InvalidConfig::new(
                    HEARTBEAT,
                    format!(
                        "{} is below tick_ms ({}); a heartbeat needs at least one tick",
                        t.heartbeat_ms, t.tick_ms
                    ),
                )
                .and(TICK),
            );
        }
        if t.election_timeout_ms <= t.heartbeat_ms {
            return reject(
                InvalidConfig::new(
                    ELECTION,
                    format!(
                        "{} must exceed heartbeat_ms ({}), or followers campaign against a \
                         live leader",
                        t.election_timeout_ms, t.heartbeat_ms
                    ),
                )
                .and(HEARTBEAT),
            );
        }
        // The core counts in ticks; keep the tick counts representable and the ratio meaningful.
        if t.election_timeout_ms / t.tick_ms > u64::from(u32::MAX / 2) {
            return reject(
                InvalidConfig::new(
                    ELECTION,
                    format!(
                        "too many ticks ({} / tick_ms {})",
                        t.election_timeout_ms, t.tick_ms
                    ),
                )
                .and(TICK),
            );
        }
        if t.max_value_size == 0 {
            return reject(InvalidConfig::new(MAX_VALUE_SIZE, "must be at least 1"));
        }
        if t.max_value_size > MAX_VALUE_SIZE_LIMIT {
            return reject(InvalidConfig::new(
                MAX_VALUE_SIZE,
                format!(
                    "{} exceeds the limit of {MAX_VALUE_SIZE_LIMIT} bytes",
                    t.max_value_size
                ),
            ));
        }
        for (field, value) in [
            ("tunables.max_connections", t.max_connections as u64),
            (
                "tunables.max_request_bytes_in_flight",
                t.max_request_bytes_in_flight as u64,
            ),
            ("tunables.snapshot_entries", t.snapshot_entries),
            ("tunables.snapshot_bytes", t.snapshot_bytes),
            (
                "tunables.client_request_timeout_s",
                t.client_request_timeout_s,
            ),
        ] {
            if value == 0 {
                return reject(InvalidConfig::new(field, "must be at least 1"));
            }
        }
        Ok(())
    }
}

/// Which machine an address is on, as far as the file tells: every loopback address is this one;
/// any other host stands for itself (two names of one host are not recognised).
fn machine_of(addr: &str) -> String {
    let canonical = parse_host_port(addr).unwrap_or_default();
    let host = canonical.rsplit_once(':').map_or("", |(host, _)| host);
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = bare == "localhost"
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        "loopback".to_string()
    } else {
        host.to_string()
    }
}

/// Checks `host:port` syntax (IPv6 hosts in brackets) without resolving names, since validation must not
/// depend on DNS. Returns a canonical lower-case form used to detect two fields naming the same address.
pub fn parse_host_port(addr: &str) -> Result<String, String> {
    // Addresses travel in the membership in the log, which holds at most this many bytes of each.
    if addr.len() > raftkv_kv::protocol::MAX_ADDRESS_LEN {
        return Err(format!(
            "longer than {} bytes",
            raftkv_kv::protocol::MAX_ADDRESS_LEN
        ));
    }
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

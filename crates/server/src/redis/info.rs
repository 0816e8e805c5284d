//! `INFO`: the node's state in Redis's `key:value` sections, with the fields monitoring tools read
//! (`redis-cli --stat`, exporters): clients, memory, persistence, stats, replication and keyspace.
//! Fields raftkv has no counterpart for are left out rather than made up; raftkv's own are prefixed
//! `raft_`.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Context, REDIS_VERSION};
use crate::status::NodeStatus;

/// Counters of a node's Redis port, shared by its connections.
#[derive(Debug, Default)]
pub struct PortStats {
    connections_received: AtomicU64,
    connected: AtomicU64,
    commands_processed: AtomicU64,
}

impl PortStats {
    /// Counts a connection accepted; it counts as connected until the guard is dropped.
    pub fn connected(&self) -> ConnectedGuard<'_> {
        self.connections_received.fetch_add(1, Ordering::Relaxed);
        self.connected.fetch_add(1, Ordering::Relaxed);
        ConnectedGuard(self)
    }

    /// Counts one command read from a client served on this node (relayed connections' commands are
    /// counted where they are served).
    pub fn command(&self) {
        self.commands_processed.fetch_add(1, Ordering::Relaxed);
    }
}

pub struct ConnectedGuard<'a>(&'a PortStats);

impl Drop for ConnectedGuard<'_> {
    fn drop(&mut self) {
        self.0.connected.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The sections `INFO` with no argument (or `default`) shows, in Redis's order.
const DEFAULT_SECTIONS: [&str; 7] = [
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "keyspace",
];

/// `INFO [section ...]` (section names already lowercased). Unknown sections are skipped, so
/// `INFO nosuch` is an empty string, as in Redis.
pub(crate) fn info(ctx: &Context, sections: &[String]) -> String {
    let every = sections.is_empty()
        || sections
            .iter()
            .any(|s| matches!(s.as_str(), "all" | "everything" | "default"));
    let wanted = |name: &str| every || sections.iter().any(|s| s == name);
    // One status for every section, so they agree with each other.
    let status = ctx.status.borrow().clone();
    DEFAULT_SECTIONS
        .iter()
        .filter(|name| wanted(name))
        .map(|name| section(ctx, &status, name))
        .collect::<Vec<_>>()
        .join("\r\n")
}

fn section(ctx: &Context, status: &NodeStatus, name: &str) -> String {
    let stats = &ctx.stats;
    let lines: Vec<(&str, String)> = match name {
        "server" => vec![
            ("redis_version", REDIS_VERSION.to_string()),
            ("raftkv_version", status.version.clone()),
            ("redis_mode", "standalone".to_string()),
            ("os", std::env::consts::OS.to_string()),
            ("arch_bits", (usize::BITS).to_string()),
            ("process_id", std::process::id().to_string()),
            ("run_id", format!("raftkv-node-{}", ctx.id)),
            ("tcp_port", ctx.port.to_string()),
            (
                "uptime_in_seconds",
                (status.uptime_seconds as u64).to_string(),
            ),
            (
                "uptime_in_days",
                (status.uptime_seconds as u64 / 86_400).to_string(),
            ),
        ],
        "clients" => vec![
            (
                "connected_clients",
                stats.connected.load(Ordering::Relaxed).to_string(),
            ),
            ("maxclients", ctx.max_connections.to_string()),
            // No command blocks (no BLPOP or WAIT).
            ("blocked_clients", "0".to_string()),
        ],
        "memory" => {
            let rss = resident_bytes();
            vec![
                // raftkv does not count its allocations: the process's resident memory stands in.
                ("used_memory", rss.to_string()),
                ("used_memory_human", human(rss)),
                ("used_memory_rss", rss.to_string()),
                ("used_memory_rss_human", human(rss)),
                // Bytes of keys and values held.
                ("used_memory_dataset", status.store_bytes.to_string()),
                ("maxmemory", "0".to_string()),
                ("maxmemory_policy", "noeviction".to_string()),
            ]
        }
        "persistence" => vec![
            ("loading", "0".to_string()),
            ("rdb_bgsave_in_progress", "0".to_string()),
            // Every write is in the Raft log, fsynced on a majority before it is acknowledged: the
            // closest Redis has is an append-only file with `appendfsync always`.
            ("aof_enabled", "1".to_string()),
            ("aof_rewrite_in_progress", "0".to_string()),
            ("raft_disk_bytes", status.disk_bytes.to_string()),
            ("raft_snapshot_index", status.snapshot_index.to_string()),
        ],
        "stats" => vec![
            (
                "total_connections_received",
                stats
                    .connections_received
                    .load(Ordering::Relaxed)
                    .to_string(),
            ),
            (
                "total_commands_processed",
                stats.commands_processed.load(Ordering::Relaxed).to_string(),
            ),
        ],
        "replication" => {
            let role = if status.leads(ctx.id) {
                "master"
            } else {
                "slave"
            };
            vec![
                ("role", role.to_string()),
                ("raft_role", status.role.clone()),
                ("raft_term", status.term.to_string()),
                (
                    "raft_leader",
                    status.leader.map_or("none".to_string(), |l| l.to_string()),
                ),
                ("raft_commit_index", status.commit_index.to_string()),
                ("raft_applied_index", status.applied_index.to_string()),
            ]
        }
        _ => {
            // keyspace: Redis lists only databases that hold keys.
            let mut out = String::from("# Keyspace\r\n");
            if status.store_keys > 0 {
                out.push_str(&format!(
                    "db0:keys={},expires={},avg_ttl=0\r\n",
                    status.store_keys, status.store_expiring
                ));
            }
            return out;
        }
    };
    let mut title = name.to_string();
    title[..1].make_ascii_uppercase();
    let mut out = format!("# {title}\r\n");
    for (key, value) in lines {
        out.push_str(key);
        out.push(':');
        out.push_str(&value);
        out.push_str("\r\n");
    }
    out
}

/// The process's resident memory in bytes (Linux `/proc/self/status`, in kB whatever the page size;
/// 0 where it cannot be read).
fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kb| kb * 1024)
}

/// Bytes as Redis's `*_human` fields write them (`1.50M`).
fn human(bytes: u64) -> String {
    const UNITS: [(f64, &str); 4] = [
        (1024.0 * 1024.0 * 1024.0 * 1024.0, "T"),
        (1024.0 * 1024.0 * 1024.0, "G"),
        (1024.0 * 1024.0, "M"),
        (1024.0, "K"),
    ];
    let value = bytes as f64;
    UNITS
        .iter()
        .find(|(size, _)| value >= *size)
        .map_or(format!("{bytes}B"), |(size, unit)| {
            format!("{:.2}{unit}", value / size)
        })
}

#[cfg(test)]
mod tests {
    use super::human;

    #[test]
    fn human_sizes_read_as_redis_writes_them() {
        assert_eq!(human(900), "900B");
        assert_eq!(human(1536), "1.50K");
        assert_eq!(human(42_056_640), "40.11M");
        assert_eq!(human(25_276_071_936), "23.54G");
    }
}

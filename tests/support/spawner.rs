//! A local cluster started by `raftkv cluster` (the spawner), for end-to-end tests of the client, the
//! CLI and the bench; the parent module starts `raftkv server` processes one by one instead.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub use super::RAFTKV;

/// How long a fresh cluster may take to elect a leader.
const STARTUP_LIMIT: Duration = Duration::from_secs(30);

/// A `raftkv cluster` process; stopped (SIGTERM, then waited for) when dropped.
pub struct Cluster {
    child: Child,
    dir: tempfile::TempDir,
    pub addrs: Vec<String>,
    /// Client address of the leader the spawner reported.
    pub leader: String,
}

impl Cluster {
    pub fn start(nodes: usize) -> Cluster {
        let dir = tempfile::tempdir().expect("temporary directory");
        let port = free_port_block(nodes);
        let mut child = Command::new(RAFTKV)
            .args([
                "cluster",
                "--nodes",
                &nodes.to_string(),
                "--port",
                &port.to_string(),
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start raftkv cluster");
        let stdout = child.stdout.take().expect("piped stdout");
        let (leader_tx, leader_rx) = mpsc::channel();
        // Keeps draining the spawner's output so that it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("leader: node ") {
                    if let Some((_, address)) = rest.split_once(" at ") {
                        let _ = leader_tx.send(address.trim().to_string());
                    }
                }
            }
        });
        let addrs = (0..nodes)
            .map(|i| format!("127.0.0.1:{}", port + i as u16))
            .collect();
        let mut cluster = Cluster {
            child,
            dir,
            addrs,
            leader: String::new(),
        };
        match leader_rx.recv_timeout(STARTUP_LIMIT) {
            Ok(leader) => cluster.leader = leader,
            Err(_) => panic!(
                "no leader within {STARTUP_LIMIT:?}; see {}",
                cluster.dir.path().display()
            ),
        }
        cluster
    }

    /// `--addr` value naming every node.
    pub fn addr_arg(&self) -> String {
        self.addrs.join(",")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("cluster.toml")
    }

    /// Kills (SIGKILL) the node serving clients at `address`, as a crash would.
    pub fn kill_node(&self, address: &str) {
        let index = self
            .addrs
            .iter()
            .position(|a| a == address)
            .expect("a node of this cluster");
        let id = (index + 1).to_string();
        let config = self.config_path().display().to_string();
        let pid = node_pid(&config, &id).expect("the node's process");
        signal(pid, "-KILL");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SIGTERM lets the spawner stop its nodes; SIGKILL would orphan them.
        signal(self.child.id(), "-TERM");
        let limit = Instant::now() + Duration::from_secs(20);
        while Instant::now() < limit {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(pid: u32, which: &str) {
    // The kill command avoids unsafe libc calls in tests.
    let _ = Command::new("kill")
        .args([which, &pid.to_string()])
        .status();
}

/// Finds `raftkv server --config <config> --id <id>` among running processes.
fn node_pid(config: &str, id: &str) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        let has = |flag: &str, value: &str| {
            args.windows(2)
                .any(|pair| pair[0] == flag.as_bytes() && pair[1] == value.as_bytes())
        };
        if args.get(1) == Some(&&b"server"[..]) && has("--config", config) && has("--id", id) {
            return Some(pid);
        }
    }
    None
}

/// A base port such that `nodes` client ports, their peer ports (base + 1000) and their HTTP ports
/// (base + 2000, `raftkv cluster`'s default) are free now, all below the kernel's ephemeral range
/// (32768..), where the nodes' own outgoing connections could take one first.
pub fn free_port_block(nodes: usize) -> u16 {
    // Spread concurrent test processes over the range so they rarely probe the same ports.
    let seed = std::process::id() as usize * 7919
        + std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_micros() as usize)
            .unwrap_or(0);
    for attempt in 0..200 {
        let base = 20_000 + ((seed + attempt * 97) % 10_000) as u16;
        let free = (0..nodes as u16)
            .flat_map(|i| [base + i, base + 1000 + i, base + 2000 + i])
            .all(|port| TcpListener::bind(("127.0.0.1", port)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no free block of ports");
}

#[test]
fn finds_free_ports() {
    let base = free_port_block(3);
    assert!((20_000..30_000).contains(&base));
}

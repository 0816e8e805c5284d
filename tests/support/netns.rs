//! Real hosts on one machine: each node in its own Linux network namespace with its own IP on a
//! bridge, reached by host name (`raftkv-<id>`, from a per-namespace `/etc/netns/<ns>/hosts` that
//! `ip netns exec` mounts over `/etc/hosts`), every node on the same ports, bound on `0.0.0.0`: the
//! shape of `deploy/docker-compose.yml` and of a Kubernetes StatefulSet, from the same cluster file.
//!
//! Faults are real too: a node's link can be cut (`ip link set eth0 down` in its namespace) and its
//! process killed or paused. Needs root and `ip`; [`NetnsCluster::start`] returns `None` (the caller
//! skips, saying why) where namespaces cannot be made. Everything it creates (namespaces, bridge,
//! veth pairs, hosts files, processes) is removed when it is dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::RAFTKV;

/// The deployment's cluster file, which the namespaces run.
const DEPLOY_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/cluster.toml");

/// The client port of every node (and the peer port, +1000), the same on every "host".
pub const CLIENT_PORT: u16 = 9000;
pub const PEER_PORT: u16 = 10000;

pub struct NetnsCluster {
    tag: String,
    subnet: String,
    bridge: String,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub nodes: usize,
    children: Vec<Option<Child>>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl NetnsCluster {
    /// Creates `nodes` namespaces on a fresh bridge and writes the cluster file; `Err` with the
    /// reason if this machine cannot (not root, no `ip`, no namespaces).
    pub fn create(nodes: usize) -> Result<NetnsCluster, String> {
        // Creating a namespace is the real test, but the common case deserves a clear message.
        if effective_uid() != 0 {
            return Err("network namespaces need root".into());
        }
        let pid = std::process::id();
        let tag = format!("rkv{}", pid % 100_000);
        let subnet = format!("10.231.{}", pid % 250);
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut cluster = NetnsCluster {
            bridge: format!("{tag}br"),
            tag,
            subnet,
            dir,
            config: PathBuf::new(),
            nodes,
            children: (0..nodes).map(|_| None).collect(),
        };
        cluster.build_network()?;
        cluster.write_config().map_err(|e| e.to_string())?;
        Ok(cluster)
    }

    pub fn ns(&self, i: usize) -> String {
        format!("{}n{}", self.tag, i + 1)
    }

    /// The node's IP on the bridge (node `i` has id `i + 1`).
    pub fn ip(&self, i: usize) -> String {
        format!("{}.{}", self.subnet, i + 1)
    }

    /// `raftkv-<id>`, as the nodes know each other.
    pub fn host(i: usize) -> String {
        format!("raftkv-{}", i + 1)
    }

    /// The client address a test process (outside the namespaces, where the names do not resolve)
    /// dials for node `i`.
    pub fn client_addr(&self, i: usize) -> String {
        format!("{}:{CLIENT_PORT}", self.ip(i))
    }

    /// Maps a host name from a redirect (`raftkv-3`) to the node's index.
    pub fn index_of_host(&self, host: &str) -> Option<usize> {
        let id: usize = host.strip_prefix("raftkv-")?.parse().ok()?;
        (1..=self.nodes).contains(&id).then(|| id - 1)
    }

    fn build_network(&mut self) -> Result<(), String> {
        ip(&["link", "add", &self.bridge, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}.254/24", self.subnet),
            "dev",
            &self.bridge,
        ])?;
        ip(&["link", "set", &self.bridge, "up"])?;
        let mut hosts = String::from("127.0.0.1 localhost\n");
        for i in 0..self.nodes {
            hosts.push_str(&format!("{} {}\n", self.ip(i), Self::host(i)));
        }
        for i in 0..self.nodes {
            let ns = self.ns(i);
            let veth = format!("{}v{}", self.tag, i + 1);
            ip(&["netns", "add", &ns])?;
            ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            ip(&["link", "set", &veth, "master", &self.bridge])?;
            ip(&["link", "set", &veth, "up"])?;
            let addr = format!("{}/24", self.ip(i));
            ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            let etc = PathBuf::from("/etc/netns").join(&ns);
            std::fs::create_dir_all(&etc).map_err(|e| e.to_string())?;
            std::fs::write(etc.join("hosts"), &hosts).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// The cluster file: `deploy/cluster.toml` (what `deploy/docker-compose.yml` runs), with its first
    /// node's entry repeated for every node (`raftkv-1` becoming `raftkv-<id>`). Each node gets its own
    /// data directory with `--data-dir`, as each container has its own volume.
    fn write_config(&mut self) -> std::io::Result<()> {
        let deploy = std::fs::read_to_string(DEPLOY_CONFIG)?;
        let (header, rest) = deploy
            .split_once("[[nodes]]")
            .ok_or_else(|| std::io::Error::other("deploy/cluster.toml has no [[nodes]]"))?;
        let first = rest.split("[[nodes]]").next().unwrap_or_default();
        let mut text = header.to_string();
        for id in 1..=self.nodes {
            let block = first
                .replace("raftkv-1:", &format!("raftkv-{id}:"))
                .replace("id = 1\n", &format!("id = {id}\n"));
            text.push_str(&format!("[[nodes]]{block}"));
        }
        self.config = self.dir.path().join("cluster.toml");
        std::fs::write(&self.config, text)
    }

    pub fn start_node(&mut self, i: usize) {
        let log = std::fs::File::create(self.dir.path().join(format!("node{}.log", i + 1)))
            .expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(i), RAFTKV, "server", "--config"])
            .arg(&self.config)
            .args(["--id", &(i + 1).to_string()])
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("node{}", i + 1)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start a node in its namespace");
        self.children[i] = Some(child);
    }

    pub fn start_all(&mut self) {
        for i in 0..self.nodes {
            self.start_node(i);
        }
    }

    /// SIGKILL (`ip netns exec` execs the server, so the child is the server itself).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Cuts (or restores) node `i`'s only link: its packets go nowhere, as when a host is cut off.
    pub fn set_link(&self, i: usize, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.ns(i), "link", "set", "eth0", state]).expect("set link state");
        if up {
            // Bringing the link down drops its address's routes; the address itself stays.
            let _ = ip(&["-n", &self.ns(i), "link", "set", "lo", "up"]);
        }
    }

    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for i in 0..self.nodes {
            let path = self.dir.path().join(format!("node{}.log", i + 1));
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            out.push_str(&format!("----- node {} ({}) -----\n", i + 1, self.ip(i)));
            for line in &all[all.len().saturating_sub(lines)..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// Waits until some node other than `except` answers as leader (a `get` that is not redirected
    /// and not an internal error); its index.
    pub fn wait_leader(&self, except: Option<usize>, limit: Duration) -> Option<usize> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            for i in (0..self.nodes).filter(|i| Some(*i) != except) {
                let Ok(mut conn) =
                    super::Conn::connect_with(&self.client_addr(i), Duration::from_secs(1))
                else {
                    continue;
                };
                if let Ok(reply) = conn.request(b"get leader-probe\r\n") {
                    if reply.starts_with(b"ERR_NOT_FOUND") || reply.starts_with(b"VALUE") {
                        return Some(i);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for NetnsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes {
            self.kill(i);
        }
        for i in 0..self.nodes {
            let ns = self.ns(i);
            let _ = ip(&["netns", "del", &ns]);
            let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(&ns));
        }
        let _ = ip(&["link", "del", &self.bridge]);
        if std::thread::panicking() {
            eprintln!("{}", self.log_tails(40));
        }
    }
}

/// The effective user id, read from `/proc` (no `unsafe` call needed).
fn effective_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2))
                .and_then(|uid| uid.parse().ok())
        })
        .unwrap_or(u32::MAX)
}

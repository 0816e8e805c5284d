//! A cluster of real `raftkv server` processes, on loopback or across network namespaces
//! ([`crate::netns`]), and the process faults: kill -9, SIGSTOP/SIGCONT, restart, wall-clock jumps
//! (libfaketime, re-reading a per-node offset file), and power loss (a node's data on a file system
//! that forgets what was not fsynced, mounted by the caller).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use raftkv_protocol::{Reply, ReplyKind};

use crate::http;
use crate::netns::{self, Network};
use crate::wire::Conn;

/// Where Debian's `faketime` package puts its library (the multi-threaded variant, as the server
/// runs threads), per architecture.
const LIBFAKETIME_PATHS: [&str; 3] = [
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/faketime/libfaketimeMT.so.1",
];

/// libfaketime on this machine, if installed.
pub fn libfaketime() -> Option<&'static str> {
    LIBFAKETIME_PATHS
        .into_iter()
        .find(|path| Path::new(path).exists())
}

/// Entries between snapshots in a chaos cluster (the default, 100,000, would never come in a short run).
const CHAOS_SNAPSHOT_ENTRIES: u64 = 2_000;

/// The deployment's cluster file, which the namespaces run (grown to the number of nodes).
const DEPLOY_CONFIG: &str = include_str!("../../../deploy/cluster.toml");

#[derive(Clone, Debug)]
pub struct Options {
    pub nodes: usize,
    /// The `raftkv` binary to run.
    pub binary: PathBuf,
    /// Where the cluster file, logs and clock files go.
    pub dir: PathBuf,
    /// Where the nodes' data directories go (`node<id>` each); a power-loss file system's mount point
    /// when power loss is among the faults.
    pub data_root: PathBuf,
    /// Each node in its own network namespace (else all on 127.0.0.1).
    pub netns: bool,
    /// Loopback mode: node `i` uses ports `base_port + 10 i` (client), `+1` (peer), `+2` (HTTP).
    pub base_port: u16,
    /// Run every node under libfaketime so its wall clock can be moved.
    pub fake_clocks: bool,
    /// Test-only: the nodes skip every WAL fdatasync (`unsafe_skip_fsync`), to show that the power
    /// loss check catches it.
    pub skip_fsync: bool,
    /// The nodes serve reads from leader leases (`lease_reads = true`).
    pub lease_reads: bool,
}

pub struct Cluster {
    options: Options,
    net: Option<Network>,
    config: PathBuf,
    children: Vec<Option<Child>>,
    paused: Vec<bool>,
    /// What the tester dials, per node.
    client_addrs: Vec<String>,
    http_addrs: Vec<String>,
    /// What redirects name, per node (the advertised client address), and its advertised peer address.
    advertised: Vec<String>,
    advertised_peers: Vec<String>,
    /// Nodes that (re)joined the cluster with `--join` after a membership change: they keep starting so.
    joined: Vec<bool>,
    exits: Vec<String>,
}

impl Cluster {
    /// Writes the cluster file (and makes the namespaces, with `netns`); starts nothing yet.
    pub fn create(options: Options) -> Result<Cluster, String> {
        std::fs::create_dir_all(&options.dir).map_err(|e| e.to_string())?;
        let n = options.nodes;
        let net = if options.netns {
            Some(Network::create(n)?)
        } else {
            None
        };
        let (text, client_addrs, http_addrs, advertised, advertised_peers) = match &net {
            Some(net) => {
                let text = grow_deploy_config(n);
                let client: Vec<String> = (0..n)
                    .map(|i| format!("{}:{}", net.ip(i), netns::CLIENT_PORT))
                    .collect();
                let http = (0..n)
                    .map(|i| format!("{}:{}", net.ip(i), netns::HTTP_PORT))
                    .collect();
                let advertised = (0..n)
                    .map(|i| format!("{}:{}", Network::host(i), netns::CLIENT_PORT))
                    .collect();
                let peers: Vec<String> = (0..n)
                    .map(|i| format!("{}:{}", Network::host(i), netns::PEER_PORT))
                    .collect();
                (text, client, http, advertised, peers)
            }
            None => {
                let port = |i: usize, k: u16| options.base_port + 10 * i as u16 + k;
                let mut text = String::from(
                    "cluster_id = \"raftkv-chaos\"\n\n[tunables]\nheartbeat_ms = 50\nelection_timeout_ms = 500\n",
                );
                for i in 0..n {
                    text.push_str(&format!(
                        "\n[[nodes]]\nid = {}\nclient_addr = \"127.0.0.1:{}\"\npeer_addr = \"127.0.0.1:{}\"\nhttp_addr = \"127.0.0.1:{}\"\ndata_dir = \"node{}\"\n",
                        i + 1,
                        port(i, 0),
                        port(i, 1),
                        port(i, 2),
                        i + 1
                    ));
                }
                let client: Vec<String> = (0..n)
                    .map(|i| format!("127.0.0.1:{}", port(i, 0)))
                    .collect();
                let http = (0..n)
                    .map(|i| format!("127.0.0.1:{}", port(i, 2)))
                    .collect();
                let peers: Vec<String> = (0..n)
                    .map(|i| format!("127.0.0.1:{}", port(i, 1)))
                    .collect();
                (text, client.clone(), http, client, peers)
            }
        };
        // Snapshots, log compaction and segment rolls happen within a short run, so faults hit them.
        let mut extra = format!("snapshot_entries = {CHAOS_SNAPSHOT_ENTRIES}\n");
        if options.skip_fsync {
            extra.push_str("# Test only: acknowledges writes that are not on disk.\nunsafe_skip_fsync = true\n");
        }
        if options.lease_reads {
            extra.push_str("lease_reads = true\n");
        }
        let text = text.replacen("[tunables]\n", &format!("[tunables]\n{extra}"), 1);
        let config = options.dir.join("cluster.toml");
        std::fs::write(&config, text).map_err(|e| e.to_string())?;
        if options.fake_clocks {
            for i in 0..n {
                std::fs::write(clock_file(&options.dir, i), "+0s\n").map_err(|e| e.to_string())?;
            }
        }
        Ok(Cluster {
            children: (0..n).map(|_| None).collect(),
            paused: vec![false; n],
            options,
            net,
            config,
            client_addrs,
            http_addrs,
            advertised,
            advertised_peers,
            joined: vec![false; n],
            exits: Vec::new(),
        })
    }

    pub fn nodes(&self) -> usize {
        self.options.nodes
    }

    pub fn network(&mut self) -> Option<&mut Network> {
        self.net.as_mut()
    }

    pub fn client_addr(&self, i: usize) -> &str {
        &self.client_addrs[i]
    }

    /// The node a redirect's address names.
    pub fn index_of(&self, advertised: &str) -> Option<usize> {
        self.advertised.iter().position(|a| a == advertised)
    }

    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.options.data_root.join(format!("node{}", i + 1))
    }

    pub fn start(&mut self, i: usize) -> Result<(), String> {
        if self.reap(i).is_none() && self.children[i].is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.options.dir.join(format!("node{}.log", i + 1)))
            .map_err(|e| e.to_string())?;
        let mut command = match &self.net {
            Some(net) => net.command(i, &self.options.binary),
            None => Command::new(&self.options.binary),
        };
        command
            .arg("server")
            .arg("--config")
            .arg(&self.config)
            .args(["--id", &(i + 1).to_string()])
            .arg("--data-dir")
            .arg(self.data_dir(i));
        if self.joined[i] {
            let others: Vec<&str> = (0..self.nodes())
                .filter(|&j| j != i)
                .map(|j| self.advertised[j].as_str())
                .collect();
            command
                .arg("--join")
                .arg(others.join(","))
                .args(["--client-addr", &self.advertised[i]])
                .args(["--peer-addr", &self.advertised_peers[i]]);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if self.options.skip_fsync {
            command.env("RAFTKV_ALLOW_UNSAFE_SKIP_FSYNC", "1");
        }
        if let Some(library) = libfaketime().filter(|_| self.options.fake_clocks) {
            command
                .env("LD_PRELOAD", library)
                .env("FAKETIME_TIMESTAMP_FILE", clock_file(&self.options.dir, i))
                .env("FAKETIME_CACHE_DURATION", "1")
                // Timers keep real monotonic time; only the wall clock moves.
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        // Its own process group: a Ctrl-C at the terminal is the tester's to handle, not the nodes'.
        command.process_group(0);
        let child = command
            .spawn()
            .map_err(|e| format!("start node {}: {e}", i + 1))?;
        self.children[i] = Some(child);
        self.paused[i] = false;
        Ok(())
    }

    pub fn start_all(&mut self) -> Result<(), String> {
        (0..self.nodes()).try_for_each(|i| self.start(i))
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.children[i].is_some()
    }

    /// If node `i` was started and has exited by itself (not killed by the tester): how it ended.
    /// Forgets the process, so that [`Cluster::start`] starts it again.
    pub fn reap(&mut self, i: usize) -> Option<String> {
        let exited = self.children[i].as_mut()?.try_wait().ok()??;
        self.children[i] = None;
        self.exits
            .push(format!("node {} exited by itself: {exited}", i + 1));
        Some(exited.to_string())
    }

    /// Nodes that exited by themselves during the run (a node must not: it stops only when told, or
    /// when it finds its data corrupt, which after a fault the tester injected is a finding).
    pub fn unexpected_exits(&mut self) -> Vec<String> {
        for i in 0..self.nodes() {
            self.reap(i);
        }
        self.exits.clone()
    }

    /// SIGKILL: the process dies at once; what it wrote but did not fsync stays in the page cache
    /// (see power loss for the rest).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused[i] = false;
    }

    /// Node `i` lost everything: it is stopped, its data directory removed, and from now on it starts
    /// with `--join` (it must have been removed from the membership first, or `--join` refuses it).
    pub fn wipe_for_rejoin(&mut self, i: usize) -> Result<(), String> {
        self.kill(i);
        let dir = self.data_dir(i);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        self.joined[i] = true;
        Ok(())
    }

    /// Sends a `members add|promote|remove` line to the leader (following redirects, retrying
    /// while another change is in progress or the learner catches up) until it is answered with the
    /// membership table or `done` says a refusal means it already happened; `Err` after `limit`.
    pub fn change_members(
        &self,
        request: &str,
        done: impl Fn(&str) -> bool,
        limit: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        let mut target = self.leader().unwrap_or(0);
        let mut last = String::new();
        while Instant::now() < deadline {
            let reply = Conn::connect(&self.client_addrs[target], Duration::from_secs(2)).and_then(
                |mut conn| {
                    conn.call(
                        format!("{request}\r\n").as_bytes(),
                        ReplyKind::MembersChange,
                    )
                },
            );
            match reply {
                Ok(Reply::Members { .. }) => return Ok(()),
                Ok(Reply::ErrMembership { reason }) if done(&reason) => return Ok(()),
                Ok(reply @ Reply::ErrRedirect { .. }) => {
                    let addr = reply.redirect_address().unwrap_or_default();
                    target = self.index_of(&addr).unwrap_or((target + 1) % self.nodes());
                    continue;
                }
                Ok(other) => last = format!("{other:?}"),
                Err(err) => {
                    last = format!("{err:?}");
                    target = self.leader().unwrap_or((target + 1) % self.nodes());
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(format!("`{request}` did not complete: {last}"))
    }

    /// SIGSTOP (`pause`) or SIGCONT: a stalled process, as in a long GC pause or a VM migration.
    pub fn pause(&mut self, i: usize, pause: bool) {
        if let Some(child) = &self.children[i] {
            let signal = if pause { "-STOP" } else { "-CONT" };
            let _ = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status();
            self.paused[i] = pause;
        }
    }

    /// Moves node `i`'s wall clock `offset_s` seconds from true time (needs `fake_clocks`); the node
    /// sees it within about a second.
    pub fn set_clock(&self, i: usize, offset_s: i64) -> Result<(), String> {
        if !self.options.fake_clocks {
            return Err("clocks are not faked in this run".into());
        }
        std::fs::write(clock_file(&self.options.dir, i), format!("{offset_s:+}s\n"))
            .map_err(|e| e.to_string())
    }

    /// How far node `i`'s wall clock is from this process's, in seconds, as its `/status` says.
    pub fn clock_offset(&self, i: usize) -> Option<i64> {
        let node_ms = self.status(i)?["wall_clock_ms"].as_u64()?;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_millis() as i64;
        Some((node_ms as i64 - now_ms) / 1000)
    }

    /// Resumes paused nodes, restarts dead ones, puts clocks right.
    pub fn revive_all(&mut self) -> Result<(), String> {
        for i in 0..self.nodes() {
            if self.paused[i] {
                self.pause(i, false);
            }
            if self.options.fake_clocks {
                self.set_clock(i, 0)?;
            }
            self.start(i)?;
        }
        Ok(())
    }

    pub fn status(&self, i: usize) -> Option<serde_json::Value> {
        let (code, json) = http::get_json(&self.http_addrs[i], "/status", Duration::from_secs(1))?;
        (code == 200).then_some(json)
    }

    /// The node that says it leads in the highest term, if any.
    pub fn leader(&self) -> Option<usize> {
        (0..self.nodes())
            .filter(|&i| self.is_running(i) && !self.paused[i])
            .filter_map(|i| {
                let status = self.status(i)?;
                (status["role"] == "leader").then(|| (status["term"].as_u64().unwrap_or(0), i))
            })
            .max()
            .map(|(_, i)| i)
    }

    /// Waits until some node leads; its index.
    pub fn wait_leader(&self, limit: Duration) -> Option<usize> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(leader) = self.leader() {
                return Some(leader);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Node `i`'s state digest: (applied index, digest).
    pub fn digest(&self, i: usize) -> Option<(u64, String)> {
        let (code, json) = http::get_json(&self.http_addrs[i], "/digest", Duration::from_secs(6))?;
        if code != 200 {
            return None;
        }
        Some((
            json["applied_index"].as_u64()?,
            json["digest"].as_str()?.to_string(),
        ))
    }

    /// The last `lines` lines of every node's log.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for i in 0..self.nodes() {
            let path = self.options.dir.join(format!("node{}.log", i + 1));
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            out.push_str(&format!("----- node {} -----\n", i + 1));
            for line in &all[all.len().saturating_sub(lines)..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes() {
            self.pause(i, false);
            self.kill(i);
        }
    }
}

fn clock_file(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("clock{}", i + 1))
}

/// `deploy/cluster.toml` (what `deploy/docker-compose.yml` runs), its first node's entry repeated for
/// every node (`raftkv-1` becoming `raftkv-<id>`).
pub fn grow_deploy_config(nodes: usize) -> String {
    let (header, rest) = DEPLOY_CONFIG
        .split_once("[[nodes]]")
        .unwrap_or((DEPLOY_CONFIG, ""));
    let first = rest.split("[[nodes]]").next().unwrap_or_default();
    let mut text = header.to_string();
    for id in 1..=nodes {
        let block = first
            .replace("raftkv-1:", &format!("raftkv-{id}:"))
            .replace("id = 1\n", &format!("id = {id}\n"));
        text.push_str(&format!("[[nodes]]{block}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deploy_config_grows_to_five_distinct_nodes() {
        let text = grow_deploy_config(5);
        for id in 1..=5 {
            assert!(text.contains(&format!("id = {id}\n")), "{text}");
            assert!(text.contains(&format!("\"raftkv-{id}:9000\"")), "{text}");
        }
        assert_eq!(text.matches("[[nodes]]").count(), 5);
        assert!(text.contains("cluster_id"));
    }
}

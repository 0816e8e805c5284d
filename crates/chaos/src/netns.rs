//! Real hosts on one machine: each node in its own Linux network namespace with its own IP on a
//! bridge, reached by host name (`raftkv-<id>`, from a per-namespace `/etc/netns/<ns>/hosts` that
//! `ip netns exec` mounts over `/etc/hosts`): the shape of `deploy/docker-compose.yml` and of a
//! Kubernetes StatefulSet.
//!
//! Network faults are made in the namespaces: dropped packets from chosen peers or a random share of
//! them (an nftables table `inet chaos` per namespace: `ip saddr ... drop`, `numgen random mod 100 < N
//! drop`) hit exactly the traffic between nodes (the tester, on the bridge's address, still reaches
//! every node); a cut link (`ip link set eth0 down`) and a slow link (`tc netem` delay and reordering
//! where the kernel has it, else a `tbf` rate limit whose queue delays packets) hit the node's
//! clients too.
//! Needs root, `ip`, and for packet rules `nft`. Everything made is removed on drop.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The client port of every node (and the peer port, the Redis port, the HTTP port), the same on every
/// "host", as `deploy/cluster.toml` has them.
pub const CLIENT_PORT: u16 = 9000;
pub const PEER_PORT: u16 = 10000;
pub const HTTP_PORT: u16 = 8080;

pub struct Network {
    tag: String,
    subnet: String,
    bridge: String,
    nodes: usize,
    /// Per node: the peers whose packets it drops, and the share of its peers' packets it drops.
    blocked: Vec<BTreeSet<usize>>,
    loss: Vec<u8>,
    made: Vec<String>,
}

fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<(), String> {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().map_err(|e| format!("{program}: {e}"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| format!("{program}: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    run("ip", args, None)
}

/// Why namespaces cannot be made here, or `None` if they can: tried for real, with a namespace made
/// and removed at once.
pub fn unavailable() -> Option<String> {
    if effective_uid() != 0 {
        return Some("network namespaces need root".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("`ip` (iproute2) is not installed".into());
    }
    probe(&[]).err()
}

/// Why packet rules cannot be made in a namespace here (no `nft`, no nf_tables), or `None`.
pub fn packet_rules_unavailable() -> Option<String> {
    match Command::new("nft").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        _ => return Some("`nft` (nftables) is not installed".into()),
    }
    probe(&["nft", "add", "table", "inet", "chaos_probe"]).err()
}

/// Makes a namespace, runs `command` in it (if any), removes it.
fn probe(command: &[&str]) -> Result<(), String> {
    let ns = format!("rkcprobe{}", std::process::id() % 100_000);
    ip(&["netns", "add", &ns]).map_err(|e| format!("cannot make a network namespace: {e}"))?;
    let result = match command.split_first() {
        Some((program, args)) => {
            let mut all = vec!["netns", "exec", ns.as_str(), program];
            all.extend_from_slice(args);
            ip(&all).map_err(|e| format!("cannot run {program} in a namespace: {e}"))
        }
        None => Ok(()),
    };
    let _ = ip(&["netns", "del", &ns]);
    result
}

impl Network {
    /// Creates `nodes` namespaces on a fresh bridge; `Err` with the reason if this machine cannot.
    pub fn create(nodes: usize) -> Result<Network, String> {
        if let Some(why) = unavailable() {
            return Err(why);
        }
        let pid = std::process::id();
        let tag = format!("rkc{}", pid % 100_000);
        let mut network = Network {
            bridge: format!("{tag}br"),
            subnet: free_subnet(pid)?,
            tag,
            nodes,
            blocked: vec![BTreeSet::new(); nodes],
            loss: vec![0; nodes],
            made: Vec::new(),
        };
        network.build()?;
        Ok(network)
    }

    pub fn nodes(&self) -> usize {
        self.nodes
    }

    pub fn ns(&self, i: usize) -> String {
        format!("{}n{}", self.tag, i + 1)
    }

    /// Node `i`'s IP on the bridge (node `i` has id `i + 1`).
    pub fn ip(&self, i: usize) -> String {
        format!("{}.{}", self.subnet, i + 1)
    }

    /// `raftkv-<id>`, as the nodes know each other.
    pub fn host(i: usize) -> String {
        format!("raftkv-{}", i + 1)
    }

    /// A command that runs `program` inside node `i`'s namespace (`ip netns exec` execs it, so the
    /// child's pid is the program's).
    pub fn command(&self, i: usize, program: &Path) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.ns(i)]).arg(program);
        command
    }

    fn build(&mut self) -> Result<(), String> {
        ip(&["link", "add", &self.bridge, "type", "bridge"])?;
        self.made.push("bridge".into());
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
            self.made.push(ns.clone());
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

    /// Cuts (or restores) node `i`'s only link: its packets go nowhere, as when a host is cut off.
    pub fn set_link(&self, i: usize, up: bool) -> Result<(), String> {
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.ns(i), "link", "set", "eth0", state])
    }

    /// Drops every packet node `from` sends to node `to` (one way; block both ways for a partition).
    pub fn block(&mut self, from: usize, to: usize) -> Result<(), String> {
        self.blocked[to].insert(from);
        self.apply_rules(to)
    }

    /// Drops `percent` of the packets other nodes send to node `i`.
    pub fn set_loss(&mut self, i: usize, percent: u8) -> Result<(), String> {
        self.loss[i] = percent.min(100);
        self.apply_rules(i)
    }

    /// Makes node `i`'s outgoing link slow: `netem` delay with jitter and reordering if the kernel has
    /// it, else a narrow `tbf` rate limit (packets wait in its queue). Says which it used.
    pub fn slow(&self, i: usize) -> Result<String, String> {
        let ns = self.ns(i);
        let netem = [
            "-n", &ns, "qdisc", "replace", "dev", "eth0", "root", "netem", "delay", "60ms", "40ms",
            "reorder", "25%", "50%",
        ];
        if run("tc", &netem, None).is_ok() {
            return Ok("netem delay 60±40 ms, 25% reordered".into());
        }
        let tbf = [
            "-n", &ns, "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", "2mbit", "burst",
            "32k", "latency", "200ms",
        ];
        run("tc", &tbf, None)?;
        Ok("tbf 2 Mbit/s, up to 200 ms queued (this kernel has no netem)".into())
    }

    fn apply_rules(&self, i: usize) -> Result<(), String> {
        let mut script = String::from(
            "add table inet chaos\nflush table inet chaos\n\
             add chain inet chaos input { type filter hook input priority 0; policy accept; }\n",
        );
        if !self.blocked[i].is_empty() {
            let sources: Vec<String> = self.blocked[i].iter().map(|&j| self.ip(j)).collect();
            script.push_str(&format!(
                "add rule inet chaos input ip saddr {{ {} }} drop\n",
                sources.join(", ")
            ));
        }
        if self.loss[i] > 0 {
            let peers: Vec<String> = (0..self.nodes)
                .filter(|&j| j != i)
                .map(|j| self.ip(j))
                .collect();
            script.push_str(&format!(
                "add rule inet chaos input ip saddr {{ {} }} numgen random mod 100 < {} drop\n",
                peers.join(", "),
                self.loss[i]
            ));
        }
        run(
            "ip",
            &["netns", "exec", &self.ns(i), "nft", "-f", "-"],
            Some(&script),
        )
    }

    /// Undoes every fault: links up, no packet rules, no queueing discipline.
    pub fn heal(&mut self) -> Result<(), String> {
        let mut first_error = None;
        for i in 0..self.nodes {
            let had_rules = !self.blocked[i].is_empty() || self.loss[i] > 0;
            self.blocked[i].clear();
            self.loss[i] = 0;
            if had_rules {
                if let Err(err) = self.apply_rules(i) {
                    first_error.get_or_insert(err);
                }
            }
            let _ = run(
                "tc",
                &["-n", &self.ns(i), "qdisc", "del", "dev", "eth0", "root"],
                None,
            );
            if let Err(err) = self.set_link(i, true) {
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for i in 0..self.nodes {
            let ns = self.ns(i);
            if self.made.contains(&ns) {
                let _ = ip(&["netns", "del", &ns]);
            }
            let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(&ns));
        }
        if self.made.iter().any(|m| m == "bridge") {
            let _ = ip(&["link", "del", &self.bridge]);
        }
    }
}

/// A `10.232.x` /24 no interface of this machine uses (another run's bridge, say).
fn free_subnet(pid: u32) -> Result<String, String> {
    let out = Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    let used = String::from_utf8_lossy(&out.stdout);
    (0..250)
        .map(|i| format!("10.232.{}", (pid + i) % 250))
        .find(|subnet| !used.contains(&format!(" {subnet}.")))
        .ok_or_else(|| "every 10.232.x.0/24 subnet is in use".to_string())
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

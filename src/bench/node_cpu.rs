//! CPU time of the cluster's node processes during a run (`--node-pids`, `--cluster-dir`), for the
//! CPU-per-operation figure: far less noisy than throughput on a shared machine.

use std::path::Path;

/// The local node processes to sample.
pub(super) struct NodeCpu {
    pids: Vec<u32>,
    ticks_per_second: u64,
}

impl NodeCpu {
    /// From explicit pids, or from the `node<i>.pid` files `raftkv cluster` writes in its directory.
    /// Only live `raftkv server` processes are kept. `None` if there is nothing to sample.
    pub(super) fn find(
        pids: &[u32],
        cluster_dir: Option<&Path>,
    ) -> Result<Option<NodeCpu>, String> {
        let mut found: Vec<u32> = pids.to_vec();
        if let Some(dir) = cluster_dir {
            let entries = std::fs::read_dir(dir)
                .map_err(|err| format!("--cluster-dir {}: {err}", dir.display()))?;
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with("node") && name.ends_with(".pid") {
                    if let Some(pid) = std::fs::read_to_string(entry.path())
                        .ok()
                        .and_then(|text| text.trim().parse().ok())
                    {
                        found.push(pid);
                    }
                }
            }
        }
        found.retain(|&pid| is_node_process(pid));
        found.sort_unstable();
        found.dedup();
        if found.is_empty() {
            if pids.is_empty() && cluster_dir.is_none() {
                return Ok(None);
            }
            return Err("no running `raftkv server` process among the given pids".into());
        }
        // SAFETY: sysconf only reads a configuration value; it has no memory-safety preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Ok(Some(NodeCpu {
            pids: found,
            ticks_per_second: u64::try_from(ticks).unwrap_or(100).max(1),
        }))
    }

    pub(super) fn nodes(&self) -> usize {
        self.pids.len()
    }

    /// User + system CPU time of every node so far, in microseconds.
    pub(super) fn sample_us(&self) -> u64 {
        let ticks: u64 = self.pids.iter().filter_map(|&pid| cpu_ticks(pid)).sum();
        ticks * 1_000_000 / self.ticks_per_second
    }
}

/// Whether `pid` runs `raftkv server` (an executable whose name starts with `raftkv`), so that a
/// stale pid file never makes the bench sample an unrelated process.
fn is_node_process(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        let mut args = cmdline.split(|&b| b == 0);
        let program = args.next().unwrap_or_default();
        let name = program.rsplit(|&b| b == b'/').next().unwrap_or_default();
        name.starts_with(b"raftkv") && args.next() == Some(b"server")
    })
}

/// utime + stime of `pid`, in clock ticks, from `/proc/<pid>/stat`.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after its closing parenthesis do not.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12 here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

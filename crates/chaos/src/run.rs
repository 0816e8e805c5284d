//! One chaos run from start to verdict: start the cluster, run the clients and the nemeses, heal,
//! let it recover, read everything back, compare digests, save the history, check it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use raftkv_sim::linearizability::{OpKind, Outcome};
use raftkv_sim::rng::Rng;

use crate::cluster::{self, Cluster};
use crate::history::{key_name, History, LEDGER_BASE};
use crate::nemesis::{Nemesis, PowerSwitch, Schedule, Timing};
use crate::netns::{self, Network};
use crate::power::PowerLossFs;
use crate::verdict;
use crate::workload::{self, Settings, Targets, Workload};

#[derive(Clone, Debug)]
pub struct RunConfig {
    pub nemeses: Vec<Nemesis>,
    /// How long faults are injected.
    pub duration: Duration,
    pub nodes: usize,
    pub netns: bool,
    pub workload: Settings,
    pub binary: PathBuf,
    /// Working directory (cluster file, logs, data, history).
    pub dir: PathBuf,
    /// Remove `dir` after a run that passed.
    pub remove_dir_on_pass: bool,
    pub base_port: u16,
    pub skip_fsync: bool,
    /// Reads from leader leases instead of ReadIndex rounds.
    pub lease_reads: bool,
    pub timing: Timing,
}

/// The outcome of a run (or of re-checking a history).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub ops: u64,
    pub ok: u64,
    pub failed: u64,
    pub unknown: u64,
    pub linearizable: Linearizable,
    pub lost: u64,
    pub diverged: u64,
    /// Replies no correct node sends, and nodes that exited by themselves.
    pub anomalies: u64,
    pub history: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Linearizable {
    Yes,
    No,
    /// The search ran out of budget on some key: not proven either way (fails the run).
    Unknown,
}

impl Summary {
    pub fn passed(&self) -> bool {
        self.linearizable == Linearizable::Yes
            && self.lost == 0
            && self.diverged == 0
            && self.anomalies == 0
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let linearizable = match self.linearizable {
            Linearizable::Yes => "yes",
            Linearizable::No => "no",
            Linearizable::Unknown => "unknown",
        };
        write!(
            f,
            "ops={} ok={} failed={} unknown={} linearizable={linearizable} lost={} diverged={} \
             anomalies={}",
            self.ops, self.ok, self.failed, self.unknown, self.lost, self.diverged, self.anomalies
        )
    }
}

/// Runs it all; `Err` only when the run itself could not be made (no leader at the start, a fault
/// that could not be injected or healed), not for anomalies, which the summary reports.
pub fn run(config: &RunConfig) -> Result<Summary, String> {
    let dir = &config.dir;
    let data = dir.join("data");
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
    let names: Vec<&str> = config.nemeses.iter().map(|n| n.name()).collect();
    eprintln!(
        "seed {}; {} nodes {}; nemeses {}; {} s; working in {}",
        config.workload.seed,
        config.nodes,
        if config.netns {
            "in network namespaces"
        } else {
            "on loopback"
        },
        names.join(","),
        config.duration.as_secs(),
        dir.display()
    );
    let power = if config.nemeses.contains(&Nemesis::PowerLoss) {
        Some(PowerLossFs::mount(&data, config.workload.seed)?)
    } else {
        None
    };
    let mut cluster = Cluster::create(cluster::Options {
        nodes: config.nodes,
        binary: config.binary.clone(),
        dir: dir.clone(),
        data_root: data.clone(),
        netns: config.netns,
        base_port: config.base_port,
        fake_clocks: config.nemeses.contains(&Nemesis::Clock),
        skip_fsync: config.skip_fsync,
        lease_reads: config.lease_reads,
    })?;
    cluster.start_all()?;
    if cluster.wait_leader(Duration::from_secs(30)).is_none() {
        return Err(format!("no leader within 30 s\n{}", cluster.log_tails(20)));
    }
    let targets = Targets {
        dial: (0..config.nodes)
            .map(|i| cluster.client_addr(i).to_string())
            .collect(),
        advertised: (0..config.nodes)
            .map(|i| {
                if config.netns {
                    format!("{}:{}", Network::host(i), netns::CLIENT_PORT)
                } else {
                    cluster.client_addr(i).to_string()
                }
            })
            .collect(),
    };

    let start = Instant::now();
    let load = Workload::start(targets.clone(), config.workload.clone(), start);
    let mut schedule = Schedule {
        cluster: &mut cluster,
        nemeses: config.nemeses.clone(),
        timing: config.timing,
        rng: Rng::new(config.workload.seed),
        start,
        power: power.as_ref().map(|p| p as &dyn PowerSwitch),
        events: Vec::new(),
        power_losses: 0,
    };
    let faults = schedule.run(config.duration);
    let healed = schedule.heal_all();
    let events = std::mem::take(&mut schedule.events);
    // Some time without faults: the cluster must recover and serve again.
    let recovered = cluster.wait_leader(Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(3));
    let recorded = load.stop()?;
    faults?;
    healed?;
    if recovered.is_none() {
        eprintln!("no leader 30 s after healing\n{}", cluster.log_tails(30));
    }
    if recorded.counts.ok == 0 {
        return Err(format!(
            "no client operation got an answer in the whole run\n{}",
            cluster.log_tails(20)
        ));
    }
    let ops = recorded.ops;
    let counts = recorded.counts;
    for anomaly in &recorded.anomalies {
        eprintln!("ANOMALY: {anomaly}");
    }
    let exits = cluster.unexpected_exits();
    for exit in &exits {
        eprintln!("ANOMALY: {exit}");
    }

    let mut keys: Vec<u64> = (0..recorded.generations * config.workload.keys).collect();
    keys.extend(
        ops.iter()
            .filter(|op| op.key >= LEDGER_BASE && matches!(op.kind, OpKind::Set { .. }))
            .map(|op| op.key),
    );
    keys.sort_unstable();
    keys.dedup();
    let final_reads = workload::final_reads(&targets, keys, start, Duration::from_secs(30));
    let diverged = converge(&cluster, Duration::from_secs(30));
    let mut history = History {
        ops,
        events,
        notes: vec![
            ("failed".into(), counts.failed),
            ("diverged".into(), diverged.len() as u64),
            ("anomalies".into(), counts.anomalies + exits.len() as u64),
        ],
    };
    match final_reads {
        Ok(reads) => history.ops.extend(reads),
        // Every acknowledged write is then unaccounted for: the lost-write check reports none of
        // them, so the run must fail on its own account.
        Err(why) => {
            eprintln!("FINAL READS FAILED: {why}");
            history.notes.push(("final_reads_failed".into(), 1));
        }
    }
    let path = dir.join("history.txt");
    history.save(&path).map_err(|e| e.to_string())?;
    for line in &diverged {
        eprintln!("DIVERGED: {line}");
    }
    let summary = report(&history, &path);
    if !summary.passed() {
        eprintln!("{}", cluster.log_tails(15));
    }
    drop(cluster);
    drop(power);
    if summary.passed() && config.remove_dir_on_pass {
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(summary)
}

/// Waits until every node reports the same applied index, then compares their digests: one line per
/// node that differs (or never caught up).
fn converge(cluster: &Cluster, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    loop {
        let digests: Vec<Option<(u64, String)>> =
            (0..cluster.nodes()).map(|i| cluster.digest(i)).collect();
        let indexes: Vec<u64> = digests.iter().flatten().map(|(index, _)| *index).collect();
        let same_index = indexes.len() == digests.len() && indexes.iter().all(|i| *i == indexes[0]);
        if same_index {
            let first = digests[0].as_ref().map(|(_, d)| d.clone());
            return digests
                .iter()
                .enumerate()
                .filter(|(_, d)| d.as_ref().map(|(_, d)| d.clone()) != first)
                .map(|(i, d)| format!("node {}: {d:?}, node 1: {first:?}", i + 1))
                .collect();
        }
        if Instant::now() >= deadline {
            return vec![format!(
                "the nodes never reached one applied index in {} s: {digests:?}",
                limit.as_secs()
            )];
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Operations of an illegal sub-history printed; the rest are in the history file.
const SHOWN_OPS: usize = 40;
/// Lost writes and misordered versions printed; the rest are counted.
const SHOWN_PROBLEMS: usize = 10;

/// Re-checks a saved history.
pub fn check_file(path: &Path) -> Result<Summary, String> {
    let history = History::load(path)?;
    Ok(report(&history, path))
}

/// Checks the history, printing what is wrong (to stderr); the summary.
pub fn report(history: &History, path: &Path) -> Summary {
    let verdict = verdict::linearizable(history);
    let lost = verdict::lost_writes(history);
    let final_reads_failed = history.note("final_reads_failed").unwrap_or(0);
    let unknown = history.ops.iter().filter(|op| op.ret.is_none()).count() as u64;
    let failed = history.note("failed").unwrap_or(0);
    let ok = history.ops.len() as u64 - unknown;
    for line in lost.iter().take(SHOWN_PROBLEMS) {
        eprintln!("LOST: {line}");
    }
    if lost.len() > SHOWN_PROBLEMS {
        eprintln!("... {} more lost", lost.len() - SHOWN_PROBLEMS);
    }
    if let Outcome::Illegal { key, why, .. } = &verdict.outcome {
        eprintln!("NOT linearizable on key {} ({key}): {why}", key_name(*key));
    }
    // Versions are log indexes, one order over all keys: a per-key check cannot see a log suffix
    // rewritten under keys nobody read back.
    let misordered = verdict::version_order(history);
    for line in misordered.iter().take(SHOWN_PROBLEMS) {
        eprintln!("NOT linearizable across keys: {line}");
    }
    if misordered.len() > SHOWN_PROBLEMS {
        eprintln!("... {} more across keys", misordered.len() - SHOWN_PROBLEMS);
    }
    if let Some((key, ops)) = verdict::shrunk(&verdict) {
        eprintln!(
            "smallest illegal sub-history of {} found ({} ops):",
            key_name(key),
            ops.len()
        );
        for op in ops.iter().take(SHOWN_OPS) {
            eprintln!("    {op:?}");
        }
        if ops.len() > SHOWN_OPS {
            eprintln!("    ... {} more in the history file", ops.len() - SHOWN_OPS);
        }
    }
    if verdict.inconclusive() {
        eprintln!(
            "the checker ran out of budget on keys {:?}",
            verdict.inconclusive_keys
        );
    }
    let mut per_nemesis: std::collections::BTreeMap<&str, u64> = Default::default();
    for event in history.events.iter().filter(|e| !e.heal) {
        let name = event.what.split(':').next().unwrap_or_default();
        *per_nemesis.entry(name).or_default() += 1;
    }
    if !per_nemesis.is_empty() {
        let counts: Vec<String> = per_nemesis
            .iter()
            .map(|(n, c)| format!("{n}={c}"))
            .collect();
        eprintln!("faults injected: {}", counts.join(" "));
    }
    let recovery = verdict::recovery_windows(history);
    if let Some(ms) = recovery.iter().flatten().max() {
        eprintln!(
            "faults healed: {}; longest wait for an answer after a heal: {ms} ms",
            recovery.len()
        );
    }
    if let Some((gap_us, at_us)) = verdict::longest_silence(history) {
        eprintln!(
            "longest time without any answer: {} ms, from {:.3} s",
            gap_us / 1000,
            at_us as f64 / 1e6
        );
    }
    let summary = Summary {
        ops: ok + unknown + failed,
        ok,
        failed,
        unknown,
        linearizable: if verdict.illegal() || !misordered.is_empty() {
            Linearizable::No
        } else if verdict.inconclusive() {
            Linearizable::Unknown
        } else {
            Linearizable::Yes
        },
        // A run whose final reads failed cannot vouch for a single write.
        lost: lost.len() as u64 + final_reads_failed,
        diverged: history.note("diverged").unwrap_or(0),
        anomalies: history.note("anomalies").unwrap_or(0),
        history: path.to_path_buf(),
    };
    if !summary.passed() {
        eprintln!("history: {}", path.display());
    }
    summary
}

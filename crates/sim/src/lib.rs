//! # raftkv-sim: a deterministic simulator of a whole raftkv cluster
//!
//! One seed fixes everything: cluster size, fault mix, workload, timing, clocks. The cluster runs in one
//! thread in virtual time, and each node is the server's own code: the replica (`raftkv-replica`, with
//! the Raft core and the real `Store`) over the real WAL (`raftkv-wal`) on a simulated file system.
//! After every step the safety properties of Raft are checked ([`checks`]); at the end the clients'
//! history of real protocol commands is checked for linearizability ([`linearizability`]). See
//! `docs/simulation.md` for the fault model and how to replay a seed.
//!
//! Layout, one concern per file: [`rng`] (the only randomness), [`network`] (message faults and
//! partitions), [`disk`] (the WAL on a simulated file system: latency, group commit, crashes, I/O
//! errors), [`clock`] (skewed, drifting, jumping wall clocks), [`node`] (drives one replica as the
//! server does), [`client`] (workload and history), [`checks`] (safety properties), [`simulator`] (the
//! loop, the nemesis, liveness).
//!
//! It contains no node logic of its own: anything a node decides is decided by the replica.
#![forbid(unsafe_code)]

pub mod checks;
pub mod client;
pub mod clock;
pub mod compound;
pub mod disk;
pub mod linearizability;
pub mod network;
pub mod node;
pub mod rng;
pub mod simulator;

use std::cell::RefCell;
use std::time::{Duration, Instant};

pub use simulator::{run_seed, Options, Report, DEFAULT_STEPS};

/// Totals over a run of many seeds.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub seeds: u64,
    /// Seeds with a safety/liveness violation or a panic.
    pub violations: u64,
    pub non_linearizable: u64,
    /// Seeds with a key whose history the checker could neither prove nor refute within its budget.
    /// They fail the run: a history that was not checked is not a pass.
    pub inconclusive: u64,
    /// Writes in a session that clients sent again after an unknown outcome (each one a chance for a
    /// write to be applied twice).
    pub retried_writes: u64,
    /// Writes in a session that found their session evicted or expired.
    pub sessions_lost: u64,
    /// Membership changes that committed (in seeds that make them).
    pub membership_changes: u64,
    /// Reads served from a leader lease (in seeds that turn leases on).
    pub lease_reads: u64,
    /// Answered compound Redis commands (in seeds that send them).
    pub compound_ops: u64,
    pub failures: Vec<Report>,
    pub elapsed: Duration,
}

impl Summary {
    pub fn passed(&self) -> bool {
        self.violations == 0 && self.non_linearizable == 0 && self.inconclusive == 0
    }

    /// The summary line, e.g. `seeds=300 violations=0 non_linearizable=0 inconclusive=0
    /// retried_writes=812 sessions_lost=31`.
    pub fn line(&self) -> String {
        format!(
            "seeds={} violations={} non_linearizable={} inconclusive={} retried_writes={} \
             sessions_lost={} membership_changes={} lease_reads={} compound_ops={}",
            self.seeds,
            self.violations,
            self.non_linearizable,
            self.inconclusive,
            self.retried_writes,
            self.sessions_lost,
            self.membership_changes,
            self.lease_reads,
            self.compound_ops
        )
    }
}

/// Runs seeds `first .. first + count`, calling `on_failure` for each failing seed as it happens.
pub fn run_seeds(
    first: u64,
    count: u64,
    options: &Options,
    mut on_failure: impl FnMut(&Report),
) -> Summary {
    let started = Instant::now();
    let mut summary = Summary::default();
    for seed in first..first.saturating_add(count) {
        let report = run_seed(seed, options);
        summary.seeds += 1;
        summary.violations += u64::from(!report.violations.is_empty());
        summary.non_linearizable += u64::from(report.non_linearizable());
        summary.inconclusive += u64::from(report.inconclusive());
        summary.retried_writes += report.stats.retries;
        summary.sessions_lost += report.stats.sessions_lost;
        summary.membership_changes += report.stats.membership_changes;
        summary.lease_reads += report.stats.lease_reads;
        summary.compound_ops += report.stats.compound_ops;
        if report.failed() {
            on_failure(&report);
            summary.failures.push(report);
        }
    }
    summary.elapsed = started.elapsed();
    summary
}

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Replaces the panic hook with one that records the message and location instead of printing them,
/// so a panicking seed is reported once, on its failure line.
pub fn quiet_panics() {
    std::panic::set_hook(Box::new(|info| {
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = payload_text(info.payload());
        LAST_PANIC.with(|p| *p.borrow_mut() = Some(format!("{message}{at}")));
    }));
}

fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}

/// The text of a caught panic (with its location if `quiet_panics` is installed).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    LAST_PANIC
        .with(|p| p.borrow_mut().take())
        .unwrap_or_else(|| payload_text(payload))
}

//! A short Jepsen-style run in CI: five real processes, every nemesis this machine can do in turn
//! (kills, pauses, all-kill, clock jumps, power loss; with root: partitions, bridges, one-way and
//! lossy links, slow links across network namespaces), concurrent clients, then the history checked
//! for linearizability, lost writes and diverged replicas. `raftkv-chaos` runs the same thing for as
//! long as asked (docs/testing.md).

use std::path::PathBuf;
use std::time::Duration;

use raftkv_chaos::nemesis::{self, Nemesis, Timing};
use raftkv_chaos::run::{run, RunConfig};
use raftkv_chaos::workload::Settings;
use raftkv_chaos::{cluster, netns, power};

const RAFTKV: &str = env!("CARGO_BIN_EXE_raftkv");

#[test]
fn every_nemesis_in_turn_leaves_a_linearizable_history_and_nothing_lost() {
    let netns = match (netns::unavailable(), netns::packet_rules_unavailable()) {
        (None, None) => true,
        (why, rules) => {
            eprintln!(
                "network nemeses SKIPPED ({}): running the process faults on loopback",
                why.or(rules).unwrap_or_default()
            );
            false
        }
    };
    let nemeses: Vec<Nemesis> = nemesis::ALL
        .into_iter()
        .filter(|n| netns || !n.needs_netns())
        .filter(|n| {
            let missing = match n {
                Nemesis::Clock => cluster::libfaketime()
                    .is_none()
                    .then(|| "libfaketime is not installed".to_string()),
                Nemesis::PowerLoss => power::unavailable(),
                _ => None,
            };
            if let Some(why) = &missing {
                eprintln!("nemesis {} SKIPPED: {why}", n.name());
            }
            missing.is_none()
        })
        .collect();
    let names: Vec<&str> = nemeses.iter().map(|n| n.name()).collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let config = RunConfig {
        // About four seconds per nemesis: every one gets its turn.
        duration: Duration::from_secs(4 * nemeses.len() as u64 + 4),
        nemeses,
        nodes: 5,
        netns,
        workload: Settings {
            clients: 6,
            keys: 12,
            key_lifetime: Duration::from_secs(10),
            op_timeout: Duration::from_millis(1000),
            think: Duration::from_millis(5),
            seed: 20_261_203,
        },
        binary: PathBuf::from(RAFTKV),
        dir: dir.path().to_path_buf(),
        remove_dir_on_pass: false,
        base_port: 20_000 + (std::process::id() % 200) as u16 * 50,
        skip_fsync: false,
        lease_reads: false,
        timing: Timing {
            quiet: (Duration::from_millis(1000), Duration::from_millis(1500)),
            fault: (Duration::from_millis(2000), Duration::from_millis(2500)),
        },
    };
    let summary = run(&config).expect("the run itself");
    println!("{summary}");
    assert!(summary.passed(), "{summary}");
    let history = raftkv_chaos::history::History::load(&summary.history).expect("the history");
    for nemesis in &names {
        assert!(
            history
                .events
                .iter()
                .any(|e| e.what.starts_with(&format!("{nemesis}:"))),
            "{nemesis} never ran"
        );
    }
    assert!(summary.ok > 1000, "the clients did work: {summary}");
}

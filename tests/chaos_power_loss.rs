//! The power-loss check catches a skipped fsync: with the test-only `unsafe_skip_fsync`, nodes
//! acknowledge writes that sit in memory; the power-loss file system (raftkv-lazyfs) then drops them
//! when every node loses power, and the checker must report acknowledged writes lost. Without the
//! switch the same faults lose nothing (tests/chaos_short.rs runs power loss among the others).

use std::path::PathBuf;
use std::time::Duration;

use raftkv_chaos::nemesis::{Nemesis, Timing};
use raftkv_chaos::run::{run, RunConfig};
use raftkv_chaos::workload::Settings;

const RAFTKV: &str = env!("CARGO_BIN_EXE_raftkv");

fn config(dir: &std::path::Path, skip_fsync: bool) -> RunConfig {
    RunConfig {
        nemeses: vec![Nemesis::PowerLoss],
        // One power loss, of every node (the first one always takes them all).
        duration: Duration::from_secs(5),
        nodes: 3,
        netns: false,
        workload: Settings {
            clients: 4,
            keys: 8,
            key_lifetime: Duration::from_secs(10),
            op_timeout: Duration::from_millis(1000),
            think: Duration::from_millis(5),
            seed: 7,
        },
        binary: PathBuf::from(RAFTKV),
        dir: dir.to_path_buf(),
        remove_dir_on_pass: false,
        base_port: 21_000 + (std::process::id() % 200) as u16 * 50,
        skip_fsync,
        lease_reads: false,
        timing: Timing {
            quiet: (Duration::from_millis(1500), Duration::from_millis(1500)),
            fault: (Duration::from_millis(1000), Duration::from_millis(1000)),
        },
    }
}

#[test]
fn a_skipped_fsync_loses_acknowledged_writes_at_power_loss_and_the_checker_says_so() {
    if let Some(why) = raftkv_chaos::power::unavailable() {
        eprintln!("SKIPPED: the power-loss file system cannot be mounted here: {why}");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let unsafe_run = match run(&config(dir.path(), true)) {
        Ok(summary) => summary,
        Err(why) if why.contains("mount") => {
            eprintln!("SKIPPED: {why}");
            return;
        }
        Err(why) => panic!("{why}"),
    };
    println!("fsync skipped: {unsafe_run}");
    assert!(unsafe_run.lost > 0, "{unsafe_run}");
    assert!(!unsafe_run.passed());

    let dir = tempfile::tempdir().expect("temp dir");
    let safe_run = run(&config(dir.path(), false)).expect("the run itself");
    println!("fsync kept: {safe_run}");
    assert!(safe_run.passed(), "{safe_run}");
}

//! `raftkv bench --op incr` end to end: exactly-once increments through leader crashes. Twenty clients
//! increment counters (getm + cas in a session) while the leader is killed with SIGKILL three times
//! and restarted; the bench must exit 0 with every acknowledged increment counted once and none unknown.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// `(acknowledged, counted, unknown)` from the bench's `verified:` line.
fn verified_line(stdout: &str) -> Option<(u64, u64, u64)> {
    let line = stdout.lines().find(|l| l.starts_with("verified: "))?;
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    match numbers[..] {
        [acknowledged, counted, unknown] => Some((acknowledged, counted, unknown)),
        _ => None,
    }
}

#[test]
fn increments_survive_three_leader_kills_exactly_once() {
    let mut cluster = Cluster::start(3, FAST_TUNABLES);
    cluster.wait_leader();
    let bench = Command::new(RAFTKV)
        .args([
            "bench",
            "--op",
            "incr",
            "--clients",
            "20",
            "--counters",
            "10",
        ])
        .args(["--duration", "14", "--addr", &cluster.addrs().join(",")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start raftkv bench");
    let started = Instant::now();
    for round in 1..=3 {
        std::thread::sleep(Duration::from_millis(2000));
        let leader = cluster.wait_leader();
        eprintln!(
            "round {round}: killing leader {leader} at {:?}",
            started.elapsed()
        );
        cluster.kill(leader);
        cluster.wait_new_leader(leader);
        cluster.start_node(leader);
    }
    let output = bench.wait_with_output().expect("bench finishes");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stdout}{stderr}");
    assert!(started.elapsed() < Duration::from_secs(120));
    let (acknowledged, counted, unknown) =
        verified_line(&stdout).unwrap_or_else(|| panic!("no verified line in\n{stdout}{stderr}"));
    assert!(acknowledged > 0, "nothing was incremented");
    assert_eq!(counted, acknowledged, "{stdout}");
    assert_eq!(unknown, 0, "{stdout}");
    assert!(
        output.status.success(),
        "{:?}\n{stdout}{stderr}",
        output.status
    );
}

#[test]
fn the_verified_line_is_read_as_printed() {
    assert_eq!(
        verified_line("x\nverified: 12 acknowledged, 12 counted, 0 unknown\n"),
        Some((12, 12, 0))
    );
    assert_eq!(verified_line("no such line"), None);
}

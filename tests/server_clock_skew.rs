//! Real processes whose wall clocks disagree by 40 s (libfaketime): leadership moves between a
//! fast-clocked, a slow-clocked and a true-clocked node while keys with short lifetimes are written and
//! read. Once any read has seen a key expired, no later read on any leader may see it again and a
//! `cas` on it must fail ("an expiry may fire late, never un-fire", docs/protocol.md).
//!
//! Needs Debian's `faketime` package (its `libfaketimeMT.so.1`); `.ci/run` installs it. Without it
//! the test says so and passes vacuously.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};
use support::*;

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
/// Wall-clock offsets of the three nodes.
const OFFSETS: [&str; 3] = ["+20s", "-20s", "+0s"];
const MIN_ROUNDS: usize = 6;
const MAX_ROUNDS: usize = 40;

fn start_skewed(cluster: &mut Cluster, i: usize) {
    cluster.start_node_with_env(
        i,
        &[
            ("LD_PRELOAD", LIBFAKETIME),
            ("FAKETIME", OFFSETS[i]),
            // Timers keep real monotonic time; only the wall clock is skewed.
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
}

struct Written {
    version: u64,
    /// Set once some read saw the key expired.
    expired_seen: bool,
}

/// Reads every key on the current leader, recording expiries and failing on one that un-fires.
fn read_all(
    client: &mut Client,
    keys: &mut BTreeMap<String, Written>,
    round: usize,
    leaders: &[&str],
) -> usize {
    let mut newly_expired = 0;
    for (key, written) in keys.iter_mut() {
        let reply = client.call_retry(format!("get {key}\r\n").as_bytes(), Duration::from_secs(20));
        if reply == b"ERR_NOT_FOUND\r\n" {
            newly_expired += usize::from(!written.expired_seen);
            written.expired_seen = true;
        } else {
            assert!(
                !written.expired_seen,
                "round {round}: {key} was seen expired, then {} (leaders so far: {leaders:?})",
                show(&reply)
            );
        }
    }
    newly_expired
}

#[test]
fn an_expiry_never_un_fires_when_leaders_clocks_disagree() {
    if !Path::new(LIBFAKETIME).exists() {
        eprintln!("SKIPPED: {LIBFAKETIME} not found (apt-get install faketime)");
        return;
    }
    let started = Instant::now();
    let mut cluster = Cluster::configure(3, FAST_TUNABLES);
    for i in 0..3 {
        start_skewed(&mut cluster, i);
    }
    let mut leaders: Vec<&str> = Vec::new();
    let mut keys: BTreeMap<String, Written> = BTreeMap::new();
    let mut expiries_seen = 0;
    let mut round = 0;
    // Until both the fast and the slow node have led (and at least MIN_ROUNDS), within MAX_ROUNDS.
    while round < MIN_ROUNDS || !(leaders.contains(&OFFSETS[0]) && leaders.contains(&OFFSETS[1])) {
        assert!(
            round < MAX_ROUNDS,
            "leadership never visited both skewed nodes: {leaders:?}"
        );
        let leader = cluster.wait_leader();
        leaders.push(OFFSETS[leader]);
        let mut client = cluster.client();
        if leader == 0 {
            // The fast node judges everything written so far expired. Read at once, write nothing,
            // and kill it: any expiry it reported must stay fired under the next leaders.
            expiries_seen += read_all(&mut client, &mut keys, round, &leaders);
            cluster.kill(leader);
        } else {
            let key = format!("k{round}");
            let reply =
                client.call_retry(&set_cmd(&key, 3, b"short-lived"), Duration::from_secs(20));
            let version =
                ok_version(&reply).unwrap_or_else(|| panic!("set {key}: {}", show(&reply)));
            keys.insert(
                key,
                Written {
                    version,
                    expired_seen: false,
                },
            );
            expiries_seen += read_all(&mut client, &mut keys, round, &leaders);
            for (key, written) in keys.iter().filter(|(_, w)| w.expired_seen) {
                let cas = cas_cmd(key, 0, written.version, b"revived");
                let reply = client.call_retry(&cas, Duration::from_secs(20));
                assert!(
                    reply == b"ERR_NOT_FOUND\r\n",
                    "round {round}: a cas on expired {key} answered {} (leaders so far: {leaders:?})",
                    show(&reply)
                );
            }
            // Hand leadership to another node.
            cluster.terminate(leader);
        }
        start_skewed(&mut cluster, leader);
        round += 1;
    }
    assert!(
        expiries_seen > 0,
        "the test never saw a key expire: it checked nothing (leaders: {leaders:?})"
    );
    assert!(started.elapsed() < Duration::from_secs(240));
}

//! Durability across whole-cluster crashes: the whole cluster is killed with `kill -9` (under write load) and restarted
//! from its data directories with the same config: every acknowledged write is there. Then the same
//! after a clean stop (SIGTERM, exit status 0).

mod support;

use std::time::{Duration, Instant};
use support::*;

fn getm(client: &mut Client, key: &str) -> Vec<u8> {
    client.call_retry(format!("getm {key}\r\n").as_bytes(), LEADER_TIMEOUT)
}

#[test]
fn whole_cluster_killed_and_restarted() {
    whole_cluster_restart(FAST_TUNABLES);
}

/// The same with a snapshot every 150 entries: recovery is snapshot + log suffix.
#[test]
fn whole_cluster_killed_and_restarted_with_snapshots() {
    whole_cluster_restart(&format!("{FAST_TUNABLES}snapshot_entries = 150\n"));
}

fn whole_cluster_restart(tunables: &str) {
    let started = Instant::now();
    let mut cluster = Cluster::start(3, tunables);
    let mut client = cluster.client();

    // Some history besides plain sets: an overwrite, a cas, a delete, a delete + re-create.
    client.set_retry("overwritten", b"first", Duration::from_secs(10));
    let overwritten = client.set_retry("overwritten", b"second", Duration::from_secs(10));
    let casv = client.set_retry("cased", b"before", Duration::from_secs(10));
    let reply = client
        .call(&cas_cmd("cased", 0, casv, b"after"))
        .expect("cas");
    let cased = ok_version(&reply).unwrap_or_else(|| panic!("cas: {}", show(&reply)));
    client.set_retry("deleted", b"gone", Duration::from_secs(10));
    assert_eq!(
        show(&client.call(b"delete deleted\r\n").unwrap()),
        show(b"DELETED\r\n")
    );
    client.set_retry("recreated", b"old", Duration::from_secs(10));
    assert_eq!(
        show(&client.call(b"delete recreated\r\n").unwrap()),
        show(b"DELETED\r\n")
    );
    let recreated = client.set_retry("recreated", b"new", Duration::from_secs(10));

    let load = WriteLoad::start(cluster.addrs(), "durable", 4);
    std::thread::sleep(Duration::from_millis(1500));
    // Every node dies at once, in the middle of the writes.
    for i in 0..3 {
        cluster.kill(i);
    }
    let (mut acked, _) = load.stop();
    assert!(!acked.is_empty(), "no write acknowledged before the crash");

    let restarted_at = Instant::now();
    for i in 0..3 {
        cluster.start_node(i);
    }
    cluster.wait_leader();
    eprintln!(
        "{} acknowledged writes; leader {:?} after the restart",
        acked.len(),
        restarted_at.elapsed()
    );
    let mut client = cluster.client();
    let check_history = |client: &mut Client| {
        assert_eq!(
            show(&getm(client, "overwritten")),
            show(format!("VALUE {overwritten} 0 6\r\nsecond\r\n").as_bytes())
        );
        assert_eq!(
            show(&getm(client, "cased")),
            show(format!("VALUE {cased} 0 5\r\nafter\r\n").as_bytes())
        );
        assert_eq!(show(&getm(client, "deleted")), show(b"ERR_NOT_FOUND\r\n"));
        assert_eq!(
            show(&getm(client, "recreated")),
            show(format!("VALUE {recreated} 0 3\r\nnew\r\n").as_bytes())
        );
    };
    check_history(&mut client);
    check_acked(&mut client, &acked);

    // Writes go on after the restart, with versions above everything before.
    let load = WriteLoad::start(cluster.addrs(), "after", 2);
    std::thread::sleep(Duration::from_millis(500));
    let (more, _) = load.stop();
    assert!(!more.is_empty(), "no write acknowledged after the restart");
    let max_before = acked.iter().map(|a| a.version).max().unwrap_or(0);
    assert!(more.iter().all(|a| a.version > max_before));
    acked.extend(more);

    // A clean stop of every node (SIGTERM: each exits 0), then the same directories again.
    for i in 0..3 {
        let status = cluster.terminate(i).expect("node exits after SIGTERM");
        assert!(status.success(), "node {} exit status {status}", i + 1);
    }
    for i in 0..3 {
        cluster.start_node(i);
    }
    cluster.wait_leader();
    let mut client = cluster.client();
    check_history(&mut client);
    check_acked(&mut client, &acked);
    eprintln!(
        "{tunables:?}: {} writes checked after two restarts, took {:?}",
        acked.len(),
        started.elapsed()
    );
}

//! Failover: nodes crash (`kill -9`) or stop (SIGTERM) under write load, and no
//! acknowledged write is ever lost.

mod support;

use std::time::{Duration, Instant};
use support::*;

fn acked_after(acked: &[Acked], at: Instant) -> usize {
    acked.iter().filter(|a| a.at > at).count()
}

/// The leader is killed while four writers keep writing. A new leader is elected, every
/// acknowledged write is readable with its exact value and version, and writes resume.
#[test]
fn leader_killed_under_write_load() {
    let started = Instant::now();
    let mut cluster = Cluster::start(3, FAST_TUNABLES);
    let old = cluster.wait_leader();
    // A key with a 4 s lifetime, stamped by the old leader: it must expire on time under the new one.
    let mut client = cluster.client();
    let exp_set_at = Instant::now();
    let reply = client.call(&set_cmd("expiring", 4, b"soon gone")).unwrap();
    let exp_version = ok_version(&reply).unwrap_or_else(|| panic!("set: {}", show(&reply)));
    let load = WriteLoad::start(cluster.addrs(), "crash", 4);
    std::thread::sleep(Duration::from_millis(1000));

    let killed_at = Instant::now();
    cluster.kill(old);
    let new = cluster.wait_new_leader(old);
    let election = killed_at.elapsed();
    // Let the writers find the new leader and go on for a while.
    std::thread::sleep(Duration::from_millis(1500));
    let (acked, failed) = load.stop();
    let before = acked.len() - acked_after(&acked, killed_at);
    let resumed = acked_after(&acked, killed_at + election);
    eprintln!(
        "{} acknowledged ({before} before the kill, {resumed} after the new leader), {failed} failed; \
         new leader after {election:?}",
        acked.len()
    );
    assert!(before > 0, "no write acknowledged before the kill");
    assert!(resumed > 0, "writes did not resume under the new leader");

    let before_getm = exp_set_at.elapsed();
    let reply = client.call_retry(b"getm expiring\r\n", Duration::from_secs(5));
    if exp_set_at.elapsed() < Duration::from_millis(3800) {
        let (version, exptime, _) =
            getm_fields(&reply).unwrap_or_else(|| panic!("getm expiring: {}", show(&reply)));
        assert_eq!(version, exp_version);
        assert!(
            (1..4).contains(&exptime),
            "exptime {exptime} {before_getm:?} into a 4 s lifetime"
        );
    }
    check_acked(&mut client, &acked);

    // The old leader comes back as a follower, catches up, and redirects to the new leader.
    cluster.start_node(old);
    let deadline = Instant::now() + Duration::from_secs(15);
    let new_addr = cluster.addr(new).to_string();
    loop {
        let p = probe(cluster.addr(old));
        if p == Probe::Redirect(new_addr.clone()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "restarted old leader answers {p:?}, expected a redirect to {new_addr}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let v = client.set_retry("after-restart", b"x", Duration::from_secs(10));
    assert!(acked.iter().all(|a| a.version < v));
    std::thread::sleep(Duration::from_millis(4500).saturating_sub(exp_set_at.elapsed()));
    let reply = client.call_retry(b"get expiring\r\n", Duration::from_secs(5));
    assert_eq!(
        show(&reply),
        show(b"ERR_NOT_FOUND\r\n"),
        "4.5 s after a 4 s set"
    );
    eprintln!(
        "leader_killed_under_write_load took {:?}",
        started.elapsed()
    );
}

/// With two of five nodes down (the leader among them) the cluster keeps serving; with three
/// down no write succeeds, and once they return every acknowledged write is there.
#[test]
fn minority_down_serves_majority_down_does_not() {
    let started = Instant::now();
    let mut cluster = Cluster::start(5, FAST_TUNABLES);
    let first = cluster.wait_leader();
    let load = WriteLoad::start(cluster.addrs(), "minority", 3);
    std::thread::sleep(Duration::from_millis(700));

    // A minority down: the leader and one follower.
    let follower = (0..5).find(|&i| i != first).unwrap();
    let killed_at = Instant::now();
    cluster.kill(first);
    cluster.kill(follower);
    let second = cluster.wait_new_leader(first);
    let elected = killed_at.elapsed();
    std::thread::sleep(Duration::from_millis(1200));
    let (mut acked, _) = load.stop();
    let resumed = acked_after(&acked, killed_at + elected);
    assert!(
        resumed > 0,
        "no write acknowledged with a minority down ({} before)",
        acked.len()
    );
    let mut client = cluster.client();
    check_acked(&mut client, &acked);

    // A majority down: only the current leader and one follower remain.
    let others: Vec<usize> = cluster
        .running()
        .into_iter()
        .filter(|&i| i != second)
        .collect();
    assert_eq!(others.len(), 2);
    let survivor = others[0];
    cluster.kill(others[1]);
    // Writes sent straight to either survivor, repeatedly for a few seconds: none may succeed.
    let mut replies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut n = 0;
    while Instant::now() < deadline {
        for node in [second, survivor] {
            n += 1;
            let key = format!("no-majority-{n}");
            let reply = match Conn::connect_with(cluster.addr(node), Duration::from_secs(3)) {
                Ok(mut conn) => match conn.request(&set_cmd(&key, 0, b"must not commit")) {
                    Ok(reply) => show(&reply),
                    Err(e) => format!("error: {e}"),
                },
                Err(e) => format!("connect error: {e}"),
            };
            assert!(
                !reply.starts_with("\"OK"),
                "write {key} to node {} succeeded without a majority: {reply}",
                node + 1
            );
            replies.push(reply);
        }
    }
    eprintln!("replies without a majority: {replies:?}");
    // Reads need a majority too (ReadIndex): no VALUE / ERR_NOT_FOUND from a cut-off leader.
    assert!(
        cluster.wait_leader_for(Duration::from_secs(1)).is_none(),
        "a node served a read without a majority"
    );

    // The three come back: a leader again, every acknowledged write there, writes succeed.
    for i in 0..5 {
        if !cluster.is_running(i) {
            cluster.start_node(i);
        }
    }
    cluster.wait_leader();
    let load = WriteLoad::start(cluster.addrs(), "back", 2);
    std::thread::sleep(Duration::from_millis(500));
    let (more, _) = load.stop();
    assert!(
        !more.is_empty(),
        "no write acknowledged after the nodes returned"
    );
    acked.extend(more);
    check_acked(&mut client, &acked);
    eprintln!(
        "minority/majority test: {} writes checked, took {:?}",
        acked.len(),
        started.elapsed()
    );
}

/// A follower stopped during writes and restarted catches up. Proof: afterwards the *other*
/// follower is killed, so every new write needs the restarted one to accept the leader's appends;
/// then the leader is killed and the other follower restarted, and the restarted follower must win
/// the election (the election restriction lets only a node holding every committed entry win) and
/// serve every acknowledged write.
fn follower_catches_up(graceful: bool, tunables: &str, expect_snapshot: bool) {
    let started = Instant::now();
    let mut cluster = Cluster::start(3, tunables);
    let leader = cluster.wait_leader();
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let (a, b) = (followers[0], followers[1]);

    let load = WriteLoad::start(vec![cluster.addr(leader).to_string()], "catchup", 3);
    std::thread::sleep(Duration::from_millis(500));
    if graceful {
        let status = cluster.terminate(a).expect("follower exits after SIGTERM");
        assert!(
            status.success(),
            "follower exit status after SIGTERM: {status}"
        );
    } else {
        cluster.kill(a);
    }
    let stopped_at = Instant::now();
    std::thread::sleep(Duration::from_millis(1000));
    cluster.start_node(a);
    std::thread::sleep(Duration::from_millis(700));
    let (mut acked, _) = load.stop();
    let while_down = acked
        .iter()
        .filter(|w| w.at > stopped_at && w.at < stopped_at + Duration::from_millis(1000))
        .count();
    assert!(
        while_down > 0,
        "no write acknowledged while the follower was down"
    );
    // Give the restarted follower a moment; it must catch up for what follows to work.
    std::thread::sleep(Duration::from_millis(500));

    // Without b, the leader commits only with a's help.
    cluster.kill(b);
    let mut client = Client::new(vec![cluster.addr(leader).to_string()]);
    for i in 0..20 {
        let key = format!("needs-a-{i}");
        let value = format!("committed by the leader and node {}", a + 1).into_bytes();
        let reply = client.call(&set_cmd(&key, 0, &value)).unwrap_or_else(|e| {
            panic!("set {key} with only the leader and the restarted follower: {e}")
        });
        let version = ok_version(&reply).unwrap_or_else(|| {
            panic!(
                "set {key} with only the leader and the restarted follower: {}",
                show(&reply)
            )
        });
        acked.push(Acked {
            key,
            value,
            version,
            at: Instant::now(),
        });
    }

    // Only a holds everything now: with the leader gone and b back, a must become leader.
    cluster.kill(leader);
    cluster.start_node(b);
    let new = cluster.wait_new_leader(leader);
    assert_eq!(
        new,
        a,
        "node {} (missing the latest writes) became leader instead of node {}",
        new + 1,
        a + 1
    );
    let mut client = cluster.client();
    check_acked(&mut client, &acked);
    if expect_snapshot {
        let log = std::fs::read_to_string(&cluster.nodes[a].log).unwrap_or_default();
        assert!(
            log.contains("installed a snapshot"),
            "node {} caught up without an InstallSnapshot, so this test did not cover that path \
             (or the server's log message changed)",
            a + 1
        );
    }
    eprintln!(
        "follower catch-up ({}, {tunables:?}): {} writes checked, took {:?}",
        if graceful { "SIGTERM" } else { "SIGKILL" },
        acked.len(),
        started.elapsed()
    );
}

#[test]
fn follower_stopped_with_sigterm_catches_up() {
    follower_catches_up(true, FAST_TUNABLES, false);
}

#[test]
fn follower_killed_catches_up() {
    follower_catches_up(false, FAST_TUNABLES, false);
}

/// The same with snapshots every 200 entries: the leader compacts its log past what the stopped
/// follower holds, so catching up needs an InstallSnapshot and then appends.
#[test]
fn follower_catches_up_from_a_snapshot() {
    follower_catches_up(
        false,
        &format!("{FAST_TUNABLES}snapshot_entries = 200\n"),
        true,
    );
}

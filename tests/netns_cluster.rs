//! Five nodes as five hosts: each in its own network namespace with its own IP, the same ports on
//! every node, addressed by host name, bound on 0.0.0.0: `deploy/cluster.toml`, grown to five nodes. Writes go
//! through the leader; then the leader's host is cut off the network, a new leader takes over, the old
//! one comes back as a follower; then the new leader is killed. No acknowledged write may be lost.
//! Skips with a message where network namespaces cannot be made (not root, no `ip`). The namespaces
//! and processes are raftkv-chaos's, as in its Jepsen-style runs.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use raftkv_chaos::cluster::{Cluster, Options};
use support::*;

fn start_cluster(dir: &std::path::Path) -> Result<Cluster, String> {
    let mut cluster = Cluster::create(Options {
        nodes: 5,
        binary: PathBuf::from(RAFTKV),
        dir: dir.to_path_buf(),
        data_root: dir.join("data"),
        netns: true,
        base_port: 0,
        fake_clocks: false,
        skip_fsync: false,
        lease_reads: false,
    })?;
    cluster.start_all()?;
    Ok(cluster)
}

/// Waits until some node other than `except` says it leads; its index.
fn wait_leader(cluster: &Cluster, except: Option<usize>) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(leader) = cluster.leader().filter(|l| Some(*l) != except) {
            return leader;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no leader other than {except:?}\n{}",
            cluster.log_tails(20)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Writes `key` through whichever node leads, starting with `target` and following redirects by
/// host name (`target` is left at the node that acknowledged); its version.
fn write(cluster: &Cluster, target: &mut usize, key: &str, value: &str) -> u64 {
    let request = format!("set {key} 0 {}\r\n{value}\r\n", value.len());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let target = &mut *target;
        assert!(
            std::time::Instant::now() < deadline,
            "no node acknowledged {key}"
        );
        let reply = Conn::connect_with(cluster.client_addr(*target), Duration::from_secs(2))
            .and_then(|mut conn| conn.request(request.as_bytes()));
        match reply {
            Ok(reply) if reply.starts_with(b"OK ") => {
                return ok_version(&reply).expect("a version");
            }
            Ok(reply) if reply.starts_with(b"ERR_REDIRECT ") => {
                let text = String::from_utf8_lossy(&reply).into_owned();
                let mut words = text.split_whitespace().skip(1);
                let addr = format!(
                    "{}:{}",
                    words.next().unwrap_or_default(),
                    words.next().unwrap_or_default()
                );
                *target = cluster
                    .index_of(&addr)
                    .unwrap_or_else(|| panic!("redirect to an unknown host: {text}"));
            }
            _ => {
                *target = (*target + 1) % cluster.nodes();
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn read(cluster: &Cluster, leader: usize, key: &str) -> Vec<u8> {
    let mut conn =
        Conn::connect_with(cluster.client_addr(leader), Duration::from_secs(5)).expect("connect");
    conn.request(format!("get {key}\r\n").as_bytes())
        .expect("a reply")
}

#[test]
fn five_hosts_survive_a_cut_off_leader_and_a_killed_one() {
    if let Some(why) = raftkv_chaos::netns::unavailable() {
        eprintln!("SKIPPED: cannot make network namespaces here: {why}");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cluster = start_cluster(dir.path()).expect("five nodes in five namespaces");
    let first = wait_leader(&cluster, None);
    let mut acked = Vec::new();
    let mut target = first;
    for n in 0..50 {
        write(&cluster, &mut target, &format!("k{n}"), &format!("v{n}"));
        acked.push(n);
    }

    // The leader's host drops off the network: the other four elect a leader and go on.
    cluster
        .network()
        .expect("namespaces")
        .set_link(first, false)
        .expect("cut the link");
    let second = wait_leader(&cluster, Some(first));
    target = second;
    for n in 50..100 {
        write(&cluster, &mut target, &format!("k{n}"), &format!("v{n}"));
        acked.push(n);
    }
    // It comes back and follows.
    cluster
        .network()
        .expect("namespaces")
        .set_link(first, true)
        .expect("restore the link");

    // The new leader dies: the remaining four (the old leader among them) elect another.
    cluster.kill(second);
    let third = wait_leader(&cluster, Some(second));
    target = third;
    for n in 100..150 {
        write(&cluster, &mut target, &format!("k{n}"), &format!("v{n}"));
        acked.push(n);
    }
    for n in acked {
        let value = format!("v{n}");
        let expected = format!("VALUE {}\r\n{value}\r\n", value.len());
        assert_eq!(
            show(&read(&cluster, third, &format!("k{n}"))),
            show(expected.as_bytes()),
            "acknowledged write k{n}"
        );
    }
}

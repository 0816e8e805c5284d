//! Five nodes as five hosts: each in its own network namespace with its own IP, the same ports on
//! every node, addressed by host name, bound on 0.0.0.0: `deploy/cluster.toml`, grown to five nodes. Writes go
//! through the leader; then the leader's host is cut off the network, a new leader takes over, the old
//! one comes back as a follower; then the new leader is killed. No acknowledged write may be lost.
//! Skips with a message where network namespaces cannot be made (not root, no `ip`).

mod support;

use std::time::Duration;

use support::netns::NetnsCluster;
use support::*;

/// Writes `key` through whichever node leads, starting with `target` and following redirects by
/// host name (`target` is left at the node that acknowledged); its version.
fn write(cluster: &NetnsCluster, target: &mut usize, key: &str, value: &str) -> u64 {
    let request = format!("set {key} 0 {}\r\n{value}\r\n", value.len());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let target = &mut *target;
        assert!(
            std::time::Instant::now() < deadline,
            "no node acknowledged {key}"
        );
        let reply = Conn::connect_with(&cluster.client_addr(*target), Duration::from_secs(2))
            .and_then(|mut conn| conn.request(request.as_bytes()));
        match reply {
            Ok(reply) if reply.starts_with(b"OK ") => {
                return ok_version(&reply).expect("a version");
            }
            Ok(reply) if reply.starts_with(b"ERR_REDIRECT ") => {
                let text = String::from_utf8_lossy(&reply).into_owned();
                let host = text.split_whitespace().nth(1).unwrap_or_default();
                *target = cluster
                    .index_of_host(host)
                    .unwrap_or_else(|| panic!("redirect to an unknown host: {text}"));
            }
            _ => {
                *target = (*target + 1) % cluster.nodes;
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn read(cluster: &NetnsCluster, leader: usize, key: &str) -> Vec<u8> {
    let mut conn =
        Conn::connect_with(&cluster.client_addr(leader), Duration::from_secs(5)).expect("connect");
    conn.request(format!("get {key}\r\n").as_bytes())
        .expect("a reply")
}

#[test]
fn five_hosts_survive_a_cut_off_leader_and_a_killed_one() {
    let mut cluster = match NetnsCluster::create(5) {
        Ok(cluster) => cluster,
        Err(why) => {
            eprintln!("SKIPPED: cannot make network namespaces here: {why}");
            return;
        }
    };
    cluster.start_all();
    let first = cluster
        .wait_leader(None, Duration::from_secs(30))
        .expect("a leader");
    let mut acked = Vec::new();
    let mut target = first;
    for n in 0..50 {
        write(&cluster, &mut target, &format!("k{n}"), &format!("v{n}"));
        acked.push(n);
    }

    // The leader's host drops off the network: the other four elect a leader and go on.
    cluster.set_link(first, false);
    let second = cluster
        .wait_leader(Some(first), Duration::from_secs(30))
        .expect("a new leader among the four");
    target = second;
    for n in 50..100 {
        write(&cluster, &mut target, &format!("k{n}"), &format!("v{n}"));
        acked.push(n);
    }
    // It comes back and follows.
    cluster.set_link(first, true);

    // The new leader dies: the remaining four (the old leader among them) elect another.
    cluster.kill(second);
    let third = cluster
        .wait_leader(Some(second), Duration::from_secs(30))
        .expect("a third leader");
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

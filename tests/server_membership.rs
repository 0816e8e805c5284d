//! Membership changes on real processes, while clients write: grow 3 → 5 (one node joins by itself,
//! one is added by the operator), remove the leader, shrink back to 3, replace a node killed with
//! SIGKILL by a new empty one; and every refusal of `raftkv members` with its one-line reason. In each,
//! no acknowledged write is lost, and the longest pause between acknowledged writes is reported.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

/// The membership as `raftkv members list --json` prints it: (id, voter) sorted by id, and the leader.
fn membership(cluster: &Cluster) -> (Vec<(u64, bool)>, u64) {
    let done = cluster.members(&["list", "--json"]);
    assert!(done.status.success(), "members list: {}", done.stderr);
    let table: Value = serde_json::from_str(&done.stdout).expect("JSON");
    let mut members: Vec<(u64, bool)> = table["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| (m["id"].as_u64().unwrap(), m["voter"].as_bool().unwrap()))
        .collect();
    members.sort_unstable();
    (members, table["leader"].as_u64().unwrap_or(0))
}

/// Waits until `members list` shows exactly `expected` (id, voter) pairs.
fn wait_membership(cluster: &Cluster, expected: &[(u64, bool)]) -> u64 {
    let deadline = Instant::now() + LEADER_TIMEOUT;
    loop {
        let (members, leader) = membership(cluster);
        if members == expected {
            return leader;
        }
        assert!(
            Instant::now() < deadline,
            "membership {members:?}, expected {expected:?}\n{}",
            cluster.log_tails(20)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn run_ok(cluster: &Cluster, args: &[&str]) -> String {
    let done = cluster.members(args);
    assert!(
        done.status.success(),
        "members {args:?} failed: {}{}\n{}",
        done.stdout,
        done.stderr,
        cluster.log_tails(20)
    );
    done.stdout
}

/// The longest time between two consecutive acknowledged writes.
fn longest_gap(acked: &[Acked]) -> Duration {
    longest_gap_within(acked, None)
}

/// The longest time between two consecutive acknowledged writes, of those around `window` (from its
/// start to a second after its end) if given.
fn longest_gap_within(acked: &[Acked], window: Option<(Instant, Instant)>) -> Duration {
    let mut times: Vec<Instant> = acked.iter().map(|a| a.at).collect();
    times.sort_unstable();
    if let Some((from, to)) = window {
        let to = to + Duration::from_secs(1);
        // Keep the last ack before the window, so a pause that starts with the change counts.
        let first = times.partition_point(|t| *t < from).saturating_sub(1);
        let last = times.partition_point(|t| *t <= to);
        times = times[first..last].to_vec();
    }
    times
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}

fn index_of_id(cluster: &Cluster, id: u64) -> usize {
    cluster
        .nodes
        .iter()
        .position(|n| n.id == id)
        .expect("a node with that id")
}

#[test]
fn grow_to_five_remove_the_leader_and_shrink_to_three_under_load() {
    let mut cluster = Cluster::configure_with_spares(3, 2, FAST_TUNABLES);
    for i in 0..3 {
        cluster.start_node(i);
    }
    cluster.wait_leader();
    let load = WriteLoad::start(cluster.addrs(), "grow", 4);
    std::thread::sleep(Duration::from_millis(500));

    let mut phases: Vec<(&str, Instant, Instant)> = Vec::new();
    // Node 4 joins by itself (as a learner), then is promoted.
    let began = Instant::now();
    cluster.start_joining(3, &[0, 1, 2]);
    wait_membership(&cluster, &[(1, true), (2, true), (3, true), (4, false)]);
    phases.push(("add a learner (--join)", began, Instant::now()));
    // A client that knows only the new node finds the leader through it.
    let through_new = run_raftkv(
        &[
            "client",
            "--addr",
            cluster.addr(3),
            "set",
            "via-new-node",
            "v",
        ],
        Duration::from_secs(30),
    )
    .expect("client finished");
    assert!(through_new.status.success(), "{}", through_new.stderr);
    let began = Instant::now();
    let promoted = Instant::now() + LEADER_TIMEOUT;
    loop {
        let done = cluster.members(&["promote", "--id", "4"]);
        if done.status.success() {
            break;
        }
        assert!(
            done.stderr.contains("not caught up") && Instant::now() < promoted,
            "promote: {}",
            done.stderr
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    phases.push(("promote a learner", began, Instant::now()));
    // Node 5 is added by the operator, who then starts it; `add` waits until it can promote it.
    let (addr5, peer5) = (
        cluster.nodes[4].client_addr.clone(),
        cluster.nodes[4].peer_addr.clone(),
    );
    let operator = {
        let addrs = cluster.addrs().join(",");
        std::thread::spawn(move || {
            run_raftkv(
                &[
                    "members",
                    "add",
                    "--id",
                    "5",
                    "--client-addr",
                    &addr5,
                    "--peer-addr",
                    &peer5,
                    "--addr",
                    &addrs,
                    "--timeout",
                    "40",
                ],
                Duration::from_secs(60),
            )
            .expect("members add finished")
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let began = Instant::now();
    cluster.start_joining(4, &[0, 1, 2]);
    let added = operator.join().expect("operator thread");
    phases.push(("add and promote (members add)", began, Instant::now()));
    assert!(added.status.success(), "members add: {}", added.stderr);
    assert!(added.stdout.contains("LAG"), "a table: {}", added.stdout);
    let five: Vec<(u64, bool)> = (1..=5).map(|id| (id, true)).collect();
    let leader = wait_membership(&cluster, &five);
    assert!(
        cluster.log_count(4, "already a member of the cluster; rejoining") == 1,
        "node 5 found itself added:\n{}",
        cluster.log_tails(10)
    );
    let table = run_ok(&cluster, &["list"]);
    assert!(table.contains("leader"), "{table}");

    // Remove the leader: it hands over and steps down once the change commits.
    let began = Instant::now();
    run_ok(&cluster, &["remove", "--id", &leader.to_string()]);
    let remaining: Vec<(u64, bool)> = five
        .iter()
        .copied()
        .filter(|(id, _)| *id != leader)
        .collect();
    let next = wait_membership(&cluster, &remaining);
    phases.push(("remove the leader", began, Instant::now()));
    assert_ne!(next, leader);
    let old = index_of_id(&cluster, leader);
    assert!(
        cluster.wait_log(
            old,
            "this node was removed from the cluster",
            1,
            LEADER_TIMEOUT
        ),
        "the removed leader says so:\n{}",
        cluster.log_tails(10)
    );
    // Its client port points clients at the cluster.
    let mut conn = Conn::connect(cluster.addr(old)).expect("connect");
    let reply = conn.request(b"get grow-w0-1\r\n").expect("reply");
    assert!(redirect_target(&reply).is_some(), "{}", show(&reply));
    cluster.terminate(old);

    // Shrink to three: remove one more voter.
    // One of the first three, so that the three left are never the file's three (checked below).
    let victim = remaining
        .iter()
        .map(|(id, _)| *id)
        .find(|id| *id != next && *id <= 3)
        .unwrap();
    let began = Instant::now();
    run_ok(&cluster, &["remove", "--id", &victim.to_string()]);
    let three: Vec<(u64, bool)> = remaining
        .iter()
        .copied()
        .filter(|(id, _)| *id != victim)
        .collect();
    wait_membership(&cluster, &three);
    phases.push(("remove a follower", began, Instant::now()));
    cluster.terminate(index_of_id(&cluster, victim));

    // A node restarted with the original file (three nodes, not these three) follows the log.
    let kept = index_of_id(&cluster, three[0].0);
    cluster.kill(kept);
    cluster.start_node(kept);
    assert!(
        cluster.wait_log(kept, "ignoring the file's node list", 1, LEADER_TIMEOUT),
        "a restart with a disagreeing file says so:\n{}",
        cluster.log_tails(10)
    );

    std::thread::sleep(Duration::from_millis(500));
    let (acked, _) = load.stop();
    let gap = longest_gap(&acked);
    eprintln!(
        "grow/remove-leader/shrink: {} writes acknowledged, longest pause {gap:?}",
        acked.len()
    );
    for (phase, from, to) in phases {
        let gap = longest_gap_within(&acked, Some((from, to)));
        eprintln!(
            "  {phase}: longest pause {gap:?} (change took {:?})",
            to - from
        );
    }
    assert!(acked.len() > 100, "writes continued: {}", acked.len());
    let mut client = Client::new(cluster.addrs());
    check_acked(&mut client, &acked);
}

#[test]
fn a_node_killed_for_good_is_replaced_by_a_new_empty_one_under_load() {
    let mut cluster = Cluster::configure_with_spares(3, 1, FAST_TUNABLES);
    for i in 0..3 {
        cluster.start_node(i);
    }
    let leader = cluster.wait_leader();
    let load = WriteLoad::start(cluster.addrs(), "replace", 3);
    std::thread::sleep(Duration::from_millis(500));
    let dead = (leader + 1) % 3;
    cluster.kill(dead);
    let dead_id = cluster.nodes[dead].id;
    run_ok(&cluster, &["remove", "--id", &dead_id.to_string()]);
    cluster.start_joining(3, &[leader]);
    let deadline = Instant::now() + LEADER_TIMEOUT;
    loop {
        let done = cluster.members(&["promote", "--id", "4"]);
        if done.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "promote: {}", done.stderr);
        std::thread::sleep(Duration::from_millis(200));
    }
    let expected: Vec<(u64, bool)> = [1, 2, 3, 4]
        .into_iter()
        .filter(|id| *id != dead_id)
        .map(|id| (id, true))
        .collect();
    wait_membership(&cluster, &expected);
    std::thread::sleep(Duration::from_millis(500));
    let (acked, _) = load.stop();
    let gap = longest_gap(&acked);
    eprintln!(
        "replace a dead node: {} writes acknowledged, longest pause {gap:?}",
        acked.len()
    );
    assert!(acked.len() > 50, "writes continued: {}", acked.len());
    // The new node holds everything: read it from there after the others are stopped would need a
    // majority; instead read through the cluster, then check the new node applied it all.
    let mut client = Client::new(cluster.addrs());
    check_acked(&mut client, &acked);
}

#[test]
fn refused_changes_say_why_and_change_nothing() {
    let mut cluster = Cluster::configure_with_spares(3, 0, FAST_TUNABLES);
    for i in 0..3 {
        cluster.start_node(i);
    }
    cluster.wait_leader();
    let before = membership(&cluster).0;
    let client2 = cluster.nodes[1].client_addr.clone();
    let peer2 = cluster.nodes[1].peer_addr.clone();
    let cases: [(Vec<&str>, &str); 4] = [
        (
            vec![
                "add",
                "--id",
                "2",
                "--client-addr",
                &client2,
                "--peer-addr",
                &peer2,
            ],
            "node 2 is already a member",
        ),
        (vec!["promote", "--id", "2"], "node 2 is already a voter"),
        (vec!["promote", "--id", "9"], "node 9 is not a member"),
        (vec!["remove", "--id", "9"], "node 9 is not a member"),
    ];
    for (args, reason) in cases {
        let done = cluster.members(&args);
        assert_eq!(done.status.code(), Some(1), "{args:?}: {}", done.stderr);
        assert_eq!(done.stderr.lines().count(), 1, "one line: {}", done.stderr);
        assert!(done.stderr.contains(reason), "{args:?}: {}", done.stderr);
    }
    let bad_address = cluster.members(&[
        "add",
        "--id",
        "7",
        "--client-addr",
        "no-port",
        "--peer-addr",
        "b:2",
    ]);
    assert_eq!(bad_address.status.code(), Some(2), "{}", bad_address.stderr);
    let zero = cluster.members(&["promote", "--id", "0"]);
    assert_eq!(zero.status.code(), Some(2), "{}", zero.stderr);
    assert_eq!(membership(&cluster).0, before, "nothing changed");

    // Shrinking to one voter works; removing that last voter is refused.
    run_ok(&cluster, &["remove", "--id", "3"]);
    run_ok(&cluster, &["remove", "--id", "2"]);
    wait_membership(&cluster, &[(1, true)]);
    let last = cluster.members(&["remove", "--id", "1"]);
    assert_eq!(last.status.code(), Some(1));
    assert!(
        last.stderr.contains("would leave no voters"),
        "{}",
        last.stderr
    );
}

/// With `auto_remove_after_s`, the leader removes a member it has not heard from for that long (here a
/// learner killed for good), but never takes the voters below three.
#[test]
fn an_unreachable_member_is_removed_when_auto_removal_is_on() {
    let tunables = format!("{FAST_TUNABLES}auto_remove_after_s = 1\n");
    let mut cluster = Cluster::configure_with_spares(3, 1, &tunables);
    for i in 0..3 {
        cluster.start_node(i);
    }
    cluster.wait_leader();
    cluster.start_joining(3, &[0, 1, 2]);
    wait_membership(&cluster, &[(1, true), (2, true), (3, true), (4, false)]);
    cluster.kill(3);
    wait_membership(&cluster, &[(1, true), (2, true), (3, true)]);
    // A voter that goes silent stays: three voters is the floor.
    let leader = cluster.wait_leader();
    let follower = (leader + 1) % 3;
    cluster.kill(follower);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        membership(&cluster).0,
        vec![(1, true), (2, true), (3, true)],
        "no voter removed below three"
    );
}

/// A voter whose disk was wiped must not rejoin as itself (it forgot its votes and its log): `--join`
/// refuses, and says how to bring it back. After `members remove` it joins again as a learner.
#[test]
fn a_voter_that_lost_its_data_cannot_rejoin_as_itself() {
    let mut cluster = Cluster::configure_with_spares(3, 0, FAST_TUNABLES);
    for i in 0..3 {
        cluster.start_node(i);
    }
    let leader = cluster.wait_leader();
    let lost = (leader + 1) % 3;
    cluster.kill(lost);
    std::fs::remove_dir_all(&cluster.nodes[lost].data_dir).expect("wipe its data");
    let others: Vec<usize> = (0..3).filter(|i| *i != lost).collect();
    cluster.start_joining(lost, &others);
    let deadline = Instant::now() + LEADER_TIMEOUT;
    while cluster.is_running(lost) {
        assert!(Instant::now() < deadline, "the wiped voter was not refused");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(cluster.log_count(lost, "must not come back as itself"), 1);
    let id = cluster.nodes[lost].id.to_string();
    run_ok(&cluster, &["remove", "--id", &id]);
    cluster.kill(lost);
    cluster.start_joining(lost, &others);
    let expected: Vec<(u64, bool)> = (1..=3).map(|n| (n, n.to_string() != id)).collect();
    wait_membership(&cluster, &expected);
}

/// One RESP request on a fresh connection to `addr`; the raw reply.
fn resp_call(addr: &str, args: &[&str]) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the RESP port");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes()).unwrap();
    let mut reply = vec![0u8; 512];
    let n = stream.read(&mut reply).unwrap_or(0);
    String::from_utf8_lossy(&reply[..n]).into_owned()
}

/// A node that joins with `--resp-addr` records it in the membership: once it leads, the founders
/// (whose cluster file does not name it) relay Redis clients to it.
#[test]
fn a_joined_node_s_redis_address_reaches_every_node() {
    let mut cluster = Cluster::configure_with_spares(3, 1, FAST_TUNABLES);
    for i in 0..3 {
        cluster.start_node(i);
    }
    cluster.wait_leader();
    let (resp4, http4) = (
        cluster.nodes[3].resp_addr.clone(),
        cluster.nodes[3].http_addr.clone(),
    );
    cluster.start_joining_with(
        3,
        &[0, 1, 2],
        &["--resp-addr", &resp4, "--http-addr", &http4],
    );
    wait_membership(&cluster, &[(1, true), (2, true), (3, true), (4, false)]);
    let promoted = Instant::now() + LEADER_TIMEOUT;
    while !cluster.members(&["promote", "--id", "4"]).status.success() {
        assert!(Instant::now() < promoted, "node 4 was never promoted");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Every founder learns the address from the log.
    for i in 0..3 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, body) = http_get(&cluster.nodes[i].http_addr, "/status").expect("status");
            if body.contains(&format!("\"4\":\"{resp4}\"")) {
                break;
            }
            assert!(Instant::now() < deadline, "node {} /status: {body}", i + 1);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // Hand leadership around (pause the leader until another is elected) until node 4 leads.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let leader = cluster.wait_leader();
        if leader == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "node 4 never became leader");
        let pid = cluster.pid(leader).expect("leader pid");
        signal(pid, libc::SIGSTOP);
        cluster.wait_new_leader(leader);
        signal(pid, libc::SIGCONT);
        std::thread::sleep(Duration::from_millis(500));
    }
    // A Redis client of a founder is relayed to node 4.
    let founder = cluster.nodes[0].resp_addr.clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = resp_call(&founder, &["SET", "joined", "yes"]);
        if reply == "+OK\r\n" {
            break;
        }
        assert!(Instant::now() < deadline, "SET through node 1: {reply:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(resp_call(&founder, &["GET", "joined"]), "$3\r\nyes\r\n");
    assert_eq!(resp_call(&resp4, &["GET", "joined"]), "$3\r\nyes\r\n");
}

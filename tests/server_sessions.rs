//! Sessions over the wire (docs/protocol.md, "Sessions"): a retried write is answered with the first
//! attempt's reply and applied once, bad session commands get errors and change nothing, and the
//! session table survives a leader crash and a snapshot.

mod support;

use std::time::Duration;
use support::*;

fn in_session(session: u64, seq: u64, write: &[u8]) -> Vec<u8> {
    let mut request = format!("session {session} {seq} ").into_bytes();
    request.extend_from_slice(write);
    request
}

fn session_id(reply: &[u8]) -> u64 {
    std::str::from_utf8(reply)
        .ok()
        .and_then(|r| r.strip_prefix("SESSION "))
        .and_then(|r| r.strip_suffix("\r\n"))
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("register: {}", show(reply)))
}

#[test]
fn retried_writes_are_applied_once_and_bad_session_commands_change_nothing() {
    let mut cluster = Cluster::start(3, DEFAULT_TUNABLES);
    let leader = cluster.wait_leader();
    let mut conn = Conn::connect(cluster.addr(leader)).unwrap();
    let mut request = |bytes: &[u8]| conn.request(bytes).unwrap();

    let session = session_id(&request(b"register\r\n"));
    let first = ok_version(&request(&in_session(session, 1, &set_cmd("k", 0, b"a")))).unwrap();
    assert_eq!(
        ok_version(&request(&in_session(session, 1, &set_cmd("k", 0, b"a")))),
        Some(first),
        "a duplicate gets the first reply"
    );
    let swapped = request(&in_session(session, 2, &cas_cmd("k", 0, first, b"b")));
    let swapped = ok_version(&swapped).unwrap_or_else(|| panic!("cas: {}", show(&swapped)));
    assert_eq!(
        ok_version(&request(&in_session(
            session,
            2,
            &cas_cmd("k", 0, first, b"b")
        ))),
        Some(swapped),
        "a retried cas that succeeded reports success, not ERR_VERSION"
    );
    // Plain CS733 commands are as they always were, and see the same store.
    assert_eq!(request(&cas_cmd("k", 0, first, b"b")), b"ERR_VERSION\r\n");
    let state = request(b"getm k\r\n");
    assert_eq!(getm_fields(&state), Some((swapped, 0, b"b".to_vec())));

    let refused: [(Vec<u8>, &[u8]); 9] = [
        // An older sequence number, and one too far ahead.
        (
            in_session(session, 1, &set_cmd("k", 0, b"x")),
            b"ERR_SEQUENCE 2\r\n",
        ),
        (
            in_session(session, 1 << 40, b"delete k\r\n"),
            b"ERR_SEQUENCE 2\r\n",
        ),
        // Sessions that do not exist: one not registered yet, one that never was.
        (
            in_session(1 << 40, 1, &set_cmd("k", 0, b"x")),
            b"ERR_SESSION_EXPIRED\r\n",
        ),
        (
            in_session(1, 1, b"delete k\r\n"),
            b"ERR_SESSION_EXPIRED\r\n",
        ),
        // Malformed: zero, beyond the limit, beyond u64, reads and registrations in a session.
        (
            in_session(session, 0, &set_cmd("k", 0, b"x")),
            b"ERR_CMD_ERR\r\n",
        ),
        (
            in_session(session, (1 << 62) + 1, b"delete k\r\n"),
            b"ERR_CMD_ERR\r\n",
        ),
        (
            b"session 99999999999999999999999 1 delete k\r\n".to_vec(),
            b"ERR_CMD_ERR\r\n",
        ),
        (in_session(session, 3, b"get k\r\n"), b"ERR_CMD_ERR\r\n"),
        (b"register k\r\n".to_vec(), b"ERR_CMD_ERR\r\n"),
    ];
    for (bad, expected) in refused {
        assert_eq!(request(&bad), expected, "{}", show(&bad));
    }
    assert_eq!(request(b"getm k\r\n"), state, "nothing changed");

    // The session goes on after all that.
    let deleted = request(&in_session(session, 3, b"delete k\r\n"));
    assert_eq!(deleted, b"DELETED\r\n");
    assert_eq!(
        request(&in_session(session, 3, b"delete k\r\n")),
        b"DELETED\r\n"
    );
    assert_eq!(request(b"get k\r\n"), b"ERR_NOT_FOUND\r\n");

    // A follower redirects a registration like any write.
    let follower = (0..cluster.len()).find(|&i| i != leader).unwrap();
    let reply = Conn::connect(cluster.addr(follower))
        .unwrap()
        .request(b"register\r\n")
        .unwrap();
    assert!(redirect_target(&reply).is_some(), "{}", show(&reply));
}

#[test]
fn sessions_survive_a_leader_crash_and_a_snapshot() {
    let mut cluster = Cluster::start(3, &format!("{FAST_TUNABLES}snapshot_entries = 50\n"));
    let old = cluster.wait_leader();
    let mut client = cluster.client();
    let session = session_id(&client.call_retry(b"register\r\n", Duration::from_secs(10)));
    let write = in_session(session, 1, &set_cmd("counter", 0, b"1"));
    let version = ok_version(&client.call(&write).unwrap()).unwrap();
    // Enough writes for every node to snapshot the session table and compact the log.
    for i in 0..200 {
        client.set_retry(&format!("filler{i}"), b"x", Duration::from_secs(10));
    }
    cluster.kill(old);
    cluster.wait_new_leader(old);
    let reply = client.call_retry(&write, Duration::from_secs(10));
    assert_eq!(ok_version(&reply), Some(version), "{}", show(&reply));
    // The old leader restarts from its snapshot and, once it leads, knows the session too.
    cluster.start_node(old);
    let next = in_session(session, 2, &set_cmd("counter", 0, b"2"));
    let second = ok_version(&client.call_retry(&next, Duration::from_secs(10))).unwrap();
    for node in 0..cluster.len() {
        if cluster.is_running(node) && node != old {
            cluster.kill(node);
            break;
        }
    }
    // Two of three were killed in turn; with one back, a majority again.
    let reply = client.call_retry(&next, Duration::from_secs(20));
    assert_eq!(ok_version(&reply), Some(second), "{}", show(&reply));
    let reply = client.call_retry(b"get counter\r\n", Duration::from_secs(10));
    assert_eq!(reply, b"VALUE 1\r\n2\r\n");
}

/// `stale <max_lag> get|getm`: a follower answers from its own applied state instead of redirecting;
/// a plain `get` on it still redirects, and a follower too far behind redirects the stale read too.
#[test]
fn followers_answer_stale_reads_from_their_applied_state() {
    let mut cluster = Cluster::start(3, DEFAULT_TUNABLES);
    let leader = cluster.wait_leader();
    let mut client = cluster.client();
    let version = client.set_retry("k", b"v", LEADER_TIMEOUT);
    let follower = (0..cluster.len()).find(|&i| i != leader).unwrap();
    let mut conn = Conn::connect(cluster.addr(follower)).unwrap();
    assert!(redirect_target(&conn.request(b"get k\r\n").unwrap()).is_some());
    // The follower applies the write with the next heartbeat.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let reply = conn.request(b"stale 1000 getm k\r\n").unwrap();
        if getm_fields(&reply) == Some((version, 0, b"v".to_vec())) {
            break;
        }
        assert!(
            reply == b"ERR_NOT_FOUND\r\n" && std::time::Instant::now() < deadline,
            "{}",
            show(&reply)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        conn.request(b"stale 0 get k\r\n").unwrap(),
        b"VALUE 1\r\nv\r\n"
    );
    assert_eq!(
        conn.request(b"stale 0 get nothing\r\n").unwrap(),
        b"ERR_NOT_FOUND\r\n"
    );
    assert_eq!(
        conn.request(b"stale 1 set k 0 1\r\nx\r\n").unwrap(),
        b"ERR_CMD_ERR\r\n"
    );
}

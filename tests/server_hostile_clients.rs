//! Clients that would take a node down by holding its resources: a crowd of idle sockets past the
//! connection limit, a request begun and then stalled, an idle connection when the operator asked for
//! an idle timeout. Each is refused or closed, and an honest client is still served.

mod support;

use std::time::Duration;
use support::*;

/// Past `max_connections` a newcomer is told so at once and closed; the accept queue never blocks, so
/// once the crowd leaves, clients are served again.
#[test]
fn past_the_connection_limit_a_newcomer_gets_one_line_and_is_closed() {
    let mut cluster = Cluster::start(1, "max_connections = 4\n");
    let addr = cluster.addr(0).to_string();
    // Let the start-up probes' connections go first, so the crowd holds every slot.
    std::thread::sleep(Duration::from_millis(500));
    let crowd: Vec<Conn> = (0..4)
        .map(|_| Conn::connect(&addr).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..8 {
        let mut late = Conn::connect(&addr).expect("the node still accepts");
        late.set_timeout(Duration::from_secs(2));
        let reply = late.read_reply().expect("a reply line");
        assert_eq!(show(&reply), show(b"ERR_INTERNAL too many connections\r\n"));
        assert!(late.closed_within(Duration::from_secs(5)));
    }
    drop(crowd);
    std::thread::sleep(Duration::from_millis(300));
    let mut honest = Conn::connect(&addr).expect("connect");
    let reply = honest.request(&set_cmd("k", 0, b"v")).expect("served");
    assert!(ok_version(&reply).is_some(), "{}", show(&reply));
    let _ = cluster.terminate(0);
}

/// A client that starts a request and stalls is disconnected after the request timeout; an idle one
/// is left alone unless an idle timeout is configured.
#[test]
fn a_stalled_request_is_closed_after_the_request_timeout() {
    let mut cluster = Cluster::start(1, "client_request_timeout_s = 1\n");
    let addr = cluster.addr(0).to_string();
    let mut stalled = Conn::connect(&addr).expect("connect");
    stalled.send(b"set k 0 10\r\nabc").expect("send");
    assert!(
        stalled.closed_within(Duration::from_secs(5)),
        "a stalled request must not hold the connection"
    );
    let mut half_line = Conn::connect(&addr).expect("connect");
    half_line.send(b"get ke").expect("send");
    assert!(half_line.closed_within(Duration::from_secs(5)));
    let mut idle = Conn::connect(&addr).expect("connect");
    std::thread::sleep(Duration::from_millis(2_500));
    let reply = idle
        .request(b"get k\r\n")
        .expect("an idle connection stays open by default");
    assert_eq!(show(&reply), show(b"ERR_NOT_FOUND\r\n"));
    let _ = cluster.terminate(0);
}

#[test]
fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let mut cluster = Cluster::start(1, "client_idle_timeout_s = 1\n");
    let addr = cluster.addr(0).to_string();
    let mut idle = Conn::connect(&addr).expect("connect");
    let reply = idle.request(b"get k\r\n").expect("served");
    assert_eq!(show(&reply), show(b"ERR_NOT_FOUND\r\n"));
    assert!(idle.closed_within(Duration::from_secs(5)));
    let _ = cluster.terminate(0);
}

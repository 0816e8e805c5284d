//! Strangers on the peer port: a crowd of connections that never finish their handshake does not keep
//! a restarted node from reconnecting, and a connection claiming the id of a peer whose connection is
//! active is refused, while writes keep being acknowledged throughout.

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use raftkv_server::transport::encode_frame;
use raftkv_server::wire::{Handshake, StreamKind, PROTOCOL_VERSION};
use support::*;

fn log_of(cluster: &Cluster, i: usize) -> String {
    String::from_utf8_lossy(&std::fs::read(&cluster.nodes[i].log).unwrap_or_default()).into_owned()
}

/// Waits until node `i`'s log contains `needle` (at least `count` times).
fn wait_for_log(cluster: &Cluster, i: usize, needle: &str, count: usize, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if log_of(cluster, i).matches(needle).count() >= count {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn strangers_never_finishing_their_handshake_do_not_keep_a_peer_out() {
    let mut cluster = Cluster::start(3, FAST_TUNABLES);
    let leader = cluster.wait_leader();
    let target = (leader + 1) % 3;
    let restarted = (leader + 2) % 3;
    let load = WriteLoad::start(cluster.addrs(), "flood", 2);
    // An attacker that keeps opening fresh connections and never says a word.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attacker = {
        let stop = stop.clone();
        let addr = cluster.nodes[target].peer_addr.clone();
        std::thread::spawn(move || {
            let mut held: std::collections::VecDeque<TcpStream> = Default::default();
            let mut opened = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for _ in 0..100 {
                    if let Ok(stream) = TcpStream::connect(&addr) {
                        held.push_back(stream);
                        opened += 1;
                    }
                }
                while held.len() > 400 {
                    held.pop_front();
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            opened
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    cluster.kill(restarted);
    cluster.start_node(restarted);
    let needle = format!("peer={} ", cluster.nodes[target].id);
    let connected = wait_for_log(
        &cluster,
        restarted,
        "connected to peer",
        2,
        Duration::from_secs(10),
    ) && log_of(&cluster, restarted)
        .lines()
        .any(|l| l.contains("connected to peer") && l.contains(&needle));
    let (acked, _) = load.stop();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let opened = attacker.join().expect("attacker thread");
    assert!(opened > 300, "the attacker opened {opened} connections");
    assert!(
        connected,
        "the restarted node did not reconnect to the crowded one:\n{}",
        cluster.log_tails(30)
    );
    assert!(acked.len() > 50, "writes continued: {}", acked.len());
}

#[test]
fn a_connection_claiming_an_active_peer_s_id_is_refused() {
    let mut cluster = Cluster::start(3, FAST_TUNABLES);
    let leader = cluster.wait_leader();
    let victim = (leader + 1) % 3;
    let load = WriteLoad::start(cluster.addrs(), "impostor", 2);
    std::thread::sleep(Duration::from_millis(500));
    // Claim to be the leader, whose heartbeats keep its real connection to the victim busy.
    let hello = Handshake {
        protocol_version: PROTOCOL_VERSION,
        cluster_id: "t".into(),
        node_id: cluster.nodes[leader].id,
        stream: StreamKind::Messages,
        peer_addr: String::new(),
    };
    let mut payload = BytesMut::new();
    hello.encode(&mut payload);
    let mut frame = BytesMut::new();
    encode_frame(&payload, &mut frame);
    let mut impostor = TcpStream::connect(&cluster.nodes[victim].peer_addr).expect("connect");
    impostor.write_all(&frame).expect("send the handshake");
    let refused = wait_for_log(
        &cluster,
        victim,
        "a second connection claiming node",
        1,
        Duration::from_secs(10),
    );
    let refused_at = Instant::now();
    std::thread::sleep(Duration::from_millis(1_500));
    let (acked, _) = load.stop();
    assert!(
        refused,
        "the impostor was not refused:\n{}",
        cluster.log_tails(30)
    );
    let later = acked.iter().filter(|a| a.at > refused_at).count();
    assert!(
        later > 10,
        "writes kept being acknowledged after the impostor: {later}"
    );
}

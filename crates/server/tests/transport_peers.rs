//! The peer transport on loopback: delivery, batching, reconnection, isolation from dead peers, and
//! rejection of strangers and hostile bytes.

mod common;

use bytes::{Bytes, BytesMut};
use common::*;
use raftkv_raft::{Entry, EntryKind, Message, MessageBody};
use raftkv_server::config::ClusterConfig;
use raftkv_server::transport::{encode_frame, Transport};
use raftkv_server::wire::{encode_message, Handshake, StreamKind, PROTOCOL_VERSION};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout;

async fn start(config: &ClusterConfig, id: u64) -> Node {
    start_with(config, id, 64).await
}

/// Resends `msg` every 50 ms (as Raft would) until `receiver` gets it; other messages are skipped.
async fn deliver(sender: &Transport, receiver: &mut Node, msg: Message) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        sender.send(msg.clone());
        let wait = tokio::time::sleep(Duration::from_millis(50));
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                batch = receiver.inbound.recv() => {
                    if batch.expect("inbound open").contains(&msg) {
                        return;
                    }
                }
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{msg:?} not delivered within 10 s"
        );
    }
}

#[tokio::test]
async fn three_nodes_exchange_messages() {
    let config = cluster(3, "c3");
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(start(&config, id).await);
    }
    for from in 1..=3u64 {
        for to in 1..=3u64 {
            if from != to {
                let msg = heartbeat(from, to, from * 10 + to);
                let sender = nodes[from as usize - 1].transport.clone();
                deliver(&sender, &mut nodes[to as usize - 1], msg).await;
            }
        }
    }
    for node in &nodes {
        node.transport.shutdown();
        node.transport.closed().await;
    }
}

#[tokio::test]
async fn bursts_are_batched_and_large_entries_arrive_intact() {
    let config = cluster(2, "batch");
    let one = start(&config, 1).await;
    let mut two = start(&config, 2).await;
    deliver(&one.transport, &mut two, heartbeat(1, 2, 0)).await;
    // Messages sent while node 2 was still starting may have been dropped; none may be from here on.
    let dropped_before = one.transport.dropped_messages();

    // The test runtime is single-threaded, so the writer only runs after the whole burst is queued.
    for round in 1..=500 {
        one.transport.send(heartbeat(1, 2, round));
    }
    let big = Message {
        from: 1,
        to: 2,
        term: 3,
        body: MessageBody::Append {
            prev_index: 0,
            prev_term: 0,
            entries: vec![Entry {
                index: 1,
                term: 3,
                kind: EntryKind::Normal,
                data: Bytes::from(vec![0x5A; 3 << 20]),
            }],
            commit: 0,
        },
    };
    one.transport.send(big.clone());

    let mut received = Vec::new();
    let mut frames = 0;
    while received.len() < 501 {
        let batch = timeout(Duration::from_secs(10), two.inbound.recv())
            .await
            .expect("in time")
            .expect("open");
        frames += 1;
        received.extend(batch);
    }
    let rounds: Vec<u64> = received[..500]
        .iter()
        .map(|m| match m.body {
            MessageBody::Heartbeat { read_round, .. } => read_round,
            _ => panic!("unexpected {m:?}"),
        })
        .collect();
    assert_eq!(rounds, (1..=500).collect::<Vec<_>>(), "in order, none lost");
    assert_eq!(received[500], big);
    assert!(
        frames < 50,
        "500 queued messages should share frames, got {frames} frames"
    );
    assert_eq!(one.transport.dropped_messages(), dropped_before);
}

#[tokio::test]
async fn reconnects_after_the_peer_restarts() {
    let config = cluster(2, "restart");
    let one = start(&config, 1).await;
    let mut two = start(&config, 2).await;
    deliver(&one.transport, &mut two, heartbeat(1, 2, 1)).await;

    two.transport.shutdown();
    two.transport.closed().await;
    drop(two);
    for round in 0..10 {
        one.transport.send(heartbeat(1, 2, 100 + round));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut two = start(&config, 2).await;
    deliver(&one.transport, &mut two, heartbeat(1, 2, 2)).await;
    deliver(
        &two.transport,
        &mut Node {
            transport: one.transport.clone(),
            inbound: one.inbound,
        },
        heartbeat(2, 1, 3),
    )
    .await;
}

#[tokio::test]
async fn a_dead_peer_does_not_block_the_others() {
    let config = cluster(3, "dead");
    let one = start(&config, 1).await;
    let mut two = start(&config, 2).await;
    // Node 3 never starts: its queue fills and overflows, and sending stays instantaneous.
    let started = std::time::Instant::now();
    for round in 0..10_000 {
        one.transport.send(heartbeat(1, 3, round));
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    deliver(&one.transport, &mut two, heartbeat(1, 2, 7)).await;
    assert!(one.transport.dropped_messages() > 0);
    // A message for a node outside the cluster is dropped, not a panic.
    one.transport.send(heartbeat(1, 99, 0));
}

#[tokio::test]
async fn the_peer_port_cannot_be_bound_twice() {
    let config = cluster(2, "twice");
    let _one = start(&config, 1).await;
    let (sender, _inbound) = mpsc::channel(1);
    let err = Transport::start(&config, 1, sender, None, Default::default())
        .await
        .err()
        .expect("port taken");
    assert!(format!("{err:#}").contains("peer_addr"), "{err:#}");
    let (sender, _inbound) = mpsc::channel(1);
    assert!(
        Transport::start(&config, 5, sender, None, Default::default())
            .await
            .is_err(),
        "unknown id"
    );
}

fn handshake_frame(cluster_id: &str, node_id: u64, version: u16) -> BytesMut {
    let mut payload = BytesMut::new();
    Handshake {
        protocol_version: version,
        cluster_id: cluster_id.into(),
        node_id,
        stream: StreamKind::Messages,
        peer_addr: String::new(),
    }
    .encode(&mut payload);
    let mut frame = BytesMut::new();
    encode_frame(&payload, &mut frame);
    frame
}

/// Writes `bytes` to the peer port and asserts the transport closes the connection without answering.
async fn assert_rejected(addr: std::net::SocketAddr, bytes: &[u8]) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let _ = stream.write_all(bytes).await;
    let mut answer = Vec::new();
    let read = timeout(Duration::from_secs(8), stream.read_to_end(&mut answer))
        .await
        .expect("closed in time");
    assert!(
        read.is_err() || answer.is_empty(),
        "rejected connection got an answer for {bytes:?}"
    );
}

#[tokio::test]
async fn strangers_and_hostile_bytes_are_rejected() {
    let config = cluster(2, "real");
    let mut one = start(&config, 1).await;
    let two = start(&config, 2).await;
    let addr = one.transport.local_addr();

    assert_rejected(addr, &handshake_frame("other", 2, PROTOCOL_VERSION)).await;
    // A node of the cluster this one does not know yet (added while it was away) is admitted: it
    // may be the leader. Its handshake is answered.
    let mut newcomer = TcpStream::connect(addr).await.expect("connect");
    newcomer
        .write_all(&handshake_frame("real", 7, PROTOCOL_VERSION))
        .await
        .expect("write");
    let mut answer = [0u8; 8];
    timeout(Duration::from_secs(8), newcomer.read_exact(&mut answer))
        .await
        .expect("answered in time")
        .expect("a handshake answer");
    drop(newcomer);
    assert_rejected(addr, &handshake_frame("real", 1, PROTOCOL_VERSION)).await;
    assert_rejected(addr, &handshake_frame("real", 2, PROTOCOL_VERSION + 1)).await;
    assert_rejected(addr, b"get __raftkv_probe\r\n").await;
    assert_rejected(addr, &[0xFF; 64]).await;
    let mut huge_claim = u32::MAX.to_le_bytes().to_vec();
    huge_claim.extend_from_slice(&[0; 4]);
    assert_rejected(addr, &huge_claim).await;
    let mut bad_crc = handshake_frame("real", 2, PROTOCOL_VERSION);
    bad_crc[5] ^= 1;
    assert_rejected(addr, &bad_crc).await;

    // A peer that passes the handshake and then sends garbage or lies about the sender is cut off.
    let mut rng = 0x1234_5678_9ABC_DEF1u64;
    for attempt in 0..20 {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(&handshake_frame("real", 2, PROTOCOL_VERSION))
            .await
            .expect("write");
        let mut payload = BytesMut::new();
        if attempt == 0 {
            encode_message(&heartbeat(3, 1, 0), &mut payload);
        } else {
            let mut valid = BytesMut::new();
            encode_message(&heartbeat(2, 1, 0), &mut valid);
            payload.extend_from_slice(&valid);
            for _ in 0..3 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let at = (rng as usize) % payload.len();
                payload[at] = (rng >> 32) as u8;
            }
        }
        let mut frame = BytesMut::new();
        encode_frame(&payload, &mut frame);
        let _ = stream.write_all(&frame).await;
        let _ = stream.write_all(b"\x05\x00\x00\x00garbage").await;
        let mut rest = Vec::new();
        let _ = timeout(Duration::from_secs(8), stream.read_to_end(&mut rest))
            .await
            .expect("closed in time");
    }

    // The real peer still gets through.
    while one.inbound.try_recv().is_ok() {}
    deliver(&two.transport, &mut one, heartbeat(2, 1, 42)).await;
}

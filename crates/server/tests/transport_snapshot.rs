//! Snapshot streams on loopback: a big snapshot arrives intact on its own connection while heartbeats keep
//! flowing, a newer snapshot replaces a pending one, a dropped stream delivers nothing and the transfer
//! restarts cleanly, and oversized or corrupted streams are refused without harm.
//!
//! Throughput (256 MiB, prints MB/s; run in release):
//! `cargo test --release -p raftkv-server --test transport_snapshot -- --ignored --nocapture`

mod common;

use bytes::{Bytes, BytesMut};
use common::*;
use raftkv_raft::{Membership, Message, MessageBody, Snapshot, SnapshotMeta};
use raftkv_server::config::ClusterConfig;
use raftkv_server::snapshot_stream::{
    MAX_SNAPSHOT_BYTES, STATUS_INVALID, STATUS_OK, STATUS_TOO_LARGE,
};
use raftkv_server::transport::{encode_frame, Transport};
use raftkv_server::wire::{Handshake, SnapshotHeader, StreamKind, PROTOCOL_VERSION};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

async fn start(config: &ClusterConfig, id: u64) -> Node {
    start_with(config, id, 1024).await
}

/// Pseudo-random bytes, so a misplaced or lost chunk cannot go unnoticed.
fn data(len: usize, seed: u64) -> Bytes {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

fn snapshot_msg(from: u64, to: u64, index: u64, data: Bytes) -> Message {
    Message {
        from,
        to,
        term: 7,
        body: MessageBody::InstallSnapshot {
            snapshot: Snapshot {
                meta: SnapshotMeta {
                    index,
                    term: 6,
                    membership: Membership::new(vec![1, 2, 3]),
                },
                data,
            },
        },
    }
}

fn snapshot_index(msg: &Message) -> Option<u64> {
    match &msg.body {
        MessageBody::InstallSnapshot { snapshot } => Some(snapshot.meta.index),
        _ => None,
    }
}

/// Resends `msg` every 50 ms until `receiver` gets it; other messages are skipped.
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

/// Waits for the next InstallSnapshot on `node`, skipping everything else.
async fn next_snapshot(node: &mut Node, within: Duration) -> Option<Message> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let batch = tokio::time::timeout_at(deadline, node.inbound.recv())
            .await
            .ok()?
            .expect("inbound open");
        if let Some(msg) = batch.into_iter().find(|m| snapshot_index(m).is_some()) {
            return Some(msg);
        }
    }
}

/// Asserts nothing snapshot-like reaches `node` for `quiet`.
async fn assert_no_snapshot(node: &mut Node, quiet: Duration) {
    if let Some(msg) = next_snapshot(node, quiet).await {
        panic!(
            "unexpected snapshot delivered: index {:?}",
            snapshot_index(&msg)
        );
    }
}

/// Sends `msg`'s snapshot from node 1 to node 2 while heartbeats go out every 2 ms, and checks that the
/// snapshot arrives intact and that heartbeats kept arriving during the transfer. Returns the transfer's
/// duration.
async fn transfer_with_heartbeats(one: &Node, two: &mut Node, msg: &Message) -> Duration {
    let sender = one.transport.clone();
    let beating = tokio::spawn(async move {
        let mut round = 1_000;
        loop {
            sender.send(heartbeat(1, 2, round));
            round += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let started = Instant::now();
    one.transport.send(msg.clone());
    let mut last_heartbeat = Instant::now();
    let mut longest_gap = Duration::ZERO;
    let mut heartbeats = 0;
    let received = loop {
        let batch = timeout(Duration::from_secs(60), two.inbound.recv())
            .await
            .expect("snapshot in time")
            .expect("open");
        let mut snapshot = None;
        for m in batch {
            if let MessageBody::Heartbeat { .. } = m.body {
                longest_gap = longest_gap.max(last_heartbeat.elapsed());
                last_heartbeat = Instant::now();
                heartbeats += 1;
            } else if snapshot_index(&m).is_some() {
                snapshot = Some(m);
            }
        }
        if let Some(snapshot) = snapshot {
            break snapshot;
        }
    };
    let elapsed = started.elapsed();
    beating.abort();
    assert!(received == *msg, "snapshot arrived altered");
    println!(
        "transfer took {elapsed:?}; {heartbeats} heartbeats arrived meanwhile, longest gap {longest_gap:?}"
    );
    assert!(
        longest_gap < Duration::from_millis(300),
        "heartbeats stalled for {longest_gap:?} during the snapshot transfer"
    );
    if elapsed > Duration::from_millis(100) {
        assert!(
            heartbeats >= 5,
            "only {heartbeats} heartbeats during a {elapsed:?} transfer"
        );
    }
    elapsed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_arrives_intact_while_heartbeats_keep_flowing() {
    let config = cluster(3, "snap");
    let one = start(&config, 1).await;
    let mut two = start(&config, 2).await;
    deliver(&one.transport, &mut two, heartbeat(1, 2, 1)).await;
    // Messages sent while node 2 was still starting (node 1 backing off) may have been dropped; none
    // may be from here on.
    let dropped_before = one.transport.dropped_messages();

    let msg = snapshot_msg(1, 2, 100, data(48 << 20, 42));
    transfer_with_heartbeats(&one, &mut two, &msg).await;
    assert_eq!(one.transport.dropped_messages(), dropped_before);

    // An empty snapshot is a snapshot too.
    let empty = snapshot_msg(1, 2, 101, Bytes::new());
    one.transport.send(empty.clone());
    let got = next_snapshot(&mut two, Duration::from_secs(10)).await;
    assert_eq!(got, Some(empty));

    one.transport.shutdown();
    two.transport.shutdown();
    one.transport.closed().await;
    two.transport.closed().await;
}

/// Loopback throughput for a 256 MiB snapshot, with heartbeats flowing. Ignored by default: it needs
/// 0.5 GiB of memory and a release build to mean anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput_of_a_256_mib_snapshot() {
    let config = cluster(2, "speed");
    let one = start(&config, 1).await;
    let mut two = start(&config, 2).await;
    deliver(&one.transport, &mut two, heartbeat(1, 2, 1)).await;
    let len = 256usize << 20;
    for run in 1..=3 {
        let msg = snapshot_msg(1, 2, run, data(len, run));
        let elapsed = transfer_with_heartbeats(&one, &mut two, &msg).await;
        println!(
            "run {run}: 256 MiB in {:.3} s = {:.0} MB/s ({:.0} MiB/s)",
            elapsed.as_secs_f64(),
            len as f64 / 1e6 / elapsed.as_secs_f64(),
            len as f64 / (1u64 << 20) as f64 / elapsed.as_secs_f64()
        );
    }
}

#[tokio::test]
async fn a_newer_snapshot_replaces_a_pending_one() {
    let config = cluster(2, "newer");
    let one = start(&config, 1).await;
    let mut two = start(&config, 2).await;
    deliver(&one.transport, &mut two, heartbeat(1, 2, 1)).await;

    // Single-threaded runtime: the sender task only runs once this test awaits, so index 5 is still
    // pending when index 6 replaces it.
    one.transport.send(snapshot_msg(1, 2, 5, data(1 << 20, 5)));
    let newer = snapshot_msg(1, 2, 6, data(1 << 20, 6));
    one.transport.send(newer.clone());
    assert_eq!(one.transport.dropped_messages(), 1);
    assert_eq!(
        next_snapshot(&mut two, Duration::from_secs(10)).await,
        Some(newer)
    );
    assert_no_snapshot(&mut two, Duration::from_millis(300)).await;
}

fn handshake_frame(cluster_id: &str, node_id: u64, stream: StreamKind) -> BytesMut {
    let mut payload = BytesMut::new();
    Handshake {
        protocol_version: PROTOCOL_VERSION,
        cluster_id: cluster_id.into(),
        node_id,
        stream,
        peer_addr: String::new(),
    }
    .encode(&mut payload);
    let mut frame = BytesMut::new();
    encode_frame(&payload, &mut frame);
    frame
}

async fn read_frame_payload(stream: &mut TcpStream) -> Bytes {
    let mut header = [0u8; 8];
    stream.read_exact(&mut header).await.expect("frame header");
    let len = u32::from_le_bytes(header[..4].try_into().unwrap()) as usize;
    assert!(len < 4096);
    let mut payload = vec![0; len];
    stream
        .read_exact(&mut payload)
        .await
        .expect("frame payload");
    Bytes::from(payload)
}

/// Dials `addr` as node `me` of `cluster_id`, opening a snapshot stream, and sends `header`. Returns
/// the stream and the status byte the receiver answered the header with.
async fn open_snapshot_stream(
    addr: std::net::SocketAddr,
    cluster_id: &str,
    me: u64,
    header: &SnapshotHeader,
) -> (TcpStream, u8) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(&handshake_frame(cluster_id, me, StreamKind::Snapshot))
        .await
        .expect("handshake");
    let answer = Handshake::decode(read_frame_payload(&mut stream).await).expect("answer");
    assert_eq!(answer.stream, StreamKind::Snapshot);
    let mut payload = BytesMut::new();
    header.encode(&mut payload);
    let mut frame = BytesMut::new();
    encode_frame(&payload, &mut frame);
    stream.write_all(&frame).await.expect("header");
    let status = timeout(Duration::from_secs(10), stream.read_u8())
        .await
        .expect("status in time")
        .expect("status");
    (stream, status)
}

fn header_for(msg: &Message) -> SnapshotHeader {
    let MessageBody::InstallSnapshot { snapshot } = &msg.body else {
        unreachable!()
    };
    SnapshotHeader::for_message(msg, crc32c::crc32c(&snapshot.data)).expect("a snapshot")
}

fn snapshot_data(msg: &Message) -> Bytes {
    match &msg.body {
        MessageBody::InstallSnapshot { snapshot } => snapshot.data.clone(),
        _ => unreachable!(),
    }
}

/// Reads until the peer closes; returns what arrived.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut rest = Vec::new();
    let _ = timeout(Duration::from_secs(10), stream.read_to_end(&mut rest))
        .await
        .expect("closed in time");
    rest
}

#[tokio::test]
async fn a_dropped_stream_delivers_nothing_and_a_resend_succeeds() {
    let config = cluster(2, "drop");
    let mut one = start(&config, 1).await;
    let two = start(&config, 2).await;
    let addr = one.transport.local_addr();
    deliver(&two.transport, &mut one, heartbeat(2, 1, 1)).await;

    let msg = snapshot_msg(2, 1, 50, data(8 << 20, 50));
    let bytes = snapshot_data(&msg);
    let (mut stream, status) = open_snapshot_stream(addr, "drop", 2, &header_for(&msg)).await;
    assert_eq!(status, STATUS_OK);
    stream
        .write_all(&bytes[..bytes.len() / 2])
        .await
        .expect("half");
    drop(stream);
    assert_no_snapshot(&mut one, Duration::from_millis(500)).await;

    // The leader's core sends it again: a whole new transfer, delivered intact.
    two.transport.send(msg.clone());
    assert_eq!(
        next_snapshot(&mut one, Duration::from_secs(10)).await,
        Some(msg)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sender_restarts_a_transfer_whose_connection_dropped() {
    let config = cluster(2, "restart");
    let one = start(&config, 1).await;
    // Node 2's port is first held by an impostor that accepts the snapshot stream, takes 1 MiB and hangs up.
    let impostor = TcpListener::bind(&config.nodes[1].peer_addr)
        .await
        .expect("bind node 2's port");
    let msg = snapshot_msg(1, 2, 77, data(16 << 20, 77));
    one.transport.send(msg.clone());
    let (mut stream, _) = loop {
        let (mut stream, remote) = timeout(Duration::from_secs(10), impostor.accept())
            .await
            .expect("dialled in time")
            .expect("accept");
        // The message connection dials too; serve only the snapshot stream.
        let mut header = [0u8; 8];
        stream.read_exact(&mut header).await.expect("handshake");
        let len = u32::from_le_bytes(header[..4].try_into().unwrap()) as usize;
        let mut payload = vec![0; len];
        stream.read_exact(&mut payload).await.expect("handshake");
        let hello = Handshake::decode(Bytes::from(payload)).expect("handshake decodes");
        if hello.stream == StreamKind::Snapshot {
            break (stream, remote);
        }
    };
    stream
        .write_all(&handshake_frame("restart", 2, StreamKind::Snapshot))
        .await
        .expect("answer");
    let header = SnapshotHeader::decode(read_frame_payload(&mut stream).await).expect("header");
    assert_eq!(header, header_for(&msg));
    stream.write_u8(STATUS_OK).await.expect("go");
    let mut partial = vec![0; 1 << 20];
    stream.read_exact(&mut partial).await.expect("some data");
    drop(stream);
    drop(impostor);

    // The real node 2 comes up; the sender's retry, or the core's re-send, gets the snapshot through.
    let mut two = start(&config, 2).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(got) = next_snapshot(&mut two, Duration::from_secs(2)).await {
            assert_eq!(got, msg);
            break;
        }
        assert!(Instant::now() < deadline, "snapshot never delivered");
        one.transport.send(msg.clone());
    }
}

#[tokio::test]
async fn oversized_corrupt_and_misaddressed_snapshot_streams_are_refused() {
    let config = cluster(3, "hostile");
    let mut one = start(&config, 1).await;
    let two = start(&config, 2).await;
    let addr = one.transport.local_addr();
    deliver(&two.transport, &mut one, heartbeat(2, 1, 1)).await;

    let msg = snapshot_msg(2, 1, 9, data(2 << 20, 9));
    let good = header_for(&msg);
    let bytes = snapshot_data(&msg);

    // Too large: refused at the header, before any data flows; the claimed size is never allocated.
    let huge = SnapshotHeader {
        data_len: MAX_SNAPSHOT_BYTES + 1,
        ..good.clone()
    };
    let (mut stream, status) = open_snapshot_stream(addr, "hostile", 2, &huge).await;
    assert_eq!(status, STATUS_TOO_LARGE);
    assert!(read_to_close(&mut stream).await.is_empty());
    let absurd = SnapshotHeader {
        data_len: u64::MAX,
        ..good.clone()
    };
    let (_, status) = open_snapshot_stream(addr, "hostile", 2, &absurd).await;
    assert_eq!(status, STATUS_TOO_LARGE);

    // Wrong checksum: the data is read in full, then refused.
    let corrupt = SnapshotHeader {
        data_crc: good.data_crc ^ 1,
        ..good.clone()
    };
    let (mut stream, status) = open_snapshot_stream(addr, "hostile", 2, &corrupt).await;
    assert_eq!(status, STATUS_OK);
    stream.write_all(&bytes).await.expect("data");
    assert_eq!(read_to_close(&mut stream).await, vec![STATUS_INVALID]);

    // A flipped data byte under the right checksum: same.
    let (mut stream, status) = open_snapshot_stream(addr, "hostile", 2, &good).await;
    assert_eq!(status, STATUS_OK);
    let mut flipped = bytes.to_vec();
    flipped[12_345] ^= 0x40;
    stream.write_all(&flipped).await.expect("data");
    assert_eq!(read_to_close(&mut stream).await, vec![STATUS_INVALID]);

    // Claiming to come from another node, or to be for another node.
    for (from, to) in [(3, 1), (2, 3)] {
        let lie = SnapshotHeader {
            from,
            to,
            ..good.clone()
        };
        let (_, status) = open_snapshot_stream(addr, "hostile", 2, &lie).await;
        assert_eq!(status, STATUS_INVALID);
    }

    // Garbage instead of a header frame, and a header frame holding garbage.
    for garbage in [&b"\xff\xff\xff\x7f\0\0\0\0"[..], b"\x03\0\0\0\0\0\0\0abc"] {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(&handshake_frame("hostile", 2, StreamKind::Snapshot))
            .await
            .expect("handshake");
        let _ = read_frame_payload(&mut stream).await;
        let mut frame = BytesMut::new();
        if garbage.len() > 8 {
            encode_frame(&garbage[8..], &mut frame);
        } else {
            frame.extend_from_slice(garbage);
        }
        let _ = stream.write_all(&frame).await;
        let answer = read_to_close(&mut stream).await;
        assert!(answer.is_empty() || answer == vec![STATUS_INVALID]);
    }

    // More data than declared.
    let (mut stream, status) = open_snapshot_stream(addr, "hostile", 2, &good).await;
    assert_eq!(status, STATUS_OK);
    let mut extra = bytes.to_vec();
    extra.extend_from_slice(b"surplus");
    let _ = stream.write_all(&extra).await;
    // Delivered or refused, never a panic; drain whatever it decided.
    let _ = read_to_close(&mut stream).await;
    let _ = next_snapshot(&mut one, Duration::from_millis(200)).await;

    assert_no_snapshot(&mut one, Duration::from_millis(300)).await;
    // The node still takes real traffic and a real snapshot.
    deliver(&two.transport, &mut one, heartbeat(2, 1, 2)).await;
    two.transport.send(msg.clone());
    assert_eq!(
        next_snapshot(&mut one, Duration::from_secs(10)).await,
        Some(msg)
    );
}

/// Accepts connections on `listener` (playing node 2) until a snapshot stream comes in; answers its
/// handshake and returns it with its header. Message connections are hung up on.
async fn accept_snapshot_stream(
    listener: &TcpListener,
    cluster_id: &str,
    within: Duration,
) -> Option<(TcpStream, SnapshotHeader)> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (mut stream, _) = tokio::time::timeout_at(deadline, listener.accept())
            .await
            .ok()?
            .expect("accept");
        let hello = Handshake::decode(read_frame_payload(&mut stream).await).expect("handshake");
        if hello.stream != StreamKind::Snapshot {
            continue;
        }
        stream
            .write_all(&handshake_frame(cluster_id, 2, StreamKind::Snapshot))
            .await
            .expect("answer");
        let header = SnapshotHeader::decode(read_frame_payload(&mut stream).await).expect("header");
        return Some((stream, header));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_snapshot_joins_its_transfer_and_a_newer_one_cancels_it() {
    let config = cluster(2, "coalesce");
    let one = start(&config, 1).await;
    let fake_two = TcpListener::bind(&config.nodes[1].peer_addr)
        .await
        .expect("bind node 2's port");

    // The core re-sends the same snapshot while its transfer is running: no new transfer starts.
    let first = snapshot_msg(1, 2, 10, data(4 << 20, 10));
    one.transport.send(first.clone());
    let (mut stream, header) =
        accept_snapshot_stream(&fake_two, "coalesce", Duration::from_secs(10))
            .await
            .expect("snapshot stream");
    assert_eq!(header, header_for(&first));
    stream.write_u8(STATUS_OK).await.expect("go");
    let mut received = vec![0; 1 << 20];
    stream.read_exact(&mut received).await.expect("data");
    for _ in 0..3 {
        one.transport.send(first.clone());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        accept_snapshot_stream(&fake_two, "coalesce", Duration::from_millis(300))
            .await
            .is_none(),
        "a re-send of the same snapshot restarted its transfer"
    );
    received.resize(4 << 20, 0);
    stream
        .read_exact(&mut received[1 << 20..])
        .await
        .expect("the rest");
    assert_eq!(crc32c::crc32c(&received), header.data_crc);
    stream.write_u8(STATUS_OK).await.expect("delivered");
    drop(stream);
    assert_eq!(one.transport.dropped_messages(), 0);

    // A newer snapshot during a transfer cancels it and goes out instead.
    one.transport
        .send(snapshot_msg(1, 2, 11, data(4 << 20, 11)));
    let (mut stale, header) =
        accept_snapshot_stream(&fake_two, "coalesce", Duration::from_secs(10))
            .await
            .expect("snapshot stream");
    assert_eq!(header.meta.index, 11);
    stale.write_u8(STATUS_OK).await.expect("go");
    stale
        .read_exact(&mut received[..1 << 20])
        .await
        .expect("data");
    let newer = snapshot_msg(1, 2, 12, data(4 << 20, 12));
    one.transport.send(newer.clone());
    let (_, header) = accept_snapshot_stream(&fake_two, "coalesce", Duration::from_secs(10))
        .await
        .expect("the newer snapshot's stream");
    assert_eq!(header, header_for(&newer));
    // The abandoned transfer's connection is closed, not left hanging (how much of its data was already
    // in the socket buffers when it was cancelled depends on timing).
    let mut rest = Vec::new();
    let _ = timeout(Duration::from_secs(10), stale.read_to_end(&mut rest))
        .await
        .expect("stale stream closed");
    assert_eq!(one.transport.dropped_messages(), 1);
}

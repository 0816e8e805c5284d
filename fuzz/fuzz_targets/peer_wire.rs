//! Arbitrary bytes from a peer: through the frame payload decoder, the handshake and snapshot-header
//! decoders, and, for whatever decodes, into a Raft follower and a Raft leader. Checks nothing panics
//! (overflow included: this runs with debug assertions), a decoded frame re-encodes to the same
//! messages, and no leader ever probes a follower past its own log.
//!
//! Run (nightly, or RUSTC_BOOTSTRAP=1 on stable): `cargo fuzz run peer_wire -- -max_total_time=600`
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use raftkv_raft::{Config, InitialState, Message, MessageBody, Raft, Role};
use raftkv_server::transport::{decode_frame, encode_batch, FRAME_HEADER_LEN};
use raftkv_server::wire::{Handshake, SnapshotHeader};

fn node(id: u64) -> Raft {
    let mut config = Config::new(id, vec![1, 2, 3]);
    config.pre_vote = false;
    config.check_quorum = false;
    config.seed = 7;
    Raft::new(config, InitialState::default())
}

/// Makes the node durable and applied up to what its Ready holds; returns its messages.
fn flush(r: &mut Raft) -> Vec<Message> {
    let rd = r.ready();
    if let Some(last) = rd.entries.last() {
        r.persisted(last.index, last.term);
    } else if let Some(snapshot) = &rd.snapshot {
        r.persisted(snapshot.meta.index, snapshot.meta.term);
        r.applied(snapshot.meta.index);
    }
    if let Some(last) = rd.committed.last() {
        r.applied(last.index);
    }
    rd.messages.into_iter().chain(rd.messages_after_persist).collect()
}

fn leader() -> Raft {
    let mut r = node(1);
    for _ in 0..1000 {
        r.tick();
        if r.status().role != Role::Follower {
            break;
        }
    }
    for m in flush(&mut r) {
        if let MessageBody::Vote { .. } = m.body {
            r.step(Message { from: m.to, to: 1, term: m.term, body: MessageBody::VoteResponse { granted: true } });
        }
    }
    let _ = flush(&mut r);
    assert_eq!(r.status().role, Role::Leader);
    r
}

fn feed(r: &mut Raft, messages: &[Message]) {
    for m in messages {
        // The acceptor refuses messages whose addresses disagree with the connection's.
        let from = 2 + m.from % 2;
        r.step(Message { from, to: 1, ..m.clone() });
        let last = r.status().last_index;
        for out in flush(r) {
            if let MessageBody::Append { prev_index, .. } = out.body {
                assert!(prev_index <= last, "probe at {prev_index} past the log ending at {last}");
            }
        }
        r.tick();
    }
}

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    let _ = Handshake::decode(bytes.clone());
    let _ = SnapshotHeader::decode(bytes.clone());
    let Ok(messages) = decode_frame(bytes) else {
        return;
    };
    let mut encoded = BytesMut::new();
    encode_batch(&messages, &mut encoded);
    if !messages.is_empty() {
        let again = decode_frame(encoded.freeze().slice(FRAME_HEADER_LEN..)).expect("re-encoded frame decodes");
        assert_eq!(again, messages);
    }
    feed(&mut node(1), &messages);
    feed(&mut leader(), &messages);
});

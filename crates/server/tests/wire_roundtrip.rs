//! The peer wire format: every message variant survives a round trip, entry data is not copied on decode,
//! and hostile input yields errors, never panics or outsized allocations.

use bytes::{BufMut, Bytes, BytesMut};
use raftkv_raft::{
    AppendResult, Entry, EntryKind, Membership, Message, MessageBody, Snapshot, SnapshotMeta,
};
use raftkv_server::wire::{
    decode_message, encode_message, encoded_len, Handshake, SnapshotHeader, StreamKind, WireError,
    HANDSHAKE_MAGIC, PROTOCOL_VERSION, WIRE_VERSION,
};

fn msg(body: MessageBody) -> Message {
    Message {
        from: 3,
        to: 7,
        term: u64::MAX - 1,
        body,
    }
}

fn every_variant() -> Vec<Message> {
    vec![
        msg(MessageBody::PreVote {
            last_index: 10,
            last_term: 2,
        }),
        msg(MessageBody::PreVoteResponse { granted: true }),
        msg(MessageBody::PreVoteResponse { granted: false }),
        msg(MessageBody::Vote {
            last_index: 1 << 40,
            last_term: 9,
            transfer: true,
        }),
        msg(MessageBody::Vote {
            last_index: 0,
            last_term: 0,
            transfer: false,
        }),
        msg(MessageBody::VoteResponse { granted: true }),
        msg(MessageBody::Append {
            prev_index: 0,
            prev_term: 0,
            entries: vec![],
            commit: 0,
        }),
        msg(MessageBody::Append {
            prev_index: 41,
            prev_term: 5,
            entries: vec![
                Entry {
                    index: 42,
                    term: 5,
                    kind: EntryKind::Noop,
                    data: Bytes::new(),
                },
                Entry {
                    index: 43,
                    term: 5,
                    kind: EntryKind::Normal,
                    data: Bytes::from_static(b"set k 0 1\r\nv"),
                },
                Entry {
                    index: 44,
                    term: 6,
                    kind: EntryKind::Normal,
                    data: Bytes::from(vec![0xAB; 70_000]),
                },
            ],
            commit: 42,
        }),
        msg(MessageBody::AppendResponse(AppendResult::Accepted {
            last_index: 44,
        })),
        msg(MessageBody::AppendResponse(AppendResult::Rejected {
            prev_index: 41,
            hint_index: 30,
            hint_term: 4,
        })),
        msg(MessageBody::Heartbeat {
            commit: 44,
            read_round: 0,
        }),
        msg(MessageBody::Heartbeat {
            commit: 44,
            read_round: 17,
        }),
        msg(MessageBody::HeartbeatResponse { read_round: 17 }),
        msg(MessageBody::InstallSnapshot {
            snapshot: Snapshot {
                meta: SnapshotMeta {
                    index: 1000,
                    term: 8,
                    membership: Membership::new(vec![1, 2, 3, 4, 5]),
                },
                data: Bytes::from(vec![7u8; 4096]),
            },
        }),
        msg(MessageBody::InstallSnapshot {
            snapshot: Snapshot::default(),
        }),
        msg(MessageBody::TimeoutNow),
    ]
}

#[test]
fn every_variant_round_trips_and_encoded_len_is_exact() {
    for original in every_variant() {
        let mut out = BytesMut::new();
        encode_message(&original, &mut out);
        assert_eq!(out.len(), encoded_len(&original), "{original:?}");
        let mut buf = out.freeze();
        let decoded = decode_message(&mut buf).expect("decodes");
        assert_eq!(decoded, original);
        assert!(buf.is_empty(), "consumed exactly one message");
    }
}

#[test]
fn messages_back_to_back_decode_in_order() {
    let all = every_variant();
    let mut out = BytesMut::new();
    for m in &all {
        encode_message(m, &mut out);
    }
    let mut buf = out.freeze();
    for expected in &all {
        assert_eq!(&decode_message(&mut buf).expect("decodes"), expected);
    }
    assert!(buf.is_empty());
}

#[test]
fn entry_data_is_sliced_from_the_frame_not_copied() {
    let original = msg(MessageBody::Append {
        prev_index: 1,
        prev_term: 1,
        entries: vec![Entry {
            index: 2,
            term: 1,
            kind: EntryKind::Normal,
            data: Bytes::from(vec![1u8; 1000]),
        }],
        commit: 1,
    });
    let mut out = BytesMut::new();
    encode_message(&original, &mut out);
    let frame = out.freeze();
    let frame_range = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
    let mut buf = frame.clone();
    let MessageBody::Append { entries, .. } = decode_message(&mut buf).expect("decodes").body
    else {
        panic!("wrong variant");
    };
    assert!(frame_range.contains(&(entries[0].data.as_ptr() as usize)));
}

#[test]
fn every_truncation_is_an_error() {
    for original in every_variant() {
        let mut out = BytesMut::new();
        encode_message(&original, &mut out);
        let full = out.freeze();
        for cut in 0..full.len() {
            let mut buf = full.slice(..cut);
            assert!(
                decode_message(&mut buf).is_err(),
                "prefix {cut} of {original:?}"
            );
        }
    }
}

/// Header of a message with valid ids, for hand-built hostile bodies.
fn header(message_type: u8) -> BytesMut {
    let mut out = BytesMut::new();
    out.put_u8(WIRE_VERSION);
    out.put_u8(message_type);
    out.put_u64_le(1);
    out.put_u64_le(2);
    out.put_u64_le(3);
    out
}

#[test]
fn absurd_counts_are_rejected_before_allocating() {
    let mut append = header(5);
    append.put_u64_le(0);
    append.put_u64_le(0);
    append.put_u64_le(0);
    append.put_u32_le(u32::MAX);
    append.put_bytes(0, 64);
    let err = decode_message(&mut append.freeze()).unwrap_err();
    assert!(matches!(err, WireError::ImpossibleCount { .. }), "{err}");

    // A membership claiming 2^32 - 1 voters is refused by its decoder, which checks the count
    // against the members' limit before reading any.
    let mut snapshot = header(9);
    snapshot.put_u64_le(1);
    snapshot.put_u64_le(1);
    snapshot.put_u8(1);
    snapshot.put_u32_le(u32::MAX);
    let err = decode_message(&mut snapshot.freeze()).unwrap_err();
    assert!(
        matches!(
            err,
            WireError::InvalidValue {
                field: "membership",
                ..
            }
        ),
        "{err}"
    );

    let mut snapshot_data = header(9);
    snapshot_data.put_u64_le(1);
    snapshot_data.put_u64_le(1);
    let mut membership = Vec::new();
    Membership::new(vec![1]).encode(&mut membership);
    snapshot_data.put_slice(&membership);
    snapshot_data.put_u64_le(u64::MAX);
    assert!(decode_message(&mut snapshot_data.freeze()).is_err());

    let mut entry_len = header(5);
    entry_len.put_u64_le(0);
    entry_len.put_u64_le(0);
    entry_len.put_u64_le(0);
    entry_len.put_u32_le(1);
    entry_len.put_u64_le(1);
    entry_len.put_u64_le(1);
    entry_len.put_u8(0);
    entry_len.put_u32_le(u32::MAX);
    assert!(matches!(
        decode_message(&mut entry_len.freeze()),
        Err(WireError::Truncated { .. })
    ));
}

#[test]
fn invalid_fields_are_rejected() {
    let mut bad_version = header(10);
    bad_version[0] = WIRE_VERSION + 1;
    assert_eq!(
        decode_message(&mut bad_version.freeze()),
        Err(WireError::UnsupportedVersion(WIRE_VERSION + 1))
    );

    assert_eq!(
        decode_message(&mut header(0).freeze()),
        Err(WireError::UnknownMessageType(0))
    );
    assert_eq!(
        decode_message(&mut header(200).freeze()),
        Err(WireError::UnknownMessageType(200))
    );

    let mut bad_bool = header(2);
    bad_bool.put_u8(2);
    assert!(matches!(
        decode_message(&mut bad_bool.freeze()),
        Err(WireError::InvalidValue { .. })
    ));

    let mut zero_from = header(10);
    zero_from[2..10].copy_from_slice(&0u64.to_le_bytes());
    assert!(matches!(
        decode_message(&mut zero_from.freeze()),
        Err(WireError::InvalidValue { .. })
    ));

    let mut bad_result = header(6);
    bad_result.put_u8(9);
    bad_result.put_u64_le(0);
    assert!(matches!(
        decode_message(&mut bad_result.freeze()),
        Err(WireError::InvalidValue { .. })
    ));

    let mut bad_kind = header(5);
    bad_kind.put_u64_le(0);
    bad_kind.put_u64_le(0);
    bad_kind.put_u64_le(0);
    bad_kind.put_u32_le(1);
    bad_kind.put_u64_le(1);
    bad_kind.put_u64_le(1);
    bad_kind.put_u8(7);
    bad_kind.put_u32_le(0);
    assert!(matches!(
        decode_message(&mut bad_kind.freeze()),
        Err(WireError::InvalidValue { .. })
    ));

    for voters in [vec![2u64, 1], vec![1, 1], vec![0, 1]] {
        let mut snapshot = header(9);
        snapshot.put_u64_le(1);
        snapshot.put_u64_le(1);
        snapshot.put_u32_le(voters.len() as u32);
        for v in &voters {
            snapshot.put_u64_le(*v);
        }
        snapshot.put_u64_le(0);
        assert!(
            decode_message(&mut snapshot.freeze()).is_err(),
            "voters {voters:?}"
        );
    }
}

/// xorshift64*: enough randomness for mutation fuzzing without another dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[test]
fn mutated_and_random_input_never_panics() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let samples: Vec<Bytes> = every_variant()
        .iter()
        .map(|m| {
            let mut out = BytesMut::new();
            encode_message(m, &mut out);
            out.freeze()
        })
        .collect();
    for round in 0..20_000 {
        let mut bytes = samples[round % samples.len()].to_vec();
        for _ in 0..1 + rng.next() % 4 {
            if bytes.is_empty() {
                break;
            }
            let at = (rng.next() as usize) % bytes.len();
            bytes[at] = rng.next() as u8;
        }
        if rng.next().is_multiple_of(4) {
            bytes.truncate((rng.next() as usize) % (bytes.len() + 1));
        }
        let mut buf = Bytes::from(bytes);
        while !buf.is_empty() {
            if decode_message(&mut buf).is_err() {
                break;
            }
        }
    }
    for _ in 0..20_000 {
        let len = (rng.next() % 128) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let _ = decode_message(&mut Bytes::from(bytes.clone()));
        let _ = Handshake::decode(Bytes::from(bytes));
    }
}

#[test]
fn handshake_round_trips_and_rejects_garbage() {
    let hello = Handshake {
        protocol_version: PROTOCOL_VERSION,
        cluster_id: "prod-eu".into(),
        node_id: 4,
        stream: StreamKind::Messages,
        peer_addr: "db-4.example:8001".into(),
    };
    let mut out = BytesMut::new();
    hello.encode(&mut out);
    assert_eq!(Handshake::decode(out.clone().freeze()), Ok(hello));

    assert_eq!(
        Handshake::decode(Bytes::from_static(b"get foo\r\n0123456789abcdef")),
        Err(WireError::BadMagic)
    );
    let mut trailing = out.clone();
    trailing.put_u8(0);
    assert!(Handshake::decode(trailing.freeze()).is_err());
    for cut in 0..out.len() {
        assert!(Handshake::decode(out.clone().freeze().slice(..cut)).is_err());
    }
}

#[test]
fn snapshot_stream_handshake_and_header_round_trip() {
    let hello = Handshake {
        protocol_version: PROTOCOL_VERSION,
        cluster_id: "prod-eu".into(),
        node_id: 4,
        stream: StreamKind::Snapshot,
        peer_addr: String::new(),
    };
    let mut out = BytesMut::new();
    hello.encode(&mut out);
    assert_eq!(Handshake::decode(out.clone().freeze()), Ok(hello.clone()));
    // The stream kind is the byte after the cluster id; an unknown one is refused.
    let mut unknown_kind = out.clone();
    let at = out.len() - 3;
    unknown_kind[at] = 2;
    assert!(Handshake::decode(unknown_kind.freeze()).is_err());
    // A version-1 handshake (no stream byte for messages, no address) still decodes, for the caller
    // to refuse by its version.
    let mut old = BytesMut::new();
    old.put_slice(&HANDSHAKE_MAGIC);
    old.put_u16_le(1);
    old.put_u64_le(4);
    old.put_u16_le(7);
    old.put_slice(b"prod-eu");
    assert_eq!(
        Handshake::decode(old.freeze()).map(|h| h.protocol_version),
        Ok(1)
    );

    let header = SnapshotHeader {
        from: 1,
        to: 3,
        term: 9,
        meta: SnapshotMeta {
            index: 1_000_000,
            term: 8,
            membership: Membership::new(vec![1, 2, 3]),
        },
        data_len: 280 << 20,
        data_crc: 0xDEAD_BEEF,
    };
    let mut out = BytesMut::new();
    header.encode(&mut out);
    assert_eq!(
        SnapshotHeader::decode(out.clone().freeze()),
        Ok(header.clone())
    );
    for cut in 0..out.len() {
        assert!(SnapshotHeader::decode(out.clone().freeze().slice(..cut)).is_err());
    }
    let mut trailing = out.clone();
    trailing.put_u8(0);
    assert!(SnapshotHeader::decode(trailing.freeze()).is_err());
    let mut zero_from = out.clone();
    zero_from[1..9].copy_from_slice(&0u64.to_le_bytes());
    assert!(SnapshotHeader::decode(zero_from.freeze()).is_err());

    let data = Bytes::from_static(b"state");
    let msg = header.clone().into_message(data.clone());
    assert_eq!(
        SnapshotHeader::for_message(&msg, header.data_crc).map(|h| (h.from, h.to, h.term, h.meta)),
        Some((1, 3, 9, header.meta.clone()))
    );
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..20_000 {
        let mut bytes = out.to_vec();
        for _ in 0..3 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let at = (rng as usize) % bytes.len();
            bytes[at] = (rng >> 32) as u8;
        }
        let _ = SnapshotHeader::decode(Bytes::from(bytes));
    }
}

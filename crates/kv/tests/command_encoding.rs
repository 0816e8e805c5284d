use bytes::{Bytes, BytesMut};
use raftkv_kv::{Command, DecodeError, Proposal, Request};

fn roundtrip(proposal: &Proposal) -> Proposal {
    let mut out = BytesMut::new();
    proposal.encode(&mut out);
    assert_eq!(out.len(), proposal.encoded_len());
    Proposal::decode(&out.freeze()).expect("decodes")
}

#[test]
fn every_command_roundtrips() {
    let key = Bytes::from_static(b"key");
    let value = Bytes::from_static(b"a\r\n\0");
    for command in [
        Command::Set {
            key: key.clone(),
            exptime: 315_360_000,
            value: value.clone(),
        },
        Command::Cas {
            key: key.clone(),
            exptime: 0,
            version: u64::MAX,
            value: Bytes::new(),
        },
        Command::Delete {
            key: Bytes::from(vec![b'k'; 250]),
        },
        Command::Expire,
    ] {
        let proposal = Proposal {
            session: None,
            stamp_ms: 1_700_000_000_123,
            command,
        };
        assert_eq!(roundtrip(&proposal), proposal);
    }
}

#[test]
fn decode_is_zero_copy() {
    let proposal = Proposal {
        session: None,
        stamp_ms: 1,
        command: Command::Set {
            key: Bytes::from_static(b"k"),
            exptime: 0,
            value: Bytes::from(vec![7u8; 64]),
        },
    };
    let mut out = BytesMut::new();
    proposal.encode(&mut out);
    let data = out.freeze();
    let Ok(Proposal {
        command: Command::Set { value, .. },
        ..
    }) = Proposal::decode(&data)
    else {
        panic!()
    };
    let data_range = data.as_ptr() as usize..data.as_ptr() as usize + data.len();
    assert!(data_range.contains(&(value.as_ptr() as usize)));
}

#[test]
fn decode_rejects_bad_entries() {
    let decode = |raw: &[u8]| Proposal::decode(&Bytes::copy_from_slice(raw));
    assert_eq!(decode(&[]), Err(DecodeError::Truncated));
    assert_eq!(decode(&[3]), Err(DecodeError::UnknownFormat(3)));
    assert_eq!(decode(&[2]), Err(DecodeError::Truncated));
    let mut expire = vec![1u8];
    expire.extend_from_slice(&5u64.to_le_bytes());
    expire.push(4);
    assert!(decode(&expire).is_ok());
    let mut trailing = expire.clone();
    trailing.push(0);
    assert_eq!(decode(&trailing), Err(DecodeError::TrailingBytes));
    let mut unknown = expire.clone();
    unknown[9] = 99;
    assert_eq!(decode(&unknown), Err(DecodeError::UnknownCommand(99)));
    let mut bad_key = expire[..9].to_vec();
    bad_key.extend_from_slice(&[3, 2, b'k', b' ']);
    assert_eq!(decode(&bad_key), Err(DecodeError::InvalidKey));
    let mut empty_key = expire[..9].to_vec();
    empty_key.extend_from_slice(&[3, 0]);
    assert_eq!(decode(&empty_key), Err(DecodeError::InvalidKey));
    let mut bad_exptime = expire[..9].to_vec();
    bad_exptime.push(1);
    bad_exptime.extend_from_slice(&315_360_001u32.to_le_bytes());
    bad_exptime.extend_from_slice(&[1, b'k']);
    assert_eq!(decode(&bad_exptime), Err(DecodeError::InvalidExptime));
    // Every prefix of a valid entry that cuts into a fixed field fails cleanly.
    let mut out = BytesMut::new();
    Proposal {
        session: None,
        stamp_ms: 9,
        command: Command::Cas {
            key: Bytes::from_static(b"kk"),
            exptime: 1,
            version: 2,
            value: Bytes::new(),
        },
    }
    .encode(&mut out);
    for len in 0..out.len() {
        assert!(decode(&out[..len]).is_err(), "prefix {len}");
    }
}

#[test]
fn oversized_keys_never_decode() {
    for len in [251usize, 255, 256, 300] {
        let proposal = Proposal {
            session: None,
            stamp_ms: 0,
            command: Command::Delete {
                key: Bytes::from(vec![b'k'; len]),
            },
        };
        let mut out = BytesMut::new();
        proposal.encode(&mut out);
        assert!(Proposal::decode(&out.freeze()).is_err(), "{len}");
    }
}

#[test]
fn from_request_maps_writes_and_keeps_noreply() {
    let key = Bytes::from_static(b"k");
    let value = Bytes::from_static(b"v");
    assert_eq!(
        Command::from_request(Request::Set {
            key: key.clone(),
            exptime: 3,
            value: value.clone(),
            noreply: true
        }),
        Some((
            Command::Set {
                key: key.clone(),
                exptime: 3,
                value: value.clone()
            },
            true
        ))
    );
    assert_eq!(
        Command::from_request(Request::Cas {
            key: key.clone(),
            exptime: 0,
            version: 5,
            value: value.clone(),
            noreply: false
        }),
        Some((
            Command::Cas {
                key: key.clone(),
                exptime: 0,
                version: 5,
                value
            },
            false
        ))
    );
    assert_eq!(
        Command::from_request(Request::Delete { key: key.clone() }),
        Some((Command::Delete { key: key.clone() }, false))
    );
    assert_eq!(
        Command::from_request(Request::Get { key: key.clone() }),
        None
    );
    assert_eq!(Command::from_request(Request::Getm { key }), None);
}

#[test]
fn session_writes_and_registrations_round_trip_and_bad_ones_do_not_decode() {
    use raftkv_kv::protocol::SessionSeq;
    let encode = |proposal: &Proposal| {
        let mut out = BytesMut::new();
        proposal.encode(&mut out);
        assert_eq!(out.len(), proposal.encoded_len());
        out.freeze()
    };
    let in_session = Proposal {
        session: Some(SessionSeq {
            session: 12,
            seq: 3,
        }),
        stamp_ms: 5,
        command: Command::Delete {
            key: Bytes::from_static(b"k"),
        },
    };
    let bytes = encode(&in_session);
    assert_eq!(bytes[0], 2, "a write in a session uses format 2");
    assert_eq!(Proposal::decode(&bytes), Ok(in_session.clone()));
    let register = Proposal {
        session: None,
        stamp_ms: 5,
        command: Command::Register,
    };
    assert_eq!(Proposal::decode(&encode(&register)), Ok(register));
    // A session of 0, a sequence number of 0 or beyond the limit, a registration in a session.
    for (session, seq) in [(0, 1), (1, 0), (1, (1 << 62) + 1)] {
        let mut bad = bytes.to_vec();
        bad[9..17].copy_from_slice(&u64::to_le_bytes(session));
        bad[17..25].copy_from_slice(&u64::to_le_bytes(seq));
        assert_eq!(
            Proposal::decode(&Bytes::from(bad)),
            Err(DecodeError::InvalidEntry)
        );
    }
    let mut nested = bytes[..25].to_vec();
    nested.push(5);
    assert_eq!(
        Proposal::decode(&Bytes::from(nested)),
        Err(DecodeError::InvalidEntry)
    );
    for len in 0..bytes.len() {
        assert!(
            Proposal::decode(&bytes.slice(..len)).is_err(),
            "prefix {len}"
        );
    }
}

/// A transaction nested in a transaction, many levels deep, is refused at the first level without
/// decoding the rest (a hostile entry must not recurse the decoder into a stack overflow).
#[test]
fn deeply_nested_transactions_are_refused_without_recursion() {
    // Level k's body: `18 | 0 watches | 1 op | op_len | 0 | level k-1's body`, 14 bytes more than
    // the level inside it; the innermost is an empty transaction (9 bytes). Written outermost first.
    const LEVELS: usize = 50_000;
    let body_len = |level: usize| 9 + 14 * level;
    let mut body = Vec::with_capacity(body_len(LEVELS));
    for level in (1..=LEVELS).rev() {
        body.extend_from_slice(&[18, 0, 0, 0, 0, 1, 0, 0, 0]);
        body.extend_from_slice(&(1 + body_len(level - 1) as u32).to_le_bytes());
        body.push(0);
    }
    body.extend_from_slice(&[18, 0, 0, 0, 0, 0, 0, 0, 0]);
    let mut entry = vec![1u8];
    entry.extend_from_slice(&0u64.to_le_bytes());
    entry.extend_from_slice(&body);
    assert_eq!(
        Proposal::decode(&Bytes::from(entry)),
        Err(DecodeError::InvalidEntry)
    );
}

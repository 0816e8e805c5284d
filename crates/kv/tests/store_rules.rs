//! One test per state-machine rule of docs/protocol.md.

use bytes::Bytes;
use raftkv_kv::{Command, Reply, Request, Store};

fn key(k: &'static str) -> Bytes {
    Bytes::from_static(k.as_bytes())
}

fn set(k: &'static str, exptime: u32, value: &'static str) -> Command {
    Command::Set {
        key: key(k),
        exptime,
        value: Bytes::from_static(value.as_bytes()),
    }
}

fn cas(k: &'static str, exptime: u32, version: u64, value: &'static str) -> Command {
    Command::Cas {
        key: key(k),
        exptime,
        version,
        value: Bytes::from_static(value.as_bytes()),
    }
}

fn delete(k: &'static str) -> Command {
    Command::Delete { key: key(k) }
}

fn get(store: &Store, k: &'static str, now_ms: u64) -> Reply {
    store.read(&Request::Get { key: key(k) }, now_ms)
}

fn getm(store: &Store, k: &'static str, now_ms: u64) -> Reply {
    store.read(&Request::Getm { key: key(k) }, now_ms)
}

fn value(v: &'static str) -> Reply {
    Reply::Value {
        value: Bytes::from_static(v.as_bytes()),
    }
}

#[test]
fn set_get_getm_delete() {
    let mut store = Store::new();
    assert_eq!(
        store.apply(1, 0, &set("k", 0, "v1")),
        Reply::Ok { version: 1 }
    );
    assert_eq!(get(&store, "k", 0), value("v1"));
    assert_eq!(
        getm(&store, "k", 0),
        Reply::ValueMeta {
            version: 1,
            exptime: 0,
            value: Bytes::from_static(b"v1")
        }
    );
    assert_eq!(
        store.apply(2, 0, &set("k", 0, "v2")),
        Reply::Ok { version: 2 }
    );
    assert_eq!(get(&store, "k", 0), value("v2"));
    assert_eq!(store.apply(3, 0, &delete("k")), Reply::Deleted);
    assert_eq!(get(&store, "k", 0), Reply::ErrNotFound);
    assert_eq!(getm(&store, "k", 0), Reply::ErrNotFound);
    assert_eq!(store.apply(4, 0, &delete("k")), Reply::ErrNotFound);
    assert_eq!(store.applied_index(), 4);
    assert!(store.is_empty());
}

#[test]
fn cas_rules() {
    let mut store = Store::new();
    assert_eq!(
        store.apply(1, 0, &cas("k", 0, 0, "x")),
        Reply::ErrNotFound,
        "cas on a missing key"
    );
    store.apply(2, 0, &set("k", 0, "a"));
    assert_eq!(store.apply(3, 0, &cas("k", 0, 1, "b")), Reply::ErrVersion);
    assert_eq!(
        get(&store, "k", 0),
        value("a"),
        "failed cas changes nothing"
    );
    assert_eq!(
        store.apply(4, 0, &cas("k", 0, 2, "b")),
        Reply::Ok { version: 4 }
    );
    assert_eq!(get(&store, "k", 0), value("b"));
    assert_eq!(
        store.apply(5, 0, &cas("k", 0, 2, "c")),
        Reply::ErrVersion,
        "old version no longer matches"
    );
}

#[test]
fn versions_are_never_reused_after_delete_and_recreate() {
    let mut store = Store::new();
    store.apply(10, 0, &set("k", 0, "a"));
    store.apply(11, 0, &delete("k"));
    store.apply(12, 0, &set("other", 0, "x"));
    assert_eq!(
        store.apply(13, 0, &set("k", 0, "a")),
        Reply::Ok { version: 13 }
    );
    assert_eq!(
        store.apply(14, 0, &cas("k", 0, 10, "stale")),
        Reply::ErrVersion,
        "no ABA"
    );
}

#[test]
fn expiry_boundary() {
    let mut store = Store::new();
    // Written at 1000 ms with exptime 2 s: live before 3000 ms, absent from 3000 ms on.
    store.apply(1, 1000, &set("k", 2, "v"));
    assert_eq!(get(&store, "k", 2999), value("v"));
    assert_eq!(get(&store, "k", 3000), Reply::ErrNotFound);
    assert_eq!(getm(&store, "k", 3000), Reply::ErrNotFound);
}

#[test]
fn getm_rounds_remaining_seconds_up() {
    let mut store = Store::new();
    store.apply(1, 1000, &set("k", 2, "v"));
    let exptime_at = |now| match getm(&store, "k", now) {
        Reply::ValueMeta { exptime, .. } => exptime,
        other => panic!("{other:?}"),
    };
    assert_eq!(exptime_at(1000), 2);
    assert_eq!(exptime_at(1001), 2);
    assert_eq!(exptime_at(1999), 2);
    assert_eq!(exptime_at(2000), 1);
    assert_eq!(exptime_at(2999), 1, "a live key never shows 0");
}

#[test]
fn cas_and_delete_on_expired_keys_are_not_found() {
    let mut store = Store::new();
    store.apply(1, 0, &set("k", 1, "v"));
    assert_eq!(
        store.apply(2, 1000, &cas("k", 0, 1, "w")),
        Reply::ErrNotFound
    );
    assert_eq!(store.apply(3, 1000, &delete("k")), Reply::ErrNotFound);
    store.apply(4, 1000, &set("j", 1, "v"));
    assert_eq!(
        store.apply(5, 1999, &cas("j", 0, 4, "w")),
        Reply::Ok { version: 5 },
        "last live ms"
    );
    assert_eq!(
        get(&store, "j", 1_000_000),
        value("w"),
        "cas with exptime 0 makes it permanent"
    );
}

#[test]
fn set_on_expired_key_recreates_it() {
    let mut store = Store::new();
    store.apply(1, 0, &set("k", 1, "old"));
    assert_eq!(
        store.apply(2, 5000, &set("k", 1, "new")),
        Reply::Ok { version: 2 }
    );
    assert_eq!(get(&store, "k", 5999), value("new"));
    assert_eq!(get(&store, "k", 6000), Reply::ErrNotFound);
}

#[test]
fn expire_reclaims_exactly_the_due_keys() {
    let mut store = Store::new();
    store.apply(1, 0, &set("a", 1, "v"));
    store.apply(2, 0, &set("b", 2, "v"));
    store.apply(3, 0, &set("c", 0, "v"));
    assert_eq!(store.len(), 3);
    assert!(!store.has_expired(999));
    assert!(store.has_expired(1000));
    store.apply(4, 999, &Command::Expire);
    assert_eq!(store.len(), 3);
    store.apply(5, 1000, &Command::Expire);
    assert_eq!(store.len(), 2);
    assert_eq!(store.expiring_len(), 1);
    store.apply(6, 10_000, &Command::Expire);
    assert_eq!(store.len(), 1);
    assert_eq!(get(&store, "c", 10_000), value("v"));
}

#[test]
fn rewriting_a_key_moves_its_expiry() {
    let mut store = Store::new();
    store.apply(1, 0, &set("k", 1, "v"));
    store.apply(2, 0, &set("k", 1, "w")); // same instant and key as before
    store.apply(3, 0, &set("k", 0, "x")); // no longer expires
    store.apply(4, 5000, &Command::Expire);
    assert_eq!(get(&store, "k", 5000), value("x"));
    store.apply(5, 5000, &set("k", 1, "y"));
    store.apply(6, 5000, &set("k", 1, "z"));
    assert_eq!(store.expiring_len(), 1);
    store.apply(7, 6000, &Command::Expire);
    assert!(store.is_empty());
    assert_eq!(store.expiring_len(), 0);
}

#[test]
fn clock_never_goes_back() {
    let mut store = Store::new();
    store.apply(1, 10_000, &set("k", 1, "v"));
    // A later leader with a lagging clock must not resurrect nor extend anything.
    store.apply(2, 20_000, &Command::Expire);
    assert_eq!(
        store.apply(3, 5_000, &set("j", 1, "v")),
        Reply::Ok { version: 3 }
    );
    assert_eq!(get(&store, "j", 0), value("v"));
    assert_eq!(
        get(&store, "j", 21_000),
        Reply::ErrNotFound,
        "expiry counted from the store clock"
    );
    assert_eq!(store.clock_ms(), 20_000);
}

#[test]
fn invalid_commands_that_bypassed_validation_get_err_cmd_err() {
    let mut store = Store::new();
    let long_key = Bytes::from(vec![b'k'; 251]);
    let reply = store.apply(
        1,
        0,
        &Command::Set {
            key: long_key,
            exptime: 0,
            value: Bytes::new(),
        },
    );
    assert_eq!(reply, Reply::ErrCmdErr);
    assert_eq!(
        store.apply(
            2,
            0,
            &Command::Set {
                key: Bytes::new(),
                exptime: 0,
                value: Bytes::new()
            }
        ),
        Reply::ErrCmdErr
    );
    assert_eq!(
        store.apply(3, 0, &set("k", 315_360_001, "v")),
        Reply::ErrCmdErr
    );
    assert!(store.is_empty());
    assert_eq!(
        store.read(&Request::Delete { key: key("k") }, 0),
        Reply::ErrCmdErr
    );
}

#[test]
fn values_with_crlf_and_nul_and_max_key_roundtrip() {
    let mut store = Store::new();
    let long_key = Bytes::from(vec![b'~'; 250]);
    let value = Bytes::from_static(b"a\r\n\0b\r\n");
    store.apply(
        1,
        0,
        &Command::Set {
            key: long_key.clone(),
            exptime: 0,
            value: value.clone(),
        },
    );
    assert_eq!(
        store.read(&Request::Get { key: long_key }, 0),
        Reply::Value { value }
    );
}

#[test]
fn digest_tracks_state() {
    let mut a = Store::new();
    let mut b = Store::new();
    assert_eq!(a.digest(), b.digest());
    a.apply(1, 0, &set("x", 0, "1"));
    a.apply(2, 0, &set("y", 0, "2"));
    b.apply(1, 0, &set("y", 0, "2"));
    assert_ne!(a.digest(), b.digest());
    b.apply(2, 0, &set("x", 0, "1"));
    assert_ne!(a.digest(), b.digest(), "versions differ");
    let mut c = Store::new();
    c.apply(1, 0, &set("x", 0, "1"));
    c.apply(2, 0, &set("y", 0, "2"));
    assert_eq!(a.digest(), c.digest());
}

#[test]
fn snapshot_restores_everything() {
    let mut store = Store::new();
    store.apply(1, 500, &set("a", 3, "v\r\n"));
    store.apply(2, 600, &set("b", 0, ""));
    store.apply(3, 700, &Command::Expire);
    let mut image = Vec::new();
    store.snapshot(&mut image);
    let restored = Store::restore(&image).expect("valid snapshot");
    assert_eq!(restored.digest(), store.digest());
    assert_eq!(restored.applied_index(), 3);
    assert_eq!(restored.clock_ms(), 700);
    assert_eq!(restored.expiring_len(), 1);
    assert_eq!(get(&restored, "a", 3499), value("v\r\n"));
    assert_eq!(get(&restored, "a", 3500), Reply::ErrNotFound);
}

#[test]
fn snapshot_corruption_is_detected() {
    let mut store = Store::new();
    store.apply(1, 0, &set("a", 0, "value"));
    let mut image = Vec::new();
    store.snapshot(&mut image);
    for position in 0..image.len() {
        let mut corrupt = image.clone();
        corrupt[position] ^= 0x40;
        assert!(Store::restore(&corrupt).is_err(), "flip at {position}");
    }
    for len in 0..image.len() {
        assert!(Store::restore(&image[..len]).is_err(), "truncated to {len}");
    }
    let mut extended = image.clone();
    extended.push(0);
    assert!(Store::restore(&extended).is_err());
}

/// A snapshot image written by hand, with a valid checksum, so the checks behind the checksum
/// (which a hostile or buggy writer could get past) are exercised.
fn handmade_snapshot(applied_index: u64, entries: &[(u64, &str, &str)]) -> Vec<u8> {
    let mut image = b"RKVS".to_vec();
    image.push(1);
    image.extend_from_slice(&applied_index.to_le_bytes());
    image.extend_from_slice(&0u64.to_le_bytes());
    image.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for (version, key, value) in entries {
        image.extend_from_slice(&version.to_le_bytes());
        image.extend_from_slice(&u64::MAX.to_le_bytes());
        image.push(key.len() as u8);
        image.extend_from_slice(key.as_bytes());
        image.extend_from_slice(&(value.len() as u32).to_le_bytes());
        image.extend_from_slice(value.as_bytes());
    }
    let checksum = crc32c::crc32c(&image);
    image.extend_from_slice(&checksum.to_le_bytes());
    image
}

#[test]
fn snapshot_checks_behind_the_checksum() {
    use raftkv_kv::DecodeError;
    let good = handmade_snapshot(2, &[(1, "a", "x"), (2, "b", "y")]);
    let restored = Store::restore(&good).expect("well-formed");
    assert_eq!(restored.len(), 2);
    assert_eq!(get(&restored, "b", 0), value("y"));
    assert_eq!(
        Store::restore(&handmade_snapshot(2, &[(1, "a", "x"), (2, "a", "y")])).err(),
        Some(DecodeError::DuplicateKey)
    );
    assert_eq!(
        Store::restore(&handmade_snapshot(2, &[(3, "a", "x")])).err(),
        Some(DecodeError::InvalidEntry)
    );
    assert_eq!(
        Store::restore(&handmade_snapshot(2, &[(1, "a b", "x")])).err(),
        Some(DecodeError::InvalidKey)
    );
}

#[test]
fn a_store_can_be_cloned_to_another_thread() {
    fn send_and_share<T: Send + Sync + 'static>() {}
    send_and_share::<Store>();
    let mut store = Store::new();
    store.apply(1, 0, &set("a", 0, "1"));
    let copy = store.clone();
    store.apply(2, 0, &set("a", 0, "2"));
    let image = std::thread::spawn(move || {
        let mut image = Vec::new();
        copy.snapshot(&mut image);
        image
    })
    .join()
    .expect("snapshot thread");
    let restored = Store::restore(&image).expect("valid snapshot");
    assert_eq!(get(&restored, "a", 0), value("1"));
    assert_eq!(get(&store, "a", 0), value("2"));
}

/// The store's byte count follows every way an entry comes and goes: set, overwrite, delete, expiry,
/// and a restore from a snapshot.
#[test]
fn bytes_count_keys_and_values_held() {
    let mut store = Store::new();
    assert_eq!(store.bytes(), 0);
    store.apply(1, 1_000, &set("alpha", 0, "12345"));
    assert_eq!(store.bytes(), 1 + 5 + 5);
    store.apply(2, 1_000, &set("alpha", 0, "1"));
    assert_eq!(store.bytes(), 1 + 5 + 1);
    store.apply(3, 1_000, &set("b", 1, "xyz"));
    assert_eq!(store.bytes(), 7 + 1 + 1 + 3);
    let mut snapshot = Vec::new();
    store.snapshot(&mut snapshot);
    let restored = Store::restore(&snapshot).expect("restore");
    assert_eq!(restored.bytes(), store.bytes());
    store.apply(4, 1_000, &delete("alpha"));
    assert_eq!(store.bytes(), 5);
    // An Expire entry stamped later reclaims the expired key.
    store.apply(5, 10_000, &Command::Expire);
    assert_eq!(store.len(), 0);
    assert_eq!(store.bytes(), 0);
}

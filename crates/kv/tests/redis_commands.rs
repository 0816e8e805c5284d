//! The state-machine commands behind the Redis front end's INCR/DECR/INCRBY/DECRBY, APPEND, MSET and
//! MSETNX: their rules, their log-entry encoding, and that a damaged entry is refused.

use bytes::{Bytes, BytesMut};
use raftkv_kv::{Command, Proposal, Reply, Request, SetCondition, SetExpiry, Store};

fn b(text: &str) -> Bytes {
    Bytes::from(text.to_string())
}

fn incr(key: &str, by: i64) -> Command {
    Command::IncrBy { key: b(key), by }
}

fn get(store: &Store, key: &str) -> Reply {
    store.read(&Request::Get { key: b(key) }, 0)
}

fn value(text: &str) -> Reply {
    Reply::Value { value: b(text) }
}

fn error(message: &str) -> Reply {
    Reply::ErrValue {
        message: message.into(),
    }
}

#[test]
fn incr_by_counts_from_zero_and_refuses_what_is_not_an_integer() {
    let mut store = Store::new();
    assert_eq!(
        store.apply(1, 0, &incr("n", 1)),
        Reply::Integer { value: 1 }
    );
    assert_eq!(
        store.apply(2, 0, &incr("n", -5)),
        Reply::Integer { value: -4 }
    );
    assert_eq!(get(&store, "n"), value("-4"));
    let not_integer = "value is not an integer or out of range";
    for bad in [
        "abc",
        " 1",
        "1 ",
        "+1",
        "01",
        "-0",
        "",
        "99999999999999999999",
    ] {
        store.apply(
            3,
            0,
            &Command::Set {
                key: b("s"),
                exptime: 0,
                value: b(bad),
            },
        );
        assert_eq!(
            store.apply(4, 0, &incr("s", 1)),
            error(not_integer),
            "{bad:?}"
        );
        assert_eq!(get(&store, "s"), value(bad), "unchanged");
    }
    store.apply(
        5,
        0,
        &Command::Set {
            key: b("max"),
            exptime: 0,
            value: b(&i64::MAX.to_string()),
        },
    );
    assert_eq!(
        store.apply(6, 0, &incr("max", 1)),
        error("increment or decrement would overflow")
    );
}

#[test]
fn incr_and_append_keep_the_expiry() {
    let mut store = Store::new();
    store.apply(
        1,
        1_000,
        &Command::Set {
            key: b("t"),
            exptime: 10,
            value: b("5"),
        },
    );
    store.apply(2, 2_000, &incr("t", 1));
    store.apply(
        3,
        3_000,
        &Command::Append {
            key: b("t"),
            value: b("0"),
        },
    );
    assert_eq!(get(&store, "t"), value("60"));
    assert_eq!(store.expires_at(b"t"), Some(11_000));
    // Once expired, the key counts as absent.
    assert_eq!(
        store.apply(4, 12_000, &incr("t", 1)),
        Reply::Integer { value: 1 }
    );
}

#[test]
fn append_creates_and_grows() {
    let mut store = Store::new();
    let append = |v: &str| Command::Append {
        key: b("a"),
        value: b(v),
    };
    assert_eq!(
        store.apply(1, 0, &append("Hello")),
        Reply::Integer { value: 5 }
    );
    assert_eq!(
        store.apply(2, 0, &append(" World")),
        Reply::Integer { value: 11 }
    );
    assert_eq!(get(&store, "a"), value("Hello World"));
}

#[test]
fn mset_is_all_or_nothing() {
    let mut store = Store::new();
    let pairs = |keys: &[&str]| keys.iter().map(|k| (b(k), b(&format!("v-{k}")))).collect();
    assert_eq!(
        store.apply(
            1,
            0,
            &Command::MSet {
                pairs: pairs(&["a", "b"]),
                nx: false
            }
        ),
        Reply::Ok { version: 1 }
    );
    assert_eq!(get(&store, "b"), value("v-b"));
    // MSETNX: one existing key and nothing is written.
    assert_eq!(
        store.apply(
            2,
            0,
            &Command::MSet {
                pairs: pairs(&["b", "c"]),
                nx: true
            }
        ),
        Reply::Integer { value: 0 }
    );
    assert_eq!(get(&store, "c"), Reply::ErrNotFound);
    assert_eq!(
        store.apply(
            3,
            0,
            &Command::MSet {
                pairs: pairs(&["c", "d"]),
                nx: true
            }
        ),
        Reply::Integer { value: 1 }
    );
    assert_eq!(get(&store, "d"), value("v-d"));
}

#[test]
fn entries_round_trip_and_damage_is_refused() {
    let commands = [
        incr("n", -42),
        Command::Append {
            key: b("a"),
            value: b("tail"),
        },
        Command::MSet {
            pairs: vec![(b("x"), b("1")), (b("y"), Bytes::new())],
            nx: true,
        },
        Command::SetWith {
            key: b("w"),
            value: b("value"),
            condition: SetCondition::IfPresent,
            get: true,
            expiry: SetExpiry::AfterMs(1500),
        },
        Command::GetDel { key: b("g") },
    ];
    for command in commands {
        let proposal = Proposal {
            stamp_ms: 7,
            session: None,
            command,
        };
        let mut out = BytesMut::new();
        proposal.encode(&mut out);
        assert_eq!(out.len(), proposal.encoded_len());
        let bytes = out.freeze();
        assert_eq!(Proposal::decode(&bytes), Ok(proposal.clone()));
        for cut in 10..bytes.len() {
            let damaged = bytes.slice(..cut);
            if let Ok(decoded) = Proposal::decode(&damaged) {
                // Only a value that runs to the end may be cut and still decode (to a shorter one).
                assert!(
                    matches!(
                        decoded.command,
                        Command::Append { .. } | Command::SetWith { .. }
                    ),
                    "{decoded:?}"
                );
            }
        }
    }
}

#[test]
fn set_with_conditions_expiry_and_get() {
    let mut store = Store::new();
    let set = |value: &str, condition, get, expiry| Command::SetWith {
        key: b("k"),
        value: b(value),
        condition,
        get,
        expiry,
    };
    use SetCondition::*;
    assert_eq!(
        store.apply(1, 1_000, &set("a", IfPresent, false, SetExpiry::Never)),
        Reply::ErrNotFound
    );
    assert_eq!(
        store.apply(
            2,
            1_000,
            &set("a", IfAbsent, false, SetExpiry::AfterMs(500))
        ),
        Reply::Ok { version: 2 }
    );
    assert_eq!(store.expires_at(b"k"), Some(1_500));
    assert_eq!(
        store.apply(3, 1_100, &set("b", Always, true, SetExpiry::Keep)),
        value("a")
    );
    assert_eq!(store.expires_at(b"k"), Some(1_500));
    assert_eq!(
        store.apply(4, 1_200, &set("c", IfAbsent, true, SetExpiry::Never)),
        value("b"),
        "not written, old value answered"
    );
    assert_eq!(get(&store, "k"), value("b"));
    assert_eq!(
        store.apply(5, 1_300, &Command::GetDel { key: b("k") }),
        value("b")
    );
    assert_eq!(
        store.apply(6, 1_300, &Command::GetDel { key: b("k") }),
        Reply::ErrNotFound
    );
}

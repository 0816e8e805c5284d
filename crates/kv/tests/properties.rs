//! Property tests: split-invariance of the parser, the store against a model, snapshot
//! round-trips, and no panic / bounded buffering on arbitrary bytes.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use raftkv_kv::{
    Command, ParseError, ParseOutcome, Parser, Proposal, Reply, Request, SetCondition, SetExpiry,
    Store, TtlCondition, TxOp, Watch,
};

const MAX_VALUE: usize = 64;

// ---------- request streams ----------

fn key_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "[a-c]{1,3}",
        1 => "[!-~]{1,250}",
        1 => "[!-~]{251,260}",
    ]
}

fn value_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![Just(b'\r'), Just(b'\n'), Just(0u8), any::<u8>()],
        0..MAX_VALUE,
    )
}

fn block(header: String, value: &[u8]) -> Vec<u8> {
    let mut out = header.into_bytes();
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
    out
}

/// Request text that is valid, malformed-but-recoverable, or fatal.
fn request_text() -> impl Strategy<Value = Vec<u8>> {
    let noreply = prop_oneof![Just(""), Just(" noreply"), Just(" noreplyy")];
    prop_oneof![
        4 => (key_strategy(), 0u32..400_000_000, value_strategy(), noreply.clone())
            .prop_map(|(k, e, v, n)| block(format!("set {k} {e} {}{n}", v.len()), &v)),
        2 => (key_strategy(), 0u32..5, any::<u64>(), value_strategy(), noreply)
            .prop_map(|(k, e, ver, v, n)| block(format!("cas {k} {e} {ver} {}{n}", v.len()), &v)),
        3 => (prop_oneof![Just("get"), Just("getm"), Just("delete")], key_strategy())
            .prop_map(|(c, k)| format!("{c} {k}\r\n").into_bytes()),
        1 => "[a-z0-9 ]{0,20}".prop_map(|line| format!("{line}\r\n").into_bytes()),
        1 => (key_strategy(), value_strategy()).prop_map(|(k, v)| block(format!("set {k} x {}", v.len()), &v)),
        1 => Just(b"set k 0 1\r\nab\r\n".to_vec()),
        1 => Just(format!("set k 0 {}\r\n", MAX_VALUE + 1).into_bytes()),
        1 => prop::collection::vec(b'a'..=b'z', 1020..1100).prop_map(|mut line| { line.extend_from_slice(b"\r\n"); line }),
    ]
}

fn stream_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(request_text(), 0..20).prop_map(|items| items.concat())
}

/// Feeds `input` in the given pieces, parsing as far as possible after each; stops at Fatal.
fn parse_in_pieces(input: &[u8], cuts: &[usize]) -> Vec<ParseOutcome> {
    let mut parser = Parser::new(MAX_VALUE);
    let mut buf = BytesMut::new();
    let mut outcomes = Vec::new();
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    cuts.push(input.len());
    cuts.sort_unstable();
    let mut fed = 0;
    for cut in cuts {
        buf.extend_from_slice(&input[fed..cut]);
        fed = cut;
        loop {
            match parser.parse(&mut buf) {
                ParseOutcome::NeedMore => {
                    assert!(
                        buf.len() < parser.max_pending_bytes(),
                        "buffered {} bytes",
                        buf.len()
                    );
                    break;
                }
                outcome @ ParseOutcome::Error(ParseError::Fatal) => {
                    outcomes.push(outcome);
                    return outcomes;
                }
                outcome => outcomes.push(outcome),
            }
        }
    }
    outcomes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_split_parses_like_the_whole(input in stream_strategy(), cuts in prop::collection::vec(any::<usize>(), 0..40)) {
        let whole = parse_in_pieces(&input, &[]);
        prop_assert_eq!(parse_in_pieces(&input, &cuts), whole.clone());
        let byte_by_byte: Vec<usize> = (0..input.len()).collect();
        prop_assert_eq!(parse_in_pieces(&input, &byte_by_byte), whole);
    }

    #[test]
    fn arbitrary_bytes_never_panic_nor_overbuffer(
        input in prop::collection::vec(prop_oneof![
            3 => any::<u8>(),
            2 => prop::sample::select(b"\r\n 0123456789setcasgetmdeletnoreplysessionregister".to_vec()),
        ], 0..4096),
        cuts in prop::collection::vec(any::<usize>(), 0..64),
    ) {
        parse_in_pieces(&input, &cuts);
        let _ = Proposal::decode(&Bytes::from(input.clone()));
        let _ = Store::restore(&input);
    }

    #[test]
    fn proposals_roundtrip(
        stamp_ms in any::<u64>(),
        command in prop_oneof![4 => command_strategy(), 1 => Just(Command::Register)],
        session in proptest::option::of((1u64..=1 << 62, 1u64..=1 << 62)),
    ) {
        // Only a client's writes belong to a session.
        let session = session
            .filter(|_| !matches!(command, Command::Expire | Command::Register))
            .map(|(session, seq)| raftkv_kv::protocol::SessionSeq { session, seq });
        let proposal = Proposal { stamp_ms, session, command };
        let mut out = BytesMut::new();
        proposal.encode(&mut out);
        prop_assert_eq!(Proposal::decode(&out.freeze()), Ok(proposal));
    }
}

// ---------- the store against a model ----------

/// Any command, transactions included.
fn command_strategy() -> impl Strategy<Value = Command> {
    let key = || "[a-c]{1,2}".prop_map(Bytes::from);
    let op = prop_oneof![
        3 => single_command_strategy()
            .prop_filter("a transaction holds client writes only", |c| *c != Command::Expire)
            .prop_map(TxOp::Write),
        1 => key().prop_map(TxOp::Get),
        1 => key().prop_map(TxOp::Pttl),
    ];
    let transaction = (
        prop::collection::vec((key(), 0u64..40), 0..3),
        prop::collection::vec(op, 0..4),
    )
        .prop_map(|(watches, ops)| Command::Transaction {
            watches: watches
                .into_iter()
                .map(|(key, version)| Watch { key, version })
                .collect(),
            ops,
        });
    prop_oneof![12 => single_command_strategy(), 1 => transaction]
}

const TTL_CONDITIONS: [TtlCondition; 6] = [
    TtlCondition::Always,
    TtlCondition::IfNone,
    TtlCondition::IfSome,
    TtlCondition::IfLater,
    TtlCondition::IfEarlier,
    TtlCondition::IfSomeAndEarlier,
];

fn single_command_strategy() -> impl Strategy<Value = Command> {
    let key = "[a-c]{1,2}".prop_map(Bytes::from);
    let value = prop::collection::vec(any::<u8>(), 0..8).prop_map(Bytes::from);
    prop_oneof![
        4 => (key.clone(), 0u32..4, value.clone()).prop_map(|(key, exptime, value)| Command::Set { key, exptime, value }),
        3 => (key.clone(), 0u32..4, 0u64..40, value.clone()).prop_map(|(key, exptime, version, value)| Command::Cas { key, exptime, version, value }),
        2 => key.clone().prop_map(|key| Command::Delete { key }),
        1 => Just(Command::Expire),
        2 => (key.clone(), -3i64..4).prop_map(|(key, by)| Command::IncrBy { key, by }),
        1 => (key.clone(), value.clone()).prop_map(|(key, value)| Command::Append { key, value }),
        1 => (prop::collection::vec((key.clone(), value.clone()), 1..3), any::<bool>())
            .prop_map(|(pairs, nx)| Command::MSet { pairs, nx }),
        2 => (key.clone(), value, 0u8..3, any::<bool>(), 0u8..4, 1u64..3000)
            .prop_map(|(key, value, condition, get, kind, ms)| Command::SetWith {
                key,
                value,
                condition: [SetCondition::Always, SetCondition::IfAbsent, SetCondition::IfPresent]
                    [condition as usize],
                get,
                expiry: [SetExpiry::Never, SetExpiry::Keep, SetExpiry::AfterMs(ms), SetExpiry::AtMs(ms)]
                    [kind as usize],
            }),
        1 => key.clone().prop_map(|key| Command::GetDel { key }),
        2 => (key.clone(), 0u8..3, 1u64..3000, 0usize..6).prop_map(|(key, kind, ms, condition)| Command::SetTtl {
            key,
            expiry: [SetExpiry::Never, SetExpiry::AfterMs(ms), SetExpiry::AtMs(ms)][kind as usize],
            condition: TTL_CONDITIONS[condition],
        }),
        1 => (key.clone(), 0u8..3, 1u64..3000).prop_map(|(key, kind, ms)| Command::GetEx {
            key,
            expiry: [SetExpiry::Never, SetExpiry::AfterMs(ms), SetExpiry::AtMs(ms)][kind as usize],
        }),
        1 => (key.clone(), 0u32..6, prop::collection::vec(any::<u8>(), 0..4).prop_map(Bytes::from))
            .prop_map(|(key, offset, value)| Command::SetRange { key, offset, value }),
        1 => (key.clone(), prop::sample::select(vec![0.5, -1.25, 3.0, 0.1, 1e300]))
            .prop_map(|(key, by)| Command::incr_by_float(key, by)),
        1 => (key.clone(), key, any::<bool>()).prop_map(|(from, to, nx)| Command::Rename { from, to, nx }),
        1 => Just(Command::Flush),
    ]
}

#[derive(Debug, Clone)]
enum Step {
    /// Apply at a stamp `delta_ms` after the previous one (possibly before it: a lagging leader).
    Apply {
        delta_ms: i64,
        command: Command,
        cas_current: bool,
    },
    Read {
        delta_ms: i64,
        key: Bytes,
        meta: bool,
    },
    /// KEYS with a pattern, compared as a sorted list.
    Keys { delta_ms: i64, pattern: Bytes },
}

fn step_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (-500i64..1500, command_strategy(), any::<bool>())
            .prop_map(|(delta_ms, command, cas_current)| Step::Apply { delta_ms, command, cas_current }),
        1 => (-500i64..1500, "[a-c]{1,2}".prop_map(Bytes::from), any::<bool>())
            .prop_map(|(delta_ms, key, meta)| Step::Read { delta_ms, key, meta }),
        1 => (-500i64..1500, prop::sample::select(vec!["*", "a*", "?", "[ab]c", "*a"]))
            .prop_map(|(delta_ms, pattern)| Step::Keys { delta_ms, pattern: Bytes::from_static(pattern.as_bytes()) }),
    ]
}

/// The simplest possible statement of the semantics: a map plus the latest stamp.
#[derive(Default)]
struct Model {
    /// key -> (version, expires_at_ms or None, value)
    entries: BTreeMap<Bytes, (u64, Option<u64>, Bytes)>,
    clock_ms: u64,
}

impl Model {
    fn live(&self, key: &Bytes, now_ms: u64) -> Option<&(u64, Option<u64>, Bytes)> {
        self.entries
            .get(key)
            .filter(|(_, expires, _)| expires.is_none_or(|at| now_ms < at))
    }

    fn apply(&mut self, index: u64, stamp_ms: u64, command: &Command) -> Reply {
        self.clock_ms = self.clock_ms.max(stamp_ms);
        let now = self.clock_ms;
        let expiry = |exptime: u32| (exptime > 0).then(|| now + u64::from(exptime) * 1000);
        match command {
            Command::Set {
                key,
                exptime,
                value,
            } => {
                self.entries
                    .insert(key.clone(), (index, expiry(*exptime), value.clone()));
                Reply::Ok { version: index }
            }
            Command::Cas {
                key,
                exptime,
                version,
                value,
            } => match self.live(key, now) {
                None => Reply::ErrNotFound,
                Some((current, _, _)) if current != version => Reply::ErrVersion,
                Some(_) => {
                    self.entries
                        .insert(key.clone(), (index, expiry(*exptime), value.clone()));
                    Reply::Ok { version: index }
                }
            },
            Command::Delete { key } => {
                let was_live = self.live(key, now).is_some();
                self.entries.remove(key);
                if was_live {
                    Reply::Deleted
                } else {
                    Reply::ErrNotFound
                }
            }
            Command::Expire => {
                self.entries
                    .retain(|_, (_, expires, _)| expires.is_none_or(|at| at > now));
                Reply::Ok { version: index }
            }
            // Sessions are modelled in tests/sessions.rs; here they leave the keys alone.
            Command::Register => Reply::Session { id: index },
            Command::IncrBy { key, by } => {
                let (current, expires) = match self.live(key, now) {
                    Some((_, expires, value)) => (Some(value.clone()), *expires),
                    None => (None, None),
                };
                let parsed = match &current {
                    None => Some(0i64),
                    Some(value) => std::str::from_utf8(value)
                        .ok()
                        .filter(|t| {
                            *t == t.parse::<i64>().map(|n| n.to_string()).unwrap_or_default()
                        })
                        .and_then(|t| t.parse().ok()),
                };
                match parsed.map(|n| n.checked_add(*by)) {
                    None => Reply::ErrValue {
                        message: "value is not an integer or out of range".into(),
                    },
                    Some(None) => Reply::ErrValue {
                        message: "increment or decrement would overflow".into(),
                    },
                    Some(Some(next)) => {
                        let value = Bytes::from(next.to_string());
                        self.entries.insert(key.clone(), (index, expires, value));
                        Reply::Integer { value: next }
                    }
                }
            }
            Command::Append { key, value } => {
                let (mut grown, expires) = match self.live(key, now) {
                    Some((_, expires, current)) => (current.to_vec(), *expires),
                    None => (Vec::new(), None),
                };
                grown.extend_from_slice(value);
                let len = grown.len() as i64;
                self.entries
                    .insert(key.clone(), (index, expires, Bytes::from(grown)));
                Reply::Integer { value: len }
            }
            Command::SetWith {
                key,
                value,
                condition,
                get,
                expiry,
            } => {
                let old = self.live(key, now).cloned();
                let applies = match condition {
                    SetCondition::Always => true,
                    SetCondition::IfAbsent => old.is_none(),
                    SetCondition::IfPresent => old.is_some(),
                };
                if applies {
                    let expires = match expiry {
                        SetExpiry::Never => None,
                        SetExpiry::Keep => old.as_ref().and_then(|(_, at, _)| *at),
                        SetExpiry::AfterMs(ms) => Some(now + ms),
                        SetExpiry::AtMs(at) => Some(*at),
                    };
                    self.entries
                        .insert(key.clone(), (index, expires, value.clone()));
                }
                match (get, old, applies) {
                    (true, Some((_, _, value)), _) => Reply::Value { value },
                    (true, None, _) | (false, _, false) => Reply::ErrNotFound,
                    (false, _, true) => Reply::Ok { version: index },
                }
            }
            Command::SetTtl {
                key,
                expiry,
                condition,
            } => {
                let Some((_, expires, value)) = self.live(key, now).cloned() else {
                    return Reply::Integer { value: 0 };
                };
                let at = match expiry {
                    SetExpiry::Never if expires.is_none() => return Reply::Integer { value: 0 },
                    SetExpiry::Never => None,
                    SetExpiry::Keep => return Reply::ErrCmdErr,
                    SetExpiry::AfterMs(ms) => Some(now + ms),
                    SetExpiry::AtMs(at) => Some(*at),
                };
                // No expiry is later than any instant.
                let later = |a: Option<u64>, b: Option<u64>| match (a, b) {
                    (None, _) => false,
                    (Some(_), None) => true,
                    (Some(a), Some(b)) => a < b,
                };
                let allowed = match condition {
                    TtlCondition::Always => true,
                    TtlCondition::IfNone => expires.is_none(),
                    TtlCondition::IfSome => expires.is_some(),
                    TtlCondition::IfLater => later(expires, at),
                    TtlCondition::IfEarlier => later(at, expires),
                    TtlCondition::IfSomeAndEarlier => expires.is_some() && later(at, expires),
                };
                if !allowed {
                    return Reply::Integer { value: 0 };
                }
                if at.is_some_and(|at| at <= now) {
                    self.entries.remove(key);
                } else {
                    self.entries.insert(key.clone(), (index, at, value));
                }
                Reply::Integer { value: 1 }
            }
            Command::GetDel { key } => {
                let old = self.live(key, now).map(|(_, _, value)| value.clone());
                self.entries.remove(key);
                match old {
                    Some(value) => Reply::Value { value },
                    None => Reply::ErrNotFound,
                }
            }
            Command::GetEx { key, expiry } => {
                let Some((_, expires, value)) = self.live(key, now).cloned() else {
                    return Reply::ErrNotFound;
                };
                let at = match expiry {
                    SetExpiry::Never if expires.is_none() => return Reply::Value { value },
                    SetExpiry::Never => None,
                    SetExpiry::Keep => return Reply::ErrCmdErr,
                    SetExpiry::AfterMs(ms) => Some(now + ms),
                    SetExpiry::AtMs(at) => Some(*at),
                };
                if at.is_some_and(|at| at <= now) {
                    self.entries.remove(key);
                } else {
                    self.entries.insert(key.clone(), (index, at, value.clone()));
                }
                Reply::Value { value }
            }
            Command::SetRange { key, offset, value } => {
                let (mut grown, expires) = match self.live(key, now) {
                    Some((_, expires, current)) => (current.to_vec(), *expires),
                    None => (Vec::new(), None),
                };
                if value.is_empty() {
                    return Reply::Integer {
                        value: grown.len() as i64,
                    };
                }
                let end = *offset as usize + value.len();
                if grown.len() < end {
                    grown.resize(end, 0);
                }
                grown[*offset as usize..end].copy_from_slice(value);
                let len = grown.len() as i64;
                self.entries
                    .insert(key.clone(), (index, expires, Bytes::from(grown)));
                Reply::Integer { value: len }
            }
            Command::IncrByFloat { key, by_bits } => {
                let (current, expires) = match self.live(key, now) {
                    Some((_, expires, value)) => (Some(value.clone()), *expires),
                    None => (None, None),
                };
                let parsed = match &current {
                    None => Some(0.0),
                    Some(value) => raftkv_kv::store::parse_float(value),
                };
                let Some(parsed) = parsed else {
                    return Reply::ErrValue {
                        message: "value is not a valid float".into(),
                    };
                };
                let next = parsed + f64::from_bits(*by_bits);
                if !next.is_finite() {
                    return Reply::ErrValue {
                        message: "increment would produce NaN or Infinity".into(),
                    };
                }
                let value = Bytes::from(format!("{}", next + 0.0));
                self.entries
                    .insert(key.clone(), (index, expires, value.clone()));
                Reply::Value { value }
            }
            Command::Rename { from, to, nx } => {
                let Some((_, expires, value)) = self.live(from, now).cloned() else {
                    return Reply::ErrNotFound;
                };
                if *nx && self.live(to, now).is_some() {
                    return Reply::Integer { value: 0 };
                }
                if from != to {
                    self.entries.remove(from);
                    self.entries.insert(to.clone(), (index, expires, value));
                }
                if *nx {
                    Reply::Integer {
                        value: i64::from(from != to),
                    }
                } else {
                    Reply::Ok { version: index }
                }
            }
            Command::Flush => {
                self.entries.clear();
                Reply::Ok { version: index }
            }
            Command::Transaction { watches, ops } => {
                let unchanged = watches.iter().all(|watch| {
                    self.live(&watch.key, now)
                        .map_or(0, |(version, _, _)| *version)
                        == watch.version
                });
                if !unchanged {
                    return Reply::ExecAborted;
                }
                let replies = ops
                    .iter()
                    .map(|op| match op {
                        TxOp::Write(command) => self.apply(index, now, command),
                        TxOp::Get(key) => self.read(key, false, now),
                        TxOp::Pttl(key) => Reply::Integer {
                            value: match self.live(key, now) {
                                None => -2,
                                Some((_, None, _)) => -1,
                                Some((_, Some(at), _)) => (at - now) as i64,
                            },
                        },
                    })
                    .collect();
                Reply::Multi { replies }
            }
            Command::MSet { pairs, nx } => {
                if *nx && pairs.iter().any(|(key, _)| self.live(key, now).is_some()) {
                    return Reply::Integer { value: 0 };
                }
                for (key, value) in pairs {
                    self.entries
                        .insert(key.clone(), (index, None, value.clone()));
                }
                if *nx {
                    Reply::Integer { value: 1 }
                } else {
                    Reply::Ok { version: index }
                }
            }
        }
    }

    fn read(&self, key: &Bytes, meta: bool, now_ms: u64) -> Reply {
        let now = now_ms.max(self.clock_ms);
        match self.live(key, now) {
            None => Reply::ErrNotFound,
            Some((version, expires, value)) if meta => Reply::ValueMeta {
                version: *version,
                exptime: expires.map_or(0, |at| (at - now).div_ceil(1000)),
                value: value.clone(),
            },
            Some((_, _, value)) => Reply::Value {
                value: value.clone(),
            },
        }
    }
}

fn reads_agree(store: &Store, other: &Store, now_ms: u64) -> bool {
    ["a", "b", "c", "aa", "ab", "ba", "cc"].iter().all(|k| {
        let key = Bytes::from_static(k.as_bytes());
        [Request::Get { key: key.clone() }, Request::Getm { key }]
            .iter()
            .all(|request| store.read(request, now_ms) == other.read(request, now_ms))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn store_agrees_with_model_and_snapshots_restore(steps in prop::collection::vec(step_strategy(), 0..80)) {
        let mut store = Store::new();
        let mut model = Model::default();
        let mut index = 0u64;
        let mut stamp_ms = 1_000u64;
        for step in steps {
            match step {
                Step::Apply { delta_ms, mut command, cas_current } => {
                    stamp_ms = stamp_ms.saturating_add_signed(delta_ms);
                    index += 1;
                    if let Command::Cas { key, version, .. } = &mut command {
                        if let (true, Some((current, _, _))) = (cas_current, model.entries.get(key)) {
                            *version = *current;
                        }
                    }
                    let expected = model.apply(index, stamp_ms, &command);
                    prop_assert_eq!(store.apply(index, stamp_ms, &command), expected);
                    prop_assert_eq!(store.len(), model.entries.len());
                    let model_expiring = model.entries.values().filter(|(_, expires, _)| expires.is_some()).count();
                    prop_assert_eq!(store.expiring_len(), model_expiring);
                    prop_assert_eq!(store.has_expired(stamp_ms.max(model.clock_ms)),
                        model.entries.values().any(|(_, expires, _)| expires.is_some_and(|at| at <= stamp_ms.max(model.clock_ms))));
                }
                Step::Read { delta_ms, key, meta } => {
                    let now_ms = stamp_ms.saturating_add_signed(delta_ms);
                    let request = if meta { Request::Getm { key: key.clone() } } else { Request::Get { key: key.clone() } };
                    prop_assert_eq!(store.read(&request, now_ms), model.read(&key, meta, now_ms));
                }
                Step::Keys { delta_ms, pattern } => {
                    let now_ms = stamp_ms.saturating_add_signed(delta_ms);
                    let Reply::Keys { mut keys, .. } = store.read(&Request::Keys { pattern: pattern.clone() }, now_ms) else {
                        panic!("KEYS answers keys");
                    };
                    keys.sort();
                    let now = now_ms.max(model.clock_ms);
                    let expected: Vec<Bytes> = model.entries.keys()
                        .filter(|key| model.live(key, now).is_some() && raftkv_kv::glob::matches(&pattern, key))
                        .cloned()
                        .collect();
                    prop_assert_eq!(keys, expected);
                }
            }
        }
        let mut image = Vec::new();
        store.snapshot(&mut image);
        let restored = Store::restore(&image).expect("own snapshot restores");
        prop_assert_eq!(restored.digest(), store.digest());
        prop_assert_eq!(restored.len(), store.len());
        prop_assert_eq!(restored.applied_index(), store.applied_index());
        for now_ms in [0, stamp_ms, stamp_ms + 999, stamp_ms + 1000, stamp_ms + 5000] {
            prop_assert!(reads_agree(&store, &restored, now_ms));
        }
        // Both continue identically.
        let mut restored = restored;
        let expire_at = stamp_ms + 2000;
        prop_assert_eq!(store.apply(index + 1, expire_at, &Command::Expire), restored.apply(index + 1, expire_at, &Command::Expire));
        prop_assert_eq!(restored.digest(), store.digest());
    }
}

// ---------- snapshot isolation of clones ----------

/// Keys of the prefill (`k0`..) and a few short ones, so shards hold several keys each and
/// writes after a clone copy shards that also hold untouched keys.
fn isolation_key() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        1 => "[a-c]{1,2}".prop_map(Bytes::from),
        3 => (0u32..PREFILL).prop_map(|i| Bytes::from(format!("k{i}"))),
    ]
}

const PREFILL: u32 = 3000;

fn isolation_command() -> impl Strategy<Value = (i64, Command)> {
    let value = prop::collection::vec(any::<u8>(), 0..8).prop_map(Bytes::from);
    let command = prop_oneof![
        4 => (isolation_key(), 0u32..4, value.clone()).prop_map(|(key, exptime, value)| Command::Set { key, exptime, value }),
        2 => (isolation_key(), 0u32..4, 0u64..4000, value).prop_map(|(key, exptime, version, value)| Command::Cas { key, exptime, version, value }),
        3 => isolation_key().prop_map(|key| Command::Delete { key }),
        1 => Just(Command::Expire),
    ];
    (-500i64..1500, command)
}

fn isolation_keys() -> impl Iterator<Item = Bytes> {
    ["a", "b", "c", "aa", "ab", "ba", "cc"]
        .into_iter()
        .map(|key| Bytes::from_static(key.as_bytes()))
        .chain((0..PREFILL).map(|i| Bytes::from(format!("k{i}"))))
}

/// The same observable state: digest, counts, expiry and every read at several instants.
fn same_state(a: &Store, b: &Store, stamp_ms: u64) -> Result<(), TestCaseError> {
    prop_assert_eq!(a.digest(), b.digest());
    prop_assert_eq!(a.len(), b.len());
    prop_assert_eq!(a.expiring_len(), b.expiring_len());
    prop_assert_eq!(a.applied_index(), b.applied_index());
    prop_assert_eq!(a.clock_ms(), b.clock_ms());
    for now_ms in [
        0,
        stamp_ms,
        stamp_ms + 999,
        stamp_ms + 1000,
        stamp_ms + 5000,
    ] {
        prop_assert_eq!(a.has_expired(now_ms), b.has_expired(now_ms));
        for key in isolation_keys() {
            for request in [Request::Get { key: key.clone() }, Request::Getm { key }] {
                prop_assert_eq!(a.read(&request, now_ms), b.read(&request, now_ms));
            }
        }
    }
    Ok(())
}

struct Run {
    index: u64,
    stamp_ms: u64,
}

impl Run {
    fn apply(&mut self, stores: &mut [&mut Store], (delta_ms, command): &(i64, Command)) {
        self.index += 1;
        self.stamp_ms = self.stamp_ms.saturating_add_signed(*delta_ms);
        let replies: Vec<Reply> = stores
            .iter_mut()
            .map(|store| store.apply(self.index, self.stamp_ms, command))
            .collect();
        assert!(replies.windows(2).all(|pair| pair[0] == pair[1]));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// A clone taken mid-stream is a snapshot: later applies to the original (which copy shared
    /// shards on write) never show through it, applies to the clone never show in the original,
    /// and restore(snapshot(clone)) is the store as it was at the clone.
    #[test]
    fn clones_are_isolated_snapshots(
        prefill in 0..PREFILL,
        before in prop::collection::vec(isolation_command(), 0..60),
        after in prop::collection::vec(isolation_command(), 0..120),
    ) {
        let mut store = Store::new();
        // Replays exactly what `store` applied up to the clone, without ever being cloned.
        let mut reference = Store::new();
        let mut run = Run { index: 0, stamp_ms: 1_000 };
        for i in 0..prefill {
            let command = Command::Set {
                key: Bytes::from(format!("k{i}")),
                exptime: i % 3,
                value: Bytes::from(vec![i as u8; (i % 7) as usize]),
            };
            run.apply(&mut [&mut store, &mut reference], &(0, command));
        }
        for command in &before {
            run.apply(&mut [&mut store, &mut reference], command);
        }
        let at_clone = (run.index, run.stamp_ms);
        let mut clone = store.clone();
        same_state(&clone, &reference, run.stamp_ms)?;

        // The original moves on; the clone must not.
        for command in &after {
            run.apply(&mut [&mut store], command);
        }
        same_state(&clone, &reference, at_clone.1)?;

        let mut image = Vec::new();
        clone.snapshot(&mut image);
        let restored = Store::restore(&image).expect("own snapshot restores");
        same_state(&restored, &reference, at_clone.1)?;

        // The clone is a full store: replaying the same commands brings it to the original's
        // state, and writes to it (copying the shards it still shares) leave the original alone.
        let final_digest = store.digest();
        let mut replay = Run { index: at_clone.0, stamp_ms: at_clone.1 };
        for command in &after {
            replay.apply(&mut [&mut clone, &mut reference], command);
        }
        same_state(&clone, &store, run.stamp_ms)?;
        same_state(&reference, &store, run.stamp_ms)?;
        let mut other = clone.clone();
        replay.apply(&mut [&mut other], &(0, Command::Set { key: Bytes::from_static(b"k0"), exptime: 0, value: Bytes::from_static(b"new") }));
        replay.apply(&mut [&mut other], &(5_000, Command::Expire));
        prop_assert_eq!(store.digest(), final_digest);
        prop_assert_eq!(clone.digest(), final_digest);
    }
}

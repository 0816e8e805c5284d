//! Client sessions in the state machine: duplicates answered from the saved reply, old and far-ahead
//! sequence numbers refused, expiry and eviction on the replicated clock, snapshots — each as a unit
//! test, then all of them against a model under random sequences of operations.

use bytes::Bytes;
use proptest::prelude::*;
use raftkv_kv::protocol::SessionSeq;
use raftkv_kv::{Command, Proposal, Reply, Request, SessionLimits, Store, MAX_SEQUENCE_STEP};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn set(key: &str, value: &str) -> Command {
    Command::Set {
        key: b(key),
        exptime: 0,
        value: b(value),
    }
}

fn cas(key: &str, version: u64, value: &str) -> Command {
    Command::Cas {
        key: b(key),
        exptime: 0,
        version,
        value: b(value),
    }
}

/// A store and the next index and stamp to apply at.
struct Replica {
    store: Store,
    index: u64,
    stamp_ms: u64,
}

impl Replica {
    fn new(limits: SessionLimits) -> Replica {
        Replica {
            store: Store::with_session_limits(limits),
            index: 0,
            stamp_ms: 1_000,
        }
    }

    fn apply(&mut self, session: Option<SessionSeq>, command: Command) -> Reply {
        self.index += 1;
        let proposal = Proposal {
            stamp_ms: self.stamp_ms,
            session,
            command,
        };
        self.store.apply_proposal(self.index, &proposal)
    }

    fn register(&mut self) -> u64 {
        match self.apply(None, Command::Register) {
            Reply::Session { id } => id,
            other => panic!("register answered {other:?}"),
        }
    }

    fn write(&mut self, session: u64, seq: u64, command: Command) -> Reply {
        self.apply(Some(SessionSeq { session, seq }), command)
    }

    fn getm(&self, key: &str) -> Reply {
        self.store
            .read(&Request::Getm { key: b(key) }, self.stamp_ms)
    }
}

/// A store with one session whose write `seq` set `k` to `a` at index 2: the replica, the session's
/// id, and `getm k` after it.
fn one_write_in_a_session(seq: u64) -> (Replica, u64, Reply) {
    let mut replica = Replica::new(SessionLimits::DEFAULT);
    let id = replica.register();
    assert_eq!(
        replica.write(id, seq, set("k", "a")),
        Reply::Ok { version: 2 }
    );
    let before = replica.getm("k");
    (replica, id, before)
}

#[test]
fn a_session_id_is_the_index_of_its_registration() {
    let mut replica = Replica::new(SessionLimits::DEFAULT);
    replica.apply(None, set("x", "1"));
    assert_eq!(replica.register(), 2);
    assert_eq!(replica.register(), 3);
    assert_eq!(replica.store.sessions_len(), 2);
}

#[test]
fn a_retried_write_is_answered_with_the_first_reply_and_applied_once() {
    let (mut replica, id, before) = one_write_in_a_session(1);
    assert_eq!(
        replica.write(id, 1, set("k", "a")),
        Reply::Ok { version: 2 }
    );
    assert_eq!(replica.getm("k"), before, "the duplicate changed nothing");
    // The case the issue names: a retried cas that had succeeded must not answer ERR_VERSION.
    assert_eq!(
        replica.write(id, 2, cas("k", 2, "b")),
        Reply::Ok { version: 4 }
    );
    assert_eq!(
        replica.write(id, 2, cas("k", 2, "b")),
        Reply::Ok { version: 4 }
    );
    // Without a session, the same retry fails.
    assert_eq!(replica.apply(None, cas("k", 2, "b")), Reply::ErrVersion);
    // Failures are saved too: a retried failed cas stays failed.
    assert_eq!(replica.write(id, 3, cas("k", 99, "c")), Reply::ErrVersion);
    replica.apply(None, set("k", "d"));
    assert_eq!(replica.write(id, 3, cas("k", 99, "c")), Reply::ErrVersion);
    let delete = Command::Delete { key: b("k") };
    assert_eq!(replica.write(id, 4, delete.clone()), Reply::Deleted);
    assert_eq!(replica.write(id, 4, delete), Reply::Deleted);
}

#[test]
fn another_write_with_the_newest_sequence_number_is_refused_not_answered() {
    let (mut replica, id, before) = one_write_in_a_session(1);
    for other in [
        set("k", "b"),
        set("j", "a"),
        cas("k", 2, "a"),
        Command::Delete { key: b("k") },
    ] {
        assert_eq!(replica.write(id, 1, other), Reply::ErrSequence { last: 1 });
    }
    assert_eq!(replica.getm("k"), before);
    assert_eq!(
        replica.write(id, 1, set("k", "a")),
        Reply::Ok { version: 2 }
    );
}

#[test]
fn older_and_far_ahead_sequence_numbers_are_refused_and_change_nothing() {
    let (mut replica, id, before) = one_write_in_a_session(5);
    assert_eq!(
        replica.write(id, 4, set("k", "old")),
        Reply::ErrSequence { last: 5 }
    );
    assert_eq!(
        replica.write(id, 5 + MAX_SEQUENCE_STEP + 1, set("k", "far")),
        Reply::ErrSequence { last: 5 }
    );
    assert_eq!(replica.getm("k"), before);
    // A gap within the step is fine (a write given up on, never applied, leaves one).
    assert_eq!(
        replica.write(id, 5 + MAX_SEQUENCE_STEP, set("k", "b")),
        Reply::Ok { version: 5 }
    );
}

#[test]
fn unknown_sessions_are_refused_and_change_nothing() {
    let mut replica = Replica::new(SessionLimits::DEFAULT);
    replica.apply(None, set("k", "a"));
    let before = replica.getm("k");
    for session in [1, 2, 99, u64::MAX] {
        assert_eq!(
            replica.write(session, 1, set("k", "b")),
            Reply::ErrSessionExpired
        );
    }
    assert_eq!(replica.getm("k"), before);
    assert_eq!(replica.store.sessions_len(), 0);
    // A registration or an expiry inside a session is not a client's write.
    let id = replica.register();
    assert_eq!(replica.write(id, 1, Command::Register), Reply::ErrCmdErr);
    assert_eq!(replica.write(id, 1, Command::Expire), Reply::ErrCmdErr);
}

#[test]
fn idle_sessions_expire_on_the_replicated_clock() {
    let limits = SessionLimits {
        max_sessions: 100,
        idle_ms: 10_000,
    };
    let mut replica = Replica::new(limits);
    let idle = replica.register();
    let busy = replica.register();
    for step in 1..=3 {
        replica.stamp_ms += 6_000;
        assert_eq!(
            replica.write(busy, step, set("k", "v")),
            Reply::Ok {
                version: replica.index
            }
        );
    }
    assert_eq!(
        replica.write(idle, 1, set("k", "v")),
        Reply::ErrSessionExpired
    );
    assert!(replica.store.session_is_gone(SessionSeq {
        session: idle,
        seq: 1
    }));
    assert!(!replica.store.session_is_gone(SessionSeq {
        session: busy,
        seq: 4
    }));
    // Time only moves with applied stamps: a stamp from behind (a lagging leader) expires nothing.
    replica.stamp_ms = 0;
    assert_eq!(
        replica.write(busy, 4, set("k", "v")),
        Reply::Ok { version: 7 }
    );
}

#[test]
fn a_full_table_evicts_the_least_recently_active_session() {
    let limits = SessionLimits {
        max_sessions: 3,
        idle_ms: u64::MAX / 2,
    };
    let mut replica = Replica::new(limits);
    let first = replica.register();
    let second = replica.register();
    let third = replica.register();
    replica.stamp_ms += 1;
    replica.write(first, 1, set("k", "v"));
    let fourth = replica.register();
    assert_eq!(replica.store.sessions_len(), 3);
    assert_eq!(
        replica.write(second, 1, set("k", "v")),
        Reply::ErrSessionExpired
    );
    for id in [first, third, fourth] {
        assert!(
            !replica.store.session_is_gone(SessionSeq {
                session: id,
                seq: 2
            }),
            "session {id}"
        );
    }
}

#[test]
fn sessions_survive_a_snapshot() {
    let mut replica = Replica::new(SessionLimits::DEFAULT);
    let id = replica.register();
    replica.write(id, 1, set("k", "a"));
    let mut image = Vec::new();
    replica.store.snapshot(&mut image);
    let mut restored = Replica {
        store: Store::restore(&image).expect("own snapshot restores"),
        index: replica.index,
        stamp_ms: replica.stamp_ms,
    };
    assert_eq!(restored.store.digest(), replica.store.digest());
    assert_eq!(
        restored.write(id, 1, set("k", "a")),
        Reply::Ok { version: 2 }
    );
    assert_eq!(
        restored.write(id, 2, set("k", "b")),
        Reply::Ok { version: 4 }
    );
    // A damaged session table is refused, not half-restored.
    let mut damaged = image.clone();
    let session_table = image.len() - 4 - (8 + 8 * 4 + 1 + 8);
    damaged[session_table] = 9;
    assert!(Store::restore(&damaged).is_err());
}

// ---------- the table against a model ----------

#[derive(Clone, Debug)]
enum Step {
    Register,
    /// A write in the `pick`-th known session (registered or not), with a sequence number relative to
    /// the session's newest: -1 older, 0 a duplicate, 1.. new, or far ahead.
    Write {
        pick: usize,
        seq: SeqChoice,
        tampered: bool,
    },
    Tick {
        delta_ms: u64,
    },
    SnapshotRoundTrip,
}

#[derive(Clone, Copy, Debug)]
enum SeqChoice {
    Older,
    Same,
    Next(u64),
    FarAhead,
}

fn step_strategy() -> impl Strategy<Value = Step> {
    let seq = prop_oneof![
        1 => Just(SeqChoice::Older),
        2 => Just(SeqChoice::Same),
        5 => (1u64..3).prop_map(SeqChoice::Next),
        1 => Just(SeqChoice::FarAhead),
    ];
    prop_oneof![
        2 => Just(Step::Register),
        8 => (0usize..8, seq, prop::bool::weighted(0.2))
            .prop_map(|(pick, seq, tampered)| Step::Write { pick, seq, tampered }),
        2 => (0u64..4_000).prop_map(|delta_ms| Step::Tick { delta_ms }),
        1 => Just(Step::SnapshotRoundTrip),
    ]
}

/// What a session should hold: newest sequence number, its reply, when it was last active.
#[derive(Clone, Debug)]
struct ModelSession {
    id: u64,
    last_seq: u64,
    command: Option<Command>,
    reply: Option<Reply>,
    active_ms: u64,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The store with sessions against (a) a model of the table and (b) a plain store that applies
    /// exactly the writes the model admits: the keys agree after every step.
    #[test]
    fn sessions_match_the_model(steps in prop::collection::vec(step_strategy(), 1..120)) {
        let limits = SessionLimits { max_sessions: 4, idle_ms: 10_000 };
        let mut replica = Replica::new(limits);
        let mut plain = Store::new();
        let mut model: Vec<ModelSession> = Vec::new();
        let mut known: Vec<u64> = vec![1_000_000];
        for step in steps {
            match step {
                Step::Register => {
                    if model.len() >= limits.max_sessions {
                        let oldest = (0..model.len())
                            .min_by_key(|&i| (model[i].active_ms, model[i].id))
                            .expect("table is full");
                        model.remove(oldest);
                    }
                    let id = replica.register();
                    plain.skip_index(id);
                    model.push(ModelSession { id, last_seq: 0, command: None, reply: None, active_ms: replica.stamp_ms });
                    known.push(id);
                }
                Step::Write { pick, seq, tampered } => {
                    let id = known[pick % known.len()];
                    let entry = model.iter().position(|s| s.id == id);
                    let last = entry.map_or(0, |i| model[i].last_seq);
                    let seq = match seq {
                        SeqChoice::Older => last.saturating_sub(1).max(1),
                        SeqChoice::Same => last.max(1),
                        SeqChoice::Next(step) => last + step,
                        SeqChoice::FarAhead => last + MAX_SEQUENCE_STEP + 1,
                    };
                    // A retry carries the same command; a tampered one another command.
                    let value = if tampered { "tampered".to_string() } else { format!("v{id}-{seq}") };
                    let command = set(&format!("k{}", seq % 3), &value);
                    let got = replica.write(id, seq, command.clone());
                    let expected = match entry {
                        None => Reply::ErrSessionExpired,
                        Some(i) if seq == last && model[i].command.as_ref() == Some(&command) => {
                            model[i].reply.clone().unwrap_or(Reply::ErrCmdErr)
                        }
                        Some(_) if seq == last => Reply::ErrSequence { last },
                        Some(_) if seq < last || seq - last > MAX_SEQUENCE_STEP => Reply::ErrSequence { last },
                        Some(i) => {
                            let reply = plain.apply(replica.index, replica.stamp_ms, &command);
                            let session = &mut model[i];
                            session.last_seq = seq;
                            session.command = Some(command);
                            session.reply = Some(reply.clone());
                            session.active_ms = replica.stamp_ms;
                            reply
                        }
                    };
                    if plain.applied_index() < replica.index {
                        plain.skip_index(replica.index);
                    }
                    prop_assert_eq!(got, expected);
                }
                Step::Tick { delta_ms } => {
                    replica.stamp_ms += delta_ms;
                    // Expiry happens when an entry with a later stamp is applied.
                    replica.apply(None, Command::Expire);
                    plain.apply(replica.index, replica.stamp_ms, &Command::Expire);
                    let now = replica.stamp_ms;
                    model.retain(|s| s.active_ms + limits.idle_ms >= now);
                }
                Step::SnapshotRoundTrip => {
                    let mut image = Vec::new();
                    replica.store.snapshot(&mut image);
                    let restored = Store::restore_with_session_limits(&image, limits).expect("restores");
                    prop_assert_eq!(restored.digest(), replica.store.digest());
                    replica.store = restored;
                }
            }
            prop_assert_eq!(replica.store.sessions_len(), model.len());
            for key in ["k0", "k1", "k2"] {
                let request = Request::Getm { key: b(key) };
                prop_assert_eq!(
                    replica.store.read(&request, replica.stamp_ms),
                    plain.read(&request, replica.stamp_ms)
                );
            }
        }
    }
}

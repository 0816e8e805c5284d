//! Redis's TTL reads at an exact replicated clock (a clock entry whenever the store's clock lags the
//! leader's wall clock at all). Reads queued behind one clock entry must be satisfied by at most one
//! more, not each propose its own: judged at the time they arrived, not re-judged at the time the
//! entry applied (which, with any commit latency, is always later: a chain of one log round trip
//! per pipelined TTL, every other read and write waiting behind it).

mod common;

use bytes::Bytes;
use raftkv_kv::{Command, Reply, Request};
use raftkv_raft::{Config, Role};
use raftkv_replica::{ClientRequest, Durable, Now, Op, Replica};

fn now(ms: u64) -> Now {
    Now {
        mono_ms: ms,
        wall_ms: 1_780_000_000_000 + ms,
    }
}

/// One persist round: the replica's Ready, then `disk_ms` later every job durable and its messages
/// delivered.
fn round(replica: &mut Replica<u64>, replies: &mut Vec<(u64, Reply)>, ms: &mut u64, disk_ms: u64) {
    replica.advance().unwrap();
    replies.append(&mut replica.outputs().replies);
    *ms += disk_ms;
    replica.advance_clock(now(*ms));
    let jobs: Vec<_> = replica.outputs().persist.drain(..).collect();
    for job in jobs {
        if let Some(last) = job.entries.last() {
            replica
                .persisted(Durable {
                    index: last.index,
                    term: last.term,
                    ..Durable::default()
                })
                .unwrap();
        }
        for msg in job.messages_after_persist {
            replica.step(msg);
        }
    }
    replica.advance().unwrap();
    replies.append(&mut replica.outputs().replies);
}

fn single_node_leader() -> Replica<u64> {
    let mut raft = Config::new(1, vec![1]);
    raft.election_ticks = 3;
    let config = common::replica_config(raft, &[1]);
    let mut replica: Replica<u64> = Replica::new(config, Default::default()).unwrap();
    let mut replies = Vec::new();
    let mut ms = 0;
    while ms < 100 {
        replica.tick(now(ms));
        round(&mut replica, &mut replies, &mut ms, 1);
        if replica.raft().status().role == Role::Leader {
            return replica;
        }
    }
    panic!("no leader");
}

/// `set k 100 v`, answered.
fn set_k_for_100_s(replica: &mut Replica<u64>, replies: &mut Vec<(u64, Reply)>, ms: &mut u64) {
    replica.request(
        now(*ms),
        ClientRequest {
            op: Op::write(Command::Set {
                key: Bytes::from_static(b"k"),
                exptime: 100,
                value: Bytes::from_static(b"v"),
            }),
            handle: 0,
        },
    );
    round(replica, replies, ms, 2);
    assert!(matches!(replies.pop(), Some((0, Reply::Ok { .. }))));
}

#[test]
fn pipelined_ttl_reads_share_their_clock_entries() {
    let mut replica = single_node_leader();
    let mut replies = Vec::new();
    let mut ms = 200;
    set_k_for_100_s(&mut replica, &mut replies, &mut ms);
    // A second later ten TTLs arrive, one a millisecond; each write to the disk takes 2 ms.
    ms += 1_000;
    let before = replica.raft().status().last_index;
    const READS: u64 = 10;
    for handle in 1..=READS {
        ms += 1;
        replica.request(
            now(ms),
            ClientRequest {
                op: Op::Read(Request::Pttl {
                    key: Bytes::from_static(b"k"),
                }),
                handle,
            },
        );
    }
    for _ in 0..100 {
        if replies.len() as u64 == READS {
            break;
        }
        round(&mut replica, &mut replies, &mut ms, 2);
    }
    assert_eq!(replies.len() as u64, READS, "every TTL answered");
    for (_, reply) in &replies {
        assert!(
            matches!(reply, Reply::Integer { value } if (98_900..99_000).contains(value)),
            "{reply:?}"
        );
    }
    let entries = replica.raft().status().last_index - before;
    assert!(entries <= 2, "{entries} clock entries for {READS} TTLs");
}

/// A BACKUP pipelined behind a read that waits for its clock entry waits too: one connection's
/// requests take effect in the order they were sent (it used to be copied at once, before the read).
#[test]
fn a_backup_behind_a_read_waiting_for_the_clock_waits_for_it() {
    let mut replica = single_node_leader();
    let mut replies = Vec::new();
    let mut ms = 200;
    set_k_for_100_s(&mut replica, &mut replies, &mut ms);
    ms += 1_000;
    for (handle, request) in [
        (
            1,
            Request::Pttl {
                key: Bytes::from_static(b"k"),
            },
        ),
        (2, Request::Backup),
    ] {
        replica.request(
            now(ms),
            ClientRequest {
                op: Op::Read(request),
                handle,
            },
        );
    }
    let mut backup_before_read = false;
    for _ in 0..100 {
        replica.advance().unwrap();
        let backed_up = !replica.outputs().backups.is_empty();
        let read_answered = replies.iter().any(|(h, _)| *h == 1)
            || replica.outputs().replies.iter().any(|(h, _)| *h == 1);
        backup_before_read |= backed_up && !read_answered;
        if backed_up {
            break;
        }
        round(&mut replica, &mut replies, &mut ms, 2);
    }
    assert!(
        !backup_before_read,
        "the backup was copied before the read it follows"
    );
    assert!(
        !replica.outputs().backups.is_empty(),
        "the backup was never copied"
    );
}

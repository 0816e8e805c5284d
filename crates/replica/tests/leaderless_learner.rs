//! A learner that knows no leader sends its clients to a voter at once instead of holding them for
//! the leader wait: it cannot be elected, so no election of its own will name a leader, and it may
//! have been removed while it was down and never hear from the leader again (seed 293771: four such
//! nodes held each of a client's requests for two seconds and answered ERR_INTERNAL, for ever).

mod common;

use bytes::Bytes;
use raftkv_kv::{Reply, Request};
use raftkv_raft::{Config, Entry, EntryKind, HardState, InitialState, Membership};
use raftkv_replica::{ClientRequest, Now, Op, Replica};

fn replica_with_membership(id: u64, voters: Vec<u64>, learners: Vec<u64>) -> Replica<u64> {
    let membership = Membership {
        voters,
        learners,
        context: Bytes::new(),
    };
    let initial = InitialState {
        hard_state: HardState {
            term: 2,
            vote: None,
            commit: 1,
        },
        snapshot: None,
        entries: vec![Entry {
            index: 1,
            term: 2,
            kind: EntryKind::Config,
            data: membership.to_bytes(),
        }],
    };
    let mut raft = Config::new(id, Vec::new());
    raft.election_ticks = 10;
    let config = common::replica_config(raft, &[1, 2, 3]);
    Replica::new(config, initial).unwrap()
}

fn get(replica: &mut Replica<u64>, handle: u64) -> Option<Reply> {
    let now = Now {
        mono_ms: 100,
        wall_ms: 1_000_100,
    };
    replica.request(
        now,
        ClientRequest {
            op: Op::Read(Request::Get {
                key: Bytes::from_static(b"k"),
            }),
            handle,
        },
    );
    replica.advance().unwrap();
    replica
        .outputs()
        .replies
        .drain(..)
        .find(|(h, _)| *h == handle)
        .map(|(_, reply)| reply)
}

#[test]
fn a_learner_without_a_leader_redirects_to_each_voter_in_turn() {
    let mut learner = replica_with_membership(3, vec![1, 2], vec![3]);
    assert_eq!(learner.raft().status().leader, None);
    let mut ports = Vec::new();
    for handle in 1..=4 {
        match get(&mut learner, handle) {
            Some(Reply::ErrRedirect { port, .. }) => ports.push(port),
            other => panic!("expected a redirect at once, got {other:?}"),
        }
    }
    ports.sort_unstable();
    assert_eq!(ports, vec![9001, 9001, 9002, 9002], "each voter in turn");
    // What the Redis port relays to, having no redirect to give.
    assert_eq!(learner.voters_to_try(), vec![1, 2]);
}

#[test]
fn a_voter_without_a_leader_still_waits_for_one() {
    let mut voter = replica_with_membership(2, vec![1, 2], vec![3]);
    assert_eq!(get(&mut voter, 1), None, "parked until a leader is known");
    assert!(voter.voters_to_try().is_empty());
}

#[test]
fn a_stale_read_on_a_learner_without_a_leader_is_redirected_too() {
    let mut learner = replica_with_membership(3, vec![1, 2], vec![3]);
    let now = Now {
        mono_ms: 100,
        wall_ms: 1_000_100,
    };
    learner.request(
        now,
        ClientRequest {
            op: Op::StaleRead {
                read: Request::Get {
                    key: Bytes::from_static(b"k"),
                },
                max_lag: 10,
            },
            handle: 7,
        },
    );
    learner.advance().unwrap();
    let reply = learner.outputs().replies.drain(..).find(|(h, _)| *h == 7);
    assert!(
        matches!(reply, Some((_, Reply::ErrRedirect { .. }))),
        "{reply:?}"
    );
}

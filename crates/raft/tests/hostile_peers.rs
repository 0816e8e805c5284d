//! Indexes, terms and counts that arrive from a peer are checked, never trusted: extreme values never
//! panic (debug) or wrap (release), and a bogus rejection hint never pushes a leader's next index for a
//! follower past its own log.

mod harness;

use harness::*;
use raftkv_raft::*;

const MAX: u64 = u64::MAX;

/// An Append from node 2 to node 1 in term 1.
fn append(prev: (Index, Term), entries: Vec<Entry>, commit: Index) -> Message {
    append_msg(2, 1, 1, prev, entries, commit)
}

#[test]
fn a_follower_survives_appends_at_the_end_of_the_index_space() {
    let mut follower = plain(1, 3);
    follower.step(append((MAX, 1), vec![entry(MAX, 1)], MAX));
    follower.step(append((MAX - 1, 1), vec![entry(MAX, 1)], MAX));
    follower.step(append((MAX, MAX), Vec::new(), MAX));
    let _ = flush(&mut follower);
    let status = follower.status();
    assert_eq!(status.last_index, 0, "nothing was appended: {status:?}");
    assert_eq!(status.commit, 0, "nothing was committed: {status:?}");
}

#[test]
fn a_bogus_rejection_hint_never_moves_next_index_past_the_leader_log() {
    let mut leader = plain(1, 3);
    let _ = make_leader(&mut leader);
    let last = leader.status().last_index;
    let term = leader.status().term;
    for (prev_index, hint_index, hint_term) in [(MAX, MAX, 0), (last, MAX, MAX), (MAX, MAX, MAX)] {
        leader.step(msg(
            2,
            1,
            term,
            MessageBody::AppendResponse(AppendResult::Rejected {
                prev_index,
                hint_index,
                hint_term,
            }),
        ));
        let rd = flush(&mut leader);
        for (prev, _, _, _) in appends_to(&all_messages(&rd), 2) {
            assert!(
                prev <= last,
                "after a rejection ({prev_index}, {hint_index}, {hint_term}) the leader probes at {prev}, past its log ending at {last}"
            );
        }
    }
    // Replication to that follower still works: an honest answer is taken.
    leader.step(msg(
        2,
        1,
        term,
        MessageBody::AppendResponse(AppendResult::Accepted { last_index: last }),
    ));
    let _ = flush(&mut leader);
    assert_eq!(leader.match_index(2), Some(last));
}

#[test]
fn an_acknowledgement_past_the_log_counts_only_up_to_the_log() {
    let mut leader = plain(1, 3);
    let _ = make_leader(&mut leader);
    let last = leader.status().last_index;
    let term = leader.status().term;
    // Past the bound the message is ignored; within it, it counts only up to the leader's log.
    for claimed in [MAX, MAX_INDEX] {
        leader.step(msg(
            2,
            1,
            term,
            MessageBody::AppendResponse(AppendResult::Accepted {
                last_index: claimed,
            }),
        ));
        let _ = flush(&mut leader);
        assert!(leader.match_index(2) <= Some(last));
    }
    assert_eq!(leader.match_index(2), Some(last));
}

/// Found by the `peer_wire` fuzzer: a follower adopted an InstallSnapshot at index `u64::MAX`, after
/// which computing its first index (`base + 1`) overflowed.
#[test]
fn a_snapshot_at_the_end_of_the_index_space_is_ignored() {
    for (index, term) in [(MAX, 1), (1, MAX), (MAX_INDEX + 1, 1)] {
        let mut follower = plain(1, 3);
        let snapshot = Snapshot {
            meta: SnapshotMeta {
                index,
                term,
                membership: follower.membership().clone(),
            },
            data: Default::default(),
        };
        follower.step(msg(2, 1, 1, MessageBody::InstallSnapshot { snapshot }));
        let _ = flush(&mut follower);
        let status = follower.status();
        assert_eq!(status.last_index, 0, "the snapshot was adopted: {status:?}");
    }
}

#[test]
fn terms_past_the_bound_are_ignored() {
    let mut follower = plain(1, 3);
    follower.step(msg(
        2,
        1,
        MAX,
        MessageBody::Heartbeat {
            commit: 0,
            read_round: 0,
        },
    ));
    follower.step(msg(2, 1, MAX_INDEX + 1, MessageBody::TimeoutNow));
    let _ = flush(&mut follower);
    assert_eq!(follower.status().term, 0);
    // At the bound itself a message is still taken, and nothing overflows afterwards.
    follower.step(msg(
        2,
        1,
        MAX_INDEX,
        MessageBody::Heartbeat {
            commit: 0,
            read_round: 0,
        },
    ));
    for _ in 0..200 {
        follower.tick();
        let _ = flush(&mut follower);
    }
    assert!(follower.status().term >= MAX_INDEX);
}

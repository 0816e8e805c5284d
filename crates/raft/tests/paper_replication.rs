//! §5.3 Log replication: appending and sending, the consistency check, conflict truncation, fast
//! backtracking, commit propagation, batching and pipelining (dissertation §10.2).

mod harness;

use bytes::Bytes;
use harness::*;
use raftkv_raft::*;

fn append_results(msgs: &[Message]) -> Vec<AppendResult> {
    msgs.iter()
        .filter_map(|m| match m.body {
            MessageBody::AppendResponse(r) => Some(r),
            _ => None,
        })
        .collect()
}

/// A follower (node 2 of 3) at `term` holding entries with the given terms, from index 1.
fn follower_with_log(term: Term, terms: &[Term], commit: Index) -> Raft {
    restart(
        plain_config(2, 3),
        HardState {
            term,
            vote: None,
            commit,
        },
        None,
        entries_with_terms(1, terms),
    )
}

/// A plain leader (node 1 of 3) whose followers acknowledged its no-op: both are in pipelined
/// replication and the no-op at index 1 is committed.
fn steady_leader(tune: impl FnOnce(Config) -> Config) -> Raft {
    let mut r = Raft::new(tune(plain_config(1, 3)), InitialState::default());
    let rd = make_leader(&mut r);
    ack_appends(&mut r, &rd.messages);
    let rd = flush(&mut r);
    assert_eq!(rd.committed.len(), 1);
    r
}

/// §5.3: "The leader appends the command to its log as a new entry, then issues AppendEntries RPCs in
/// parallel to each of the other servers to replicate the entry."
#[test]
fn leader_appends_proposal_and_sends_it_to_every_follower() {
    let mut r = steady_leader(|c| c);
    let (index, term) = r.propose(Bytes::from_static(b"x")).unwrap();
    assert_eq!((index, term), (2, 1));
    let rd = r.ready();
    assert_eq!(rd.entries.len(), 1);
    assert_eq!(rd.entries[0].data, Bytes::from_static(b"x"));
    assert!(rd.committed.is_empty(), "not committed before replication");
    for to in [2, 3] {
        let apps = appends_to(&rd.messages, to);
        assert_eq!(apps.len(), 1);
        let (prev_index, prev_term, entries, commit) = &apps[0];
        assert_eq!((*prev_index, *prev_term, *commit), (1, 1, 1));
        assert_eq!(entries, &rd.entries);
    }
    assert!(rd.messages_after_persist.is_empty());
}

/// §5.3: "A log entry is committed once the leader that created the entry has replicated it on a
/// majority of the servers"; the committed entry goes to the state machine.
#[test]
fn leader_commits_once_a_majority_holds_the_entry() {
    let mut r = steady_leader(|c| c);
    r.propose(Bytes::from_static(b"x")).unwrap();
    let rd = flush(&mut r);
    assert_eq!(r.status().commit, 1);
    let to2: Vec<Message> = rd.messages.iter().filter(|m| m.to == 2).cloned().collect();
    ack_appends(&mut r, &to2);
    assert_eq!(r.status().commit, 2);
    let rd = flush(&mut r);
    assert_eq!(rd.committed.len(), 1);
    assert_eq!(rd.committed[0].index, 2);
    assert_eq!(rd.hard_state.map(|h| h.commit), Some(2));
}

/// §5.3 / Figure 2 AppendEntries receiver step 2: "Reply false if log doesn't contain an entry at
/// prevLogIndex whose term matches prevLogTerm." The rejection carries the hint for backtracking, and
/// the log is left alone.
#[test]
fn follower_rejects_append_that_fails_the_consistency_check() {
    let mut f = follower_with_log(2, &[1, 1, 2], 0);
    // prev beyond our log: hint is our last index + 1.
    f.step(append_msg(1, 2, 3, (5, 3), vec![entry(6, 3)], 0));
    let rd = flush(&mut f);
    assert_eq!(
        append_results(&rd.messages_after_persist),
        vec![AppendResult::Rejected {
            prev_index: 5,
            hint_index: 4,
            hint_term: 0
        }]
    );
    // prev term differs: hint is the first index of our term at prev.
    f.step(append_msg(1, 2, 3, (3, 3), vec![entry(4, 3)], 0));
    let rd = flush(&mut f);
    assert_eq!(
        append_results(&rd.messages_after_persist),
        vec![AppendResult::Rejected {
            prev_index: 3,
            hint_index: 3,
            hint_term: 2
        }]
    );
    f.step(append_msg(1, 2, 3, (2, 3), vec![], 0));
    let rd = flush(&mut f);
    assert_eq!(
        append_results(&rd.messages_after_persist),
        vec![AppendResult::Rejected {
            prev_index: 2,
            hint_index: 1,
            hint_term: 1
        }]
    );
    assert!(rd.entries.is_empty());
    let terms: Vec<Term> = f.entries().iter().map(|e| e.term).collect();
    assert_eq!(terms, vec![1, 1, 2]);
}

/// §5.3 / Figure 2 step 3: "If an existing entry conflicts with a new one (same index but different
/// terms), delete the existing entry and all that follow it"; step 4: append any new entries.
#[test]
fn follower_truncates_conflicting_suffix_and_appends() {
    let mut f = follower_with_log(2, &[1, 1, 2, 2], 1);
    flush(&mut f);
    f.step(append_msg(1, 2, 3, (2, 1), vec![entry(3, 3)], 1));
    let terms: Vec<Term> = f.entries().iter().map(|e| e.term).collect();
    assert_eq!(terms, vec![1, 1, 3]);
    let st = f.status();
    assert_eq!((st.last_index, st.persisted), (3, 2));
    let rd = flush(&mut f);
    assert_eq!(rd.entries, vec![entry(3, 3)], "the driver rewrites from 3");
    assert_eq!(
        append_results(&rd.messages_after_persist),
        vec![AppendResult::Accepted { last_index: 3 }]
    );
    assert!(rd.messages.is_empty());
}

/// Figure 2 step 3 applies only to conflicts: an old, already-matching Append must not truncate
/// entries that follow it (they may be committed, the message may just be late).
#[test]
fn follower_keeps_its_log_on_a_stale_matching_append() {
    let mut f = follower_with_log(2, &[1, 1, 2], 0);
    flush(&mut f);
    f.step(append_msg(1, 2, 2, (0, 0), vec![entry(1, 1)], 0));
    assert_eq!(f.status().last_index, 3);
    let rd = flush(&mut f);
    assert!(rd.entries.is_empty());
    assert_eq!(
        append_results(&rd.messages_after_persist),
        vec![AppendResult::Accepted { last_index: 1 }]
    );
}

/// Drives a plain leader with the log `leader_terms` (campaigning at term 8) against follower 2 with
/// `follower_terms`, and counts the Appends until the follower accepts. Returns that count.
fn backtracking_round_trips(leader_terms: &[Term], follower_terms: &[Term]) -> usize {
    let mut l = restart(
        plain_config(1, 3),
        HardState {
            term: 7,
            vote: None,
            commit: 0,
        },
        None,
        entries_with_terms(1, leader_terms),
    );
    let mut f = restart(
        plain_config(2, 3),
        HardState {
            term: 7,
            vote: None,
            commit: 0,
        },
        None,
        entries_with_terms(1, follower_terms),
    );
    let mut to_follower: Vec<Message> = make_leader(&mut l)
        .messages
        .into_iter()
        .filter(|m| m.to == 2)
        .collect();
    assert_eq!(l.status().term, 8);
    let mut trips = 0;
    while let Some(m) = to_follower.pop() {
        assert!(to_follower.is_empty(), "probe sends one Append at a time");
        trips += 1;
        assert!(trips < 20, "no convergence");
        f.step(m);
        let rd = flush(&mut f);
        let accepted = append_results(&rd.messages_after_persist)
            .iter()
            .any(|r| matches!(r, AppendResult::Accepted { .. }));
        for m in all_messages(&rd) {
            l.step(m);
        }
        if accepted {
            break;
        }
        to_follower = flush(&mut l)
            .messages
            .into_iter()
            .filter(|m| m.to == 2)
            .collect();
    }
    // One more exchange delivers the rest; afterwards the logs match.
    for _ in 0..3 {
        for m in flush(&mut l).messages.into_iter().filter(|m| m.to == 2) {
            f.step(m);
        }
        for m in all_messages(&flush(&mut f)) {
            l.step(m);
        }
    }
    assert_eq!(
        f.entries(),
        l.entries(),
        "follower converged to the leader's log"
    );
    trips
}

/// §5.3: "the follower can include the term of the conflicting entry and the first index it stores for
/// that term. With this information, the leader can decrement nextIndex to bypass all of the
/// conflicting entries in that term; one AppendEntries RPC will be required for each term with
/// conflicting entries, rather than one RPC per entry." Figure 7's followers, leader of term 8.
#[test]
fn fast_backtracking_skips_a_whole_term_per_round_trip() {
    let leader = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
    // (f): terms 2 and 3 conflict: the initial probe plus one rejection per term.
    assert_eq!(
        backtracking_round_trips(&leader, &[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3]),
        3
    );
    // (e): shorter, then one conflicting term 4 tail.
    assert_eq!(backtracking_round_trips(&leader, &[1, 1, 1, 4, 4, 4, 4]), 3);
    // (a), (b): only missing entries: one rejection jumps straight to the follower's end.
    assert_eq!(
        backtracking_round_trips(&leader, &[1, 1, 1, 4, 4, 5, 5, 6, 6]),
        2
    );
    assert_eq!(backtracking_round_trips(&leader, &[1, 1, 1, 4]), 2);
    // (c), (d): extra entries only: the first probe matches and the tail is truncated.
    assert_eq!(
        backtracking_round_trips(&leader, &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6]),
        1
    );
    assert_eq!(
        backtracking_round_trips(&leader, &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7]),
        1
    );
}

/// §5.3: "The leader keeps track of the highest index it knows to be committed, and it includes that
/// index in future AppendEntries RPCs (including heartbeats) so that the other servers eventually find
/// out." A heartbeat never carries a commit index beyond what the follower is known to hold.
#[test]
fn heartbeat_propagates_commit_capped_at_the_followers_match() {
    let mut r = steady_leader(|c| c);
    r.propose(Bytes::from_static(b"x")).unwrap();
    let rd = flush(&mut r);
    let to2: Vec<Message> = rd.messages.iter().filter(|m| m.to == 2).cloned().collect();
    ack_appends(&mut r, &to2);
    assert_eq!(r.status().commit, 2);
    flush(&mut r);
    r.tick();
    let rd = flush(&mut r);
    let hb: Vec<(NodeId, Index)> = rd
        .messages
        .iter()
        .filter_map(|m| match m.body {
            MessageBody::Heartbeat { commit, .. } => Some((m.to, commit)),
            _ => None,
        })
        .collect();
    assert_eq!(hb, vec![(2, 2), (3, 1)]);
}

/// The follower side: a heartbeat's commit index makes entries it holds committed and hands them to
/// the state machine, but never beyond its own last index.
#[test]
fn follower_learns_commit_from_heartbeat() {
    let mut f = follower_with_log(1, &[1, 1, 1], 0);
    flush(&mut f);
    f.step(msg(
        1,
        2,
        1,
        MessageBody::Heartbeat {
            commit: 2,
            read_round: 0,
        },
    ));
    let rd = flush(&mut f);
    let committed: Vec<Index> = rd.committed.iter().map(|e| e.index).collect();
    assert_eq!(committed, vec![1, 2]);
    assert_eq!(rd.hard_state.map(|h| h.commit), Some(2));
    f.step(msg(
        1,
        2,
        1,
        MessageBody::Heartbeat {
            commit: 9,
            read_round: 0,
        },
    ));
    assert_eq!(f.status().commit, 3);
}

/// Dissertation §10.2.1 (batching): proposals that arrive between two `ready()` calls travel in one
/// Append per follower, and the follower answers the batch once.
#[test]
fn many_proposals_between_two_readies_become_one_append_per_follower() {
    let mut r = steady_leader(|c| c);
    for i in 0..100 {
        r.propose(Bytes::from(format!("p{i}"))).unwrap();
    }
    let rd = flush(&mut r);
    assert_eq!(rd.entries.len(), 100);
    for to in [2, 3] {
        let apps = appends_to(&rd.messages, to);
        assert_eq!(apps.len(), 1, "to {to}");
        assert_eq!(apps[0].2.len(), 100);
        assert_eq!((apps[0].2[0].index, apps[0].2[99].index), (2, 101));
    }
    let mut f = follower_with_log(1, &[1], 1);
    let m = rd.messages.iter().find(|m| m.to == 2).unwrap().clone();
    f.step(m);
    let frd = flush(&mut f);
    assert_eq!(frd.entries.len(), 100);
    assert_eq!(
        append_results(&frd.messages_after_persist),
        vec![AppendResult::Accepted { last_index: 101 }]
    );
}

/// A batch larger than `max_entries_per_msg` is split, and in pipelined replication the pieces all go
/// out at once.
#[test]
fn batch_is_split_at_max_entries_per_message() {
    let mut r = steady_leader(|mut c| {
        c.max_entries_per_msg = 10;
        c
    });
    for i in 0..25 {
        r.propose(Bytes::from(format!("p{i}"))).unwrap();
    }
    let rd = flush(&mut r);
    let apps = appends_to(&rd.messages, 2);
    let sizes: Vec<usize> = apps.iter().map(|a| a.2.len()).collect();
    assert_eq!(sizes, vec![10, 10, 5]);
    let prevs: Vec<Index> = apps.iter().map(|a| a.0).collect();
    assert_eq!(prevs, vec![1, 11, 21]);
}

/// Dissertation §10.2.2 (pipelining): in Replicate state the leader does not wait for an answer before
/// sending the next Append, up to `max_inflight_msgs` unanswered ones; an answer opens the window.
#[test]
fn pipelining_keeps_at_most_max_inflight_appends_outstanding() {
    let mut r = steady_leader(|mut c| {
        c.max_inflight_msgs = 3;
        c
    });
    let mut sent = Vec::new();
    for i in 0..5 {
        r.propose(Bytes::from(format!("p{i}"))).unwrap();
        let rd = flush(&mut r);
        sent.push(appends_to(&rd.messages, 2).len());
    }
    assert_eq!(sent, vec![1, 1, 1, 0, 0]);
    // The first answer frees one slot: everything pending goes in one Append.
    r.step(msg(
        2,
        1,
        1,
        MessageBody::AppendResponse(AppendResult::Accepted { last_index: 2 }),
    ));
    let rd = flush(&mut r);
    let apps = appends_to(&rd.messages, 2);
    assert_eq!(apps.len(), 1);
    assert_eq!(apps[0].0, 4);
    let idx: Vec<Index> = apps[0].2.iter().map(|e| e.index).collect();
    assert_eq!(idx, vec![5, 6]);
}

/// In Probe state (a fresh leader does not know where a follower's log matches) only one Append is in
/// flight until the follower answers.
#[test]
fn probe_sends_one_append_at_a_time() {
    let mut r = plain(1, 3);
    let rd = make_leader(&mut r);
    assert_eq!(appends_to(&rd.messages, 2).len(), 1);
    for i in 0..3 {
        r.propose(Bytes::from(format!("p{i}"))).unwrap();
        assert!(appends_to(&flush(&mut r).messages, 2).is_empty());
    }
    r.step(msg(
        2,
        1,
        1,
        MessageBody::AppendResponse(AppendResult::Accepted { last_index: 1 }),
    ));
    let apps = appends_to(&flush(&mut r).messages, 2);
    assert_eq!(apps.len(), 1);
    assert_eq!(apps[0].2.len(), 3);
}

/// A lost Append in pipelined replication is detected through the heartbeat answer: the leader sends
/// an empty Append, the follower rejects it, and the leader resends the missing entries.
#[test]
fn lost_append_is_recovered_after_heartbeat() {
    let mut r = steady_leader(|c| c);
    r.propose(Bytes::from_static(b"lost")).unwrap();
    flush(&mut r); // the Append to node 2 is dropped
    let mut f = follower_with_log(1, &[1], 1);
    flush(&mut f);
    r.tick();
    for _ in 0..4 {
        let rd = flush(&mut r);
        for m in rd.messages.into_iter().filter(|m| m.to == 2) {
            f.step(m);
        }
        for m in all_messages(&flush(&mut f)) {
            r.step(m);
        }
    }
    assert_eq!(f.status().last_index, 2);
    assert_eq!(f.entries()[1].data, Bytes::from_static(b"lost"));
}

/// §5.3: "If followers crash or run slowly, or if network packets are lost, the leader retries
/// AppendEntries RPCs indefinitely ... until all followers eventually store all log entries." Even when
/// every Append of a full pipelining window was lost (a partition during a burst of proposals), the
/// follower's heartbeat answer must get replication going again.
#[test]
fn follower_catches_up_after_a_whole_inflight_window_was_lost() {
    let mut r = steady_leader(|mut c| {
        c.max_inflight_msgs = 3;
        c
    });
    for i in 0..5 {
        r.propose(Bytes::from(format!("p{i}"))).unwrap();
        let rd = flush(&mut r);
        // Node 3 keeps up; everything to node 2 is lost.
        let to3: Vec<Message> = rd.messages.iter().filter(|m| m.to == 3).cloned().collect();
        ack_appends(&mut r, &to3);
    }
    assert_eq!(r.status().commit, 6);
    let mut f = follower_with_log(1, &[1], 1);
    flush(&mut f);
    // The partition heals: heartbeats flow again.
    for _ in 0..6 {
        r.tick();
        let rd = flush(&mut r);
        for m in rd.messages.into_iter().filter(|m| m.to == 2) {
            f.step(m);
        }
        for m in all_messages(&flush(&mut f)) {
            r.step(m);
        }
    }
    assert_eq!(f.status().last_index, 6, "follower 2 never caught up");
    assert_eq!(f.status().commit, 6);
}

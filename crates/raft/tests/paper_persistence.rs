//! Figure 2 "Persistent state on all servers ... updated on stable storage before responding to RPCs",
//! the driver contract that encodes it (`hard_state`, `messages` vs `messages_after_persist`), and
//! restarting from what was made durable.

mod harness;

use bytes::Bytes;
use harness::*;
use raftkv_raft::*;

fn append(term: Term, prev: (Index, Term), entries: Vec<Entry>, commit: Index) -> Message {
    append_msg(1, 2, term, prev, entries, commit)
}

/// A vote is a promise that must survive a crash: the new term and vote are in `hard_state`, and the
/// response is only among the messages to send after persisting.
#[test]
fn vote_response_waits_for_term_and_vote_to_be_durable() {
    let mut r = plain(2, 3);
    r.step(msg(
        1,
        2,
        4,
        MessageBody::Vote {
            last_index: 0,
            last_term: 0,
            transfer: false,
        },
    ));
    let rd = r.ready();
    assert_eq!(
        rd.hard_state,
        Some(HardState {
            term: 4,
            vote: Some(1),
            commit: 0
        })
    );
    assert!(rd.messages.is_empty());
    assert_eq!(rd.messages_after_persist.len(), 1);
    assert_eq!(
        rd.messages_after_persist[0].body,
        MessageBody::VoteResponse { granted: true }
    );
    assert!(rd.must_persist());
    // Nothing changed since: the next Ready is empty.
    assert!(!r.has_ready());
}

/// A rejected vote also rides after the persist: it carries a term the node just adopted.
#[test]
fn rejected_vote_response_is_also_sent_after_persist() {
    let mut r = restart(
        plain_config(2, 3),
        HardState {
            term: 1,
            vote: None,
            commit: 0,
        },
        None,
        entries_with_terms(1, &[1]),
    );
    r.step(msg(
        1,
        2,
        2,
        MessageBody::Vote {
            last_index: 0,
            last_term: 0,
            transfer: false,
        },
    ));
    let rd = r.ready();
    assert_eq!(rd.hard_state.map(|h| (h.term, h.vote)), Some((2, None)));
    assert!(rd.messages.is_empty());
    assert_eq!(
        rd.messages_after_persist[0].body,
        MessageBody::VoteResponse { granted: false }
    );
}

/// A candidate's own vote and new term must be durable before it asks anyone for votes.
#[test]
fn candidate_sends_vote_requests_only_after_persist() {
    let mut r = plain(1, 3);
    tick_until_campaign(&mut r);
    let rd = r.ready();
    assert_eq!(rd.hard_state.map(|h| (h.term, h.vote)), Some((1, Some(1))));
    assert!(rd.messages.is_empty());
    assert_eq!(rd.messages_after_persist.len(), 2);
}

/// Acknowledging an Append says "these entries are on my disk": the answer waits for the persist of
/// the entries handed out in the same `Ready`.
#[test]
fn append_response_waits_for_the_entries_to_be_durable() {
    let mut r = plain(2, 3);
    r.step(append(1, (0, 0), vec![entry(1, 1), entry(2, 1)], 1));
    let rd = r.ready();
    assert_eq!(rd.entries, vec![entry(1, 1), entry(2, 1)]);
    assert_eq!(rd.hard_state.map(|h| (h.term, h.commit)), Some((1, 1)));
    assert!(rd.messages.is_empty());
    assert_eq!(
        rd.messages_after_persist[0].body,
        MessageBody::AppendResponse(AppendResult::Accepted { last_index: 2 })
    );
    assert_eq!(r.status().persisted, 0);
    r.persisted(2, 1);
    assert_eq!(r.status().persisted, 2);
}

/// Heartbeat answers promise nothing durable and may leave at once.
#[test]
fn heartbeat_response_goes_out_at_once() {
    let mut r = plain(2, 3);
    r.step(msg(
        1,
        2,
        1,
        MessageBody::Heartbeat {
            commit: 0,
            read_round: 7,
        },
    ));
    let rd = r.ready();
    assert!(rd.messages_after_persist.is_empty());
    assert_eq!(
        rd.messages[0].body,
        MessageBody::HeartbeatResponse { read_round: 7 }
    );
}

/// A report for an entry that was replaced since (conflict truncation) is ignored; the replacement
/// must be reported on its own.
#[test]
fn persisted_report_for_a_replaced_entry_is_ignored() {
    let mut r = plain(2, 3);
    r.step(append(1, (0, 0), vec![entry(1, 1), entry(2, 1)], 0));
    r.ready();
    r.step(append(2, (1, 1), vec![entry(2, 2)], 0));
    let rd = r.ready();
    assert_eq!(rd.entries, vec![entry(2, 2)]);
    r.persisted(2, 1);
    assert_eq!(r.status().persisted, 0);
    r.persisted(2, 2);
    assert_eq!(r.status().persisted, 2);
}

/// Restarting from the durable hard state keeps the vote of the current term: the node cannot vote
/// twice in one term across a crash.
#[test]
fn restart_keeps_term_and_vote() {
    let hs = HardState {
        term: 5,
        vote: Some(2),
        commit: 0,
    };
    let mut r = restart(plain_config(1, 3), hs, None, vec![]);
    assert_eq!(r.status().term, 5);
    assert_eq!(r.status().role, Role::Follower);
    let ask = |r: &mut Raft, from: NodeId| {
        r.step(msg(
            from,
            1,
            5,
            MessageBody::Vote {
                last_index: 0,
                last_term: 0,
                transfer: false,
            },
        ));
        match flush(r).messages_after_persist[0].body {
            MessageBody::VoteResponse { granted } => granted,
            ref b => panic!("{b:?}"),
        }
    };
    assert!(!ask(&mut r, 3));
    assert!(ask(&mut r, 2));
    // A restarted node emits no hard state it already has.
    assert!(r.ready().hard_state.is_none());
}

/// The log may start after a snapshot (first index > 1): a restarted node re-applies the committed
/// entries after it, answers the consistency check at the snapshot boundary, and campaigns with the
/// right last index and term.
#[test]
fn restart_from_snapshot_with_first_index_above_one() {
    let mut r = restart(
        plain_config(1, 3),
        HardState {
            term: 3,
            vote: None,
            commit: 12,
        },
        Some(snapshot(10, 2, 3)),
        entries_with_terms(11, &[3, 3, 3]),
    );
    let st = r.status();
    assert_eq!(
        (
            st.first_index,
            st.last_index,
            st.commit,
            st.applied,
            st.persisted
        ),
        (11, 13, 12, 10, 13)
    );
    assert_eq!(r.snapshot_meta().index, 10);
    let rd = flush(&mut r);
    assert!(rd.snapshot.is_none(), "the driver already has it");
    assert!(rd.entries.is_empty(), "already durable");
    let committed: Vec<Index> = rd.committed.iter().map(|e| e.index).collect();
    assert_eq!(committed, vec![11, 12]);
    assert_eq!(r.status().applied, 12);
    tick_until_campaign(&mut r);
    let rd = r.ready();
    for m in &rd.messages_after_persist {
        assert_eq!(
            m.body,
            MessageBody::Vote {
                last_index: 13,
                last_term: 3,
                transfer: false
            }
        );
    }
}

/// A follower restarted after a snapshot accepts an Append whose prev is the snapshot's last entry.
#[test]
fn restarted_follower_matches_at_the_snapshot_boundary() {
    let mut r = restart(
        plain_config(2, 3),
        HardState {
            term: 3,
            vote: None,
            commit: 10,
        },
        Some(snapshot(10, 2, 3)),
        vec![],
    );
    r.step(append(3, (10, 2), vec![entry(11, 3)], 11));
    let rd = flush(&mut r);
    assert_eq!(
        rd.messages_after_persist[0].body,
        MessageBody::AppendResponse(AppendResult::Accepted { last_index: 11 })
    );
    assert_eq!(rd.committed, vec![entry(11, 3)]);
    // A probe from before the snapshot is answered with what is known to be committed.
    r.step(append(3, (4, 1), vec![entry(5, 1)], 11));
    let rd = flush(&mut r);
    assert_eq!(
        rd.messages_after_persist[0].body,
        MessageBody::AppendResponse(AppendResult::Accepted { last_index: 11 })
    );
}

/// The durable commit index may run ahead of the durable log (a leader commits with followers' copies
/// before its own write); on restart it is clamped to the log that survived.
#[test]
fn restart_clamps_commit_to_the_durable_log() {
    let mut r = restart(
        plain_config(1, 3),
        HardState {
            term: 2,
            vote: Some(1),
            commit: 9,
        },
        None,
        entries_with_terms(1, &[1, 2, 2]),
    );
    assert_eq!(r.status().commit, 3);
    let committed: Vec<Index> = flush(&mut r).committed.iter().map(|e| e.index).collect();
    assert_eq!(committed, vec![1, 2, 3]);
}

/// A node that crashes loses what it had not made durable, and a restarted cluster member catches up
/// and applies the same entries as everyone else.
#[test]
fn crashed_follower_restarts_from_durable_state_and_catches_up() {
    let mut c = Cluster::new(3);
    let leader = c.elect();
    let f = (1..=3).find(|id| *id != leader).unwrap();
    for i in 0..3 {
        c.node(leader)
            .propose(Bytes::from(format!("a{i}")))
            .unwrap();
    }
    c.settle();
    let durable_term = c.nodes[&f].hard_state.term;
    c.restart(f, |cfg| cfg);
    assert_eq!(c.nodes[&f].raft.status().term, durable_term);
    for i in 0..3 {
        c.node(leader)
            .propose(Bytes::from(format!("b{i}")))
            .unwrap();
    }
    c.settle();
    c.tick_all(3);
    assert_eq!(c.leader(), Some(leader));
    assert_eq!(c.applied_data(f), c.applied_data(leader));
    assert_eq!(c.applied_data(f).len(), 6);
}

//! §5.4 Safety: the election restriction, committing entries from previous terms (Figure 8), and the
//! leader's own durability counting toward commit (dissertation §10.2.1).

mod harness;

use bytes::Bytes;
use harness::*;
use raftkv_raft::*;

fn vote(r: &mut Raft, from: NodeId, term: Term, last_index: Index, last_term: Term) -> bool {
    r.step(msg(
        from,
        r.status().id,
        term,
        MessageBody::Vote {
            last_index,
            last_term,
            transfer: false,
        },
    ));
    let rd = flush(r);
    let answers: Vec<bool> = all_messages(&rd)
        .iter()
        .filter_map(|m| match m.body {
            MessageBody::VoteResponse { granted } => Some(granted),
            _ => None,
        })
        .collect();
    assert_eq!(answers.len(), 1, "exactly one answer");
    answers[0]
}

fn voter(terms: &[Term]) -> Raft {
    restart(
        plain_config(1, 3),
        HardState {
            term: 2,
            vote: None,
            commit: 0,
        },
        None,
        entries_with_terms(1, terms),
    )
}

/// §5.4.1: "the voter denies its vote if its own log is more up-to-date than that of the candidate. ...
/// If the logs have last entries with different terms, then the log with the later term is more
/// up-to-date." A longer log with an older last term loses.
#[test]
fn vote_refused_to_candidate_whose_last_term_is_older() {
    let mut r = voter(&[1, 2]);
    assert!(!vote(&mut r, 2, 3, 5, 1));
    assert_eq!(r.hard_state().vote, None);
    assert_eq!(r.status().term, 3, "the term is still adopted");
}

/// §5.4.1: "If the logs end with the same term, then whichever log is longer is more up-to-date."
#[test]
fn vote_refused_to_candidate_with_shorter_log_of_same_last_term() {
    let mut r = voter(&[1, 1, 1]);
    assert!(!vote(&mut r, 2, 3, 2, 1));
    assert!(
        vote(&mut r, 3, 3, 3, 1),
        "an equally long log is up-to-date"
    );
    assert_eq!(r.hard_state().vote, Some(3));
}

/// A candidate with a newer last term wins the vote even with a shorter log.
#[test]
fn vote_granted_to_shorter_log_with_newer_last_term() {
    let mut r = voter(&[1, 1, 1]);
    assert!(vote(&mut r, 2, 3, 1, 2));
}

/// §5.4.2, Figure 8: "Raft never commits log entries from previous terms by counting replicas. Only log
/// entries from the leader's current term are committed by counting replicas; once an entry from the
/// current term has been committed ... all prior entries are committed indirectly."
#[test]
fn figure_8_entry_of_previous_term_is_not_committed_by_counting_replicas() {
    // S1 (of 5) led term 2 and wrote index 2 only to itself and S2; it is re-elected at term 4.
    let mut s1 = restart(
        plain_config(1, 5),
        HardState {
            term: 3,
            vote: None,
            commit: 1,
        },
        None,
        entries_with_terms(1, &[1, 2]),
    );
    make_leader(&mut s1);
    assert_eq!(s1.status().term, 4);
    let noop = s1.entries().last().unwrap().clone();
    assert_eq!((noop.index, noop.term), (3, 4));
    let ack = |r: &mut Raft, from: NodeId, last_index: Index| {
        r.step(msg(
            from,
            1,
            4,
            MessageBody::AppendResponse(AppendResult::Accepted { last_index }),
        ))
    };
    // Index 2 (term 2) now sits on S1, S2 and S3: a majority, but of an older term.
    ack(&mut s1, 2, 2);
    ack(&mut s1, 3, 2);
    assert_eq!(
        s1.status().commit,
        1,
        "Figure 8 (c): must not commit index 2"
    );
    assert!(flush(&mut s1).committed.is_empty());
    // Once the current term's entry is on a majority, it and everything before it commit.
    ack(&mut s1, 2, 3);
    assert_eq!(s1.status().commit, 1);
    ack(&mut s1, 3, 3);
    assert_eq!(s1.status().commit, 3);
    let committed: Vec<(Index, Term)> = flush(&mut s1)
        .committed
        .iter()
        .map(|e| (e.index, e.term))
        .collect();
    assert_eq!(committed, vec![(2, 2), (3, 4)]);
}

/// Dissertation §10.2.1: the leader sends its new entries before writing them to its own disk; its own
/// copy counts toward the commit majority only once the driver reports it durable.
#[test]
fn leader_counts_its_own_entry_only_once_persisted() {
    let mut r = plain(1, 3);
    let rd = make_leader(&mut r);
    ack_appends(&mut r, &rd.messages);
    flush(&mut r);
    let (index, term) = r.propose(Bytes::from_static(b"x")).unwrap();
    let rd = r.ready(); // not persisted yet
    assert_eq!(rd.entries.len(), 1);
    assert_eq!(
        appends_to(&rd.messages, 2).len(),
        1,
        "sent before persistence"
    );
    assert_eq!(r.status().persisted, index - 1);
    let to2: Vec<Message> = rd.messages.iter().filter(|m| m.to == 2).cloned().collect();
    ack_appends(&mut r, &to2);
    assert_eq!(
        r.status().commit,
        index - 1,
        "one follower alone is no majority"
    );
    r.persisted(index, term);
    assert_eq!(r.status().commit, index);
    // Two followers make a majority without the leader's disk.
    r.propose(Bytes::from_static(b"y")).unwrap();
    let rd = r.ready();
    ack_appends(&mut r, &rd.messages);
    assert_eq!(r.status().commit, index + 1);
    assert_eq!(r.status().persisted, index);
}

/// A single-node cluster commits only what its disk holds.
#[test]
fn single_node_commits_only_after_persist() {
    let mut r = Raft::new(plain_config(1, 1), InitialState::default());
    tick_until_campaign(&mut r);
    for own_vote in r.ready().messages_after_persist {
        r.step(own_vote);
    }
    assert_eq!(r.status().role, Role::Leader);
    let rd = r.ready();
    assert_eq!(rd.entries.len(), 1);
    assert_eq!(r.status().commit, 0);
    r.persisted(1, 1);
    assert_eq!(r.status().commit, 1);
    let (i, t) = r.propose(Bytes::from_static(b"a")).unwrap();
    r.ready();
    assert_eq!(r.status().commit, 1);
    r.persisted(i, t);
    assert_eq!(r.status().commit, 2);
}

/// Leader completeness from the follower's side: an Append that would remove a committed entry is
/// refused outright (a correct leader never sends one), so committed entries are never lost.
#[test]
fn follower_never_truncates_a_committed_entry() {
    let mut f = restart(
        plain_config(2, 3),
        HardState {
            term: 2,
            vote: None,
            commit: 2,
        },
        None,
        entries_with_terms(1, &[1, 2, 2]),
    );
    flush(&mut f);
    f.step(msg(
        1,
        2,
        3,
        MessageBody::Append {
            prev_index: 2,
            prev_term: 2,
            entries: vec![entry(3, 3)],
            commit: 0,
        },
    ));
    let terms: Vec<Term> = f.entries().iter().map(|e| e.term).collect();
    assert_eq!(terms, vec![1, 2, 3], "the uncommitted index 3 may go");
    // A bogus Append replacing committed index 2: nothing changes.
    let mut f = restart(
        plain_config(2, 3),
        HardState {
            term: 2,
            vote: None,
            commit: 2,
        },
        None,
        entries_with_terms(1, &[1, 2, 2]),
    );
    flush(&mut f);
    f.step(msg(
        1,
        2,
        3,
        MessageBody::Append {
            prev_index: 1,
            prev_term: 1,
            entries: vec![entry(2, 3)],
            commit: 0,
        },
    ));
    let terms: Vec<Term> = f.entries().iter().map(|e| e.term).collect();
    assert_eq!(terms, vec![1, 2, 2]);
    assert_eq!(f.status().commit, 2);
}

/// §5.4: in a whole cluster, a node that missed committed entries cannot become leader; whoever wins
/// holds every committed entry (Leader Completeness).
#[test]
fn stale_node_cannot_win_and_the_new_leader_has_every_committed_entry() {
    let mut c = Cluster::new(3);
    let leader = c.elect();
    let stale = (1..=3).find(|id| *id != leader).unwrap();
    let other = (1..=3).find(|id| *id != leader && *id != stale).unwrap();
    c.isolate(stale);
    for i in 0..5 {
        c.node(leader)
            .propose(Bytes::from(format!("v{i}")))
            .unwrap();
    }
    c.settle();
    c.tick_all(2);
    assert_eq!(c.applied_data(other).len(), 5);
    // The old leader dies; the stale node comes back.
    c.heal();
    c.isolate(leader);
    c.tick_all(200);
    let new_leader = c.leader().unwrap();
    assert_eq!(new_leader, other);
    assert_eq!(c.applied_data(stale).len(), 5);
    assert!(c.nodes[&stale]
        .raft
        .entries()
        .iter()
        .any(|e| e.data == Bytes::from_static(b"v4")));
}

//! Dissertation chapter 4: cluster membership changes, one server at a time, with learners.

mod harness;

use bytes::Bytes;
use harness::*;
use raftkv_raft::*;

/// Every change is checked against a generous catch-up bound unless a test says otherwise.
const MAX_LAG: u64 = 10;

fn empty_node(id: NodeId) -> Node {
    let mut config = Config::new(id, Vec::new());
    config.heartbeat_ticks = 1;
    Node {
        raft: Raft::new(config, InitialState::default()),
        hard_state: HardState::default(),
        log: Vec::new(),
        applied: Vec::new(),
        reads: Vec::new(),
        snapshot: None,
    }
}

/// A cluster of `n` voters with a leader elected and its no-op committed, plus empty nodes `extra`
/// that know no membership (as `raftkv server --join` starts them).
fn cluster_with_spares(n: u64, extra: &[NodeId]) -> (Cluster, NodeId) {
    let mut c = Cluster::new(n);
    for id in extra {
        c.nodes.insert(*id, empty_node(*id));
    }
    let leader = c.elect();
    c.settle();
    (c, leader)
}

fn change(c: &mut Cluster, leader: NodeId, change: ConfChange) -> Result<Index, ConfChangeError> {
    let result = c
        .node(leader)
        .propose_conf_change(change, Bytes::new(), MAX_LAG);
    c.settle();
    result.map(|(index, _)| index)
}

fn voters(c: &mut Cluster, id: NodeId) -> Vec<NodeId> {
    c.node(id).membership().voters.clone()
}

/// §4.2.1: a new server joins as a non-voting learner; it receives the log (and so learns the
/// membership) but is not counted for commit or elections, and never campaigns.
#[test]
fn a_learner_receives_the_log_without_counting() {
    let (mut c, leader) = cluster_with_spares(3, &[4]);
    let index = change(&mut c, leader, ConfChange::AddLearner(4)).unwrap();
    c.tick_all(2);
    assert_eq!(c.node(4).status().commit, index, "the learner caught up");
    assert_eq!(c.node(4).membership().learners, vec![4]);
    assert_eq!(voters(&mut c, 4), vec![1, 2, 3]);

    // With two voters cut off, the leader and the learner are not a majority: nothing commits.
    let others: Vec<NodeId> = (1..=3).filter(|id| *id != leader).collect();
    for id in &others {
        c.isolate(*id);
    }
    let (pending, _) = c.node(leader).propose(Bytes::from_static(b"x")).unwrap();
    c.settle();
    assert!(c.node(leader).status().commit < pending);
    assert!(
        c.node(4).status().last_index >= pending,
        "it still got the entry"
    );

    // The learner never campaigns, however long it hears nothing.
    c.isolate(4);
    for _ in 0..100 {
        c.node(4).tick();
    }
    assert_eq!(c.node(4).status().role, Role::Follower);
    assert_eq!(c.node(4).status().term, c.node(leader).status().term);
}

/// §4.2.1: a learner is promoted only once it has caught up; otherwise the leader refuses, saying how
/// far behind it is.
#[test]
fn promotion_waits_for_the_learner_to_catch_up() {
    let (mut c, leader) = cluster_with_spares(3, &[4]);
    c.isolate(4);
    change(&mut c, leader, ConfChange::AddLearner(4)).unwrap();
    for i in 0..20 {
        c.node(leader)
            .propose(Bytes::from(format!("w{i}")))
            .unwrap();
    }
    c.settle();
    let refused = c
        .node(leader)
        .propose_conf_change(ConfChange::Promote(4), Bytes::new(), MAX_LAG);
    assert!(
        matches!(refused, Err(ConfChangeError::NotCaughtUp { id: 4, lag }) if lag > MAX_LAG),
        "{refused:?}"
    );
    c.heal();
    c.tick_all(3);
    change(&mut c, leader, ConfChange::Promote(4)).unwrap();
    assert_eq!(voters(&mut c, leader), vec![1, 2, 3, 4]);
    assert_eq!(voters(&mut c, 4), vec![1, 2, 3, 4]);
    assert_eq!(c.node(leader).membership().quorum(), 3);
}

/// §4.2.1 again: on a log shorter than the allowed lag, a learner that never answered (its process
/// not started yet) is still not caught up: it must hold the entry that made it a learner.
/// (Found by tests/server_membership.rs: node 5 was promoted before it started, then refused to start
/// as a voter with an empty data directory.)
#[test]
fn a_learner_that_never_answered_is_not_promoted_even_on_a_short_log() {
    let (mut c, leader) = cluster_with_spares(3, &[4]);
    c.isolate(4);
    change(&mut c, leader, ConfChange::AddLearner(4)).unwrap();
    c.settle();
    assert!(c.node(leader).status().last_index < MAX_LAG);
    let refused = c
        .node(leader)
        .propose_conf_change(ConfChange::Promote(4), Bytes::new(), MAX_LAG);
    assert!(
        matches!(refused, Err(ConfChangeError::NotCaughtUp { id: 4, .. })),
        "{refused:?}"
    );
    c.heal();
    c.tick_all(3);
    change(&mut c, leader, ConfChange::Promote(4)).unwrap();
    assert_eq!(voters(&mut c, leader), vec![1, 2, 3, 4]);
}

/// §4.1: one change at a time, and (the fix to single-server changes) none before the leader has
/// committed an entry of its own term.
#[test]
fn one_change_at_a_time_and_only_after_the_leaders_first_commit() {
    let (mut c, leader) = cluster_with_spares(3, &[4, 5]);
    let others: Vec<NodeId> = (1..=3).filter(|id| *id != leader).collect();
    c.isolate(others[0]);
    c.isolate(others[1]);
    c.node(leader)
        .propose_conf_change(ConfChange::AddLearner(4), Bytes::new(), MAX_LAG)
        .unwrap();
    assert_eq!(
        c.node(leader)
            .propose_conf_change(ConfChange::AddLearner(5), Bytes::new(), MAX_LAG),
        Err(ConfChangeError::InProgress),
        "the first change has not committed"
    );
    c.heal();
    c.settle();
    change(&mut c, leader, ConfChange::AddLearner(5)).unwrap();

    // A new leader must first commit its no-op.
    let mut fresh = node_with(1, 3, |c| c);
    make_leader(&mut fresh);
    assert_eq!(
        fresh.propose_conf_change(ConfChange::AddLearner(4), Bytes::new(), MAX_LAG),
        Err(ConfChangeError::InProgress)
    );
}

/// §4.1: "a server always uses the latest configuration in its log, regardless of whether the entry
/// is committed" — and falls back to the previous one when that entry is overwritten.
#[test]
fn a_follower_uses_the_newest_membership_in_its_log_committed_or_not() {
    let members = Membership {
        voters: vec![1, 2, 3],
        learners: vec![9],
        context: Bytes::from_static(b"addresses"),
    };
    let mut f = plain(2, 3);
    let config_entry = Entry {
        index: 1,
        term: 1,
        kind: EntryKind::Config,
        data: members.to_bytes(),
    };
    f.step(append_msg(1, 2, 1, (0, 0), vec![config_entry], 0));
    assert_eq!(f.membership(), &members);
    assert_eq!(f.config_index(), 1);
    // Another leader of term 2 overwrites index 1: the membership is the configured one again.
    f.step(append_msg(3, 2, 2, (0, 0), vec![entry(1, 2)], 0));
    assert_eq!(f.membership(), &Membership::new(vec![1, 2, 3]));
    assert_eq!(f.config_index(), 0);
}

/// A Config entry that does not decode is refused with the whole message: a node must always know its
/// membership.
#[test]
fn an_undecodable_config_entry_is_refused() {
    let mut f = plain(2, 3);
    let bad = Entry {
        index: 1,
        term: 1,
        kind: EntryKind::Config,
        data: Bytes::from_static(b"\x01garbage"),
    };
    f.step(append_msg(1, 2, 1, (0, 0), vec![bad], 0));
    assert_eq!(f.status().last_index, 0);
    assert_eq!(f.status().term, 0, "not even the term was adopted");
}

/// §4.2.2: a leader removed from the membership manages the cluster until the change commits (not
/// counting itself), then hands leadership to a voter and steps down; it never campaigns again.
#[test]
fn a_removed_leader_steps_down_once_the_change_commits() {
    let (mut c, leader) = cluster_with_spares(3, &[]);
    let index = change(&mut c, leader, ConfChange::Remove(leader)).unwrap();
    let st = c.node(leader).status();
    assert!(st.commit >= index);
    assert_ne!(st.role, Role::Leader, "it stepped down");
    // TimeoutNow made a remaining voter campaign at once.
    c.tick_all(1);
    let next = c
        .leader()
        .expect("a new leader without waiting for a timeout");
    assert_ne!(next, leader);
    assert_eq!(voters(&mut c, next).len(), 2);
    let (w, _) = c.node(next).propose(Bytes::from_static(b"after")).unwrap();
    c.settle();
    assert!(c.node(next).status().commit >= w);
    for _ in 0..100 {
        c.node(leader).tick();
    }
    assert_ne!(c.node(leader).status().role, Role::Candidate);
    assert_ne!(c.node(leader).status().role, Role::PreCandidate);
}

/// §4.2.3: a removed server that never learned of its removal times out and campaigns; pre-vote and
/// the leader lease keep it from disrupting the cluster.
#[test]
fn a_removed_server_cannot_disrupt_the_cluster() {
    let (mut c, leader) = cluster_with_spares(3, &[]);
    let victim = (1..=3).find(|id| *id != leader).unwrap();
    c.isolate(victim);
    change(&mut c, leader, ConfChange::Remove(victim)).unwrap();
    assert!(
        c.node(victim).membership().is_voter(victim),
        "it never heard"
    );
    let term = c.node(leader).status().term;
    c.heal();
    for _ in 0..60 {
        c.node(victim).tick();
        c.tick_all(1);
    }
    assert_eq!(c.leader(), Some(leader));
    assert_eq!(c.node(leader).status().term, term, "no term inflation");
}

/// §4.2: replacing a node is two single-server changes; a whole grow-and-shrink sequence keeps every
/// committed entry on every remaining member.
#[test]
fn grow_replace_and_shrink_keep_every_committed_entry() {
    let (mut c, mut leader) = cluster_with_spares(3, &[4, 5]);
    let mut written = Vec::new();
    let mut write = |c: &mut Cluster, leader: NodeId, i: usize| {
        let data = Bytes::from(format!("w{i}"));
        c.node(leader).propose(data.clone()).unwrap();
        c.settle();
        written.push(data);
    };
    let steps = [
        ConfChange::AddLearner(4),
        ConfChange::Promote(4),
        ConfChange::AddLearner(5),
        ConfChange::Promote(5),
        ConfChange::Remove(1),
        ConfChange::Remove(2),
    ];
    for (i, step) in steps.into_iter().enumerate() {
        write(&mut c, leader, i);
        change(&mut c, leader, step).unwrap();
        c.tick_all(3);
        leader = c.leader().expect("a leader after each change");
    }
    write(&mut c, leader, 99);
    c.tick_all(3);
    assert_eq!(voters(&mut c, leader), vec![3, 4, 5]);
    for id in [3, 4, 5] {
        assert_eq!(c.applied_data(id), written, "node {id}");
    }
}

/// A snapshot carries the membership at its index, so a learner that catches up from one knows the
/// cluster.
#[test]
fn membership_at_an_index_is_what_a_snapshot_carries() {
    let (mut c, leader) = cluster_with_spares(3, &[4]);
    let before = c.node(leader).status().commit;
    let index = change(&mut c, leader, ConfChange::AddLearner(4)).unwrap();
    assert_eq!(
        c.node(leader).membership_at(before).learners,
        Vec::<NodeId>::new()
    );
    assert_eq!(c.node(leader).membership_at(index).learners, vec![4]);
}

/// Refusals name the reason and change nothing.
#[test]
fn invalid_changes_are_refused_and_change_nothing() {
    let (mut c, leader) = cluster_with_spares(3, &[]);
    let last = c.node(leader).status().last_index;
    let cases = [
        (
            ConfChange::AddLearner(2),
            ConfChangeError::AlreadyMember { id: 2 },
        ),
        (
            ConfChange::Promote(2),
            ConfChangeError::NotLearner { id: 2 },
        ),
        (
            ConfChange::Promote(7),
            ConfChangeError::UnknownMember { id: 7 },
        ),
        (
            ConfChange::Remove(7),
            ConfChangeError::UnknownMember { id: 7 },
        ),
        (ConfChange::AddLearner(0), ConfChangeError::InvalidId),
    ];
    for (step, error) in cases {
        assert_eq!(change(&mut c, leader, step), Err(error), "{step:?}");
    }
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    assert!(matches!(
        change(&mut c, follower, ConfChange::AddLearner(9)),
        Err(ConfChangeError::NotLeader { leader: Some(l) }) if l == leader
    ));
    assert_eq!(c.node(leader).status().last_index, last);
    assert_eq!(voters(&mut c, leader), vec![1, 2, 3]);

    let mut solo = Cluster::new(1);
    solo.elect();
    solo.settle();
    assert_eq!(
        change(&mut solo, 1, ConfChange::Remove(1)),
        Err(ConfChangeError::NoVotersLeft)
    );
}

/// §4.2.2: a node whose newest membership removes it, uncommitted, may still be needed: here it alone
/// holds that entry, so the other voter cannot win its vote. It campaigns with the new membership's
/// votes, commits its removal and steps down, and the remaining voter leads.
#[test]
fn a_node_removed_by_an_uncommitted_entry_still_campaigns_until_it_commits() {
    let (mut c, leader) = cluster_with_spares(2, &[]);
    let other = if leader == 1 { 2 } else { 1 };
    c.isolate(leader);
    c.node(leader)
        .propose_conf_change(ConfChange::Remove(leader), Bytes::new(), MAX_LAG)
        .unwrap();
    c.settle();
    c.restart(leader, |config| config);
    c.heal();
    for _ in 0..300 {
        c.tick_all(1);
        if c.leader() == Some(other)
            && c.node(other).status().commit >= c.node(other).config_index()
        {
            break;
        }
    }
    assert_eq!(c.leader(), Some(other), "the remaining voter leads");
    assert_eq!(voters(&mut c, other), vec![other]);
    assert!(c.node(other).status().commit >= c.node(other).config_index());
}

/// A change needs a majority of the new voters to commit; if they are not there it would hang, and
/// nothing could undo it. With one of three voters dead, removing a live one is refused (the two left
/// would include the dead one); removing the dead one is fine.
#[test]
fn a_change_whose_new_voters_have_no_live_majority_is_refused() {
    let (mut c, leader) = cluster_with_spares(3, &[]);
    let mut others = (1..=3).filter(|id| *id != leader);
    let (dead, live) = (others.next().unwrap(), others.next().unwrap());
    c.isolate(dead);
    // Two check-quorum windows without a word from it.
    c.tick_all(25);
    assert_eq!(c.leader(), Some(leader));
    assert_eq!(
        change(&mut c, leader, ConfChange::Remove(live)),
        Err(ConfChangeError::NoLiveMajority {
            responding: 1,
            needed: 2
        })
    );
    change(&mut c, leader, ConfChange::Remove(dead)).unwrap();
    assert_eq!(voters(&mut c, leader).len(), 2);
}

/// A removed follower that holds the change learns that it committed (one last heartbeat), so it
/// knows it is out: it no longer campaigns.
#[test]
fn a_removed_follower_learns_that_its_removal_committed() {
    let (mut c, leader) = cluster_with_spares(3, &[]);
    let gone = (1..=3).find(|id| *id != leader).unwrap();
    let index = change(&mut c, leader, ConfChange::Remove(gone)).unwrap();
    c.tick_all(2);
    assert!(
        c.node(gone).status().commit >= index,
        "{:?}",
        c.node(gone).status()
    );
    assert!(!c.node(gone).membership().contains(gone));
    let term = c.node(leader).status().term;
    c.isolate(gone);
    for _ in 0..100 {
        c.node(gone).tick();
    }
    assert_eq!(c.node(gone).status().term, term, "it never campaigned");
}

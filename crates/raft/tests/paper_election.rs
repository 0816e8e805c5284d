//! §5.2 Leader election, dissertation §9.6 (pre-vote), §6.2 (check-quorum) and §4.2.3 (leader lease).

mod harness;

use harness::*;
use raftkv_raft::*;

fn vote_req(from: NodeId, to: NodeId, term: Term, last_index: Index, last_term: Term) -> Message {
    msg(
        from,
        to,
        term,
        MessageBody::Vote {
            last_index,
            last_term,
            transfer: false,
        },
    )
}

fn vote_responses(rd: &Ready) -> Vec<(NodeId, Term, bool)> {
    all_messages(rd)
        .into_iter()
        .filter_map(|m| match m.body {
            MessageBody::VoteResponse { granted } => Some((m.to, m.term, granted)),
            _ => None,
        })
        .collect()
}

/// §5.2: "If a follower receives no communication over a period of time called the election timeout,
/// then it ... begins an election ... increments its current term and transitions to candidate state.
/// It then votes for itself and issues RequestVote RPCs in parallel to each of the other servers."
#[test]
fn follower_times_out_and_campaigns_with_next_term_and_self_vote() {
    let mut r = plain(1, 3);
    let ticks = tick_until_campaign(&mut r);
    assert!(
        (10..20).contains(&ticks),
        "timeout {ticks} outside [10, 20)"
    );
    let st = r.status();
    assert_eq!((st.role, st.term), (Role::Candidate, 1));
    let rd = r.ready();
    assert_eq!(
        rd.hard_state,
        Some(HardState {
            term: 1,
            vote: Some(1),
            commit: 0
        })
    );
    let mut to: Vec<NodeId> = rd.messages_after_persist.iter().map(|m| m.to).collect();
    to.sort_unstable();
    assert_eq!(to, vec![2, 3]);
    for m in &rd.messages_after_persist {
        assert_eq!(m.term, 1);
        assert_eq!(
            m.body,
            MessageBody::Vote {
                last_index: 0,
                last_term: 0,
                transfer: false
            }
        );
    }
}

/// §5.2: "Raft uses randomized election timeouts ... chosen randomly from a fixed interval".
/// The draw comes from the seeded RNG: different seeds give different timeouts, the same seed the
/// same one.
#[test]
fn randomized_election_timeouts_differ_across_seeds_and_repeat_per_seed() {
    let timeout = |seed: u64| {
        let mut r = Raft::new(
            {
                let mut c = plain_config(1, 3);
                c.seed = seed;
                c
            },
            InitialState::default(),
        );
        tick_until_campaign(&mut r)
    };
    let draws: Vec<u32> = (0..50).map(timeout).collect();
    assert!(draws.iter().all(|t| (10..20).contains(t)), "{draws:?}");
    let mut distinct = draws.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(
        distinct.len() >= 5,
        "too few distinct timeouts: {distinct:?}"
    );
    assert_eq!(timeout(42), timeout(42));
    // The harness seeds each node differently, so the nodes of one cluster do not all fire together.
    let per_node: Vec<u32> = (1..=5)
        .map(|id| tick_until_campaign(&mut plain(id, 5)))
        .collect();
    let mut d = per_node.clone();
    d.sort_unstable();
    d.dedup();
    assert!(
        d.len() >= 2,
        "all nodes drew the same timeout: {per_node:?}"
    );
}

/// §5.2 / Figure 2 RequestVote receiver: grant if votedFor is null (or the candidate) and the
/// candidate's log is at least as up-to-date; the reply goes out only after the vote is durable.
#[test]
fn follower_grants_vote_to_first_up_to_date_candidate() {
    let mut r = plain(1, 3);
    r.step(vote_req(2, 1, 1, 0, 0));
    assert_eq!(r.status().term, 1);
    let rd = r.ready();
    assert_eq!(
        rd.hard_state,
        Some(HardState {
            term: 1,
            vote: Some(2),
            commit: 0
        })
    );
    assert!(rd.messages.is_empty());
    assert_eq!(vote_responses(&rd), vec![(2, 1, true)]);
}

/// §5.2: "Each server will vote for at most one candidate in a given term, on a first-come-first-served
/// basis." A repeated request from the same candidate is granted again (it may have lost the answer).
#[test]
fn follower_votes_at_most_once_per_term() {
    let mut r = plain(1, 3);
    r.step(vote_req(2, 1, 1, 0, 0));
    flush(&mut r);
    r.step(vote_req(3, 1, 1, 0, 0));
    let rd = flush(&mut r);
    assert_eq!(vote_responses(&rd), vec![(3, 1, false)]);
    assert_eq!(r.hard_state().vote, Some(2));
    r.step(vote_req(2, 1, 1, 0, 0));
    assert_eq!(vote_responses(&flush(&mut r)), vec![(2, 1, true)]);
    // A new term frees the vote.
    r.step(vote_req(3, 1, 2, 0, 0));
    assert_eq!(vote_responses(&flush(&mut r)), vec![(3, 2, true)]);
    assert_eq!(r.hard_state().vote, Some(3));
}

/// §5.1: "If a server receives a request with a stale term number, it rejects the request."
#[test]
fn vote_request_from_stale_term_changes_nothing() {
    let mut r = plain(1, 3);
    r.step(vote_req(2, 1, 5, 0, 0));
    flush(&mut r);
    r.step(vote_req(3, 1, 4, 0, 0));
    let rd = flush(&mut r);
    assert!(vote_responses(&rd).is_empty());
    assert!(rd.hard_state.is_none());
    assert_eq!(r.hard_state().vote, Some(2));
    assert_eq!(r.status().term, 5);
}

/// §5.2: "A candidate wins an election if it receives votes from a majority of the servers in the full
/// cluster for the same term." In a 5-node cluster, its own vote plus two are enough, plus one is not.
#[test]
fn candidate_wins_with_votes_from_a_majority() {
    let mut r = plain(1, 5);
    tick_until_campaign(&mut r);
    flush(&mut r);
    r.step(msg(2, 1, 1, MessageBody::VoteResponse { granted: true }));
    r.step(msg(3, 1, 1, MessageBody::VoteResponse { granted: false }));
    assert_eq!(r.status().role, Role::Candidate);
    // A duplicate grant from the same voter is not counted twice.
    r.step(msg(2, 1, 1, MessageBody::VoteResponse { granted: true }));
    assert_eq!(r.status().role, Role::Candidate);
    r.step(msg(4, 1, 1, MessageBody::VoteResponse { granted: true }));
    let st = r.status();
    assert_eq!((st.role, st.term, st.leader), (Role::Leader, 1, Some(1)));
    // The new leader appends a no-op of its term (§8) and offers it to every follower.
    let rd = flush(&mut r);
    assert_eq!(rd.entries.len(), 1);
    assert_eq!((rd.entries[0].index, rd.entries[0].term), (1, 1));
    assert_eq!(rd.entries[0].kind, EntryKind::Noop);
    for to in 2..=5 {
        let apps = appends_to(&rd.messages, to);
        assert_eq!(apps.len(), 1, "to {to}");
        assert_eq!((apps[0].0, apps[0].1), (0, 0));
        assert_eq!(apps[0].2.len(), 1);
    }
}

/// A candidate refused by a majority cannot win this term and returns to follower.
#[test]
fn candidate_refused_by_majority_becomes_follower() {
    let mut r = plain(1, 3);
    tick_until_campaign(&mut r);
    flush(&mut r);
    r.step(msg(2, 1, 1, MessageBody::VoteResponse { granted: false }));
    assert_eq!(r.status().role, Role::Candidate);
    r.step(msg(3, 1, 1, MessageBody::VoteResponse { granted: false }));
    assert_eq!(r.status().role, Role::Follower);
    assert_eq!(r.status().term, 1);
}

/// §5.2: a candidate whose election ends in a split vote times out and starts a new election with a
/// new term.
#[test]
fn candidate_without_majority_starts_a_new_election_after_timeout() {
    let mut r = plain(1, 3);
    tick_until_campaign(&mut r);
    flush(&mut r);
    tick_until_new_term(&mut r);
    assert_eq!(r.status().term, 2);
    assert_eq!(r.hard_state().vote, Some(1));
    let rd = r.ready();
    assert_eq!(rd.messages_after_persist.len(), 2);
    assert!(rd.messages_after_persist.iter().all(|m| m.term == 2));
}

fn tick_until_new_term(r: &mut Raft) {
    let term = r.status().term;
    for _ in 0..100 {
        r.tick();
        if r.status().term != term {
            return;
        }
    }
    panic!("no new election");
}

/// §5.1: "If a candidate or leader discovers that its term is out of date, it immediately reverts to
/// follower state."
#[test]
fn candidate_steps_down_on_message_with_higher_term() {
    let mut r = plain(1, 3);
    tick_until_campaign(&mut r);
    flush(&mut r);
    r.step(msg(2, 1, 3, MessageBody::VoteResponse { granted: false }));
    let st = r.status();
    assert_eq!((st.role, st.term, st.leader), (Role::Follower, 3, None));
    assert_eq!(r.hard_state().vote, None);
}

/// §5.2: "If the leader's term ... is at least as large as the candidate's current term, then the
/// candidate recognizes the leader as legitimate and returns to follower state."
#[test]
fn candidate_steps_down_on_append_from_leader_of_same_term() {
    let mut r = plain(1, 3);
    tick_until_campaign(&mut r);
    flush(&mut r);
    r.step(msg(
        2,
        1,
        1,
        MessageBody::Append {
            prev_index: 0,
            prev_term: 0,
            entries: vec![entry(1, 1)],
            commit: 0,
        },
    ));
    let st = r.status();
    assert_eq!((st.role, st.term, st.leader), (Role::Follower, 1, Some(2)));
    assert_eq!(r.hard_state().vote, Some(1), "its own vote stands");
    let rd = flush(&mut r);
    assert_eq!(
        rd.messages_after_persist[0].body,
        MessageBody::AppendResponse(AppendResult::Accepted { last_index: 1 })
    );
}

/// §9.6: a pre-candidate asks "would you vote for me at term + 1?" without bumping its own term or
/// anybody else's; the question depends on nothing durable, so it goes out at once.
#[test]
fn pre_vote_does_not_bump_terms() {
    let mut r = node_with(1, 3, |c| c);
    tick_until_campaign(&mut r);
    assert_eq!(r.status().role, Role::PreCandidate);
    assert_eq!(r.status().term, 0);
    let rd = r.ready();
    assert_eq!(rd.hard_state, None);
    assert!(rd.messages_after_persist.is_empty());
    assert_eq!(rd.messages.len(), 2);
    for m in &rd.messages {
        assert_eq!(m.term, 1);
        assert!(matches!(m.body, MessageBody::PreVote { .. }));
    }
    // The receiver grants the pre-vote but keeps its term and its (absent) vote.
    let mut peer = node_with(2, 3, |c| c);
    peer.step(rd.messages.iter().find(|m| m.to == 2).unwrap().clone());
    assert_eq!(peer.hard_state(), HardState::default());
    let prd = peer.ready();
    assert!(prd.hard_state.is_none());
    assert_eq!(prd.messages.len(), 1);
    assert_eq!(prd.messages[0].term, 1);
    assert_eq!(
        prd.messages[0].body,
        MessageBody::PreVoteResponse { granted: true }
    );
    // With a majority of pre-votes, the real election starts at term 1.
    r.step(prd.messages[0].clone());
    let st = r.status();
    assert_eq!((st.role, st.term), (Role::Candidate, 1));
    assert_eq!(r.hard_state().vote, Some(1));
}

/// §9.6: a pre-vote is refused to a node whose log is behind, again without changing any term.
#[test]
fn pre_vote_refused_to_stale_log() {
    let mut peer = node_with(2, 3, |mut c| {
        c.check_quorum = false;
        c
    });
    peer.step(msg(
        3,
        2,
        2,
        MessageBody::Append {
            prev_index: 0,
            prev_term: 0,
            entries: vec![entry(1, 2)],
            commit: 0,
        },
    ));
    flush(&mut peer);
    peer.step(msg(
        1,
        2,
        3,
        MessageBody::PreVote {
            last_index: 1,
            last_term: 1,
        },
    ));
    let rd = peer.ready();
    assert_eq!(peer.status().term, 2);
    assert!(rd.hard_state.is_none());
    assert_eq!(rd.messages.len(), 1);
    assert_eq!(rd.messages[0].term, 2);
    assert_eq!(
        rd.messages[0].body,
        MessageBody::PreVoteResponse { granted: false }
    );
}

/// §9.6: a node cut off from the cluster keeps timing out, but with pre-vote its term does not grow,
/// so when it rejoins it does not depose the healthy leader.
#[test]
fn partitioned_node_rejoining_does_not_disrupt_the_leader() {
    let mut c = Cluster::new(3);
    let leader = c.elect();
    let term = c.nodes[&leader].raft.status().term;
    let loner = (1..=3).find(|id| *id != leader).unwrap();
    c.isolate(loner);
    c.tick_all(100);
    assert_eq!(c.nodes[&loner].raft.status().term, term);
    assert_ne!(c.nodes[&loner].raft.status().role, Role::Leader);
    c.heal();
    c.tick_all(30);
    assert_eq!(c.leader(), Some(leader));
    for id in 1..=3 {
        assert_eq!(c.nodes[&id].raft.status().term, term, "node {id}");
    }
    assert_eq!(c.nodes[&loner].raft.status().leader, Some(leader));
}

/// Without pre-vote the same partition inflates the loner's term and forces a new election on
/// rejoining: the disruption pre-vote exists to prevent.
#[test]
fn without_pre_vote_a_rejoining_node_forces_a_new_term() {
    let mut c = Cluster::with_config(3, |mut cfg| {
        cfg.pre_vote = false;
        cfg.check_quorum = false;
        cfg
    });
    let leader = c.elect();
    let term = c.nodes[&leader].raft.status().term;
    let loner = (1..=3).find(|id| *id != leader).unwrap();
    c.isolate(loner);
    c.tick_all(100);
    assert!(c.nodes[&loner].raft.status().term > term + 2);
    c.heal();
    c.tick_all(60);
    let new_term = c.nodes[&c.leader().unwrap()].raft.status().term;
    assert!(new_term > term + 2, "term {new_term} vs {term}");
}

/// §6.2: "a leader steps down if an election timeout elapses without a successful round of heartbeats
/// to a majority of its cluster."
#[test]
fn check_quorum_leader_steps_down_without_majority_contact() {
    let mut r = node_with(1, 3, |c| c);
    make_leader(&mut r);
    let term = r.status().term;
    for _ in 0..10 {
        r.tick();
        flush(&mut r);
    }
    // The first window counts the election itself as contact.
    assert_eq!(r.status().role, Role::Leader);
    for _ in 0..10 {
        r.tick();
        flush(&mut r);
    }
    let st = r.status();
    assert_eq!((st.role, st.term, st.leader), (Role::Follower, term, None));
}

/// §6.2: a leader that hears from a majority each window stays leader.
#[test]
fn check_quorum_leader_stays_with_majority_contact() {
    let mut r = node_with(1, 3, |c| c);
    make_leader(&mut r);
    for _ in 0..50 {
        r.tick();
        let rd = flush(&mut r);
        ack_heartbeats(&mut r, &rd.messages, &[2]);
    }
    assert_eq!(r.status().role, Role::Leader);
}

/// §4.2.3: a server that heard from a current leader within the minimum election timeout ignores
/// vote requests (it neither updates its term nor grants its vote); once the lease lapses it answers.
#[test]
fn voter_in_leader_lease_ignores_vote_requests() {
    let mut r = node_with(1, 3, |c| c);
    r.step(msg(
        2,
        1,
        1,
        MessageBody::Heartbeat {
            commit: 0,
            read_round: 0,
        },
    ));
    flush(&mut r);
    r.tick();
    r.step(vote_req(3, 1, 2, 5, 1));
    let rd = flush(&mut r);
    assert!(vote_responses(&rd).is_empty());
    assert!(rd.hard_state.is_none());
    assert_eq!(r.status().term, 1);
    r.step(msg(
        3,
        1,
        2,
        MessageBody::PreVote {
            last_index: 5,
            last_term: 1,
        },
    ));
    assert!(flush(&mut r).messages.is_empty(), "pre-votes too");
    // Without word from the leader for the minimum election timeout, the lease is gone.
    for _ in 0..9 {
        r.tick();
    }
    assert_eq!(r.status().role, Role::Follower, "not yet timed out itself");
    r.step(vote_req(3, 1, 2, 5, 1));
    let rd = flush(&mut r);
    assert_eq!(vote_responses(&rd), vec![(3, 2, true)]);
}

/// Figure 2 ("persistent state ... updated on stable storage before responding"): a candidate's own
/// vote is one of its votes, so a sole voter does not lead until its new term and self-vote are on
/// disk. Its vote comes back to it in `messages_after_persist`; a crash before that leaves no leader
/// of the term behind, so the term cannot be led twice with different entries.
#[test]
fn a_sole_voter_leads_only_once_its_own_vote_is_durable() {
    let mut r = Raft::new(plain_config(1, 1), InitialState::default());
    tick_until_campaign(&mut r);
    let rd = r.ready();
    assert_eq!(r.status().role, Role::Candidate);
    assert_eq!(rd.hard_state.map(|hs| hs.vote), Some(Some(1)));
    assert!(rd.messages.is_empty());
    let own: Vec<Message> = rd.messages_after_persist;
    assert_eq!(
        own,
        vec![msg(
            1,
            1,
            r.status().term,
            MessageBody::VoteResponse { granted: true }
        )]
    );
    for m in own {
        r.step(m);
    }
    assert_eq!(r.status().role, Role::Leader);
}

//! Dissertation §6.4.1: reads served from the leader's lease, without a heartbeat round per batch.
//! Opt-in (`Config::lease_reads`); it relies on bounded clock *rates*, never on clocks agreeing.

mod harness;

use bytes::Bytes;
use harness::*;
use raftkv_raft::*;

fn lease_config(id: NodeId, n: u64) -> Config {
    let mut c = config(id, n);
    c.lease_reads = true;
    c
}

/// A 3-node leader with leases on that has committed its no-op; no heartbeat answered yet.
fn lease_leader() -> Raft {
    let mut r = Raft::new(lease_config(1, 3), InitialState::default());
    let rd = make_leader(&mut r);
    ack_appends(&mut r, &rd.messages);
    flush(&mut r);
    assert_eq!(r.status().commit, 1);
    r
}

/// One tick: the leader's periodic heartbeat (every tick in these tests). Returns its messages.
fn tick_heartbeat(r: &mut Raft) -> Vec<Message> {
    r.tick();
    flush(r).messages
}

fn has_read_round(msgs: &[Message]) -> bool {
    msgs.iter()
        .any(|m| matches!(m.body, MessageBody::Heartbeat { read_round, .. } if read_round > 0))
}

/// The lease is ticks, not time: 10 election ticks give 7 ticks of lease.
#[test]
fn lease_length_leaves_a_margin_for_clock_rates_and_rounding() {
    assert_eq!(lease_ticks(10), 7);
    assert_eq!(MAX_CLOCK_RATE_DIFFERENCE_PERCENT, 10);
}

/// §6.4.1: once a majority has answered a heartbeat, the leader serves reads at its commit index
/// with no further round, while the lease holds.
#[test]
fn read_is_served_from_the_lease_without_a_heartbeat_round() {
    let mut r = lease_leader();
    assert!(!r.holds_lease(), "no majority has answered a heartbeat yet");
    let heartbeats = tick_heartbeat(&mut r);
    ack_heartbeats(&mut r, &heartbeats, &[2]);
    assert!(r.holds_lease());
    r.read_index(7).unwrap();
    let rd = flush(&mut r);
    assert_eq!(rd.read_states, vec![ReadState { ctx: 7, index: 1 }]);
    assert!(!has_read_round(&rd.messages), "no round for a lease read");
}

/// The lease runs from when the acknowledged heartbeat was *sent*: a late answer buys only what is
/// left of it.
#[test]
fn lease_counts_from_the_heartbeat_not_from_its_answer() {
    let mut r = lease_leader();
    let heartbeats = tick_heartbeat(&mut r);
    // Six more ticks pass before the answer arrives (their own heartbeats go unanswered).
    for _ in 0..6 {
        tick_heartbeat(&mut r);
    }
    ack_heartbeats(&mut r, &heartbeats, &[3]);
    assert!(r.holds_lease(), "sent 6 ticks ago, lease is 7");
    tick_heartbeat(&mut r);
    assert!(
        !r.holds_lease(),
        "7 ticks after the answered heartbeat was sent"
    );
    // Without the lease, a read falls back to a ReadIndex round.
    r.read_index(9).unwrap();
    let rd = flush(&mut r);
    assert!(rd.read_states.is_empty());
    assert!(has_read_round(&rd.messages));
}

/// An answer from one follower of five is no majority: no lease.
#[test]
fn minority_answers_give_no_lease() {
    let mut r = Raft::new(lease_config(1, 5), InitialState::default());
    let rd = make_leader(&mut r);
    ack_appends(&mut r, &rd.messages);
    flush(&mut r);
    let heartbeats = tick_heartbeat(&mut r);
    ack_heartbeats(&mut r, &heartbeats, &[2]);
    assert!(!r.holds_lease());
    ack_heartbeats(&mut r, &heartbeats, &[4]);
    assert!(r.holds_lease());
}

/// §8: a new leader's commit index may be behind what earlier leaders acknowledged until it commits
/// an entry of its own term; the lease serves nothing before that.
#[test]
fn no_lease_reads_before_the_leader_commits_in_its_term() {
    let mut r = Raft::new(lease_config(1, 3), InitialState::default());
    make_leader(&mut r);
    let heartbeats = tick_heartbeat(&mut r);
    ack_heartbeats(&mut r, &heartbeats, &[2, 3]);
    assert_eq!(r.status().commit, 0);
    assert!(!r.holds_lease());
    r.read_index(1).unwrap();
    assert!(flush(&mut r).read_states.is_empty());
}

/// §3.10 and §6.4.1: a transfer's vote is granted inside the voters' refusal window, so the leader
/// gives up its lease for the rest of the term once it sends TimeoutNow, even if the transfer fails.
#[test]
fn a_leadership_transfer_ends_the_lease_for_the_term() {
    let mut r = lease_leader();
    let heartbeats = tick_heartbeat(&mut r);
    ack_heartbeats(&mut r, &heartbeats, &[2, 3]);
    assert!(r.holds_lease());
    r.transfer_leadership(2).unwrap();
    let rd = flush(&mut r);
    assert!(rd
        .messages
        .iter()
        .any(|m| m.to == 2 && m.body == MessageBody::TimeoutNow));
    // The transfer times out after an election timeout; the leader stays leader, without a lease.
    for _ in 0..12 {
        let heartbeats = tick_heartbeat(&mut r);
        ack_heartbeats(&mut r, &heartbeats, &[2, 3]);
    }
    assert_eq!(r.status().role, Role::Leader);
    assert!(!r.holds_lease());
    r.read_index(4).unwrap();
    let rd = flush(&mut r);
    assert!(
        rd.read_states.is_empty(),
        "served by a ReadIndex round instead"
    );
    assert!(has_read_round(&rd.messages));
}

/// §4.1 with §6.4.1: answers counted under the old voters are no lease over the new ones.
#[test]
fn a_membership_change_forgets_the_lease() {
    let mut r = lease_leader();
    let heartbeats = tick_heartbeat(&mut r);
    ack_heartbeats(&mut r, &heartbeats, &[2, 3]);
    assert!(r.holds_lease());
    r.propose_conf_change(ConfChange::AddLearner(4), Bytes::new(), 0)
        .unwrap();
    flush(&mut r);
    assert!(!r.holds_lease());
    let heartbeats = tick_heartbeat(&mut r);
    ack_heartbeats(&mut r, &heartbeats, &[3]);
    assert!(
        r.holds_lease(),
        "a round under the new membership renews it"
    );
}

/// The follower's side (§4.2.3): with leases, a node refuses votes for its first election timeout
/// after it starts, since it may have answered a heartbeat just before a crash. Without leases a
/// freshly started node votes at once, as before.
#[test]
fn a_restarted_node_refuses_votes_for_an_election_timeout() {
    let hard_state = HardState {
        term: 3,
        vote: Some(1),
        commit: 0,
    };
    let vote = |term| {
        msg(
            2,
            3,
            term,
            MessageBody::Vote {
                last_index: 0,
                last_term: 0,
                transfer: false,
            },
        )
    };
    let granted = |rd: &Ready| {
        all_messages(rd)
            .iter()
            .any(|m| m.to == 2 && m.body == MessageBody::VoteResponse { granted: true })
    };

    let mut with_lease = restart(lease_config(3, 3), hard_state, None, vec![]);
    with_lease.step(vote(4));
    assert!(!granted(&flush(&mut with_lease)));
    assert_eq!(with_lease.status().term, 3, "the request was ignored");
    for _ in 0..10 {
        with_lease.tick();
    }
    // Past its election timeout (it may have campaigned itself: a higher term is still granted).
    let term = with_lease.status().term + 1;
    with_lease.step(vote(term));
    assert!(granted(&flush(&mut with_lease)));

    let mut without = restart(config(3, 3), hard_state, None, vec![]);
    without.step(vote(4));
    assert!(granted(&flush(&mut without)));
}

/// Without the option nothing changes: every read waits for its heartbeat round.
#[test]
fn without_leases_every_read_takes_a_round() {
    let mut r = Raft::new(config(1, 3), InitialState::default());
    let rd = make_leader(&mut r);
    ack_appends(&mut r, &rd.messages);
    flush(&mut r);
    let heartbeats = tick_heartbeat(&mut r);
    ack_heartbeats(&mut r, &heartbeats, &[2, 3]);
    assert!(!r.holds_lease());
    r.read_index(1).unwrap();
    let rd = flush(&mut r);
    assert!(rd.read_states.is_empty());
    assert!(has_read_round(&rd.messages));
}

/// A follower that answered the leader keeps refusing votes for the whole window even when a higher
/// term (here a rejected pre-vote of its own, answered late) makes it forget that leader: the
/// leader's lease counts on it.
#[test]
fn a_higher_term_does_not_end_a_follower_s_refusal_window() {
    let vote = |term| {
        msg(
            3,
            2,
            term,
            MessageBody::Vote {
                last_index: 5,
                last_term: 1,
                transfer: false,
            },
        )
    };
    let granted = |rd: &Ready| {
        all_messages(rd)
            .iter()
            .any(|m| m.to == 3 && m.body == MessageBody::VoteResponse { granted: true })
    };
    for (lease_reads, expect_granted) in [(true, false), (false, true)] {
        let mut config = config(2, 3);
        config.lease_reads = lease_reads;
        let mut f = Raft::new(config, InitialState::default());
        // Past the start-up window, then a heartbeat from leader 1 of term 1.
        for _ in 0..12 {
            f.tick();
        }
        f.step(msg(
            1,
            2,
            1,
            MessageBody::Heartbeat {
                commit: 0,
                read_round: 1,
            },
        ));
        flush(&mut f);
        // A late rejection of an old pre-vote carries term 2: the follower forgets its leader.
        f.step(msg(
            3,
            2,
            2,
            MessageBody::PreVoteResponse { granted: false },
        ));
        assert_eq!(f.status().term, 2);
        assert_eq!(f.status().leader, None);
        flush(&mut f);
        f.step(vote(2));
        assert_eq!(
            granted(&flush(&mut f)),
            expect_granted,
            "lease_reads = {lease_reads}"
        );
    }
}

/// A read served from the lease does not overtake an earlier read still waiting for its round: one
/// connection's reads take effect in the order sent.
#[test]
fn a_lease_read_waits_behind_an_earlier_read() {
    let mut r = lease_leader();
    // Round 1: a periodic heartbeat, no reads.
    let first = tick_heartbeat(&mut r);
    // A read arrives before any answer: it takes round 2.
    r.read_index(1).unwrap();
    let second = flush(&mut r).messages;
    assert!(has_read_round(&second));
    // Round 1 is answered: the lease holds, but read 1 still waits for round 2.
    ack_heartbeats(&mut r, &first, &[2]);
    assert!(r.holds_lease());
    r.read_index(2).unwrap();
    let rd = flush(&mut r);
    assert!(rd.read_states.is_empty(), "read 2 must not pass read 1");
    let third = rd.messages;
    ack_heartbeats(&mut r, &second, &[2]);
    ack_heartbeats(&mut r, &third, &[2]);
    let order: Vec<u64> = flush(&mut r).read_states.iter().map(|s| s.ctx).collect();
    assert_eq!(order, vec![1, 2]);
    // With nothing waiting, the next read comes from the lease at once.
    r.read_index(3).unwrap();
    assert_eq!(flush(&mut r).read_states.len(), 1);
}

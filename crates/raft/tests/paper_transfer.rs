//! Dissertation §3.10: leadership transfer with TimeoutNow.

mod harness;

use bytes::Bytes;
use harness::*;
use raftkv_raft::*;

/// A 3-node leader (with pre-vote and check-quorum, as deployed) whose followers acknowledged its
/// no-op.
fn steady_leader() -> Raft {
    let mut r = node_with(1, 3, |c| c);
    let rd = make_leader(&mut r);
    ack_appends(&mut r, &rd.messages);
    flush(&mut r);
    r
}

fn timeout_nows(msgs: &[Message]) -> Vec<NodeId> {
    msgs.iter()
        .filter(|m| m.body == MessageBody::TimeoutNow)
        .map(|m| m.to)
        .collect()
}

/// §3.10 step 2: once the target's log is current, the leader sends it TimeoutNow.
#[test]
fn timeout_now_is_sent_to_a_caught_up_target() {
    let mut r = steady_leader();
    r.transfer_leadership(2).unwrap();
    let rd = flush(&mut r);
    assert_eq!(timeout_nows(&rd.messages), vec![2]);
    assert_eq!(r.status().role, Role::Leader, "it leads until deposed");
}

/// §3.10 step 1: a lagging target first receives the missing entries; TimeoutNow follows its
/// acknowledgement, not before.
#[test]
fn timeout_now_waits_until_the_target_catches_up() {
    let mut r = steady_leader();
    r.propose(Bytes::from_static(b"x")).unwrap();
    let rd = flush(&mut r);
    let to3: Vec<Message> = rd.messages.iter().filter(|m| m.to == 3).cloned().collect();
    ack_appends(&mut r, &to3);
    r.transfer_leadership(2).unwrap();
    let rd = flush(&mut r);
    assert!(timeout_nows(&rd.messages).is_empty());
    r.step(msg(
        2,
        1,
        1,
        MessageBody::AppendResponse(AppendResult::Accepted { last_index: 2 }),
    ));
    let rd = flush(&mut r);
    assert_eq!(timeout_nows(&rd.messages), vec![2]);
}

/// §3.10 step 2: "This message has the same effect as the target server's election timer firing":
/// it starts a real election at once (no pre-vote), marked as a transfer.
#[test]
fn target_campaigns_immediately_on_timeout_now() {
    let mut f = node_with(2, 3, |c| c);
    f.step(msg(
        1,
        2,
        1,
        MessageBody::Heartbeat {
            commit: 0,
            read_round: 0,
        },
    ));
    flush(&mut f);
    f.step(msg(1, 2, 1, MessageBody::TimeoutNow));
    let st = f.status();
    assert_eq!((st.role, st.term), (Role::Candidate, 2));
    let rd = f.ready();
    assert_eq!(rd.messages_after_persist.len(), 2);
    for m in &rd.messages_after_persist {
        assert_eq!(m.term, 2);
        assert_eq!(
            m.body,
            MessageBody::Vote {
                last_index: 0,
                last_term: 0,
                transfer: true
            }
        );
    }
}

/// A transfer vote is not refused for the leader lease: the voters heard from the leader a moment ago,
/// but the leader itself asked for the change.
#[test]
fn transfer_vote_bypasses_the_leader_lease() {
    let mut v = node_with(3, 3, |c| c);
    v.step(msg(
        1,
        3,
        1,
        MessageBody::Heartbeat {
            commit: 0,
            read_round: 0,
        },
    ));
    flush(&mut v);
    v.step(msg(
        2,
        3,
        2,
        MessageBody::Vote {
            last_index: 0,
            last_term: 0,
            transfer: true,
        },
    ));
    let rd = flush(&mut v);
    assert_eq!(
        rd.messages_after_persist[0].body,
        MessageBody::VoteResponse { granted: true }
    );
    assert_eq!(v.status().term, 2);
}

/// End to end: the target wins, the old leader follows it, and nothing committed is lost.
#[test]
fn target_wins_the_election() {
    let mut c = Cluster::new(3);
    let old = c.elect();
    c.node(old).propose(Bytes::from_static(b"before")).unwrap();
    c.settle();
    let term = c.nodes[&old].raft.status().term;
    let target = (1..=3).find(|id| *id != old).unwrap();
    c.node(old).transfer_leadership(target).unwrap();
    c.settle();
    assert_eq!(c.leader(), Some(target));
    assert_eq!(c.nodes[&target].raft.status().term, term + 1);
    let st = c.nodes[&old].raft.status();
    assert_eq!((st.role, st.leader), (Role::Follower, Some(target)));
    c.node(target)
        .propose(Bytes::from_static(b"after"))
        .unwrap();
    c.settle();
    c.tick_all(2);
    for id in 1..=3 {
        assert_eq!(
            c.applied_data(id),
            vec![Bytes::from_static(b"before"), Bytes::from_static(b"after")],
            "node {id}"
        );
    }
}

/// §3.10: "the prior leader stops accepting new client requests" during the transfer.
#[test]
fn proposals_are_refused_while_transferring() {
    let mut r = steady_leader();
    r.transfer_leadership(2).unwrap();
    assert_eq!(
        r.propose(Bytes::from_static(b"x")),
        Err(ProposeError::Transferring)
    );
    assert_eq!(r.status().last_index, 1);
}

/// §3.10: "If the transfer does not complete within an election timeout, the prior leader aborts the
/// transfer and resumes accepting client requests."
#[test]
fn transfer_is_aborted_after_an_election_timeout() {
    let mut r = steady_leader();
    r.transfer_leadership(2).unwrap();
    flush(&mut r);
    for _ in 0..9 {
        r.tick();
        let rd = flush(&mut r);
        ack_heartbeats(&mut r, &rd.messages, &[2, 3]);
    }
    assert_eq!(
        r.propose(Bytes::from_static(b"x")),
        Err(ProposeError::Transferring)
    );
    r.tick();
    assert_eq!(r.status().role, Role::Leader);
    assert_eq!(r.propose(Bytes::from_static(b"x")), Ok((2, 1)));
}

/// Only a leader can hand over leadership.
#[test]
fn follower_cannot_transfer() {
    let mut f = node_with(2, 3, |c| c);
    assert_eq!(
        f.transfer_leadership(3),
        Err(ProposeError::NotLeader { leader: None })
    );
}

/// Check-quorum (§6.2) still applies during transfers: a leader cut off from everyone steps down within
/// about an election timeout even if its driver keeps asking it to transfer leadership, because the
/// transfer has its own timer and does not reset the quorum check.
#[test]
fn repeated_transfer_requests_do_not_keep_a_cut_off_leader() {
    let mut r = steady_leader();
    let election_ticks = plain_config(1, 3).election_ticks.max(10);
    for _ in 0..(3 * election_ticks) {
        let _ = r.transfer_leadership(2);
        r.tick();
        flush(&mut r);
        if r.status().role != Role::Leader {
            break;
        }
    }
    assert_ne!(
        r.status().role,
        Role::Leader,
        "a leader without a quorum must step down"
    );
}

//! Dissertation §6.4: linearizable reads with ReadIndex, without writing the log.

mod harness;

use bytes::Bytes;
use harness::*;
use raftkv_raft::*;

/// A plain 3-node leader that has committed its no-op, with both followers in replication.
fn steady_leader() -> Raft {
    let mut r = plain(1, 3);
    let rd = make_leader(&mut r);
    ack_appends(&mut r, &rd.messages);
    flush(&mut r);
    assert_eq!(r.status().commit, 1);
    r
}

fn read_rounds(msgs: &[Message]) -> Vec<(NodeId, u64)> {
    msgs.iter()
        .filter_map(|m| match m.body {
            MessageBody::Heartbeat { read_round, .. } if read_round > 0 => Some((m.to, read_round)),
            _ => None,
        })
        .collect()
}

fn hb_ack(r: &mut Raft, from: NodeId, read_round: u64) {
    let term = r.status().term;
    r.step(msg(
        from,
        1,
        term,
        MessageBody::HeartbeatResponse { read_round },
    ));
}

/// §6.4 steps 1–3: the leader records its commit index, confirms it is still leader with a heartbeat
/// round acknowledged by a majority, and only then releases the read at the recorded index.
#[test]
fn read_is_released_only_after_a_quorum_heartbeat_round() {
    let mut r = steady_leader();
    r.read_index(7).unwrap();
    let rd = flush(&mut r);
    assert!(rd.read_states.is_empty());
    let rounds = read_rounds(&rd.messages);
    assert_eq!(rounds.len(), 2);
    let round = rounds[0].1;
    assert!(rounds.iter().all(|(_, n)| *n == round));
    // A heartbeat answer of no read round proves nothing about this read.
    hb_ack(&mut r, 2, 0);
    assert!(flush(&mut r).read_states.is_empty());
    hb_ack(&mut r, 2, round);
    let rd = flush(&mut r);
    assert_eq!(rd.read_states, vec![ReadState { ctx: 7, index: 1 }]);
    // The late answer of the other follower releases nothing twice.
    hb_ack(&mut r, 3, round);
    assert!(flush(&mut r).read_states.is_empty());
}

/// §6.4: "the leader can batch": every read that arrives before the round starts shares its one
/// heartbeat per follower; reads arriving after it wait for the next round.
#[test]
fn many_reads_share_one_heartbeat_round() {
    let mut r = steady_leader();
    for ctx in 0..10 {
        r.read_index(ctx).unwrap();
    }
    let rd = flush(&mut r);
    let rounds = read_rounds(&rd.messages);
    assert_eq!(rounds.len(), 2, "one heartbeat per follower: {rounds:?}");
    let first = rounds[0].1;
    r.read_index(100).unwrap();
    let rd = flush(&mut r);
    let second = read_rounds(&rd.messages)[0].1;
    assert!(second > first);
    hb_ack(&mut r, 3, first);
    let released: Vec<u64> = flush(&mut r).read_states.iter().map(|s| s.ctx).collect();
    assert_eq!(released, (0..10).collect::<Vec<u64>>());
    hb_ack(&mut r, 3, second);
    let rd = flush(&mut r);
    assert_eq!(rd.read_states, vec![ReadState { ctx: 100, index: 1 }]);
}

/// An acknowledgement of a later round also confirms every earlier one.
#[test]
fn later_round_acknowledgement_confirms_earlier_rounds() {
    let mut r = steady_leader();
    r.read_index(1).unwrap();
    let first = read_rounds(&flush(&mut r).messages)[0].1;
    r.read_index(2).unwrap();
    let second = read_rounds(&flush(&mut r).messages)[0].1;
    assert!(second > first);
    hb_ack(&mut r, 2, second);
    let ctxs: Vec<u64> = flush(&mut r).read_states.iter().map(|s| s.ctx).collect();
    assert_eq!(ctxs, vec![1, 2]);
}

/// The read index is the commit index when the round started, not when it was confirmed.
#[test]
fn read_index_is_the_commit_index_at_the_start_of_the_round() {
    let mut r = steady_leader();
    r.read_index(1).unwrap();
    let round = read_rounds(&flush(&mut r).messages)[0].1;
    r.propose(Bytes::from_static(b"w")).unwrap();
    let rd = flush(&mut r);
    ack_appends(&mut r, &rd.messages);
    assert_eq!(r.status().commit, 2);
    hb_ack(&mut r, 2, round);
    assert_eq!(
        flush(&mut r).read_states,
        vec![ReadState { ctx: 1, index: 1 }]
    );
}

/// §6.4 step 1 / §8: a new leader's commit index may lag what an earlier leader committed until it
/// commits an entry of its own term, so reads wait for that before starting a round.
#[test]
fn reads_before_the_leaders_first_commit_in_its_term_wait() {
    let mut r = restart(
        plain_config(1, 3),
        HardState {
            term: 1,
            vote: None,
            commit: 1,
        },
        None,
        entries_with_terms(1, &[1, 1]),
    );
    let rd = make_leader(&mut r);
    assert_eq!(r.status().commit, 1);
    r.read_index(5).unwrap();
    let noop_appends = rd.messages.clone();
    let rd = flush(&mut r);
    assert!(read_rounds(&rd.messages).is_empty(), "no round yet");
    // Even a heartbeat round started for other reasons must not release it.
    r.tick();
    let rd = flush(&mut r);
    for m in &rd.messages {
        if let MessageBody::Heartbeat { read_round, .. } = m.body {
            hb_ack(&mut r, m.to, read_round);
        }
    }
    assert!(flush(&mut r).read_states.is_empty());
    // The no-op of term 2 commits: now the read joins a round at the new commit index.
    ack_appends(&mut r, &noop_appends);
    assert_eq!(r.status().commit, 3);
    let rd = flush(&mut r);
    assert!(rd.read_states.is_empty());
    let round = read_rounds(&rd.messages)[0].1;
    hb_ack(&mut r, 2, round);
    assert_eq!(
        flush(&mut r).read_states,
        vec![ReadState { ctx: 5, index: 3 }]
    );
}

/// A leader deposed before the round is confirmed releases nothing: its reads are dropped (the driver
/// sees the role change and fails them), and late acknowledgements change nothing.
#[test]
fn deposed_leader_releases_nothing() {
    let mut r = steady_leader();
    r.read_index(9).unwrap();
    let round = read_rounds(&flush(&mut r).messages)[0].1;
    r.step(msg(
        3,
        1,
        2,
        MessageBody::Heartbeat {
            commit: 1,
            read_round: 0,
        },
    ));
    let rd = flush(&mut r);
    assert_eq!(rd.soft_state.map(|s| s.role), Some(Role::Follower));
    r.step(msg(
        2,
        1,
        1,
        MessageBody::HeartbeatResponse { read_round: round },
    ));
    r.step(msg(
        2,
        1,
        2,
        MessageBody::HeartbeatResponse { read_round: round },
    ));
    assert!(flush(&mut r).read_states.is_empty());
    assert_eq!(
        r.read_index(10),
        Err(ProposeError::NotLeader { leader: Some(3) })
    );
}

/// A one-node cluster is its own majority: a read is released at once, but not before the leader has
/// committed in its term.
#[test]
fn single_node_reads_need_no_round_trip() {
    let mut r = Raft::new(plain_config(1, 1), InitialState::default());
    tick_until_campaign(&mut r);
    // Its own vote counts once durable: the driver hands it back after the disk.
    for own_vote in r.ready().messages_after_persist {
        r.step(own_vote);
    }
    r.read_index(1).unwrap();
    let rd = r.ready();
    assert!(rd.read_states.is_empty());
    r.persisted(1, 1);
    let rd = flush(&mut r);
    assert_eq!(rd.read_states, vec![ReadState { ctx: 1, index: 1 }]);
    r.read_index(2).unwrap();
    let rd = flush(&mut r);
    assert_eq!(rd.read_states, vec![ReadState { ctx: 2, index: 1 }]);
    assert!(rd.messages.is_empty());
}

/// End to end: reads on a cluster come back through the driver at the applied index.
#[test]
fn cluster_serves_reads_after_writes() {
    let mut c = Cluster::new(3);
    let leader = c.elect();
    c.node(leader).propose(Bytes::from_static(b"w")).unwrap();
    c.settle();
    c.node(leader).read_index(42).unwrap();
    c.settle();
    let reads = &c.nodes[&leader].reads;
    assert_eq!(reads.len(), 1);
    assert_eq!(reads[0].ctx, 42);
    assert_eq!(reads[0].index, c.nodes[&leader].raft.status().commit);
    assert!(c.nodes[&leader].raft.status().applied >= reads[0].index);
}

/// The heartbeats of a read round may be lost; the leader's periodic heartbeats carry the newest
/// pending round, so the read still completes rather than hanging forever.
#[test]
fn read_round_survives_lost_heartbeats() {
    let mut r = steady_leader();
    r.read_index(3).unwrap();
    let rd = flush(&mut r);
    assert_eq!(read_rounds(&rd.messages).len(), 2); // both lost
    r.tick();
    let rd = flush(&mut r);
    let rounds = read_rounds(&rd.messages);
    assert_eq!(rounds.len(), 2, "the periodic heartbeat re-asks");
    hb_ack(&mut r, 2, rounds[0].1);
    assert_eq!(
        flush(&mut r).read_states,
        vec![ReadState { ctx: 3, index: 1 }]
    );
}

/// §4.1 with §6.4: a membership change takes effect when appended, and the leader counts reads' rounds
/// among the new voters. A leader left as the only voter has nobody to answer a round already sent:
/// it releases the reads waiting for one itself, in order, before any read that arrives later.
/// (Simulator seed 128199: the read waited for ever, and every write held behind it with it.)
#[test]
fn a_leader_left_the_only_voter_releases_the_reads_waiting_for_a_round() {
    let mut r = plain(1, 2);
    let rd = make_leader(&mut r);
    ack_appends(&mut r, &rd.messages);
    flush(&mut r);
    assert_eq!(r.status().commit, 1);
    r.read_index(7).unwrap();
    let rd = flush(&mut r);
    assert!(rd.read_states.is_empty());
    assert_eq!(read_rounds(&rd.messages).len(), 1, "a round sent to node 2");
    r.propose_conf_change(ConfChange::Remove(2), Bytes::new(), 10)
        .unwrap();
    r.read_index(8).unwrap();
    let mut released = Vec::new();
    for _ in 0..3 {
        released.extend(flush(&mut r).read_states);
    }
    assert_eq!(
        released.iter().map(|s| s.ctx).collect::<Vec<_>>(),
        vec![7, 8],
        "{released:?}"
    );
    assert!(released.iter().all(|s| s.index >= 1));
}

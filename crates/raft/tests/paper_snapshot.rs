//! §7 Log compaction: InstallSnapshot to followers behind the compacted base, restoring, and logs that
//! start after a snapshot.

mod harness;

use bytes::Bytes;
use harness::*;
use raftkv_raft::*;

fn install(from: NodeId, to: NodeId, term: Term, snap: Snapshot) -> Message {
    msg(
        from,
        to,
        term,
        MessageBody::InstallSnapshot { snapshot: snap },
    )
}

fn append_results(msgs: &[Message]) -> Vec<AppendResult> {
    msgs.iter()
        .filter_map(|m| match m.body {
            MessageBody::AppendResponse(r) => Some(r),
            _ => None,
        })
        .collect()
}

fn snapshots_to(msgs: &[Message], to: NodeId) -> Vec<SnapshotMeta> {
    msgs.iter()
        .filter(|m| m.to == to)
        .filter_map(|m| match &m.body {
            MessageBody::InstallSnapshot { snapshot } => Some(snapshot.meta.clone()),
            _ => None,
        })
        .collect()
}

/// §7: "the leader must occasionally send snapshots to followers that lag behind ... when the leader
/// has already discarded the next log entry that it needs to send to a follower."
#[test]
fn follower_behind_the_compacted_base_gets_install_snapshot() {
    let mut l = plain(1, 3);
    let rd = make_leader(&mut l);
    let to2: Vec<Message> = rd.messages.iter().filter(|m| m.to == 2).cloned().collect();
    ack_appends(&mut l, &to2);
    for i in 0..5 {
        l.propose(Bytes::from(format!("v{i}"))).unwrap();
    }
    let rd = flush(&mut l);
    let to2: Vec<Message> = rd.messages.iter().filter(|m| m.to == 2).cloned().collect();
    ack_appends(&mut l, &to2);
    flush(&mut l);
    assert_eq!(l.status().applied, 6);
    l.compact(snapshot(6, 1, 3));
    assert_eq!(l.status().first_index, 7);
    assert!(l.entries().is_empty());
    // Node 3 was away; it answers a heartbeat and the leader finds index 1 compacted away.
    l.step(msg(
        3,
        1,
        1,
        MessageBody::HeartbeatResponse { read_round: 0 },
    ));
    let rd = flush(&mut l);
    let sent = snapshots_to(&rd.messages, 3);
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].index, sent[0].term), (6, 1));
    assert_eq!(sent[0].membership.voters, vec![1, 2, 3]);
    // While the snapshot is in flight, nothing else goes to node 3.
    l.propose(Bytes::from_static(b"next")).unwrap();
    let rd = flush(&mut l);
    assert!(appends_to(&rd.messages, 3).is_empty());
    assert!(snapshots_to(&rd.messages, 3).is_empty());
    // Node 3 restores it and answers; the leader continues with the entries after it.
    let mut f = plain(3, 3);
    f.step(install(1, 3, 1, l_snapshot(&sent[0])));
    let frd = flush(&mut f);
    assert_eq!(frd.snapshot.as_ref().map(|s| s.meta.index), Some(6));
    for m in all_messages(&frd) {
        l.step(m);
    }
    let rd = flush(&mut l);
    let apps = appends_to(&rd.messages, 3);
    assert_eq!(apps.len(), 1);
    assert_eq!((apps[0].0, apps[0].1), (6, 1));
    let idx: Vec<Index> = apps[0].2.iter().map(|e| e.index).collect();
    assert_eq!(idx, vec![7]);
}

fn l_snapshot(meta: &SnapshotMeta) -> Snapshot {
    snapshot(meta.index, meta.term, meta.membership.voters.len() as u64)
}

/// §7 InstallSnapshot receiver: a snapshot with new information replaces the whole (conflicting) log;
/// the driver receives it to restore, and the answer waits for it to be durable.
#[test]
fn follower_restores_snapshot_and_answers_after_persist() {
    let mut f = restart(
        plain_config(2, 3),
        HardState {
            term: 2,
            vote: None,
            commit: 1,
        },
        None,
        entries_with_terms(1, &[1, 2, 2]),
    );
    flush(&mut f);
    f.step(install(1, 2, 3, snapshot(5, 3, 3)));
    let st = f.status();
    assert_eq!(
        (st.first_index, st.last_index, st.commit, st.term),
        (6, 5, 5, 3)
    );
    assert!(f.entries().is_empty());
    let rd = f.ready();
    assert_eq!(rd.snapshot.as_ref().map(|s| s.meta.index), Some(5));
    assert!(
        rd.committed.is_empty(),
        "the snapshot stands for entries 1..=5"
    );
    assert!(rd.messages.is_empty());
    assert_eq!(
        append_results(&rd.messages_after_persist),
        vec![AppendResult::Accepted { last_index: 5 }]
    );
    f.persisted(5, 3);
    assert_eq!(f.status().persisted, 5);
    // The log now continues after the snapshot.
    f.step(msg(
        1,
        2,
        3,
        MessageBody::Append {
            prev_index: 5,
            prev_term: 3,
            entries: vec![entry(6, 3)],
            commit: 6,
        },
    ));
    let rd = flush(&mut f);
    assert_eq!(
        append_results(&rd.messages_after_persist),
        vec![AppendResult::Accepted { last_index: 6 }]
    );
    assert_eq!(rd.committed, vec![entry(6, 3)]);
}

/// §7: "If the follower receives a snapshot that describes a prefix of its log ... log entries covered
/// by the snapshot are deleted but entries following the snapshot are still valid and must be
/// retained." Here: the follower keeps its entries and merely learns that they are committed.
#[test]
fn snapshot_of_a_prefix_keeps_the_following_entries() {
    let mut f = restart(
        plain_config(2, 3),
        HardState {
            term: 1,
            vote: None,
            commit: 0,
        },
        None,
        entries_with_terms(1, &[1, 1, 1, 1, 1]),
    );
    flush(&mut f);
    f.step(install(1, 2, 1, snapshot(3, 1, 3)));
    let rd = flush(&mut f);
    assert!(rd.snapshot.is_none());
    assert_eq!(f.status().last_index, 5);
    assert_eq!(f.status().commit, 3);
    let committed: Vec<Index> = rd.committed.iter().map(|e| e.index).collect();
    assert_eq!(committed, vec![1, 2, 3]);
    assert_eq!(
        append_results(&rd.messages_after_persist),
        vec![AppendResult::Accepted { last_index: 3 }]
    );
}

/// A snapshot older than what the follower knows to be committed changes nothing; the answer tells
/// the leader how far the follower really is.
#[test]
fn stale_snapshot_is_acknowledged_without_restoring() {
    let mut f = restart(
        plain_config(2, 3),
        HardState {
            term: 1,
            vote: None,
            commit: 4,
        },
        None,
        entries_with_terms(1, &[1, 1, 1, 1]),
    );
    flush(&mut f);
    f.step(install(1, 2, 1, snapshot(2, 1, 3)));
    let rd = flush(&mut f);
    assert!(rd.snapshot.is_none());
    assert_eq!(f.status().first_index, 1);
    assert_eq!(
        append_results(&rd.messages_after_persist),
        vec![AppendResult::Accepted { last_index: 4 }]
    );
}

/// A node that starts from a snapshot (first index > 1) can lead: it replicates after the snapshot to
/// followers that have it and sends the snapshot to a fresh one.
#[test]
fn leader_starting_from_a_snapshot_sends_it_to_a_fresh_follower() {
    let mut l = restart(
        plain_config(1, 3),
        HardState {
            term: 2,
            vote: None,
            commit: 10,
        },
        Some(snapshot(10, 2, 3)),
        vec![],
    );
    let rd = make_leader(&mut l);
    let noop = l.entries()[0].clone();
    assert_eq!((noop.index, noop.term), (11, 3));
    assert_eq!(appends_to(&rd.messages, 2)[0].0, 10);
    // The fresh follower rejects the probe (it has nothing at 10); the leader's next index falls to 1,
    // which is compacted away, so the snapshot goes out; then the no-op, then the commit index.
    let mut f = plain(2, 3);
    let mut kinds = Vec::new();
    let mut to_f: Vec<Message> = rd.messages.into_iter().filter(|m| m.to == 2).collect();
    for round in 0..6 {
        for m in to_f {
            kinds.push(match &m.body {
                MessageBody::InstallSnapshot { .. } => "snapshot",
                MessageBody::Append { entries, .. } if entries.is_empty() => "empty",
                MessageBody::Append { .. } => "append",
                MessageBody::Heartbeat { .. } => "heartbeat",
                _ => "other",
            });
            f.step(m);
        }
        for m in all_messages(&flush(&mut f)) {
            l.step(m);
        }
        if round == 3 {
            l.tick();
        }
        to_f = flush(&mut l)
            .messages
            .into_iter()
            .filter(|m| m.to == 2)
            .collect();
    }
    assert_eq!(kinds, vec!["append", "snapshot", "append", "heartbeat"]);
    assert_eq!(f.snapshot_meta().index, 10);
    assert_eq!(f.entries(), l.entries());
    assert_eq!(l.status().commit, 11);
    assert_eq!(f.status().commit, 11);
}

/// End to end: a node cut off while the others compact catches up through a snapshot and then follows
/// the log after it.
#[test]
fn isolated_node_catches_up_through_a_snapshot() {
    let mut c = Cluster::new(3);
    let leader = c.elect();
    let away = (1..=3).find(|id| *id != leader).unwrap();
    c.isolate(away);
    for i in 0..10 {
        c.node(leader)
            .propose(Bytes::from(format!("v{i}")))
            .unwrap();
    }
    c.settle();
    let applied = c.nodes[&leader].raft.status().applied;
    let term = c.nodes[&leader].raft.status().term;
    for id in (1..=3).filter(|id| *id != away) {
        c.node(id).compact(snapshot(applied, term, 3));
    }
    c.heal();
    c.tick_all(5);
    c.node(leader)
        .propose(Bytes::from_static(b"after"))
        .unwrap();
    c.settle();
    c.tick_all(3);
    let node = &c.nodes[&away];
    assert_eq!(node.snapshot.as_ref().map(|s| s.meta.index), Some(applied));
    assert_eq!(node.raft.status().commit, applied + 1);
    assert_eq!(c.applied_data(away), vec![Bytes::from_static(b"after")]);
}

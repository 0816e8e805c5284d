//! A committed entry the replica cannot decode (written by a newer release, or corrupt) stops it: it
//! must not be skipped, or this replica would silently miss a write every other replica applies.

use bytes::Bytes;
use raftkv_raft::{Config, Role};
use raftkv_replica::{Durable, Now, Replica, ReplicaConfig, ReplicaError};

/// Runs a one-node replica's outputs to a fixed point, making every persist job durable at once and
/// delivering what waited for it.
fn settle(replica: &mut Replica<u64>) -> Result<(), ReplicaError> {
    for _ in 0..100 {
        replica.advance()?;
        let jobs: Vec<_> = replica.outputs().persist.drain(..).collect();
        if jobs.is_empty() && !replica.raft().has_ready() {
            return Ok(());
        }
        for job in jobs {
            if let Some(last) = job.entries.last() {
                replica.persisted(Durable {
                    index: last.index,
                    term: last.term,
                    ..Durable::default()
                })?;
            }
            // A sole voter's own vote comes back to it once durable.
            for msg in job.messages_after_persist {
                replica.step(msg);
            }
        }
    }
    panic!("the replica did not settle");
}

#[test]
fn an_undecodable_committed_entry_stops_the_replica() {
    let mut raft = Config::new(1, vec![1]);
    raft.election_ticks = 3;
    let config = ReplicaConfig {
        raft,
        peer_addrs: Default::default(),
        promote_max_lag: raftkv_replica::DEFAULT_PROMOTE_MAX_LAG,
        auto_remove_after_ms: 0,
        client_addrs: [(1, "127.0.0.1:9001".to_string())].into(),
        leader_wait_ms: 1_000,
        snapshot_entries: 1 << 40,
        snapshot_bytes: 1 << 40,
        session_limits: raftkv_kv::SessionLimits::DEFAULT,
        tick_ms: 1,
        mutation: None,
        record_applied: false,
    };
    let mut replica: Replica<u64> = Replica::new(config, Default::default()).unwrap();
    for ms in 0..100 {
        replica.tick(Now {
            mono_ms: ms,
            wall_ms: 1_000 + ms,
        });
        settle(&mut replica).unwrap();
        if replica.raft().status().role == Role::Leader {
            break;
        }
    }
    assert_eq!(replica.raft().status().role, Role::Leader);
    // Format 9 does not exist (yet).
    let (index, _) = replica
        .raft_mut()
        .propose(Bytes::from_static(b"\x09future entry"))
        .unwrap();
    match settle(&mut replica) {
        Err(ReplicaError::EntryDecode { index: at, .. }) => assert_eq!(at, index),
        other => panic!("expected the replica to stop, got {other:?}"),
    }
    assert!(
        replica.store().applied_index() < index,
        "it was not skipped"
    );
}

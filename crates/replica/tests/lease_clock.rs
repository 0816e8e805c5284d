//! With leader leases on, the replica keeps the core's ticks in step with its monotonic clock: a
//! process that was paused delivers the ticks it missed before anything else, so a lease can end
//! during a pause but never be stretched by one. Without leases a late tick stays one tick, as ever.

use raftkv_raft::{Config, Role};
use raftkv_replica::{Now, Replica, ReplicaConfig};

/// A follower of a 3-node cluster that has heard from no one (it will campaign after its timeout).
fn follower(lease_reads: bool) -> Replica<u64> {
    let mut raft = Config::new(1, vec![1, 2, 3]);
    raft.election_ticks = 10;
    raft.heartbeat_ticks = 2;
    raft.lease_reads = lease_reads;
    let config = ReplicaConfig {
        raft,
        peer_addrs: Default::default(),
        promote_max_lag: raftkv_replica::DEFAULT_PROMOTE_MAX_LAG,
        auto_remove_after_ms: 0,
        client_addrs: Default::default(),
        leader_wait_ms: 1_000,
        snapshot_entries: 1 << 40,
        snapshot_bytes: 1 << 40,
        session_limits: raftkv_kv::SessionLimits::DEFAULT,
        tick_ms: 10,
        mutation: None,
        record_applied: false,
    };
    Replica::new(config, Default::default()).unwrap()
}

fn at(mono_ms: u64) -> Now {
    Now {
        mono_ms,
        wall_ms: 1_000_000 + mono_ms,
    }
}

#[test]
fn a_pause_delivers_the_missed_ticks_with_leases() {
    let mut replica = follower(true);
    replica.tick(at(0));
    replica.tick(at(10));
    assert_eq!(replica.raft().status().role, Role::Follower);
    // Five seconds frozen: the first input afterwards (a peer message's clock) catches up 500 ticks'
    // worth, far past the election timeout (10-20 ticks).
    replica.advance_clock(at(5_010));
    assert_ne!(replica.raft().status().role, Role::Follower);
}

#[test]
fn without_leases_a_late_tick_is_one_tick() {
    let mut replica = follower(false);
    replica.tick(at(0));
    replica.tick(at(10));
    replica.advance_clock(at(5_010));
    replica.tick(at(5_010));
    assert_eq!(replica.raft().status().role, Role::Follower);
}

#[test]
fn ticks_follow_the_clock_not_the_calls() {
    // Called twice per period, the core still ticks once per period: 9 periods stay under the
    // shortest election timeout (10 ticks) however many calls there were.
    let mut replica = follower(true);
    for half_period in 0..=18 {
        replica.tick(at(half_period * 5));
    }
    assert_eq!(replica.raft().status().role, Role::Follower);
}

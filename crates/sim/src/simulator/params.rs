//! What one seed draws: the cluster, the workload, the fault mix, the clocks (swarm testing).

use crate::network::NetworkFaults;
use crate::rng::Rng;

/// What one seed chose (swarm testing: every seed draws its own fault mix).
#[derive(Clone, Debug)]
pub struct Params {
    pub nodes: usize,
    pub clients: usize,
    pub keys: u64,
    /// Requests one connection may have in flight.
    pub pipeline: usize,
    pub read_ppm: u32,
    pub ttl_ppm: u32,
    pub think_ms: u64,
    /// A client gives up on a request (and its connection) after this long.
    pub op_timeout_ms: u64,
    pub net: NetworkFaults,
    pub nemesis_ppm: u32,
    pub disk_latency: (u64, u64),
    pub slow_disk_latency: (u64, u64),
    pub segment_bytes: u64,
    pub snapshot_entries: u64,
    pub snapshot_bytes: u64,
    pub snapshot_delay: (u64, u64),
    pub max_skew_ms: u64,
    pub max_drift_ppm: u64,
    /// Chance (per million, per ms) of a wall-clock step on some node, besides the nemesis's.
    pub clock_jump_ppm: u32,
    /// Keep every disk slow (250–350 ms per write) after the faults stop: commits then take longer
    /// than the read clock slack, and the clients must still get their answers.
    pub slow_disks_after_heal: bool,
    pub tick_ms: u64,
    pub election_ticks: u32,
    pub heartbeat_ticks: u32,
    pub pre_vote: bool,
    pub check_quorum: bool,
    /// Some writes are the Redis front end's single-key commands (SET NX/XX/GET, GETDEL); drawn
    /// apart from the rest.
    pub redis_ops: bool,
    /// With `redis_ops`, some writes are its compound commands too (INCRBY, APPEND, SETRANGE,
    /// EXPIRE/PERSIST, MSET, RENAME, MULTI/EXEC); drawn apart from the rest.
    pub compound_ops: bool,
    /// With `redis_ops`, some SETs keep the key's lifetime (KEEPTTL) or expire at an instant
    /// (EXAT/PXAT); drawn apart from the rest.
    pub instant_expiry: bool,
    /// Reads served from the leader's lease (only with check-quorum; drawn apart from the rest).
    pub lease_reads: bool,
    pub max_entries_per_msg: usize,
    pub max_inflight_msgs: usize,
    /// The store's session limits (tiny in some seeds with session clients, drawn apart).
    pub session_limits: raftkv_kv::SessionLimits,
}

impl Params {
    pub(super) fn draw(rng: &mut Rng) -> Params {
        let election_ticks = rng.range(5, 15) as u32;
        let tiny_snapshots = rng.chance(500_000);
        // One seed in five stresses time: mostly reads of keys that expire, clocks seconds apart.
        let time_heavy = rng.chance(200_000);
        let mut params = Params {
            nodes: if rng.chance(500_000) { 3 } else { 5 },
            clients: rng.range(1, 5) as usize,
            keys: rng.range(1, 4),
            pipeline: [1, 1, 2, 4][rng.index(4)],
            read_ppm: rng.range(200_000, 950_000) as u32,
            ttl_ppm: [0, 100_000, 400_000][rng.index(3)],
            think_ms: rng.range(0, 30),
            op_timeout_ms: rng.range(300, 2_000),
            net: NetworkFaults {
                drop_ppm: [0, 10_000, 50_000, 150_000][rng.index(4)],
                duplicate_ppm: [0, 10_000, 50_000][rng.index(3)],
                delay: (1, rng.range(2, 30)),
            },
            nemesis_ppm: rng.range(1_000, 10_000) as u32,
            disk_latency: (1, rng.range(1, 5)),
            slow_disk_latency: (20, rng.range(50, 400)),
            segment_bytes: [1 << 10, 8 << 10, 1 << 20][rng.index(3)],
            snapshot_entries: if tiny_snapshots {
                rng.range(3, 30)
            } else {
                1 << 40
            },
            snapshot_bytes: if rng.chance(200_000) {
                rng.range(200, 4_000)
            } else {
                1 << 40
            },
            snapshot_delay: (0, rng.range(1, 100)),
            max_skew_ms: [0, 50, 1_000, 5_000][rng.index(4)],
            max_drift_ppm: [0, 1_000, 20_000][rng.index(3)],
            clock_jump_ppm: 0,
            slow_disks_after_heal: false,
            tick_ms: 10,
            election_ticks,
            heartbeat_ticks: rng.range(1, u64::from(election_ticks / 3)) as u32,
            pre_vote: rng.chance(750_000),
            check_quorum: rng.chance(750_000),
            lease_reads: false,
            redis_ops: false,
            compound_ops: false,
            instant_expiry: false,
            max_entries_per_msg: rng.range(1, 64) as usize,
            max_inflight_msgs: rng.range(1, 16) as usize,
            session_limits: raftkv_kv::SessionLimits::DEFAULT,
        };
        if time_heavy {
            params.read_ppm = rng.range(850_000, 980_000) as u32;
            params.ttl_ppm = 800_000;
            params.max_skew_ms = [3_000, 10_000][rng.index(2)];
            params.clock_jump_ppm = 5_000;
            if rng.chance(500_000) {
                // Elections must outlast a slow fsync, as a real deployment's do.
                params.slow_disks_after_heal = true;
                params.election_ticks = rng.range(80, 120) as u32;
                params.heartbeat_ticks = rng.range(5, 20) as u32;
                params.op_timeout_ms = rng.range(3_000, 5_000);
            }
        }
        params
    }
}

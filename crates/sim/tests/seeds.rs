//! The simulator as part of the test suite: 1,000 seeds of the whole cluster (the real replica, store
//! and WAL under faults), replay, regression seeds, and proof that it finds deliberate bugs. Longer runs
//! use the release binary, see docs/simulation.md.

use raftkv_replica::Mutation;
use raftkv_sim::{quiet_panics, run_seed, run_seeds, Options, Summary};

/// Seeds CI runs, split across tests so the harness runs them in parallel.
const CI_SEEDS: u64 = 1_000;
const CI_SHARDS: u64 = 4;

fn run_shard(shard: u64) -> Summary {
    quiet_panics();
    let per_shard = CI_SEEDS / CI_SHARDS;
    let summary = run_seeds(
        shard * per_shard,
        per_shard,
        &Options::default(),
        |report| {
            eprintln!("{report}  replay: {}", report.replay_command());
        },
    );
    eprintln!(
        "{} in {:.1}s",
        summary.line(),
        summary.elapsed.as_secs_f64()
    );
    summary
}

fn assert_clean(summary: &Summary) {
    assert!(summary.passed(), "{}", summary.line());
    assert_eq!(summary.inconclusive, 0, "every history must be checked");
    // Two in five seeds change the membership while the other faults go on.
    assert!(
        summary.membership_changes > 50,
        "too few membership changes committed: {}",
        summary.line()
    );
}

#[test]
fn ci_seeds_first_quarter() {
    assert_clean(&run_shard(0));
}

#[test]
fn ci_seeds_second_quarter() {
    assert_clean(&run_shard(1));
}

#[test]
fn ci_seeds_third_quarter() {
    assert_clean(&run_shard(2));
}

#[test]
fn ci_seeds_fourth_quarter() {
    assert_clean(&run_shard(3));
}

#[test]
fn a_seed_replays_bit_for_bit() {
    quiet_panics();
    let options = Options::default();
    for seed in [1, 2, 3, 2801] {
        let a = run_seed(seed, &options);
        let b = run_seed(seed, &options);
        assert_eq!(
            format!("{a}"),
            format!("{b}"),
            "seed {seed} is not deterministic"
        );
        assert!(
            a.stats.ops_ok > 0,
            "seed {seed} completed no client operation: {a}"
        );
    }
}

/// Seeds that found bugs, each kept passing. (Each number is the seed as the simulator drew it when the
/// bug was found; the draws have changed since, so 242 and 2801 now run other scenarios: the WAL bug
/// has its own unit test, the ordering rule is checked on every seed by the per-connection order in the
/// checker.)
/// - 242: adopting a snapshot removed a newer snapshot file written meanwhile, leaving a compacted log
///   with no snapshot (the node could not recover); see the WAL's
///   `adopting_a_snapshot_keeps_a_newer_one_written_meanwhile`.
/// - 2801: a read waiting for a clock entry let a later pipelined read of the same connection take
///   effect first (`getm` answered "expired", the `get` sent after it answered the old value).
/// - 20: with disks slower than the read clock slack, a `getm` of a long-lived expiring key was judged
///   again after each clock entry and never answered (a liveness failure: the clients stall).
/// - 258070: a read parked during a leadership transfer (its clock entry could not be proposed) lost
///   its place: a `set` pipelined after the `get` on the same connection committed first, and the `get`
///   returned it.
/// - 47 (found with membership changes): a leader removed by an entry only it held could not be
///   elected again (it was no voter of its newest membership) and the other voter could not win its
///   vote: no leader ever. See the core's
///   `a_node_removed_by_an_uncommitted_entry_still_campaigns_until_it_commits`.
/// - 3724, 5485, 5526 (all in 1000..6000 when found): a sole voter led its term before its vote was on
///   disk; it crashed, led the same term again after restart, and a learner held entries of both
///   reigns at the same index and term (election safety and log matching violated). See the core's
///   `a_sole_voter_leads_only_once_its_own_vote_is_durable`.
/// - 2102, 3167, 5580: a node that missed the change adding the new leader refused its connections
///   and could not answer it; the transport now admits any node of the cluster and answers the
///   address its handshake gives.
/// - 2108: two removed nodes redirected a client to each other for ever.
/// - 101729 (a false alarm of the checks, not a bug of the node): a leader of term 8 whose votes
///   arrived late was elected after a leader of term 9 had committed an entry it lacked; leader
///   completeness asks only for entries committed in earlier terms.
/// - 128199 (found in 110000..129999, a liveness failure): a leader whose membership shrank to itself
///   kept a read waiting for a heartbeat round it had sent to a voter it no longer had; every write
///   was held behind that read for ever. See the core's
///   `a_leader_left_the_only_voter_releases_the_reads_waiting_for_a_round`.
/// - 142709 (found in 130000..149999; older than this round): a `getm` whose clock entry could not be
///   proposed during a leadership transfer was parked, and a `get` pipelined after it was answered
///   at once from the older clock; the `getm`, judged later, found the key expired while the later
///   `get` had seen it live. See the replica's `a_read_behind_one_parked_for_a_transfer_waits_for_it`.
/// - 163066: the first fix of 142709 (park every read due while anything is parked) parked a `get`
///   behind a `delete` that had arrived after it, while the `getm` sent after the `get` was answered
///   before the `delete`; reads now wait for their clock entry in order instead of being parked.
/// - 177606 (found in 150000..179999; a livelock of the simulator's parameters, not of the node):
///   with disks kept slow after the faults, sessions idle for 307 ms expired between registration
///   and the first write, every time; such seeds now give sessions at least 2 s.
/// - 197791 (found in 180000..209999; slow, not stuck): two learners 5,000 entries behind a sole
///   voter, fed 2 entries per message and 5 messages in flight with snapshots off, needed ~18 s
///   to catch up; the liveness phase now allows members whose applied index keeps moving every
///   second up to 45 s more.
/// - 261084 (found in 240000..269999, inconclusive): the search over two joined keys placed a write
///   applied at a high index before writes applied at lower ones and found out only far later;
///   writes with known indexes are now placed in index order.
/// - 293771 (found in 270000..299999, liveness): four nodes removed while down came back as learners
///   of an old membership; the sole-voter leader never contacted them, and each held a client's
///   request for the full leader wait before answering ERR_INTERNAL. A learner that knows no leader
///   now redirects to the voters in turn (`tests/leaderless_learner.rs` in the replica crate).
#[test]
fn regression_seeds_pass() {
    quiet_panics();
    for seed in [
        20, 242, 2801, 258070, 47, 3724, 5485, 5526, 2102, 3167, 5580, 2108, 101729, 128199,
        142709, 163066, 177606, 197791, 261084, 293771,
    ] {
        let report = run_seed(seed, &Options::default());
        assert!(!report.failed(), "{report}");
    }
}

/// The first seed in `0..limit` at which the simulator reports a failure with `mutation` on.
fn first_caught(mutation: Mutation, limit: u64) -> Option<u64> {
    quiet_panics();
    let options = Options {
        mutation: Some(mutation),
        ..Options::default()
    };
    (0..limit).find(|&seed| run_seed(seed, &options).failed())
}

#[test]
fn reads_without_read_index_are_caught() {
    let seed = first_caught(Mutation::ReadsWithoutReadIndex, 20);
    assert!(seed.is_some(), "not caught in 20 seeds");
}

#[test]
fn acknowledging_before_fsync_is_caught() {
    let seed = first_caught(Mutation::AckBeforeFsync, 50);
    assert!(seed.is_some(), "not caught in 50 seeds");
}

#[test]
fn expiry_at_the_local_clock_is_caught() {
    // Rarer since half the seeds have session clients (one request in flight each): first at 187.
    let seed = first_caught(Mutation::ExpiryAtLocalClock, 300);
    assert!(seed.is_some(), "not caught in 300 seeds");
}

/// Without the session table's deduplication, retried writes are applied twice, and the simulator says
/// so; the same seed with deduplication passes, so what it catches is exactly that.
#[test]
fn writes_applied_twice_are_caught_and_the_same_seed_passes_with_sessions() {
    let seed = first_caught(Mutation::WritesAppliedTwice, 50).expect("not caught in 50 seeds");
    let report = run_seed(seed, &Options::default());
    assert!(!report.failed(), "{report}");
    assert!(
        report.stats.retries > 0,
        "seed {seed} retried nothing: {report}"
    );
}

/// The Redis front end's conditional SET is in the model: dropping its condition is caught, and the
/// same seed passes with the condition kept.
#[test]
fn a_set_nx_that_ignores_its_condition_is_caught() {
    let seed = first_caught(Mutation::SetConditionIgnored, 30).expect("not caught in 30 seeds");
    let report = run_seed(seed, &Options::default());
    assert!(!report.failed(), "{report}");
}

/// The Redis front end's transactions are in the model: an EXEC that ignores WATCH is caught, and
/// the same seed passes with WATCH kept.
#[test]
fn an_exec_that_ignores_watch_is_caught() {
    let seed = first_caught(Mutation::WatchIgnored, 60).expect("not caught in 60 seeds");
    let report = run_seed(seed, &Options::default());
    assert!(!report.failed(), "{report}");
}

/// MSET is all or nothing across its keys: one that writes only its first pair is caught, and the
/// same seed passes with the whole MSET.
#[test]
fn an_mset_that_writes_one_pair_is_caught() {
    let seed = first_caught(Mutation::MSetFirstPairOnly, 60).expect("not caught in 60 seeds");
    let report = run_seed(seed, &Options::default());
    assert!(!report.failed(), "{report}");
}

/// Lifetimes longer than the clocks can have run are checked: a `set` whose lifetime is taken in
/// milliseconds is caught (without that bound the checker let any lifetime run out at any moment,
/// and 200 seeds caught nothing), and the same seed passes with seconds.
#[test]
fn a_lifetime_in_milliseconds_is_caught() {
    let seed = first_caught(Mutation::LifetimeInMs, 60).expect("not caught in 60 seeds");
    let report = run_seed(seed, &Options::default());
    assert!(!report.failed(), "{report}");
}

/// SET KEEPTTL is in the model: one that drops the key's lifetime is caught (a `getm` then reports
/// no lifetime where the model has one), and the same seed passes with the lifetime kept. Rare,
/// like every expiry bug: it needs a seed with Redis SETs, lifetimes and a `getm` soon after.
#[test]
fn a_keepttl_that_drops_the_lifetime_is_caught() {
    let seed = first_caught(Mutation::KeepTtlDropped, 150).expect("not caught in 150 seeds");
    let report = run_seed(seed, &Options::default());
    assert!(!report.failed(), "{report}");
}

/// SET EXAT/PXAT are in the model: an instant already past leaves the key gone at once, so one taken
/// as a lifetime from now (the key lives on) is caught, and the same seed passes.
#[test]
fn an_instant_taken_as_a_lifetime_is_caught() {
    let seed = first_caught(Mutation::InstantAsLifetime, 60).expect("not caught in 60 seeds");
    let report = run_seed(seed, &Options::default());
    assert!(!report.failed(), "{report}");
}

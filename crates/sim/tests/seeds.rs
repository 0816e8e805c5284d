//! The simulator as part of the test suite: 300 seeds in-process (debug build; each seed is a few virtual
//! seconds of faults plus the liveness phase). Longer runs use the release binary, see docs/simulation.md.

use raftkv_sim::{quiet_panics, run_seed, run_seeds, Options};

const CI_SEEDS: u64 = 300;

#[test]
fn ci_seeds_have_no_violations_and_linearizable_histories() {
    quiet_panics();
    let options = Options::default();
    let summary = run_seeds(0, CI_SEEDS, &options, |report| {
        eprintln!("{report}  replay: {}", report.replay_command());
    });
    eprintln!(
        "{} in {:.1}s",
        summary.line(),
        summary.elapsed.as_secs_f64()
    );
    assert!(summary.passed(), "{}", summary.line());
}

#[test]
fn a_seed_replays_bit_for_bit() {
    quiet_panics();
    let options = Options::default();
    for seed in [1, 2, 3] {
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

//! `raftkv-sim`: run many seeds, or replay one.
//!
//! ```text
//! cargo run --release -p raftkv-sim -- --seeds 10000            # seeds from a random start
//! cargo run --release -p raftkv-sim -- --seeds 300 --seed 0     # seeds 0..300
//! cargo run --release -p raftkv-sim -- --seed 42 --trace        # replay seed 42, with a trace
//! ```

use std::process::ExitCode;

use clap::Parser;
use raftkv_replica::Mutation;
use raftkv_sim::{run_seeds, Options, DEFAULT_STEPS};

#[derive(Parser)]
#[command(
    name = "raftkv-sim",
    about = "Deterministic simulator of a whole raftkv cluster"
)]
struct Cli {
    /// How many seeds to run (default 1 with --seed, 100 without).
    #[arg(long)]
    seeds: Option<u64>,
    /// The first seed (alone: replay exactly this seed). Without it, a random start is drawn and printed.
    #[arg(long)]
    seed: Option<u64>,
    /// Virtual milliseconds of the fault phase of each seed.
    #[arg(long, default_value_t = DEFAULT_STEPS)]
    steps: u64,
    /// Print a trace of each seed's events to stderr (use with one seed).
    #[arg(long)]
    trace: bool,
    /// Print the full report of each failing seed, not only its first line.
    #[arg(long)]
    verbose: bool,
    /// Run every node with a deliberate bug, to see the simulator catch it.
    #[arg(long, value_parser = parse_mutation)]
    mutation: Option<Mutation>,
}

fn parse_mutation(name: &str) -> Result<Mutation, String> {
    match name {
        "ReadsWithoutReadIndex" => Ok(Mutation::ReadsWithoutReadIndex),
        "AckBeforeFsync" => Ok(Mutation::AckBeforeFsync),
        "ExpiryAtLocalClock" => Ok(Mutation::ExpiryAtLocalClock),
        "WritesAppliedTwice" => Ok(Mutation::WritesAppliedTwice),
        "SetConditionIgnored" => Ok(Mutation::SetConditionIgnored),
        "WatchIgnored" => Ok(Mutation::WatchIgnored),
        "MSetFirstPairOnly" => Ok(Mutation::MSetFirstPairOnly),
        "LifetimeInMs" => Ok(Mutation::LifetimeInMs),
        "KeepTtlDropped" => Ok(Mutation::KeepTtlDropped),
        "InstantAsLifetime" => Ok(Mutation::InstantAsLifetime),
        _ => Err(
            "one of ReadsWithoutReadIndex, AckBeforeFsync, ExpiryAtLocalClock, WritesAppliedTwice, \
             SetConditionIgnored, WatchIgnored, MSetFirstPairOnly, LifetimeInMs, KeepTtlDropped, \
             InstantAsLifetime"
                .into(),
        ),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    raftkv_sim::quiet_panics();
    let first = cli.seed.unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let start = (nanos as u64) & 0xffff_ffff_ffff;
        println!("sim: starting at seed {start}");
        start
    });
    let count = cli
        .seeds
        .unwrap_or(if cli.seed.is_some() { 1 } else { 100 });
    let options = Options {
        steps: cli.steps,
        trace: cli.trace,
        mutation: cli.mutation,
    };
    let single = count == 1;
    let summary = run_seeds(first, count, &options, |report| {
        let what = report.violations.first().cloned().unwrap_or_else(|| {
            if report.non_linearizable() {
                "history not linearizable".to_string()
            } else {
                "history inconclusive (search budget)".to_string()
            }
        });
        println!(
            "FAIL seed {}: {what}\n  replay: {}",
            report.seed,
            report.replay_command()
        );
        if cli.verbose || single {
            println!("{report}");
            if let raftkv_sim::linearizability::Outcome::Illegal { ops, .. } =
                &report.linearizability.outcome
            {
                println!("  a smallest illegal part of that history:");
                for op in raftkv_sim::linearizability::shrink(ops, 20_000_000) {
                    println!("    {op:?}");
                }
            }
        }
    });
    if single && summary.passed() {
        println!("seed {first}: ok");
    }
    println!("sim: {:.1}s", summary.elapsed.as_secs_f64());
    println!("{}", summary.line());
    if summary.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

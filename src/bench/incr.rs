//! `--op incr`: counters incremented exactly once, and verified.
//!
//! Each client is a [`raftkv_client::Client`] of its own (its own connection and sessions). An increment
//! reads a counter with `getm` and writes the next number with `cas` at the version it read, retrying
//! on a version mismatch (another client got there first). The library sends the `cas` in a session
//! and retries it through timeouts, lost connections and leader changes until it has a definite
//! answer, so each acknowledged increment was applied exactly once. At the end every counter is read
//! back: the counters must add up to the increments acknowledged (an increment applied twice, or one
//! acknowledged and lost, would show), and no increment may have an unknown outcome.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raftkv_client::{CasOutcome, Client, Config, Error};

use super::Args;

/// Room for elections: a client keeps retrying one increment this long.
const OPERATION_DEADLINE: Duration = Duration::from_secs(30);
/// An increment that has not succeeded in this long (reads and refused writes retried meanwhile)
/// gives up, so that an unreachable cluster ends the run instead of hanging it.
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);

/// What one client saw.
#[derive(Default)]
struct Tally {
    /// Acknowledged increments per counter.
    acknowledged: Vec<u64>,
    unknown: u64,
    conflicts: u64,
    /// Reads or writes that failed without changing anything, and were retried.
    retried_failures: u64,
    problems: Vec<String>,
}

pub(super) async fn run(args: &Args, base: Config) -> ExitCode {
    let config = Config {
        deadline: OPERATION_DEADLINE,
        ..base
    };
    let counters = args.counters as usize;
    let names: Arc<Vec<String>> = Arc::new(
        (0..counters)
            .map(|i| format!("{}counter{i}", args.key_prefix))
            .collect(),
    );
    let setup = match Client::new(&args.addr, config.clone()) {
        Ok(client) => client,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    for name in names.iter() {
        if let Err(error) = setup.set(name, b"0", None).await {
            eprintln!("error: cannot reset counter {name}: {error}");
            return ExitCode::from(4);
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    let budget = args.requests.map(|n| Arc::new(AtomicU64::new(n)));
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.clients)
        .map(|i| {
            let client = Client::new(&args.addr, config.clone());
            let names = names.clone();
            let stop = stop.clone();
            let budget = budget.clone();
            tokio::spawn(async move {
                match client {
                    Ok(client) => increment_until_stopped(client, &names, i, &stop, budget).await,
                    Err(error) => Tally {
                        problems: vec![error.to_string()],
                        ..Tally::default()
                    },
                }
            })
        })
        .collect();
    if args.requests.is_none() {
        let duration = Duration::from_secs_f64(args.duration.unwrap_or(10.0));
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            stop.store(true, Ordering::Relaxed);
        });
    }
    let mut total = Tally {
        acknowledged: vec![0; counters],
        ..Tally::default()
    };
    for task in tasks {
        match task.await {
            Ok(tally) => {
                for (sum, n) in total.acknowledged.iter_mut().zip(&tally.acknowledged) {
                    *sum += n;
                }
                total.unknown += tally.unknown;
                total.conflicts += tally.conflicts;
                total.retried_failures += tally.retried_failures;
                total.problems.extend(tally.problems);
            }
            Err(error) => total
                .problems
                .push(format!("a client task failed: {error}")),
        }
    }
    let elapsed = started.elapsed();

    let mut counted = 0u64;
    for (name, acknowledged) in names.iter().zip(&total.acknowledged) {
        match read_counter(&setup, name).await {
            Ok(value) => {
                counted += value;
                if value != *acknowledged {
                    total.problems.push(format!(
                        "{name} is {value}, but {acknowledged} increments were acknowledged"
                    ));
                }
            }
            Err(error) => total
                .problems
                .push(format!("cannot read {name} back: {error}")),
        }
    }
    let acknowledged: u64 = total.acknowledged.iter().sum();
    let verified = counted == acknowledged && total.unknown == 0 && total.problems.is_empty();
    let verdict = format!(
        "verified: {acknowledged} acknowledged, {counted} counted, {} unknown",
        total.unknown
    );
    let per_sec = acknowledged as f64 / elapsed.as_secs_f64().max(1e-9);
    if args.json {
        println!(
            "{{\"workload\":\"incr\",\"clients\":{},\"counters\":{counters},\"seconds\":{:.3},\
             \"increments_per_sec\":{per_sec:.1},\"acknowledged\":{acknowledged},\"counted\":{counted},\
             \"unknown\":{},\"conflicts\":{},\"retried_failures\":{},\"verified\":{verified}}}",
            args.clients,
            elapsed.as_secs_f64(),
            total.unknown,
            total.conflicts,
            total.retried_failures,
        );
        eprintln!("{verdict}");
    } else {
        println!("workload    incr (getm + cas in a session), {counters} counters");
        println!("clients     {}", args.clients);
        println!(
            "increments  {acknowledged} in {:.1} s = {per_sec:.0}/s",
            elapsed.as_secs_f64()
        );
        println!(
            "conflicts   {} (cas lost to another client, read again)",
            total.conflicts
        );
        println!(
            "retried     {} (failed without effect, tried again)",
            total.retried_failures
        );
        println!("{verdict}");
    }
    for problem in total.problems.iter().take(20) {
        eprintln!("error: {problem}");
    }
    let _ = std::io::stdout().flush();
    if verified {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// One client's loop: increments random counters until told to stop (or the budget is spent).
async fn increment_until_stopped(
    client: Client,
    names: &[String],
    seed: u32,
    stop: &AtomicBool,
    budget: Option<Arc<AtomicU64>>,
) -> Tally {
    let mut tally = Tally {
        acknowledged: vec![0; names.len()],
        ..Tally::default()
    };
    let mut state = 0x9E37_79B9_7F4A_7C15 ^ (u64::from(seed) + 1);
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if let Some(budget) = &budget {
            let took = budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(1)
            });
            if took.is_err() {
                break;
            }
        }
        // xorshift: spreads the clients over the counters without a dependency.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let counter = (state % names.len() as u64) as usize;
        if !increment(&client, &names[counter], &mut tally, stop).await {
            break;
        }
        tally.acknowledged[counter] += 1;
    }
    tally
}

/// Increments one counter; true once acknowledged. False if its outcome is unknown or a problem was
/// recorded (both fail the verification), or the run stopped before the write was sent.
async fn increment(client: &Client, name: &str, tally: &mut Tally, stop: &AtomicBool) -> bool {
    let started = Instant::now();
    loop {
        if started.elapsed() > GIVE_UP_AFTER {
            tally.problems.push(format!(
                "increment of {name} made no progress in {GIVE_UP_AFTER:?}"
            ));
            return false;
        }
        let current = match client.getm(name).await {
            Ok(Some(meta)) => meta,
            Ok(None) => {
                tally.problems.push(format!("{name} disappeared"));
                return false;
            }
            Err(_) if stop.load(Ordering::Relaxed) => return false,
            Err(_) => {
                tally.retried_failures += 1;
                continue;
            }
        };
        let Some(value) = std::str::from_utf8(&current.value)
            .ok()
            .and_then(|text| text.parse::<u64>().ok())
        else {
            tally
                .problems
                .push(format!("{name} holds {:?}", current.value));
            return false;
        };
        let next = (value + 1).to_string();
        match client
            .cas(name, current.version, next.as_bytes(), None)
            .await
        {
            Ok(CasOutcome::Swapped { .. }) => return true,
            Ok(CasOutcome::VersionMismatch) => tally.conflicts += 1,
            Ok(CasOutcome::NotFound) => {
                tally.problems.push(format!("{name} disappeared"));
                return false;
            }
            Err(Error::OutcomeUnknown(why)) => {
                tally.unknown += 1;
                tally.problems.push(format!("increment of {name}: {why}"));
                return false;
            }
            // Nothing was applied (the library says so only when no attempt can have been).
            Err(Error::Unavailable(_)) => tally.retried_failures += 1,
            Err(other) => {
                tally.unknown += 1;
                tally.problems.push(format!("increment of {name}: {other}"));
                return false;
            }
        }
    }
}

/// A counter's value, read with retries.
async fn read_counter(client: &Client, name: &str) -> Result<u64, String> {
    let deadline = Instant::now() + OPERATION_DEADLINE;
    loop {
        match client.get(name).await {
            Ok(Some(value)) => {
                return std::str::from_utf8(&value)
                    .ok()
                    .and_then(|text| text.parse().ok())
                    .ok_or_else(|| format!("holds {value:?}"));
            }
            Ok(None) => return Err("it is gone".into()),
            Err(error) if Instant::now() >= deadline => return Err(error.to_string()),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

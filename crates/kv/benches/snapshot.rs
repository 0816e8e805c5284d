//! Snapshot benchmark: with 1M keys of 256-byte values, how long `Store::clone()` takes
//! (the node's event loop pays it), the longest single `apply` right after a clone (the
//! copy-on-write cost, paid by writes while the snapshot is serialised), snapshot serialisation
//! time and size, restore time, and memory (resident-set growth, `/proc/self/statm`) of the built
//! and of the restored store.
//!
//! Run: `cargo bench -p raftkv-kv --bench snapshot` (`cargo test --benches` runs it on 10k keys).

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use raftkv_kv::{Command, Store};

const VALUE_LEN: usize = 256;
const REPEATS: usize = 3;

fn key(i: u64) -> Bytes {
    Bytes::from(format!("key-{i:012}"))
}

fn value(i: u64) -> Bytes {
    Bytes::from(vec![b'a' + (i % 26) as u8; VALUE_LEN])
}

fn set(i: u64, exptime: u32) -> Command {
    Command::Set {
        key: key(i),
        exptime,
        value: value(i),
    }
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// CPU time of this thread in ms (10 ms resolution), which contention for the CPU does not inflate
/// the way it inflates wall-clock time.
fn cpu_ms() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) * 10.0
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}

fn build(keys: u64, exptime: u32) -> Store {
    let raw = keys * (key(0).len() + VALUE_LEN) as u64;
    let before = resident_bytes();
    let mut store = Store::new();
    for i in 0..keys {
        store.apply(i + 1, 1_000, &set(i, exptime));
    }
    let used = resident_bytes().saturating_sub(before);
    // The second store reuses memory the first one freed: its growth means nothing.
    println!(
        "build: {keys} keys x ({} B key + {VALUE_LEN} B value), exptime {exptime}: raw {:.1} MiB, \
         resident growth {:.1} MiB, ratio {:.3}",
        key(0).len(),
        mib(raw),
        mib(used),
        used as f64 / raw as f64
    );
    store
}

/// Latencies of `count` overwrites of pseudo-random keys, applied to `store` starting at `index`.
fn timed_writes(
    store: &mut Store,
    keys: u64,
    index: &mut u64,
    count: u64,
    exptime: u32,
) -> Vec<Duration> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let commands: Vec<Command> = (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            set(state % keys, exptime)
        })
        .collect();
    let mut latencies = Vec::with_capacity(commands.len());
    for command in &commands {
        *index += 1;
        let started = Instant::now();
        black_box(store.apply(*index, 1_000, command));
        latencies.push(started.elapsed());
    }
    latencies
}

fn summary(mut latencies: Vec<Duration>) -> String {
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    format!(
        "max {:.1} µs, p99.9 {:.2} µs, p99 {:.2} µs, median {:.2} µs, total {:.0} ms",
        us(at(1.0)),
        us(at(0.999)),
        us(at(0.99)),
        us(at(0.5)),
        ms(latencies.iter().sum())
    )
}

/// Measures `keys / 5` overwrites (enough to write every shard many times over) with no clone
/// held, then after each of a few clones.
fn clone_and_write(store: &mut Store, keys: u64, index: &mut u64, exptime: u32) {
    let baseline = timed_writes(store, keys, index, keys / 5, exptime);
    println!("  writes, no clone held:       {}", summary(baseline));
    for round in 0..REPEATS {
        let started = Instant::now();
        let copy = store.clone();
        let clone_time = started.elapsed();
        let digest_at_clone = copy.digest();
        let after = timed_writes(store, keys, index, keys / 5, exptime);
        println!(
            "  clone #{round}: {:.3} ms; then writes: {}",
            ms(clone_time),
            summary(after)
        );
        assert_eq!(
            copy.digest(),
            digest_at_clone,
            "the clone must not see later writes"
        );
        let started = Instant::now();
        drop(copy);
        println!("    drop of the clone: {:.1} ms", ms(started.elapsed()));
    }
}

fn snapshot_and_restore(store: &Store) {
    let copy = store.clone();
    let mut image = Vec::new();
    for round in 0..REPEATS {
        image = Vec::new();
        let (started, cpu) = (Instant::now(), cpu_ms());
        copy.snapshot(&mut image);
        println!(
            "  snapshot #{round}: {:.1} MiB in {:.0} ms (CPU {:.0} ms)",
            mib(image.len() as u64),
            ms(started.elapsed()),
            cpu_ms() - cpu
        );
    }
    for round in 0..REPEATS {
        let before = resident_bytes();
        let (started, cpu) = (Instant::now(), cpu_ms());
        let restored = Store::restore(&image).expect("own snapshot restores");
        let (elapsed, cpu) = (started.elapsed(), cpu_ms() - cpu);
        let used = resident_bytes().saturating_sub(before);
        assert_eq!(restored.len(), store.len());
        assert_eq!(restored.digest(), store.digest());
        let memory = if round == 0 {
            format!(", resident growth {:.1} MiB", mib(used))
        } else {
            String::new()
        };
        println!(
            "  restore #{round}: {} keys in {:.0} ms (CPU {cpu:.0} ms){memory}",
            restored.len(),
            ms(elapsed),
        );
        drop(restored);
    }
}

fn main() {
    let test_mode = !std::env::args().any(|arg| arg == "--bench");
    let keys = if test_mode { 10_000 } else { 1_000_000 };
    for exptime in [0, 3600] {
        let mut store = build(keys, exptime);
        if exptime == 0 {
            // First, while no memory has been freed yet, so restore's resident growth is real.
            snapshot_and_restore(&store);
        }
        let mut index = keys;
        clone_and_write(&mut store, keys, &mut index, exptime);
    }
}

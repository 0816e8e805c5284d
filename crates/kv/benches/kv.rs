//! Benchmarks: parse throughput, apply throughput for 256-byte sets, and the memory of a store of
//! 1M keys with 256-byte values (measured as resident-set growth, from /proc/self/statm, so it
//! includes the allocator's own overhead).
//!
//! Run: `cargo bench -p raftkv-kv --bench kv`

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput};
use raftkv_kv::{Command, ParseOutcome, Parser, Proposal, Store};

const VALUE_LEN: usize = 256;

fn key(i: u64) -> Bytes {
    Bytes::from(format!("key-{i:012}"))
}

fn value(i: u64) -> Bytes {
    Bytes::from(vec![b'a' + (i % 26) as u8; VALUE_LEN])
}

/// A pipelined stream of `count` requests: half 256-byte sets, half gets.
fn request_stream(count: u64) -> Vec<u8> {
    let mut stream = Vec::new();
    for i in 0..count {
        if i % 2 == 0 {
            stream.extend_from_slice(
                format!("set {} 0 {VALUE_LEN}\r\n", String::from_utf8_lossy(&key(i))).as_bytes(),
            );
            stream.extend_from_slice(&value(i));
            stream.extend_from_slice(b"\r\n");
        } else {
            stream.extend_from_slice(
                format!("get {}\r\n", String::from_utf8_lossy(&key(i))).as_bytes(),
            );
        }
    }
    stream
}

fn bench_parse(c: &mut Criterion) {
    const COUNT: u64 = 1000;
    let stream = request_stream(COUNT);
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(COUNT));
    group.bench_function("1000 pipelined requests (set 256 B / get)", |b| {
        b.iter_batched(
            || BytesMut::from(&stream[..]),
            |mut buf| {
                let mut parser = Parser::default();
                while let ParseOutcome::Request(request) = parser.parse(&mut buf) {
                    black_box(request);
                }
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn bench_apply(c: &mut Criterion) {
    const KEYS: u64 = 100_000;
    let commands: Vec<Command> = (0..KEYS)
        .map(|i| Command::Set {
            key: key(i),
            exptime: 0,
            value: value(i),
        })
        .collect();
    let mut group = c.benchmark_group("apply");
    group.throughput(Throughput::Elements(1));
    let mut store = Store::new();
    let mut index = 0u64;
    group.bench_function("set 256 B (100k distinct keys, overwrite)", |b| {
        b.iter(|| {
            index += 1;
            let command = &commands[(index % KEYS) as usize];
            black_box(store.apply(index, 1_000, command));
        })
    });
    let mut store = Store::new();
    let mut index = 0u64;
    group.bench_function("set 256 B with exptime (expiry index)", |b| {
        b.iter(|| {
            index += 1;
            let i = index % KEYS;
            let command = Command::Set {
                key: key(i),
                exptime: 60,
                value: value(i),
            };
            black_box(store.apply(index, index, &command));
        })
    });
    let proposal = Proposal {
        stamp_ms: 1,
        session: None,
        command: commands[0].clone(),
    };
    let mut encoded = BytesMut::new();
    proposal.encode(&mut encoded);
    let encoded = encoded.freeze();
    group.bench_function("decode log entry (set 256 B)", |b| {
        b.iter(|| black_box(Proposal::decode(&encoded)))
    });
    group.finish();
}

fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Builds a store and reports its resident-set growth. The store is returned, not dropped, so that
/// freed memory cannot be reused by (and hide the cost of) a later measurement.
fn report_memory(keys: u64, exptime: u32) -> Store {
    let raw_bytes = keys * (key(0).len() + VALUE_LEN) as u64;
    let before = resident_bytes();
    let mut store = Store::new();
    for i in 0..keys {
        store.apply(
            i + 1,
            1_000,
            &Command::Set {
                key: key(i),
                exptime,
                value: value(i),
            },
        );
    }
    let after = resident_bytes();
    match (before, after) {
        (Some(before), Some(after)) => {
            let used = after.saturating_sub(before);
            println!(
                "memory: {keys} keys x ({} B key + {VALUE_LEN} B value), exptime {exptime}: raw {:.1} MiB, \
                 resident growth {:.1} MiB, ratio {:.3}",
                key(0).len(),
                raw_bytes as f64 / 1048576.0,
                used as f64 / 1048576.0,
                used as f64 / raw_bytes as f64
            );
        }
        _ => println!("memory: /proc/self/statm unavailable"),
    }
    store
}

fn report_snapshot(store: &Store) {
    let mut image = Vec::new();
    let started = std::time::Instant::now();
    store.snapshot(&mut image);
    let snapshot_time = started.elapsed();
    let started = std::time::Instant::now();
    let restored = Store::restore(&image).map(|s| s.len()).unwrap_or(0);
    println!(
        "snapshot: {:.1} MiB in {:.0} ms, restore {restored} keys in {:.0} ms",
        image.len() as f64 / 1048576.0,
        snapshot_time.as_secs_f64() * 1000.0,
        started.elapsed().as_secs_f64() * 1000.0
    );
}

fn main() {
    // `cargo bench` passes --bench; without it (cargo test --benches) criterion runs each bench once.
    let test_mode = !std::env::args().any(|arg| arg == "--bench");
    let keys = if test_mode { 10_000 } else { 1_000_000 };
    let permanent = report_memory(keys, 0);
    let expiring = report_memory(keys, 3600);
    report_snapshot(&permanent);
    drop((permanent, expiring));
    let mut criterion = Criterion::default().configure_from_args();
    bench_parse(&mut criterion);
    bench_apply(&mut criterion);
    criterion.final_summary();
}

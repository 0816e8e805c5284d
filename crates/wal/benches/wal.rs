//! Durable append throughput and latency with group commit, next to the disk's own limit measured in the
//! same run (a loop of 4 KiB write + fdatasync). Run with `cargo bench -p raftkv-wal --bench wal`.
//! Prints plain figures rather than using criterion: what matters is fsync-bound latency percentiles, which
//! criterion's sampling model does not report.

use std::fs::OpenOptions;
use std::io::Write;
use std::time::{Duration, Instant};

use bytes::Bytes;
use raftkv_raft::EntryKind;
use raftkv_wal::{Entry, Wal, WalOptions};

const ENTRY_BYTES: usize = 256;

struct Figures {
    per_op: Vec<Duration>,
    total: Duration,
}

impl Figures {
    fn percentile(&mut self, p: f64) -> Duration {
        self.per_op.sort_unstable();
        self.per_op[((self.per_op.len() - 1) as f64 * p) as usize]
    }
}

fn time_ops(iterations: usize, mut op: impl FnMut()) -> Figures {
    let mut per_op = Vec::with_capacity(iterations);
    let started = Instant::now();
    for _ in 0..iterations {
        let t = Instant::now();
        op();
        per_op.push(t.elapsed());
    }
    Figures {
        per_op,
        total: started.elapsed(),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    // Under target/, on the same disk the server would use, never on a tmpfs /tmp.
    let scratch = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("scratch directory");

    let raw_path = scratch.path().join("raw");
    let mut raw = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&raw_path)
        .unwrap();
    let block = vec![0xA5u8; 4096];
    let mut raw_figures = time_ops(3000, || {
        raw.write_all(&block).unwrap();
        raw.sync_data().unwrap();
    });
    let raw_p50 = raw_figures.percentile(0.5);
    println!(
        "raw 4 KiB write+fdatasync: p50 {:.3} ms  p99 {:.3} ms  {:.0} syncs/s",
        ms(raw_p50),
        ms(raw_figures.percentile(0.99)),
        3000.0 / raw_figures.total.as_secs_f64()
    );

    let dir = scratch.path().join("wal");
    let (mut wal, _, _) = Wal::open(&dir, WalOptions::default()).unwrap();
    let payload = Bytes::from(vec![0x5Au8; ENTRY_BYTES]);
    let mut next_index = 1;
    for (batch, iterations) in [(1usize, 3000usize), (16, 1500), (128, 400), (1024, 60)] {
        let mut entries = Vec::with_capacity(batch);
        let mut figures = time_ops(iterations, || {
            entries.clear();
            entries.extend((0..batch as u64).map(|i| Entry {
                index: next_index + i,
                term: 1,
                kind: EntryKind::Normal,
                data: payload.clone(),
            }));
            next_index += batch as u64;
            wal.append(&entries).unwrap();
            wal.sync().unwrap();
        });
        let seconds = figures.total.as_secs_f64();
        let entries_per_s = (batch * iterations) as f64 / seconds;
        let p50 = figures.percentile(0.5);
        println!(
            "wal batch {batch:>4} x {ENTRY_BYTES} B: p50 {:.3} ms ({:.2}x raw)  p99 {:.3} ms  {:>9.0} entries/s  {:>6.1} MB/s",
            ms(p50),
            p50.as_secs_f64() / raw_p50.as_secs_f64(),
            ms(figures.percentile(0.99)),
            entries_per_s,
            entries_per_s * ENTRY_BYTES as f64 / 1e6,
        );
    }
    let usage = wal.disk_usage();
    drop(wal);
    let (_, initial, stats) = Wal::open(&dir, WalOptions::default()).unwrap();
    println!(
        "recovery: {} entries, {} segment(s), {:.1} MB on disk (pre-allocated room and spare included) in {:.1} ms",
        initial.entries.len(),
        stats.segments,
        usage as f64 / 1e6,
        ms(stats.elapsed)
    );
}

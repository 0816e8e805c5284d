//! `raftkv limits`: the machine's own floor for a durable replicated write, measured the same way every
//! time so benchmark figures can be reported next to it: the latency of a 4 KiB append + fdatasync in
//! the data directory's file system, and of a 64-byte loopback TCP round trip.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// Directory to run the fdatasync loop in (use the cluster's data directory's file system).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Iterations of each loop.
    #[arg(long, default_value_t = 2000)]
    pub iterations: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> ExitCode {
    let fsync = match fsync_loop(&args) {
        Ok(samples) => samples,
        Err(err) => {
            eprintln!("error: fdatasync loop in {}: {err}", args.dir.display());
            return ExitCode::FAILURE;
        }
    };
    let rtt = match round_trip_loop(args.iterations) {
        Ok(samples) => samples,
        Err(err) => {
            eprintln!("error: loopback round trips: {err}");
            return ExitCode::FAILURE;
        }
    };
    let (f50, f99) = (percentile(&fsync, 0.50), percentile(&fsync, 0.99));
    let (r50, r99) = (percentile(&rtt, 0.50), percentile(&rtt, 0.99));
    if args.json {
        println!(
            "{{\"fdatasync_4k_p50_us\":{f50},\"fdatasync_4k_p99_us\":{f99},\"loopback_rtt_p50_us\":{r50},\"loopback_rtt_p99_us\":{r99}}}"
        );
    } else {
        println!("4 KiB append + fdatasync   p50 {f50} µs  p99 {f99} µs");
        println!("loopback TCP round trip    p50 {r50} µs  p99 {r99} µs");
        println!(
            "floor of one durable replicated write ≈ RTT + fdatasync ≈ {} µs",
            r50 + f50
        );
    }
    ExitCode::SUCCESS
}

fn fsync_loop(args: &Args) -> std::io::Result<Vec<u64>> {
    let path = args
        .dir
        .join(format!(".raftkv-limits-{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let block = [0x5Au8; 4096];
        let mut samples = Vec::with_capacity(args.iterations);
        for _ in 0..args.iterations {
            let started = Instant::now();
            file.write_all(&block)?;
            file.sync_data()?;
            samples.push(micros(started.elapsed()));
        }
        Ok(samples)
    })();
    let _ = std::fs::remove_file(&path);
    result
}

fn round_trip_loop(iterations: usize) -> std::io::Result<Vec<u64>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut socket, _) = listener.accept()?;
        socket.set_nodelay(true)?;
        let mut buf = [0u8; 64];
        loop {
            if socket.read_exact(&mut buf).is_err() {
                return Ok(());
            }
            socket.write_all(&buf)?;
        }
    });
    let mut client = TcpStream::connect(addr)?;
    client.set_nodelay(true)?;
    let mut buf = [7u8; 64];
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let started = Instant::now();
        client.write_all(&buf)?;
        client.read_exact(&mut buf)?;
        samples.push(micros(started.elapsed()));
    }
    drop(client);
    let _ = echo.join();
    Ok(samples)
}

fn micros(elapsed: Duration) -> u64 {
    elapsed.as_micros() as u64
}

fn percentile(samples: &[u64], quantile: f64) -> u64 {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = ((sorted.len() as f64 - 1.0) * quantile).round() as usize;
    sorted.get(rank).copied().unwrap_or(0)
}

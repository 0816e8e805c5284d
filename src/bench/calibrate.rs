//! `--calibrate`: the machine's floor for comparison, measured before the run. No replicated
//! durable write beats one fdatasync plus one network round trip, so this times 4 KiB appends
//! each followed by fdatasync (in `--calibrate-dir`) and 64-byte round trips over loopback TCP.

use std::io::Write;
use std::time::Instant;

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::stats::{json_object, new_histogram, record};

/// The machine's floor: no replicated durable write beats one fsync plus one round trip.
pub(super) struct Calibration {
    fdatasync_us: [(&'static str, u64); 4],
    loopback_rtt_us: [(&'static str, u64); 4],
}

const CALIBRATION_SYNCS: usize = 300;
const CALIBRATION_ROUND_TRIPS: usize = 5000;

impl Calibration {
    pub(super) async fn measure(dir: &std::path::Path) -> std::io::Result<Calibration> {
        let path = dir.join(format!(".raftkv-bench-fsync-{}", std::process::id()));
        let fsync = tokio::task::spawn_blocking(move || {
            let outcome = time_fdatasync(&path);
            let _ = std::fs::remove_file(&path);
            outcome
        })
        .await
        .map_err(std::io::Error::other)??;
        let rtt = time_loopback().await?;
        Ok(Calibration {
            fdatasync_us: summarize(&fsync),
            loopback_rtt_us: summarize(&rtt),
        })
    }

    /// The table's fdatasync and loopback rows.
    pub(super) fn rows(&self) -> [String; 2] {
        let show = |figures: &[(&str, u64); 4]| {
            let parts: Vec<String> = figures
                .iter()
                .map(|(name, value)| match *name {
                    "per_s" => format!("{value}/s sequential"),
                    _ => format!("{name} {value} µs"),
                })
                .collect();
            parts.join("  ")
        };
        [show(&self.fdatasync_us), show(&self.loopback_rtt_us)]
    }

    pub(super) fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "fdatasync_4k_us": json_object(&self.fdatasync_us),
            "loopback_rtt_64b_us": json_object(&self.loopback_rtt_us),
        })
    }
}

fn summarize(histogram: &Histogram<u64>) -> [(&'static str, u64); 4] {
    [
        ("p50", histogram.value_at_quantile(0.5)),
        ("p99", histogram.value_at_quantile(0.99)),
        ("max", histogram.max()),
        ("per_s", 1_000_000 / histogram.mean().max(1.0) as u64),
    ]
}

fn time_fdatasync(path: &std::path::Path) -> std::io::Result<Histogram<u64>> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)?;
    let block = [0x5au8; 4096];
    let mut histogram = new_histogram();
    for _ in 0..CALIBRATION_SYNCS {
        let started = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        record(&mut histogram, started.elapsed());
    }
    Ok(histogram)
}

async fn time_loopback() -> std::io::Result<Histogram<u64>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let echo = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let mut message = [0u8; 64];
        for _ in 0..CALIBRATION_ROUND_TRIPS {
            stream.read_exact(&mut message).await?;
            stream.write_all(&message).await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let mut stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let mut message = [7u8; 64];
    let mut histogram = new_histogram();
    for _ in 0..CALIBRATION_ROUND_TRIPS {
        let started = Instant::now();
        stream.write_all(&message).await?;
        stream.read_exact(&mut message).await?;
        record(&mut histogram, started.elapsed());
    }
    echo.await.map_err(std::io::Error::other)??;
    Ok(histogram)
}

//! What a run reports: the summary of every worker's results (and the calibration, if any), printed
//! at the end as a table or as one JSON object.

use std::time::Duration;

use hdrhistogram::Histogram;

use super::calibrate::Calibration;
use super::stats::{json_object, new_histogram, ERROR_KINDS};
use super::worker::WorkerResult;
use super::Args;

pub(super) struct Summary {
    workload: String,
    sessions: bool,
    clients: u32,
    conns: usize,
    pipeline: u32,
    value_size: usize,
    keys: u64,
    elapsed: Duration,
    ok: u64,
    pub(super) errors: u64,
    errors_by_kind: Vec<(&'static str, u64)>,
    histogram: Histogram<u64>,
    calibration: Option<Calibration>,
    /// Node processes sampled, and the CPU time they spent during the run (µs).
    server_cpu: Option<(usize, u64)>,
}

impl Summary {
    pub(super) fn new(
        args: &Args,
        conns: usize,
        elapsed: Duration,
        results: Vec<WorkerResult>,
        calibration: Option<Calibration>,
        server_cpu: Option<(usize, u64)>,
    ) -> Summary {
        let mut histogram = new_histogram();
        let mut ok = 0;
        let mut by_kind = [0u64; ERROR_KINDS.len()];
        for result in results {
            let _ = histogram.add(&result.histogram);
            ok += result.ok;
            for (total, count) in by_kind.iter_mut().zip(result.errors) {
                *total += count;
            }
        }
        let errors_by_kind: Vec<_> = ERROR_KINDS
            .iter()
            .zip(by_kind)
            .filter(|(_, count)| *count > 0)
            .map(|(kind, count)| (kind.name(), count))
            .collect();
        Summary {
            workload: args.op.name(),
            sessions: args.sessions(),
            clients: args.clients,
            conns,
            pipeline: args.pipeline,
            value_size: args.value_size,
            keys: args.keys,
            elapsed,
            ok,
            errors: by_kind.iter().sum(),
            errors_by_kind,
            histogram,
            calibration,
            server_cpu,
        }
    }

    /// CPU time of all sampled nodes together per successful request, in µs.
    fn server_cpu_per_op(&self) -> Option<f64> {
        self.server_cpu
            .map(|(_, us)| us as f64 / (self.ok.max(1)) as f64)
    }

    fn throughput(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn percentiles(&self) -> [(&'static str, u64); 6] {
        let h = &self.histogram;
        let at = |q: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(q)
            }
        };
        [
            ("p50", at(0.50)),
            ("p90", at(0.90)),
            ("p99", at(0.99)),
            ("p99.9", at(0.999)),
            ("max", if h.is_empty() { 0 } else { h.max() }),
            ("mean", h.mean().round() as u64),
        ]
    }

    pub(super) fn table(&self) -> String {
        let mut out = String::new();
        let mut row = |name: &str, value: String| out.push_str(&format!("{name:<16}{value}\n"));
        let in_sessions = if self.sessions {
            ", writes in sessions"
        } else {
            ""
        };
        row("workload", format!("{}{in_sessions}", self.workload));
        row(
            "clients",
            format!(
                "{} over {} connections, pipeline {}",
                self.clients, self.conns, self.pipeline
            ),
        );
        row(
            "values",
            format!("{} bytes, {} keys", self.value_size, self.keys),
        );
        row("duration", format!("{:.2} s", self.elapsed.as_secs_f64()));
        row(
            "requests",
            format!("{} ok, {} failed", self.ok, self.errors),
        );
        row("throughput", format!("{:.0} req/s", self.throughput()));
        row("latency (µs)", pairs(&self.percentiles()));
        if let (Some((nodes, _)), Some(per_op)) = (self.server_cpu, self.server_cpu_per_op()) {
            row(
                "server CPU",
                format!("{per_op:.1} µs per request, {nodes} nodes together"),
            );
        }
        let errors = if self.errors_by_kind.is_empty() {
            "none".to_string()
        } else {
            pairs(&self.errors_by_kind)
        };
        row("errors", errors);
        if let Some(calibration) = &self.calibration {
            let [fsync, rtt] = calibration.rows();
            row("fdatasync 4KiB", fsync);
            row("loopback rtt", rtt);
        }
        out
    }

    pub(super) fn json(&self) -> serde_json::Value {
        let mut figures = serde_json::json!({
            "workload": self.workload,
            "sessions": self.sessions,
            "clients": self.clients,
            "conns": self.conns,
            "pipeline": self.pipeline,
            "value_size": self.value_size,
            "keys": self.keys,
            "duration_s": self.elapsed.as_secs_f64(),
            "requests_ok": self.ok,
            "errors": self.errors,
            "throughput_per_s": self.throughput(),
            "latency_us": json_object(&self.percentiles()),
            "errors_by_kind": json_object(&self.errors_by_kind),
        });
        if let Some(calibration) = &self.calibration {
            figures["machine"] = calibration.json();
        }
        if let Some(per_op) = self.server_cpu_per_op() {
            figures["server_cpu_us_per_op"] = serde_json::json!(per_op);
            figures["server_nodes_sampled"] = serde_json::json!(self.server_cpu.map_or(0, |c| c.0));
        }
        figures
    }
}

/// `name value` pairs separated by two spaces, as the table shows them.
fn pairs(figures: &[(&str, u64)]) -> String {
    let parts: Vec<String> = figures
        .iter()
        .map(|(name, value)| format!("{name} {value}"))
        .collect();
    parts.join("  ")
}

//! What the workers measure and the report shows: the kinds of failed requests, latency histograms,
//! and named figures as JSON. Depends on no other part of the benchmark.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Kinds of failed requests, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ErrorKind {
    NotFound,
    VersionMismatch,
    Redirect,
    Internal,
    CommandError,
    ConnectionLost,
    Protocol,
    Timeout,
}

pub(super) const ERROR_KINDS: [ErrorKind; 8] = [
    ErrorKind::NotFound,
    ErrorKind::VersionMismatch,
    ErrorKind::Redirect,
    ErrorKind::Internal,
    ErrorKind::CommandError,
    ErrorKind::ConnectionLost,
    ErrorKind::Protocol,
    ErrorKind::Timeout,
];

impl ErrorKind {
    /// The kind's name in the table and the JSON.
    pub(super) fn name(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::VersionMismatch => "version_mismatch",
            ErrorKind::Redirect => "redirect",
            ErrorKind::Internal => "internal",
            ErrorKind::CommandError => "cmd_err",
            ErrorKind::ConnectionLost => "connection_lost",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Timeout => "timeout",
        }
    }
}

/// Latencies from 1 µs to 60 s at 3 significant digits.
pub(super) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant histogram bounds are valid")
}

/// Records one latency, in microseconds and at least 1.
pub(super) fn record(histogram: &mut Histogram<u64>, latency: Duration) {
    histogram.saturating_record(latency.as_micros().max(1) as u64);
}

/// Named figures as a JSON object.
pub(super) fn json_object(figures: &[(&str, u64)]) -> serde_json::Value {
    figures
        .iter()
        .map(|(name, value)| (name.to_string(), serde_json::Value::from(*value)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

//! Each simulated node's two clocks. The wall clock has its own offset, drift and occasional jumps
//! (forward and backward, as an NTP step would make); the monotonic clock, which drives the node's
//! timers, has its own origin and never jumps. No node's clock agrees with any other's or with the
//! simulator's virtual time.

use raftkv_replica::Now;

use crate::rng::Rng;

/// Where every wall clock starts: a realistic Unix time in ms, so stamps look like real ones.
const EPOCH_MS: u64 = 1_780_000_000_000;

#[derive(Clone, Debug)]
pub struct NodeClock {
    /// Added to virtual time (may be negative).
    offset_ms: i64,
    /// Parts per million the wall clock runs fast (positive) or slow (negative).
    drift_ppm: i64,
    mono_origin_ms: u64,
    /// Parts per million the monotonic clock runs fast or slow (0 unless a seed with leader leases
    /// draws it, within the rate difference the lease tolerates).
    mono_rate_ppm: i64,
}

impl NodeClock {
    /// A clock skewed by up to `max_skew_ms` either way, drifting by up to `max_drift_ppm`.
    pub fn draw(rng: &mut Rng, max_skew_ms: u64, max_drift_ppm: u64) -> NodeClock {
        NodeClock {
            offset_ms: rng.range(0, 2 * max_skew_ms) as i64 - max_skew_ms as i64,
            drift_ppm: rng.range(0, 2 * max_drift_ppm) as i64 - max_drift_ppm as i64,
            mono_origin_ms: rng.range(0, 1_000_000),
            mono_rate_ppm: 0,
        }
    }

    /// Makes the monotonic clock (and so the node's ticks) run `ppm` parts per million fast or slow.
    pub fn set_mono_rate_ppm(&mut self, ppm: i64) {
        self.mono_rate_ppm = ppm;
    }

    /// Steps the wall clock by `delta_ms` (either way), as an NTP correction or an operator would.
    pub fn jump(&mut self, delta_ms: i64) {
        self.offset_ms += delta_ms;
    }

    pub fn offset_ms(&self) -> i64 {
        self.offset_ms
    }

    /// How far the wall clock is ahead of virtual time at `virtual_ms` (negative: behind).
    pub fn lead_ms(&self, virtual_ms: u64) -> i64 {
        self.now(virtual_ms).wall_ms as i64 - EPOCH_MS as i64 - virtual_ms as i64
    }

    /// The node's clocks at virtual time `virtual_ms`.
    pub fn now(&self, virtual_ms: u64) -> Now {
        let drift = virtual_ms as i64 * self.drift_ppm / 1_000_000;
        let wall = EPOCH_MS as i64 + virtual_ms as i64 + self.offset_ms + drift;
        Now {
            mono_ms: (self.mono_origin_ms as i64
                + virtual_ms as i64
                + virtual_ms as i64 * self.mono_rate_ppm / 1_000_000)
                .max(0) as u64,
            wall_ms: wall.max(0) as u64,
        }
    }
}

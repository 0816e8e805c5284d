//! Time as the replica sees it, and the rule that keeps expiry linearizable when clocks disagree.
//!
//! A node has two clocks: a monotonic one for its own timers (ticks, how long a request may wait for a
//! leader) and a wall clock for the stamps it writes into the log. Neither is trusted to agree with any
//! other node's: wall clocks skew, drift and jump (an NTP step), forward and backward.
//!
//! **The replicated clock.** Every write a leader proposes carries a stamp: its wall clock, never below a
//! stamp it already used or the store's clock. The store's clock is the largest stamp applied, so it is
//! the same on every replica at the same index, and it never runs backwards. Expiry is always judged at
//! the store's clock: writes at their own entry's stamp, reads at the clock of the state they read.
//! A read's answer is therefore a function of the log prefix it reads, like any other read, and
//! linearizable through ReadIndex.
//!
//! **Keeping it fresh.** With no writes the store's clock would stand still and keys would never expire
//! for readers. So before a leader answers a read whose answer depends on time — the key expires at or
//! before the leader's own wall clock but after the store's clock, or a `getm` of an expiring key whose
//! remaining time the store's clock would overstate by more than [`READ_CLOCK_SLACK_MS`] — it proposes
//! an `Expire` entry stamped with its own wall clock and answers once that entry is applied.
//!
//! What a client can observe when clocks disagree: an expiry fires when the leader of the moment
//! believes it is due (late if that leader's clock is slow, early if it is fast), and once fired it
//! never un-fires: every later read and write, on any leader, sees the key gone.

use raftkv_kv::{Request, Store};

/// How far the store's clock may lag the leader's wall clock when a `getm` reports an expiring key's
/// remaining seconds.
pub const READ_CLOCK_SLACK_MS: u64 = 250;

/// The two clocks of a node at one moment, both in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time since an arbitrary origin: timers only, never written anywhere.
    pub mono_ms: u64,
    /// The node's wall clock (Unix ms). May skew and jump; used only to stamp entries.
    pub wall_ms: u64,
}

/// Whether answering `request` at the store's clock could differ from answering it at `wall_ms`
/// (so the leader must first advance the replicated clock to `wall_ms`).
pub fn read_needs_clock(store: &Store, request: &Request, wall_ms: u64) -> bool {
    let clock = store.clock_ms();
    let (key, getm) = match request {
        Request::Get { key } => (key, false),
        Request::Getm { key } => (key, true),
        // Walks of the key space: whether any key expires between the two clocks.
        Request::Keys { .. } | Request::Scan { .. } | Request::RandomKey { .. } => {
            return wall_ms > clock && store.has_expired(wall_ms);
        }
        _ => return false,
    };
    if wall_ms <= clock {
        return false;
    }
    match store.expires_at(key) {
        None => false,
        Some(at) if at <= clock => false,
        Some(at) => at <= wall_ms || (getm && wall_ms - clock > READ_CLOCK_SLACK_MS),
    }
}

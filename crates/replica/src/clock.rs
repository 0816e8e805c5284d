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
//! before the leader's own wall clock but after the store's clock, a `getm` of an expiring key whose
//! remaining time the store's clock would overstate by more than [`READ_CLOCK_SLACK_MS`], or Redis's
//! TTL of an expiring key whose remaining time it would overstate at all — it proposes
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
    // How far the store's clock may lag for this read: `None` if only expiry itself matters.
    let (key, slack_ms) = match request {
        Request::Get { key } => (key, None),
        Request::Getm { key } => (key, Some(READ_CLOCK_SLACK_MS)),
        // Redis's TTL and PTTL: exact, as Redis answers them (TTL rounds to the nearest second, so
        // any lag can change it).
        Request::Pttl { key } => (key, Some(0)),
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
        Some(at) => at <= wall_ms || slack_ms.is_some_and(|slack| wall_ms - clock > slack),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use raftkv_kv::{Command, Request, Store};

    use super::{read_needs_clock, READ_CLOCK_SLACK_MS};

    /// A store whose clock stands at 10 s, holding `k` written then with a lifetime of 100 s.
    fn store_with_expiring_key() -> Store {
        let mut store = Store::new();
        let set = Command::Set {
            key: Bytes::from_static(b"k"),
            exptime: 100,
            value: Bytes::from_static(b"v"),
        };
        store.apply(1, 10_000, &set);
        store
    }

    #[test]
    fn remaining_time_reads_advance_a_clock_that_stood_still() {
        let store = store_with_expiring_key();
        let key = Bytes::from_static(b"k");
        let later = 10_000 + READ_CLOCK_SLACK_MS + 1;
        // Without a write the store's clock stands still: TTL and getm would report the full 100 s
        // however long ago the key was written (seen through redis-cli: TTL stuck at 100).
        assert!(read_needs_clock(
            &store,
            &Request::Pttl { key: key.clone() },
            later
        ));
        assert!(read_needs_clock(
            &store,
            &Request::Getm { key: key.clone() },
            later
        ));
        // A value read only cares whether the key is still there.
        assert!(!read_needs_clock(
            &store,
            &Request::Get { key: key.clone() },
            later
        ));
        // getm allows some slack; TTL none (Redis's TTL rounds, so any lag can show).
        let soon = 10_000 + READ_CLOCK_SLACK_MS;
        assert!(!read_needs_clock(
            &store,
            &Request::Getm { key: key.clone() },
            soon
        ));
        assert!(read_needs_clock(
            &store,
            &Request::Pttl { key: key.clone() },
            10_001
        ));
        assert!(!read_needs_clock(&store, &Request::Pttl { key }, 10_000));
    }
}

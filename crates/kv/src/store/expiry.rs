//! Index of expiring keys by expiry instant, so reclaiming expired keys costs time proportional to
//! what is reclaimed, not to the size of the store. Keys that never expire are not indexed.
//!
//! Each element is (instant, key hash): 16 bytes instead of a copy of the key. Distinct keys
//! sharing both collapse into one element, which stays as long as any of them remains (the store
//! checks before removing) and reclaims all of them when due.

use std::collections::BTreeSet;

#[derive(Debug, Clone, Default)]
pub struct ExpiryIndex {
    by_instant: BTreeSet<(u64, u64)>,
}

impl ExpiryIndex {
    pub fn insert(&mut self, expires_at_ms: u64, key_hash: u64) {
        self.by_instant.insert((expires_at_ms, key_hash));
    }

    pub fn remove(&mut self, expires_at_ms: u64, key_hash: u64) {
        self.by_instant.remove(&(expires_at_ms, key_hash));
    }

    /// Removes and returns the next (instant, key hash) at or before `now_ms`.
    pub fn pop_due(&mut self, now_ms: u64) -> Option<(u64, u64)> {
        let (instant, _) = self.by_instant.first()?;
        if *instant > now_ms {
            return None;
        }
        self.by_instant.pop_first()
    }

    pub fn first_instant(&self) -> Option<u64> {
        self.by_instant.first().map(|(instant, _)| *instant)
    }
}

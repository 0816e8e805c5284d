//! Index of expiring keys by expiry instant, so reclaiming expired keys costs time proportional to
//! what is reclaimed, not to the size of the store. Keys that never expire are not indexed.

use std::collections::BTreeSet;

#[derive(Debug, Clone, Default)]
pub struct ExpiryIndex {
    by_instant: BTreeSet<(u64, Box<[u8]>)>,
}

impl ExpiryIndex {
    pub fn insert(&mut self, expires_at_ms: u64, key: &[u8]) {
        self.by_instant.insert((expires_at_ms, key.into()));
    }

    pub fn remove(&mut self, expires_at_ms: u64, key: &[u8]) {
        self.by_instant
            .remove(&(expires_at_ms, Box::<[u8]>::from(key)));
    }

    /// Removes and returns the next key whose instant is at or before `now_ms`.
    pub fn pop_due(&mut self, now_ms: u64) -> Option<Box<[u8]>> {
        let (instant, _) = self.by_instant.first()?;
        if *instant > now_ms {
            return None;
        }
        self.by_instant.pop_first().map(|(_, key)| key)
    }

    pub fn first_instant(&self) -> Option<u64> {
        self.by_instant.first().map(|(instant, _)| *instant)
    }

    pub fn len(&self) -> usize {
        self.by_instant.len()
    }
}

//! One stored key: kept in a single allocation (`key_len | key | value`) plus two integers, because
//! per-entry overhead dominates memory when a store holds millions of small values. The allocation is
//! reference-counted so that a read of a large value shares it instead of copying it.

use crate::limits::MAX_KEY_LEN;
use bytes::Bytes;
use std::sync::Arc;

/// Values at most this long are copied into a read's reply; longer ones are shared with the store (a
/// copy of a few hundred bytes costs less than the shared handle's own allocation).
const SHARE_VALUES_FROM: usize = 1024;

/// `expires_at_ms` of a key that never expires.
pub const NEVER: u64 = u64::MAX;

#[derive(Debug, Clone)]
pub struct Entry {
    pub version: u64,
    /// First instant (ms, leader's clock) at which the key is absent; [`NEVER`] if it never expires.
    pub expires_at_ms: u64,
    key_and_value: Arc<[u8]>,
}

impl Entry {
    /// `None` if the key is longer than [`MAX_KEY_LEN`] (its length must fit the one-byte prefix).
    pub fn new(key: &[u8], value: &[u8], version: u64, expires_at_ms: u64) -> Option<Entry> {
        if key.len() > MAX_KEY_LEN {
            return None;
        }
        let key_len = u8::try_from(key.len()).ok()?;
        let mut key_and_value = Vec::with_capacity(1 + key.len() + value.len());
        key_and_value.push(key_len);
        key_and_value.extend_from_slice(key);
        key_and_value.extend_from_slice(value);
        Some(Entry {
            version,
            expires_at_ms,
            key_and_value: Arc::from(key_and_value),
        })
    }

    /// `1 + key length + value length`, known without reading the allocation (a snapshot sizes
    /// its output from this without a cache miss per entry).
    pub fn key_and_value_len(&self) -> usize {
        self.key_and_value.len()
    }

    /// Reads a byte of each cache line of the entry's allocation and returns their sum. Walking
    /// a table touches entries in no particular memory order, one cache miss each; touching
    /// entries ahead of use lets those misses overlap (see `table::Warmed`).
    pub fn touch(&self) -> u8 {
        self.key_and_value
            .iter()
            .step_by(64)
            .fold(0u8, |sum, byte| sum.wrapping_add(*byte))
    }

    fn key_end(&self) -> usize {
        1 + usize::from(self.key_and_value[0])
    }

    pub fn key(&self) -> &[u8] {
        &self.key_and_value[1..self.key_end()]
    }

    pub fn value(&self) -> &[u8] {
        &self.key_and_value[self.key_end()..]
    }

    /// The value as `Bytes` for a reply: shared with the store when it is large, so that many replies
    /// of one value queued for slow clients hold it once, and a large read costs no copy.
    pub fn value_bytes(&self) -> Bytes {
        let start = self.key_end();
        if self.key_and_value.len() - start <= SHARE_VALUES_FROM {
            return Bytes::copy_from_slice(self.value());
        }
        Bytes::from_owner(SharedKeyAndValue(self.key_and_value.clone())).slice(start..)
    }

    pub fn is_live_at(&self, now_ms: u64) -> bool {
        now_ms < self.expires_at_ms
    }

    pub fn expires(&self) -> bool {
        self.expires_at_ms != NEVER
    }
}

/// The owner handed to [`Bytes::from_owner`]: the entry's allocation, kept alive by the reply.
struct SharedKeyAndValue(Arc<[u8]>);

impl AsRef<[u8]> for SharedKeyAndValue {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

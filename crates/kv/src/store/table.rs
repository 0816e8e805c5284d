//! The key table: entries found by key, or by the hash of their key (which is what the expiry
//! index remembers, so it need not hold a copy of every expiring key).
//!
//! The table is split into [`SHARDS`] shards, each behind an [`Arc`], so that cloning the whole
//! table (what a snapshot does, on the node's event loop) copies [`SHARDS`] pointers instead of
//! every entry. A shard shared with a clone is copied on the first write to it
//! ([`Arc::make_mut`]), so the longest pause a write sees is one shard copy (about
//! `len / SHARDS` entries), and the copies stop once the clone is dropped. Resizing and rehashing
//! also happen per shard, so no single write ever rehashes the whole store.
//!
//! Each shard also holds the expiry index of its own keys; the table caches each shard's earliest
//! expiry instant so "is anything due?" does not touch the shards.
//!
//! The hasher is randomly seeded per process (resisting hash flooding by chosen keys, which would
//! otherwise also pile keys into one shard and lengthen its copy), so hashes, shard choice and
//! iteration order differ between replicas; nothing observable may depend on them.

use std::collections::VecDeque;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use hashbrown::hash_table;
use hashbrown::HashTable;

use super::entry::{Entry, NEVER};
use super::expiry::ExpiryIndex;

const SHARD_BITS: u32 = 11;
/// Number of shards: a clone costs one reference count increment per shard, a copy on write
/// about `len / SHARDS` entries. At 1M keys, 1024 shards measured a 0.01-0.15 ms clone and
/// 0.1-0.3 ms copies; 4096 shards 0.05-0.8 ms and 0.03-0.09 ms; 2048 sits between.
pub const SHARDS: usize = 1 << SHARD_BITS;

/// Which shard holds a key of hash `hash`. Bits 32.. are used because hashbrown takes a table's
/// bucket from the low bits and its tag from the top 7: a shard's keys, sharing these bits,
/// still spread over their shard's buckets and tags.
fn shard_of(hash: u64) -> usize {
    (hash >> 32) as usize & (SHARDS - 1)
}

#[derive(Debug, Default)]
struct Shard {
    table: HashTable<Entry>,
    expiry: ExpiryIndex,
}

impl Clone for Shard {
    /// The copy-on-write copy. Every entry is touched first, with independent loads whose cache
    /// misses overlap, so the copy itself (an allocation and a copy per entry) finds them cached.
    fn clone(&self) -> Self {
        let sum = self
            .table
            .iter()
            .fold(0u8, |sum, entry| sum.wrapping_add(entry.touch()));
        std::hint::black_box(sum);
        Shard {
            table: self.table.clone(),
            expiry: self.expiry.clone(),
        }
    }
}

/// How many entries [`Warmed`] touches at once.
const BATCH: usize = 32;

/// An iterator over entries that touches them in batches before yielding them: the touches of a
/// batch are independent loads in a tight loop, so their cache misses overlap instead of each
/// entry stalling its reader in turn.
pub struct Warmed<'a, I: Iterator<Item = &'a Entry>> {
    inner: I,
    batch: VecDeque<&'a Entry>,
    sum: u8,
}

impl<'a, I: Iterator<Item = &'a Entry>> Iterator for Warmed<'a, I> {
    type Item = &'a Entry;

    fn next(&mut self) -> Option<&'a Entry> {
        if self.batch.is_empty() {
            self.batch.extend(self.inner.by_ref().take(BATCH));
            self.sum = self
                .batch
                .iter()
                .fold(self.sum, |sum, entry| sum.wrapping_add(entry.touch()));
        }
        self.batch.pop_front()
    }
}

impl<'a, I: Iterator<Item = &'a Entry>> Drop for Warmed<'a, I> {
    fn drop(&mut self) {
        // The touches exist for their side effect on the cache; keep them from being optimised out.
        std::hint::black_box(self.sum);
    }
}

#[derive(Debug, Clone)]
pub struct KeyTable {
    shards: Vec<Arc<Shard>>,
    /// Per shard, the earliest instant in its expiry index ([`NEVER`] if empty).
    next_expiry: Vec<u64>,
    len: usize,
    /// Bytes of keys and values held (each entry's `key_and_value_len`).
    bytes: usize,
    /// Entries that expire (the expiry indexes may hold fewer elements, see `expiry`).
    expiring: usize,
    hasher: RandomState,
}

impl Default for KeyTable {
    fn default() -> Self {
        // Every slot starts as the same empty shard; the first write to a slot copies it.
        let empty = Arc::new(Shard::default());
        KeyTable {
            shards: vec![empty; SHARDS],
            next_expiry: vec![NEVER; SHARDS],
            len: 0,
            bytes: 0,
            expiring: 0,
            hasher: RandomState::new(),
        }
    }
}

impl Shard {
    fn get(&self, hash: u64, key: &[u8]) -> Option<&Entry> {
        self.table.find(hash, |entry| entry.key() == key)
    }

    /// Whether some entry with key hash `hash` expires exactly at `expires_at_ms`.
    fn has_expiring(&self, hasher: &RandomState, hash: u64, expires_at_ms: u64) -> bool {
        self.table
            .find(hash, |entry| {
                entry.expires_at_ms == expires_at_ms && hasher.hash_one(entry.key()) == hash
            })
            .is_some()
    }

    /// Drops the index element of a removed or replaced entry, unless another entry needs it.
    fn unindex(&mut self, hasher: &RandomState, hash: u64, old: &Entry) {
        if old.expires() && !self.has_expiring(hasher, hash, old.expires_at_ms) {
            self.expiry.remove(old.expires_at_ms, hash);
        }
    }
}

impl KeyTable {
    pub fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes of keys and values held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn expiring_len(&self) -> usize {
        self.expiring
    }

    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.shards.iter().flat_map(|shard| shard.table.iter())
    }

    /// The entries of shard `at` (below [`SHARDS`]), for walks that resume between shards (SCAN).
    /// A key's shard never changes while this table lives, so a walk over every shard meets every
    /// key that was held throughout.
    pub fn shard(&self, at: usize) -> impl Iterator<Item = &Entry> {
        self.shards[at].table.iter()
    }

    /// [`KeyTable::iter`] for walks that read every entry's bytes (snapshot, digest).
    pub fn iter_warmed(&self) -> Warmed<'_, impl Iterator<Item = &Entry>> {
        Warmed {
            inner: self.iter(),
            batch: VecDeque::with_capacity(BATCH),
            sum: 0,
        }
    }

    pub fn get(&self, key: &[u8]) -> Option<&Entry> {
        let hash = self.hash(key);
        self.shards[shard_of(hash)].get(hash, key)
    }

    /// Inserts `entry`, replacing (in place) and returning the entry with the same key if any.
    pub fn upsert(&mut self, entry: Entry) -> Option<Entry> {
        let hash = self.hash(entry.key());
        let at = shard_of(hash);
        let hasher = &self.hasher;
        let shard = Arc::make_mut(&mut self.shards[at]);
        let (expires, expires_at_ms) = (entry.expires(), entry.expires_at_ms);
        self.bytes += entry.key_and_value_len();
        let old = match shard.table.entry(
            hash,
            |held| held.key() == entry.key(),
            |held| hasher.hash_one(held.key()),
        ) {
            hash_table::Entry::Occupied(mut held) => Some(std::mem::replace(held.get_mut(), entry)),
            hash_table::Entry::Vacant(slot) => {
                slot.insert(entry);
                None
            }
        };
        match &old {
            Some(old) => {
                // After the replacement, so an old and new entry sharing (instant, hash) keep it.
                shard.unindex(hasher, hash, old);
                self.expiring = self.expiring.saturating_sub(usize::from(old.expires()));
                self.bytes -= old.key_and_value_len();
            }
            None => self.len += 1,
        }
        if expires {
            shard.expiry.insert(expires_at_ms, hash);
            self.expiring += 1;
        }
        self.next_expiry[at] = shard.expiry.first_instant().unwrap_or(NEVER);
        old
    }

    pub fn take(&mut self, key: &[u8]) -> Option<Entry> {
        let hash = self.hash(key);
        let at = shard_of(hash);
        // Look first, so deleting an absent key never copies a shard shared with a snapshot.
        self.shards[at].get(hash, key)?;
        let hasher = &self.hasher;
        let shard = Arc::make_mut(&mut self.shards[at]);
        let old = shard
            .table
            .find_entry(hash, |entry| entry.key() == key)
            .ok()?
            .remove()
            .0;
        shard.unindex(hasher, hash, &old);
        self.expiring = self.expiring.saturating_sub(usize::from(old.expires()));
        self.len -= 1;
        self.bytes -= old.key_and_value_len();
        self.next_expiry[at] = shard.expiry.first_instant().unwrap_or(NEVER);
        Some(old)
    }

    /// The earliest instant at which some held entry expires.
    pub fn first_expiry(&self) -> Option<u64> {
        self.next_expiry
            .iter()
            .copied()
            .min()
            .filter(|&instant| instant != NEVER)
    }

    /// Removes every entry that expires at or before `now_ms`.
    pub fn reclaim_expired(&mut self, now_ms: u64) {
        let hasher = &self.hasher;
        for at in 0..SHARDS {
            if self.next_expiry[at] > now_ms {
                continue;
            }
            let shard = Arc::make_mut(&mut self.shards[at]);
            while let Some((instant, hash)) = shard.expiry.pop_due(now_ms) {
                // Every entry with this key hash and instant, since they share the element.
                while let Ok(found) = shard.table.find_entry(hash, |entry| {
                    entry.expires_at_ms == instant && hasher.hash_one(entry.key()) == hash
                }) {
                    let (removed, _) = found.remove();
                    self.expiring = self.expiring.saturating_sub(1);
                    self.len -= 1;
                    self.bytes -= removed.key_and_value_len();
                }
            }
            self.next_expiry[at] = shard.expiry.first_instant().unwrap_or(NEVER);
        }
    }
}

/// Builds a [`KeyTable`] from entries with distinct keys (a restore), with plain shards: no
/// reference counts to check on every insert, and each shard pre-sized.
pub struct Builder {
    shards: Vec<Shard>,
    len: usize,
    bytes: usize,
    expiring: usize,
    hasher: RandomState,
}

impl Builder {
    /// For about `expected` entries.
    pub fn new(expected: usize) -> Builder {
        let per_shard = expected / SHARDS;
        Builder {
            shards: (0..SHARDS)
                .map(|_| Shard {
                    table: HashTable::with_capacity(per_shard),
                    expiry: ExpiryIndex::default(),
                })
                .collect(),
            len: 0,
            bytes: 0,
            expiring: 0,
            hasher: RandomState::new(),
        }
    }

    /// Inserts `entry` if its key is absent (one probe); otherwise hands it back.
    pub fn insert_new(&mut self, entry: Entry) -> Result<(), Entry> {
        let hasher = &self.hasher;
        let hash = hasher.hash_one(entry.key());
        let shard = &mut self.shards[shard_of(hash)];
        let (expires, expires_at_ms) = (entry.expires(), entry.expires_at_ms);
        let bytes = entry.key_and_value_len();
        match shard.table.entry(
            hash,
            |held| held.key() == entry.key(),
            |held| hasher.hash_one(held.key()),
        ) {
            hash_table::Entry::Occupied(_) => return Err(entry),
            hash_table::Entry::Vacant(slot) => {
                slot.insert(entry);
            }
        }
        if expires {
            shard.expiry.insert(expires_at_ms, hash);
            self.expiring += 1;
        }
        self.len += 1;
        self.bytes += bytes;
        Ok(())
    }

    pub fn finish(self) -> KeyTable {
        KeyTable {
            next_expiry: self
                .shards
                .iter()
                .map(|shard| shard.expiry.first_instant().unwrap_or(NEVER))
                .collect(),
            shards: self.shards.into_iter().map(Arc::new).collect(),
            len: self.len,
            bytes: self.bytes,
            expiring: self.expiring,
            hasher: self.hasher,
        }
    }
}

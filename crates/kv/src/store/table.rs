//! The key table: entries found by key, or by the hash of their key (which is what the expiry
//! index remembers, so it need not hold a copy of every expiring key).
//!
//! The hasher is randomly seeded per process (resisting hash flooding by chosen keys), so hashes
//! and iteration order differ between replicas; nothing observable may depend on them.

use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;

use super::entry::Entry;

#[derive(Debug, Clone, Default)]
pub struct KeyTable {
    table: HashTable<Entry>,
    hasher: RandomState,
}

impl KeyTable {
    pub fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn reserve(&mut self, additional: usize) {
        let hasher = &self.hasher;
        self.table
            .reserve(additional, |entry| hasher.hash_one(entry.key()));
    }

    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.table.iter()
    }

    pub fn get(&self, key: &[u8]) -> Option<&Entry> {
        self.get_hashed(self.hash(key), key)
    }

    /// [`KeyTable::get`] for a caller that already has the key's hash.
    pub fn get_hashed(&self, hash: u64, key: &[u8]) -> Option<&Entry> {
        self.table.find(hash, |entry| entry.key() == key)
    }

    pub fn take(&mut self, key: &[u8]) -> Option<Entry> {
        let hash = self.hash(key);
        self.table
            .find_entry(hash, |entry| entry.key() == key)
            .ok()
            .map(|found| found.remove().0)
    }

    /// Inserts an entry whose key is known to be absent.
    pub fn insert_new(&mut self, hash: u64, entry: Entry) {
        let hasher = &self.hasher;
        self.table
            .insert_unique(hash, entry, |entry| hasher.hash_one(entry.key()));
    }

    /// Whether some entry with key hash `hash` expires exactly at `expires_at_ms`.
    pub fn has_expiring(&self, hash: u64, expires_at_ms: u64) -> bool {
        let hasher = &self.hasher;
        self.table
            .find(hash, |entry| {
                entry.expires_at_ms == expires_at_ms && hasher.hash_one(entry.key()) == hash
            })
            .is_some()
    }

    /// Removes every entry with key hash `hash` expiring exactly at `expires_at_ms`; returns how many.
    pub fn remove_expiring(&mut self, hash: u64, expires_at_ms: u64) -> usize {
        let hasher = &self.hasher;
        let mut removed = 0;
        while let Ok(found) = self.table.find_entry(hash, |entry| {
            entry.expires_at_ms == expires_at_ms && hasher.hash_one(entry.key()) == hash
        }) {
            found.remove();
            removed += 1;
        }
        removed
    }
}

//! Commands about keys rather than values, for the Redis front end: expiry changes (EXPIRE and its
//! options, PERSIST, GETEX), RENAME, and the reads that walk the key space (KEYS, SCAN,
//! RANDOMKEY).

use bytes::Bytes;

use super::entry::NEVER;
use super::strings::instant;
use super::table::SHARDS;
use super::Store;
use crate::command::{SetExpiry, TtlCondition};
use crate::glob;
use crate::protocol::Reply;

/// The most keys one SCAN page examines whatever COUNT asks (a page ends at a shard boundary once
/// it has examined COUNT keys, so it may hold one shard's keys more).
const MAX_SCAN_COUNT: u32 = 100_000;

impl Store {
    pub(super) fn set_ttl(
        &mut self,
        index: u64,
        now_ms: u64,
        key: &[u8],
        expiry: SetExpiry,
        condition: TtlCondition,
    ) -> Reply {
        let Some(entry) = self.live(key, now_ms).cloned() else {
            return Reply::Integer { value: 0 };
        };
        if expiry == SetExpiry::Keep {
            return Reply::ErrCmdErr;
        }
        let current = (entry.expires_at_ms != NEVER).then_some(entry.expires_at_ms);
        let expires_at_ms = instant(expiry, now_ms);
        if expiry == SetExpiry::Never && current.is_none() {
            return Reply::Integer { value: 0 };
        }
        if !condition.allows(current, expires_at_ms) {
            return Reply::Integer { value: 0 };
        }
        if expires_at_ms <= now_ms {
            self.remove(key);
        } else if let Err(reply) = self.put(index, key, entry.value(), expires_at_ms) {
            return reply;
        }
        Reply::Integer { value: 1 }
    }

    pub(super) fn get_ex(
        &mut self,
        index: u64,
        now_ms: u64,
        key: &[u8],
        expiry: SetExpiry,
    ) -> Reply {
        let Some(entry) = self.live(key, now_ms).cloned() else {
            return Reply::ErrNotFound;
        };
        let reply = Reply::Value {
            value: entry.value_bytes(),
        };
        let expires_at_ms = match expiry {
            SetExpiry::Keep => return Reply::ErrCmdErr,
            SetExpiry::Never if entry.expires_at_ms == NEVER => return reply,
            expiry => instant(expiry, now_ms),
        };
        if expires_at_ms <= now_ms {
            self.remove(key);
        } else if let Err(error) = self.put(index, key, entry.value(), expires_at_ms) {
            return error;
        }
        reply
    }

    pub(super) fn rename(
        &mut self,
        index: u64,
        now_ms: u64,
        from: &[u8],
        to: &[u8],
        nx: bool,
    ) -> Reply {
        let Some(entry) = self.live(from, now_ms).cloned() else {
            return Reply::ErrNotFound;
        };
        if nx && self.live(to, now_ms).is_some() {
            return Reply::Integer { value: 0 };
        }
        if from != to {
            if let Err(reply) = self.put(index, to, entry.value(), entry.expires_at_ms) {
                return reply;
            }
            self.remove(from);
        }
        if nx {
            Reply::Integer {
                value: i64::from(from != to),
            }
        } else {
            Reply::Ok { version: index }
        }
    }

    /// Every live key matching `pattern`, in no particular order.
    pub(super) fn keys_matching(&self, pattern: &[u8], now_ms: u64) -> Reply {
        let keys = self
            .entries
            .iter()
            .filter(|entry| entry.is_live_at(now_ms) && glob::matches(pattern, entry.key()))
            .map(|entry| Bytes::copy_from_slice(entry.key()))
            .collect();
        Reply::Keys { cursor: 0, keys }
    }

    /// One SCAN page. The cursor is the next shard to visit: a key's shard is fixed while the
    /// process lives, so a full walk returns every key held throughout it at least once. (A new
    /// leader hashes keys differently: a walk that spans a leader change may miss keys.)
    pub(super) fn scan(
        &self,
        cursor: u64,
        pattern: Option<&[u8]>,
        count: u32,
        now_ms: u64,
    ) -> Reply {
        let count = count.clamp(1, MAX_SCAN_COUNT) as usize;
        let mut shard = usize::try_from(cursor).unwrap_or(SHARDS);
        let mut keys = Vec::new();
        let mut examined = 0;
        while shard < SHARDS && examined < count {
            for entry in self.entries.shard(shard) {
                examined += 1;
                if entry.is_live_at(now_ms)
                    && pattern.is_none_or(|pattern| glob::matches(pattern, entry.key()))
                {
                    keys.push(Bytes::copy_from_slice(entry.key()));
                }
            }
            shard += 1;
        }
        let cursor = if shard >= SHARDS { 0 } else { shard as u64 };
        Reply::Keys { cursor, keys }
    }

    /// A live key picked by `seed`: a pseudo-random shard, then the first non-empty shard from
    /// there, then a pseudo-random live key in it.
    pub(super) fn random_key(&self, seed: u64, now_ms: u64) -> Reply {
        let start = (seed % SHARDS as u64) as usize;
        for step in 0..SHARDS {
            let shard = (start + step) % SHARDS;
            let live: Vec<&[u8]> = self
                .entries
                .shard(shard)
                .filter(|entry| entry.is_live_at(now_ms))
                .map(|entry| entry.key())
                .collect();
            if !live.is_empty() {
                let pick = (seed / SHARDS as u64) as usize % live.len();
                return Reply::Value {
                    value: Bytes::copy_from_slice(live[pick]),
                };
            }
        }
        Reply::ErrNotFound
    }
}

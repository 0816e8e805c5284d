//! The writes that compute a key's new value from its old one, for the Redis front end: SET with
//! options, MSET, INCRBY, INCRBYFLOAT, APPEND, SETRANGE. Each keeps Redis's semantics and error
//! messages, and is one deterministic step of the state machine.

use bytes::Bytes;

use super::entry::NEVER;
use super::Store;
use crate::command::{SetCondition, SetExpiry};
use crate::limits::is_valid_key;
use crate::protocol::Reply;

/// A value the Redis front end may grow with APPEND or SETRANGE: Redis's limit on a string.
pub(super) const MAX_GROWN_VALUE: usize = 512 << 20;

fn too_large() -> Reply {
    Reply::ErrValue {
        message: format!("string exceeds maximum allowed size ({MAX_GROWN_VALUE})"),
    }
}

impl Store {
    /// The key's live value and expiry (empty and never-expiring when it is absent).
    fn current(&self, key: &[u8], now_ms: u64) -> (Vec<u8>, u64) {
        match self.live(key, now_ms) {
            Some(entry) => (entry.value().to_vec(), entry.expires_at_ms),
            None => (Vec::new(), NEVER),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn set_with(
        &mut self,
        index: u64,
        now_ms: u64,
        key: &[u8],
        value: &[u8],
        condition: SetCondition,
        get: bool,
        expiry: SetExpiry,
    ) -> Reply {
        let old = self
            .live(key, now_ms)
            .map(|e| (e.value_bytes(), e.expires_at_ms));
        let applies = match condition {
            SetCondition::Always => true,
            SetCondition::IfAbsent => old.is_none(),
            SetCondition::IfPresent => old.is_some(),
        };
        if applies {
            let expires_at_ms = match expiry {
                SetExpiry::Keep => old.as_ref().map_or(NEVER, |(_, at)| *at),
                expiry => instant(expiry, now_ms),
            };
            if let Err(reply) = self.put(index, key, value, expires_at_ms) {
                return reply;
            }
        }
        match (get, old, applies) {
            (true, Some((value, _)), _) => Reply::Value { value },
            (true, None, _) | (false, _, false) => Reply::ErrNotFound,
            (false, _, true) => Reply::Ok { version: index },
        }
    }

    pub(super) fn mset(
        &mut self,
        index: u64,
        now_ms: u64,
        pairs: &[(Bytes, Bytes)],
        nx: bool,
    ) -> Reply {
        if nx
            && pairs
                .iter()
                .any(|(key, _)| self.live(key, now_ms).is_some())
        {
            return Reply::Integer { value: 0 };
        }
        if pairs
            .iter()
            .any(|(key, value)| !is_valid_key(key) || u32::try_from(value.len()).is_err())
        {
            return Reply::ErrCmdErr;
        }
        for (key, value) in pairs {
            // Valid keys and lengths (checked above): cannot fail.
            let _ = self.put(index, key, value, NEVER);
        }
        if nx {
            Reply::Integer { value: 1 }
        } else {
            Reply::Ok { version: index }
        }
    }

    pub(super) fn incr_by(&mut self, index: u64, now_ms: u64, key: &[u8], by: i64) -> Reply {
        let (current, expires_at_ms) = self.current(key, now_ms);
        let value = if self.live(key, now_ms).is_none() {
            Some(0)
        } else {
            parse_integer(&current)
        };
        let Some(value) = value else {
            return value_error("value is not an integer or out of range");
        };
        let Some(next) = value.checked_add(by) else {
            return value_error("increment or decrement would overflow");
        };
        match self.put(index, key, next.to_string().as_bytes(), expires_at_ms) {
            Ok(()) => Reply::Integer { value: next },
            Err(reply) => reply,
        }
    }

    /// INCRBYFLOAT in IEEE 754 double precision (Redis computes in the C `long double`, which is
    /// not the same on every machine; a replicated state machine needs the same bits everywhere).
    /// The result is written in the shortest decimal that reads back as the same double, never in
    /// exponent notation.
    pub(super) fn incr_by_float(&mut self, index: u64, now_ms: u64, key: &[u8], by: f64) -> Reply {
        let (current, expires_at_ms) = self.current(key, now_ms);
        let value = if self.live(key, now_ms).is_none() {
            Some(0.0)
        } else {
            parse_float(&current)
        };
        let Some(value) = value else {
            return value_error("value is not a valid float");
        };
        let next = value + by;
        if !next.is_finite() {
            return value_error("increment would produce NaN or Infinity");
        }
        // `+ 0.0` turns -0 into 0, as Redis prints it.
        let text = format!("{}", next + 0.0);
        match self.put(index, key, text.as_bytes(), expires_at_ms) {
            Ok(()) => Reply::Value {
                value: Bytes::from(text),
            },
            Err(reply) => reply,
        }
    }

    pub(super) fn append(&mut self, index: u64, now_ms: u64, key: &[u8], value: &[u8]) -> Reply {
        let (mut grown, expires_at_ms) = self.current(key, now_ms);
        let len = grown.len() + value.len();
        if len > MAX_GROWN_VALUE {
            return too_large();
        }
        grown.extend_from_slice(value);
        match self.put(index, key, &grown, expires_at_ms) {
            Ok(()) => Reply::Integer { value: len as i64 },
            Err(reply) => reply,
        }
    }

    /// SETRANGE: an empty `value` changes nothing (and creates nothing), as in Redis.
    pub(super) fn set_range(
        &mut self,
        index: u64,
        now_ms: u64,
        key: &[u8],
        offset: u32,
        value: &[u8],
    ) -> Reply {
        let (mut grown, expires_at_ms) = self.current(key, now_ms);
        if value.is_empty() {
            return Reply::Integer {
                value: grown.len() as i64,
            };
        }
        let offset = offset as usize;
        let end = offset + value.len();
        if end > MAX_GROWN_VALUE {
            return too_large();
        }
        if grown.len() < end {
            grown.resize(end, 0);
        }
        grown[offset..end].copy_from_slice(value);
        match self.put(index, key, &grown, expires_at_ms) {
            Ok(()) => Reply::Integer {
                value: grown.len() as i64,
            },
            Err(reply) => reply,
        }
    }
}

/// The instant an expiry other than `Keep` gives a key written at `now_ms` (`NEVER` for none).
pub(super) fn instant(expiry: SetExpiry, now_ms: u64) -> u64 {
    match expiry {
        SetExpiry::Never | SetExpiry::Keep => NEVER,
        SetExpiry::AfterMs(ms) => now_ms.saturating_add(ms).min(NEVER - 1),
        SetExpiry::AtMs(at) => at.min(NEVER - 1),
    }
}

fn value_error(message: &str) -> Reply {
    Reply::ErrValue {
        message: message.into(),
    }
}

/// A value as Redis reads an integer: optional `-`, decimal digits, no spaces, no leading `+` or
/// zeros (other than `0` itself), within i64.
fn parse_integer(value: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(value).ok()?;
    let digits = text.strip_prefix('-').unwrap_or(text);
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && text != "-0";
    if !canonical {
        return None;
    }
    text.parse().ok()
}

/// A value as Redis reads a float: a finite decimal number, no surrounding spaces.
pub fn parse_float(value: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(value).ok()?;
    let plain = text
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'));
    if !plain || text.is_empty() {
        return None;
    }
    text.parse::<f64>().ok().filter(|f| f.is_finite())
}

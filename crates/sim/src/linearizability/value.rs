//! What a key holds, as the checker names it: the value one write stored (`v<write>`), an integer
//! (what INCR makes), or any other bytes (what APPEND and SETRANGE make), by a hash of them.
//!
//! Every byte string has exactly one name ([`Value::of`]), so two values are equal iff their names
//! are: a read names what it saw without any table, and the model computes the name of each value it
//! makes. The model keeps the bytes of the texts it made ([`Texts`]) to compute the next one.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

/// The id of the write whose value a key holds (values are unique per write).
pub type WriteId = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Value {
    /// `v<write>`: the value of one write.
    Write(WriteId),
    /// A decimal integer as Redis writes one (what INCR reads and makes).
    Int(i64),
    /// Any other bytes, by a 64-bit hash of them.
    Text(u64),
}

impl Value {
    /// The one name of `bytes`.
    pub fn of(bytes: &[u8]) -> Value {
        if let Some(write) = write_of(bytes) {
            return Value::Write(write);
        }
        if let Some(n) = integer_of(bytes) {
            return Value::Int(n);
        }
        Value::Text(text_hash(bytes))
    }

    /// The write whose value this is, if it is one write's.
    pub fn write(self) -> Option<WriteId> {
        match self {
            Value::Write(write) => Some(write),
            _ => None,
        }
    }
}

/// A value in a history's text: `<write>`, `i<integer>` or `t<hash in hex>`.
impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Write(write) => write!(f, "{write}"),
            Value::Int(n) => write!(f, "i{n}"),
            Value::Text(hash) => write!(f, "t{hash:x}"),
        }
    }
}

impl std::str::FromStr for Value {
    type Err = String;

    fn from_str(token: &str) -> Result<Value, String> {
        let bad = || format!("not a value: {token}");
        if let Some(n) = token.strip_prefix('i') {
            return n.parse().map(Value::Int).map_err(|_| bad());
        }
        if let Some(hash) = token.strip_prefix('t') {
            return u64::from_str_radix(hash, 16)
                .map(Value::Text)
                .map_err(|_| bad());
        }
        token.parse().map(Value::Write).map_err(|_| bad())
    }
}

impl From<WriteId> for Value {
    fn from(write: WriteId) -> Value {
        Value::Write(write)
    }
}

/// `v<n>` with `n` written canonically (no sign, no leading zeros).
fn write_of(bytes: &[u8]) -> Option<WriteId> {
    let digits = bytes.strip_prefix(b"v")?;
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    (n.to_string().as_bytes() == digits).then_some(n)
}

/// An i64 written as Redis writes it (and as its INCR reads it): canonical decimal.
fn integer_of(bytes: &[u8]) -> Option<i64> {
    let n: i64 = std::str::from_utf8(bytes).ok()?.parse().ok()?;
    (n.to_string().as_bytes() == bytes).then_some(n)
}

fn text_hash(bytes: &[u8]) -> u64 {
    // Fixed keys: the same hash in every run of one build, which is all a check needs.
    let mut hasher = std::hash::DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

/// The bytes of the texts the model made, by name.
#[derive(Default)]
pub(super) struct Texts {
    bytes: HashMap<u64, Vec<u8>>,
}

impl Texts {
    /// The bytes `value` names; None for a text the model never made (one only a reply named).
    pub(super) fn bytes(&self, value: Value) -> Option<Vec<u8>> {
        Some(match value {
            Value::Write(write) => format!("v{write}").into_bytes(),
            Value::Int(n) => n.to_string().into_bytes(),
            Value::Text(hash) => self.bytes.get(&hash)?.clone(),
        })
    }

    /// The name of `bytes`, remembering them if they are a text.
    pub(super) fn name(&mut self, bytes: Vec<u8>) -> Value {
        let value = Value::of(&bytes);
        if let Value::Text(hash) = value {
            self.bytes.entry(hash).or_insert(bytes);
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_string_has_one_name() {
        assert_eq!(Value::of(b"v12"), Value::Write(12));
        assert_eq!(Value::of(b"-5"), Value::Int(-5));
        assert_eq!(Value::of(b"0"), Value::Int(0));
        for not_canonical in [
            &b"v012"[..],
            b"v",
            b"v-1",
            b"007",
            b"-0",
            b"+5",
            b" 5",
            b"5a1",
        ] {
            assert!(
                matches!(Value::of(not_canonical), Value::Text(_)),
                "{not_canonical:?}"
            );
        }
        assert_ne!(Value::of(b"a1"), Value::of(b"a2"));
        let mut texts = Texts::default();
        let made = texts.name(b"5a1".to_vec());
        assert_eq!(made, Value::of(b"5a1"));
        assert_eq!(texts.bytes(made), Some(b"5a1".to_vec()));
        assert_eq!(texts.name(b"v3".to_vec()), Value::Write(3));
        assert_eq!(texts.bytes(Value::Int(-7)), Some(b"-7".to_vec()));
        for value in [Value::Write(3), Value::Int(-7), made] {
            assert_eq!(value.to_string().parse(), Ok(value));
        }
    }
}

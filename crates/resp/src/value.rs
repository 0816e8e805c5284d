//! A reply, and its bytes in RESP2 or RESP3.

use bytes::{BufMut, Bytes, BytesMut};

/// One reply. RESP3-only types degrade in RESP2 as Redis degrades them: a map is a flat array, a
/// double a bulk string, a null a null bulk string.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `+OK`: a short status without CR or LF.
    Simple(String),
    /// `-ERR ...`: the text includes its code (`ERR`, `WRONGTYPE`, ...).
    Error(String),
    Integer(i64),
    Bulk(Bytes),
    Null,
    /// A null array (`*-1` in RESP2): what EXEC answers when a watched key changed.
    NullArray,
    Array(Vec<Value>),
    Map(Vec<(Value, Value)>),
    Double(f64),
}

impl Value {
    pub fn ok() -> Value {
        Value::Simple("OK".into())
    }

    /// `-ERR <text>`.
    pub fn err(text: impl std::fmt::Display) -> Value {
        Value::Error(format!("ERR {text}"))
    }

    pub fn bulk(bytes: impl Into<Bytes>) -> Value {
        Value::Bulk(bytes.into())
    }

    /// Appends the reply; `resp3` after the client's `HELLO 3`.
    pub fn encode(&self, out: &mut BytesMut, resp3: bool) {
        match self {
            Value::Simple(text) => line(out, b'+', one_line(text).as_bytes()),
            Value::Error(text) => line(out, b'-', one_line(text).as_bytes()),
            Value::Integer(n) => line(out, b':', n.to_string().as_bytes()),
            Value::Bulk(bytes) => {
                line(out, b'$', bytes.len().to_string().as_bytes());
                out.put_slice(bytes);
                out.put_slice(b"\r\n");
            }
            Value::Null if resp3 => out.put_slice(b"_\r\n"),
            Value::Null => out.put_slice(b"$-1\r\n"),
            Value::NullArray if resp3 => out.put_slice(b"_\r\n"),
            Value::NullArray => out.put_slice(b"*-1\r\n"),
            Value::Array(items) => {
                line(out, b'*', items.len().to_string().as_bytes());
                for item in items {
                    item.encode(out, resp3);
                }
            }
            Value::Map(pairs) if resp3 => {
                line(out, b'%', pairs.len().to_string().as_bytes());
                for (k, v) in pairs {
                    k.encode(out, resp3);
                    v.encode(out, resp3);
                }
            }
            Value::Map(pairs) => {
                line(out, b'*', (2 * pairs.len()).to_string().as_bytes());
                for (k, v) in pairs {
                    k.encode(out, resp3);
                    v.encode(out, resp3);
                }
            }
            Value::Double(d) if resp3 => line(out, b',', format_double(*d).as_bytes()),
            Value::Double(d) => Value::bulk(format_double(*d)).encode(out, resp3),
        }
    }
}

fn line(out: &mut BytesMut, kind: u8, text: &[u8]) {
    out.reserve(text.len() + 3);
    out.put_u8(kind);
    out.put_slice(text);
    out.put_slice(b"\r\n");
}

/// A status or error must be one line: CR and LF become spaces.
fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains(['\r', '\n']) {
        text.replace(['\r', '\n'], " ").into()
    } else {
        text.into()
    }
}

/// As Redis prints a double: integral values without a fraction, `inf`/`-inf`.
pub(crate) fn format_double(d: f64) -> String {
    if d.is_infinite() {
        return if d > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if d == d.trunc() && d.abs() < 1e17 {
        return format!("{}", d as i64);
    }
    format!("{d}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(value: Value, resp3: bool) -> Vec<u8> {
        let mut out = BytesMut::new();
        value.encode(&mut out, resp3);
        out.to_vec()
    }

    #[test]
    fn each_type_in_both_versions() {
        assert_eq!(bytes(Value::ok(), false), b"+OK\r\n");
        assert_eq!(
            bytes(Value::err("unknown command"), false),
            b"-ERR unknown command\r\n"
        );
        assert_eq!(bytes(Value::Integer(-3), false), b":-3\r\n");
        assert_eq!(bytes(Value::bulk("a\r\nb"), false), b"$4\r\na\r\nb\r\n");
        assert_eq!(bytes(Value::Null, false), b"$-1\r\n");
        assert_eq!(bytes(Value::Null, true), b"_\r\n");
        let map = Value::Map(vec![(Value::bulk("k"), Value::Integer(1))]);
        assert_eq!(bytes(map.clone(), false), b"*2\r\n$1\r\nk\r\n:1\r\n");
        assert_eq!(bytes(map, true), b"%1\r\n$1\r\nk\r\n:1\r\n");
        assert_eq!(bytes(Value::Double(1.5), false), b"$3\r\n1.5\r\n");
        assert_eq!(bytes(Value::Double(3.0), true), b",3\r\n");
        assert_eq!(bytes(Value::Simple("a\nb".into()), false), b"+a b\r\n");
    }
}

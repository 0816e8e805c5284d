//! The wire format of the raftkv text protocol as a client sees it: request encoding, reply parsing
//! and the client-side checks on keys, values and expiry times.
//!
//! Everything here is synchronous and allocation-free on the hot path, so that the load generator can
//! use it directly on its own buffers.
//!
//! ```
//! use raftkv_client::proto::{encode_set, parse_reply, Parsed, Reply, ReplyKind};
//!
//! let mut request = Vec::new();
//! encode_set(&mut request, b"greeting", 0, b"hi");
//! assert_eq!(request, b"set greeting 0 2\r\nhi\r\n");
//!
//! let parsed = parse_reply(b"OK 17\r\n", ReplyKind::Set, 1 << 20).unwrap();
//! assert_eq!(parsed, Parsed::Complete { reply: Reply::Ok(17), consumed: 7 });
//! ```

use std::ops::Range;

/// Longest key the protocol accepts, in bytes.
pub const MAX_KEY_LEN: usize = 250;
/// Longest expiry time the protocol accepts: ten years of 365 days. The server may allow a few days
/// more (leap years); staying below its limit means the client never sends what the server rejects.
pub const MAX_EXPTIME_SECS: u32 = 10 * 365 * 24 * 3600;
/// The server's default maximum value size.
pub const DEFAULT_MAX_VALUE_SIZE: usize = 1 << 20;
/// Longest reply header line the client accepts. The longest legal one is a redirect with a
/// 253-byte host name; anything longer means the stream is not speaking this protocol.
pub const MAX_REPLY_LINE: usize = 512;

/// Which command a reply answers; it decides how a `VALUE` line is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplyKind {
    Set,
    Get,
    Getm,
    Cas,
    Delete,
}

impl ReplyKind {
    /// Whether the command changes the store, and so must not be retried after it was sent.
    pub fn is_write(self) -> bool {
        matches!(self, ReplyKind::Set | ReplyKind::Cas | ReplyKind::Delete)
    }
}

/// One reply. Values are byte ranges into the buffer given to [`parse_reply`], so parsing never
/// copies a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `OK <version>`: a set or cas was applied at this version.
    Ok(u64),
    /// `VALUE <numbytes>` and the value, answering `get`.
    Value(Range<usize>),
    /// `VALUE <version> <exptime> <numbytes>` and the value, answering `getm`.
    ValueMeta {
        version: u64,
        exptime: u64,
        value: Range<usize>,
    },
    /// `DELETED`.
    Deleted,
    /// `ERR_VERSION`: cas found another version.
    ErrVersion,
    /// `ERR_NOT_FOUND`: no such key, or it expired.
    ErrNotFound,
    /// `ERR_CMD_ERR`: the server found the command malformed.
    ErrCmd,
    /// `ERR_INTERNAL`: no leader known, or the outcome of a write is unknown.
    ErrInternal,
    /// `ERR_REDIRECT <host> <port>`, as an address `connect` accepts (`host:port`, `[v6]:port`).
    Redirect(String),
}

/// Result of trying to parse one reply from the front of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A whole reply, taking the first `consumed` bytes of the buffer.
    Complete { reply: Reply, consumed: usize },
    /// More bytes are needed.
    Incomplete,
}

/// The server sent something that is not a reply to the command asked; the connection cannot be
/// trusted any more.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("protocol error: {0}")]
pub struct ProtocolError(pub String);

fn protocol_error(what: &str, line: &[u8]) -> ProtocolError {
    let shown = &line[..line.len().min(80)];
    ProtocolError(format!("{what}: {:?}", String::from_utf8_lossy(shown)))
}

/// Parses the reply at the front of `buf`, expecting it to answer a command of `kind`.
/// `max_value` bounds the value size accepted, so a hostile or confused peer cannot make the caller
/// buffer without limit.
pub fn parse_reply(buf: &[u8], kind: ReplyKind, max_value: usize) -> Result<Parsed, ProtocolError> {
    let search = &buf[..buf.len().min(MAX_REPLY_LINE + 2)];
    let Some(newline) = search.iter().position(|&b| b == b'\n') else {
        if buf.len() > MAX_REPLY_LINE + 1 {
            return Err(protocol_error("reply line too long", buf));
        }
        return Ok(Parsed::Incomplete);
    };
    if newline == 0 || buf[newline - 1] != b'\r' {
        return Err(protocol_error(
            "reply line not ended by CR LF",
            &buf[..newline],
        ));
    }
    let line = &buf[..newline - 1];
    let header_len = newline + 1;
    let mut fields = line.split(|&b| b == b' ');
    let word = fields.next().unwrap_or_default();
    let complete = |reply| {
        Ok(Parsed::Complete {
            reply,
            consumed: header_len,
        })
    };
    let reply_for_kind = match word {
        b"OK" if matches!(kind, ReplyKind::Set | ReplyKind::Cas) => {
            let version = exactly_one_number(&mut fields, line)?;
            return complete(Reply::Ok(version));
        }
        b"DELETED" if kind == ReplyKind::Delete => Reply::Deleted,
        b"VALUE" if matches!(kind, ReplyKind::Get | ReplyKind::Getm) => {
            return parse_value(buf, line, fields, header_len, kind, max_value);
        }
        b"ERR_VERSION" => Reply::ErrVersion,
        b"ERR_NOT_FOUND" => Reply::ErrNotFound,
        b"ERR_CMD_ERR" => Reply::ErrCmd,
        b"ERR_INTERNAL" => Reply::ErrInternal,
        b"ERR_REDIRECT" => return complete(parse_redirect(fields, line)?),
        _ => {
            return Err(protocol_error(
                &format!("unexpected reply to {kind:?}"),
                line,
            ))
        }
    };
    if fields.next().is_some() {
        return Err(protocol_error("unexpected fields in reply", line));
    }
    complete(reply_for_kind)
}

fn parse_value<'a>(
    buf: &[u8],
    line: &[u8],
    mut fields: impl Iterator<Item = &'a [u8]>,
    header_len: usize,
    kind: ReplyKind,
    max_value: usize,
) -> Result<Parsed, ProtocolError> {
    let mut number = || -> Result<u64, ProtocolError> {
        fields
            .next()
            .and_then(parse_decimal)
            .ok_or_else(|| protocol_error("malformed VALUE line", line))
    };
    let (meta, numbytes) = if kind == ReplyKind::Getm {
        let version = number()?;
        let exptime = number()?;
        (Some((version, exptime)), number()?)
    } else {
        (None, number()?)
    };
    if fields.next().is_some() {
        return Err(protocol_error("unexpected fields in VALUE line", line));
    }
    let numbytes = usize::try_from(numbytes)
        .ok()
        .filter(|&n| n <= max_value)
        .ok_or_else(|| protocol_error("value larger than the configured maximum", line))?;
    let value_end = header_len + numbytes;
    if buf.len() < value_end + 2 {
        return Ok(Parsed::Incomplete);
    }
    if &buf[value_end..value_end + 2] != b"\r\n" {
        return Err(protocol_error("value not followed by CR LF", line));
    }
    let value = header_len..value_end;
    let reply = match meta {
        Some((version, exptime)) => Reply::ValueMeta {
            version,
            exptime,
            value,
        },
        None => Reply::Value(value),
    };
    Ok(Parsed::Complete {
        reply,
        consumed: value_end + 2,
    })
}

fn exactly_one_number<'a>(
    fields: &mut impl Iterator<Item = &'a [u8]>,
    line: &[u8],
) -> Result<u64, ProtocolError> {
    match (fields.next().and_then(parse_decimal), fields.next()) {
        (Some(n), None) => Ok(n),
        _ => Err(protocol_error("malformed number in reply", line)),
    }
}

fn parse_redirect<'a>(
    mut fields: impl Iterator<Item = &'a [u8]>,
    line: &[u8],
) -> Result<Reply, ProtocolError> {
    let malformed = || protocol_error("malformed ERR_REDIRECT", line);
    let host = fields
        .next()
        .filter(|h| !h.is_empty())
        .ok_or_else(malformed)?;
    let port = fields
        .next()
        .and_then(parse_decimal)
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(malformed)?;
    if fields.next().is_some() {
        return Err(malformed());
    }
    let host = std::str::from_utf8(host).map_err(|_| malformed())?;
    if host.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(malformed());
    }
    let address = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    Ok(Reply::Redirect(address))
}

/// Parses a plain unsigned decimal (no sign, no spaces); `None` if empty, not digits or too big.
pub fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// Appends `n` in decimal without going through `fmt`, which matters at a few hundred thousand
/// requests per second.
pub fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

/// Why a key cannot be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key is empty")]
    Empty,
    #[error("key is {0} bytes long; the maximum is 250")]
    TooLong(usize),
    #[error("key contains byte 0x{0:02x}; only printable ASCII without spaces is allowed")]
    BadByte(u8),
}

/// Checks a key against the protocol's rule: 1 to 250 bytes of printable ASCII, no whitespace.
pub fn validate_key(key: &[u8]) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(KeyError::TooLong(key.len()));
    }
    match key.iter().find(|b| !b.is_ascii_graphic()) {
        Some(&bad) => Err(KeyError::BadByte(bad)),
        None => Ok(()),
    }
}

fn push_command(out: &mut Vec<u8>, verb: &[u8], key: &[u8]) {
    out.extend_from_slice(verb);
    out.push(b' ');
    out.extend_from_slice(key);
}

fn push_value(out: &mut Vec<u8>, value: &[u8]) {
    out.push(b' ');
    push_decimal(out, value.len() as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends `set <key> <exptime> <numbytes>\r\n<value>\r\n`. The caller validates the fields.
pub fn encode_set(out: &mut Vec<u8>, key: &[u8], exptime: u32, value: &[u8]) {
    push_command(out, b"set", key);
    out.push(b' ');
    push_decimal(out, u64::from(exptime));
    push_value(out, value);
}

/// Appends `cas <key> <exptime> <version> <numbytes>\r\n<value>\r\n`.
pub fn encode_cas(out: &mut Vec<u8>, key: &[u8], exptime: u32, version: u64, value: &[u8]) {
    push_command(out, b"cas", key);
    out.push(b' ');
    push_decimal(out, u64::from(exptime));
    out.push(b' ');
    push_decimal(out, version);
    push_value(out, value);
}

/// Appends `get <key>\r\n`.
pub fn encode_get(out: &mut Vec<u8>, key: &[u8]) {
    push_command(out, b"get", key);
    out.extend_from_slice(b"\r\n");
}

/// Appends `getm <key>\r\n`.
pub fn encode_getm(out: &mut Vec<u8>, key: &[u8]) {
    push_command(out, b"getm", key);
    out.extend_from_slice(b"\r\n");
}

/// Appends `delete <key>\r\n`.
pub fn encode_delete(out: &mut Vec<u8>, key: &[u8]) {
    push_command(out, b"delete", key);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(buf: &[u8], kind: ReplyKind) -> Result<Parsed, ProtocolError> {
        parse_reply(buf, kind, 1024)
    }

    #[test]
    fn parses_each_reply_shape() {
        assert_eq!(
            parse(b"VALUE 4\r\na\r\nb\r\nrest", ReplyKind::Get).unwrap(),
            Parsed::Complete {
                reply: Reply::Value(9..13),
                consumed: 15
            }
        );
        assert_eq!(
            parse(b"VALUE 9 30 0\r\n\r\n", ReplyKind::Getm).unwrap(),
            Parsed::Complete {
                reply: Reply::ValueMeta {
                    version: 9,
                    exptime: 30,
                    value: 14..14
                },
                consumed: 16
            }
        );
        assert_eq!(
            parse(b"DELETED\r\n", ReplyKind::Delete).unwrap(),
            Parsed::Complete {
                reply: Reply::Deleted,
                consumed: 9
            }
        );
        assert_eq!(
            parse(b"ERR_REDIRECT 10.0.0.2 9001\r\n", ReplyKind::Set).unwrap(),
            Parsed::Complete {
                reply: Reply::Redirect("10.0.0.2:9001".into()),
                consumed: 28
            }
        );
        assert_eq!(
            parse(b"ERR_REDIRECT ::1 9001\r\n", ReplyKind::Get).unwrap(),
            Parsed::Complete {
                reply: Reply::Redirect("[::1]:9001".into()),
                consumed: 23
            }
        );
        for (text, reply) in [
            (&b"ERR_VERSION\r\n"[..], Reply::ErrVersion),
            (b"ERR_NOT_FOUND\r\n", Reply::ErrNotFound),
            (b"ERR_CMD_ERR\r\n", Reply::ErrCmd),
            (b"ERR_INTERNAL\r\n", Reply::ErrInternal),
        ] {
            assert_eq!(
                parse(text, ReplyKind::Cas).unwrap(),
                Parsed::Complete {
                    reply,
                    consumed: text.len()
                }
            );
        }
    }

    #[test]
    fn every_prefix_of_a_reply_is_incomplete() {
        let whole = b"VALUE 3 0 5\r\nab\r\nc\r\n";
        for cut in 0..whole.len() {
            assert_eq!(
                parse(&whole[..cut], ReplyKind::Getm).unwrap(),
                Parsed::Incomplete,
                "{cut}"
            );
        }
        assert!(matches!(
            parse(whole, ReplyKind::Getm).unwrap(),
            Parsed::Complete { .. }
        ));
    }

    #[test]
    fn rejects_what_does_not_answer_the_command() {
        assert!(parse(b"OK 1\r\n", ReplyKind::Get).is_err());
        assert!(parse(b"VALUE 1\r\nx\r\n", ReplyKind::Set).is_err());
        assert!(parse(b"VALUE 1\r\nxy\r\n", ReplyKind::Get).is_err());
        assert!(parse(b"VALUE 2000\r\n", ReplyKind::Get).is_err());
        assert!(parse(b"OK -1\r\n", ReplyKind::Set).is_err());
        assert!(parse(b"OK 1 2\r\n", ReplyKind::Set).is_err());
        assert!(parse(b"OK 99999999999999999999\r\n", ReplyKind::Set).is_err());
        assert!(parse(b"OK 1\n", ReplyKind::Set).is_err());
        assert!(parse(b"ERR_REDIRECT host 70000\r\n", ReplyKind::Set).is_err());
        assert!(parse(&[b'x'; MAX_REPLY_LINE + 2], ReplyKind::Set).is_err());
        assert_eq!(
            parse(&[b'x'; MAX_REPLY_LINE], ReplyKind::Set).unwrap(),
            Parsed::Incomplete
        );
    }

    #[test]
    fn encodes_requests() {
        let mut out = Vec::new();
        encode_cas(&mut out, b"k", 10, 42, b"a\r\nb");
        encode_get(&mut out, b"k");
        encode_getm(&mut out, b"k");
        encode_delete(&mut out, b"k");
        assert_eq!(
            out,
            b"cas k 10 42 4\r\na\r\nb\r\nget k\r\ngetm k\r\ndelete k\r\n"
        );
        let mut n = Vec::new();
        push_decimal(&mut n, u64::MAX);
        assert_eq!(n, u64::MAX.to_string().as_bytes());
    }

    #[test]
    fn validates_keys() {
        assert_eq!(validate_key(&[b'k'; 250]), Ok(()));
        assert_eq!(validate_key(&[b'k'; 251]), Err(KeyError::TooLong(251)));
        assert_eq!(validate_key(b""), Err(KeyError::Empty));
        assert_eq!(validate_key(b"a b"), Err(KeyError::BadByte(b' ')));
        assert_eq!(validate_key(b"a\x7f"), Err(KeyError::BadByte(0x7f)));
    }
}

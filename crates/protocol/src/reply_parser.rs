//! Reading replies as a client does: [`parse_reply`] takes the reply at the front of a buffer, without
//! copying its value (the value is a byte range into the buffer; [`Reply::map_value`] turns it into
//! whatever the caller holds, e.g. a `Bytes` slice of the same buffer). Used by the client library and
//! the load generator.

use std::ops::Range;

use crate::fields::{parse_decimal, Number};
use crate::limits::MAX_REPLY_LINE;
use crate::reply::Reply;

/// Which command a reply answers; it decides how a `VALUE` line is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplyKind {
    Set,
    Get,
    Getm,
    Cas,
    Delete,
    /// `register`, answered `SESSION <id>`.
    Register,
    /// `members`, answered `MEMBERS <numbytes>` and a table.
    MembersList,
    /// `members add|promote|remove ...`, answered like `members` once the change committed, or
    /// `ERR_MEMBERSHIP <reason>`.
    MembersChange,
}

impl ReplyKind {
    /// Whether the command changes the store, and so must not be retried after it was sent.
    pub fn is_write(self) -> bool {
        matches!(
            self,
            ReplyKind::Set
                | ReplyKind::Cas
                | ReplyKind::Delete
                | ReplyKind::Register
                | ReplyKind::MembersChange
        )
    }
}

/// Result of trying to parse one reply from the front of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A whole reply, taking the first `consumed` bytes of the buffer.
    Complete {
        reply: Reply<Range<usize>>,
        consumed: usize,
    },
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
            return complete(Reply::Ok { version });
        }
        b"DELETED" if kind == ReplyKind::Delete => Reply::Deleted,
        b"VALUE" if matches!(kind, ReplyKind::Get | ReplyKind::Getm) => {
            return parse_value(buf, line, fields, header_len, kind, max_value);
        }
        b"ERR_VERSION" => Reply::ErrVersion,
        b"ERR_NOT_FOUND" => Reply::ErrNotFound,
        b"ERR_CMD_ERR" => Reply::ErrCmdErr,
        b"ERR_INTERNAL" => Reply::ErrInternal,
        b"ERR_REDIRECT" => return complete(parse_redirect(fields, line)?),
        b"SESSION" if kind == ReplyKind::Register => {
            let id = exactly_one_number(&mut fields, line)?;
            return complete(Reply::Session { id });
        }
        b"MEMBERS" if matches!(kind, ReplyKind::MembersList | ReplyKind::MembersChange) => {
            return parse_value(buf, line, fields, header_len, kind, max_value);
        }
        b"ERR_MEMBERSHIP" if kind == ReplyKind::MembersChange => {
            let reason = String::from_utf8_lossy(&line[word.len()..])
                .trim()
                .to_string();
            return complete(Reply::ErrMembership { reason });
        }
        b"ERR_SESSION_EXPIRED" if kind.is_write() => Reply::ErrSessionExpired,
        b"ERR_SEQUENCE" if kind.is_write() => {
            let last = exactly_one_number(&mut fields, line)?;
            return complete(Reply::ErrSequence { last });
        }
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
            .and_then(decimal)
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
    if matches!(kind, ReplyKind::MembersList | ReplyKind::MembersChange) {
        return Ok(Parsed::Complete {
            reply: Reply::Members { table: value },
            consumed: value_end + 2,
        });
    }
    let reply = match meta {
        Some((version, exptime)) => Reply::ValueMeta {
            version,
            exptime,
            value,
        },
        None => Reply::Value { value },
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
    match (fields.next().and_then(decimal), fields.next()) {
        (Some(n), None) => Ok(n),
        _ => Err(protocol_error("malformed number in reply", line)),
    }
}

fn parse_redirect<'a>(
    mut fields: impl Iterator<Item = &'a [u8]>,
    line: &[u8],
) -> Result<Reply<Range<usize>>, ProtocolError> {
    let malformed = || protocol_error("malformed ERR_REDIRECT", line);
    let host = fields
        .next()
        .filter(|h| !h.is_empty())
        .ok_or_else(malformed)?;
    let port = fields
        .next()
        .and_then(decimal)
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(malformed)?;
    if fields.next().is_some() {
        return Err(malformed());
    }
    let host = std::str::from_utf8(host).map_err(|_| malformed())?;
    if host.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(malformed());
    }
    Ok(Reply::ErrRedirect {
        host: host.to_string(),
        port,
    })
}

/// A plain unsigned decimal that fits in a u64.
fn decimal(digits: &[u8]) -> Option<u64> {
    match parse_decimal(digits) {
        Number::Valid(n) if digits.len() <= 20 => Some(n),
        _ => None,
    }
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
                reply: Reply::Value { value: 9..13 },
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
                reply: Reply::ErrRedirect {
                    host: "10.0.0.2".into(),
                    port: 9001
                },
                consumed: 28
            }
        );
        assert_eq!(
            parse(b"ERR_REDIRECT ::1 9001\r\n", ReplyKind::Get).unwrap(),
            Parsed::Complete {
                reply: Reply::ErrRedirect {
                    host: "::1".into(),
                    port: 9001
                },
                consumed: 23
            }
        );
        for (text, reply) in [
            (&b"ERR_VERSION\r\n"[..], Reply::<Range<usize>>::ErrVersion),
            (b"ERR_NOT_FOUND\r\n", Reply::ErrNotFound),
            (b"ERR_CMD_ERR\r\n", Reply::ErrCmdErr),
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
}

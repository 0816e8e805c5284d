//! The one reply type of the protocol: what the server encodes and what a client parses.

use std::io::Write as _;

use bytes::{BufMut, Bytes, BytesMut};

/// A reply to one request, encoded by [`Reply::encode`] into the exact protocol bytes. `V` is how a
/// value is held: `Bytes` everywhere, except in [`crate::parse_reply`]'s result, which holds the
/// value's byte range in the parsed buffer so that parsing never copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply<V = Bytes> {
    /// `OK <version>` after a set or cas.
    Ok {
        version: u64,
    },
    /// `VALUE <numbytes>` + value, for get.
    Value {
        value: V,
    },
    /// `VALUE <version> <exptime> <numbytes>` + value, for getm; exptime is the remaining lifetime
    /// in whole seconds rounded up, 0 for a key that never expires.
    ValueMeta {
        version: u64,
        exptime: u64,
        value: V,
    },
    Deleted,
    ErrVersion,
    ErrNotFound,
    ErrCmdErr,
    /// The outcome is unknown (e.g. leadership lost before commit) or no leader is known.
    ErrInternal,
    ErrRedirect {
        host: String,
        port: u16,
    },
    /// `SESSION <id>` after `register`.
    Session {
        id: u64,
    },
    /// `ERR_SESSION_EXPIRED`: the session does not exist (it expired, was evicted, or never did);
    /// nothing was applied.
    ErrSessionExpired,
    /// `ERR_SEQUENCE <last>`: the sequence number is older than `last`, the newest one the session
    /// applied (whose reply is no longer kept), or too far ahead of it; nothing was applied.
    ErrSequence {
        last: u64,
    },
    /// `BACKUP <numbytes>` + a backup file (`raftkv_kv::backup`), for `backup`.
    Backup {
        file: V,
    },
    /// `MEMBERS <numbytes>` + a [`crate::MembersTable`] as text, for `members ...`.
    Members {
        table: V,
    },
    /// `ERR_MEMBERSHIP <reason>`: a membership change was refused (nothing changed), with a one-line
    /// reason for a human.
    ErrMembership {
        reason: String,
    },
    /// `INTEGER <n>`: the result of a counter or length command (only the Redis front end sends
    /// those).
    Integer {
        value: i64,
    },
    /// `ERR_VALUE <message>`: the command could not apply to the key's current value (not an
    /// integer, an overflow, a result too large); nothing changed.
    ErrValue {
        message: String,
    },
    /// `KEYS <cursor> <count>` + one key per line: the keys a KEYS or SCAN found (only the Redis
    /// front end asks; `cursor` is 0 for KEYS and at the end of a SCAN).
    Keys {
        cursor: u64,
        keys: Vec<Bytes>,
    },
    /// `MULTI <count>` + that many replies: a transaction's replies, in order (only the Redis front
    /// end sends transactions).
    Multi {
        replies: Vec<Reply>,
    },
    /// `EXEC_ABORTED`: a watched key changed, so the transaction did nothing.
    ExecAborted,
}

impl<V> Reply<V> {
    /// The same reply with its value (if any) converted by `convert`.
    pub fn map_value<W>(self, convert: impl FnOnce(V) -> W) -> Reply<W> {
        match self {
            Reply::Ok { version } => Reply::Ok { version },
            Reply::Value { value } => Reply::Value {
                value: convert(value),
            },
            Reply::ValueMeta {
                version,
                exptime,
                value,
            } => Reply::ValueMeta {
                version,
                exptime,
                value: convert(value),
            },
            Reply::Deleted => Reply::Deleted,
            Reply::ErrVersion => Reply::ErrVersion,
            Reply::ErrNotFound => Reply::ErrNotFound,
            Reply::ErrCmdErr => Reply::ErrCmdErr,
            Reply::ErrInternal => Reply::ErrInternal,
            Reply::ErrRedirect { host, port } => Reply::ErrRedirect { host, port },
            Reply::Session { id } => Reply::Session { id },
            Reply::ErrSessionExpired => Reply::ErrSessionExpired,
            Reply::ErrSequence { last } => Reply::ErrSequence { last },
            Reply::Backup { file } => Reply::Backup {
                file: convert(file),
            },
            Reply::Members { table } => Reply::Members {
                table: convert(table),
            },
            Reply::ErrMembership { reason } => Reply::ErrMembership { reason },
            Reply::Integer { value } => Reply::Integer { value },
            Reply::ErrValue { message } => Reply::ErrValue { message },
            Reply::Keys { cursor, keys } => Reply::Keys { cursor, keys },
            Reply::Multi { replies } => Reply::Multi { replies },
            Reply::ExecAborted => Reply::ExecAborted,
        }
    }

    /// Whether a `noreply` request suppresses this reply. Only the outcomes a client can predict
    /// are suppressed; errors that mean "your command did not run or may not have run" are not.
    pub fn suppressed_by_noreply(&self) -> bool {
        matches!(
            self,
            Reply::Ok { .. } | Reply::ErrVersion | Reply::ErrNotFound
        )
    }

    /// For `ERR_REDIRECT`, the leader's address as a socket address string (`host:port`, or
    /// `[v6]:port` for an IPv6 literal).
    pub fn redirect_address(&self) -> Option<String> {
        match self {
            Reply::ErrRedirect { host, port } if host.contains(':') && !host.starts_with('[') => {
                Some(format!("[{host}]:{port}"))
            }
            Reply::ErrRedirect { host, port } => Some(format!("{host}:{port}")),
            _ => None,
        }
    }
}

impl<V: AsRef<[u8]>> Reply<V> {
    /// Appends the reply, CR LF terminated, to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Reply::Ok { version } => write_line(out, format_args!("OK {version}")),
            Reply::Value { value } => {
                write_line(out, format_args!("VALUE {}", value.as_ref().len()));
                put_block(out, value.as_ref());
            }
            Reply::ValueMeta {
                version,
                exptime,
                value,
            } => {
                write_line(
                    out,
                    format_args!("VALUE {version} {exptime} {}", value.as_ref().len()),
                );
                put_block(out, value.as_ref());
            }
            Reply::Deleted => out.put_slice(b"DELETED\r\n"),
            Reply::ErrVersion => out.put_slice(b"ERR_VERSION\r\n"),
            Reply::ErrNotFound => out.put_slice(b"ERR_NOT_FOUND\r\n"),
            Reply::ErrCmdErr => out.put_slice(b"ERR_CMD_ERR\r\n"),
            Reply::ErrInternal => out.put_slice(b"ERR_INTERNAL\r\n"),
            Reply::ErrRedirect { host, port } => {
                write_line(out, format_args!("ERR_REDIRECT {host} {port}"))
            }
            Reply::Session { id } => write_line(out, format_args!("SESSION {id}")),
            Reply::ErrSessionExpired => out.put_slice(b"ERR_SESSION_EXPIRED\r\n"),
            Reply::ErrSequence { last } => write_line(out, format_args!("ERR_SEQUENCE {last}")),
            Reply::Backup { file } => {
                out.put_slice(&Self::backup_header(file.as_ref().len()));
                put_block(out, file.as_ref());
            }
            Reply::Members { table } => {
                write_line(out, format_args!("MEMBERS {}", table.as_ref().len()));
                put_block(out, table.as_ref());
            }
            Reply::ErrMembership { reason } => {
                // One line whatever the reason says.
                let reason: String = reason
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect();
                write_line(out, format_args!("ERR_MEMBERSHIP {reason}"))
            }
            Reply::Integer { value } => write_line(out, format_args!("INTEGER {value}")),
            Reply::ErrValue { message } => write_line(out, format_args!("ERR_VALUE {message}")),
            Reply::Keys { cursor, keys } => {
                write_line(out, format_args!("KEYS {cursor} {}", keys.len()));
                for key in keys {
                    put_block(out, key);
                }
            }
            Reply::Multi { replies } => {
                write_line(out, format_args!("MULTI {}", replies.len()));
                for reply in replies {
                    reply.encode(out);
                }
            }
            Reply::ExecAborted => out.put_slice(b"EXEC_ABORTED\r\n"),
        }
    }

    /// The line before a backup file: a connection writes it, then the file straight from memory.
    pub fn backup_header(len: usize) -> Vec<u8> {
        format!("BACKUP {len}\r\n").into_bytes()
    }
}

fn write_line(out: &mut BytesMut, line: std::fmt::Arguments<'_>) {
    let mut writer = out.writer();
    // Writing into a BytesMut grows it and cannot fail.
    let _ = writer.write_fmt(line);
    writer.get_mut().put_slice(b"\r\n");
}

fn put_block(out: &mut BytesMut, value: &[u8]) {
    out.reserve(value.len() + 2);
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(reply: Reply) -> Vec<u8> {
        let mut out = BytesMut::new();
        reply.encode(&mut out);
        out.to_vec()
    }

    #[test]
    fn every_reply_has_its_exact_bytes() {
        assert_eq!(encoded(Reply::Ok { version: 42 }), b"OK 42\r\n");
        assert_eq!(
            encoded(Reply::Value {
                value: Bytes::from_static(b"a\r\nb\0")
            }),
            b"VALUE 5\r\na\r\nb\0\r\n"
        );
        assert_eq!(
            encoded(Reply::ValueMeta {
                version: 7,
                exptime: 3,
                value: Bytes::from_static(b"xy")
            }),
            b"VALUE 7 3 2\r\nxy\r\n"
        );
        assert_eq!(
            encoded(Reply::Value {
                value: Bytes::new()
            }),
            b"VALUE 0\r\n\r\n"
        );
        assert_eq!(encoded(Reply::Deleted), b"DELETED\r\n");
        assert_eq!(encoded(Reply::ErrVersion), b"ERR_VERSION\r\n");
        assert_eq!(encoded(Reply::ErrNotFound), b"ERR_NOT_FOUND\r\n");
        assert_eq!(encoded(Reply::ErrCmdErr), b"ERR_CMD_ERR\r\n");
        assert_eq!(encoded(Reply::ErrInternal), b"ERR_INTERNAL\r\n");
        assert_eq!(
            encoded(Reply::ErrRedirect {
                host: "10.0.0.2".into(),
                port: 7001
            }),
            b"ERR_REDIRECT 10.0.0.2 7001\r\n"
        );
        assert_eq!(encoded(Reply::Session { id: 12 }), b"SESSION 12\r\n");
        assert_eq!(
            encoded(Reply::ErrSessionExpired),
            b"ERR_SESSION_EXPIRED\r\n"
        );
        assert_eq!(
            encoded(Reply::ErrSequence { last: 9 }),
            b"ERR_SEQUENCE 9\r\n"
        );
    }

    #[test]
    fn noreply_suppresses_only_predictable_outcomes() {
        assert!(Reply::<Bytes>::Ok { version: 1 }.suppressed_by_noreply());
        assert!(Reply::<Bytes>::ErrVersion.suppressed_by_noreply());
        assert!(Reply::<Bytes>::ErrNotFound.suppressed_by_noreply());
        assert!(!Reply::<Bytes>::ErrCmdErr.suppressed_by_noreply());
        assert!(!Reply::<Bytes>::ErrInternal.suppressed_by_noreply());
        assert!(!Reply::<Bytes>::ErrRedirect {
            host: "h".into(),
            port: 1
        }
        .suppressed_by_noreply());
    }
}

#[cfg(test)]
mod redirect_tests {
    use super::*;

    #[test]
    fn redirect_addresses_bracket_ipv6_literals() {
        let to = |host: &str| Reply::<Bytes>::ErrRedirect {
            host: host.into(),
            port: 9001,
        };
        assert_eq!(
            to("10.0.0.2").redirect_address().as_deref(),
            Some("10.0.0.2:9001")
        );
        assert_eq!(to("::1").redirect_address().as_deref(), Some("[::1]:9001"));
        assert_eq!(
            to("node-1.local").redirect_address().as_deref(),
            Some("node-1.local:9001")
        );
        assert_eq!(Reply::<Bytes>::Deleted.redirect_address(), None);
    }
}

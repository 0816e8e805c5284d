//! Reading one command from the front of a buffer.
//!
//! Two forms, as Redis accepts them: a multibulk (`*<n>\r\n` then `n` times `$<len>\r\n<bytes>\r\n`,
//! what every client library sends) and an inline command (one line of words, quoted as Redis quotes
//! them, what a human types into `telnet`). Any malformation is a [`ProtocolError`]; Redis answers it with an error
//! and closes the connection, and so does raftkv.

use bytes::{Buf, Bytes, BytesMut};

/// What one command may take.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most arguments in one command.
    pub max_args: usize,
    /// Largest single argument.
    pub max_bulk: usize,
    /// Longest inline command or `*`/`$` header line.
    pub max_line: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_args: 1 << 20,
            max_bulk: 512 << 20,
            max_line: 64 << 10,
        }
    }
}

/// The result of looking at the front of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole command (its name first); its bytes have been taken from the buffer.
    Command(Vec<Bytes>),
    /// An empty inline line: nothing to do (Redis ignores it).
    Empty,
    /// More bytes are needed; `at_least` is a lower bound on how many the whole command has, so that
    /// a caller can refuse to buffer one it has no budget for before reading it.
    Incomplete { at_least: usize },
}

/// A malformed or oversized command. The text is what Redis says after `-ERR Protocol error: `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Protocol error: {}", self.0)
    }
}

impl std::error::Error for ProtocolError {}

fn error<T>(what: &str) -> Result<T, ProtocolError> {
    Err(ProtocolError(what.to_string()))
}

/// Takes one command from the front of `buf`, or says how much more it needs.
pub fn parse_command(buf: &mut BytesMut, limits: &Limits) -> Result<Parsed, ProtocolError> {
    match buf.first() {
        None => Ok(Parsed::Incomplete { at_least: 1 }),
        Some(b'*') => parse_multibulk(buf, limits),
        Some(_) => parse_inline(buf, limits),
    }
}

/// The line starting at `from` (without its CR LF) and the index after its LF, if complete.
fn line(buf: &[u8], from: usize, max: usize) -> Result<Option<(&[u8], usize)>, ProtocolError> {
    let window = &buf[from..buf.len().min(from + max + 2)];
    match window.iter().position(|&b| b == b'\n') {
        Some(lf) => {
            let text = &window[..lf];
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            Ok(Some((text, from + lf + 1)))
        }
        None if window.len() > max + 1 => error("too big inline request"),
        None => Ok(None),
    }
}

fn number(digits: &[u8], what: &str) -> Result<i64, ProtocolError> {
    std::str::from_utf8(digits)
        .ok()
        .filter(|d| !d.is_empty() && d.len() <= 19)
        .and_then(|d| d.parse::<i64>().ok())
        .map_or_else(|| error(what), Ok)
}

fn parse_multibulk(buf: &mut BytesMut, limits: &Limits) -> Result<Parsed, ProtocolError> {
    let Some((header, mut at)) = line(buf, 1, limits.max_line)? else {
        return Ok(Parsed::Incomplete {
            at_least: buf.len() + 1,
        });
    };
    let count = number(header, "invalid multibulk length")?;
    if count <= 0 {
        buf.advance(at);
        return Ok(Parsed::Empty);
    }
    if count as u64 > limits.max_args as u64 {
        return error("invalid multibulk length");
    }
    let count = count as usize;
    let mut spans = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        if at >= buf.len() {
            return Ok(Parsed::Incomplete {
                at_least: at + 4 * (count - spans.len()),
            });
        }
        if buf[at] != b'$' {
            return error(&format!("expected '$', got '{}'", buf[at] as char));
        }
        let Some((len_text, start)) = line(buf, at + 1, limits.max_line)? else {
            return Ok(Parsed::Incomplete {
                at_least: buf.len() + 1,
            });
        };
        let len = number(len_text, "invalid bulk length")?;
        if len < 0 || len as u64 > limits.max_bulk as u64 {
            return error("invalid bulk length");
        }
        let end = start + len as usize;
        if buf.len() < end + 2 {
            return Ok(Parsed::Incomplete { at_least: end + 2 });
        }
        if &buf[end..end + 2] != b"\r\n" {
            return error("bulk string not terminated by CRLF");
        }
        spans.push((start, end));
        at = end + 2;
    }
    let frame = buf.split_to(at).freeze();
    Ok(Parsed::Command(
        spans.into_iter().map(|(s, e)| frame.slice(s..e)).collect(),
    ))
}

fn parse_inline(buf: &mut BytesMut, limits: &Limits) -> Result<Parsed, ProtocolError> {
    let Some((text, end)) = line(buf, 0, limits.max_line)? else {
        return Ok(Parsed::Incomplete {
            at_least: buf.len() + 1,
        });
    };
    let Some(words) = crate::inline::split_args(text) else {
        return error("unbalanced quotes in request");
    };
    let words: Vec<Bytes> = words.into_iter().map(Bytes::from).collect();
    buf.advance(end);
    if words.is_empty() {
        return Ok(Parsed::Empty);
    }
    if words.len() > limits.max_args {
        return error("too many arguments");
    }
    Ok(Parsed::Command(words))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Parsed, ProtocolError> {
        parse_command(&mut BytesMut::from(bytes), &Limits::default())
    }

    fn command(words: &[&str]) -> Parsed {
        Parsed::Command(words.iter().map(|w| Bytes::from(w.to_string())).collect())
    }

    #[test]
    fn multibulk_and_inline_commands() {
        assert_eq!(
            parse(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\na\r\nbc\r\n").unwrap(),
            command(&["SET", "k", "a\r\nbc"])
        );
        assert_eq!(parse(b"PING\r\n").unwrap(), command(&["PING"]));
        assert_eq!(parse(b"set  k   v\n").unwrap(), command(&["set", "k", "v"]));
        assert_eq!(parse(b"\r\n").unwrap(), Parsed::Empty);
        assert_eq!(parse(b"*0\r\n").unwrap(), Parsed::Empty);
        assert_eq!(parse(b"*1\r\n$0\r\n\r\n").unwrap(), command(&[""]));
    }

    #[test]
    fn a_partial_command_takes_nothing_and_says_how_much_it_needs_at_least() {
        let whole = b"*2\r\n$3\r\nGET\r\n$10\r\n0123456789\r\n";
        for cut in 0..whole.len() {
            let mut buf = BytesMut::from(&whole[..cut]);
            match parse_command(&mut buf, &Limits::default()).unwrap() {
                Parsed::Incomplete { at_least } => {
                    assert!(
                        at_least > cut && at_least <= whole.len(),
                        "cut {cut}: {at_least}"
                    )
                }
                other => panic!("cut {cut}: {other:?}"),
            }
            assert_eq!(buf.len(), cut);
        }
        let mut buf = BytesMut::from(&whole[..]);
        buf.extend_from_slice(b"PING\r\n");
        assert_eq!(
            parse_command(&mut buf, &Limits::default()).unwrap(),
            command(&["GET", "0123456789"])
        );
        assert_eq!(&buf[..], b"PING\r\n");
    }

    #[test]
    fn malformed_and_oversized_commands_are_errors() {
        let limits = Limits {
            max_args: 4,
            max_bulk: 16,
            max_line: 32,
        };
        let bad: [&[u8]; 7] = [
            b"*x\r\n",
            b"*1\r\n+OK\r\n",
            b"*1\r\n$-1\r\n",
            b"*1\r\n$3\r\nabcd\r\n",
            b"*5\r\n",
            b"*1\r\n$17\r\n",
            b"*99999999999999999999\r\n",
        ];
        for input in bad {
            assert!(
                parse_command(&mut BytesMut::from(input), &limits).is_err(),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        let long_line = [b'a'; 100];
        assert!(parse_command(&mut BytesMut::from(&long_line[..]), &limits).is_err());
    }
}

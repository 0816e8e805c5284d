//! Incremental request parser. It is fed whatever bytes have arrived so far and consumes at most
//! one request (or one malformed one) per call, so replies can be produced strictly in order.

use bytes::{Buf, Bytes, BytesMut};

use crate::fields::{parse_decimal, tokens, Number};
use crate::limits::{is_valid_exptime, is_valid_key, MAX_LINE_LEN, MAX_SESSION_NUMBER};
use crate::members::{is_valid_address, MembersRequest};
use crate::request::{Request, SessionSeq};

/// Why a request was rejected. Either way the client gets `ERR_CMD_ERR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// The malformed line (and its value block, if its numbytes was readable) has been skipped;
    /// the next request can be parsed.
    Recoverable,
    /// The stream can no longer be framed (over-long line, oversized value, value block not
    /// followed by CR LF). The connection must be closed; further calls keep returning `Fatal`.
    Fatal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseOutcome {
    Request(Request),
    /// Not enough bytes for the next step. Bytes already consumed are remembered by the parser;
    /// call again, with the same buffer, when more arrive.
    NeedMore,
    Error(ParseError),
}

/// A write whose header has been consumed and whose value block has not fully arrived yet.
#[derive(Debug, Clone)]
enum PendingWrite {
    Set {
        key: Bytes,
        exptime: u32,
        noreply: bool,
    },
    Cas {
        key: Bytes,
        exptime: u32,
        version: u64,
        noreply: bool,
    },
}

impl PendingWrite {
    fn with_value(self, value: Bytes, session: Option<SessionSeq>) -> Request {
        let write = match self {
            PendingWrite::Set {
                key,
                exptime,
                noreply,
            } => Request::Set {
                key,
                exptime,
                value,
                noreply,
            },
            PendingWrite::Cas {
                key,
                exptime,
                version,
                noreply,
            } => Request::Cas {
                key,
                exptime,
                version,
                value,
                noreply,
            },
        };
        in_session(write, session)
    }
}

/// `write`, inside `session` if it has one.
fn in_session(write: Request, session: Option<SessionSeq>) -> Request {
    match session {
        Some(session) => Request::InSession {
            session,
            write: Box::new(write),
        },
        None => write,
    }
}

#[derive(Debug, Clone)]
enum State {
    /// Expecting a request line.
    Line,
    /// Header accepted; waiting for `len` value bytes and CR LF.
    Value {
        write: PendingWrite,
        len: usize,
        session: Option<SessionSeq>,
    },
    /// Header rejected but its numbytes was readable: discarding `remaining` value bytes, then CR LF,
    /// so the value is not misread as commands. Remembered across calls so that nothing beyond a
    /// CR LF ever has to be buffered for a block that will be thrown away.
    Skip { remaining: usize },
    /// A fatal error happened; the stream cannot be trusted any more.
    Failed,
}

/// What one request line turned out to be.
enum LineOutcome {
    Request(Request),
    AwaitValue {
        write: PendingWrite,
        len: usize,
        session: Option<SessionSeq>,
    },
    SkipValue {
        len: usize,
    },
    Error(ParseError),
}

#[derive(Debug, Clone)]
pub struct Parser {
    max_value_size: usize,
    state: State,
}

impl Default for Parser {
    fn default() -> Self {
        Parser::new(crate::DEFAULT_MAX_VALUE_SIZE)
    }
}

impl Parser {
    /// `max_value_size` is capped at `u32::MAX` because log entries and snapshots store value
    /// lengths in 32 bits.
    pub fn new(max_value_size: usize) -> Parser {
        let cap = usize::try_from(u32::MAX).unwrap_or(usize::MAX);
        Parser {
            max_value_size: max_value_size.min(cap),
            state: State::Line,
        }
    }

    pub fn max_value_size(&self) -> usize {
        self.max_value_size
    }

    /// After `NeedMore`, the buffer always holds fewer bytes than this: the parser never needs an
    /// unbounded amount of input to make progress, so a server can cap its read buffer here.
    pub fn max_pending_bytes(&self) -> usize {
        (MAX_LINE_LEN + 2).max(self.max_value_size + 2)
    }

    /// The size of the value block being awaited, once its header has been read: a connection can
    /// reserve memory for it before reading it.
    pub fn pending_value_len(&self) -> Option<usize> {
        match self.state {
            State::Value { len, .. } => Some(len),
            _ => None,
        }
    }

    /// Whether the parser is inside a request (its header was read, its value block is not complete),
    /// so that a connection can tell a stalled request from an idle one.
    pub fn mid_request(&self) -> bool {
        matches!(self.state, State::Value { .. } | State::Skip { .. })
    }

    /// Consumes at most one request (or one malformed request) from the front of `buf`.
    pub fn parse(&mut self, buf: &mut BytesMut) -> ParseOutcome {
        match std::mem::replace(&mut self.state, State::Line) {
            State::Line => self.parse_line(buf),
            State::Value {
                write,
                len,
                session,
            } => self.parse_value(buf, write, len, session),
            State::Skip { remaining } => self.skip_value(buf, remaining),
            State::Failed => self.fail(),
        }
    }

    fn fail(&mut self) -> ParseOutcome {
        self.state = State::Failed;
        ParseOutcome::Error(ParseError::Fatal)
    }

    fn parse_line(&mut self, buf: &mut BytesMut) -> ParseOutcome {
        // Only the first MAX_LINE_LEN + 2 bytes can hold a legal line's CR LF. Looking no further
        // keeps the verdict independent of how the input was split across reads.
        let window = &buf[..buf.len().min(MAX_LINE_LEN + 2)];
        let Some(line_len) = window.windows(2).position(|pair| pair == b"\r\n") else {
            if buf.len() >= MAX_LINE_LEN + 2 {
                return self.fail();
            }
            return ParseOutcome::NeedMore;
        };
        let mut line = buf.split_to(line_len + 2).freeze();
        line.truncate(line_len);
        match self.interpret_line(&line) {
            LineOutcome::Request(request) => ParseOutcome::Request(request),
            LineOutcome::AwaitValue {
                write,
                len,
                session,
            } => self.parse_value(buf, write, len, session),
            LineOutcome::SkipValue { len } => self.skip_value(buf, len),
            LineOutcome::Error(ParseError::Fatal) => self.fail(),
            LineOutcome::Error(ParseError::Recoverable) => {
                ParseOutcome::Error(ParseError::Recoverable)
            }
        }
    }

    fn parse_value(
        &mut self,
        buf: &mut BytesMut,
        write: PendingWrite,
        len: usize,
        session: Option<SessionSeq>,
    ) -> ParseOutcome {
        // len <= max_value_size <= u32::MAX, so this cannot overflow.
        let block_len = len + 2;
        if buf.len() < block_len {
            // A wrong byte where the CR LF must be is an error at once, not after a second byte.
            if !is_terminator_prefix(&buf[buf.len().min(len)..]) {
                return self.fail();
            }
            self.state = State::Value {
                write,
                len,
                session,
            };
            return ParseOutcome::NeedMore;
        }
        if &buf[len..block_len] != b"\r\n" {
            return self.fail();
        }
        let value = buf.split_to(len).freeze();
        buf.advance(2);
        ParseOutcome::Request(write.with_value(value, session))
    }

    fn skip_value(&mut self, buf: &mut BytesMut, remaining: usize) -> ParseOutcome {
        let skipped = remaining.min(buf.len());
        buf.advance(skipped);
        let remaining = remaining - skipped;
        if remaining == 0 && !is_terminator_prefix(&buf[..buf.len().min(2)]) {
            return self.fail();
        }
        if remaining > 0 || buf.len() < 2 {
            self.state = State::Skip { remaining };
            return ParseOutcome::NeedMore;
        }
        if &buf[..2] != b"\r\n" {
            return self.fail();
        }
        buf.advance(2);
        ParseOutcome::Error(ParseError::Recoverable)
    }

    fn interpret_line(&self, line: &Bytes) -> LineOutcome {
        // Seven slots: the longest valid line has six tokens, the seventh only proves "too many".
        let mut spans = [(0usize, 0usize); 7];
        let mut count = 0;
        for span in tokens(line) {
            if count < spans.len() {
                spans[count] = span;
            }
            count += 1;
        }
        let token = |index: usize| -> &[u8] {
            if index < count.min(spans.len()) {
                let (start, end) = spans[index];
                &line[start..end]
            } else {
                &[]
            }
        };
        let key = || {
            let (start, end) = spans[1];
            line.slice(start..end)
        };
        let recoverable = LineOutcome::Error(ParseError::Recoverable);
        match token(0) {
            name @ (b"get" | b"getm" | b"delete") => {
                if count != 2 || !is_valid_key(token(1)) {
                    return recoverable;
                }
                let key = key();
                LineOutcome::Request(match name {
                    b"get" => Request::Get { key },
                    b"getm" => Request::Getm { key },
                    _ => Request::Delete { key },
                })
            }
            name @ (b"set" | b"cas") => {
                let is_cas = name == b"cas";
                let numbytes_index = if is_cas { 4 } else { 3 };
                let len = match parse_decimal(token(numbytes_index)) {
                    Number::Invalid => return recoverable,
                    Number::TooLarge => return LineOutcome::Error(ParseError::Fatal),
                    Number::Valid(n) => match usize::try_from(n) {
                        Ok(n) if n <= self.max_value_size => n,
                        _ => return LineOutcome::Error(ParseError::Fatal),
                    },
                };
                let noreply = match count - numbytes_index {
                    1 => false,
                    2 if token(numbytes_index + 1) == b"noreply" => true,
                    _ => return LineOutcome::SkipValue { len },
                };
                let exptime = match parse_decimal(token(2)) {
                    Number::Valid(e) => match u32::try_from(e) {
                        Ok(e) if is_valid_exptime(e) => e,
                        _ => return LineOutcome::SkipValue { len },
                    },
                    _ => return LineOutcome::SkipValue { len },
                };
                if !is_valid_key(token(1)) {
                    return LineOutcome::SkipValue { len };
                }
                let write = if is_cas {
                    let Number::Valid(version) = parse_decimal(token(3)) else {
                        return LineOutcome::SkipValue { len };
                    };
                    PendingWrite::Cas {
                        key: key(),
                        exptime,
                        version,
                        noreply,
                    }
                } else {
                    PendingWrite::Set {
                        key: key(),
                        exptime,
                        noreply,
                    }
                };
                LineOutcome::AwaitValue {
                    write,
                    len,
                    session: None,
                }
            }
            b"members" => match members_request(count, token) {
                Some(request) => LineOutcome::Request(Request::Members(request)),
                None => recoverable,
            },
            b"register" if count == 1 => LineOutcome::Request(Request::Register),
            b"backup" if count == 1 => LineOutcome::Request(Request::Backup),
            b"stale" if count >= 3 => {
                let (start, _) = spans[2];
                let inner = self.interpret_line(&line.slice(start..));
                match (parse_decimal(token(1)), inner) {
                    (
                        Number::Valid(max_lag),
                        LineOutcome::Request(read @ (Request::Get { .. } | Request::Getm { .. })),
                    ) => LineOutcome::Request(Request::Stale {
                        max_lag,
                        read: Box::new(read),
                    }),
                    // Only reads may be stale; a write's value block is skipped with the line.
                    (_, inner) => inner.rejected(),
                }
            }
            b"session" if count >= 4 => {
                let (start, _) = spans[3];
                let inner = self.interpret_line(&line.slice(start..));
                let session = match (session_number(token(1)), session_number(token(2))) {
                    (Some(session), Some(seq)) => SessionSeq { session, seq },
                    // Skip the value block of a write with a bad prefix, or it would be read as commands.
                    _ => return inner.rejected(),
                };
                inner.in_session(session)
            }
            _ => recoverable,
        }
    }
}

/// `members`, `members add <id> <client_addr> <peer_addr> [<resp_addr>]`, `members promote <id>`,
/// `members remove <id>`; `None` for anything else (ids are positive, addresses `host:port`).
fn members_request<'a>(count: usize, token: impl Fn(usize) -> &'a [u8]) -> Option<MembersRequest> {
    let id = || match parse_decimal(token(2)) {
        Number::Valid(id) if id > 0 => Some(id),
        _ => None,
    };
    let address = |index| {
        let text = std::str::from_utf8(token(index)).ok()?;
        is_valid_address(text).then(|| text.to_string())
    };
    match (count, token(1)) {
        (1, _) => Some(MembersRequest::List),
        (5 | 6, b"add") => Some(MembersRequest::AddLearner {
            id: id()?,
            client_addr: address(3)?,
            peer_addr: address(4)?,
            resp_addr: match count {
                6 => Some(address(5)?),
                _ => None,
            },
        }),
        (3, b"promote") => Some(MembersRequest::Promote { id: id()? }),
        (3, b"remove") => Some(MembersRequest::Remove { id: id()? }),
        _ => None,
    }
}

impl LineOutcome {
    /// This line's outcome had it been rejected: an error, after skipping any value block it announced.
    fn rejected(self) -> LineOutcome {
        match self {
            LineOutcome::AwaitValue { len, .. } | LineOutcome::SkipValue { len } => {
                LineOutcome::SkipValue { len }
            }
            LineOutcome::Error(ParseError::Fatal) => LineOutcome::Error(ParseError::Fatal),
            LineOutcome::Request(_) | LineOutcome::Error(ParseError::Recoverable) => {
                LineOutcome::Error(ParseError::Recoverable)
            }
        }
    }

    /// The outcome of `session <id> <seq> <this line>`: only plain writes may be in a session.
    fn in_session(self, session: SessionSeq) -> LineOutcome {
        match self {
            LineOutcome::AwaitValue {
                write,
                len,
                session: None,
            } => LineOutcome::AwaitValue {
                write,
                len,
                session: Some(session),
            },
            LineOutcome::Request(delete @ Request::Delete { .. }) => {
                LineOutcome::Request(in_session(delete, Some(session)))
            }
            other => other.rejected(),
        }
    }
}

/// A session id or sequence number: decimal, from 1 to [`MAX_SESSION_NUMBER`].
fn session_number(token: &[u8]) -> Option<u64> {
    match parse_decimal(token) {
        Number::Valid(n) if (1..=MAX_SESSION_NUMBER).contains(&n) => Some(n),
        _ => None,
    }
}
/// Whether `bytes` (at most two) can still become the CR LF that ends a value block.
fn is_terminator_prefix(bytes: &[u8]) -> bool {
    b"\r\n".starts_with(bytes)
}

//! One test per parsing rule of docs/protocol.md.

use bytes::{Bytes, BytesMut};
use raftkv_kv::{ParseError, ParseOutcome, Parser, Request};

const FATAL: ParseOutcome = ParseOutcome::Error(ParseError::Fatal);
const RECOVERABLE: ParseOutcome = ParseOutcome::Error(ParseError::Recoverable);

/// Parses everything in `input` (until NeedMore or Fatal); returns the outcomes and what is left.
fn parse_all_with(parser: &mut Parser, input: &[u8]) -> (Vec<ParseOutcome>, Vec<u8>) {
    let mut buf = BytesMut::from(input);
    let mut outcomes = Vec::new();
    loop {
        match parser.parse(&mut buf) {
            ParseOutcome::NeedMore => return (outcomes, buf.to_vec()),
            outcome => {
                let fatal = outcome == FATAL;
                outcomes.push(outcome);
                if fatal {
                    return (outcomes, buf.to_vec());
                }
            }
        }
    }
}

fn parse_all(input: &[u8]) -> Vec<ParseOutcome> {
    parse_all_with(&mut Parser::default(), input).0
}

fn b(s: &'static [u8]) -> Bytes {
    Bytes::from_static(s)
}

fn set(key: &'static [u8], exptime: u32, value: &'static [u8], noreply: bool) -> ParseOutcome {
    ParseOutcome::Request(Request::Set {
        key: b(key),
        exptime,
        value: b(value),
        noreply,
    })
}

#[test]
fn parses_every_command() {
    assert_eq!(
        parse_all(b"set k 10 3\r\nabc\r\n"),
        vec![set(b"k", 10, b"abc", false)]
    );
    assert_eq!(
        parse_all(b"set k 0 3 noreply\r\nabc\r\n"),
        vec![set(b"k", 0, b"abc", true)]
    );
    assert_eq!(
        parse_all(b"cas k 5 42 2\r\nhi\r\ncas k 0 18446744073709551615 0 noreply\r\n\r\n"),
        vec![
            ParseOutcome::Request(Request::Cas {
                key: b(b"k"),
                exptime: 5,
                version: 42,
                value: b(b"hi"),
                noreply: false
            }),
            ParseOutcome::Request(Request::Cas {
                key: b(b"k"),
                exptime: 0,
                version: u64::MAX,
                value: b(b""),
                noreply: true
            }),
        ]
    );
    assert_eq!(
        parse_all(b"get k\r\ngetm k\r\ndelete k\r\n"),
        vec![
            ParseOutcome::Request(Request::Get { key: b(b"k") }),
            ParseOutcome::Request(Request::Getm { key: b(b"k") }),
            ParseOutcome::Request(Request::Delete { key: b(b"k") }),
        ]
    );
}

#[test]
fn values_may_contain_crlf_and_nul() {
    let value: &[u8] = b"a\r\nset x 0 1\r\n\0\r\n";
    let mut input = format!("set k 0 {}\r\n", value.len()).into_bytes();
    input.extend_from_slice(value);
    input.extend_from_slice(b"\r\nget k\r\n");
    let outcomes = parse_all(&input);
    assert_eq!(outcomes.len(), 2);
    assert_eq!(
        outcomes[0],
        ParseOutcome::Request(Request::Set {
            key: b(b"k"),
            exptime: 0,
            value: Bytes::copy_from_slice(value),
            noreply: false
        })
    );
}

#[test]
fn key_length_limit_is_250() {
    let ok = format!("get {}\r\n", "k".repeat(250));
    assert!(matches!(
        parse_all(ok.as_bytes())[..],
        [ParseOutcome::Request(Request::Get { .. })]
    ));
    let too_long = format!("get {}\r\n", "k".repeat(251));
    assert_eq!(parse_all(too_long.as_bytes()), vec![RECOVERABLE]);
    let set_too_long = format!("set {} 0 1\r\nx\r\nget k\r\n", "k".repeat(251));
    let outcomes = parse_all(set_too_long.as_bytes());
    assert_eq!(
        outcomes[0], RECOVERABLE,
        "bad key, readable numbytes: block skipped"
    );
    assert_eq!(
        outcomes[1],
        ParseOutcome::Request(Request::Get { key: b(b"k") })
    );
}

#[test]
fn keys_are_printable_ascii_only() {
    for bad in [
        &b"get k\x01\r\n"[..],
        b"get k\x7f\r\n",
        b"get \xc3\xa9\r\n",
        b"get k\tx\r\n",
        b"get k\nx\r\n",
    ] {
        assert_eq!(parse_all(bad), vec![RECOVERABLE], "{bad:?}");
    }
    assert!(matches!(
        parse_all(b"get !~\r\n")[..],
        [ParseOutcome::Request(_)]
    ));
}

#[test]
fn exptime_limits() {
    assert_eq!(
        parse_all(b"set k 315360000 1\r\nx\r\n"),
        vec![set(b"k", 315_360_000, b"x", false)]
    );
    for bad in [
        &b"set k 315360001 1\r\nx\r\n"[..],
        b"set k -1 1\r\nx\r\n",
        b"set k 1e3 1\r\nx\r\n",
        b"set k 99999999999999999999999 1\r\nx\r\n",
    ] {
        assert_eq!(parse_all(bad), vec![RECOVERABLE], "{bad:?}");
    }
}

#[test]
fn numbytes_limits() {
    let mut parser = Parser::new(4);
    assert_eq!(
        parse_all_with(&mut parser, b"set k 0 4\r\nabcd\r\n").0,
        vec![set(b"k", 0, b"abcd", false)]
    );
    let (outcomes, _) = parse_all_with(&mut parser, b"set k 0 5\r\nabcde\r\n");
    assert_eq!(outcomes, vec![FATAL]);
    assert_eq!(
        parse_all_with(&mut parser, b"get k\r\n").0,
        vec![FATAL],
        "fatal is sticky"
    );
    assert_eq!(parse_all(b"set k 0 99999999999999999999\r\n"), vec![FATAL]);
    assert_eq!(parse_all(b"set k 0 1048577\r\n"), vec![FATAL]);
    assert_eq!(parse_all(b"set k 0 -1\r\nget k\r\n")[0], RECOVERABLE);
    assert_eq!(
        parse_all(b"set k 0 0\r\n\r\n"),
        vec![set(b"k", 0, b"", false)]
    );
}

#[test]
fn value_block_must_end_with_crlf() {
    assert_eq!(parse_all(b"set k 0 3\r\nabcd\r\n"), vec![FATAL]);
    assert_eq!(parse_all(b"set k 0 3\r\nab\r\n\r\n"), vec![FATAL]);
    assert_eq!(parse_all(b"set k 0 1\r\na\n\r"), vec![FATAL]);
    assert_eq!(
        parse_all(b"set k x 1\r\na\n\r"),
        vec![FATAL],
        "also for a skipped block"
    );
}

/// A wrong byte where the value's CR LF must be is reported at once, without waiting for a second byte
/// (which a stalled client would never send).
#[test]
fn a_wrong_terminator_byte_is_an_error_at_once() {
    assert_eq!(parse_all(b"set e 0 3\r\nabcX"), vec![FATAL]);
    assert_eq!(parse_all(b"set e 0 3\r\nabc\rX"), vec![FATAL]);
    assert_eq!(parse_all(b"set e 0 3\r\nabc\r"), Vec::<ParseOutcome>::new());
    assert_eq!(parse_all(b"set e 0 3\r\nabc"), Vec::<ParseOutcome>::new());
    // The same for the value of a malformed command, which is skipped.
    assert_eq!(parse_all(b"set bad\x01key 0 3\r\nabcX"), vec![FATAL]);
}

#[test]
fn short_and_unknown_commands_are_recoverable() {
    let outcomes = parse_all(b"set k 0\r\nfoo\r\n\r\nGET k\r\nget\r\nget k\r\n");
    assert_eq!(
        outcomes,
        vec![
            RECOVERABLE,
            RECOVERABLE,
            RECOVERABLE,
            RECOVERABLE,
            RECOVERABLE,
            ParseOutcome::Request(Request::Get { key: b(b"k") })
        ]
    );
}

#[test]
fn extra_tokens_are_errors() {
    assert_eq!(parse_all(b"get k x\r\n"), vec![RECOVERABLE]);
    assert_eq!(parse_all(b"delete k noreply\r\n"), vec![RECOVERABLE]);
    assert_eq!(parse_all(b"getm k noreply\r\n"), vec![RECOVERABLE]);
    // numbytes is readable, so the block goes with the bad header.
    assert_eq!(parse_all(b"set k 0 1 noreply x\r\na\r\nget k\r\n").len(), 2);
    assert_eq!(parse_all(b"set k 0 1 norepl\r\na\r\n"), vec![RECOVERABLE]);
    assert_eq!(
        parse_all(b"cas k 0 1 1 noreply extra more\r\na\r\n"),
        vec![RECOVERABLE]
    );
    assert_eq!(parse_all(b"cas k 0 v 1\r\na\r\n"), vec![RECOVERABLE]);
    assert_eq!(
        parse_all(b"cas k 0 18446744073709551616 1\r\na\r\n"),
        vec![RECOVERABLE]
    );
}

#[test]
fn runs_of_spaces_separate_tokens() {
    assert_eq!(
        parse_all(b"  set   k  0 1  \r\nx\r\n"),
        vec![set(b"k", 0, b"x", false)]
    );
}

#[test]
fn bad_header_block_is_skipped_even_when_it_arrives_later() {
    let mut parser = Parser::default();
    let mut buf = BytesMut::from(&b"set k 0x 10\r\n0123"[..]);
    assert_eq!(parser.parse(&mut buf), ParseOutcome::NeedMore);
    assert!(buf.is_empty(), "the skipped part is not buffered");
    buf.extend_from_slice(b"456789\r");
    assert_eq!(parser.parse(&mut buf), ParseOutcome::NeedMore);
    buf.extend_from_slice(b"\nget k\r\n");
    assert_eq!(parser.parse(&mut buf), RECOVERABLE);
    assert_eq!(
        parser.parse(&mut buf),
        ParseOutcome::Request(Request::Get { key: b(b"k") })
    );
}

#[test]
fn overlong_line_is_fatal_and_bounded() {
    let mut parser = Parser::default();
    let mut buf = BytesMut::from(&[b'a'; 1024][..]);
    assert_eq!(parser.parse(&mut buf), ParseOutcome::NeedMore);
    buf.extend_from_slice(b"\r");
    assert_eq!(parser.parse(&mut buf), ParseOutcome::NeedMore);
    buf.extend_from_slice(b"x");
    assert_eq!(parser.parse(&mut buf), FATAL);
    // A 1024-byte line is still a line (here a bad one).
    let mut line = vec![b'a'; 1024];
    line.extend_from_slice(b"\r\n");
    assert_eq!(parse_all(&line), vec![RECOVERABLE]);
    let mut line = vec![b'a'; 1025];
    line.extend_from_slice(b"\r\n");
    assert_eq!(parse_all(&line), vec![FATAL]);
}

#[test]
fn lone_lf_does_not_end_a_line() {
    assert_eq!(parse_all(b"get k\n"), vec![]);
    assert_eq!(parse_all(b"get k\nget j\r\n"), vec![RECOVERABLE]);
}

#[test]
fn incomplete_input_waits() {
    let mut parser = Parser::default();
    let mut buf = BytesMut::from(&b"set k 0 5\r\nab"[..]);
    assert_eq!(parser.parse(&mut buf), ParseOutcome::NeedMore);
    buf.extend_from_slice(b"cde\r");
    assert_eq!(parser.parse(&mut buf), ParseOutcome::NeedMore);
    buf.extend_from_slice(b"\n");
    assert_eq!(parser.parse(&mut buf), set(b"k", 0, b"abcde", false));
    assert!(buf.is_empty());
}

#[test]
fn pipelined_requests_come_out_in_order() {
    let input = b"set a 0 1\r\n1\r\nbogus\r\nget a\r\nset b 0 1 noreply\r\n2\r\ndelete a\r\n";
    let outcomes = parse_all(input);
    assert_eq!(outcomes.len(), 5);
    assert_eq!(outcomes[1], RECOVERABLE);
    assert_eq!(
        outcomes[4],
        ParseOutcome::Request(Request::Delete { key: b(b"a") })
    );
}

fn in_session(session: u64, seq: u64, write: ParseOutcome) -> ParseOutcome {
    let ParseOutcome::Request(write) = write else {
        panic!("not a request: {write:?}");
    };
    ParseOutcome::Request(Request::InSession {
        session: raftkv_kv::protocol::SessionSeq { session, seq },
        write: Box::new(write),
    })
}

#[test]
fn register_and_session_writes_parse() {
    assert_eq!(
        parse_all(b"register\r\n"),
        vec![ParseOutcome::Request(Request::Register)]
    );
    assert_eq!(
        parse_all(b"session 7 3 set k 0 3 noreply\r\nabc\r\nsession 7 4 delete k\r\n"),
        vec![
            in_session(7, 3, set(b"k", 0, b"abc", true)),
            in_session(
                7,
                4,
                ParseOutcome::Request(Request::Delete { key: b(b"k") })
            ),
        ]
    );
    let cas = parse_all(b"session 1 1 cas k 5 42 2\r\nhi\r\n");
    assert!(
        matches!(&cas[..], [ParseOutcome::Request(Request::InSession { write, .. })]
        if matches!(**write, Request::Cas { version: 42, .. }))
    );
}

#[test]
fn malformed_session_commands_are_errors_and_skip_their_value() {
    for line in [
        &b"register extra\r\n"[..],
        b"session 1 1 get k\r\n",
        b"session 1 1 getm k\r\n",
        b"session 1 1 register\r\n",
        b"session 1 1\r\n",
        b"session 1\r\n",
        b"session x 1 delete k\r\n",
        b"session 1 -1 delete k\r\n",
        b"session 0 1 delete k\r\n",
        b"session 1 0 delete k\r\n",
        // Larger than MAX_SESSION_NUMBER, and larger than u64.
        b"session 1 4611686018427387905 delete k\r\n",
        b"session 99999999999999999999999 1 delete k\r\n",
        b"session 1 1 session 1 2 delete k\r\n",
    ] {
        assert_eq!(parse_all(line), vec![RECOVERABLE], "{line:?}");
    }
    // A bad prefix on a write with a value: the value is skipped, not read as commands.
    assert_eq!(
        parse_all(b"session 0 1 set k 0 10\r\ndelete kkk\r\nget k\r\n"),
        vec![
            RECOVERABLE,
            ParseOutcome::Request(Request::Get { key: b(b"k") })
        ]
    );
    assert_eq!(
        parse_all(b"session 1 1 session 1 2 set k 0 10\r\ndelete kkk\r\nget k\r\n"),
        vec![
            RECOVERABLE,
            ParseOutcome::Request(Request::Get { key: b(b"k") })
        ]
    );
    // The largest legal numbers parse.
    assert_eq!(
        parse_all(b"session 4611686018427387904 4611686018427387904 delete k\r\n").len(),
        1
    );
    assert!(matches!(
        parse_all(b"session 4611686018427387904 4611686018427387904 delete k\r\n")[0],
        ParseOutcome::Request(Request::InSession { .. })
    ));
}

#[test]
fn stale_reads_parse_and_only_reads_may_be_stale() {
    assert_eq!(
        parse_all(b"stale 100 get k\r\nstale 0 getm k\r\n"),
        vec![
            ParseOutcome::Request(Request::Stale {
                max_lag: 100,
                read: Box::new(Request::Get { key: b(b"k") }),
            }),
            ParseOutcome::Request(Request::Stale {
                max_lag: 0,
                read: Box::new(Request::Getm { key: b(b"k") }),
            }),
        ]
    );
    for line in [
        &b"stale get k\r\n"[..],
        b"stale x get k\r\n",
        b"stale -1 get k\r\n",
        b"stale 1 delete k\r\n",
        b"stale 1 backup\r\n",
        b"stale 1 stale 1 get k\r\n",
        b"stale 99999999999999999999999 get k\r\n",
    ] {
        assert_eq!(parse_all(line), vec![RECOVERABLE], "{line:?}");
    }
    // A write after the prefix is refused with its value block.
    assert_eq!(
        parse_all(b"stale 1 set k 0 9\r\nget kkkkk\r\nget k\r\n"),
        vec![
            RECOVERABLE,
            ParseOutcome::Request(Request::Get { key: b(b"k") })
        ]
    );
}

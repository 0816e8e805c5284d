//! Feeds arbitrary bytes to the request parser, split into pieces at fuzzer-chosen points, and
//! checks it never panics, never needs unbounded buffering, and parses the same as unsplit.
//! Also throws the same bytes at the log-entry and snapshot decoders.
//!
//! Run (nightly): `cargo +nightly fuzz run parse -- -max_total_time=600`
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use raftkv_kv::{ParseError, ParseOutcome, Parser, Proposal, Store};

/// Small, so the fuzzer reaches the value-size limit and value blocks cheaply.
const MAX_VALUE: usize = 256;

fn parse_in_pieces(input: &[u8], piece_lens: &[u8]) -> Vec<ParseOutcome> {
    let mut parser = Parser::new(MAX_VALUE);
    let mut buf = BytesMut::new();
    let mut outcomes = Vec::new();
    let mut fed = 0;
    let mut pieces = piece_lens.iter().map(|&len| usize::from(len) + 1).cycle();
    while fed < input.len() {
        let piece = if piece_lens.is_empty() { input.len() } else { pieces.next().unwrap_or(input.len()) };
        let end = (fed + piece).min(input.len());
        buf.extend_from_slice(&input[fed..end]);
        fed = end;
        loop {
            match parser.parse(&mut buf) {
                ParseOutcome::NeedMore => {
                    assert!(buf.len() < parser.max_pending_bytes());
                    break;
                }
                outcome @ ParseOutcome::Error(ParseError::Fatal) => {
                    outcomes.push(outcome);
                    return outcomes;
                }
                outcome => outcomes.push(outcome),
            }
        }
    }
    outcomes
}

fuzz_target!(|data: &[u8]| {
    // First byte: how many of the following bytes describe piece lengths.
    let Some((&split_count, rest)) = data.split_first() else { return };
    let split_count = usize::from(split_count % 16).min(rest.len());
    let (piece_lens, input) = rest.split_at(split_count);
    let whole = parse_in_pieces(input, &[]);
    assert_eq!(parse_in_pieces(input, piece_lens), whole);

    let _ = Proposal::decode(&Bytes::copy_from_slice(input));
    let _ = Store::restore(input);
});

//! The Redis command parser on arbitrary bytes, fed in arbitrary pieces: it must never panic, never
//! take bytes without returning a command, say truthfully how much more an incomplete command needs,
//! and never return an argument past its limits; and the pieces must parse as the whole does.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use raftkv_resp::{parse_command, Limits, Parsed};

const LIMITS: Limits = Limits {
    max_args: 64,
    max_bulk: 512,
    max_line: 256,
};

/// Every command (or error) parsing `input` in one buffer, fed `step` bytes at a time.
fn parse_all(input: &[u8], step: usize) -> Vec<Result<Vec<Vec<u8>>, String>> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in input.chunks(step.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match parse_command(&mut buf, &LIMITS) {
                Ok(Parsed::Command(args)) => {
                    assert!(buf.len() < before, "a command took no bytes");
                    assert!(!args.is_empty() && args.len() <= LIMITS.max_args);
                    assert!(args.iter().all(|a| a.len() <= LIMITS.max_bulk.max(LIMITS.max_line)));
                    out.push(Ok(args.iter().map(|a| a.to_vec()).collect()));
                }
                Ok(Parsed::Empty) => assert!(buf.len() < before, "an empty line took no bytes"),
                Ok(Parsed::Incomplete { at_least }) => {
                    assert_eq!(buf.len(), before, "an incomplete command took bytes");
                    assert!(at_least > buf.len(), "needs {at_least} of {}", buf.len());
                    break;
                }
                Err(error) => {
                    out.push(Err(error.0));
                    return out;
                }
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, input)) = data.split_first() else {
        return;
    };
    let whole = parse_all(input, input.len());
    let pieces = parse_all(input, usize::from(step % 16) + 1);
    // Fed in pieces, the same commands come out, up to the first error (an error may show up earlier
    // in pieces, when a line is already too long before its end arrives).
    let same = whole.iter().zip(&pieces).take_while(|(a, b)| a == b).count();
    assert!(
        same == whole.len().min(pieces.len())
            || whole[same].is_err()
            || pieces[same].is_err(),
        "pieces parse differently at command {same}"
    );
});

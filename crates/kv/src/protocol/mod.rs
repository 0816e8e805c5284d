//! The CS733 text protocol: requests as parsed from the wire and replies as written back.
//! The full specification, with examples, is in `docs/protocol.md`.

mod fields;
mod parser;
mod reply;
mod request;

pub use parser::{ParseError, ParseOutcome, Parser};
pub use reply::Reply;
pub use request::Request;

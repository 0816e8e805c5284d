//! The handshake frame that opens each direction of every peer connection, and the limits on it.

use super::framing::{encode_frame, read_frame};
use crate::wire::Handshake;
use bytes::BytesMut;
use raftkv_tls::Stream;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Handshakes are tiny; strangers must not make us buffer more than this before proving who they are.
const MAX_HANDSHAKE_BYTES: usize = 1024;

/// How long either side may take to complete the handshake exchange.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Writes `hello` as one frame.
pub(crate) async fn write_handshake(stream: &mut Stream, hello: &Handshake) -> anyhow::Result<()> {
    let mut out = BytesMut::new();
    let mut payload = BytesMut::new();
    hello.encode(&mut payload);
    encode_frame(&payload, &mut out);
    stream.write_all(&out).await?;
    // Over TLS the last record may sit in the session until flushed.
    stream.flush().await?;
    Ok(())
}

/// Reads the other side's handshake, or `None` if it closed the connection first. `buf` keeps whatever
/// was read past the handshake.
pub(crate) async fn read_handshake(
    stream: &mut Stream,
    buf: &mut BytesMut,
) -> anyhow::Result<Option<Handshake>> {
    match read_frame(stream, buf, MAX_HANDSHAKE_BYTES).await? {
        Some(frame) => Ok(Some(Handshake::decode(frame)?)),
        None => Ok(None),
    }
}

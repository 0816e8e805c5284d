//! Frame format of peer connections: `len u32 LE | crc32c u32 LE | payload[len]`, and how batches of
//! messages are packed into frames and read back.
//!
//! The CRC is cheap (hardware-assisted) and catches what TCP's 16-bit checksum lets through. A data
//! frame's payload is one or more messages back to back (see [`crate::wire`]).

use crate::wire::{decode_message, encode_message, encoded_len, WireError};
use anyhow::bail;
use bytes::{BufMut, Bytes, BytesMut};
use raftkv_raft::Message;
use raftkv_tls::Stream;
use tokio::io::AsyncReadExt;

/// Largest frame accepted or sent. Snapshots travel on snapshot streams, but a frame may still carry an
/// `InstallSnapshot` (the format allows it), so the limit stays generous; it still bounds what a confused
/// or hostile peer can make us buffer, and buffers only grow as bytes actually arrive.
pub const MAX_FRAME_BYTES: usize = 1 << 30;

/// Bytes before a frame's payload: length and CRC.
pub const FRAME_HEADER_LEN: usize = 8;

/// The writer closes a frame once it holds this many payload bytes, so one huge batch does not delay the
/// first message of the next; a single bigger message still goes alone.
const SOFT_FRAME_BYTES: usize = 1 << 20;

/// Reads grow the buffer at most this much at a time, so a frame's claimed length costs nothing until
/// its bytes actually arrive.
const READ_CHUNK: usize = 1 << 20;

/// Encodes `batch` as as few frames as the soft frame size allows, appended to `out`. Returns how many
/// messages were skipped because they alone exceed [`MAX_FRAME_BYTES`].
pub fn encode_batch(batch: &[Message], out: &mut BytesMut) -> usize {
    let mut oversized = 0;
    let mut open_frame: Option<usize> = None;
    for msg in batch {
        let len = encoded_len(msg);
        if len > MAX_FRAME_BYTES {
            oversized += 1;
            continue;
        }
        // A frame is only open once it holds a message, so a message bigger than the soft limit still
        // gets a frame of its own.
        if let Some(start) = open_frame {
            let payload_len = out.len() - start - FRAME_HEADER_LEN;
            if payload_len + len > SOFT_FRAME_BYTES {
                seal_frame(out, start);
                open_frame = None;
            }
        }
        if open_frame.is_none() {
            open_frame = Some(out.len());
            out.put_bytes(0, FRAME_HEADER_LEN);
        }
        encode_message(msg, out);
    }
    if let Some(start) = open_frame {
        seal_frame(out, start);
    }
    oversized
}

/// Fills in the header reserved at `start` for the payload that follows it.
fn seal_frame(out: &mut BytesMut, start: usize) {
    let payload = &out[start + FRAME_HEADER_LEN..];
    let len = payload.len() as u32;
    let crc = crc32c::crc32c(payload);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Appends one frame carrying `payload`.
pub fn encode_frame(payload: &[u8], out: &mut BytesMut) {
    out.put_u32_le(payload.len() as u32);
    out.put_u32_le(crc32c::crc32c(payload));
    out.put_slice(payload);
}

/// Reads one frame's payload, or `None` on a clean end of stream between frames. `buf` carries bytes
/// read past the frame over to the next call. The payload is split off `buf` without copying, so entry
/// data decoded from it shares the receive buffer.
pub(crate) async fn read_frame(
    stream: &mut Stream,
    buf: &mut BytesMut,
    max_len: usize,
) -> anyhow::Result<Option<Bytes>> {
    loop {
        let mut wanted = FRAME_HEADER_LEN;
        if buf.len() >= FRAME_HEADER_LEN {
            let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if len > max_len {
                bail!("frame of {len} bytes exceeds the limit of {max_len}");
            }
            wanted = FRAME_HEADER_LEN + len;
            if buf.len() >= wanted {
                let mut frame = buf.split_to(wanted);
                let header = frame.split_to(FRAME_HEADER_LEN);
                let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
                if crc32c::crc32c(&frame) != crc {
                    bail!("frame checksum mismatch");
                }
                return Ok(Some(frame.freeze()));
            }
        }
        buf.reserve((wanted - buf.len()).clamp(4096, READ_CHUNK));
        let read = match stream.read_buf(buf).await {
            Ok(read) => read,
            // A TLS peer that closes without close_notify: frames are self-delimiting and checked, so
            // between frames that is an ordinary end of stream, and within one it is caught below.
            Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(err) => return Err(err.into()),
        };
        if read == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            bail!("connection closed in the middle of a frame");
        }
    }
}

/// Decodes every message in one data frame's payload.
pub fn decode_frame(mut payload: Bytes) -> Result<Vec<Message>, WireError> {
    let mut messages = Vec::new();
    while !payload.is_empty() {
        messages.push(decode_message(&mut payload)?);
    }
    Ok(messages)
}

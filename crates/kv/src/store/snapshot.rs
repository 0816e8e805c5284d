//! Snapshot encoding of a whole [`Store`].
//!
//! Layout (integers little-endian):
//! `magic "RKVS" | format:u8=2 | applied_index:u64 | clock_ms:u64 | count:u64 | entries | sessions |
//! crc32c:u32` with each entry `version:u64 | expires_at_ms:u64 | key_len:u8 | key | value_len:u32 |
//! value`, and the session table as `SessionTable::encode` writes it. Format 1 (written before
//! sessions existed) has no session table and still restores.
//! The CRC-32C covers every byte before it. Entry order follows the hash table and is not
//! meaningful; restore validates every field as strictly as the log-entry decoder.

use super::entry::Entry;
use super::sessions::{SessionLimits, SessionTable};
use super::table;
use super::Store;
use crate::byte_reader::ByteReader;
use crate::decode_error::DecodeError;
use crate::limits::is_valid_key;

const MAGIC: &[u8; 4] = b"RKVS";
const FORMAT_V1: u8 = 1;
const FORMAT_WITH_SESSIONS: u8 = 2;
const HEADER_LEN: usize = 4 + 1 + 8 + 8 + 8;
const CHECKSUM_LEN: usize = 4;
/// Smallest possible encoded entry (one-byte key, empty value); bounds the pre-allocation a
/// hostile `count` can cause.
const MIN_ENTRY_LEN: usize = 8 + 8 + 1 + 1 + 4;
/// Bytes written between checksum updates: small enough to still be in the cache.
const CHECKSUM_CHUNK: usize = 64 * 1024;

impl Store {
    /// Appends the snapshot encoding of the whole store to `out`.
    pub fn snapshot(&self, out: &mut Vec<u8>) {
        let start = out.len();
        // Sized from the entries' slot lengths, without reading each entry's allocation.
        let payload: usize = self
            .entries
            .iter()
            .map(|e| MIN_ENTRY_LEN - 2 + e.key_and_value_len())
            .sum();
        out.reserve(HEADER_LEN + payload + CHECKSUM_LEN);
        out.extend_from_slice(MAGIC);
        out.push(FORMAT_WITH_SESSIONS);
        out.extend_from_slice(&self.applied_index.to_le_bytes());
        out.extend_from_slice(&self.clock_ms.to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        // The checksum is computed a chunk at a time, while the chunk just written is in cache.
        let mut checksum = 0;
        let mut summed = start;
        for entry in self.entries.iter_warmed() {
            out.extend_from_slice(&entry.version.to_le_bytes());
            out.extend_from_slice(&entry.expires_at_ms.to_le_bytes());
            // Entries only hold keys of at most 250 bytes and values below 4 GiB (checked on write).
            out.push(u8::try_from(entry.key().len()).unwrap_or(u8::MAX));
            out.extend_from_slice(entry.key());
            out.extend_from_slice(
                &u32::try_from(entry.value().len())
                    .unwrap_or(u32::MAX)
                    .to_le_bytes(),
            );
            out.extend_from_slice(entry.value());
            if out.len() - summed >= CHECKSUM_CHUNK {
                checksum = crc32c::crc32c_append(checksum, &out[summed..]);
                summed = out.len();
            }
        }
        self.sessions.encode(out);
        let checksum = crc32c::crc32c_append(checksum, &out[summed..]);
        out.extend_from_slice(&checksum.to_le_bytes());
    }

    /// Rebuilds a store from [`Store::snapshot`] output. Rejects anything corrupt, truncated or
    /// inconsistent; never panics.
    pub fn restore(data: &[u8]) -> Result<Store, DecodeError> {
        Store::restore_with_session_limits(data, SessionLimits::DEFAULT)
    }

    /// Checks a snapshot image's magic, format and checksum without decoding its entries; returns its
    /// applied index and key count.
    pub fn check_image(data: &[u8]) -> Result<(u64, u64), DecodeError> {
        let header = ImageHeader::read(data)?;
        Ok((header.applied_index, header.count))
    }

    /// [`Store::restore`] for a store made by [`Store::with_session_limits`].
    pub fn restore_with_session_limits(
        data: &[u8],
        limits: SessionLimits,
    ) -> Result<Store, DecodeError> {
        let ImageHeader {
            format,
            applied_index,
            clock_ms,
            count,
            mut reader,
        } = ImageHeader::read(data)?;
        let plausible = usize::try_from(count)
            .unwrap_or(usize::MAX)
            .min(reader.remaining() / MIN_ENTRY_LEN);
        let mut entries = table::Builder::new(plausible);
        for _ in 0..count {
            let version = reader.u64()?;
            let expires_at_ms = reader.u64()?;
            let key_len = usize::from(reader.u8()?);
            let key = reader.take(key_len)?;
            let value_len = usize::try_from(reader.u32()?).map_err(|_| DecodeError::Truncated)?;
            let value = reader.take(value_len)?;
            if !is_valid_key(key) {
                return Err(DecodeError::InvalidKey);
            }
            if version > applied_index {
                return Err(DecodeError::InvalidEntry);
            }
            let entry =
                Entry::new(key, value, version, expires_at_ms).ok_or(DecodeError::InvalidKey)?;
            entries
                .insert_new(entry)
                .map_err(|_| DecodeError::DuplicateKey)?;
        }
        let sessions = if format == FORMAT_WITH_SESSIONS {
            SessionTable::decode(&mut reader, limits, applied_index)?
        } else {
            SessionTable::new(limits)
        };
        reader.expect_end()?;
        Ok(Store {
            entries: entries.finish(),
            sessions,
            applied_index,
            clock_ms,
        })
    }
}

/// The fixed front of a snapshot image, checked (magic, format, checksum over the whole image), with a
/// reader positioned at the first entry.
struct ImageHeader<'a> {
    format: u8,
    applied_index: u64,
    clock_ms: u64,
    count: u64,
    reader: ByteReader<'a>,
}

impl<'a> ImageHeader<'a> {
    fn read(data: &'a [u8]) -> Result<ImageHeader<'a>, DecodeError> {
        if data.len() < HEADER_LEN + CHECKSUM_LEN {
            return Err(DecodeError::Truncated);
        }
        let (body, checksum) = data.split_at(data.len() - CHECKSUM_LEN);
        let mut reader = ByteReader::new(body);
        if reader.take(MAGIC.len())? != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let format = reader.u8()?;
        if format != FORMAT_V1 && format != FORMAT_WITH_SESSIONS {
            return Err(DecodeError::UnknownFormat(format));
        }
        if ByteReader::new(checksum).u32()? != crc32c::crc32c(body) {
            return Err(DecodeError::Checksum);
        }
        Ok(ImageHeader {
            format,
            applied_index: reader.u64()?,
            clock_ms: reader.u64()?,
            count: reader.u64()?,
            reader,
        })
    }
}

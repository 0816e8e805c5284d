//! The backup file: a point-in-time copy of a whole store, as `raftkv backup` writes it and
//! `raftkv restore` reads it.
//!
//! Layout (integers little-endian):
//! `magic "RKVBACKUP" | format:u8=1 | index:u64 | term:u64 | keys:u64 | created_ms:u64 |
//! cluster_id_len:u16 | cluster_id (UTF-8) | image_len:u64 | image | crc32c:u32`, where `image` is the
//! store's snapshot encoding ([`Store::snapshot`], itself checksummed) as of log index `index` (of term
//! `term`), and the final CRC-32C covers every byte before it. `created_ms` is the serving leader's wall
//! clock, for people; nothing decides anything by it.

use crate::byte_reader::ByteReader;
use crate::decode_error::DecodeError;
use crate::store::Store;

const MAGIC: &[u8; 9] = b"RKVBACKUP";
/// The format this release writes, and the newest it reads.
pub const BACKUP_FORMAT: u8 = 1;
const CHECKSUM_LEN: usize = 4;
/// Longest cluster id a header carries (the server's config allows 255 bytes).
const MAX_CLUSTER_ID_LEN: usize = 1024;

/// What a backup says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupHeader {
    pub format: u8,
    pub cluster_id: String,
    /// The log index the copy was taken at: it holds every write up to it.
    pub index: u64,
    /// The term of the entry at `index`.
    pub term: u64,
    /// Keys in the copy (expired ones whose memory was not reclaimed yet included).
    pub keys: u64,
    pub created_ms: u64,
}

/// Why a backup file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackupError {
    #[error("not a raftkv backup (bad magic number)")]
    NotABackup,
    #[error("backup format {0} is newer than this release reads (format {BACKUP_FORMAT}); use a newer raftkv")]
    NewerFormat(u8),
    #[error("the file is truncated or damaged ({0})")]
    Damaged(DecodeError),
    #[error("checksum mismatch: the file is damaged")]
    Checksum,
    #[error("the header does not match the data it holds ({0})")]
    Inconsistent(&'static str),
}

impl From<DecodeError> for BackupError {
    fn from(error: DecodeError) -> Self {
        BackupError::Damaged(error)
    }
}

/// Appends the backup of `store` (taken at `term`) to `out`.
pub fn write_backup(
    store: &Store,
    term: u64,
    cluster_id: &str,
    created_ms: u64,
    out: &mut Vec<u8>,
) {
    let start = out.len();
    let cluster_id = &cluster_id.as_bytes()[..cluster_id.len().min(MAX_CLUSTER_ID_LEN)];
    out.extend_from_slice(MAGIC);
    out.push(BACKUP_FORMAT);
    for word in [store.applied_index(), term, store.len() as u64, created_ms] {
        out.extend_from_slice(&word.to_le_bytes());
    }
    out.extend_from_slice(&(cluster_id.len() as u16).to_le_bytes());
    out.extend_from_slice(cluster_id);
    let length_at = out.len();
    out.extend_from_slice(&0u64.to_le_bytes());
    store.snapshot(out);
    let image_len = (out.len() - length_at - 8) as u64;
    out[length_at..length_at + 8].copy_from_slice(&image_len.to_le_bytes());
    let checksum = crc32c::crc32c(&out[start..]);
    out.extend_from_slice(&checksum.to_le_bytes());
}

/// Reads the header from the front of a backup (no checksum check: for a file still arriving).
pub fn read_header_prefix(data: &[u8]) -> Result<BackupHeader, BackupError> {
    read_header_prefix_len(data).map(|(header, _)| header)
}

/// The magic number and the format byte: the first checks, so that a file that is not a backup, or is
/// of a newer release, says so rather than "damaged".
fn read_format(data: &[u8]) -> Result<(u8, ByteReader<'_>), BackupError> {
    if data.len() < MAGIC.len() || &data[..MAGIC.len()] != MAGIC {
        return Err(BackupError::NotABackup);
    }
    let mut reader = ByteReader::new(&data[MAGIC.len()..]);
    let format = reader.u8()?;
    if format > BACKUP_FORMAT || format == 0 {
        return Err(BackupError::NewerFormat(format));
    }
    Ok((format, reader))
}

fn read_header_prefix_len(data: &[u8]) -> Result<(BackupHeader, usize), BackupError> {
    let (format, mut reader) = read_format(data)?;
    let index = reader.u64()?;
    let term = reader.u64()?;
    let keys = reader.u64()?;
    let created_ms = reader.u64()?;
    let id_len = usize::from(u16::from_le_bytes([reader.u8()?, reader.u8()?]));
    let cluster_id = String::from_utf8_lossy(reader.take(id_len)?).into_owned();
    let header = BackupHeader {
        format,
        cluster_id,
        index,
        term,
        keys,
        created_ms,
    };
    Ok((header, data.len() - reader.remaining()))
}

/// Checks a whole backup (checksum, header, that the image restores and agrees with the header) and
/// returns its header and the store it holds.
pub fn read_backup(data: &[u8]) -> Result<(BackupHeader, Store), BackupError> {
    let (header, image) = read_backup_header(data)?;
    let store = Store::restore(image)?;
    if store.applied_index() != header.index {
        return Err(BackupError::Inconsistent("index"));
    }
    if store.len() as u64 != header.keys {
        return Err(BackupError::Inconsistent("key count"));
    }
    Ok((header, store))
}

/// Checks the file's checksum, the image's own checksum, and that the header agrees with the image,
/// without decoding the image's entries (a node decodes them when it starts): returns the header and
/// the image's byte range in `data`.
pub fn check_backup(data: &[u8]) -> Result<(BackupHeader, std::ops::Range<usize>), BackupError> {
    let (header, image) = read_backup_header(data)?;
    let (index, keys) = Store::check_image(image)?;
    if index != header.index {
        return Err(BackupError::Inconsistent("index"));
    }
    if keys != header.keys {
        return Err(BackupError::Inconsistent("key count"));
    }
    let start = image.as_ptr() as usize - data.as_ptr() as usize;
    Ok((header, start..start + image.len()))
}

/// Checks the checksum and reads the header; returns it with the store image (not yet decoded).
pub fn read_backup_header(data: &[u8]) -> Result<(BackupHeader, &[u8]), BackupError> {
    read_format(data)?;
    if data.len() < MAGIC.len() + 1 + CHECKSUM_LEN {
        return Err(BackupError::Damaged(DecodeError::Truncated));
    }
    let (body, checksum) = data.split_at(data.len() - CHECKSUM_LEN);
    if ByteReader::new(checksum).u32()? != crc32c::crc32c(body) {
        return Err(BackupError::Checksum);
    }
    let (header, header_len) = read_header_prefix_len(body)?;
    let mut reader = ByteReader::new(&body[header_len..]);
    let image_len = usize::try_from(reader.u64()?).map_err(|_| DecodeError::Truncated)?;
    let image = reader.take(image_len)?;
    reader.expect_end()?;
    Ok((header, image))
}

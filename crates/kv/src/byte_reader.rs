//! Bounds-checked cursor over untrusted bytes (log entries, snapshots): every read either
//! succeeds or reports truncation, never panics.

use std::ops::Range;

use crate::decode_error::DecodeError;

pub struct ByteReader<'a> {
    data: &'a [u8],
    position: usize,
}

impl<'a> ByteReader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        ByteReader { data, position: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.data.len() - self.position
    }

    /// The range of the next `len` bytes, so callers holding a `Bytes` can slice it without copying.
    pub fn take_range(&mut self, len: usize) -> Result<Range<usize>, DecodeError> {
        if len > self.remaining() {
            return Err(DecodeError::Truncated);
        }
        let range = self.position..self.position + len;
        self.position += len;
        Ok(range)
    }

    pub fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        let range = self.take_range(len)?;
        Ok(&self.data[range])
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        let mut raw = [0u8; 4];
        raw.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(raw))
    }

    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(raw))
    }

    pub fn expect_end(&self) -> Result<(), DecodeError> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }
}

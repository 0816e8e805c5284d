//! A deterministic 64-bit digest of the store. It combines per-entry hashes with a wrapping sum, so
//! it does not depend on the hash table's iteration order and needs no sort. The hash is defined
//! here (not std's `DefaultHasher`, whose algorithm may change between releases) so digests stay
//! comparable across builds.

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[derive(Debug, Clone, Copy)]
pub struct DigestHasher {
    state: u64,
}

impl DigestHasher {
    pub fn new() -> Self {
        DigestHasher {
            state: 0x6A09_E667_F3BC_C908,
        }
    }

    pub fn word(mut self, word: u64) -> Self {
        self.state = splitmix64(self.state ^ word);
        self
    }

    /// Length-prefixed, so that ("ab", "c") and ("a", "bc") hash differently.
    pub fn bytes(mut self, bytes: &[u8]) -> Self {
        self = self.word(bytes.len() as u64);
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self = self.word(u64::from_le_bytes(word));
        }
        self
    }

    pub fn finish(self) -> u64 {
        self.state
    }
}

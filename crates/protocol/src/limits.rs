//! Protocol limits and the field validation shared by the server's parser, the log-entry and snapshot
//! decoders and the client, so that both sides and the state machine obey the same rules.

/// Longest key, in bytes.
pub const MAX_KEY_LEN: usize = 250;

/// Largest exptime accepted: ten years of seconds. Larger values are almost certainly client bugs
/// (e.g. an absolute Unix time), and bounding them keeps `stamp + exptime * 1000` far from overflow.
pub const MAX_EXPTIME_SECS: u32 = 315_360_000;

/// Longest request line (without its CR LF). The longest valid header, a `cas` with a 250-byte key
/// and `noreply`, is about 300 bytes; anything past this limit is not a request.
pub const MAX_LINE_LEN: usize = 1024;

/// A key is 1..=250 bytes of printable ASCII without spaces (0x21..=0x7E).
pub fn is_valid_key(key: &[u8]) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_LEN && key.iter().all(|b| (0x21..=0x7E).contains(b))
}

pub fn is_valid_exptime(exptime: u32) -> bool {
    exptime <= MAX_EXPTIME_SECS
}

/// The instant (ms) at which a value written at `stamp_ms` with `exptime` seconds stops existing,
/// or `None` if it never expires.
pub fn expiry_instant(stamp_ms: u64, exptime: u32) -> Option<u64> {
    if exptime == 0 {
        None
    } else {
        Some(stamp_ms.saturating_add(u64::from(exptime) * 1000))
    }
}

/// Largest value a `set` or `cas` may carry unless the server configures otherwise.
pub const DEFAULT_MAX_VALUE_SIZE: usize = 1 << 20;

/// Largest session id or sequence number a request may carry. Far beyond any real value, and it
/// keeps `seq + window` arithmetic free of overflow.
pub const MAX_SESSION_NUMBER: u64 = 1 << 62;

/// Longest reply header line a client accepts. The longest legal one is a redirect with a 253-byte
/// host name; anything longer means the stream is not speaking this protocol.
pub const MAX_REPLY_LINE: usize = 512;

/// Why a key cannot be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key is empty")]
    Empty,
    #[error("key is {0} bytes long; the maximum is 250")]
    TooLong(usize),
    #[error("key contains byte 0x{0:02x}; only printable ASCII without spaces is allowed")]
    BadByte(u8),
}

/// Checks a key against the protocol's rule: 1 to 250 bytes of printable ASCII, no whitespace.
pub fn validate_key(key: &[u8]) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(KeyError::TooLong(key.len()));
    }
    match key.iter().find(|b| !b.is_ascii_graphic()) {
        Some(&bad) => Err(KeyError::BadByte(bad)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_keys() {
        assert_eq!(validate_key(&[b'k'; 250]), Ok(()));
        assert_eq!(validate_key(&[b'k'; 251]), Err(KeyError::TooLong(251)));
        assert_eq!(validate_key(b""), Err(KeyError::Empty));
        assert_eq!(validate_key(b"a b"), Err(KeyError::BadByte(b' ')));
        assert_eq!(validate_key(b"a\x7f"), Err(KeyError::BadByte(0x7f)));
    }

    #[test]
    fn validate_key_agrees_with_is_valid_key() {
        for key in [
            &b""[..],
            b"a",
            b"a b",
            b"a\x7f",
            &[b'k'; 250],
            &[b'k'; 251],
            b"\x21\x7e",
        ] {
            assert_eq!(validate_key(key).is_ok(), is_valid_key(key), "{key:?}");
        }
    }
}

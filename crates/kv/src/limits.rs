//! Protocol limits and the field validation shared by the parser, the log-entry decoder and the
//! snapshot decoder, so that whatever reaches the state machine obeys the same rules.

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

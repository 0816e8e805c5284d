//! Parsing of the individual tokens of a request line.

/// Splits a line on runs of spaces. Tabs and other bytes stay inside tokens, where key or number
/// validation rejects them.
pub fn tokens(line: &[u8]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut position = 0;
    std::iter::from_fn(move || {
        while position < line.len() && line[position] == b' ' {
            position += 1;
        }
        if position >= line.len() {
            return None;
        }
        let start = position;
        while position < line.len() && line[position] != b' ' {
            position += 1;
        }
        Some((start, position))
    })
}

/// What a numeric field turned out to be. `TooLarge` is kept apart from `Invalid` because an
/// oversized numbytes is fatal while a garbled one is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Number {
    Valid(u64),
    TooLarge,
    Invalid,
}

/// Plain ASCII decimal: no sign, no spaces, leading zeros allowed.
pub fn parse_decimal(token: &[u8]) -> Number {
    if token.is_empty() {
        return Number::Invalid;
    }
    let mut value: u64 = 0;
    let mut overflowed = false;
    for &byte in token {
        if !byte.is_ascii_digit() {
            return Number::Invalid;
        }
        match value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(byte - b'0')))
        {
            Some(next) => value = next,
            None => overflowed = true,
        }
    }
    if overflowed {
        Number::TooLarge
    } else {
        Number::Valid(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_fields() {
        assert_eq!(parse_decimal(b"0"), Number::Valid(0));
        assert_eq!(parse_decimal(b"007"), Number::Valid(7));
        assert_eq!(
            parse_decimal(b"18446744073709551615"),
            Number::Valid(u64::MAX)
        );
        assert_eq!(parse_decimal(b"18446744073709551616"), Number::TooLarge);
        assert_eq!(parse_decimal(b"99999999999999999999999"), Number::TooLarge);
        assert_eq!(parse_decimal(b""), Number::Invalid);
        assert_eq!(parse_decimal(b"-1"), Number::Invalid);
        assert_eq!(parse_decimal(b"+1"), Number::Invalid);
        assert_eq!(parse_decimal(b"1x"), Number::Invalid);
        assert_eq!(parse_decimal(b"1\t"), Number::Invalid);
    }

    #[test]
    fn tokens_split_on_space_runs() {
        let line = b"  set  k\t 1 ";
        let found: Vec<&[u8]> = tokens(line).map(|(s, e)| &line[s..e]).collect();
        assert_eq!(found, vec![&b"set"[..], b"k\t", b"1"]);
        assert_eq!(tokens(b"").count(), 0);
        assert_eq!(tokens(b"   ").count(), 0);
    }
}

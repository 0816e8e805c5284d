//! Redis's glob patterns (KEYS, SCAN MATCH): `*` any run of bytes, `?` one byte, `[abc]`, `[^a]`
//! and `[a-z]` one byte of (or not of) a set, `\x` the byte `x` itself.
//!
//! Matching never recurses and takes O(pattern × key) steps at worst: every token but `*` matches
//! exactly one byte, so a failed match only needs to restart after the last `*` seen, one byte
//! further along the key.

/// Whether `key` matches `pattern` as Redis's `stringmatchlen` (case-sensitive) decides.
pub fn matches(pattern: &[u8], key: &[u8]) -> bool {
    let (mut p, mut k) = (0, 0);
    // Where to resume after the last `*`: its pattern position and the key position it covers to.
    let mut star: Option<(usize, usize)> = None;
    loop {
        if p < pattern.len() && pattern[p] == b'*' {
            while p < pattern.len() && pattern[p] == b'*' {
                p += 1;
            }
            star = Some((p, k));
            continue;
        }
        if k == key.len() && p == pattern.len() {
            return true;
        }
        if k < key.len() && p < pattern.len() {
            if let Some(next) = token_matches(pattern, p, key[k]) {
                p = next;
                k += 1;
                continue;
            }
        }
        // A mismatch (or one side ended): let the last `*` swallow one more byte.
        match star {
            Some((star_p, star_k)) if star_k < key.len() => {
                star = Some((star_p, star_k + 1));
                p = star_p;
                k = star_k + 1;
            }
            _ => return false,
        }
    }
}

/// If the token at `pattern[p]` (not `*`) matches `byte`, the position after the token.
fn token_matches(pattern: &[u8], p: usize, byte: u8) -> Option<usize> {
    match pattern[p] {
        b'?' => Some(p + 1),
        b'\\' if p + 1 < pattern.len() => (pattern[p + 1] == byte).then_some(p + 2),
        b'[' => class_matches(pattern, p + 1, byte),
        literal => (literal == byte).then_some(p + 1),
    }
}

/// A `[...]` class starting after its `[`: whether `byte` is in it, and the position after its `]`
/// (or the pattern's end, as Redis treats an unclosed class).
fn class_matches(pattern: &[u8], mut p: usize, byte: u8) -> Option<usize> {
    let negate = pattern.get(p) == Some(&b'^');
    if negate {
        p += 1;
    }
    let mut found = false;
    while p < pattern.len() && pattern[p] != b']' {
        if pattern[p] == b'\\' && p + 1 < pattern.len() {
            found |= pattern[p + 1] == byte;
            p += 2;
        } else if p + 2 < pattern.len() && pattern[p + 1] == b'-' {
            let (low, high) = (
                pattern[p].min(pattern[p + 2]),
                pattern[p].max(pattern[p + 2]),
            );
            found |= (low..=high).contains(&byte);
            p += 3;
        } else {
            found |= pattern[p] == byte;
            p += 1;
        }
    }
    let after = (p + 1).min(pattern.len());
    (found != negate).then_some(after)
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn redis_documented_examples() {
        for key in ["hello", "hallo", "hxllo"] {
            assert!(matches(b"h?llo", key.as_bytes()));
        }
        for key in ["hllo", "heeeello", "hello"] {
            assert!(matches(b"h*llo", key.as_bytes()));
        }
        assert!(matches(b"h[ae]llo", b"hello"));
        assert!(matches(b"h[ae]llo", b"hallo"));
        assert!(!matches(b"h[ae]llo", b"hillo"));
        assert!(matches(b"h[^e]llo", b"hallo"));
        assert!(!matches(b"h[^e]llo", b"hello"));
        assert!(matches(b"h[a-b]llo", b"hbllo"));
        assert!(!matches(b"h[a-b]llo", b"hcllo"));
        assert!(matches(b"h\\*llo", b"h*llo"));
        assert!(!matches(b"h\\*llo", b"hello"));
    }

    #[test]
    fn stars_backtrack() {
        assert!(matches(b"*", b""));
        assert!(matches(b"*", b"anything"));
        assert!(matches(b"a*b*c", b"aXbYbZc"));
        assert!(!matches(b"a*b*c", b"aXbYbZ"));
        assert!(matches(b"*abc", b"ababc"));
        assert!(matches(b"**x**", b"x"));
        assert!(!matches(b"", b"x"));
        assert!(matches(b"[z-a]", b"m"));
        assert!(matches(b"[abc", b"b"));
    }

    #[test]
    fn pathological_pattern_is_quick() {
        let key = vec![b'a'; 250];
        let pattern = b"*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b";
        assert!(!matches(pattern, &key));
    }
}

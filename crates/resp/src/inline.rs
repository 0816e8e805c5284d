//! Splitting an inline command line into words as Redis does (its `sdssplitargs`): words apart by
//! white space, `"..."` with C-like escapes (`\n`, `\r`, `\t`, `\b`, `\a`, `\xHH`, `\<any>`) and
//! `'...'` with only `\'`; a closing quote must end its word.

/// The words of `line`, or `None` if its quotes are unbalanced (Redis's "unbalanced quotes"). As
/// in Redis (a C string), a NUL byte ends the line.
pub(crate) fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let line = line.split(|b| *b == 0).next().unwrap_or_default();
    let mut words = Vec::new();
    let mut at = 0;
    loop {
        while line.get(at).is_some_and(|b| is_space(*b)) {
            at += 1;
        }
        if at >= line.len() {
            return Some(words);
        }
        let mut word = Vec::new();
        loop {
            match line.get(at) {
                None => break,
                // Only these end a word (vertical tab and form feed do not, though they are skipped
                // between words).
                Some(b' ' | b'\n' | b'\r' | b'\t') => break,
                Some(b'"') => at = double_quoted(line, at + 1, &mut word)?,
                Some(b'\'') => at = single_quoted(line, at + 1, &mut word)?,
                Some(b) => {
                    word.push(*b);
                    at += 1;
                }
            }
        }
        words.push(word);
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// After a closing quote at `close`: the word must end there.
fn closed(line: &[u8], close: usize) -> Option<usize> {
    match line.get(close + 1) {
        Some(b) if !is_space(*b) => None,
        _ => Some(close + 1),
    }
}

fn double_quoted(line: &[u8], mut at: usize, word: &mut Vec<u8>) -> Option<usize> {
    loop {
        match *line.get(at)? {
            b'"' => return closed(line, at),
            b'\\' => {
                let hex = line.get(at + 1..at + 4).filter(|h| {
                    h[0] == b'x' && h[1].is_ascii_hexdigit() && h[2].is_ascii_hexdigit()
                });
                if let Some(hex) = hex {
                    let text = std::str::from_utf8(&hex[1..]).ok()?;
                    word.push(u8::from_str_radix(text, 16).ok()?);
                    at += 4;
                    continue;
                }
                let escaped = *line.get(at + 1)?;
                word.push(match escaped {
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'b' => 0x08,
                    b'a' => 0x07,
                    other => other,
                });
                at += 2;
            }
            b => {
                word.push(b);
                at += 1;
            }
        }
    }
}

fn single_quoted(line: &[u8], mut at: usize, word: &mut Vec<u8>) -> Option<usize> {
    loop {
        match *line.get(at)? {
            b'\\' if line.get(at + 1) == Some(&b'\'') => {
                word.push(b'\'');
                at += 2;
            }
            b'\'' => return closed(line, at),
            b => {
                word.push(b);
                at += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split_args;

    fn split(line: &str) -> Option<Vec<String>> {
        split_args(line.as_bytes()).map(|words| {
            words
                .into_iter()
                .map(|w| String::from_utf8(w).unwrap())
                .collect()
        })
    }

    #[test]
    fn words_quotes_and_escapes_as_redis_reads_them() {
        assert_eq!(
            split("  set  k   v "),
            Some(vec!["set".into(), "k".into(), "v".into()])
        );
        assert_eq!(
            split("set k 'a b'"),
            Some(vec!["set".into(), "k".into(), "a b".into()])
        );
        assert_eq!(split(r#"set k "x\ny\x41\"""#).unwrap()[2], "x\nyA\"");
        assert_eq!(split(r"echo 'it\'s'").unwrap()[1], "it's");
        assert_eq!(split(r#"echo a"b c""#).unwrap()[1], "ab c");
        assert_eq!(split(r#"echo "\q""#).unwrap()[1], "q");
        assert_eq!(split(""), Some(vec![]));
        assert_eq!(split(r#"echo """#).unwrap()[1], "");
        let words = vec!["echo".to_string(), "a\x0bb".into(), "c".into()];
        assert_eq!(split("echo a\x0bb \x0c c"), Some(words));
        assert_eq!(split("echo a\0b c"), Some(vec!["echo".into(), "a".into()]));
    }

    #[test]
    fn unbalanced_quotes_are_refused() {
        assert_eq!(split(r#"set k "abc"#), None);
        assert_eq!(split("set k 'abc"), None);
        assert_eq!(split(r#"set k "a"b"#), None);
        assert_eq!(split("set k 'a'b"), None);
        assert_eq!(split(r#"set k "a\"#), None);
    }
}

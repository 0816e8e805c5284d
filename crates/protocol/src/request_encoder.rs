//! Writing requests as a client does: each command's exact bytes, appended to a reusable buffer
//! without going through `fmt` (the load generator sends a few hundred thousand per second).

/// Appends `n` in decimal without going through `fmt`, which matters at a few hundred thousand
/// requests per second.
pub fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

fn push_command(out: &mut Vec<u8>, verb: &[u8], key: &[u8]) {
    out.extend_from_slice(verb);
    out.push(b' ');
    out.extend_from_slice(key);
}

fn push_value(out: &mut Vec<u8>, value: &[u8]) {
    out.push(b' ');
    push_decimal(out, value.len() as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends `set <key> <exptime> <numbytes>\r\n<value>\r\n`. The caller validates the fields.
pub fn encode_set(out: &mut Vec<u8>, key: &[u8], exptime: u32, value: &[u8]) {
    push_command(out, b"set", key);
    out.push(b' ');
    push_decimal(out, u64::from(exptime));
    push_value(out, value);
}

/// Appends `cas <key> <exptime> <version> <numbytes>\r\n<value>\r\n`.
pub fn encode_cas(out: &mut Vec<u8>, key: &[u8], exptime: u32, version: u64, value: &[u8]) {
    push_command(out, b"cas", key);
    out.push(b' ');
    push_decimal(out, u64::from(exptime));
    out.push(b' ');
    push_decimal(out, version);
    push_value(out, value);
}

/// Appends `get <key>\r\n`.
pub fn encode_get(out: &mut Vec<u8>, key: &[u8]) {
    push_command(out, b"get", key);
    out.extend_from_slice(b"\r\n");
}

/// Appends `getm <key>\r\n`.
pub fn encode_getm(out: &mut Vec<u8>, key: &[u8]) {
    push_command(out, b"getm", key);
    out.extend_from_slice(b"\r\n");
}

/// Appends `delete <key>\r\n`.
pub fn encode_delete(out: &mut Vec<u8>, key: &[u8]) {
    push_command(out, b"delete", key);
    out.extend_from_slice(b"\r\n");
}

/// Appends `register\r\n`.
pub fn encode_register(out: &mut Vec<u8>) {
    out.extend_from_slice(b"register\r\n");
}

/// Appends `session <id> <seq> `: followed by a write's encoding, it puts that write in a session.
pub fn encode_session_prefix(out: &mut Vec<u8>, session: u64, seq: u64) {
    out.extend_from_slice(b"session ");
    push_decimal(out, session);
    out.push(b' ');
    push_decimal(out, seq);
    out.push(b' ');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_requests() {
        let mut out = Vec::new();
        encode_cas(&mut out, b"k", 10, 42, b"a\r\nb");
        encode_get(&mut out, b"k");
        encode_getm(&mut out, b"k");
        encode_delete(&mut out, b"k");
        encode_register(&mut out);
        encode_session_prefix(&mut out, 7, 3);
        encode_delete(&mut out, b"k");
        assert_eq!(
            out,
            b"cas k 10 42 4\r\na\r\nb\r\nget k\r\ngetm k\r\ndelete k\r\nregister\r\nsession 7 3 delete k\r\n"
        );
        let mut n = Vec::new();
        push_decimal(&mut n, u64::MAX);
        assert_eq!(n, u64::MAX.to_string().as_bytes());
    }
}

//! The same command script against a real Redis 7 (`redis-server`, when installed; `.ci/run` installs
//! it where it can) and against raftkv's Redis port, reply for reply, byte for byte. Only commands
//! raftkv supports, with keys valid on both. Skips with a message where `redis-server` is missing.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// Each command as its words; replies are compared whole.
const SCRIPT: &[&[&str]] = &[
    &["PING"],
    &["PING", "hello"],
    &["ECHO", "a b"],
    &["SELECT", "0"],
    &["SET", "k", "v1"],
    &["GET", "k"],
    &["GET", "missing"],
    &["SET", "k", "v2", "EX", "100"],
    &["GET", "k"],
    &["SET", "p", "0", "PX", "100000"],
    &["SETEX", "e", "100", "x"],
    &["SETEX", "e", "0", "x"],
    &["MGET", "k", "missing", "e"],
    &["EXISTS", "k", "missing", "k"],
    &["STRLEN", "k"],
    &["STRLEN", "missing"],
    &["SET", "s", "This is a string"],
    &["GETRANGE", "s", "0", "3"],
    &["GETRANGE", "s", "-3", "-1"],
    &["GETRANGE", "s", "10", "100"],
    &["GETRANGE", "missing", "0", "-1"],
    &["TYPE", "s"],
    &["TYPE", "missing"],
    &["TTL", "s"],
    &["TTL", "missing"],
    &["INCR", "n"],
    &["INCRBY", "n", "41"],
    &["DECR", "n"],
    &["DECRBY", "n", "-10"],
    &["INCR", "s"],
    &["INCRBY", "n", "x"],
    &["SET", "big", "9223372036854775807"],
    &["INCR", "big"],
    &["APPEND", "a", "Hello"],
    &["APPEND", "a", " World"],
    &["GET", "a"],
    &["MSET", "m1", "1", "m2", "2"],
    &["MGET", "m1", "m2"],
    &["MSETNX", "m2", "x", "m3", "y"],
    &["MSETNX", "m3", "x", "m4", "y"],
    &["MSET", "m1"],
    &["DEL", "m1", "m1", "missing"],
    &["UNLINK", "m2"],
    &["EXISTS", "m1", "m2"],
    &["GET"],
    &["SET", "k"],
    &["NOSUCH", "a", "b"],
    &["nosuch"],
    // A long name is cut at 128 bytes in the error.
    &["nosuchxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "arg"],
    &["SET", "k", "v", "BOGUS"],
    &["SET", "nx", "1", "NX"],
    &["SET", "nx", "2", "NX"],
    &["GET", "nx"],
    &["SET", "xx", "1", "XX"],
    &["GET", "xx"],
    &["SET", "nx", "3", "XX", "GET"],
    &["SET", "nx", "4", "NX", "GET"],
    &["GET", "nx"],
    &["SET", "nx", "5", "GET", "PX", "100000"],
    &["SET", "nx", "6", "KEEPTTL"],
    &["SET", "nx", "7", "NX", "XX"],
    &["SET", "nx", "7", "EX", "0"],
    &["SET", "nx", "7", "EX", "10", "PX", "10"],
    &["SET", "nx", "7", "EX", "x"],
    &["SET", "far", "v", "EXAT", "4102444800"],
    &["SET", "past", "v", "PXAT", "1000"],
    &["GET", "past"],
    &["SETNX", "sn", "a"],
    &["SETNX", "sn", "b"],
    &["GETSET", "sn", "c"],
    &["GETSET", "nothing", "c"],
    &["GETDEL", "sn"],
    &["GETDEL", "sn"],
    &["TTL", "nothing"],
    &["SET", "e1", "v"],
    &["EXPIRE", "e1", "100"],
    &["TTL", "e1"],
    &["PERSIST", "e1"],
    &["PERSIST", "e1"],
    &["TTL", "e1"],
    &["PTTL", "e1"],
    &["PTTL", "missing"],
    &["EXPIRE", "missing", "10"],
    &["EXPIRE", "e1", "-1"],
    &["GET", "e1"],
    &["SET", "e2", "v"],
    &["PEXPIREAT", "e2", "1000"],
    &["EXISTS", "e2"],
    &["EXPIREAT", "missing", "1"],
    &["EXPIRE", "e3", "x"],
    &["SET", "e4", "v", "EX", "50"],
    &["PEXPIRE", "e4", "200000"],
    &["TTL", "e4"],
    &["PERSIST", "missing"],
    // EXPIRE's options.
    &["SET", "o1", "v"],
    &["EXPIRE", "o1", "100", "XX"],
    &["EXPIRE", "o1", "100", "NX"],
    &["EXPIRE", "o1", "100", "GT"],
    &["EXPIRE", "o1", "100", "LT"],
    &["TTL", "o1"],
    &["EXPIRE", "o1", "200", "XX"],
    &["EXPIRE", "o1", "100", "GT"],
    &["EXPIRE", "o1", "300", "GT"],
    &["EXPIRE", "o1", "50", "XX", "LT"],
    &["TTL", "o1"],
    &["EXPIRE", "o1", "10", "NX", "XX"],
    &["EXPIRE", "o1", "10", "GT", "LT"],
    &["EXPIRE", "o1", "10", "bogus"],
    &["EXPIRE", "o1", "x", "bogus"],
    // GETEX, SETRANGE, INCRBYFLOAT.
    &["SET", "gx", "v"],
    &["GETEX", "gx"],
    &["GETEX", "gx", "EX", "100"],
    &["TTL", "gx"],
    &["GETEX", "gx", "PERSIST"],
    &["TTL", "gx"],
    &["GETEX", "gx", "PX", "0"],
    &["GETEX", "gx", "BOGUS"],
    &["GETEX", "missing", "EX", "10"],
    &["SET", "sr", "Hello World"],
    &["SETRANGE", "sr", "6", "Redis"],
    &["GET", "sr"],
    &["SETRANGE", "sr2", "3", "abc"],
    &["GET", "sr2"],
    &["SETRANGE", "sr3", "0", ""],
    &["EXISTS", "sr3"],
    &["SETRANGE", "sr", "-1", "x"],
    &["SETRANGE", "sr", "9223372036854775807", "x"],
    &["SETRANGE", "sr", "9223372036854775807", ""],
    &["SETRANGE", "sr", "536870911", "xy"],
    &["SET", "f", "10.50"],
    &["INCRBYFLOAT", "f", "0.1"],
    &["INCRBYFLOAT", "f", "-5"],
    &["SET", "f2", "5.0e3"],
    &["INCRBYFLOAT", "f2", "2.0e2"],
    &["INCRBYFLOAT", "fnew", "3"],
    &["INCRBYFLOAT", "s", "1"],
    &["INCRBYFLOAT", "f", "x"],
    // RENAME.
    &["SET", "r1", "v"],
    &["RENAME", "r1", "r2"],
    &["GET", "r2"],
    &["EXISTS", "r1"],
    &["RENAME", "r1", "r3"],
    &["SET", "r4", "w"],
    &["RENAMENX", "r2", "r4"],
    &["RENAMENX", "r2", "r5"],
    &["GET", "r5"],
    &["RENAME", "r5", "r5"],
    // Transactions.
    &["MULTI"],
    &["SET", "t1", "a"],
    &["INCR", "t2"],
    &["GET", "t1"],
    &["PING"],
    &["EXEC"],
    &["EXEC"],
    &["DISCARD"],
    &["MULTI"],
    &["MULTI"],
    &["SET", "t1", "b"],
    &["DISCARD"],
    &["GET", "t1"],
    &["MULTI"],
    &["SET", "t1"],
    &["SET", "t1", "c"],
    &["EXEC"],
    &["GET", "t1"],
    &["WATCH", "t1"],
    &["SET", "t1", "d"],
    &["MULTI"],
    &["SET", "t1", "e"],
    &["EXEC"],
    &["GET", "t1"],
    &["WATCH", "t1"],
    &["MULTI"],
    &["SET", "t1", "f"],
    &["EXEC"],
    &["GET", "t1"],
    &["UNWATCH"],
    &["MULTI"],
    &["EXEC"],
    // Errors found only when a queued command runs are answered in their place.
    &["MULTI"],
    &["SET", "t3", "1"],
    &["INCRBY", "t3", "abc"],
    &["SET", "t3", "2", "BOGUS"],
    &["INCR", "t3"],
    &["EXEC"],
    // RESET leaves MULTI and forgets watches.
    &["WATCH", "t3"],
    &["MULTI"],
    &["SET", "t3", "x"],
    &["RESET"],
    &["EXEC"],
    &["GET", "t3"],
    // Key space walks (one key, so order cannot differ).
    &["FLUSHDB"],
    &["KEYS", "*"],
    &["RANDOMKEY"],
    &["SCAN", "0"],
    &["SET", "only", "1"],
    &["KEYS", "*"],
    &["KEYS", "o?ly"],
    &["KEYS", "x*"],
    &["RANDOMKEY"],
    &["SCAN", "0", "MATCH", "on*", "COUNT", "100000"],
    &["SCAN", "x"],
    &["FLUSHALL"],
    &["DBSIZE"],
    // Integer arguments are read strictly (no '+', no leading zeros, no '-0'), as Redis reads them.
    &["SET", "n", "5"],
    &["INCRBY", "n", "+1"],
    &["INCRBY", "n", "01"],
    &["INCRBY", "n", "-0"],
    &["INCRBY", "n", "0"],
    &["DECRBY", "n", "-9223372036854775808"],
    &["GETRANGE", "n", "00", "1"],
    &["EXPIRE", "n", "+5"],
    &["SELECT", "00"],
    &["SETEX", "n", "x", "v"],
    &["SETEX", "n", "9223372036854775807", "v"],
    &["PSETEX", "n", "9223372036854775807", "v"],
    &["PSETEX", "n", "-1", "v"],
    // SET's options: a repeated one is allowed (the last wins), a conflicting one is a syntax error,
    // and the expiry's argument is checked only once the options parse.
    &["SET", "so", "v", "EX", "100", "EX", "200"],
    &["TTL", "so"],
    &["SET", "so", "v", "NX", "NX"],
    &["SET", "so", "v", "XX", "XX", "GET", "GET"],
    &["SET", "so", "v", "KEEPTTL", "KEEPTTL"],
    &["TTL", "so"],
    &["SET", "so", "v", "EX", "x", "EX", "10"],
    &["SET", "so", "v", "EX", "x", "BOGUS"],
    &["SET", "so", "v", "PX", "10", "EX", "10"],
    &["SET", "so", "v", "KEEPTTL", "EX", "10"],
    &["SET", "so", "v", "EX"],
    &["GETEX", "so", "EX", "100", "EX", "50"],
    &["TTL", "so"],
    &["GETEX", "so", "PERSIST", "PERSIST"],
    &["TTL", "so"],
    &["GETEX", "so", "PERSIST", "EX", "10"],
    &["GETEX", "so", "KEEPTTL"],
    // GETEX looks the key up before it checks the expiry: an absent key is null regardless.
    &["GETEX", "nosuchkey", "EX", "0"],
    &["GETEX", "nosuchkey", "EX", "abc"],
    &["GETEX", "nosuchkey", "BOGUS"],
    &["GETEX", "so", "EX", "0"],
    &["GETEX", "so", "PX", "abc"],
    // INCRBYFLOAT's infinities.
    &["SET", "fl", "1.5"],
    &["INCRBYFLOAT", "fl", "inf"],
    &["INCRBYFLOAT", "fl", "-Infinity"],
    &["INCRBYFLOAT", "fl", "nan"],
    &["GET", "fl"],
    // Connection and server commands' errors.
    &["HELLO", "x"],
    &["HELLO", "2", "BOGUS"],
    &["HELLO", "2", "AUTH", "nobody", "pw"],
    &["HELLO", "2", "AUTH", "nobody", "pw", "BOGUS"],
    &["HELLO", "2", "SETNAME", "a b"],
    &["CONFIG", "SET", "a", "b", "c"],
    &["AUTH"],
    &["AUTH", "pw"],
    &["AUTH", "default", "pw"],
    &["AUTH", "nobody", "pw"],
    &["AUTH", "a", "b", "c"],
    &["CLIENT"],
    &["CLIENT", "BOGUS"],
    &["CLIENT", "SETNAME"],
    &["CLIENT", "SETNAME", "a", "b"],
    &["CLIENT", "SETNAME", "a b"],
    &["CLIENT", "SETNAME", "fine"],
    &["CLIENT", "GETNAME"],
    &["CLIENT", "GETNAME", "x"],
    &["CLIENT", "ID", "x"],
    &["COMMAND", "BOGUS"],
    &["COMMAND", "COUNT", "x"],
    &["CONFIG"],
    &["CONFIG", "BOGUS"],
    &["CONFIG", "GET"],
    &["CONFIG", "SET", "nosuchsetting", "1"],
    &["WAIT", "x", "0"],
    &["WAIT", "1", "-1"],
    &["WAIT", "1", "x"],
    &["WAIT", "1"],
    &["CONFIG", "GET", "maxmemory-policy"],
    &["CONFIG", "GET", "MAXCLIENTS"],
    &["CONFIG", "GET", "timeout", "timeout"],
    &["CONFIG", "GET", "nosuch*"],
    &["CONFIG", "RESETSTAT", "x"],
    &["CONFIG", "RESETSTAT"],
];

fn encode(words: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", words.len()).into_bytes();
    for w in words {
        out.extend_from_slice(format!("${}\r\n{w}\r\n", w.len()).as_bytes());
    }
    out
}

/// Inline commands (what a person types into `telnet`), quoted as Redis's `sdssplitargs` reads them.
const INLINE: &[u8] = b"PING\r\n\
    set inline 'a b'\r\n\
    get inline\r\n\
    set inline \"x\\ny\\x41\\\"\"\r\n\
    get inline\r\n\
    \r\n\
    ECHO   'it\\'s'  \r\n\
    ECHO a\"b c\"\n\
    set inline \"unbalanced\r\n";

/// Sends the whole script, then reads until every reply has arrived (the replies' end is marked by a
/// final `ECHO`).
fn run(addr: &str) -> Vec<u8> {
    let mut request = Vec::new();
    for words in SCRIPT {
        request.extend(encode(words));
    }
    request.extend(encode(&["ECHO", "end-of-script"]));
    exchange(addr, &request, b"$13\r\nend-of-script\r\n")
}

/// Sends `request`, then reads until the replies end with `end` or the connection closes.
fn exchange(addr: &str, request: &[u8], end: &[u8]) -> Vec<u8> {
    let mut conn = TcpStream::connect(addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(request).expect("send");
    let mut replies = Vec::new();
    let mut buf = [0u8; 4096];
    while end.is_empty() || !replies.ends_with(end) {
        let n = conn.read(&mut buf).expect("read");
        if n == 0 && end.is_empty() {
            break;
        }
        assert!(n > 0, "closed early: {}", show(&replies));
        replies.extend_from_slice(&buf[..n]);
    }
    replies
}

/// Splits a reply stream into lines for a readable diff.
fn lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .split("\r\n")
        .map(str::to_string)
        .collect()
}

struct Redis(Child);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn replies_match_redis_byte_for_byte() {
    let Ok(path) = which("redis-server") else {
        eprintln!("SKIPPED: redis-server is not installed (apt-get install redis-server)");
        return;
    };
    let dir = tempfile::tempdir().expect("temporary directory");
    let port = free_port();
    let _redis = Redis(
        Command::new(path)
            .args([
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server"),
    );
    let redis_addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(&redis_addr).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut cluster = Cluster::start(3, FAST_TUNABLES);
    let leader = cluster.wait_leader();
    let raftkv_addr = &cluster.nodes[leader].resp_addr;
    same_replies(&run(&redis_addr), &run(raftkv_addr));
    // The unbalanced quotes end both connections after an error: read until each closes.
    let expected = exchange(&redis_addr, INLINE, b"");
    assert!(
        show(&expected).contains("unbalanced quotes"),
        "Redis read the inline script to its end: {}",
        show(&expected)
    );
    same_replies(&expected, &exchange(raftkv_addr, INLINE, b""));
}

fn same_replies(expected: &[u8], actual: &[u8]) {
    let (expected, actual) = (lines(expected), lines(actual));
    for (i, (e, a)) in expected.iter().zip(&actual).enumerate() {
        assert_eq!(a, e, "reply line {i} differs from Redis");
    }
    assert_eq!(actual.len(), expected.len());
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .ok_or(())
}

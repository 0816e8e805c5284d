//! `raftkv client` end to end: every command, its output and its exit code.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};

use support::spawner::{Cluster, RAFTKV};

fn client(addr: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(RAFTKV)
        .args(["client", "--addr", addr])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run raftkv client");
    let mut input = child.stdin.take().expect("piped stdin");
    input.write_all(stdin).expect("write stdin");
    drop(input);
    child.wait_with_output().expect("raftkv client output")
}

fn code(output: &Output) -> i32 {
    output.status.code().expect("exited normally")
}

fn version_of(output: &Output) -> u64 {
    let text = String::from_utf8_lossy(&output.stdout);
    text.trim()
        .strip_prefix("OK ")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "expected `OK <version>`, got {text:?} / {}",
                String::from_utf8_lossy(&output.stderr)
            )
        })
}

#[test]
fn every_command_prints_what_scripts_rely_on_and_exits_with_its_code() {
    let cluster = Cluster::start(3);
    let addr = cluster.addr_arg();
    let run = |args: &[&str]| client(&addr, args, b"");

    let set = run(&["set", "color", "blue"]);
    assert_eq!(code(&set), 0, "{set:?}");
    let version = version_of(&set);

    let get = run(&["get", "color"]);
    assert_eq!((code(&get), get.stdout.as_slice()), (0, &b"blue"[..]));

    let getm = run(&["getm", "color"]);
    assert_eq!(code(&getm), 0);
    assert_eq!(
        getm.stdout,
        format!("version={version} exptime=0 bytes=4\nblue").into_bytes()
    );

    let stale = run(&["cas", "color", &(version + 1000).to_string(), "red"]);
    assert_eq!(code(&stale), 3, "version mismatch");
    let cas = run(&["cas", "color", &version.to_string(), "red", "--ttl", "100"]);
    assert_eq!(code(&cas), 0, "{cas:?}");
    assert!(version_of(&cas) > version);
    let getm = run(&["getm", "color"]);
    let header = String::from_utf8_lossy(&getm.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    assert!(
        header.contains("exptime=100") || header.contains("exptime=99"),
        "{header}"
    );

    // Values are bytes: line breaks and NULs survive, via stdin.
    let raw = b"line one\r\nline two\0\n";
    let from_stdin = client(&addr, &["set", "raw", "-"], raw);
    assert_eq!(code(&from_stdin), 0, "{from_stdin:?}");
    assert_eq!(run(&["get", "raw"]).stdout, raw);

    let delete = run(&["delete", "color"]);
    assert_eq!(
        (code(&delete), delete.stdout.as_slice()),
        (0, &b"DELETED\n"[..])
    );
    assert_eq!(code(&run(&["delete", "color"])), 1);
    assert_eq!(code(&run(&["get", "color"])), 1);
    assert_eq!(code(&run(&["getm", "color"])), 1);
    assert_eq!(code(&run(&["cas", "color", "1", "x"])), 1);
    assert_eq!(code(&run(&["get", "two words"])), 2, "invalid key");

    // Any single node is enough: followers redirect to the leader.
    for node in &cluster.addrs {
        let through = client(node, &["get", "raw"], b"");
        assert_eq!(
            (code(&through), through.stdout.as_slice()),
            (0, &raw[..]),
            "via {node}"
        );
    }
}

#[test]
fn the_prompt_runs_commands_with_quotes_and_history() {
    let cluster = Cluster::start(3);
    let script = b"set greeting \"hello world\"\nget greeting\n!!\nhistory\nget missing\nquit\n";
    let output = client(&cluster.addr_arg(), &[], script);
    assert_eq!(code(&output), 0);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.starts_with("OK "), "{stdout}");
    assert_eq!(stdout.matches("hello world\n").count(), 2, "{stdout}");
    assert!(
        stdout.contains("   1  set greeting \"hello world\""),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("ERR_NOT_FOUND"));
}

#[test]
fn usage_errors_exit_2() {
    let output = client("127.0.0.1:1", &["set", "k"], b"");
    assert_eq!(code(&output), 2);
    let output = client("127.0.0.1:1", &["set", "bad\x01key", "v"], b"");
    assert_eq!(code(&output), 2);
    let help = client("127.0.0.1:1", &["--help"], b"");
    assert!(String::from_utf8_lossy(&help.stdout).contains("Exit codes:"));
}

#[test]
fn no_reachable_node_exits_4() {
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let output = client(&closed, &["--timeout", "0.3", "get", "k"], b"");
    assert_eq!(code(&output), 4, "{output:?}");
}

#[test]
fn a_write_whose_reply_is_lost_exits_5() {
    // A node that opens the client's session, reads its write, hangs up without answering, and is
    // gone: the write is retried in its session until --timeout, and its outcome stays unknown.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let mut request = [0u8; 64];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(b"SESSION 1\r\n");
            let _ = stream.read(&mut request);
        }
    });
    let output = client(&address, &["--timeout", "1", "set", "k", "v"], b"");
    assert_eq!(code(&output), 5, "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("outcome unknown"));
}

//! `raftkv cluster` and `raftkv server` as processes: bad flags and configs fail fast with a message naming
//! the culprit; a local cluster starts, elects a leader and stops cleanly on SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const RAFTKV: &str = env!("CARGO_BIN_EXE_raftkv");

fn raftkv(args: &[&str]) -> Output {
    Command::new(RAFTKV)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run raftkv")
}

/// Runs raftkv and asserts it fails with `expected` somewhere in its stderr.
fn assert_fails_with(args: &[&str], expected: &str) {
    let output = raftkv(args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "{args:?} should fail; stderr: {stderr}"
    );
    assert!(
        stderr.contains(expected),
        "{args:?}: expected {expected:?} in stderr: {stderr}"
    );
}

fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("cluster.toml");
    std::fs::write(&path, text).expect("write config");
    path.to_str().expect("utf-8 path").to_string()
}

const TWO_NODES: &str = r#"
cluster_id = "cli-test"

[[nodes]]
id = 1
client_addr = "127.0.0.1:19001"
peer_addr = "127.0.0.1:20001"
data_dir = "node1"

[[nodes]]
id = 2
client_addr = "127.0.0.1:19002"
peer_addr = "127.0.0.1:20002"
data_dir = "node2"
"#;

#[test]
fn cluster_rejects_bad_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().join("c");
    let d = d.to_str().expect("utf-8");
    assert_fails_with(&["cluster", "--nodes", "0", "--dir", d], "--nodes");
    assert_fails_with(&["cluster", "--nodes", "three", "--dir", d], "--nodes");
    assert_fails_with(&["cluster", "--port", "70000", "--dir", d], "--port");
    assert_fails_with(&["cluster", "--port", "0", "--dir", d], "--port");
    assert_fails_with(
        &[
            "cluster",
            "--nodes",
            "5",
            "--port",
            "65533",
            "--peer-port",
            "1000",
            "--dir",
            d,
        ],
        "--port 65533",
    );
    assert_fails_with(
        &[
            "cluster",
            "--nodes",
            "3",
            "--port",
            "30000",
            "--peer-port",
            "30002",
            "--dir",
            d,
        ],
        "--peer-port",
    );
    assert_fails_with(&["cluster", "--bogus"], "--bogus");
    assert!(
        !Path::new(d).exists(),
        "nothing is created for rejected flags"
    );
}

#[test]
fn cluster_refuses_flags_that_contradict_an_existing_cluster() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_config(dir.path(), TWO_NODES);
    let d = dir.path().to_str().expect("utf-8");
    assert_fails_with(
        &["cluster", "--dir", d, "--nodes", "3"],
        "--nodes 3 conflicts",
    );
    assert_fails_with(
        &["cluster", "--dir", d, "--port", "9000"],
        "--port 9000 conflicts",
    );
    assert_fails_with(
        &["cluster", "--dir", d, "--peer-port", "20002"],
        "--peer-port 20002 conflicts",
    );
    std::fs::write(
        dir.path().join("cluster.toml"),
        TWO_NODES.replace("20002", "nope"),
    )
    .expect("write");
    assert_fails_with(&["cluster", "--dir", d], "nodes[1].peer_addr");
}

#[test]
fn server_rejects_bad_configs_and_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), TWO_NODES);
    assert_fails_with(
        &[
            "server",
            "--config",
            "/nonexistent/cluster.toml",
            "--id",
            "1",
        ],
        "/nonexistent/cluster.toml",
    );
    assert_fails_with(&["server", "--config", &config, "--id", "9"], "--id 9");
    assert_fails_with(&["server", "--config", &config, "--id", "x"], "--id");
    assert_fails_with(&["server", "--config", &config], "--id");
    assert_fails_with(
        &[
            "server",
            "--config",
            &config,
            "--id",
            "1",
            "--heartbeat-ms",
            "600",
        ],
        "--heartbeat-ms 600",
    );
    assert_fails_with(
        &[
            "server",
            "--config",
            &config,
            "--id",
            "1",
            "--election-timeout-ms",
            "10",
        ],
        "--election-timeout-ms 10",
    );
    assert_fails_with(
        &[
            "server",
            "--config",
            &config,
            "--id",
            "1",
            "--client-addr",
            "nowhere",
        ],
        "--client-addr nowhere",
    );
    assert_fails_with(
        &[
            "server",
            "--config",
            &config,
            "--id",
            "2",
            "--client-addr",
            "127.0.0.1:19001",
        ],
        "already used",
    );

    let broken = dir.path().join("broken");
    std::fs::create_dir(&broken).expect("mkdir");
    let bad_addr = write_config(&broken, &TWO_NODES.replace("127.0.0.1:20002", "x"));
    assert_fails_with(
        &["server", "--config", &bad_addr, "--id", "1"],
        "nodes[1].peer_addr: invalid address 'x'",
    );
    let typo = write_config(
        &broken,
        &format!("{TWO_NODES}\n[tunables]\nheartbeat = 5\n"),
    );
    assert_fails_with(&["server", "--config", &typo, "--id", "1"], "heartbeat");
}

/// `count` consecutive ports that are free right now, below the kernel's ephemeral range (32768..),
/// where the nodes' own outgoing connections could take one first.
fn free_port_run(count: u16, avoid: &[u16]) -> u16 {
    let seed = std::process::id() as u64 ^ Instant::now().elapsed().as_nanos() as u64;
    let mut base = 20_000 + (seed % 10_000) as u16;
    loop {
        let all_free = (base..base + count).all(|port| {
            !avoid.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
        });
        if all_free {
            return base;
        }
        base = 20_000 + (base - 20_000 + 97) % 10_000;
    }
}

/// The node logs, for failure messages.
fn node_logs(cluster_dir: &Path) -> String {
    (1..=3)
        .map(|id| {
            let log = std::fs::read_to_string(cluster_dir.join(format!("node{id}.log")))
                .unwrap_or_default();
            format!("--- node{id}.log ---\n{log}")
        })
        .collect()
}

fn pids_in(log_dir: &Path) -> Vec<u32> {
    // The spawner's children are the only `raftkv server` processes whose config lives in `log_dir`.
    let needle = log_dir.join("cluster.toml");
    let needle = needle.to_str().expect("utf-8");
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(" server ") && cmdline.contains(needle) {
                pids.push(pid);
            }
        }
    }
    pids
}

#[test]
fn cluster_starts_elects_a_leader_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster_dir = dir.path().join("cluster");
    let port = free_port_run(3, &[]);
    let peer_port = free_port_run(3, &[port, port + 1, port + 2]);
    let taken: Vec<u16> = (0..3).flat_map(|i| [port + i, peer_port + i]).collect();
    let http_port = free_port_run(3, &taken);
    let mut spawner = Command::new(RAFTKV)
        .args(["cluster", "--nodes", "3", "--dir"])
        .arg(&cluster_dir)
        .args([
            "--port",
            &port.to_string(),
            "--peer-port",
            &peer_port.to_string(),
            "--http-port",
            &http_port.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn raftkv cluster");

    let (lines_tx, lines) = mpsc::channel();
    let stdout = spawner.stdout.take().expect("piped stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    let leader_line = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.starts_with("leader: node ") => break line,
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = spawner.kill();
                panic!(
                    "no leader line within 20 s; output so far: {seen:#?}\n{}",
                    node_logs(&cluster_dir)
                );
            }
        }
    };
    let output = seen.join("\n");
    for id in 1..=3u16 {
        assert!(
            output.contains(&format!("127.0.0.1:{}", port + id - 1)),
            "table lists node {id}: {output}"
        );
        assert!(
            output.contains(&format!("127.0.0.1:{}", peer_port + id - 1)),
            "table lists node {id}: {output}"
        );
        assert!(
            output.contains(&format!("node{id}.log")),
            "table lists node {id}'s log: {output}"
        );
    }
    let leader_ports: Vec<String> = (0..3).map(|i| format!("127.0.0.1:{}", port + i)).collect();
    assert!(
        leader_ports
            .iter()
            .any(|addr| leader_line.ends_with(addr.as_str())),
        "{leader_line}"
    );
    assert_eq!(
        pids_in(&cluster_dir).len(),
        3,
        "three servers running\n{}",
        node_logs(&cluster_dir)
    );

    // SAFETY: sends a signal to our own child process, which has not been reaped yet.
    unsafe {
        libc::kill(spawner.id() as libc::pid_t, libc::SIGTERM);
    }
    let stop_deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = spawner.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > stop_deadline {
            let _ = spawner.kill();
            panic!("the spawner did not exit within 20 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "exit status {status}\n{}",
        node_logs(&cluster_dir)
    );
    assert!(pids_in(&cluster_dir).is_empty(), "children are gone");
    assert!(cluster_dir.join("cluster.toml").exists());
}

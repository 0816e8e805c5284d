//! Start-up refusals: a bad config, bad flags, an occupied port (client and peer), a second
//! server on the same data directory. Each is refused with a clear message naming the culprit and a
//! non-zero exit status; a server already running is not disturbed and its data is not corrupted.

mod support;

use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;
use support::*;

const EXIT_LIMIT: Duration = Duration::from_secs(15);

/// Runs `raftkv server` with `args`, expects a non-zero exit with `needle` in its stderr.
fn expect_refusal(args: &[&str], needle: &str) -> String {
    let finished = run_raftkv(args, EXIT_LIMIT)
        .unwrap_or_else(|| panic!("raftkv {args:?} still running after {EXIT_LIMIT:?}"));
    assert!(
        !finished.status.success() && finished.status.code().is_some(),
        "raftkv {args:?}: exit status {} (want a non-zero exit code)\nstderr: {}",
        finished.status,
        finished.stderr
    );
    assert!(
        finished.stderr.contains(needle),
        "raftkv {args:?}: stderr does not mention {needle:?}:\n{}",
        finished.stderr
    );
    assert!(
        !finished.stderr.contains("panicked"),
        "raftkv {args:?} panicked:\n{}",
        finished.stderr
    );
    finished.stderr
}

fn node_toml(id: u64, client: &str, peer: &str, data_dir: &Path) -> String {
    format!(
        "[[nodes]]\nid = {id}\nclient_addr = \"{client}\"\npeer_addr = \"{peer}\"\ndata_dir = \"{}\"\n\n",
        data_dir.display()
    )
}

fn addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

#[test]
fn bad_config_files_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name);
    let (c1, p1, c2, p2) = (addr(), addr(), addr(), addr());
    let good_nodes = node_toml(1, &c1, &p1, &d("n1")) + &node_toml(2, &c2, &p2, &d("n2"));
    let cases: Vec<(&str, String, &str)> = vec![
        ("syntax", "cluster_id = \n".into(), "cluster.toml"),
        ("unknown field", format!("cluster_id = \"t\"\nbogus = 1\n{good_nodes}"), "bogus"),
        ("missing cluster_id", good_nodes.clone(), "cluster_id"),
        ("empty cluster_id", format!("cluster_id = \" \"\n{good_nodes}"), "cluster_id: must not be empty"),
        ("no nodes", "cluster_id = \"t\"\nnodes = []\n".into(), "nodes: at least one node"),
        ("id 0", format!("cluster_id = \"t\"\n{}", node_toml(0, &c1, &p1, &d("n1"))), "nodes[0].id"),
        (
            "duplicate id",
            format!("cluster_id = \"t\"\n{}{}", node_toml(1, &c1, &p1, &d("n1")), node_toml(1, &c2, &p2, &d("n2"))),
            "nodes[1].id: duplicate id 1",
        ),
        (
            "bad client address",
            format!("cluster_id = \"t\"\n{}", node_toml(1, "localhost", &p1, &d("n1"))),
            "nodes[0].client_addr",
        ),
        (
            "peer port 0",
            format!("cluster_id = \"t\"\n{}", node_toml(1, &c1, "127.0.0.1:0", &d("n1"))),
            "nodes[0].peer_addr",
        ),
        (
            "address used twice",
            format!("cluster_id = \"t\"\n{}{}", node_toml(1, &c1, &p1, &d("n1")), node_toml(2, &c1, &p2, &d("n2"))),
            "nodes[1].client_addr",
        ),
        (
            "data_dir used twice",
            format!("cluster_id = \"t\"\n{}{}", node_toml(1, &c1, &p1, &d("n1")), node_toml(2, &c2, &p2, &d("n1"))),
            "nodes[1].data_dir",
        ),
        (
            "empty data_dir",
            format!("cluster_id = \"t\"\n{}", node_toml(1, &c1, &p1, Path::new(""))),
            "nodes[0].data_dir",
        ),
        (
            "heartbeat not below the election timeout",
            format!("cluster_id = \"t\"\n[tunables]\nheartbeat_ms = 500\nelection_timeout_ms = 500\n{good_nodes}"),
            "tunables.election_timeout_ms",
        ),
        ("tick 0", format!("cluster_id = \"t\"\n[tunables]\ntick_ms = 0\n{good_nodes}"), "tunables.tick_ms"),
        (
            "max value size 0",
            format!("cluster_id = \"t\"\n[tunables]\nmax_value_size = 0\n{good_nodes}"),
            "tunables.max_value_size",
        ),
        (
            "wrong type",
            format!("cluster_id = \"t\"\n[tunables]\nheartbeat_ms = \"fast\"\n{good_nodes}"),
            "heartbeat_ms",
        ),
        (
            "unknown tunable",
            format!("cluster_id = \"t\"\n[tunables]\nheartbeat = 5\n{good_nodes}"),
            "heartbeat",
        ),
    ];
    let config = d("cluster.toml");
    let config_arg = config.to_str().unwrap();
    for (name, text, needle) in &cases {
        std::fs::write(&config, text).unwrap();
        let stderr = expect_refusal(&["server", "--config", config_arg, "--id", "1"], needle);
        eprintln!("{name}: {}", stderr.trim());
        // Refused before anything starts: no data directory was created.
        assert!(!d("n1").exists(), "{name}: a data directory was created");
    }
    expect_refusal(
        &[
            "server",
            "--config",
            d("missing.toml").to_str().unwrap(),
            "--id",
            "1",
        ],
        "cannot read config file",
    );
}

#[test]
fn bad_flags_are_refused_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cluster.toml");
    let toml = format!(
        "cluster_id = \"t\"\n{}{}",
        node_toml(1, &addr(), &addr(), &dir.path().join("n1")),
        node_toml(2, &addr(), &addr(), &dir.path().join("n2"))
    );
    std::fs::write(&config, toml).unwrap();
    let c = config.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--config", c, "--id", "9"], "--id 9: no such node"),
        (vec!["--config", c, "--id", "abc"], "--id"),
        (vec!["--config", c, "--id", "-1"], "-1"),
        (vec!["--config", c], "--id"),
        (vec!["--id", "1"], "--config"),
        (vec!["--config", c, "--id", "1", "--bogus"], "--bogus"),
        (
            vec!["--config", c, "--id", "1", "--tick-ms", "abc"],
            "--tick-ms",
        ),
        (
            vec!["--config", c, "--id", "1", "--heartbeat-ms", "0"],
            "--heartbeat-ms 0",
        ),
        (
            vec!["--config", c, "--id", "1", "--election-timeout-ms", "10"],
            "--election-timeout-ms 10",
        ),
        (
            vec!["--config", c, "--id", "1", "--client-addr", "nonsense"],
            "--client-addr nonsense",
        ),
        (
            vec!["--config", c, "--id", "1", "--peer-addr", "127.0.0.1:0"],
            "--peer-addr 127.0.0.1:0",
        ),
        (
            vec!["--config", c, "--id", "1", "--max-value-size", "0"],
            "--max-value-size 0",
        ),
        (
            vec!["--config", c, "--id", "1", "--max-connections", "0"],
            "--max-connections 0",
        ),
    ];
    for (flags, needle) in &cases {
        let mut args = vec!["server"];
        args.extend(flags);
        let stderr = expect_refusal(&args, needle);
        eprintln!("{flags:?}: {}", stderr.lines().next().unwrap_or(""));
        assert!(
            !dir.path().join("n1").exists(),
            "{flags:?}: a data directory was created"
        );
    }
}

/// Occupied client and peer ports (by a foreign socket and by a running node), and a second server
/// on a running node's data directory: each is refused, and the running node keeps serving with its
/// data intact (also after a crash and restart).
#[test]
fn occupied_ports_and_a_shared_data_dir_are_refused() {
    let mut cluster = Cluster::start(1, FAST_TUNABLES);
    let mut client = cluster.client();
    let v1 = client.set_retry("precious", b"data", Duration::from_secs(10));

    let dir = tempfile::tempdir().unwrap();
    let other_config = dir.path().join("other.toml");
    let write_other = |client: &str, peer: &str, data_dir: &Path| {
        let toml = format!(
            "cluster_id = \"other\"\n{}",
            node_toml(1, client, peer, data_dir)
        );
        std::fs::write(&other_config, toml).unwrap();
    };
    let other = other_config.to_str().unwrap();
    let args = ["server", "--config", other, "--id", "1"];

    // A port held by some other program.
    let foreign = TcpListener::bind("127.0.0.1:0").unwrap();
    let foreign_addr = foreign.local_addr().unwrap().to_string();
    write_other(&foreign_addr, &addr(), &dir.path().join("a"));
    expect_refusal(
        &args,
        &format!("cannot listen for clients on {foreign_addr}"),
    );
    write_other(&addr(), &foreign_addr, &dir.path().join("b"));
    expect_refusal(
        &args,
        &format!("cannot listen for peers on peer_addr {foreign_addr}"),
    );
    drop(foreign);

    // The running node's client port, then its peer port.
    let running_client = cluster.nodes[0].client_addr.clone();
    let running_peer = cluster.nodes[0].peer_addr.clone();
    write_other(&running_client, &addr(), &dir.path().join("c"));
    expect_refusal(
        &args,
        &format!("cannot listen for clients on {running_client}"),
    );
    write_other(&addr(), &running_peer, &dir.path().join("d"));
    expect_refusal(
        &args,
        &format!("cannot listen for peers on peer_addr {running_peer}"),
    );

    // The running node's data directory: with other ports, and with the very same command line.
    let data_dir = cluster.nodes[0].data_dir.clone();
    write_other(&addr(), &addr(), &data_dir);
    expect_refusal(&args, "already in use");
    let config = cluster.config.to_str().unwrap().to_string();
    expect_refusal(
        &["server", "--config", &config, "--id", "1"],
        "already in use",
    );
    expect_refusal(
        &[
            "server",
            "--config",
            other,
            "--id",
            "1",
            "--data-dir",
            data_dir.to_str().unwrap(),
        ],
        "already in use",
    );

    // The running node never noticed: it serves, and its data survives a crash and a restart.
    assert!(cluster.is_running(0), "the running node died");
    let reply = client.call_retry(b"getm precious\r\n", Duration::from_secs(10));
    assert_eq!(
        show(&reply),
        show(format!("VALUE {v1} 0 4\r\ndata\r\n").as_bytes())
    );
    let v2 = client.set_retry("later", b"more", Duration::from_secs(10));
    cluster.kill(0);
    cluster.start_node(0);
    cluster.wait_leader();
    let mut client = cluster.client();
    let reply = client.call_retry(b"getm precious\r\n", Duration::from_secs(10));
    assert_eq!(
        show(&reply),
        show(format!("VALUE {v1} 0 4\r\ndata\r\n").as_bytes())
    );
    let reply = client.call_retry(b"getm later\r\n", Duration::from_secs(10));
    assert_eq!(
        show(&reply),
        show(format!("VALUE {v2} 0 4\r\nmore\r\n").as_bytes())
    );
}

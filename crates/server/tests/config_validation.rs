//! Cluster configuration: parsing, defaults, path resolution, and errors that name the bad field.

use raftkv_server::config::{ClusterConfig, Tunables};
use std::path::Path;

const THREE_NODES: &str = r#"
cluster_id = "test"

[[nodes]]
id = 1
client_addr = "127.0.0.1:9001"
peer_addr = "127.0.0.1:10001"
data_dir = "node1"

[[nodes]]
id = 2
client_addr = "127.0.0.1:9002"
peer_addr = "127.0.0.1:10002"
data_dir = "/var/lib/raftkv/node2"

[[nodes]]
id = 3
client_addr = "localhost:9003"
peer_addr = "[::1]:10003"
data_dir = "node3"
"#;

fn write_config(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cluster.toml");
    std::fs::write(&path, text).expect("write config");
    (dir, path)
}

fn load_err(text: &str) -> String {
    let (_dir, path) = write_config(text);
    format!(
        "{:#}",
        ClusterConfig::load(&path).expect_err("config should be rejected")
    )
}

#[test]
fn loads_with_defaults_and_resolves_relative_data_dirs() {
    let (dir, path) = write_config(THREE_NODES);
    let config = ClusterConfig::load(&path).expect("valid config");
    assert_eq!(config.cluster_id, "test");
    assert_eq!(config.nodes.len(), 3);
    let defaults = Tunables::default();
    assert_eq!(config.tunables.election_timeout_ms, 500);
    assert_eq!(config.tunables.heartbeat_ms, defaults.heartbeat_ms);
    assert_eq!(config.tunables.max_value_size, 1 << 20);
    assert_eq!(
        config.node(1).expect("node 1").data_dir,
        dir.path().join("node1")
    );
    assert_eq!(
        config.node(2).expect("node 2").data_dir,
        Path::new("/var/lib/raftkv/node2")
    );
    assert!(config.node(4).is_none());
}

#[test]
fn to_toml_round_trips() {
    let (_dir, path) = write_config(THREE_NODES);
    let config = ClusterConfig::load(&path).expect("valid config");
    let text = config.to_toml();
    let (_dir2, path2) = write_config(&text);
    let again = ClusterConfig::load(&path2).expect("re-parses");
    assert_eq!(again.to_toml(), text);
}

#[test]
fn tunables_can_be_partially_overridden() {
    let text = format!("{THREE_NODES}\n[tunables]\nheartbeat_ms = 20\nelection_timeout_ms = 200\n");
    let (_dir, path) = write_config(&text);
    let config = ClusterConfig::load(&path).expect("valid");
    assert_eq!(config.tunables.heartbeat_ms, 20);
    assert_eq!(config.tunables.election_timeout_ms, 200);
    assert_eq!(config.tunables.tick_ms, 10);
}

#[test]
fn errors_name_the_bad_field() {
    let cases: Vec<(String, &str)> = vec![
        (
            THREE_NODES.replace("peer_addr = \"127.0.0.1:10002\"", "peer_addr = \"x\""),
            "nodes[1].peer_addr: invalid address 'x'",
        ),
        (
            THREE_NODES.replace("127.0.0.1:9002", "127.0.0.1:0"),
            "nodes[1].client_addr",
        ),
        (
            THREE_NODES.replace("127.0.0.1:9002", "127.0.0.1:99999"),
            "nodes[1].client_addr",
        ),
        (
            THREE_NODES.replace("127.0.0.1:9002", "::1:9002"),
            "nodes[1].client_addr",
        ),
        (
            THREE_NODES.replace("id = 3", "id = 2"),
            "nodes[2].id: duplicate id 2",
        ),
        (
            THREE_NODES.replace("id = 1", "id = 0"),
            "nodes[0].id: must be non-zero",
        ),
        (
            THREE_NODES.replace("127.0.0.1:10002", "127.0.0.1:9001"),
            "nodes[1].peer_addr: address '127.0.0.1:9001' is already used by nodes[0].client_addr",
        ),
        (
            THREE_NODES.replace("\"node3\"", "\"node1\""),
            "nodes[2].data_dir",
        ),
        (
            THREE_NODES.replace("cluster_id = \"test\"", "cluster_id = \"\""),
            "cluster_id",
        ),
        (
            format!("{THREE_NODES}\n[tunables]\nheartbeat_ms = 500\n"),
            "tunables.election_timeout_ms",
        ),
        (
            format!("{THREE_NODES}\n[tunables]\ntick_ms = 0\n"),
            "tunables.tick_ms",
        ),
        (
            format!("{THREE_NODES}\n[tunables]\ntick_ms = 100\n"),
            "tunables.heartbeat_ms",
        ),
        (
            format!("{THREE_NODES}\n[tunables]\nmax_value_size = 0\n"),
            "tunables.max_value_size",
        ),
        (
            format!("{THREE_NODES}\n[tunables]\nmax_connections = 0\n"),
            "tunables.max_connections",
        ),
        (
            format!("{THREE_NODES}\n[tunables]\nheartbeat_msec = 5\n"),
            "heartbeat_msec",
        ),
        (
            "cluster_id = \"test\"\nnodes = []\n".to_string(),
            "nodes: at least one node",
        ),
        ("cluster_id = \"test\"\n".to_string(), "nodes"),
        ("cluster_id = ".to_string(), "cluster.toml"),
    ];
    for (text, expected) in cases {
        let message = load_err(&text);
        assert!(
            message.contains(expected),
            "expected {expected:?} in {message:?}"
        );
    }
}

#[test]
fn missing_file_is_a_clear_error() {
    let err =
        ClusterConfig::load(Path::new("/nonexistent/raftkv/cluster.toml")).expect_err("missing");
    assert!(format!("{err:#}").contains("/nonexistent/raftkv/cluster.toml"));
}

#[test]
fn single_node_cluster_is_valid() {
    let (_dir, path) = write_config(
        "cluster_id = \"solo\"\n[[nodes]]\nid = 9\nclient_addr = \"127.0.0.1:9000\"\npeer_addr = \"127.0.0.1:10000\"\ndata_dir = \"d\"\n",
    );
    let config = ClusterConfig::load(&path).expect("valid");
    assert_eq!(config.node_ids(), vec![9]);
}

/// Nodes on different hosts may use the same data directory path (every container of a compose file
/// mounts its volume at /var/lib/raftkv); bind addresses come from `listen_host`.
#[test]
fn the_deployment_file_loads_hosts_share_paths_and_listen_host_binds() {
    let deploy = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/cluster.toml");
    let config = ClusterConfig::load(Path::new(deploy)).expect("deploy/cluster.toml is valid");
    assert_eq!(config.node_ids(), vec![1, 2, 3]);
    let node = config.node(2).expect("node 2");
    assert_eq!(node.client_addr, "raftkv-2:9000");
    assert_eq!(node.bind_addr(&node.client_addr), "0.0.0.0:9000");
    assert_eq!(node.bind_addr(&node.peer_addr), "0.0.0.0:10000");
    // On one host, the same path twice is still refused.
    let same_host = THREE_NODES.replace("\"node3\"", "\"node1\"");
    assert!(load_err(&same_host).contains("nodes[2].data_dir"));
    let bad = std::fs::read_to_string(deploy).expect("read").replacen(
        "listen_host = \"0.0.0.0\"",
        "listen_host = \"not a host\"",
        1,
    );
    assert!(
        load_err(&bad).contains("nodes[0].listen_host"),
        "{}",
        load_err(&bad)
    );
}

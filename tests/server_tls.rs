//! TLS with real processes: a cluster whose nodes speak mutual TLS, with certificates made by
//! `raftkv certs`, refuses strangers on its peer ports (no certificate, a certificate from another CA,
//! a valid certificate claiming another node's id, plain text) while writes keep being acknowledged;
//! a client port that demands TLS and client certificates refuses the same strangers and serves a
//! real client; certificates rotate without a restart.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use raftkv_server::transport::encode_frame;
use raftkv_server::wire::{Handshake, StreamKind, PROTOCOL_VERSION};
use raftkv_tls::rustls::pki_types::ServerName;
use raftkv_tls::rustls::ClientConfig;
use raftkv_tls::tokio_rustls::TlsConnector;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn log_of(cluster: &Cluster, i: usize) -> String {
    String::from_utf8_lossy(&std::fs::read(&cluster.nodes[i].log).unwrap_or_default()).into_owned()
}

/// Runs `raftkv certs` for the cluster's file; with `update`, the file is rewritten to use the files.
fn make_certs(cluster: &Cluster, out: &Path, update: bool) {
    let config = cluster.config.to_str().expect("utf-8 path");
    let out_arg = out.to_str().expect("utf-8 path");
    let mut args = vec!["certs", "--config", config, "--out", out_arg];
    if update {
        args.push("--update-config");
    }
    let finished = run_raftkv(&args, Duration::from_secs(30)).expect("raftkv certs finished");
    assert!(
        finished.status.success(),
        "raftkv certs failed: {}",
        finished.stderr
    );
}

fn set_client_tls(cluster: &Cluster, mode: &str) {
    let text = std::fs::read_to_string(&cluster.config).expect("read the config");
    let text = text.replace("client = \"off\"", &format!("client = \"{mode}\""));
    std::fs::write(&cluster.config, text).expect("write the config");
}

struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    fn pair(&self, name: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("{name}.pem")),
            self.dir.join(format!("{name}-key.pem")),
        )
    }
    /// A TLS client configuration trusting `trust`'s CA and presenting `name`'s certificate.
    fn client(&self, trust: &Certs, name: Option<&str>) -> Arc<ClientConfig> {
        let pair = name.map(|name| self.pair(name));
        let identity = pair.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
        raftkv_client::tls_config(&trust.ca(), identity).expect("client TLS config")
    }
}

/// Certificates from `raftkv certs` for the cluster, the cluster file rewritten to use them, and a
/// second set from another CA that the cluster does not trust.
fn ours_and_theirs(cluster: &Cluster) -> (Certs, Certs) {
    let ours = Certs {
        dir: cluster.dir.path().join("tls"),
    };
    let theirs = Certs {
        dir: cluster.dir.path().join("other-ca"),
    };
    make_certs(cluster, &ours.dir, true);
    make_certs(cluster, &theirs.dir, false);
    (ours, theirs)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn handshake_frame(claimed: u64) -> BytesMut {
    let hello = Handshake {
        protocol_version: PROTOCOL_VERSION,
        cluster_id: "t".into(),
        node_id: claimed,
        stream: StreamKind::Messages,
        peer_addr: String::new(),
    };
    let mut payload = BytesMut::new();
    hello.encode(&mut payload);
    let mut frame = BytesMut::new();
    encode_frame(&payload, &mut frame);
    frame
}

/// Whether `bytes` start with a raftkv handshake frame (rather than, say, a TLS alert).
fn is_handshake(bytes: &[u8]) -> bool {
    let header = raftkv_server::transport::FRAME_HEADER_LEN;
    bytes.len() > header
        && Handshake::decode(bytes::Bytes::copy_from_slice(&bytes[header..])).is_ok()
}

/// Connects to a peer port over TLS as `tls`, expecting the server to be `server_node`, claims node
/// `claimed` in raftkv's handshake and reports whether the node answered it.
async fn peer_attempt(
    addr: &str,
    tls: Option<Arc<ClientConfig>>,
    server_node: u64,
    claimed: u64,
) -> bool {
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let frame = handshake_frame(claimed);
        let mut answer = [0u8; 64];
        match tls {
            None => {
                let mut tcp = tcp;
                tcp.write_all(&frame).await?;
                let read = tcp.read(&mut answer).await?;
                anyhow::Ok(is_handshake(&answer[..read]))
            }
            Some(tls) => {
                let name = ServerName::try_from(raftkv_tls::node_name(server_node))?;
                let mut stream = TlsConnector::from(tls).connect(name, tcp).await?;
                stream.write_all(&frame).await?;
                let read = stream.read(&mut answer).await?;
                anyhow::Ok(is_handshake(&answer[..read]))
            }
        }
    };
    match tokio::time::timeout(Duration::from_secs(5), attempt).await {
        Ok(Ok(answered)) => answered,
        _ => false,
    }
}

#[test]
fn a_mutual_tls_cluster_refuses_strangers_on_its_peer_ports() {
    let mut cluster = Cluster::configure(3, FAST_TUNABLES);
    let (ours, theirs) = ours_and_theirs(&cluster);
    for i in 0..3 {
        cluster.start_node(i);
    }
    let leader = cluster.wait_leader();
    let victim = (leader + 1) % 3;
    let (leader_id, victim_id) = (cluster.nodes[leader].id, cluster.nodes[victim].id);
    let third_id = cluster.nodes[(leader + 2) % 3].id;
    let addr = cluster.nodes[victim].peer_addr.clone();
    let load = WriteLoad::start(cluster.addrs(), "mtls", 2);
    std::thread::sleep(Duration::from_millis(300));

    let rt = runtime();
    let leader_name = format!("node-{leader_id}");
    let third_name = format!("node-{third_id}");
    let attempts = [
        ("plain text", None),
        ("no certificate", Some(ours.client(&ours, None))),
        (
            "another CA's certificate for the leader",
            Some(theirs.client(&ours, Some(&leader_name))),
        ),
        (
            "a real node's certificate claiming the leader's id",
            Some(ours.client(&ours, Some(&third_name))),
        ),
    ];
    for (what, tls) in attempts {
        for _ in 0..20 {
            let answered = rt.block_on(peer_attempt(&addr, tls.clone(), victim_id, leader_id));
            assert!(!answered, "{what}: the node answered the handshake");
        }
    }
    let attacked_at = Instant::now();
    std::thread::sleep(Duration::from_millis(1_500));
    // The real node, with its own certificate, would be welcome: the refusals above are not blanket.
    let (acked, _) = load.stop();
    let later = acked.iter().filter(|a| a.at > attacked_at).count();
    assert!(
        later > 10,
        "writes kept being acknowledged after the strangers: {later}\n{}",
        cluster.log_tails(20)
    );
    let log = log_of(&cluster, victim);
    assert!(log.contains("TLS handshake failed"), "{log}");
    assert!(
        log.contains(&format!("its certificate does not name node {leader_id}")),
        "{log}"
    );
    let mut client = cluster.client();
    check_acked(&mut client, &acked);
}

#[test]
fn a_client_port_demanding_certificates_refuses_strangers_and_serves_clients() {
    let mut cluster = Cluster::configure(3, FAST_TUNABLES);
    let (ours, theirs) = ours_and_theirs(&cluster);
    set_client_tls(&cluster, "verify");
    for i in 0..3 {
        cluster.start_node(i);
    }
    let addrs = cluster.addrs();
    let rt = runtime();
    let client_with = |tls: Arc<ClientConfig>| {
        let config = raftkv_client::Config {
            deadline: Duration::from_secs(2),
            tls: Some(tls),
            ..raftkv_client::Config::default()
        };
        raftkv_client::Client::new(&addrs, config).expect("client")
    };
    let good = client_with(ours.client(&ours, Some("client")));
    // Wait for a leader through the TLS port itself.
    let deadline = Instant::now() + LEADER_TIMEOUT;
    let first = loop {
        match rt.block_on(good.set("k", b"v1", None)) {
            Ok(version) => break version,
            Err(err) if Instant::now() > deadline => panic!("no write over TLS: {err}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };

    let anonymous = client_with(ours.client(&ours, None));
    assert!(rt.block_on(anonymous.get("k")).is_err(), "no certificate");
    let stranger = client_with(theirs.client(&ours, Some("client")));
    assert!(rt.block_on(stranger.get("k")).is_err(), "another CA");
    let wrong_server = client_with(ours.client(&theirs, Some("client")));
    assert!(
        rt.block_on(wrong_server.get("k")).is_err(),
        "a client trusting another CA refuses the node"
    );
    // Plain text gets one line saying why.
    let mut plain = Conn::connect(&addrs[0]).expect("connect");
    let _ = plain.send(b"get k\r\n");
    let reply = plain.read_reply().unwrap_or_default();
    assert_eq!(
        show(&reply),
        show(b"ERR_INTERNAL this port requires TLS\r\n")
    );

    let second = rt
        .block_on(good.set("k", b"v2", None))
        .expect("a write after the strangers");
    assert!(second > first);
    let value = rt.block_on(good.get("k")).expect("read back");
    assert_eq!(value.as_deref(), Some(&b"v2"[..]));
}

#[test]
fn certificates_rotate_without_a_restart() {
    let mut cluster = Cluster::configure(3, FAST_TUNABLES);
    let ours = Certs {
        dir: cluster.dir.path().join("tls"),
    };
    make_certs(&cluster, &ours.dir, true);
    set_client_tls(&cluster, "on");
    for i in 0..3 {
        cluster.start_node(i);
    }
    let addrs = cluster.addrs();
    let rt = runtime();
    let client_trusting = |certs: &Certs| {
        let config = raftkv_client::Config {
            deadline: Duration::from_secs(2),
            tls: Some(certs.client(certs, None)),
            ..raftkv_client::Config::default()
        };
        raftkv_client::Client::new(&addrs, config).expect("client")
    };
    let wait_write = |client: &raftkv_client::Client, limit: Duration| {
        let deadline = Instant::now() + limit;
        loop {
            match rt.block_on(client.set("k", b"v", None)) {
                Ok(_) => return true,
                Err(_) if Instant::now() > deadline => return false,
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    };
    assert!(wait_write(&client_trusting(&ours), LEADER_TIMEOUT));

    // A whole new CA and certificates, copied over the files in place (as a deployment tool would);
    // the nodes pick them up within their poll period, and the peers reconnect with them.
    let fresh = Certs {
        dir: cluster.dir.path().join("fresh"),
    };
    make_certs(&cluster, &fresh.dir, false);
    for entry in std::fs::read_dir(&fresh.dir).expect("list the new files") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), ours.dir.join(entry.file_name())).expect("copy");
    }
    let rotated = Certs {
        dir: ours.dir.clone(),
    };
    assert!(
        wait_write(&client_trusting(&rotated), Duration::from_secs(15)),
        "no write with the new CA after the rotation:\n{}",
        cluster.log_tails(20)
    );
    for i in 0..3 {
        assert!(
            log_of(&cluster, i).contains("reloaded the peer TLS certificate files"),
            "node {i} did not reload"
        );
    }
    // New peer connections use the new files: restart a node, then stop another, so that every
    // write needs the restarted node, whose connections were all made after the rotation.
    cluster.kill(1);
    cluster.start_node(1);
    cluster.kill(0);
    assert!(
        wait_write(&client_trusting(&rotated), LEADER_TIMEOUT),
        "no write through the restarted node:\n{}",
        cluster.log_tails(20)
    );
}

#[test]
fn a_node_without_peer_tls_says_so_at_start() {
    let mut cluster = Cluster::configure(1, FAST_TUNABLES);
    cluster.start_node(0);
    cluster.wait_leader();
    let log = log_of(&cluster, 0);
    assert!(
        log.contains("peer TLS is off") && log.contains("docs/security.md"),
        "{log}"
    );
}

/// Large values and snapshots cross TLS whole: a 4 MiB value written and read back over a TLS client
/// port, and a node that was down catches up over peer TLS by a snapshot (the log it missed is
/// compacted), after which the cluster needs it for a majority and still serves the value.
#[test]
fn large_values_and_snapshots_cross_tls() {
    let mut cluster = Cluster::configure(
        3,
        &format!(
            "{FAST_TUNABLES}snapshot_entries = 50\nmax_value_size = {}\n",
            8 << 20
        ),
    );
    let ours = Certs {
        dir: cluster.dir.path().join("tls"),
    };
    make_certs(&cluster, &ours.dir, true);
    set_client_tls(&cluster, "on");
    cluster.start_node(0);
    cluster.start_node(1);
    let addrs: Vec<String> = cluster.addrs()[..2].to_vec();
    let all_addrs = cluster.addrs();
    let rt = runtime();
    let client_for = |addrs: &[String]| {
        let config = raftkv_client::Config {
            deadline: Duration::from_secs(10),
            tls: Some(ours.client(&ours, None)),
            max_value_size: 8 << 20,
            ..raftkv_client::Config::default()
        };
        raftkv_client::Client::new(addrs, config).expect("client")
    };
    let client = client_for(&addrs);
    let big: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    let deadline = Instant::now() + LEADER_TIMEOUT;
    loop {
        match rt.block_on(client.set("big", &big, None)) {
            Ok(_) => break,
            Err(err) if Instant::now() > deadline => panic!("no write over TLS: {err}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    for i in 0..120 {
        rt.block_on(client.set(&format!("k{i}"), b"v", None))
            .expect("a small write");
    }
    let read = rt.block_on(client.get("big")).expect("read back");
    assert!(
        read.as_deref() == Some(&big[..]),
        "the 4 MiB value came back altered"
    );

    cluster.start_node(2);
    let deadline = Instant::now() + LEADER_TIMEOUT;
    while !log_of(&cluster, 2).contains("snapshot received") {
        assert!(
            Instant::now() < deadline,
            "node 3 got no snapshot over TLS:\n{}",
            cluster.log_tails(20)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Without node 1, every read and write needs node 3, which only has what the snapshot gave it.
    cluster.kill(0);
    let client = client_for(&all_addrs);
    let deadline = Instant::now() + LEADER_TIMEOUT;
    let read = loop {
        match rt.block_on(client.get("big")) {
            Ok(read) => break read,
            Err(err) if Instant::now() > deadline => panic!("no read after the catch-up: {err}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    assert!(
        read.as_deref() == Some(&big[..]),
        "the value after the catch-up differs"
    );
}

/// Sends `command` (RESP) over a TLS connection to a Redis port and returns the reply's first bytes.
async fn redis_over_tls(
    addr: &str,
    tls: Arc<ClientConfig>,
    command: &[u8],
) -> std::io::Result<Vec<u8>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from("127.0.0.1").expect("an IP name");
    let mut stream = TlsConnector::from(tls).connect(name, tcp).await?;
    stream.write_all(command).await?;
    let mut reply = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut reply))
        .await
        .map_err(|_| std::io::Error::other("no reply"))??;
    reply.truncate(n);
    Ok(reply)
}

/// With `[tls] client = "verify"` the Redis port demands the same as the client port: TLS and a
/// certificate from the cluster's CA. A plain-text client is told so, a client without a certificate
/// or from another CA is refused, and a good client is served through every node (followers relay to
/// the leader over TLS, presenting their own certificate).
#[test]
fn the_redis_port_demands_what_the_client_port_demands() {
    let mut cluster = Cluster::configure(3, FAST_TUNABLES);
    let (ours, theirs) = ours_and_theirs(&cluster);
    set_client_tls(&cluster, "verify");
    for i in 0..3 {
        cluster.start_node(i);
    }
    let rt = runtime();
    let good = ours.client(&ours, Some("client"));
    let set = |i: usize, value: &str| {
        let command = format!(
            "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${}\r\n{value}\r\n",
            value.len()
        );
        rt.block_on(redis_over_tls(
            &cluster.nodes[i].resp_addr,
            good.clone(),
            command.as_bytes(),
        ))
    };
    // Every node, leader or not, serves the good client once a leader is known.
    for i in 0..3 {
        let deadline = Instant::now() + LEADER_TIMEOUT;
        loop {
            match set(i, &format!("v{i}")) {
                Ok(reply) if reply == b"+OK\r\n" => break,
                outcome if Instant::now() > deadline => panic!("node {i}: {outcome:?}"),
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
    let get = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
    let addr = &cluster.nodes[0].resp_addr;
    let reply = rt
        .block_on(redis_over_tls(addr, good.clone(), get))
        .expect("a GET over TLS");
    assert_eq!(show(&reply), show(b"$2\r\nv2\r\n"));
    let anonymous = ours.client(&ours, None);
    assert!(rt.block_on(redis_over_tls(addr, anonymous, get)).is_err());
    let stranger = theirs.client(&ours, Some("client"));
    assert!(rt.block_on(redis_over_tls(addr, stranger, get)).is_err());
    // Plain text gets one RESP error saying why.
    let mut plain = Conn::connect(addr).expect("connect");
    let _ = plain.send(get);
    let reply = plain.read_reply().unwrap_or_default();
    assert_eq!(show(&reply), show(b"-ERR this port requires TLS\r\n"));
}

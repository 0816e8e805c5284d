//! `raftkv backup`, `raftkv backup inspect` and `raftkv restore` with real processes: a backup taken
//! under write load holds every write acknowledged before it started; a new cluster restored from it
//! serves exactly its contents, goes on with larger versions, and keeps expired keys expired; damaged,
//! foreign and newer-format files and non-empty data directories are refused, and nothing is written.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

fn raftkv(args: &[&str]) -> std::process::Output {
    Command::new(RAFTKV)
        .args(args)
        .output()
        .expect("run raftkv")
}

fn backup(cluster: &Cluster, out: &Path) -> std::process::Output {
    raftkv(&[
        "backup",
        "--addr",
        &cluster.addrs().join(","),
        "--out",
        out.to_str().unwrap(),
        "--json",
    ])
}

fn restore(from: &Path, config: &Path, id: u64) -> std::process::Output {
    raftkv(&[
        "restore",
        "--from",
        from.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--id",
        &id.to_string(),
    ])
}

#[test]
fn a_backup_under_load_restores_into_a_new_cluster() {
    let source = Cluster::start(3, FAST_TUNABLES);
    let mut client = source.client();
    // A key that expires 2 s from now: expired in the restored cluster too, by the time it serves.
    let expiring_set_at = Instant::now();
    let expiring = ok_version(&client.call(&set_cmd("expiring", 2, b"x")).unwrap()).unwrap();
    let load = WriteLoad::start(source.addrs(), "load", 4);
    std::thread::sleep(Duration::from_millis(800));
    let started = Instant::now();
    let file = source.dir.path().join("cluster.rkvb");
    let output = backup(&source, &file);
    assert!(output.status.success(), "{output:?}");
    std::thread::sleep(Duration::from_millis(300));
    let (acked, _) = load.stop();
    let header: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON header");
    let index = header["index"].as_u64().unwrap();
    assert!(index >= expiring, "{header}");

    // Every write acknowledged before the backup started is in the file, with its version; none after
    // the backup's index is.
    let data = std::fs::read(&file).unwrap();
    let (_, store) = raftkv_kv::backup::read_backup(&data).expect("a valid backup");
    let before: Vec<_> = acked.iter().filter(|a| a.at < started).collect();
    assert!(
        !before.is_empty(),
        "no write acknowledged before the backup"
    );
    for a in &acked {
        let reply = store.read(
            &raftkv_kv::Request::Getm {
                key: a.key.clone().into_bytes().into(),
            },
            0,
        );
        let held = matches!(&reply, raftkv_kv::Reply::ValueMeta { version, value, .. }
            if *version == a.version && value[..] == a.value[..]);
        if a.at < started {
            assert!(
                held,
                "{} acknowledged before the backup is not in it: {reply:?}",
                a.key
            );
        }
        assert_eq!(
            held,
            a.version <= index,
            "{} (version {}) vs index {index}",
            a.key,
            a.version
        );
    }
    let inspected = raftkv(&[
        "backup",
        "inspect",
        file.to_str().unwrap(),
        "--keys",
        "load-w0-",
    ]);
    assert!(inspected.status.success(), "{inspected:?}");
    let listed = String::from_utf8_lossy(&inspected.stdout);
    assert!(listed.contains(&format!("index       {index}")), "{listed}");
    assert!(listed.lines().any(|l| l == "load-w0-1"), "{listed}");

    // A new cluster from the file: every node restored, then started.
    let mut restored = Cluster::configure(3, FAST_TUNABLES);
    for id in 1..=3 {
        let output = restore(&file, &restored.config, id);
        assert!(output.status.success(), "{output:?}");
    }
    for i in 0..3 {
        restored.start_node(i);
    }
    restored.wait_leader();
    // Before any new write, a backup of the restored cluster holds exactly what the source's did.
    let again = restored.dir.path().join("again.rkvb");
    assert!(backup(&restored, &again).status.success());
    let (_, copy) = raftkv_kv::backup::read_backup(&std::fs::read(&again).unwrap()).unwrap();
    // (Except the expiring key, which the new leader may already have reclaimed.)
    let others = |s: &raftkv_kv::Store| s.keys().filter(|k| *k != b"expiring").count();
    assert_eq!(others(&copy), others(&store));
    for key in store.keys().filter(|k| *k != b"expiring") {
        let getm = raftkv_kv::Request::Getm {
            key: bytes::Bytes::copy_from_slice(key),
        };
        assert_eq!(copy.read(&getm, 0), store.read(&getm, 0), "{key:?}");
    }
    let mut client = restored.client();
    for a in acked.iter().filter(|a| a.version <= index) {
        let reply = client.call_retry(format!("getm {}\r\n", a.key).as_bytes(), LEADER_TIMEOUT);
        assert_eq!(
            getm_fields(&reply),
            Some((a.version, 0, a.value.clone())),
            "{} in the restored cluster: {}",
            a.key,
            show(&reply)
        );
    }
    // The replicated clock carried over: the key expires on time and stays expired.
    let due = expiring_set_at + Duration::from_millis(2_500);
    std::thread::sleep(due.saturating_duration_since(Instant::now()));
    let reply = client.call_retry(b"get expiring\r\n", LEADER_TIMEOUT);
    assert_eq!(show(&reply), show(b"ERR_NOT_FOUND\r\n"));
    // Versions go on past every version the source ever gave out up to the backup.
    let version = client.set_retry("after-restore", b"v", LEADER_TIMEOUT);
    assert!(
        version > index,
        "version {version} after a restore at {index}"
    );

    // Restoring again into a node that has data is refused, and changes nothing.
    restored.kill(0);
    let output = restore(&file, &restored.config, 1);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("not empty"),
        "{output:?}"
    );
    drop(source);
}

#[test]
fn damaged_foreign_and_newer_files_are_refused_and_nothing_is_written() {
    let cluster = Cluster::start(3, DEFAULT_TUNABLES);
    let mut client = cluster.client();
    for i in 0..20 {
        client.set_retry(&format!("k{i}"), b"value", LEADER_TIMEOUT);
    }
    let good = cluster.dir.path().join("good.rkvb");
    let output = backup(&cluster, &good);
    assert!(output.status.success(), "{output:?}");
    let bytes = std::fs::read(&good).unwrap();

    let bad_files: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated", bytes[..bytes.len() / 2].to_vec(), "damaged"),
        (
            "bit-flipped",
            {
                let mut b = bytes.clone();
                let middle = b.len() / 2;
                b[middle] ^= 0x10;
                b
            },
            "checksum",
        ),
        (
            "newer",
            {
                let mut b = bytes.clone();
                b[9] = 99;
                b
            },
            "newer",
        ),
        (
            "not a backup",
            b"hello, world\n".to_vec(),
            "not a raftkv backup",
        ),
        ("empty", Vec::new(), "not a raftkv backup"),
    ];
    let fresh = Cluster::configure(3, DEFAULT_TUNABLES);
    for (name, content, why) in bad_files {
        let path = cluster.dir.path().join(format!("{name}.rkvb"));
        std::fs::write(&path, &content).unwrap();
        let inspected = raftkv(&["backup", "inspect", path.to_str().unwrap()]);
        assert!(!inspected.status.success(), "{name}: {inspected:?}");
        let stderr = String::from_utf8_lossy(&inspected.stderr).to_lowercase();
        assert!(stderr.contains(why), "{name}: {stderr}");
        let output = restore(&path, &fresh.config, 1);
        assert!(!output.status.success(), "{name}: {output:?}");
        assert!(
            !fresh.nodes[0].data_dir.exists(),
            "{name}: restore wrote something"
        );
    }
    // One backup at a time per node: a second one pipelined behind the first is refused at once.
    let leader = cluster_leader_addr(&cluster);
    let mut stream = std::net::TcpStream::connect(&leader).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    use std::io::{Read, Write};
    stream.write_all(b"backup\r\nbackup\r\n").unwrap();
    let mut received = Vec::new();
    let mut chunk = [0u8; 65536];
    while !received.ends_with(b"ERR_INTERNAL\r\n") {
        let n = stream.read(&mut chunk).expect("replies");
        assert!(
            n > 0,
            "closed after {}",
            show(&received[..received.len().min(40)])
        );
        received.extend_from_slice(&chunk[..n]);
    }
    assert!(
        received.starts_with(b"BACKUP "),
        "{}",
        show(&received[..40])
    );
    // The good file is fine, and a second backup to the same path replaces it whole.
    let inspected = raftkv(&["backup", "inspect", good.to_str().unwrap(), "--json"]);
    assert!(inspected.status.success(), "{inspected:?}");
    let header: serde_json::Value = serde_json::from_slice(&inspected.stdout).unwrap();
    assert_eq!(header["keys"], 20, "{header}");
    assert_eq!(header["cluster_id"], "t");
}

/// The loss of a majority: two of three nodes are killed and their data deleted. The survivor's data
/// directory, copied offline, seeds a new cluster that serves every write acknowledged before.
#[test]
fn a_survivors_data_seeds_a_new_cluster_after_the_majority_is_lost() {
    let (mut old, acked, survivor) = lose_a_majority("dr");
    // With no majority nothing can be backed up from the cluster; the survivor is stopped and copied.
    old.kill(survivor);
    let file = old.dir.path().join("survivor.rkvb");
    let output = raftkv(&[
        "backup",
        "--data-dir",
        old.nodes[survivor].data_dir.to_str().unwrap(),
        "--out",
        file.to_str().unwrap(),
        "--json",
    ]);
    assert!(output.status.success(), "{output:?}");
    let header: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let index = header["index"].as_u64().unwrap();

    let mut new = Cluster::configure(3, FAST_TUNABLES);
    for id in 1..=3 {
        assert!(restore(&file, &new.config, id).status.success());
    }
    for i in 0..3 {
        new.start_node(i);
    }
    new.wait_leader();
    let mut client = new.client();
    for a in &acked {
        assert!(
            a.version <= index,
            "{} at {} after the copy's index {index}",
            a.key,
            a.version
        );
    }
    check_acked(&mut client, &acked);
    let version = client.set_retry("after-recovery", b"v", LEADER_TIMEOUT);
    assert!(version > index);
}

/// The client address of `cluster`'s leader.
fn cluster_leader_addr(cluster: &Cluster) -> String {
    let mut client = cluster.client();
    client.call_retry(b"get anything\r\n", LEADER_TIMEOUT);
    (0..cluster.len())
        .map(|i| cluster.addr(i).to_string())
        .find(|addr| probe(addr) == Probe::Leader)
        .expect("a leader")
}

/// The last resort in place: two of three nodes killed and their data deleted; the survivor restarted
/// with --force-new-cluster is a one-voter cluster serving every acknowledged write, and stays one
/// across a plain restart; then the lost machines join again, empty, and are promoted, and the
/// cluster outlives the loss of the former survivor.
#[test]
fn force_new_cluster_turns_a_survivor_into_a_one_node_cluster() {
    let (mut old, acked, survivor) = lose_a_majority("force");
    old.kill(survivor);
    old.start_node_with(survivor, &[], &["--force-new-cluster"]);
    assert_eq!(old.wait_leader(), survivor);
    let mut client = Client::new(vec![old.addr(survivor).to_string()]);
    check_acked(&mut client, &acked);
    let version = client.set_retry("after-force", b"v", LEADER_TIMEOUT);
    assert!(acked.iter().all(|a| a.version < version));
    // The membership lives in its snapshot now: a plain restart is still a one-node cluster.
    old.kill(survivor);
    old.start_node(survivor);
    assert_eq!(old.wait_leader(), survivor);
    let reply = client.call_retry(b"get after-force\r\n", LEADER_TIMEOUT);
    assert_eq!(reply, b"VALUE 1\r\nv\r\n");

    // Members are added back online: the lost machines, empty, join and are promoted.
    for i in [0, 1] {
        old.start_joining(i, &[survivor]);
        let id = old.nodes[i].id.to_string();
        let deadline = std::time::Instant::now() + LEADER_TIMEOUT;
        loop {
            let done = old.members(&["promote", "--id", &id]);
            if done.status.success() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "promote {id}: {}\n{}",
                done.stderr,
                old.log_tails(20)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let table = old.members(&["list"]);
    assert_eq!(
        table.stdout.matches("voter").count() + 1,
        3,
        "{}",
        table.stdout
    );
    // With three voters again, the cluster survives losing the one that was alone.
    old.kill(survivor);
    let leader = old.wait_new_leader(survivor);
    let mut client = Client::new(vec![old.addr(leader).to_string()]);
    check_acked(&mut client, &acked);
    let reply = client.call_retry(b"get after-force\r\n", LEADER_TIMEOUT);
    assert_eq!(reply, b"VALUE 1\r\nv\r\n");
}

/// A 3-node cluster after 1.5 s of writes, with two nodes killed and their data deleted: the cluster,
/// every acknowledged write, and the index of the survivor (still running, caught up).
fn lose_a_majority(prefix: &str) -> (Cluster, Vec<Acked>, usize) {
    let mut cluster = Cluster::start(3, FAST_TUNABLES);
    let load = WriteLoad::start(cluster.addrs(), prefix, 3);
    std::thread::sleep(Duration::from_millis(1500));
    let (acked, _) = load.stop();
    assert!(!acked.is_empty());
    // Let the survivor-to-be catch up, then lose the others for good.
    std::thread::sleep(Duration::from_millis(500));
    let survivor = 2;
    for i in [0, 1] {
        cluster.kill(i);
        std::fs::remove_dir_all(&cluster.nodes[i].data_dir).unwrap();
    }
    (cluster, acked, survivor)
}

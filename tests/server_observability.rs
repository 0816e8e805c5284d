//! Observability with real processes: every node's `/metrics` parses as Prometheus exposition text and
//! its counters only grow under load; exactly the leader says `raftkv_is_leader 1`; after the leader
//! dies, the new leader's metrics and every node's `/status` agree on it within two election timeouts;
//! `/health` turns 503 on a node cut off from the majority and 200 again when it rejoins; and
//! `raftkv status` prints the cluster, a node that is down included, exiting non-zero without a majority.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use support::*;

/// The samples of a scrape, by metric name and labels, parsed as Prometheus exposition text.
fn scrape(addr: &str) -> HashMap<String, f64> {
    let (code, text) = http_get(addr, "/metrics").expect("scrape /metrics");
    assert_eq!(code, 200, "{text}");
    let lines = text.lines().map(|line| Ok(line.to_string()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    assert!(!parsed.samples.is_empty(), "no samples in\n{text}");
    parsed
        .samples
        .into_iter()
        .filter_map(|sample| {
            let (suffix, value) = match sample.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => ("", v),
                // A histogram is kept as its count of observations (the +Inf bucket).
                prometheus_parse::Value::Histogram(buckets) => (
                    "_count",
                    buckets.iter().map(|b| b.count).fold(0.0, f64::max),
                ),
                _ => return None,
            };
            let mut labels: Vec<String> = sample
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            labels.sort();
            Some((
                format!("{}{suffix}{{{}}}", sample.metric, labels.join(",")),
                value,
            ))
        })
        .collect()
}

fn status_json(addr: &str) -> Option<serde_json::Value> {
    let (code, body) = http_get(addr, "/status")?;
    (code == 200).then_some(())?;
    serde_json::from_str(&body).ok()
}

#[test]
fn metrics_parse_grow_and_follow_the_leader() {
    let mut cluster = Cluster::start(3, FAST_TUNABLES);
    let leader = cluster.wait_leader();
    let load = WriteLoad::start(cluster.addrs(), "metrics", 2);
    std::thread::sleep(Duration::from_millis(700));
    let first: Vec<_> = (0..3)
        .map(|i| scrape(&cluster.nodes[i].http_addr))
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    let second: Vec<_> = (0..3)
        .map(|i| scrape(&cluster.nodes[i].http_addr))
        .collect();
    for i in 0..3 {
        for (name, before) in &first[i] {
            if name.contains("_total") || name.ends_with("_count{}") || name.contains("_count{") {
                let after = second[i].get(name).copied().unwrap_or(f64::NAN);
                assert!(
                    after >= *before,
                    "node {i}: {name} went from {before} to {after}"
                );
            }
        }
        let is_leader = second[i]["raftkv_is_leader{}"];
        assert_eq!(is_leader, f64::from(u8::from(i == leader)), "node {i}");
        assert_eq!(second[i]["raftkv_has_leader{}"], 1.0);
    }
    let ok_sets =
        |scrape: &HashMap<String, f64>| scrape["raftkv_client_requests_total{op=set,result=ok}"];
    assert!(
        ok_sets(&second[leader]) > ok_sets(&first[leader]),
        "the leader counted acknowledged sets"
    );
    assert!(second[leader]["raftkv_commit_index{}"] > first[leader]["raftkv_commit_index{}"]);
    let timed: f64 = second[leader]
        .iter()
        .filter(|(name, _)| name.starts_with("raftkv_peer_replication_round_trip_seconds_count"))
        .map(|(_, count)| count)
        .sum();
    assert!(timed > 0.0, "the leader timed replication round trips");
    let (acked, _) = load.stop();
    assert!(!acked.is_empty());

    // The leader dies: within two election timeouts (300 ms here; generous slack for a busy
    // machine) the survivors agree on a new one, in /status and in the new leader's metrics.
    cluster.kill(leader);
    let new_leader = cluster.wait_new_leader(leader);
    let new_id = cluster.nodes[new_leader].id;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let agreed = (0..3).filter(|&i| i != leader).all(|i| {
            status_json(&cluster.nodes[i].http_addr)
                .is_some_and(|status| status["leader"] == serde_json::json!(new_id))
        });
        let metrics = scrape(&cluster.nodes[new_leader].http_addr);
        if agreed && metrics["raftkv_is_leader{}"] == 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the survivors did not agree on node {new_id} as leader"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = status_json(&cluster.nodes[new_leader].http_addr).expect("status");
    assert_eq!(status["role"], "leader");
    assert_eq!(status["members"].as_array().map(Vec::len), Some(3));
    assert!(status["peers"]
        .as_array()
        .is_some_and(|peers| !peers.is_empty()));
}

#[test]
fn health_is_503_when_cut_off_from_the_majority() {
    let mut cluster = Cluster::start(3, FAST_TUNABLES);
    cluster.wait_leader();
    let lonely = 0;
    let wait_health = |code: u16, limit: Duration| {
        let deadline = Instant::now() + limit;
        loop {
            let answer = http_get(&cluster.nodes[lonely].http_addr, "/health");
            if answer.as_ref().is_some_and(|(c, _)| *c == code) {
                return answer.map(|(_, body)| body).unwrap_or_default();
            }
            assert!(
                Instant::now() < deadline,
                "/health did not turn {code}: {answer:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_health(200, LEADER_TIMEOUT);
    // Pausing the other two cuts this node off from the majority without a network namespace.
    let others: Vec<u32> = (1..3).filter_map(|i| cluster.pid(i)).collect();
    for &pid in &others {
        signal(pid, libc::SIGSTOP);
    }
    let body = wait_health(503, Duration::from_secs(10));
    for &pid in &others {
        signal(pid, libc::SIGCONT);
    }
    assert!(body.contains("no leader"), "{body}");
    wait_health(200, LEADER_TIMEOUT);
}

#[test]
fn raftkv_status_shows_every_node_and_needs_a_majority() {
    let mut cluster = Cluster::start(3, FAST_TUNABLES);
    cluster.wait_leader();
    let config = cluster.config.to_str().expect("utf-8 path").to_string();
    let status = |args: &[&str]| {
        let mut all = vec!["status"];
        all.extend_from_slice(args);
        run_raftkv(&all, Duration::from_secs(30)).expect("raftkv status finished")
    };
    // Any one node's address finds the others (the followers may need a heartbeat or two to learn
    // the leader the harness just found).
    let deadline = Instant::now() + Duration::from_secs(10);
    let table = loop {
        let table = status(&["--addr", &cluster.nodes[1].http_addr]);
        assert!(table.status.success(), "{}{}", table.stdout, table.stderr);
        if table.stdout.matches(" ok\n").count() == 3 || Instant::now() > deadline {
            break table;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(table.stdout.matches(" ok\n").count(), 3, "{}", table.stdout);
    assert!(table.stdout.contains("leader: node"), "{}", table.stdout);

    cluster.kill(2);
    let table = status(&["--config", &config]);
    assert!(
        table.status.success(),
        "a majority answered: {}",
        table.stdout
    );
    let down_row = table
        .stdout
        .lines()
        .find(|line| line.starts_with('3'))
        .unwrap_or_default();
    assert!(down_row.contains("down"), "{}", table.stdout);
    let json = status(&["--config", &config, "--json"]);
    let parsed: serde_json::Value = serde_json::from_str(json.stdout.trim()).expect("JSON");
    assert_eq!(parsed["majority_answered"], true);
    let nodes = parsed["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 3);
    assert_eq!(nodes.iter().filter(|n| n["up"] == true).count(), 2);

    cluster.kill(1);
    let table = status(&["--config", &config]);
    assert!(!table.status.success(), "no majority: {}", table.stdout);
}

#[test]
fn log_format_json_writes_one_object_per_line() {
    let cluster = Cluster::configure(1, FAST_TUNABLES);
    let mut child = std::process::Command::new(RAFTKV)
        .args(["server", "--config"])
        .arg(&cluster.config)
        .args(["--id", "1", "--log-format", "json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start raftkv server");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match lines.next() {
            Some(Ok(line)) => seen.push(line),
            _ => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(seen.len(), 3, "{seen:?}");
    for line in &seen {
        let parsed: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
        assert!(
            parsed["level"].is_string() && parsed["fields"]["message"].is_string(),
            "{line}"
        );
    }
}

#[test]
fn digests_agree_once_every_node_applied_the_same_log() {
    let mut cluster = Cluster::start(3, FAST_TUNABLES);
    cluster.wait_leader();
    let load = WriteLoad::start(cluster.addrs(), "digest", 2);
    std::thread::sleep(Duration::from_millis(500));
    let (acked, _) = load.stop();
    assert!(!acked.is_empty());
    // Once writes stop, the followers apply up to the leader's index; then all three digests
    // describe the same state at the same index.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let digests: Vec<serde_json::Value> = (0..3)
            .map(|i| {
                let (code, body) =
                    http_get(&cluster.nodes[i].http_addr, "/digest").expect("GET /digest");
                assert_eq!(code, 200, "{body}");
                serde_json::from_str(&body).expect("JSON")
            })
            .collect();
        let index = |d: &serde_json::Value| d["applied_index"].as_u64().expect("applied_index");
        if digests.iter().all(|d| index(d) == index(&digests[0])) {
            assert!(index(&digests[0]) as usize > acked.len());
            for d in &digests {
                assert_eq!(d["digest"], digests[0]["digest"], "{digests:?}");
                assert_eq!(d["digest"].as_str().map(str::len), Some(16));
            }
            break;
        }
        assert!(Instant::now() < deadline, "never at one index: {digests:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A new write changes the digest.
    let before = http_get(&cluster.nodes[0].http_addr, "/digest")
        .expect("digest")
        .1;
    let mut client = Client::new(cluster.addrs());
    client.call_retry(b"set digest-change 0 1\r\nx\r\n", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    let after = http_get(&cluster.nodes[0].http_addr, "/digest")
        .expect("digest")
        .1;
    assert_ne!(before, after);
}

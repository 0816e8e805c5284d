//! `raftkv bench` end to end: a short run gives a well-formed table and JSON, with requests done
//! and no errors.

mod support;

use std::process::Command;

use support::spawner::{Cluster, RAFTKV};

fn bench(cluster: &Cluster, args: &[&str]) -> std::process::Output {
    Command::new(RAFTKV)
        .args(["bench", "--addr", &cluster.addr_arg()])
        .args(args)
        .output()
        .expect("run raftkv bench")
}

#[test]
fn a_short_run_reports_a_table_and_json_without_errors() {
    let cluster = Cluster::start(3);

    let table = bench(
        &cluster,
        &["--op", "set", "--clients", "16", "--duration", "2"],
    );
    assert!(table.status.success(), "{table:?}");
    let text = String::from_utf8_lossy(&table.stdout);
    for row in [
        "workload",
        "throughput",
        "latency (µs)",
        "p50",
        "p99.9",
        "max",
        "errors",
    ] {
        assert!(text.contains(row), "missing {row:?} in\n{text}");
    }
    assert!(text.contains("errors          none"), "{text}");
    let ok: u64 = text
        .lines()
        .find_map(|line| line.strip_prefix("requests"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("requests row");
    assert!(ok > 0, "{text}");

    let scratch = std::env::temp_dir().display().to_string();
    let json = bench(
        &cluster,
        &[
            "--op",
            "mix:9:1",
            "--keys",
            "1000",
            "--clients",
            "8",
            "--pipeline",
            "4",
            "--duration",
            "2",
            "--json",
            "--calibrate",
            "--calibrate-dir",
            &scratch,
        ],
    );
    let json = bench_json(&json);
    assert_eq!(json["errors"], 0, "{json}");
    assert!(
        json["throughput_per_s"].as_f64().unwrap_or(0.0) > 0.0,
        "{json}"
    );
    for percentile in ["p50", "p90", "p99", "p99.9", "max"] {
        assert!(
            json["latency_us"][percentile].as_u64().unwrap_or(0) > 0,
            "{json}"
        );
    }
    for floor in ["fdatasync_4k_us", "loopback_rtt_64b_us"] {
        assert!(
            json["machine"][floor]["p50"].as_u64().unwrap_or(0) > 0,
            "{json}"
        );
    }
}

#[test]
fn read_and_cas_workloads_preload_their_keys() {
    let cluster = Cluster::start(3);
    for op in ["get", "getm", "cas"] {
        assert_clean_run(&cluster, op, &["--clients", "4"]);
    }
    // Stale reads right after the preload may miss the last keys on a follower that has not applied
    // them yet: "not found" is allowed, nothing else.
    let args = [
        "--op",
        "stale-get:1000",
        "--keys",
        "500",
        "--requests",
        "2000",
        "--clients",
        "4",
        "--json",
    ];
    let json = bench_json(&bench(&cluster, &args));
    let not_found = json["errors_by_kind"]["not_found"].as_u64().unwrap_or(0);
    assert_eq!(json["errors"].as_u64(), Some(not_found), "{json}");
    assert_eq!(
        json["requests_ok"].as_u64().unwrap() + not_found,
        2000,
        "{json}"
    );
}

/// 2000 requests of `op` over 500 keys, all answered without error.
fn assert_clean_run(cluster: &Cluster, op: &str, extra: &[&str]) {
    let mut args = vec!["--op", op, "--keys", "500", "--requests", "2000", "--json"];
    args.extend_from_slice(extra);
    let json = bench_json(&bench(cluster, &args));
    assert_eq!(json["errors"], 0, "{op}: {json}");
    assert_eq!(json["requests_ok"], 2000, "{op}: {json}");
}

fn bench_json(output: &std::process::Output) -> serde_json::Value {
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "bad JSON ({error}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

#[test]
fn writes_in_sessions_and_incr_run_without_errors() {
    let cluster = Cluster::start(3);
    for op in ["set", "cas", "mix:1:1"] {
        let sessions = ["--clients", "4", "--pipeline", "4", "--sessions"];
        assert_clean_run(&cluster, op, &sessions);
    }
    // CPU per request of the cluster's nodes, found from `raftkv cluster`'s directory.
    let dir = cluster
        .config_path()
        .parent()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let json = bench_json(&bench(
        &cluster,
        &[
            "--op",
            "set",
            "--clients",
            "8",
            "--conn-per-client",
            "--requests",
            "2000",
            "--cluster-dir",
            &dir,
            "--json",
        ],
    ));
    assert_eq!(json["conns"], 8, "{json}");
    assert_eq!(json["server_nodes_sampled"], 3, "{json}");
    assert!(
        json["server_cpu_us_per_op"].as_f64().unwrap() > 0.0,
        "{json}"
    );
    let output = bench(
        &cluster,
        &[
            "--op",
            "incr",
            "--clients",
            "4",
            "--requests",
            "200",
            "--json",
        ],
    );
    let json = bench_json(&output);
    assert_eq!(json["acknowledged"], 200, "{json}");
    assert_eq!(json["counted"], 200, "{json}");
    assert_eq!(json["verified"], true, "{json}");
}

//! The client library against a real local cluster: redirects, pipelining, leader failure.

mod support;

use std::time::Duration;

use raftkv_client::{Client, Config, Error};
use support::spawner::Cluster;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn any_node_leads_the_client_to_the_leader() {
    let cluster = Cluster::start(3);
    runtime().block_on(async {
        for node in &cluster.addrs {
            let client = Client::connect(std::slice::from_ref(node)).await.unwrap();
            let version = client.set("via", node.as_bytes(), None).await.unwrap();
            assert_eq!(
                client.connected_to().as_deref(),
                Some(cluster.leader.as_str())
            );
            let meta = client.getm("via").await.unwrap().unwrap();
            assert_eq!(
                (meta.version, meta.value.as_ref()),
                (version, node.as_bytes())
            );
        }
    });
}

#[test]
fn pipelined_requests_from_many_tasks_get_their_own_replies() {
    let cluster = Cluster::start(3);
    runtime().block_on(async {
        let client = Client::connect(&cluster.addrs).await.unwrap();
        let tasks: Vec<_> = (0..500)
            .map(|i| {
                let client = client.clone();
                tokio::spawn(async move {
                    let key = format!("pipelined-{i}");
                    let version = client.set(&key, key.as_bytes(), None).await.unwrap();
                    let value = client.get(&key).await.unwrap().unwrap();
                    assert_eq!(value.as_ref(), key.as_bytes());
                    version
                })
            })
            .collect();
        let mut versions = Vec::new();
        for task in tasks {
            versions.push(task.await.unwrap());
        }
        versions.sort_unstable();
        versions.dedup();
        assert_eq!(versions.len(), 500, "every write has its own version");
    });
}

#[test]
fn reads_survive_the_leader_crashing_and_writes_report_unknown_outcomes_only() {
    let cluster = Cluster::start(3);
    runtime().block_on(async {
        let config = Config {
            deadline: Duration::from_secs(15),
            ..Config::default()
        };
        let client = Client::connect_with(&cluster.addrs, config).await.unwrap();
        client.set("steady", b"value", None).await.unwrap();
        let old_leader = client.connected_to().unwrap();
        let mut crashed = false;
        for round in 0..200 {
            if round == 50 {
                cluster.kill_node(&old_leader);
                crashed = true;
            }
            let value = client
                .get("steady")
                .await
                .expect("reads are retried across the failover");
            assert_eq!(value.as_deref(), Some(&b"value"[..]));
            match client.set(&format!("during-{round}"), b"x", None).await {
                Ok(_) | Err(Error::OutcomeUnknown(_)) => {}
                Err(other) => panic!("a write failed with {other}"),
            }
        }
        assert!(crashed);
        assert_ne!(client.connected_to().as_deref(), Some(old_leader.as_str()));
    });
}

//! Shared by the transport tests: a cluster config on free loopback ports, a started node, a message.

#![allow(dead_code)]

use raftkv_raft::{Message, MessageBody};
use raftkv_server::config::{ClusterConfig, NodeConfig, Tunables};
use raftkv_server::transport::Transport;
use tokio::sync::mpsc;

/// Ports the OS just handed out; free unless some other process grabs them in the meantime.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind ephemeral");
    listener.local_addr().expect("local addr").port()
}

pub fn cluster(nodes: u64, cluster_id: &str) -> ClusterConfig {
    ClusterConfig {
        cluster_id: cluster_id.to_string(),
        tunables: Tunables::default(),
        tls: None,
        nodes: (1..=nodes)
            .map(|id| {
                NodeConfig::new(
                    id,
                    format!("127.0.0.1:{}", free_port()),
                    format!("127.0.0.1:{}", free_port()),
                    format!("/tmp/unused-{id}").into(),
                )
            })
            .collect(),
    }
}

pub struct Node {
    pub transport: Transport,
    pub inbound: mpsc::Receiver<Vec<Message>>,
}

/// Starts node `id`'s transport; `inbound_frames` bounds its inbound queue (in frames).
pub async fn start_with(config: &ClusterConfig, id: u64, inbound_frames: usize) -> Node {
    let (sender, inbound) = mpsc::channel(inbound_frames);
    let transport = Transport::start(config, id, sender, None, Default::default())
        .await
        .expect("transport starts");
    Node { transport, inbound }
}

pub fn heartbeat(from: u64, to: u64, read_round: u64) -> Message {
    Message {
        from,
        to,
        term: 1,
        body: MessageBody::Heartbeat {
            commit: 0,
            read_round,
        },
    }
}

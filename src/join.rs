//! `raftkv server --join`: before a new node starts, it asks the cluster who its members are and adds
//! itself as a learner, unless it is a member already. Joining is idempotent: a node restarted with the
//! same command line has data, so it simply starts (its membership is in its log) without asking
//! anyone; one whose data directory is empty and that the cluster lists as a learner with the same
//! addresses starts too. A voter with an empty data directory is refused: it would have forgotten its
//! votes and its log, and could help elect a leader that lacks committed entries.

use std::time::Duration;

use anyhow::{bail, Context};
use raftkv_client::proto::MembersRequest;
use raftkv_client::{Client, Config};
use raftkv_server::config::{ClientTls, ClusterConfig};
use tracing::info;

/// How long a joining node keeps trying to reach the cluster's leader.
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Makes node `id` of `config` a member of the cluster reachable at `seeds` (client addresses), and
/// returns every member's peer address as the leader reported it.
pub async fn join_cluster(
    config: &ClusterConfig,
    id: u64,
    seeds: &[String],
) -> anyhow::Result<Vec<(u64, String)>> {
    let me = config
        .node(id)
        .with_context(|| format!("node {id} is not configured"))?;
    if holds_data(&me.data_dir) {
        info!(
            node = id,
            "restarting a node that joined before: its membership is in its log"
        );
        return Ok(Vec::new());
    }
    let tls = match &config.tls {
        Some(tls) if tls.client != ClientTls::Off => {
            let identity = me.tls_cert.as_deref().zip(me.tls_key.as_deref());
            Some(raftkv_client::tls_config(&tls.ca, identity)?)
        }
        _ => None,
    };
    let client = Client::new(
        seeds,
        Config {
            deadline: JOIN_TIMEOUT,
            tls,
            ..Config::default()
        },
    )?;
    let table = client
        .members()
        .await
        .context("cannot reach the cluster to join")?;
    let table = match table.members.iter().find(|m| m.id == id) {
        Some(row) if row.voter => bail!(
            "node {id} is a voter of the cluster, and this data directory is empty: a voter that lost \
             its data must not come back as itself (it forgot its votes and log). Remove it \
             (raftkv members remove --id {id}), then join again"
        ),
        Some(row) if row.client_addr == me.client_addr && row.peer_addr == me.peer_addr => {
            info!(node = id, "already a member of the cluster; rejoining");
            table
        }
        Some(row) => bail!(
            "node {id} is already a member with client address {} and peer address {}; start it \
             with those, or remove it first (raftkv members remove --id {id})",
            row.client_addr,
            row.peer_addr
        ),
        None => {
            let add = MembersRequest::AddLearner {
                id,
                client_addr: me.client_addr.clone(),
                peer_addr: me.peer_addr.clone(),
                resp_addr: me.resp_addr.clone(),
            };
            let table = client
                .members_request(&add)
                .await
                .context("cannot add this node to the cluster")?;
            info!(
                node = id,
                "joined the cluster as a learner; make it a voter with `raftkv members promote --id \
                 {id}` once it has caught up"
            );
            table
        }
    };
    Ok(table
        .members
        .into_iter()
        .filter(|m| m.id != id)
        .map(|m| (m.id, m.peer_addr))
        .collect())
}

/// Whether `dir` exists and holds anything (a node's data).
fn holds_data(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some())
}

//! `raftkv status`: one table for the whole cluster, from every node's `GET /status`.
//!
//! Any one reachable node's answer names every member (and its HTTP address), so one address is enough;
//! every member is then asked. A member that does not answer gets a row that says so. The command exits
//! 0 when a majority of the members answered and 1 otherwise, so scripts can use it as a check.

use anyhow::{anyhow, Context};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use raftkv_server::config::ClusterConfig;
use raftkv_server::status::NodeStatus;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Where `raftkv cluster`'s default five nodes serve HTTP.
const DEFAULT_HTTP_ADDRS: &str =
    "127.0.0.1:11000,127.0.0.1:11001,127.0.0.1:11002,127.0.0.1:11003,127.0.0.1:11004";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(clap::Args)]
pub struct Args {
    /// HTTP addresses (`http_addr`) of some of the nodes, comma-separated; the rest are found from them.
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_HTTP_ADDRS, conflicts_with = "config")]
    addr: Vec<String>,
    /// Read the nodes' HTTP addresses from this cluster file instead.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Refresh every SECONDS (default 1) until interrupted.
    #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "1")]
    watch: Option<f64>,
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

pub fn run(args: Args) -> ExitCode {
    let Some(runtime) = crate::command_runtime() else {
        return ExitCode::FAILURE;
    };
    runtime.block_on(async {
        let seeds = match &args.config {
            Some(path) => match ClusterConfig::load(path) {
                Ok(config) => config
                    .nodes
                    .iter()
                    .filter_map(|node| node.http_addr.clone())
                    .collect(),
                Err(err) => {
                    eprintln!("error: {err:#}");
                    return ExitCode::from(2);
                }
            },
            None => args.addr.clone(),
        };
        if seeds.is_empty() {
            eprintln!("error: no HTTP addresses (the cluster file names no http_addr)");
            return ExitCode::from(2);
        }
        let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
        loop {
            let view = survey(&client, &seeds).await;
            if args.watch.is_some() {
                // Clear the screen and go home, so the table refreshes in place.
                print!("\x1b[H\x1b[2J");
            }
            if args.json {
                println!("{}", view.to_json());
            } else {
                print!("{}", view.table());
            }
            match args.watch {
                Some(seconds) => {
                    tokio::time::sleep(Duration::from_secs_f64(seconds.clamp(0.1, 3600.0))).await
                }
                None => {
                    return if view.majority_answered() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    };
                }
            }
        }
    })
}

/// What each member said, or why it said nothing.
struct View {
    /// By node id; nodes known only by address get ids from their answers.
    nodes: BTreeMap<u64, Row>,
    /// Addresses that answered nothing and whose node id is unknown.
    unknown_down: Vec<(String, String)>,
}

struct Row {
    http_addr: String,
    client_addr: String,
    answer: Result<NodeStatus, String>,
}

async fn fetch(client: &HttpClient, addr: &str) -> Result<NodeStatus, String> {
    let fetch = async {
        let uri: hyper::Uri = format!("http://{addr}/status").parse()?;
        let response = client.get(uri).await?;
        if !response.status().is_success() {
            return Err(anyhow!("HTTP {}", response.status()));
        }
        let body = response.into_body().collect().await?.to_bytes();
        serde_json::from_slice::<NodeStatus>(&body).context("not a raftkv status")
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, fetch).await {
        Ok(Ok(status)) => Ok(status),
        Ok(Err(err)) => Err(format!("{err:#}")),
        Err(_) => Err("timed out".into()),
    }
}

async fn survey(client: &HttpClient, seeds: &[String]) -> View {
    let mut answers: Vec<(String, Result<NodeStatus, String>)> = Vec::new();
    let mut asked: Vec<String> = Vec::new();
    let mut queue: Vec<String> = seeds.to_vec();
    while !queue.is_empty() {
        let batch: Vec<String> = std::mem::take(&mut queue)
            .into_iter()
            .filter(|addr| !asked.contains(addr))
            .collect();
        let fetched = futures_join(client, &batch).await;
        asked.extend(batch);
        for (addr, answer) in fetched {
            if let Ok(status) = &answer {
                for member in &status.members {
                    if let Some(http) = &member.http_addr {
                        if !asked.contains(http) && !queue.contains(http) {
                            queue.push(http.clone());
                        }
                    }
                }
            }
            answers.push((addr, answer));
        }
    }
    let members = answers
        .iter()
        .find_map(|(_, answer)| answer.as_ref().ok().map(|s| s.members.clone()))
        .unwrap_or_default();
    let mut nodes = BTreeMap::new();
    let mut unknown_down = Vec::new();
    for (addr, answer) in answers {
        let member = match &answer {
            Ok(status) => members.iter().find(|m| m.id == status.id),
            Err(_) => members
                .iter()
                .find(|m| m.http_addr.as_deref() == Some(addr.as_str())),
        };
        match (member, answer) {
            (Some(member), answer) => {
                nodes.insert(
                    member.id,
                    Row {
                        http_addr: addr,
                        client_addr: member.client_addr.clone(),
                        answer,
                    },
                );
            }
            (None, Ok(status)) => {
                nodes.insert(
                    status.id,
                    Row {
                        http_addr: addr,
                        client_addr: String::new(),
                        answer: Ok(status),
                    },
                );
            }
            (None, Err(err)) => unknown_down.push((addr, err)),
        }
    }
    // Members with no HTTP address could not be asked.
    for member in &members {
        nodes.entry(member.id).or_insert_with(|| Row {
            http_addr: member.http_addr.clone().unwrap_or_else(|| "-".into()),
            client_addr: member.client_addr.clone(),
            answer: Err("no http_addr configured".into()),
        });
    }
    View {
        nodes,
        unknown_down,
    }
}

async fn futures_join(
    client: &HttpClient,
    addrs: &[String],
) -> Vec<(String, Result<NodeStatus, String>)> {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, addr) in addrs.iter().enumerate() {
        let (client, addr) = (client.clone(), addr.clone());
        tasks.spawn(async move {
            let answer = fetch(&client, &addr).await;
            (i, addr, answer)
        });
    }
    let mut results = Vec::new();
    while let Some(Ok(result)) = tasks.join_next().await {
        results.push(result);
    }
    results.sort_by_key(|(i, _, _)| *i);
    results.into_iter().map(|(_, a, r)| (a, r)).collect()
}

impl View {
    fn leader(&self) -> Option<&NodeStatus> {
        self.nodes
            .values()
            .filter_map(|row| row.answer.as_ref().ok())
            .find(|status| status.role == "leader")
    }

    fn majority_answered(&self) -> bool {
        let answered = self.nodes.values().filter(|row| row.answer.is_ok()).count();
        !self.nodes.is_empty() && answered > self.nodes.len() / 2
    }

    fn lag_of(&self, id: u64) -> Option<u64> {
        let leader = self.leader()?;
        if leader.id == id {
            return Some(0);
        }
        leader.peers.iter().find(|p| p.id == id).map(|p| p.lag)
    }

    fn table(&self) -> String {
        let header = [
            "node", "client", "http", "role", "term", "commit", "applied", "lag", "disk",
            "snapshot", "health",
        ];
        let mut rows: Vec<Vec<String>> = Vec::new();
        for (id, row) in &self.nodes {
            let cells = match &row.answer {
                Ok(s) => vec![
                    id.to_string(),
                    row.client_addr.clone(),
                    row.http_addr.clone(),
                    s.role.clone(),
                    s.term.to_string(),
                    s.commit_index.to_string(),
                    s.applied_index.to_string(),
                    self.lag_of(*id).map_or("-".into(), |lag| lag.to_string()),
                    human_bytes(s.disk_bytes),
                    s.snapshot_index.to_string(),
                    match &s.unhealthy {
                        None => "ok".into(),
                        Some(why) => format!("unhealthy: {why}"),
                    },
                ],
                Err(err) => vec![
                    id.to_string(),
                    row.client_addr.clone(),
                    row.http_addr.clone(),
                    "down".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    format!("unreachable: {err}"),
                ],
            };
            rows.push(cells);
        }
        for (addr, err) in &self.unknown_down {
            let mut cells = vec!["?".to_string(), "-".into(), addr.clone(), "down".into()];
            cells.extend(std::iter::repeat_n("-".to_string(), 6));
            cells.push(format!("unreachable: {err}"));
            rows.push(cells);
        }
        let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.len());
            }
        }
        let mut out = String::new();
        let mut line = |cells: Vec<String>| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            out.push_str(padded.join("  ").trim_end());
            out.push('\n');
        };
        line(header.iter().map(|h| h.to_string()).collect());
        for row in rows {
            line(row);
        }
        let answered = self.nodes.values().filter(|r| r.answer.is_ok()).count();
        out.push_str(&match self.leader() {
            Some(leader) => format!(
                "leader: node {} (term {}); {answered} of {} nodes answered\n",
                leader.id,
                leader.term,
                self.nodes.len()
            ),
            None => format!(
                "no leader among the nodes that answered; {answered} of {} nodes answered\n",
                self.nodes.len()
            ),
        });
        out
    }

    fn to_json(&self) -> String {
        let nodes: Vec<serde_json::Value> = self
            .nodes
            .iter()
            .map(|(id, row)| match &row.answer {
                Ok(status) => serde_json::json!({
                    "id": id,
                    "http_addr": row.http_addr,
                    "up": true,
                    "lag": self.lag_of(*id),
                    "status": status,
                }),
                Err(err) => serde_json::json!({
                    "id": id,
                    "http_addr": row.http_addr,
                    "client_addr": row.client_addr,
                    "up": false,
                    "error": err,
                }),
            })
            .collect();
        serde_json::json!({
            "leader": self.leader().map(|l| l.id),
            "majority_answered": self.majority_answered(),
            "nodes": nodes,
        })
        .to_string()
    }
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

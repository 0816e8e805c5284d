//! `raftkv members`: list the cluster's members, add, promote and remove them.
//!
//! Every command talks to the leader (found from any address given) on the client port, waits until
//! the change has committed, and prints the membership as it then is. Exit status 0 on success; 1 with
//! a one-line reason when the cluster refused the change (nothing changed); 2 for bad usage; 4 when no
//! leader could be reached; 5 when the change's outcome is unknown (check with `members list`).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use raftkv_client::proto::{is_valid_address, MembersRequest, MembersTable};
use raftkv_client::{Client, Config, Error};

#[derive(clap::Args)]
pub struct Args {
    /// Client addresses of some of the cluster's nodes, comma-separated; any live one will do.
    #[arg(long, value_delimiter = ',', default_value = crate::DEFAULT_ADDRS, global = true)]
    addr: Vec<String>,
    /// Seconds to wait for the leader (and, for `add`, for the new node to catch up).
    #[arg(long, default_value_t = 30, global = true)]
    timeout: u64,
    /// Print the membership as JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(flatten)]
    tls: crate::tls_args::TlsArgs,
    #[command(subcommand)]
    command: MembersCommand,
}

#[derive(clap::Subcommand)]
enum MembersCommand {
    /// The members: id, voter or learner, addresses, the leader, and how far each lags behind it.
    List,
    /// Add a node. By default it joins as a learner, and is promoted to voter once it has caught up;
    /// with --learner it stays a learner (a read replica that never votes).
    Add {
        #[arg(long)]
        id: u64,
        /// Where clients reach the new node (host:port).
        #[arg(long, value_name = "HOST:PORT")]
        client_addr: String,
        /// Where the other nodes reach it (host:port).
        #[arg(long, value_name = "HOST:PORT")]
        peer_addr: String,
        /// Where Redis clients reach it (host:port), if it has a RESP port: recorded with the
        /// membership so that the other nodes can relay Redis clients to it when it leads.
        #[arg(long, value_name = "HOST:PORT")]
        resp_addr: Option<String>,
        #[arg(long)]
        learner: bool,
    },
    /// Make a caught-up learner a voter.
    Promote {
        #[arg(long)]
        id: u64,
    },
    /// Remove a voter or learner (the leader too: it hands over first).
    Remove {
        #[arg(long)]
        id: u64,
    },
}

pub fn run(args: Args) -> ExitCode {
    let tls = match args.tls.client_config() {
        Ok(tls) => tls,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::from(2);
        }
    };
    let id = match &args.command {
        MembersCommand::List => None,
        MembersCommand::Add { id, .. }
        | MembersCommand::Promote { id }
        | MembersCommand::Remove { id } => Some(*id),
    };
    if id == Some(0) {
        eprintln!("error: --id must be a positive node id");
        return ExitCode::from(2);
    }
    if let MembersCommand::Add {
        client_addr,
        peer_addr,
        resp_addr,
        ..
    } = &args.command
    {
        let addrs = [("--client-addr", client_addr), ("--peer-addr", peer_addr)];
        for (flag, addr) in addrs
            .into_iter()
            .chain(resp_addr.iter().map(|a| ("--resp-addr", a)))
        {
            if !is_valid_address(addr) {
                eprintln!("error: {flag} {addr:?} is not host:port");
                return ExitCode::from(2);
            }
        }
    }
    let config = Config {
        deadline: Duration::from_secs(args.timeout.clamp(1, 3600)),
        tls,
        ..Config::default()
    };
    let client = match Client::new(&args.addr, config) {
        Ok(client) => client,
        Err(error) => return fail(&error),
    };
    let Some(runtime) = crate::command_runtime() else {
        return ExitCode::from(6);
    };
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let result = runtime.block_on(async {
        match args.command {
            MembersCommand::List => client.members().await,
            MembersCommand::Add {
                id,
                client_addr,
                peer_addr,
                resp_addr,
                learner,
            } => {
                let add = MembersRequest::AddLearner {
                    id,
                    client_addr,
                    peer_addr,
                    resp_addr,
                };
                let table = client.members_request(&add).await?;
                if learner {
                    return Ok(table);
                }
                promote_when_caught_up(&client, id, deadline).await
            }
            MembersCommand::Promote { id } => {
                client
                    .members_request(&MembersRequest::Promote { id })
                    .await
            }
            MembersCommand::Remove { id } => {
                client.members_request(&MembersRequest::Remove { id }).await
            }
        }
    });
    match result {
        Ok(table) => {
            if args.json {
                println!("{}", to_json(&table));
            } else {
                print!("{}", render(&table));
            }
            ExitCode::SUCCESS
        }
        Err(error) => fail(&error),
    }
}

/// Promotes learner `id` as soon as the leader finds it caught up, asking again until `deadline`.
async fn promote_when_caught_up(
    client: &Client,
    id: u64,
    deadline: Instant,
) -> Result<MembersTable, Error> {
    let promote = MembersRequest::Promote { id };
    let mut last_reason = String::new();
    loop {
        match client.members_request(&promote).await {
            Err(Error::MembershipRefused(reason))
                if reason.contains("not caught up") || reason.contains("in progress") =>
            {
                if Instant::now() >= deadline {
                    return Err(Error::MembershipRefused(format!(
                        "added as a learner, but not promoted before the timeout: {reason}"
                    )));
                }
                if reason != last_reason {
                    eprintln!("waiting: {reason}");
                    last_reason = reason;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => return other,
        }
    }
}

fn fail(error: &Error) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::from(match error {
        Error::MembershipRefused(_) => 1,
        Error::Unavailable(_) | Error::NoAddresses => 4,
        Error::OutcomeUnknown(_) => 5,
        _ => 6,
    })
}

/// The membership as a table, the leader marked, with each member's lag behind the leader's log.
fn render(table: &MembersTable) -> String {
    let mut out = format!(
        "{:<6} {:<8} {:<24} {:<24} {:>12} {:>8}\n",
        "ID", "ROLE", "CLIENT", "PEER", "MATCH", "LAG"
    );
    for m in &table.members {
        let role = match (m.id == table.leader, m.voter) {
            (true, _) => "leader",
            (false, true) => "voter",
            (false, false) => "learner",
        };
        // A table from a node that just stopped leading (it removed itself) knows no progress.
        let (matched, lag) = if table.leader == 0 {
            ("-".to_string(), "-".to_string())
        } else {
            let lag = table.last_index.saturating_sub(m.match_index);
            (m.match_index.to_string(), lag.to_string())
        };
        out.push_str(&format!(
            "{:<6} {:<8} {:<24} {:<24} {:>12} {:>8}\n",
            m.id, role, m.client_addr, m.peer_addr, matched, lag
        ));
    }
    if !table.committed {
        out.push_str("(a membership change is in progress)\n");
    }
    out
}

fn to_json(table: &MembersTable) -> String {
    let members: Vec<serde_json::Value> = table
        .members
        .iter()
        .map(|m| {
            serde_json::json!({
                "id": m.id,
                "voter": m.voter,
                "leader": m.id == table.leader,
                "client_addr": m.client_addr,
                "peer_addr": m.peer_addr,
                "match_index": m.match_index,
                "lag": table.last_index.saturating_sub(m.match_index),
            })
        })
        .collect();
    serde_json::json!({
        "leader": table.leader,
        "last_index": table.last_index,
        "config_index": table.config_index,
        "committed": table.committed,
        "members": members,
    })
    .to_string()
}

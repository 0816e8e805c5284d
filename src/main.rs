//! `raftkv`: one binary for the server, the local cluster spawner, the client CLI and the load generator.

/// Where `raftkv cluster`'s default five nodes take clients, for the client and bench commands.
const DEFAULT_ADDRS: &str =
    "127.0.0.1:9000,127.0.0.1:9001,127.0.0.1:9002,127.0.0.1:9003,127.0.0.1:9004";

mod backup_cmd;
mod bench;
mod certs_cmd;
mod client_cmd;
mod cluster;
mod join;
mod members_cmd;
mod server_cmd;
mod status_cmd;
mod tls_args;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "raftkv",
    version,
    about = "A Raft-replicated, linearizable key-value store"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node of a cluster.
    Server(server_cmd::Args),
    /// Start a local cluster of N nodes and keep it in the foreground.
    Cluster(cluster::Args),
    /// Talk to a cluster: set, get, getm, cas, delete, or an interactive prompt.
    Client(client_cmd::Args),
    /// Load generator: throughput and latency of a running cluster.
    Bench(bench::Args),
    /// One table of the whole cluster's state, from every node's HTTP /status.
    Status(status_cmd::Args),
    /// Create a CA and certificates for a cluster's nodes and clients (for local and test use).
    Certs(certs_cmd::Args),
    /// Save a consistent point-in-time copy of the whole store to a file (or inspect one).
    Backup(backup_cmd::Args),
    /// Initialise a new node's empty data directory from a backup file.
    Restore(backup_cmd::RestoreArgs),
    /// List the cluster's members; add, promote or remove one (membership changes at runtime).
    Members(members_cmd::Args),
}

/// A single-threaded runtime for a command, or `None` after saying why there is none.
fn command_runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => Some(runtime),
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            None
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Server(args) => server_cmd::run(args),
        Command::Cluster(args) => cluster::run(args),
        Command::Client(args) => client_cmd::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Certs(args) => certs_cmd::run(args),
        Command::Status(args) => status_cmd::run(args),
        Command::Backup(args) => backup_cmd::run(args),
        Command::Restore(args) => backup_cmd::run_restore(args),
        Command::Members(args) => members_cmd::run(args),
    }
}

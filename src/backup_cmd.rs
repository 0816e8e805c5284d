//! `raftkv backup`, `raftkv backup inspect` and `raftkv restore`.
//!
//! A backup is asked of the leader over the client port (`backup`, docs/protocol.md): the leader
//! confirms its leadership (ReadIndex), copies its store once everything committed before the request
//! is applied (a copy-on-write clone: writes go on), encodes the copy on another thread and streams it.
//! The file is written to `<out>.partial`, checked against its checksum as it arrives, synced, and only
//! then renamed to `<out>`: a backup file that exists is whole.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use raftkv_client::{Client, Config};
use raftkv_kv::backup::{read_backup, BackupHeader};
use raftkv_server::config::ClusterConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest wait for any bytes from the leader once the backup has started.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Where a backup is written before it is whole: `<out>.partial` (appended, so that `a.1` and `a.2`
/// do not share one).
fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// Longest header line the leader sends before the file.
const MAX_HEADER_LINE: usize = 512;
/// Attempts at finding a leader that answers the backup (leadership may move meanwhile).
const ATTEMPTS: usize = 5;

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    inspect: Option<Inspect>,
    /// Client addresses of the cluster's nodes, comma-separated; the leader is found from them.
    #[arg(long, value_delimiter = ',', default_value = crate::DEFAULT_ADDRS)]
    addr: Vec<String>,
    /// The backup file to write (written whole or not at all).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the backup's header as JSON at the end.
    #[arg(long)]
    json: bool,
    /// Seconds to wait for a leader.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Disaster recovery: copy a STOPPED node's data directory instead of asking a running cluster
    /// (for when no majority is left to elect a leader). Holds the node's whole log: writes it knew
    /// were committed and those it had but never learned the fate of.
    #[arg(long, value_name = "DIR", conflicts_with = "addr")]
    data_dir: Option<PathBuf>,
    /// With --data-dir: stop at the node's commit index instead of the end of its log.
    #[arg(long, requires = "data_dir")]
    committed_only: bool,
    /// With --data-dir: the cluster id to write into the header.
    #[arg(long, requires = "data_dir", default_value = "offline-copy")]
    cluster_id: String,
    #[command(flatten)]
    tls: crate::tls_args::TlsArgs,
}

#[derive(clap::Subcommand)]
enum Inspect {
    /// Verify a backup file's checksum and contents and print its header.
    Inspect {
        file: PathBuf,
        /// Also list the live keys that start with PREFIX ("" for every key), sorted.
        #[arg(long, value_name = "PREFIX")]
        keys: Option<String>,
        /// Print the header as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
pub struct RestoreArgs {
    /// The backup file.
    #[arg(long)]
    from: PathBuf,
    /// The new cluster's file; the node's data_dir must not exist or be empty.
    #[arg(long)]
    config: PathBuf,
    /// Which node of the config to restore (restore every node from the same file).
    #[arg(long)]
    id: u64,
}

pub fn run(args: Args) -> ExitCode {
    if let Some(Inspect::Inspect { file, keys, json }) = &args.inspect {
        return report(inspect(file, keys.as_deref(), *json));
    }
    let Some(out) = args.out.clone() else {
        eprintln!("error: --out FILE is required (or use `raftkv backup inspect FILE`)");
        return ExitCode::from(2);
    };
    if let Some(dir) = &args.data_dir {
        return report(offline_copy(&args, dir, &out));
    }
    let Some(runtime) = crate::command_runtime() else {
        return ExitCode::FAILURE;
    };
    report(runtime.block_on(backup(&args, &out)))
}

/// `raftkv backup --data-dir`: a backup of a stopped node's data, written whole or not at all.
fn offline_copy(args: &Args, dir: &Path, out: &Path) -> anyhow::Result<()> {
    let created_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let copy = raftkv_server::restore::backup_data_dir(
        dir,
        &args.cluster_id,
        args.committed_only,
        created_ms,
    )?;
    let partial = partial_path(out);
    std::fs::write(&partial, &copy.file)
        .with_context(|| format!("cannot write {}", partial.display()))?;
    std::fs::File::open(&partial)?.sync_all()?;
    std::fs::rename(&partial, out)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), out.display()))?;
    let header = &copy.header;
    if args.json {
        println!("{}", header_json(header, copy.file.len() as u64));
    } else {
        println!(
            "offline copy of {} at index {} (term {}; the node's commit index was {}, its log ended at \
             {}): {} keys, {} bytes -> {}",
            dir.display(),
            header.index,
            header.term,
            copy.commit,
            copy.last,
            header.keys,
            copy.file.len(),
            out.display()
        );
    }
    Ok(())
}

pub fn run_restore(args: RestoreArgs) -> ExitCode {
    report(restore(&args))
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn backup(args: &Args, out: &Path) -> anyhow::Result<()> {
    let tls = args.tls.client_config()?;
    let config = Config {
        deadline: Duration::from_secs_f64(args.timeout.max(0.1)),
        tls: tls.clone(),
        ..Config::default()
    };
    let client = Client::new(&args.addr, config).map_err(|err| anyhow!("{err}"))?;
    let started = Instant::now();
    let mut last_problem = anyhow!("no attempt made");
    for _ in 0..ATTEMPTS {
        // A read finds the leader (following redirects) without writing anything.
        if let Err(err) = client.get("raftkv-backup-probe").await {
            last_problem = anyhow!("no leader found: {err}");
            continue;
        }
        let Some(leader) = client.connected_to() else {
            continue;
        };
        let wait = Duration::from_secs_f64(args.timeout.max(0.1));
        match fetch(&leader, tls.as_ref(), out, wait).await {
            Ok(Fetched::File(header, bytes)) => {
                let elapsed = started.elapsed().as_secs_f64();
                if args.json {
                    println!("{}", header_json(&header, bytes));
                } else {
                    println!(
                        "backup of cluster {:?} at index {} (term {}): {} keys, {} bytes in {:.1} s \
                         ({:.0} MB/s) -> {}",
                        header.cluster_id,
                        header.index,
                        header.term,
                        header.keys,
                        bytes,
                        elapsed,
                        bytes as f64 / 1e6 / elapsed.max(1e-9),
                        out.display()
                    );
                }
                return Ok(());
            }
            Ok(Fetched::TryAgain(why)) => {
                last_problem = anyhow!("{leader}: {why}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => return Err(err),
        }
    }
    Err(last_problem.context("no backup taken"))
}

enum Fetched {
    File(BackupHeader, u64),
    TryAgain(String),
}

/// Asks `leader` for a backup and writes it to `out` (through `<out>.partial`).
async fn fetch(
    leader: &str,
    tls: Option<&std::sync::Arc<raftkv_tls::rustls::ClientConfig>>,
    out: &Path,
    wait: Duration,
) -> anyhow::Result<Fetched> {
    let mut stream = match crate::tls_args::connect(leader, tls).await {
        Ok(stream) => stream,
        Err(err) => return Ok(Fetched::TryAgain(err.to_string())),
    };
    stream.write_all(b"backup\r\n").await?;
    stream.flush().await?;
    let mut buffer = Vec::with_capacity(1 << 20);
    let line_end = loop {
        if let Some(end) = buffer.windows(2).position(|w| w == b"\r\n") {
            break end;
        }
        if buffer.len() > MAX_HEADER_LINE {
            bail!("{leader} answered something that is not a backup");
        }
        // The leader answers once its copy is encoded: allow for a large store.
        match tokio::time::timeout(wait + STALL_TIMEOUT, stream.read_buf(&mut buffer)).await {
            Err(_) => return Ok(Fetched::TryAgain("no answer in time".into())),
            Ok(read) => {
                if read? == 0 {
                    return Ok(Fetched::TryAgain("the connection closed".into()));
                }
            }
        }
    };
    let line = String::from_utf8_lossy(&buffer[..line_end]).into_owned();
    let Some(len) = line
        .strip_prefix("BACKUP ")
        .and_then(|n| n.parse::<u64>().ok())
    else {
        // ERR_REDIRECT (leadership moved) or ERR_INTERNAL (no leader): find the leader again.
        return Ok(Fetched::TryAgain(line));
    };
    buffer.drain(..line_end + 2);
    let partial = partial_path(out);
    let mut file = tokio::fs::File::create(&partial)
        .await
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let written = async {
        let header = receive(&mut stream, &mut file, buffer, len).await?;
        file.sync_all().await?;
        tokio::fs::rename(&partial, out)
            .await
            .with_context(|| format!("cannot rename {} to {}", partial.display(), out.display()))?;
        anyhow::Ok(header)
    }
    .await;
    drop(file);
    let header = match written {
        Ok(header) => header,
        Err(err) => {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(err);
        }
    };
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
    }
    Ok(Fetched::File(header, len))
}

/// Streams `len` bytes of backup (some already in `buffer`) into `file`, checking the checksum on the
/// way and reading the header from the front.
async fn receive(
    stream: &mut raftkv_tls::Stream,
    file: &mut tokio::fs::File,
    mut buffer: Vec<u8>,
    len: u64,
) -> anyhow::Result<BackupHeader> {
    let body_len = len
        .checked_sub(4)
        .ok_or_else(|| anyhow!("a backup of {len} bytes is too short"))?;
    let progress = std::io::stderr().is_terminal();
    let mut received = 0u64;
    let mut crc = 0u32;
    let mut trailer = Vec::with_capacity(4);
    let mut front = Vec::new();
    while received < len {
        if buffer.is_empty() {
            let read = tokio::time::timeout(STALL_TIMEOUT, stream.read_buf(&mut buffer))
                .await
                .map_err(|_| anyhow!("the leader sent nothing for {STALL_TIMEOUT:?}"))??;
            if read == 0 {
                bail!("the leader closed the connection after {received} of {len} bytes");
            }
        }
        let take = buffer.len().min((len - received) as usize);
        let chunk = &buffer[..take];
        let body_part = (body_len.saturating_sub(received) as usize).min(take);
        crc = crc32c::crc32c_append(crc, &chunk[..body_part]);
        trailer.extend_from_slice(&chunk[body_part..]);
        if front.len() < 4096 {
            let want = (4096 - front.len()).min(take);
            front.extend_from_slice(&chunk[..want]);
        }
        file.write_all(chunk).await?;
        received += take as u64;
        buffer.drain(..take);
        if progress {
            eprint!(
                "\r{:>8.1} / {:.1} MB",
                received as f64 / 1e6,
                len as f64 / 1e6
            );
        }
    }
    if progress {
        eprint!("\r{:40}\r", "");
    }
    if trailer.as_slice() != crc.to_le_bytes() {
        bail!("the backup arrived damaged (checksum mismatch); nothing was written");
    }
    raftkv_kv::backup::read_header_prefix(&front).context("the backup's header is damaged")
}

fn inspect(file: &Path, keys: Option<&str>, json: bool) -> anyhow::Result<()> {
    let data = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let (header, store) = read_backup(&data).with_context(|| format!("{}", file.display()))?;
    if json {
        println!("{}", header_json(&header, data.len() as u64));
    } else {
        println!("file        {}", file.display());
        println!("format      {}", header.format);
        println!("cluster     {}", header.cluster_id);
        println!("index       {} (term {})", header.index, header.term);
        println!("keys        {}", header.keys);
        println!("created     {} ms since the Unix epoch", header.created_ms);
        println!("size        {} bytes, checksum ok", data.len());
    }
    if let Some(prefix) = keys {
        let mut listed: Vec<&[u8]> = store
            .keys()
            .filter(|key| key.starts_with(prefix.as_bytes()) && store.is_live(key))
            .collect();
        listed.sort_unstable();
        let mut stdout = std::io::stdout().lock();
        for key in listed {
            stdout.write_all(key)?;
            stdout.write_all(b"\n")?;
        }
    }
    Ok(())
}

fn restore(args: &RestoreArgs) -> anyhow::Result<()> {
    let config = ClusterConfig::load(&args.config)?;
    let data = std::fs::read(&args.from)
        .with_context(|| format!("cannot read {}", args.from.display()))?;
    let header = raftkv_server::restore::restore_node(&config, args.id, &data.into())
        .with_context(|| format!("{}", args.from.display()))?;
    if header.cluster_id != config.cluster_id {
        eprintln!(
            "note: the backup is of cluster {:?}; it now seeds cluster {:?}",
            header.cluster_id, config.cluster_id
        );
    }
    println!(
        "node {} restored from {} (cluster {:?}, index {}, {} keys); restore every node of the new \
         cluster from the same file, then start them",
        args.id,
        args.from.display(),
        header.cluster_id,
        header.index,
        header.keys
    );
    Ok(())
}

fn header_json(header: &BackupHeader, bytes: u64) -> serde_json::Value {
    serde_json::json!({
        "format": header.format,
        "cluster_id": header.cluster_id,
        "index": header.index,
        "term": header.term,
        "keys": header.keys,
        "created_ms": header.created_ms,
        "bytes": bytes,
    })
}

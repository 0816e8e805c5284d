//! `raftkv certs`: a CA and one certificate per node (and one for clients) for a cluster file, for
//! local clusters and tests. Production deployments may bring certificates from their own PKI instead:
//! see docs/security.md for what a node certificate must name.

use anyhow::{bail, Context};
use raftkv_server::config::{ClientTls, ClusterConfig, TlsSettings};
use raftkv_tls::generate::{Authority, Issued};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The cluster file whose nodes get certificates.
    #[arg(long)]
    pub config: PathBuf,
    /// Where to write the files [default: a `tls` directory next to the cluster file].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace files that already exist (a new CA: every node must get the new files).
    #[arg(long)]
    pub force: bool,
    /// Also rewrite the cluster file to use the files: peer mutual TLS on, client port unchanged.
    #[arg(long)]
    pub update_config: bool,
}

pub fn run(args: Args) -> ExitCode {
    match certs(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn certs(args: &Args) -> anyhow::Result<()> {
    let mut config = ClusterConfig::load(&args.config)?;
    let base = args.config.parent().unwrap_or(Path::new("")).to_path_buf();
    let out = args.out.clone().unwrap_or_else(|| base.join("tls"));
    let written = generate(&config, &out, args.force)?;
    println!("wrote {} files to {}", written.len(), out.display());
    for path in &written {
        println!("  {}", path.display());
    }
    let client_mode = config.tls.as_ref().map_or(ClientTls::Off, |tls| tls.client);
    use_files(&mut config, &out, client_mode);
    if args.update_config {
        crate::cluster::write_atomically(&args.config, &config.to_toml())?;
        println!(
            "updated {} to use them (peer mutual TLS on)",
            args.config.display()
        );
    } else {
        println!("\nto use them, add to {}:\n", args.config.display());
        print!("{}", snippet(&config));
    }
    Ok(())
}

/// Writes a new CA, one certificate per node of `config` and one client certificate into `out`;
/// returns the paths written. Refuses to overwrite unless `force`.
pub fn generate(config: &ClusterConfig, out: &Path, force: bool) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<(PathBuf, String)> = Vec::new();
    let ca = Authority::new(&config.cluster_id)?;
    let mut add = |name: String, issued: &Issued| {
        files.push((out.join(format!("{name}.pem")), issued.cert_pem.clone()));
        files.push((out.join(format!("{name}-key.pem")), issued.key_pem.clone()));
    };
    add("ca".into(), ca.ca());
    for node in &config.nodes {
        let mut hosts = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        // The Redis port serves TLS too when the client port does.
        let addrs = [
            Some(&node.client_addr),
            Some(&node.peer_addr),
            node.resp_addr.as_ref(),
        ];
        for addr in addrs.into_iter().flatten() {
            if let Some(host) = host_of(addr) {
                hosts.push(host);
            }
        }
        add(
            format!("node-{}", node.id),
            &ca.issue_node(node.id, &hosts)?,
        );
    }
    add("client".into(), &ca.issue_client("raftkv client")?);
    if !force {
        if let Some((existing, _)) = files.iter().find(|(path, _)| path.exists()) {
            bail!(
                "{} already exists; pass --force to replace every file (and the CA)",
                existing.display()
            );
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for (path, text) in &files {
        write_private(path, text)?;
    }
    Ok(files.into_iter().map(|(path, _)| path).collect())
}

/// Points `config`'s `[tls]` table and its nodes at the files [`generate`] wrote into `dir`, with
/// peer TLS on and the client port as `client`.
pub fn use_files(config: &mut ClusterConfig, dir: &Path, client: ClientTls) {
    config.tls = Some(TlsSettings {
        ca: dir.join("ca.pem"),
        peer: true,
        client,
    });
    for node in &mut config.nodes {
        node.tls_cert = Some(dir.join(format!("node-{}.pem", node.id)));
        node.tls_key = Some(dir.join(format!("node-{}-key.pem", node.id)));
    }
}

fn snippet(config: &ClusterConfig) -> String {
    let mut text = String::new();
    if let Some(tls) = &config.tls {
        text.push_str(&format!(
            "[tls]\nca = \"{}\"\npeer = true\nclient = \"off\"   # or \"on\", or \"verify\" to demand client certificates\n\n",
            tls.ca.display()
        ));
    }
    for node in &config.nodes {
        if let (Some(cert), Some(key)) = (&node.tls_cert, &node.tls_key) {
            text.push_str(&format!(
                "# in the [[nodes]] entry of node {}\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
                node.id,
                cert.display(),
                key.display()
            ));
        }
    }
    text
}

/// The host of `host:port` (without IPv6 brackets).
fn host_of(addr: &str) -> Option<String> {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split_once(']').map(|(host, _)| host.to_string());
    }
    addr.rsplit_once(':').map(|(host, _)| host.to_string())
}

/// Keys are secrets: readable by the owner only.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

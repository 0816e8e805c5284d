//! TLS for raftkv: reading certificate files, building the rustls configurations for peer mutual TLS
//! and for the client port, tying a peer certificate to a node id, and reloading files that change.
//!
//! It owns nothing else: no sockets are opened here (callers hand in their `TcpStream`s), and nothing
//! about Raft, the store or the protocols is known. The crypto provider is *ring*, so no C toolchain
//! beyond what `ring` needs and no OpenSSL are involved.
//!
//! Identity: node `N`'s certificate carries the DNS name [`node_name`]`(N)` (`node-N.raftkv`) among its
//! subject alternative names. A dialler checks that the node it dials presents that name (as a TLS
//! client checks a server's host name); an acceptor checks that the name matches the node id the dialler
//! then claims in raftkv's handshake. Both sides also need a chain to the cluster's CA, so a stranger
//! with no certificate, or one from another CA, fails the TLS handshake before sending a byte of Raft.

mod files;
pub mod generate;
mod reload;
mod stream;

pub use files::{load_certs, load_key, load_roots};
pub use reload::Reloadable;
pub use rustls;
pub use stream::Stream;
pub use tokio_rustls;

use anyhow::{anyhow, bail, Context};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{ClientConfig, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The DNS name that node `id`'s certificate carries, and that its peers check.
pub fn node_name(id: u64) -> String {
    format!("node-{id}.raftkv")
}

/// The three files of one party: the CA it trusts, and its own certificate chain and private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    fn paths(&self) -> Vec<PathBuf> {
        vec![self.ca.clone(), self.cert.clone(), self.key.clone()]
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What a node uses on its peer port: as a server, it demands a client certificate from the CA; as a
/// client, it presents its own and checks the dialled node's name.
#[derive(Clone)]
pub struct PeerTls {
    pub server: Arc<ServerConfig>,
    pub client: Arc<ClientConfig>,
}

impl PeerTls {
    /// Loads node `id`'s peer configuration from `files`, refusing a certificate that does not name the
    /// node (its peers would refuse it anyway; failing here says why at start).
    pub fn load(files: &TlsFiles, id: u64) -> anyhow::Result<PeerTls> {
        let roots = load_roots(&files.ca)?;
        let certs = load_certs(&files.cert)?;
        let key = load_key(&files.key)?;
        check_names_node(&certs, id).with_context(|| {
            format!(
                "{} is not a certificate for node {id} (it must name {})",
                files.cert.display(),
                node_name(id)
            )
        })?;
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .context("cannot build the peer certificate verifier")?;
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .with_context(|| format!("{} does not match its key", files.cert.display()))?;
        // Peer connections live long and are never resumed: tickets would only be bytes the dialler,
        // which otherwise reads nothing, has to process.
        server.send_tls13_tickets = 0;
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .with_context(|| format!("{} does not match its key", files.cert.display()))?;
        Ok(PeerTls {
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }

    /// A [`Reloadable`] peer configuration that re-reads `files` when they change.
    pub fn reloadable(files: TlsFiles, id: u64) -> anyhow::Result<Reloadable<PeerTls>> {
        let paths = files.paths();
        Reloadable::new(paths, move || PeerTls::load(&files, id))
    }
}

/// What a node uses on its client port: its certificate, and, when `require_client_cert`, a demand for
/// a client certificate from the CA.
pub fn client_port_config(
    files: &TlsFiles,
    require_client_cert: bool,
) -> anyhow::Result<Arc<ServerConfig>> {
    let certs = load_certs(&files.cert)?;
    let key = load_key(&files.key)?;
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = if require_client_cert {
        let roots = load_roots(&files.ca)?;
        let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
            .build()
            .context("cannot build the client certificate verifier")?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let config = builder
        .with_single_cert(certs, key)
        .with_context(|| format!("{} does not match its key", files.cert.display()))?;
    Ok(Arc::new(config))
}

/// A [`Reloadable`] client-port configuration.
pub fn reloadable_client_port(
    files: TlsFiles,
    require_client_cert: bool,
) -> anyhow::Result<Reloadable<Arc<ServerConfig>>> {
    let mut paths = files.paths();
    if !require_client_cert {
        paths.remove(0);
    }
    Reloadable::new(paths, move || {
        client_port_config(&files, require_client_cert)
    })
}

/// What a node uses to dial another node's client-facing port (a follower relaying a Redis client to
/// the leader): the CA to check the other node against, and its own certificate for a port that
/// demands one. Re-read when the files change, like the node's other configurations.
pub fn reloadable_relay_client(files: TlsFiles) -> anyhow::Result<Reloadable<Arc<ClientConfig>>> {
    let paths = files.paths();
    Reloadable::new(paths, move || {
        client_config(&files.ca, Some((&files.cert, &files.key)))
    })
}

/// What a client of the client port uses: the CA to check the node against, and optionally its own
/// certificate and key for a node that demands one.
pub fn client_config(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> anyhow::Result<Arc<ClientConfig>> {
    let roots = load_roots(ca)?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .with_context(|| format!("{} does not match its key", cert.display()))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The name a client checks the server's certificate against when it dials `addr` (`host:port`, an
/// IPv6 host in brackets): an IP address or a DNS name.
pub fn server_name_of(addr: &str) -> anyhow::Result<ServerName<'static>> {
    let host = match addr.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => addr.rsplit_once(':').map_or(addr, |(host, _)| host),
    };
    ServerName::try_from(host.to_string()).map_err(|_| anyhow!("'{host}' is not a valid TLS name"))
}

/// Checks that the certificate a peer presented (already verified against the CA by the TLS handshake)
/// names node `id`.
pub fn check_peer_is_node(
    presented: Option<&[CertificateDer<'static>]>,
    id: u64,
) -> anyhow::Result<()> {
    let Some(chain) = presented else {
        bail!("no client certificate");
    };
    check_names_node(chain, id).with_context(|| format!("its certificate does not name node {id}"))
}

fn check_names_node(chain: &[CertificateDer<'_>], id: u64) -> anyhow::Result<()> {
    let end_entity = chain
        .first()
        .ok_or_else(|| anyhow!("empty certificate chain"))?;
    let parsed = ParsedCertificate::try_from(end_entity)?;
    let name = ServerName::try_from(node_name(id))?;
    rustls::client::verify_server_name(&parsed, &name)?;
    // A wildcard (`*.raftkv`) would name every node: one stolen key would be every node's. A name no
    // node has tells a wildcard from a certificate for this node alone.
    let no_node = ServerName::try_from("not-a-node.raftkv")?;
    if rustls::client::verify_server_name(&parsed, &no_node).is_ok() {
        bail!("a wildcard certificate names every node; each node needs its own");
    }
    Ok(())
}

#[cfg(test)]
mod tests;

//! The node's TLS material: loaded at start from the paths in the cluster file, and re-read when the
//! files change (checked every few seconds) or when the node gets SIGHUP, so certificates rotate
//! without a restart.

use crate::config::{ClientTls, ClusterConfig};
use crate::listener;
use anyhow::{anyhow, Context};
use raftkv_tls::rustls::ClientConfig;
use raftkv_tls::{PeerTls, Reloadable, TlsFiles};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{info, warn};

/// How often the certificate files are compared with what was loaded.
const RELOAD_POLL: Duration = Duration::from_secs(2);

/// The TLS configurations a node runs with.
#[derive(Clone, Default)]
pub struct NodeTls {
    pub peer: Option<Arc<Reloadable<PeerTls>>>,
    pub clients: listener::ClientTls,
    /// With client TLS on: how this node dials another node's Redis port to relay a client.
    pub relay: Option<Arc<Reloadable<Arc<ClientConfig>>>>,
}

impl NodeTls {
    /// Loads what `config`'s `[tls]` table asks node `id` to use. Bad or missing files fail the start.
    pub fn load(config: &ClusterConfig, id: u64) -> anyhow::Result<NodeTls> {
        let Some(settings) = &config.tls else {
            return Ok(NodeTls::default());
        };
        let me = config
            .node(id)
            .ok_or_else(|| anyhow!("node {id} is not in the cluster configuration"))?;
        let files = |field| {
            let missing = || anyhow!("nodes[id = {id}].{field} is required by [tls]");
            Ok::<_, anyhow::Error>(TlsFiles {
                ca: settings.ca.clone(),
                cert: me.tls_cert.clone().ok_or_else(missing)?,
                key: me.tls_key.clone().ok_or_else(missing)?,
            })
        };
        let mut tls = NodeTls::default();
        if settings.peer {
            let loaded = PeerTls::reloadable(files("tls_cert")?, id)
                .context("cannot load the peer TLS files")?;
            tls.peer = Some(Arc::new(loaded));
        }
        if settings.client != ClientTls::Off {
            let require_cert = settings.client == ClientTls::Verify;
            let loaded = raftkv_tls::reloadable_client_port(files("tls_cert")?, require_cert)
                .context("cannot load the client-port TLS files")?;
            tls.clients = Some(Arc::new(loaded));
            let relay = raftkv_tls::reloadable_relay_client(files("tls_cert")?)
                .context("cannot load the TLS files to relay Redis clients")?;
            tls.relay = Some(Arc::new(relay));
        }
        Ok(tls)
    }

    /// Re-reads the files when they change or on SIGHUP, until `shutdown`. A reload that fails keeps
    /// the configuration in use and says why.
    pub async fn watch(self, mut shutdown: watch::Receiver<bool>) {
        if self.peer.is_none() && self.clients.is_none() && self.relay.is_none() {
            return;
        }
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup = signal(SignalKind::hangup()).ok();
        let mut poll = tokio::time::interval(RELOAD_POLL);
        loop {
            let hangup_received = async {
                match hangup.as_mut() {
                    Some(hangup) => hangup.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = poll.tick() => {}
                _ = hangup_received => info!("SIGHUP: checking the TLS files"),
                _ = shutdown.changed() => return,
            }
            if let Some(peer) = &self.peer {
                report("peer", peer.reload_if_changed());
            }
            if let Some(clients) = &self.clients {
                report("client-port", clients.reload_if_changed());
            }
            if let Some(relay) = &self.relay {
                report("relay", relay.reload_if_changed());
            }
        }
    }
}

fn report(which: &str, outcome: anyhow::Result<bool>) {
    match outcome {
        Ok(true) => info!("reloaded the {which} TLS certificate files; new connections use them"),
        Ok(false) => {}
        Err(err) => warn!("keeping the current {which} TLS configuration: {err:#}"),
    }
}

//! The `--tls-ca/--tls-cert/--tls-key` flags shared by the client and bench commands, and connecting
//! with them.

use anyhow::bail;
use raftkv_tls::rustls::ClientConfig;
use raftkv_tls::tokio_rustls::TlsConnector;
use raftkv_tls::Stream;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpStream;

#[derive(clap::Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// Speak TLS to the client port, checking the nodes' certificates against this CA (PEM).
    #[arg(long, value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for nodes that demand one; needs --tls-key and --tls-ca.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The TLS configuration the flags ask for, or `None` for plain TCP.
    pub fn client_config(&self) -> anyhow::Result<Option<Arc<ClientConfig>>> {
        let Some(ca) = &self.tls_ca else {
            if self.tls_cert.is_some() {
                bail!("--tls-cert needs --tls-ca (the CA that signed the nodes' certificates)");
            }
            return Ok(None);
        };
        let identity = self.tls_cert.as_deref().zip(self.tls_key.as_deref());
        Ok(Some(raftkv_client::tls_config(ca, identity)?))
    }
}

/// Connects to `address`, over TLS when `tls` is given.
pub async fn connect(address: &str, tls: Option<&Arc<ClientConfig>>) -> std::io::Result<Stream> {
    let tcp = TcpStream::connect(address).await?;
    tcp.set_nodelay(true)?;
    match tls {
        None => Ok(Stream::from(tcp)),
        Some(tls) => {
            let name = raftkv_tls::server_name_of(address).map_err(std::io::Error::other)?;
            Ok(Stream::from(
                TlsConnector::from(tls.clone()).connect(name, tcp).await?,
            ))
        }
    }
}

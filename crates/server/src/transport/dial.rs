//! Outbound peer connections: connecting to a peer and checking its answer to our handshake.

use super::handshake::{read_handshake, write_handshake, HANDSHAKE_TIMEOUT};
use crate::wire::{Handshake, PROTOCOL_VERSION};
use anyhow::{anyhow, bail};
use bytes::BytesMut;
use raftkv_tls::{node_name, PeerTls, Reloadable, Stream};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A peer that accepts no bytes for this long is treated as dead, so its connection gets re-established.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to `peer_addr` and exchanges handshakes, checking that node `peer_id` of our cluster answers
/// and agrees on what the connection carries (`hello.stream`). With `tls`, the TLS handshake comes
/// first and the peer's certificate must name node `peer_id`.
pub(crate) async fn dial(
    peer_addr: &str,
    hello: &Handshake,
    peer_id: u64,
    tls: Option<&Reloadable<PeerTls>>,
) -> anyhow::Result<Stream> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(peer_addr))
        .await
        .map_err(|_| anyhow!("connect timed out"))??;
    tcp.set_nodelay(true)?;
    let exchange = async {
        let mut stream = match tls {
            None => Stream::from(tcp),
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(node_name(peer_id))?;
                let connector = TlsConnector::from(tls.get().client);
                Stream::from(
                    connector
                        .connect(name, tcp)
                        .await
                        .map_err(|err| anyhow!("TLS handshake failed: {err}"))?,
                )
            }
        };
        write_handshake(&mut stream, hello).await?;
        let mut buf = BytesMut::new();
        let answer = read_handshake(&mut stream, &mut buf)
            .await?
            .ok_or_else(|| {
                anyhow!("peer closed the connection during the handshake (rejected us?)")
            })?;
        if answer.protocol_version != PROTOCOL_VERSION
            || answer.cluster_id != hello.cluster_id
            || answer.node_id != peer_id
            || answer.stream != hello.stream
        {
            bail!(
                "unexpected handshake answer: node {} of cluster '{}' speaking version {}",
                answer.node_id,
                answer.cluster_id,
                answer.protocol_version
            );
        }
        anyhow::Ok(stream)
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow!("handshake timed out"))?
}

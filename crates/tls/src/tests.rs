//! Real TLS handshakes over loopback between configurations built from generated files.

use super::*;
use crate::generate::{Authority, Issued};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

fn write(dir: &Path, name: &str, issued: &Issued) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}-key.pem"));
    std::fs::write(&cert, &issued.cert_pem).unwrap();
    std::fs::write(&key, &issued.key_pem).unwrap();
    (cert, key)
}

/// A CA and nodes 1 and 2 in `dir`; returns each node's files.
fn cluster(dir: &Path, ca_name: &str) -> (TlsFiles, TlsFiles) {
    let ca = Authority::new("test").unwrap();
    let (ca_path, _) = write(dir, ca_name, ca.ca());
    let files = |id: u64| {
        let issued = ca.issue_node(id, &["127.0.0.1".to_string()]).unwrap();
        let (cert, key) = write(dir, &format!("{ca_name}-node-{id}"), &issued);
        TlsFiles {
            ca: ca_path.clone(),
            cert,
            key,
        }
    };
    (files(1), files(2))
}

/// Node `dialler` connects to an acceptor using `server`; returns the acceptor's verdict on the claimed
/// node id `claimed`, or the handshake error.
async fn connect(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    dial_name: &str,
    claimed: u64,
) -> anyhow::Result<()> {
    let name = ServerName::try_from(dial_name.to_string())?;
    exchange(server, client, name, Some(claimed)).await
}

/// A TLS handshake and one byte each way between `client`, dialling `name`, and `server`; with
/// `claimed`, the acceptor also checks that the client's certificate names that node.
async fn exchange(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    name: ServerName<'static>,
    claimed: Option<u64>,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let accept = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tls = TlsAcceptor::from(server).accept(tcp).await?;
        if let Some(claimed) = claimed {
            check_peer_is_node(tls.get_ref().1.peer_certificates(), claimed)?;
        }
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await?;
        tls.write_all(&byte).await?;
        anyhow::Ok(())
    });
    let tcp = TcpStream::connect(addr).await?;
    let dialled = async {
        let mut tls = TlsConnector::from(client).connect(name, tcp).await?;
        tls.write_all(b"x").await?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await?;
        anyhow::Ok(())
    }
    .await;
    let accepted = accept.await?;
    accepted.and(dialled)
}

#[tokio::test]
async fn peers_of_one_ca_connect_and_are_identified() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = cluster(dir.path(), "ca");
    let server = PeerTls::load(&one, 1).unwrap().server;
    let client = PeerTls::load(&two, 2).unwrap().client;
    connect(server.clone(), client.clone(), &node_name(1), 2)
        .await
        .unwrap();
    // Node 2 claiming to be node 3 is refused after the handshake.
    let err = connect(server, client, &node_name(1), 3).await.unwrap_err();
    assert!(
        format!("{err:#}").contains("does not name node 3"),
        "{err:#}"
    );
}

#[tokio::test]
async fn dialler_checks_it_reached_the_node_it_dialled() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = cluster(dir.path(), "ca");
    let server = PeerTls::load(&one, 1).unwrap().server;
    let client = PeerTls::load(&two, 2).unwrap().client;
    // Node 1's certificate does not name node 3: a dialler looking for node 3 refuses it.
    assert!(connect(server, client, &node_name(3), 2).await.is_err());
}

#[tokio::test]
async fn certificates_of_another_ca_or_none_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (one, _) = cluster(dir.path(), "ca");
    let (_, stranger) = cluster(dir.path(), "other-ca");
    let server = PeerTls::load(&one, 1).unwrap().server;
    // A certificate that names node 2 but comes from another CA.
    let forged = client_config(&one.ca, Some((&stranger.cert, &stranger.key))).unwrap();
    assert!(connect(server.clone(), forged, &node_name(1), 2)
        .await
        .is_err());
    // No client certificate at all.
    let anonymous = client_config(&one.ca, None).unwrap();
    assert!(connect(server, anonymous, &node_name(1), 2).await.is_err());
}

#[test]
fn a_certificate_for_another_node_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let (one, _) = cluster(dir.path(), "ca");
    let err = PeerTls::load(&one, 2).err().unwrap();
    assert!(
        format!("{err:#}").contains("not a certificate for node 2"),
        "{err:#}"
    );
}

#[tokio::test]
async fn client_port_checks_the_host_and_optionally_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (one, _) = cluster(dir.path(), "ca");
    let plain_clients = client_port_config(&one, false).unwrap();
    let anonymous = client_config(&one.ca, None).unwrap();
    connect_client(plain_clients.clone(), anonymous.clone(), "127.0.0.1:1")
        .await
        .unwrap();
    // The certificate names 127.0.0.1, not 127.0.0.2.
    assert!(
        connect_client(plain_clients, anonymous.clone(), "127.0.0.2:1")
            .await
            .is_err()
    );
    let demanding = client_port_config(&one, true).unwrap();
    assert!(connect_client(demanding.clone(), anonymous, "127.0.0.1:1")
        .await
        .is_err());
    // A node's certificate is also good as a client certificate (it is issued for both uses).
    let identified = client_config(&one.ca, Some((&one.cert, &one.key))).unwrap();
    connect_client(demanding, identified, "127.0.0.1:1")
        .await
        .unwrap();
}

async fn connect_client(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    addr_for_name: &str,
) -> anyhow::Result<()> {
    exchange(server, client, server_name_of(addr_for_name)?, None).await
}

#[test]
fn reload_picks_up_new_files_and_keeps_the_old_ones_on_error() {
    let dir = tempfile::tempdir().unwrap();
    let (one, _) = cluster(dir.path(), "ca");
    let reloadable = PeerTls::reloadable(one.clone(), 1).unwrap();
    assert!(!reloadable.reload_if_changed().unwrap());
    let before = reloadable.get().server;
    // A new certificate for node 1 from the same CA... simulated by a new CA and all three files.
    let (fresh, _) = cluster(dir.path(), "ca2");
    for (from, to) in [
        (&fresh.ca, &one.ca),
        (&fresh.cert, &one.cert),
        (&fresh.key, &one.key),
    ] {
        std::fs::copy(from, to).unwrap();
    }
    assert!(reloadable.reload_if_changed().unwrap());
    assert!(!Arc::ptr_eq(&before, &reloadable.get().server));
    // A key that does not match the certificate: the reload fails and the last good value stays.
    let current = reloadable.get().server;
    std::fs::copy(&one.key, dir.path().join("saved-key.pem")).unwrap();
    let (other, _) = cluster(dir.path(), "ca3");
    std::fs::copy(&other.key, &one.key).unwrap();
    assert!(reloadable.reload_if_changed().is_err());
    assert!(Arc::ptr_eq(&current, &reloadable.get().server));
}

#[test]
fn a_wildcard_name_does_not_make_a_certificate_every_node_s() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new("test").unwrap();
    let (ca_path, _) = write(dir.path(), "ca", ca.ca());
    let issued = ca.issue_node(1, &["*.raftkv".to_string()]).unwrap();
    let (cert, key) = write(dir.path(), "wild", &issued);
    let files = TlsFiles {
        ca: ca_path,
        cert,
        key,
    };
    // webpki never lets `*.raftkv` match (a wildcard needs two labels after it), and the check for
    // a name no node has would refuse one that did: either way the certificate cannot be node 2's.
    assert!(PeerTls::load(&files, 2).is_err());
    let certs = load_certs(&files.cert).unwrap();
    assert!(check_peer_is_node(Some(&certs), 2).is_err());
    assert!(check_peer_is_node(Some(&certs), 1).is_ok());
}

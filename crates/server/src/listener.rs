//! Accepting client connections, within a limit, and turning signals into a shutdown request.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tracing::{debug, info, warn};

use crate::connection;
use crate::request::ClientRequest;
use raftkv_tls::{Reloadable, Stream};
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// The client port's TLS configuration, when it has one.
pub type ClientTls = Option<Arc<Reloadable<Arc<ServerConfig>>>>;

/// The one line a client over the connection limit gets before the server closes its connection.
pub const TOO_MANY_CONNECTIONS: &[u8] = b"ERR_INTERNAL too many connections\r\n";

pub async fn accept_clients(
    listener: TcpListener,
    node: mpsc::Sender<ClientRequest>,
    max_connections: usize,
    limits: connection::Limits,
    tls: ClientTls,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        // Accepting never waits for a free slot: at the limit a newcomer is told so and closed, so a
        // crowd of idle sockets cannot hold the accept queue (and every later client) hostage.
        let socket = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(err) => {
                    // Typically out of file descriptors: back off briefly rather than spin.
                    warn!("accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tokio::spawn(refuse(socket));
            continue;
        };
        let node = node.clone();
        let limits = limits.clone();
        let tls = tls.as_ref().map(|tls| TlsAcceptor::from(tls.get()));
        tokio::spawn(async move {
            let stream = match tls {
                None => Stream::from(socket),
                Some(acceptor) => {
                    // A TLS handshake is a request like any other: one that stalls is dropped.
                    let accepted =
                        accept_tls(socket, acceptor, limits.request_timeout, TLS_REQUIRED).await;
                    let Some(stream) = accepted else {
                        return;
                    };
                    stream
                }
            };
            connection::serve(stream, limits, node).await;
            drop(permit);
        });
    }
}

/// Tells a client over the connection limit why it is being closed (within a second: a refused client
/// that does not read gets nothing more).
async fn refuse(mut socket: TcpStream) {
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        socket.write_all(TOO_MANY_CONNECTIONS),
    )
    .await;
    let _ = socket.shutdown().await;
}

/// The one line a plain-text client of a TLS-only client port gets, instead of a silent close.
pub const TLS_REQUIRED: &[u8] = b"ERR_INTERNAL this port requires TLS\r\n";

/// The TLS side of a client-facing port: the handshake, within `timeout`. A client that starts in
/// plain text is sent `refusal` (one line saying why, in its own protocol) and dropped.
pub(crate) async fn accept_tls(
    socket: TcpStream,
    acceptor: TlsAcceptor,
    timeout: Duration,
    refusal: &[u8],
) -> Option<Stream> {
    let handshake = async {
        refuse_plain_text(&socket, refusal).await?;
        acceptor.accept(socket).await
    };
    match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(tls)) => Some(Stream::from(tls)),
        Ok(Err(err)) => {
            debug!("client TLS handshake failed: {err}");
            None
        }
        Err(_) => {
            debug!("client TLS handshake timed out");
            None
        }
    }
}

/// Fails, after sending `refusal` in plain text, if the connection does not start with a TLS record
/// (a handshake record starts with byte 22).
async fn refuse_plain_text(socket: &TcpStream, refusal: &[u8]) -> std::io::Result<()> {
    const TLS_HANDSHAKE_RECORD: u8 = 22;
    let mut first = [0u8; 1];
    if socket.peek(&mut first).await? == 1 && first[0] != TLS_HANDSHAKE_RECORD {
        let _ = socket.try_write(refusal);
        // Read what the client sent before the socket is dropped: closing with unread bytes sends
        // a reset, which can overtake the refusal on a real network.
        // Only what has arrived, and at most 64 KiB: a client that keeps sending gets its reset.
        let mut sink = [0u8; 4096];
        for _ in 0..16 {
            if !matches!(socket.try_read(&mut sink), Ok(n) if n > 0) {
                break;
            }
        }
        return Err(std::io::Error::other("plain text on a TLS client port"));
    }
    Ok(())
}

/// SIGTERM or SIGINT starts a graceful shutdown.
pub async fn forward_signals(shutdown: watch::Sender<bool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        warn!("cannot install signal handlers; stop the node with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = int.recv() => info!("SIGINT received"),
    }
    let _ = shutdown.send(true);
}

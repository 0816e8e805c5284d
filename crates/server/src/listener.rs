//! Accepting client connections, within a limit, and turning signals into a shutdown request.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tracing::{info, warn};

use crate::connection;
use crate::request::ClientRequest;

pub async fn accept_clients(
    listener: TcpListener,
    node: mpsc::Sender<ClientRequest>,
    max_connections: usize,
    limits: connection::Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            _ = shutdown.changed() => return,
        };
        let socket = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(err) => {
                    // Typically out of file descriptors: back off briefly rather than spin.
                    warn!("accept failed: {err}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let node = node.clone();
        tokio::spawn(async move {
            connection::serve(socket, limits, node).await;
            drop(permit);
        });
    }
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

//! The node's HTTP endpoint: `GET /metrics` (Prometheus), `GET /health` (200 or 503 with the reason)
//! and `GET /status` (JSON). Served by axum on `http_addr`; it only reads what the node loop publishes,
//! so a slow scraper never slows the node.

use crate::metrics::Metrics;
use crate::status::NodeStatus;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(Clone)]
struct Shared {
    metrics: Arc<Metrics>,
    status: watch::Receiver<NodeStatus>,
}

/// Serves until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    status: watch::Receiver<NodeStatus>,
    mut shutdown: watch::Receiver<bool>,
) {
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/health", get(health))
        .route("/status", get(status_json))
        .with_state(Shared { metrics, status });
    let stop = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    if let Err(err) = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::warn!("the HTTP endpoint stopped: {err}");
    }
}

async fn metrics_text(State(shared): State<Shared>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.encode(),
    )
        .into_response()
}

async fn health(State(shared): State<Shared>) -> Response {
    let status = shared.status.borrow().clone();
    let body = serde_json::json!({
        "healthy": status.healthy(),
        "reason": status.unhealthy,
        "id": status.id,
        "leader": status.leader,
    });
    let code = if status.healthy() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

async fn status_json(State(shared): State<Shared>) -> Json<NodeStatus> {
    Json(shared.status.borrow().clone())
}

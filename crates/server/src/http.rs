//! The node's HTTP endpoint: `GET /metrics` (Prometheus), `GET /health` (200 or 503 with the reason)
//! `GET /status` (JSON) and `GET /digest` (JSON: the state machine's digest at its applied index, for
//! checking that replicas converged). Served by axum on `http_addr`; it only reads what the node loop
//! publishes, so a slow scraper never slows the node (a digest request only raises a counter the node
//! loop looks at when it next publishes).

use crate::metrics::Metrics;
use crate::status::NodeStatus;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(Clone)]
struct Shared {
    metrics: Arc<Metrics>,
    status: watch::Receiver<NodeStatus>,
    digest_requests: Arc<AtomicU64>,
}

/// Longest wait for the node loop to answer a digest request.
const DIGEST_WAIT: Duration = Duration::from_secs(5);

/// Serves until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    status: watch::Receiver<NodeStatus>,
    digest_requests: Arc<AtomicU64>,
    mut shutdown: watch::Receiver<bool>,
) {
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/health", get(health))
        .route("/status", get(status_json))
        .route("/digest", get(digest_json))
        .with_state(Shared {
            metrics,
            status,
            digest_requests,
        });
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

async fn digest_json(State(mut shared): State<Shared>) -> Response {
    let request = shared.digest_requests.fetch_add(1, Ordering::SeqCst) + 1;
    let answered = shared.status.wait_for(|status| {
        status
            .digest
            .as_ref()
            .is_some_and(|digest| digest.request >= request)
    });
    match tokio::time::timeout(DIGEST_WAIT, answered).await {
        Ok(Ok(status)) => Json(status.digest.clone()).into_response(),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the node loop did not answer the digest request",
        )
            .into_response(),
    }
}

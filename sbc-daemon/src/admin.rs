//! Admin HTTP endpoint (axum): `/metrics` in the OpenMetrics text format for Prometheus and
//! `/healthz` for liveness checks.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tracing::warn;

use crate::metrics::Metrics;

async fn metrics(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Serves the admin endpoints until the task is aborted.
pub async fn serve(listener: TcpListener, m: Arc<Metrics>) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(m);
    if let Err(e) = axum::serve(listener, app).await {
        warn!(error = %e, "admin endpoint stopped");
    }
}

//! The management listener: health, readiness, Prometheus metrics and the CA certificate.
//!
//! Bound to loopback by default. Everything served here today is public by nature (probes,
//! metrics, the CA's public certificate); the authenticated administration API joins it later.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::warn;

use crate::metrics;
use crate::server::Shared;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(prometheus))
        .route("/ca.pem", get(ca_pem))
        .with_state(shared)
}

pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let stop = async move {
        let _ = shutdown.wait_for(|stopping| *stopping).await;
    };
    if let Err(error) = axum::serve(listener, router(shared))
        .with_graceful_shutdown(stop)
        .await
    {
        warn!(%error, "Admin listener failed.");
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let services = shared.snapshot.load().catalog.services().len();
    let body = serde_json::json!({ "status": "ready", "catalog_services": services });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}

async fn prometheus() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics::render(),
    )
}

async fn ca_pem(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/x-pem-file"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"aigate-ca.pem\"",
            ),
        ],
        shared.ca.cert_pem().to_owned(),
    )
}

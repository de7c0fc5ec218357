//! The management listener: health, readiness, Prometheus metrics and the CA certificate (all
//! public by nature), and the token-protected `/admin/*` surface.
//!
//! Bound to loopback by default. `/admin/*` requires `Authorization: Bearer <token>` whose SHA-256
//! is listed in `[admin] token_sha256`; with no token configured it is closed, not open.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, put};
use axum::{Json, Router};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::audit::{AuditEventRecord, AuditRecord};
use crate::metrics;
use crate::server::Shared;

pub fn router(shared: Arc<Shared>) -> Router {
    let admin = Router::new()
        .route("/admin/bypass", get(list_bypass))
        .route(
            "/admin/bypass/learned/{host}",
            delete(forget_learned_bypass),
        )
        .route(
            "/admin/bypass/permanent/{host}",
            put(add_permanent_bypass).delete(remove_permanent_bypass),
        )
        .route("/admin/reload", axum::routing::post(reload))
        .route_layer(middleware::from_fn_with_state(
            shared.clone(),
            require_token,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(prometheus))
        .route("/ca.pem", get(ca_pem))
        .route("/proxy.pac", get(proxy_pac))
        .merge(admin)
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

async fn require_token(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let Some(token) = presented else {
        return unauthorized("an Authorization: Bearer token is required");
    };
    let digest = hex::encode(Sha256::digest(token.trim().as_bytes()));
    let accepted = shared
        .config
        .admin
        .token_sha256
        .iter()
        .any(|known| known.eq_ignore_ascii_case(&digest));
    if accepted {
        next.run(request).await
    } else {
        warn!(path = %request.uri().path(), "Admin request with an unknown token.");
        unauthorized("the token is not valid")
    }
}

fn unauthorized(message: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(serde_json::json!({ "error": { "type": "unauthorized", "message": message } })),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let services = shared.snapshot.load().catalog.services().len();
    Json(serde_json::json!({ "status": "ready", "catalog_services": services }))
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

async fn proxy_pac(
    State(shared): State<Arc<Shared>>,
    headers: axum::http::HeaderMap,
) -> impl IntoResponse {
    let configured = &shared.config.admin.pac_proxies;
    let proxies = if !configured.is_empty() {
        configured.clone()
    } else if shared.proxy_addr.ip().is_unspecified() {
        // A wildcard listener has no address clients can use: offer the name the client used to
        // reach this listener, with the proxy's port.
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse::<axum::http::uri::Authority>().ok())
            .map_or_else(|| "127.0.0.1".to_owned(), |a| a.host().to_owned());
        vec![format!("{host}:{}", shared.proxy_addr.port())]
    } else {
        vec![shared.proxy_addr.to_string()]
    };
    let snapshot = shared.snapshot.load();
    (
        [
            (header::CONTENT_TYPE, "application/x-ns-proxy-autoconfig"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        crate::front::pac::render(&snapshot.catalog, &shared.config.intercept, &proxies),
    )
}

async fn list_bypass(State(shared): State<Arc<Shared>>) -> Response {
    match shared.store.bypass_hosts().await {
        Ok(permanent) => Json(serde_json::json!({
            "configured": shared.config.intercept.bypass,
            "permanent": permanent,
            "learned": shared.router.learned_bypass(),
        }))
        .into_response(),
        Err(error) => store_unavailable(&error),
    }
}

/// Makes a host a permanent bypass member (kept in the store), ending any learned bypass of it.
async fn add_permanent_bypass(
    State(shared): State<Arc<Shared>>,
    Path(host): Path<String>,
) -> Response {
    let host = crate::host::normalize(&host);
    if !crate::host::is_dns_name(&host) {
        return error_response(
            StatusCode::BAD_REQUEST,
            "invalid_host",
            &format!("{host:?} is not a host name"),
        );
    }
    let was_learned = shared.router.forget_learned_bypass(&host);
    if let Err(error) = shared
        .store
        .add_bypass_host(&host, "promoted by an administrator")
        .await
    {
        return store_unavailable(&error);
    }
    if let Err(error) = reload_permanent_bypass(&shared).await {
        return store_unavailable(&error);
    }
    info!(%host, was_learned, "Host added to the permanent interception bypass.");
    audit_bypass_change(
        &shared,
        &host,
        "add_permanent_bypass",
        serde_json::json!({
            "before": { "permanent_bypass": false, "learned_bypass": was_learned },
            "after": { "permanent_bypass": true, "learned_bypass": false },
        }),
    );
    StatusCode::NO_CONTENT.into_response()
}

async fn remove_permanent_bypass(
    State(shared): State<Arc<Shared>>,
    Path(host): Path<String>,
) -> Response {
    let host = crate::host::normalize(&host);
    let removed = match shared.store.remove_bypass_host(&host).await {
        Ok(removed) => removed,
        Err(error) => return store_unavailable(&error),
    };
    if !removed {
        return error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("{host} is not in the permanent bypass"),
        );
    }
    if let Err(error) = reload_permanent_bypass(&shared).await {
        return store_unavailable(&error);
    }
    info!(%host, "Host removed from the permanent interception bypass.");
    audit_bypass_change(
        &shared,
        &host,
        "remove_permanent_bypass",
        serde_json::json!({
            "before": { "permanent_bypass": true },
            "after": { "permanent_bypass": false },
        }),
    );
    StatusCode::NO_CONTENT.into_response()
}

/// Rebuilds catalog and policies; a bad file leaves the running snapshot in place and the
/// error (file, policy, line) in the response.
async fn reload(State(shared): State<Arc<Shared>>) -> Response {
    match crate::server::reload(&shared).await {
        Ok(reloaded) => {
            tracing::info!(
                services = reloaded.services,
                policies = reloaded.policies,
                "Snapshot reloaded."
            );
            Json(reloaded).into_response()
        }
        Err(error) => {
            warn!(%error, "Reload rejected; the previous snapshot keeps serving.");
            error_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                "reload_rejected",
                &error.to_string(),
            )
        }
    }
}

async fn reload_permanent_bypass(shared: &Shared) -> Result<(), crate::store::StoreError> {
    let hosts = shared.store.bypass_hosts().await?;
    shared.router.set_permanent_bypass(&hosts);
    Ok(())
}

fn store_unavailable(error: &crate::store::StoreError) -> Response {
    warn!(%error, "Admin request failed in the store.");
    error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        "the store is unavailable; retry later",
    )
}

fn error_response(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": { "type": kind, "message": message } })),
    )
        .into_response()
}

/// An admin change to the bypass, with its before/after, in the audit trail.
fn audit_bypass_change(shared: &Shared, host: &str, action: &str, changes: serde_json::Value) {
    shared
        .audit
        .record(AuditRecord::Event(Box::new(AuditEventRecord {
            actor_type: Some("admin_token".to_owned()),
            source: Some("admin_api".to_owned()),
            changes: Some(changes),
            ..AuditEventRecord::about_host("intercept_bypass_changed", "info", action, host)
        })));
}

async fn forget_learned_bypass(
    State(shared): State<Arc<Shared>>,
    Path(host): Path<String>,
) -> Response {
    if shared.router.forget_learned_bypass(&host) {
        info!(%host, "Learned bypass removed by an administrator; the host is intercepted again.");
        audit_bypass_change(
            &shared,
            &host,
            "remove_learned_bypass",
            serde_json::json!({
                "before": { "learned_bypass": true },
                "after": { "learned_bypass": false },
            }),
        );
        StatusCode::NO_CONTENT.into_response()
    } else {
        error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("{host} is not in the learned bypass"),
        )
    }
}

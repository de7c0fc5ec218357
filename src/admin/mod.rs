//! The management listener: health, readiness, Prometheus metrics, the CA certificate and the
//! PAC file (public by nature), and the token-protected administration API and dashboard.
//!
//! Bound to loopback by default. Everything but the public endpoints requires `Authorization:
//! Bearer <token>` mapped to a role (`auth`); every write leaves an `audit_events` row. The
//! router is built with utoipa-axum, so each route is in the OpenAPI document served at
//! `/openapi.json` by construction.

mod api;
pub mod auth;
mod dashboard;
mod error;
mod exceptions;
mod integrations;
mod policies;
mod records;
mod schema;
mod services;

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::auth::{Access, Grant};
use self::error::{ApiError, ApiResult};
use crate::audit::{AuditEventRecord, AuditRecord};
use crate::metrics;
use crate::state::Shared;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "aigate management API",
        description = "Administration of an aigate AI-usage enforcement gateway."
    ),
    modifiers(&BearerScheme),
    components(schemas(
        schema::Page,
        schema::ErrorBody,
        schema::ErrorDetail,
        crate::store::listing::DecisionItem,
        crate::store::listing::ViolationItem,
        crate::store::listing::AuditEventItem,
        crate::store::listing::ExceptionItem,
        crate::store::listing::PolicyItem,
        crate::store::listing::ServiceItem,
        crate::store::listing::PolicyConflictItem,
        crate::store::listing::ShadowAiItem
    ))
)]
struct ApiDoc;

struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The router; `/openapi.json` serves the document utoipa-axum builds from the same routes.
pub fn router(shared: Arc<Shared>) -> Router {
    let protected = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(dashboard::dashboard))
        .routes(routes!(policies::list_policies, policies::create_policy))
        .routes(routes!(policies::get_policy, policies::update_policy))
        .routes(routes!(policies::change_policy_status))
        .routes(routes!(policies::dry_run_policy))
        .routes(routes!(policies::list_conflicts))
        .routes(routes!(
            exceptions::list_exceptions,
            exceptions::request_exception
        ))
        .routes(routes!(exceptions::approve_exception))
        .routes(routes!(exceptions::deny_exception))
        .routes(routes!(exceptions::revoke_exception))
        .routes(routes!(services::list_services, services::create_service))
        .routes(routes!(
            services::get_service,
            services::update_service,
            services::delete_service
        ))
        .routes(routes!(records::list_decisions))
        .routes(routes!(records::decisions_hourly))
        .routes(routes!(records::list_violations))
        .routes(routes!(records::update_violation))
        .routes(routes!(records::list_audit_events))
        .routes(routes!(records::shadow_ai_report))
        .routes(routes!(
            integrations::list_integrations,
            integrations::create_integration
        ))
        .routes(routes!(
            integrations::get_integration,
            integrations::update_integration,
            integrations::delete_integration
        ))
        .routes(routes!(create_token))
        .routes(routes!(list_bypass))
        .routes(routes!(forget_learned_bypass))
        .routes(routes!(add_permanent_bypass, remove_permanent_bypass))
        .routes(routes!(reload))
        .route_layer(middleware::from_fn_with_state(
            shared.clone(),
            auth::require_token,
        ));
    let public = OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(prometheus))
        .routes(routes!(ca_pem))
        .routes(routes!(proxy_pac))
        .routes(routes!(openapi_json));
    let (router, openapi) = public.merge(protected).split_for_parts();
    router
        .layer(Extension(Arc::new(openapi)))
        .with_state(shared)
}

pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let app = router(shared);
    let Some(tls) = tls else {
        let stop = async move {
            let _ = shutdown.wait_for(|stopping| *stopping).await;
        };
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            warn!(%error, "Admin listener failed.");
        }
        return;
    };
    // axum::serve speaks plain TCP only: accept, handshake and hand each stream to hyper.
    loop {
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "Admin accept failed.");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let (tls, app) = (tls.clone(), app.clone());
        tokio::spawn(async move {
            let handshake =
                tokio::time::timeout(std::time::Duration::from_secs(10), tls.accept(socket));
            let stream = match handshake.await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "Admin TLS handshake failed.");
                    return;
                }
                Err(_) => return,
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            if let Err(error) = builder
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, %error, "Admin connection ended with an error.");
            }
        });
    }
}

#[utoipa::path(get, path = "/openapi.json", tag = "public",
    responses((status = 200, description = "This document", body = Object)))]
async fn openapi_json(
    Extension(document): Extension<Arc<utoipa::openapi::OpenApi>>,
) -> Json<utoipa::openapi::OpenApi> {
    Json(document.as_ref().clone())
}

#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    /// Who or what the token is for; recorded as the actor of its changes.
    name: String,
    /// admin, policy_author, auditor or readonly (or any role in the roles table).
    role: String,
}

/// Issues a token; it is shown once, only its SHA-256 is stored.
#[utoipa::path(post, path = "/admin/tokens", tag = "gateway",
    request_body = TokenRequest,
    responses((status = 201, body = Object), (status = 400, body = schema::ErrorBody), (status = 403, body = schema::ErrorBody)),
    security(("bearer" = [])))]
async fn create_token(
    State(shared): State<Arc<Shared>>,
    Extension(grant): Extension<Grant>,
    Json(request): Json<TokenRequest>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    grant.require("gateway", Access::Write)?;
    if request.name.trim().is_empty() {
        return Err(ApiError::bad_request("name is required"));
    }
    let token = auth::generate_token();
    let Some(token_id) = shared
        .store
        .create_admin_token(
            request.name.trim(),
            &request.role,
            &auth::token_sha256(&token),
        )
        .await?
    else {
        return Err(ApiError::bad_request(format!(
            "no role named {:?}",
            request.role
        )));
    };
    api::audit(
        &shared,
        &grant,
        api::Change {
            event_type: "admin_token_created",
            action: "create_token",
            target_type: "admin_token",
            target_id: Some(token_id),
            target_name: Some(request.name.clone()),
            before: serde_json::Value::Null,
            after: serde_json::json!({ "name": request.name, "role": request.role }),
        },
    );
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "token_id": token_id, "token": token, "role": request.role })),
    ))
}

#[utoipa::path(get, path = "/healthz", tag = "public", responses((status = 200, description = "Alive", body = String)))]
async fn healthz() -> &'static str {
    "ok\n"
}

#[utoipa::path(get, path = "/readyz", tag = "public", responses((status = 200, description = "Ready, with the catalog size; \"degraded\" with broken_policies when an active policy does not compile (still 200: the gateway serves)", body = Object)))]
async fn readyz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let snapshot = shared.snapshot.load();
    let services = snapshot.catalog.services().len();
    let broken: Vec<_> = snapshot
        .policies
        .broken()
        .iter()
        .map(|p| {
            serde_json::json!({
                "policy_id": p.definition.policy_id,
                "name": p.definition.name,
                "error": p.error.to_string(),
            })
        })
        .collect();
    // Still serving (200): a broken policy denies its own scope, the rest is enforced.
    let status = if broken.is_empty() {
        "ready"
    } else {
        "degraded"
    };
    Json(serde_json::json!({
        "status": status,
        "catalog_services": services,
        "broken_policies": broken,
    }))
}

#[utoipa::path(get, path = "/metrics", tag = "public", responses((status = 200, description = "Prometheus text format", body = String)))]
async fn prometheus() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics::render(),
    )
}

#[utoipa::path(get, path = "/ca.pem", tag = "public", responses((status = 200, description = "The interception CA certificate (PEM)", body = String)))]
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

#[utoipa::path(get, path = "/proxy.pac", tag = "public", responses((status = 200, description = "Proxy auto-config from the live catalog", content_type = "application/x-ns-proxy-autoconfig", body = String)))]
async fn proxy_pac(
    State(shared): State<Arc<Shared>>,
    headers: axum::http::HeaderMap,
) -> impl IntoResponse {
    let configured = &shared.config().admin.pac_proxies;
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
        crate::front::pac::render(
            &snapshot.catalog,
            &shared.config().intercept,
            &proxies,
            shared.config().admin.pac_direct_fallback,
        ),
    )
}

#[utoipa::path(get, path = "/admin/bypass", tag = "gateway",
    responses((status = 200, description = "Configured and permanent bypass hosts, and the learned bypass per client app (host, client, ja4, learned_at, expires_at, evidence)", body = Object)),
    security(("bearer" = [])))]
async fn list_bypass(
    State(shared): State<Arc<Shared>>,
    Extension(grant): Extension<Grant>,
) -> Response {
    if let Err(error) = grant.require("gateway", Access::Read) {
        return error.into_response();
    }
    match shared.store.bypass_hosts().await {
        Ok(permanent) => Json(serde_json::json!({
            "configured": shared.config().intercept.bypass,
            "permanent": permanent,
            "learned": shared.router.learned_bypass(),
        }))
        .into_response(),
        Err(error) => store_unavailable(&error),
    }
}

/// Makes a host a permanent bypass member (kept in the store), ending any learned bypass of it.
#[utoipa::path(put, path = "/admin/bypass/permanent/{host}", tag = "gateway",
    params(("host" = String, Path)),
    responses((status = 204, description = "Added"), (status = 400, body = schema::ErrorBody)),
    security(("bearer" = [])))]
async fn add_permanent_bypass(
    State(shared): State<Arc<Shared>>,
    Extension(grant): Extension<Grant>,
    Path(host): Path<String>,
) -> Response {
    if let Err(error) = grant.require("gateway", Access::Write) {
        return error.into_response();
    }
    let host = crate::host::normalize(&host);
    if !crate::host::is_dns_name(&host) {
        return error_response(
            StatusCode::BAD_REQUEST,
            "invalid_host",
            &format!("{host:?} is not a host name"),
        );
    }
    let was_learned = shared.router.forget_learned_bypass(&host, None) > 0;
    if let Err(error) = shared
        .store
        .add_bypass_host(&host, "promoted by an administrator")
        .await
    {
        return store_unavailable(&error);
    }
    if let Err(error) = shared
        .router
        .reload_permanent_bypass(shared.store.as_ref())
        .await
    {
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

#[utoipa::path(delete, path = "/admin/bypass/permanent/{host}", tag = "gateway",
    params(("host" = String, Path)),
    responses((status = 204, description = "Removed"), (status = 404, body = schema::ErrorBody)),
    security(("bearer" = [])))]
async fn remove_permanent_bypass(
    State(shared): State<Arc<Shared>>,
    Extension(grant): Extension<Grant>,
    Path(host): Path<String>,
) -> Response {
    if let Err(error) = grant.require("gateway", Access::Write) {
        return error.into_response();
    }
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
    if let Err(error) = shared
        .router
        .reload_permanent_bypass(shared.store.as_ref())
        .await
    {
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
#[utoipa::path(post, path = "/admin/reload", tag = "gateway",
    responses((status = 200, description = "Reloaded: counts of services, policies, exceptions", body = Object), (status = 422, body = schema::ErrorBody)),
    security(("bearer" = [])))]
async fn reload(State(shared): State<Arc<Shared>>, Extension(grant): Extension<Grant>) -> Response {
    if let Err(error) = grant.require("gateway", Access::Write) {
        return error.into_response();
    }
    match shared.reloader.snapshot().await {
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

/// `?client=` of a learned-bypass removal.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ForgetLearned {
    /// Forget only this client address's entries; absent: every client's.
    client: Option<String>,
}

#[utoipa::path(delete, path = "/admin/bypass/learned/{host}", tag = "gateway",
    params(("host" = String, Path), ForgetLearned),
    responses((status = 204, description = "Forgotten"), (status = 400, body = schema::ErrorBody), (status = 404, body = schema::ErrorBody)),
    security(("bearer" = [])))]
async fn forget_learned_bypass(
    State(shared): State<Arc<Shared>>,
    Extension(grant): Extension<Grant>,
    Path(host): Path<String>,
    Query(only): Query<ForgetLearned>,
) -> Response {
    if let Err(error) = grant.require("gateway", Access::Write) {
        return error.into_response();
    }
    let client = match only.client.as_deref().map(str::parse::<std::net::IpAddr>) {
        None => None,
        Some(Ok(client)) => Some(client),
        Some(Err(_)) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "invalid_client",
                "client: expected an IP address",
            )
        }
    };
    let ended = shared.router.forget_learned_bypass(&host, client);
    if ended > 0 {
        info!(%host, ?client, ended, "Learned bypass removed by an administrator; intercepted again.");
        audit_bypass_change(
            &shared,
            &host,
            "remove_learned_bypass",
            serde_json::json!({
                "before": { "learned_bypass": true, "client": client, "entries": ended },
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

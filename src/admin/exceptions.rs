//! Exceptions over HTTP: request one, approve or deny a pending one, revoke an approved one.
//! Every decision takes effect at once (the snapshot is rebuilt).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::api::{self, Change, PageParams};
use super::auth::{Access, Grant};
use super::error::{ApiError, ApiResult};
use super::schema::{ErrorBody, Page};
use crate::policy::NewException;
use crate::state::Shared;
use crate::store::admin::{ExceptionChange, Listing};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExceptionFilter {
    /// pending, approved, denied, expired or revoked.
    pub status: Option<String>,
    pub user_id: Option<String>,
    pub policy_id: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExceptionRequest {
    /// The user it is for.
    pub user_id: Uuid,
    /// The policy it cancels (all policies when absent).
    pub policy_id: Option<Uuid>,
    /// The AI service it is limited to.
    pub ai_service_id: Option<Uuid>,
    pub reason: String,
    pub justification: String,
    /// temporary (default) or permanent.
    pub exception_type: Option<String>,
    /// RFC 3339; required for a temporary exception.
    pub effective_until: Option<String>,
    /// `{max_uses, data_types, decisions, hosts}`.
    #[schema(value_type = Option<Object>)]
    pub conditions: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExceptionDecision {
    /// Required to revoke.
    pub reason: Option<String>,
}

#[utoipa::path(get, path = "/admin/exceptions", tag = "exceptions",
    params(PageParams, ExceptionFilter),
    responses((status = 200, body = Page), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_exceptions(
    State(shared): State<Arc<Shared>>,
    Extension(grant): Extension<Grant>,
    Query(page): Query<PageParams>,
    Query(filter): Query<ExceptionFilter>,
) -> ApiResult<Json<serde_json::Value>> {
    grant.require("exceptions", Access::Read)?;
    let equals = [
        ("status", filter.status),
        ("user_id", filter.user_id),
        ("policy_id", filter.policy_id),
    ]
    .into_iter()
    .filter_map(|(column, value)| value.map(|v| (column, v)))
    .collect();
    api::page(&shared, Listing::Exceptions, page.query(equals)?).await
}

#[utoipa::path(post, path = "/admin/exceptions", tag = "exceptions",
    request_body = ExceptionRequest,
    responses((status = 201, body = Object), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn request_exception(
    State(shared): State<Arc<Shared>>,
    Extension(grant): Extension<Grant>,
    Json(request): Json<ExceptionRequest>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    grant.require("exceptions", Access::Write)?;
    if request.reason.trim().is_empty() || request.justification.trim().is_empty() {
        return Err(ApiError::bad_request(
            "reason and justification are required",
        ));
    }
    let exception_type = match request.exception_type.as_deref().unwrap_or("temporary") {
        "temporary" => "temporary",
        "permanent" => "permanent",
        other => {
            return Err(ApiError::bad_request(format!(
                "exception_type must be temporary or permanent, got {other:?}"
            )))
        }
    };
    let effective_until = api::parse_time("effective_until", request.effective_until.as_deref())?;
    if exception_type == "temporary" && effective_until.is_none() {
        return Err(ApiError::bad_request(
            "a temporary exception needs effective_until",
        ));
    }
    let exception = NewException {
        exception_id: Uuid::new_v4(),
        exception_type,
        reason: request.reason,
        justification: request.justification,
        user_id: request.user_id,
        ai_service_id: request.ai_service_id,
        policy_id: request.policy_id,
        conditions: request.conditions,
        status: "pending",
        requested_by: grant.actor,
        effective_from: OffsetDateTime::now_utc(),
        effective_until,
    };
    shared.store.insert_exception(&exception).await?;
    let created = api::fetch_one(
        &shared,
        Listing::Exceptions,
        "exception",
        exception.exception_id,
    )
    .await?;
    api::audit(
        &shared,
        &grant,
        Change {
            event_type: "exception_requested",
            action: "request_exception",
            target_type: "exception",
            target_id: Some(exception.exception_id),
            target_name: None,
            before: serde_json::Value::Null,
            after: created.clone(),
        },
    );
    Ok((StatusCode::CREATED, Json(created)))
}

async fn decide(
    shared: &Shared,
    grant: &Grant,
    id: Uuid,
    status: &'static str,
    reason: Option<String>,
) -> ApiResult<Json<serde_json::Value>> {
    grant.require("exceptions", Access::Write)?;
    let before = api::fetch_one(shared, Listing::Exceptions, "exception", id).await?;
    let current = before["status"].as_str().unwrap_or_default();
    let allowed = match status {
        "approved" | "denied" => current == "pending",
        _ => current == "approved",
    };
    if !allowed {
        return Err(ApiError::conflict(format!(
            "a {current} exception cannot be {status} (pending → approved/denied, approved → revoked)"
        )));
    }
    if status == "revoked" && reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
        return Err(ApiError::bad_request("revoking needs a reason"));
    }
    let change = ExceptionChange {
        status,
        actor: grant.actor,
        reason,
    };
    if !shared.store.change_exception(id, &change).await? {
        return Err(ApiError::not_found("exception", id));
    }
    let after = api::fetch_one(shared, Listing::Exceptions, "exception", id).await?;
    api::audit(
        shared,
        grant,
        Change {
            event_type: "exception_decided",
            action: match status {
                "approved" => "approve_exception",
                "denied" => "deny_exception",
                _ => "revoke_exception",
            },
            target_type: "exception",
            target_id: Some(id),
            target_name: None,
            before,
            after: after.clone(),
        },
    );
    api::reload_exceptions(shared).await?;
    Ok(Json(after))
}

#[utoipa::path(post, path = "/admin/exceptions/{id}/approve", tag = "exceptions",
    params(("id" = Uuid, Path)), request_body = ExceptionDecision,
    responses((status = 200, body = Object), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn approve_exception(
    State(shared): State<Arc<Shared>>,
    Extension(grant): Extension<Grant>,
    Path(id): Path<Uuid>,
    Json(body): Json<ExceptionDecision>,
) -> ApiResult<Json<serde_json::Value>> {
    decide(&shared, &grant, id, "approved", body.reason).await
}

#[utoipa::path(post, path = "/admin/exceptions/{id}/deny", tag = "exceptions",
    params(("id" = Uuid, Path)), request_body = ExceptionDecision,
    responses((status = 200, body = Object), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn deny_exception(
    State(shared): State<Arc<Shared>>,
    Extension(grant): Extension<Grant>,
    Path(id): Path<Uuid>,
    Json(body): Json<ExceptionDecision>,
) -> ApiResult<Json<serde_json::Value>> {
    decide(&shared, &grant, id, "denied", body.reason).await
}

#[utoipa::path(post, path = "/admin/exceptions/{id}/revoke", tag = "exceptions",
    params(("id" = Uuid, Path)), request_body = ExceptionDecision,
    responses((status = 200, body = Object), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn revoke_exception(
    State(shared): State<Arc<Shared>>,
    Extension(grant): Extension<Grant>,
    Path(id): Path<Uuid>,
    Json(body): Json<ExceptionDecision>,
) -> ApiResult<Json<serde_json::Value>> {
    decide(&shared, &grant, id, "revoked", body.reason).await
}

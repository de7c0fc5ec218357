//! What the gateway recorded: decisions (and their hourly rollup), violations with their triage
//! workflow, and the audit trail.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use serde::Deserialize;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::api::{self, Change, PageParams};
use super::auth::{Access, Grant};
use super::error::{ApiError, ApiResult};
use super::schema::{ErrorBody, Page};
use crate::state::Shared;
use crate::store::admin::{Listing, ViolationPatch};

fn present(pairs: Vec<(&'static str, Option<String>)>) -> Vec<(&'static str, String)> {
    pairs
        .into_iter()
        .filter_map(|(column, value)| value.map(|v| (column, v)))
        .collect()
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DecisionFilter {
    pub user_id: Option<String>,
    pub user_email: Option<String>,
    /// The AI service's name.
    pub service: Option<String>,
    /// ALLOW, DENY or REVIEW.
    pub decision: Option<String>,
}

#[utoipa::path(get, path = "/admin/decisions", tag = "records",
    params(PageParams, DecisionFilter),
    responses((status = 200, body = Page), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_decisions(
    State(shared): State<Arc<Shared>>,
    Extension(grant): Extension<Grant>,
    Query(page): Query<PageParams>,
    Query(filter): Query<DecisionFilter>,
) -> ApiResult<Json<serde_json::Value>> {
    grant.require("decisions", Access::Read)?;
    let equals = present(vec![
        ("user_id", filter.user_id),
        ("user_email", filter.user_email),
        ("resource_name", filter.service),
        ("decision", filter.decision.map(|d| d.to_uppercase())),
    ]);
    api::page(&shared, Listing::Decisions, page.query(equals)?).await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HourlyParams {
    /// RFC 3339 (default: 24 hours ago).
    pub since: Option<String>,
}

#[utoipa::path(get, path = "/admin/decisions/hourly", tag = "records",
    params(HourlyParams),
    responses((status = 200, body = Object), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn decisions_hourly(
    State(shared): State<Arc<Shared>>,
    Extension(grant): Extension<Grant>,
    Query(params): Query<HourlyParams>,
) -> ApiResult<Json<serde_json::Value>> {
    grant.require("decisions", Access::Read)?;
    let since = api::parse_time("since", params.since.as_deref())?
        .unwrap_or_else(|| OffsetDateTime::now_utc() - time::Duration::hours(24));
    let hours = shared.store.decisions_per_hour(since).await?;
    Ok(Json(serde_json::json!({ "items": hours })))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ViolationFilter {
    /// open, investigating, resolved or false_positive.
    pub status: Option<String>,
    pub user_id: Option<String>,
    pub severity: Option<String>,
    pub assigned_to: Option<String>,
}

#[utoipa::path(get, path = "/admin/violations", tag = "records",
    params(PageParams, ViolationFilter),
    responses((status = 200, body = Page), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_violations(
    State(shared): State<Arc<Shared>>,
    Extension(grant): Extension<Grant>,
    Query(page): Query<PageParams>,
    Query(filter): Query<ViolationFilter>,
) -> ApiResult<Json<serde_json::Value>> {
    grant.require("violations", Access::Read)?;
    let equals = present(vec![
        ("status", filter.status),
        ("user_id", filter.user_id),
        ("severity", filter.severity),
        ("assigned_to", filter.assigned_to),
    ]);
    api::page(&shared, Listing::Violations, page.query(equals)?).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ViolationUpdate {
    /// open, investigating, resolved or false_positive.
    pub status: Option<String>,
    /// The user investigating it.
    pub assigned_to: Option<Uuid>,
    /// Resolution notes (required to resolve or dismiss).
    pub notes: Option<String>,
}

/// open → investigating → resolved/false_positive; a closed one can be reopened.
fn violation_transition(from: &str, to: &str) -> bool {
    from == to
        || matches!(
            (from, to),
            ("open", "investigating" | "resolved" | "false_positive")
                | ("investigating", "resolved" | "false_positive" | "open")
                | ("resolved" | "false_positive", "open")
        )
}

#[utoipa::path(patch, path = "/admin/violations/{id}", tag = "records",
    params(("id" = Uuid, Path)), request_body = ViolationUpdate,
    responses((status = 200, body = Object), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update_violation(
    State(shared): State<Arc<Shared>>,
    Extension(grant): Extension<Grant>,
    Path(id): Path<Uuid>,
    Json(update): Json<ViolationUpdate>,
) -> ApiResult<Json<serde_json::Value>> {
    grant.require("violations", Access::Write)?;
    let before = api::fetch_one(&shared, Listing::Violations, "violation", id).await?;
    let current = before["status"].as_str().unwrap_or("open");
    if let Some(status) = update.status.as_deref() {
        if !["open", "investigating", "resolved", "false_positive"].contains(&status) {
            return Err(ApiError::bad_request(format!(
                "status must be open, investigating, resolved or false_positive, got {status:?}"
            )));
        }
        if !violation_transition(current, status) {
            return Err(ApiError::conflict(format!(
                "a {current} violation cannot become {status}"
            )));
        }
        let closing = matches!(status, "resolved" | "false_positive");
        let has_notes = update
            .notes
            .as_deref()
            .is_some_and(|n| !n.trim().is_empty())
            || before["resolution_notes"]
                .as_str()
                .is_some_and(|n| !n.is_empty());
        if closing && !has_notes {
            return Err(ApiError::bad_request(format!(
                "marking a violation {status} needs notes"
            )));
        }
    }
    let patch = ViolationPatch {
        status: update.status,
        assigned_to: update.assigned_to,
        notes: update.notes,
    };
    if !shared.store.update_violation(id, &patch).await? {
        return Err(ApiError::not_found("violation", id));
    }
    let after = api::fetch_one(&shared, Listing::Violations, "violation", id).await?;
    api::audit(
        &shared,
        &grant,
        Change {
            event_type: "violation_updated",
            action: "update_violation",
            target_type: "violation",
            target_id: Some(id),
            target_name: before["policy_name"].as_str().map(str::to_owned),
            before,
            after: after.clone(),
        },
    );
    Ok(Json(after))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditFilter {
    pub event_type: Option<String>,
    pub actor_id: Option<String>,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
}

#[utoipa::path(get, path = "/admin/audit-events", tag = "records",
    params(PageParams, AuditFilter),
    responses((status = 200, body = Page), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_audit_events(
    State(shared): State<Arc<Shared>>,
    Extension(grant): Extension<Grant>,
    Query(page): Query<PageParams>,
    Query(filter): Query<AuditFilter>,
) -> ApiResult<Json<serde_json::Value>> {
    grant.require("audit", Access::Read)?;
    let equals = present(vec![
        ("event_type", filter.event_type),
        ("actor_id", filter.actor_id),
        ("target_type", filter.target_type),
        ("target_id", filter.target_id),
    ]);
    api::page(&shared, Listing::AuditEvents, page.query(equals)?).await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ShadowParams {
    /// RFC 3339 (default: 30 days ago).
    pub since: Option<String>,
}

/// AI services outside the catalog or not approved, seen in decisions: by service, with the
/// users and departments using them. Refreshes `shadow_ai_detections`.
#[utoipa::path(get, path = "/admin/shadow-ai", tag = "records",
    params(ShadowParams),
    responses((status = 200, body = Object), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn shadow_ai_report(
    State(shared): State<Arc<Shared>>,
    Extension(grant): Extension<Grant>,
    Query(params): Query<ShadowParams>,
) -> ApiResult<Json<serde_json::Value>> {
    grant.require("decisions", Access::Read)?;
    let since = api::parse_time("since", params.since.as_deref())?
        .unwrap_or_else(|| OffsetDateTime::now_utc() - time::Duration::days(30));
    shared.store.refresh_shadow_ai(since).await?;
    let rows = shared
        .store
        .list(
            Listing::ShadowAi,
            &crate::store::admin::ListQuery {
                equals: vec![("detection_source", "aigate_proxy".to_owned())],
                limit: 10_000,
                ..Default::default()
            },
        )
        .await?;
    let mut services: std::collections::BTreeMap<String, serde_json::Value> = Default::default();
    for row in rows {
        let name = row["service_name"].as_str().unwrap_or("unknown").to_owned();
        let count = row["access_count"].as_u64().unwrap_or(0);
        let entry = services.entry(name.clone()).or_insert_with(|| {
            serde_json::json!({
                "service_name": name, "service_id": row["service_id"],
                "in_catalog": !row["service_id"].is_null(), "requests": 0,
                "users": [], "departments": [],
            })
        });
        entry["requests"] = (entry["requests"].as_u64().unwrap_or(0) + count).into();
        if let Some(users) = entry["users"].as_array_mut() {
            users.push(serde_json::json!({
                "user_id": row["user_id"], "user_email": row["user_email"],
                "department": row["department"], "requests": count,
                "last_access": row["last_access"], "action_taken": row["action_taken"],
            }));
        }
        if let Some(department) = row["department"].as_str() {
            if let Some(departments) = entry["departments"].as_array_mut() {
                if !departments.iter().any(|d| d == department) {
                    departments.push(department.into());
                }
            }
        }
    }
    let mut items: Vec<serde_json::Value> = services.into_values().collect();
    items.sort_by_key(|s| std::cmp::Reverse(s["requests"].as_u64().unwrap_or(0)));
    Ok(Json(serde_json::json!({ "since": since
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default(), "items": items })))
}

//! Policies over HTTP: list, read, create (always a draft), update, lifecycle transitions and a
//! dry run. Rego is compiled before anything is stored; a compile error is a 400 with its line.

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
use crate::policy::{PolicyDefinition, Scope};
use crate::state::Shared;
use crate::store::admin::{Listing, PolicyWrite};

const POLICY_TYPES: [&str; 4] = [
    "regulatory",
    "organizational",
    "technical",
    "business_function",
];

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PolicyFilter {
    /// draft, review, active or archived.
    pub status: Option<String>,
}

/// A policy as an author writes it; the gateway sets id, status and audit fields.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyInput {
    pub name: String,
    pub description: Option<String>,
    /// Semantic version; an update that changes the Rego without changing it bumps the patch.
    pub version: Option<String>,
    /// 0..=1000, higher wins (default 100).
    pub priority: Option<i32>,
    /// regulatory, organizational (default), technical or business_function.
    pub policy_type: Option<String>,
    pub framework: Option<String>,
    pub article_reference: Option<String>,
    /// The Rego module.
    pub rule_content: String,
    #[schema(value_type = Option<Object>)]
    pub rule_metadata: Option<serde_json::Value>,
    /// `{departments: [], users: [], services: []}`; empty lists mean everyone.
    #[schema(value_type = Option<Object>)]
    pub scope: Option<serde_json::Value>,
    /// RFC 3339 (default: now).
    pub effective_date: Option<String>,
    pub expiry_date: Option<String>,
    pub tags: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusChange {
    /// review, active, archived or draft.
    pub status: String,
    pub comment: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DryRun {
    /// A policy input document (DESIGN.md section 3); missing parts default to a sample.
    #[schema(value_type = Object)]
    pub input: serde_json::Value,
}

fn definition(
    input: PolicyInput,
    policy_id: Uuid,
    status: String,
    previous: Option<&PolicyDefinition>,
) -> ApiResult<PolicyDefinition> {
    let name = input.name.trim().to_owned();
    if name.is_empty() || name.len() > 255 {
        return Err(ApiError::bad_request("name must be 1 to 255 characters"));
    }
    let priority = input.priority.unwrap_or(100);
    if !(0..=1000).contains(&priority) {
        return Err(ApiError::bad_request("priority must be between 0 and 1000"));
    }
    let policy_type = input
        .policy_type
        .unwrap_or_else(|| "organizational".to_owned());
    if !POLICY_TYPES.contains(&policy_type.as_str()) {
        return Err(ApiError::bad_request(format!(
            "policy_type must be one of {}",
            POLICY_TYPES.join(", ")
        )));
    }
    let scope: Scope = match input.scope {
        Some(scope) => serde_json::from_value(scope)
            .map_err(|error| ApiError::bad_request(format!("scope: {error}")))?,
        None => Scope::default(),
    };
    let mut version = input
        .version
        .unwrap_or_else(|| previous.map_or("1.0.0".to_owned(), |p| p.version.clone()));
    if let Some(previous) = previous {
        if previous.rule_content != input.rule_content && previous.version == version {
            version = bump_patch(&version);
        }
    }
    Ok(PolicyDefinition {
        policy_id,
        name,
        description: input.description,
        version,
        status,
        priority,
        policy_type,
        framework: input.framework,
        article_reference: input.article_reference,
        rule_engine: "opa".to_owned(),
        rule_content: input.rule_content,
        rule_file: None,
        rule_metadata: input.rule_metadata,
        scope,
        effective_date: api::parse_time("effective_date", input.effective_date.as_deref())?
            .unwrap_or_else(OffsetDateTime::now_utc),
        expiry_date: api::parse_time("expiry_date", input.expiry_date.as_deref())?,
        tags: input.tags.unwrap_or_default(),
    })
}

fn bump_patch(version: &str) -> String {
    let mut parts: Vec<String> = version.split('.').map(str::to_owned).collect();
    match parts.last().and_then(|p| p.parse::<u64>().ok()) {
        Some(patch) => {
            if let Some(last) = parts.last_mut() {
                *last = (patch + 1).to_string();
            }
            parts.join(".")
        }
        None => format!("{version}.1"),
    }
}

/// Compiles the Rego; the error carries the line the compiler names.
fn check_rego(definition: &PolicyDefinition) -> ApiResult<()> {
    crate::policy::validate(definition).map_err(|error| {
        let message = error.to_string();
        ApiError {
            line: rego_error_line(&message),
            ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_rego", message)
        }
    })
}

/// regorus points at the error with a `--> FILE:LINE:COL` line.
fn rego_error_line(message: &str) -> Option<u32> {
    message.lines().find_map(|line| {
        let location = line.trim().strip_prefix("-->")?;
        let mut parts = location.rsplitn(3, ':');
        let _column: u32 = parts.next()?.trim().parse().ok()?;
        parts.next()?.trim().parse().ok()
    })
}

async fn stored(shared: &Shared, id: Uuid) -> ApiResult<PolicyDefinition> {
    shared
        .store
        .load_policies()
        .await?
        .into_iter()
        .find(|p| p.policy_id == id)
        .ok_or_else(|| ApiError::not_found("policy", id))
}

fn view(policy: &PolicyDefinition) -> serde_json::Value {
    serde_json::to_value(policy).unwrap_or_default()
}

#[utoipa::path(get, path = "/admin/policies", tag = "policies",
    params(PageParams, PolicyFilter),
    responses((status = 200, body = Page), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_policies(
    State(shared): State<Arc<Shared>>,
    Extension(grant): Extension<Grant>,
    Query(page): Query<PageParams>,
    Query(filter): Query<PolicyFilter>,
) -> ApiResult<Json<serde_json::Value>> {
    grant.require("policies", Access::Read)?;
    let equals = filter.status.map(|s| ("status", s)).into_iter().collect();
    api::page(&shared, Listing::Policies, page.query(equals)?).await
}

#[utoipa::path(get, path = "/admin/policies/{id}", tag = "policies",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_policy(
    State(shared): State<Arc<Shared>>,
    Extension(grant): Extension<Grant>,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<serde_json::Value>> {
    grant.require("policies", Access::Read)?;
    Ok(Json(view(&stored(&shared, id).await?)))
}

#[utoipa::path(post, path = "/admin/policies", tag = "policies",
    request_body = PolicyInput,
    responses((status = 201, body = Object), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_policy(
    State(shared): State<Arc<Shared>>,
    Extension(grant): Extension<Grant>,
    Json(input): Json<PolicyInput>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    grant.require("policies", Access::Write)?;
    let policy = definition(input, Uuid::new_v4(), "draft".to_owned(), None)?;
    check_rego(&policy)?;
    shared
        .store
        .save_policy(&PolicyWrite {
            definition: &policy,
            actor: grant.actor,
            change_summary: "created".to_owned(),
            approve: false,
        })
        .await?;
    api::audit(
        &shared,
        &grant,
        Change {
            event_type: "policy_created",
            action: "create_policy",
            target_type: "policy",
            target_id: Some(policy.policy_id),
            target_name: Some(policy.name.clone()),
            before: serde_json::Value::Null,
            after: view(&policy),
        },
    );
    Ok((StatusCode::CREATED, Json(view(&policy))))
}

#[utoipa::path(put, path = "/admin/policies/{id}", tag = "policies",
    params(("id" = Uuid, Path)), request_body = PolicyInput,
    responses((status = 200, body = Object), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update_policy(
    State(shared): State<Arc<Shared>>,
    Extension(grant): Extension<Grant>,
    Path(id): Path<Uuid>,
    Json(input): Json<PolicyInput>,
) -> ApiResult<Json<serde_json::Value>> {
    grant.require("policies", Access::Write)?;
    let before = stored(&shared, id).await?;
    if before.status == "archived" {
        return Err(ApiError::conflict(
            "an archived policy cannot be edited; move it back to draft first",
        ));
    }
    let policy = definition(input, id, before.status.clone(), Some(&before))?;
    check_rego(&policy)?;
    shared
        .store
        .save_policy(&PolicyWrite {
            definition: &policy,
            actor: grant.actor,
            change_summary: format!("updated to {}", policy.version),
            approve: false,
        })
        .await?;
    api::audit(
        &shared,
        &grant,
        Change {
            event_type: "policy_updated",
            action: "update_policy",
            target_type: "policy",
            target_id: Some(id),
            target_name: Some(policy.name.clone()),
            before: view(&before),
            after: view(&policy),
        },
    );
    if policy.status == "active" {
        api::reload(&shared).await?;
    }
    Ok(Json(view(&policy)))
}

/// draft → review → active → archived, with review → draft and archived → draft.
fn transition_allowed(from: &str, to: &str) -> bool {
    matches!(
        (from, to),
        ("draft", "review")
            | ("draft", "archived")
            | ("review", "active")
            | ("review", "draft")
            | ("review", "archived")
            | ("active", "archived")
            | ("archived", "draft")
    )
}

#[utoipa::path(post, path = "/admin/policies/{id}/status", tag = "policies",
    params(("id" = Uuid, Path)), request_body = StatusChange,
    responses((status = 200, body = Object), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn change_policy_status(
    State(shared): State<Arc<Shared>>,
    Extension(grant): Extension<Grant>,
    Path(id): Path<Uuid>,
    Json(change): Json<StatusChange>,
) -> ApiResult<Json<serde_json::Value>> {
    grant.require("policies", Access::Write)?;
    let before = stored(&shared, id).await?;
    if !transition_allowed(&before.status, &change.status) {
        return Err(ApiError::conflict(format!(
            "a {} policy cannot become {} (draft → review → active → archived)",
            before.status, change.status
        )));
    }
    let mut policy = before.clone();
    policy.status = change.status.clone();
    if policy.status == "active" {
        check_rego(&policy)?;
    }
    shared
        .store
        .save_policy(&PolicyWrite {
            definition: &policy,
            actor: grant.actor,
            change_summary: change.comment.clone().unwrap_or_default(),
            approve: policy.status == "active",
        })
        .await?;
    api::audit(
        &shared,
        &grant,
        Change {
            event_type: "policy_status_changed",
            action: "change_policy_status",
            target_type: "policy",
            target_id: Some(id),
            target_name: Some(policy.name.clone()),
            before: serde_json::json!({ "status": before.status }),
            after: serde_json::json!({ "status": policy.status, "comment": change.comment }),
        },
    );
    if before.status == "active" || policy.status == "active" {
        api::reload(&shared).await?;
    }
    Ok(Json(view(&policy)))
}

#[utoipa::path(post, path = "/admin/policies/{id}/dry-run", tag = "policies",
    params(("id" = Uuid, Path)), request_body = DryRun,
    responses((status = 200, body = Object), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn dry_run_policy(
    State(shared): State<Arc<Shared>>,
    Extension(grant): Extension<Grant>,
    Path(id): Path<Uuid>,
    Json(request): Json<DryRun>,
) -> ApiResult<Json<serde_json::Value>> {
    grant.require("policies", Access::Read)?;
    let mut policy = stored(&shared, id).await?;
    // Evaluated as if active and alone, whatever its status.
    policy.status = "active".to_owned();
    let config = &shared.config().policy;
    let set = crate::policy::PolicySet::compile(
        &[policy],
        config.defaults.clone(),
        config.fail_mode,
        config.evaluator,
    )
    .map_err(|error| ApiError::new(StatusCode::BAD_REQUEST, "invalid_rego", error.to_string()))?;
    let mut input = crate::policy::sample_input();
    merge(&mut input, request.input);
    let outcome = crate::policy::eval_input(&set, &input, OffsetDateTime::now_utc());
    Ok(Json(serde_json::json!({
        "decision": outcome.decision.as_column(),
        "reason": outcome.reason,
        "explanation": crate::policy::explanation(&outcome, serde_json::Value::Null),
    })))
}

/// Overlays `patch` onto `base`, object by object.
fn merge(base: &mut serde_json::Value, patch: serde_json::Value) {
    match (base, patch) {
        (serde_json::Value::Object(base), serde_json::Value::Object(patch)) => {
            for (key, value) in patch {
                merge(base.entry(key).or_insert(serde_json::Value::Null), value);
            }
        }
        (slot, value) => *slot = value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_bump_and_lines_are_found() {
        assert_eq!(bump_patch("1.2.3"), "1.2.4");
        assert_eq!(bump_patch("2.0"), "2.1");
        assert_eq!(bump_patch("x"), "x.1");
        assert_eq!(
            rego_error_line("policy \"p\" (1): \n--> policy:Change freeze:4:7\n  |\nerror: x"),
            Some(4)
        );
        assert_eq!(rego_error_line("no position"), None);
        assert!(transition_allowed("review", "active"));
        assert!(!transition_allowed("draft", "active"));
    }
}

/// Active policies whose scopes overlap with opposite outcomes; refreshes `policy_conflicts`.
#[utoipa::path(get, path = "/admin/policy-conflicts", tag = "policies",
    responses((status = 200, body = Object), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_conflicts(
    State(shared): State<Arc<Shared>>,
    Extension(grant): Extension<Grant>,
) -> ApiResult<Json<serde_json::Value>> {
    grant.require("policies", Access::Read)?;
    let conflicts = shared.snapshot.load().policies.conflicts();
    shared.store.record_policy_conflicts(&conflicts).await?;
    let items: Vec<serde_json::Value> = conflicts
        .iter()
        .map(|c| {
            serde_json::json!({
                "policy_a": {"policy_id": c.policy_a.0, "name": c.policy_a.1},
                "policy_b": {"policy_id": c.policy_b.0, "name": c.policy_b.1},
                "conflict_type": c.conflict_type,
                "severity": c.severity,
                "details": c.details,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "items": items })))
}

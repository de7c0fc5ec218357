//! SIEM and webhook integrations over HTTP (`integrations` rows of type `siem` or
//! `communication` whose `provider` is an exporter: `webhook`, `splunk_hec`, `syslog`). Secrets
//! (`webhook_secret`, `config.secret`, `config.token`) are write-only: GET never returns them,
//! and a PUT that leaves them out keeps the stored ones. The exporter picks changes up within
//! seconds. Permission: `gateway`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use uuid::Uuid;

use super::api::{self, Change};
use super::auth::{Access, Grant};
use super::error::{ApiError, ApiResult};
use super::schema::ErrorBody;
use crate::export::MANAGED_BY_CONFIG_FILE;
use crate::state::Shared;
use crate::store::export::Integration;

const TYPES: [&str; 2] = ["siem", "communication"];
/// `config` keys that hold secrets.
const SECRET_KEYS: [&str; 2] = ["secret", "token"];

/// A create or replace body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IntegrationBody {
    pub name: String,
    /// `siem` or `communication`.
    pub integration_type: String,
    /// `webhook`, `splunk_hec` or `syslog`.
    pub provider: String,
    /// The exporter's settings (`url`, `token`, `address`, `tls`, `format`, `batch_size`, ...).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    pub webhook_url: Option<String>,
    /// The webhook's HMAC key; write-only.
    pub webhook_secret: Option<String>,
}

fn enabled_by_default() -> bool {
    true
}

/// The row as GET shows it: secrets left out, `*_set` flags saying whether one is stored.
fn view(row: &Integration) -> serde_json::Value {
    let mut config = row.config.clone();
    let mut secrets_set = serde_json::Map::new();
    if let Some(object) = config.as_object_mut() {
        for key in SECRET_KEYS {
            secrets_set.insert(key.to_owned(), object.remove(key).is_some().into());
        }
    }
    serde_json::json!({
        "integration_id": row.integration_id,
        "name": row.name,
        "integration_type": row.integration_type,
        "provider": row.provider,
        "config": config,
        "config_secrets_set": secrets_set,
        "enabled": row.enabled,
        "webhook_url": row.webhook_url,
        "webhook_secret_set": row.webhook_secret.is_some(),
        "health_status": row.health_status,
        "health_check_at": row.health_check_at.map(|at| at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()),
        "last_sync_at": row.last_sync_at.map(|at| at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()),
        "last_sync_status": row.last_sync_status,
        "last_sync_error": row.last_sync_error,
    })
}

async fn find(shared: &Shared, id: Uuid) -> ApiResult<Integration> {
    shared
        .store
        .load_integrations(&TYPES)
        .await?
        .into_iter()
        .find(|row| row.integration_id == id)
        .ok_or_else(|| ApiError::not_found("integration", id))
}

/// The body as a row, with the stored secrets kept where the body leaves them out, checked as
/// the exporter will read it.
fn parse(body: IntegrationBody, id: Uuid, before: Option<&Integration>) -> ApiResult<Integration> {
    if !TYPES.contains(&body.integration_type.as_str()) {
        return Err(ApiError::bad_request(
            "integration_type: must be siem or communication",
        ));
    }
    let mut config = match body.config {
        serde_json::Value::Null => serde_json::Value::Object(Default::default()),
        config @ serde_json::Value::Object(_) => config,
        _ => return Err(ApiError::bad_request("config: must be a JSON object")),
    };
    if config.get("managed_by").is_some() {
        return Err(ApiError::bad_request(
            "config.managed_by: is reserved for [[export]] entries of the config file",
        ));
    }
    if let (Some(object), Some(before)) = (config.as_object_mut(), before) {
        for key in SECRET_KEYS {
            if let (false, Some(stored)) = (object.contains_key(key), before.config.get(key)) {
                object.insert(key.to_owned(), stored.clone());
            }
        }
    }
    let row = Integration {
        integration_id: id,
        name: body.name,
        integration_type: body.integration_type,
        provider: body.provider,
        config,
        enabled: body.enabled,
        webhook_url: body.webhook_url,
        webhook_secret: body
            .webhook_secret
            .or_else(|| before.and_then(|b| b.webhook_secret.clone())),
        health_status: before.and_then(|b| b.health_status.clone()),
        health_check_at: before.and_then(|b| b.health_check_at),
        last_sync_at: before.and_then(|b| b.last_sync_at),
        last_sync_status: before.and_then(|b| b.last_sync_status.clone()),
        last_sync_error: before.and_then(|b| b.last_sync_error.clone()),
    };
    crate::export::from_integration(&row)
        .map_err(|error| ApiError::bad_request(error.to_string()))?;
    Ok(row)
}

fn file_managed(row: &Integration) -> bool {
    row.config.get("managed_by").and_then(|v| v.as_str()) == Some(MANAGED_BY_CONFIG_FILE)
}

#[utoipa::path(get, path = "/admin/integrations", tag = "integrations",
    responses((status = 200, body = Object), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_integrations(
    State(shared): State<Arc<Shared>>,
    Extension(grant): Extension<Grant>,
) -> ApiResult<Json<serde_json::Value>> {
    grant.require("gateway", Access::Read)?;
    let rows = shared.store.load_integrations(&TYPES).await?;
    let items: Vec<serde_json::Value> = rows.iter().map(view).collect();
    Ok(Json(serde_json::json!({ "items": items })))
}

#[utoipa::path(get, path = "/admin/integrations/{id}", tag = "integrations",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_integration(
    State(shared): State<Arc<Shared>>,
    Extension(grant): Extension<Grant>,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<serde_json::Value>> {
    grant.require("gateway", Access::Read)?;
    Ok(Json(view(&find(&shared, id).await?)))
}

#[utoipa::path(post, path = "/admin/integrations", tag = "integrations",
    request_body = IntegrationBody,
    responses((status = 201, body = Object), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_integration(
    State(shared): State<Arc<Shared>>,
    Extension(grant): Extension<Grant>,
    Json(body): Json<IntegrationBody>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    grant.require("gateway", Access::Write)?;
    let row = parse(body, Uuid::new_v4(), None)?;
    shared.store.save_integration(&row).await?;
    changed(&shared, &grant, "create_integration", None, Some(&row));
    Ok((StatusCode::CREATED, Json(view(&row))))
}

#[utoipa::path(put, path = "/admin/integrations/{id}", tag = "integrations",
    params(("id" = Uuid, Path)), request_body = IntegrationBody,
    responses((status = 200, body = Object), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update_integration(
    State(shared): State<Arc<Shared>>,
    Extension(grant): Extension<Grant>,
    Path(id): Path<Uuid>,
    Json(body): Json<IntegrationBody>,
) -> ApiResult<Json<serde_json::Value>> {
    grant.require("gateway", Access::Write)?;
    let before = find(&shared, id).await?;
    if file_managed(&before) {
        return Err(ApiError::conflict(
            "this integration is an [[export]] entry of the config file; change it there",
        ));
    }
    let row = parse(body, id, Some(&before))?;
    shared.store.save_integration(&row).await?;
    changed(
        &shared,
        &grant,
        "update_integration",
        Some(&before),
        Some(&row),
    );
    Ok(Json(view(&row)))
}

#[utoipa::path(delete, path = "/admin/integrations/{id}", tag = "integrations",
    params(("id" = Uuid, Path)),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_integration(
    State(shared): State<Arc<Shared>>,
    Extension(grant): Extension<Grant>,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    grant.require("gateway", Access::Write)?;
    let before = find(&shared, id).await?;
    if file_managed(&before) {
        return Err(ApiError::conflict(
            "this integration is an [[export]] entry of the config file; remove it there",
        ));
    }
    if !shared.store.delete_integration(id).await? {
        return Err(ApiError::not_found("integration", id));
    }
    changed(&shared, &grant, "delete_integration", Some(&before), None);
    Ok(StatusCode::NO_CONTENT)
}

/// The audit trail of the change, secrets left out like GET leaves them out.
fn changed(
    shared: &Shared,
    grant: &Grant,
    action: &str,
    before: Option<&Integration>,
    after: Option<&Integration>,
) {
    let row = after.or(before);
    api::audit(
        shared,
        grant,
        Change {
            event_type: "integration_changed",
            action,
            target_type: "integration",
            target_id: row.map(|r| r.integration_id),
            target_name: row.map(|r| r.name.clone()),
            before: before.map(view).unwrap_or_default(),
            after: after.map(view).unwrap_or_default(),
        },
    );
}

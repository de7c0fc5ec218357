//! The AI-service catalog over HTTP. Every change is validated against the whole catalog (a
//! domain or slug clash, a bad header regex is a 400) and rebuilds the matcher snapshot at once.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use uuid::Uuid;

use super::api::{self, Change, PageParams};
use super::auth::{Access, Grant};
use super::error::{ApiError, ApiResult};
use super::schema::{ErrorBody, Page};
use crate::catalog::{AiService, Catalog};
use crate::state::Shared;
use crate::store::admin::Listing;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ServiceFilter {
    /// approved, prohibited, review_required or unknown.
    pub approval_status: Option<String>,
    pub risk_tier: Option<String>,
    pub vendor: Option<String>,
}

/// The body as a service; `service_id` comes from the path or is generated.
fn parse_service(mut body: serde_json::Value, id: Uuid) -> ApiResult<AiService> {
    let Some(object) = body.as_object_mut() else {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    };
    object.insert("service_id".to_owned(), id.to_string().into());
    serde_json::from_value(body).map_err(|error| ApiError::bad_request(format!("service: {error}")))
}

/// The store's catalog with `change` applied (`None` removes `id`), checked as a whole.
async fn validated_catalog(
    shared: &Shared,
    id: Uuid,
    change: Option<&AiService>,
) -> ApiResult<(Option<AiService>, Catalog)> {
    let mut services = shared.store.load_catalog().await?;
    let before = services
        .iter()
        .position(|s| s.service_id == id)
        .map(|i| services.remove(i));
    if let Some(service) = change {
        services.push(service.clone());
    }
    let catalog = Catalog::from_services(services)
        .map_err(|error| ApiError::bad_request(format!("catalog: {error}")))?;
    Ok((before, catalog))
}

fn view(service: Option<&AiService>) -> serde_json::Value {
    service.map_or(serde_json::Value::Null, |s| {
        serde_json::to_value(s).unwrap_or_default()
    })
}

#[utoipa::path(get, path = "/admin/services", tag = "services",
    params(PageParams, ServiceFilter),
    responses((status = 200, body = Page), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_services(
    State(shared): State<Arc<Shared>>,
    Extension(grant): Extension<Grant>,
    Query(page): Query<PageParams>,
    Query(filter): Query<ServiceFilter>,
) -> ApiResult<Json<serde_json::Value>> {
    grant.require("services", Access::Read)?;
    let equals = [
        ("approval_status", filter.approval_status),
        ("risk_tier", filter.risk_tier),
        ("vendor", filter.vendor),
    ]
    .into_iter()
    .filter_map(|(column, value)| value.map(|v| (column, v)))
    .collect();
    api::page(&shared, Listing::Services, page.query(equals)?).await
}

#[utoipa::path(get, path = "/admin/services/{id}", tag = "services",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_service(
    State(shared): State<Arc<Shared>>,
    Extension(grant): Extension<Grant>,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<serde_json::Value>> {
    grant.require("services", Access::Read)?;
    let services = shared.store.load_catalog().await?;
    let service = services
        .iter()
        .find(|s| s.service_id == id)
        .ok_or_else(|| ApiError::not_found("service", id))?;
    Ok(Json(view(Some(service))))
}

#[utoipa::path(post, path = "/admin/services", tag = "services",
    request_body = Object,
    responses((status = 201, body = Object), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_service(
    State(shared): State<Arc<Shared>>,
    Extension(grant): Extension<Grant>,
    Json(body): Json<serde_json::Value>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    grant.require("services", Access::Write)?;
    let service = parse_service(body, Uuid::new_v4())?;
    validated_catalog(&shared, service.service_id, Some(&service)).await?;
    shared.store.save_service(&service).await?;
    changed(&shared, &grant, "create_service", None, Some(&service)).await?;
    Ok((StatusCode::CREATED, Json(view(Some(&service)))))
}

#[utoipa::path(put, path = "/admin/services/{id}", tag = "services",
    params(("id" = Uuid, Path)), request_body = Object,
    responses((status = 200, body = Object), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update_service(
    State(shared): State<Arc<Shared>>,
    Extension(grant): Extension<Grant>,
    Path(id): Path<Uuid>,
    Json(body): Json<serde_json::Value>,
) -> ApiResult<Json<serde_json::Value>> {
    grant.require("services", Access::Write)?;
    let service = parse_service(body, id)?;
    let (before, _) = validated_catalog(&shared, id, Some(&service)).await?;
    let Some(before) = before else {
        return Err(ApiError::not_found("service", id));
    };
    shared.store.save_service(&service).await?;
    changed(
        &shared,
        &grant,
        "update_service",
        Some(&before),
        Some(&service),
    )
    .await?;
    Ok(Json(view(Some(&service))))
}

#[utoipa::path(delete, path = "/admin/services/{id}", tag = "services",
    params(("id" = Uuid, Path)),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_service(
    State(shared): State<Arc<Shared>>,
    Extension(grant): Extension<Grant>,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    grant.require("services", Access::Write)?;
    let (before, _) = validated_catalog(&shared, id, None).await?;
    let Some(before) = before else {
        return Err(ApiError::not_found("service", id));
    };
    match shared.store.delete_service(id).await {
        Ok(true) => {}
        Ok(false) => return Err(ApiError::not_found("service", id)),
        Err(crate::store::StoreError::Rejected(_)) => {
            return Err(ApiError::conflict(
                "exceptions still name this service; revoke or delete them first",
            ))
        }
        Err(error) => return Err(error.into()),
    }
    changed(&shared, &grant, "delete_service", Some(&before), None).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn changed(
    shared: &Shared,
    grant: &Grant,
    action: &str,
    before: Option<&AiService>,
    after: Option<&AiService>,
) -> ApiResult<()> {
    let service = after.or(before);
    api::audit(
        shared,
        grant,
        Change {
            event_type: "ai_service_changed",
            action,
            target_type: "ai_service",
            target_id: service.map(|s| s.service_id),
            target_name: service.map(|s| s.name.clone()),
            before: view(before),
            after: view(after),
        },
    );
    api::reload(shared).await
}

//! What every management endpoint shares: keyset pages and the audit trail of administrative
//! writes.

use axum::http::StatusCode;
use axum::Json;
use base64::Engine;
use serde::Deserialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::auth::Grant;
use super::error::{ApiError, ApiResult};
use super::schema::Page;
use crate::audit::{AuditEventRecord, AuditRecord};
use crate::state::Shared;
use crate::store::admin::{ListQuery, Listing};

/// Paging and time window common to every listing.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Rows per page, 1..=500 (default 50).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// RFC 3339; rows at or after.
    pub since: Option<String>,
    /// RFC 3339; rows before.
    pub until: Option<String>,
}

pub fn parse_time(name: &str, value: Option<&str>) -> ApiResult<Option<OffsetDateTime>> {
    value
        .map(|v| {
            OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339).map_err(|_| {
                ApiError::bad_request(format!("{name} must be an RFC 3339 time, got {v:?}"))
            })
        })
        .transpose()
}

impl PageParams {
    pub fn query(&self, equals: Vec<(&'static str, String)>) -> ApiResult<ListQuery> {
        let limit = self.limit.unwrap_or(50);
        if !(1..=500).contains(&limit) {
            return Err(ApiError::bad_request("limit must be between 1 and 500"));
        }
        let after = self
            .cursor
            .as_deref()
            .map(|cursor| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(cursor)
                    .ok()
                    .and_then(|bytes| serde_json::from_slice::<(String, String)>(&bytes).ok())
                    .ok_or_else(|| ApiError::bad_request("cursor is not one this API issued"))
            })
            .transpose()?;
        Ok(ListQuery {
            equals,
            since: parse_time("since", self.since.as_deref())?,
            until: parse_time("until", self.until.as_deref())?,
            after,
            limit,
            ..ListQuery::default()
        })
    }
}

/// `{"items": [...], "next_cursor": ...}`; the cursor is set when the page is full.
pub async fn page(
    shared: &Shared,
    listing: Listing,
    query: ListQuery,
) -> ApiResult<Json<serde_json::Value>> {
    let rows = shared.store.list_rows(listing, &query).await?;
    let full = i64::try_from(rows.len()).unwrap_or(i64::MAX) >= query.limit;
    // The cursor is the row's stored keyset position, which compares like the stored values.
    let next_cursor = rows.last().filter(|_| full).map(|last| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&last.cursor).unwrap_or_default())
    });
    let items = rows.into_iter().map(|row| row.item).collect();
    Ok(Json(
        serde_json::to_value(Page { items, next_cursor }).unwrap_or_default(),
    ))
}

/// One row by id, or 404.
pub async fn fetch_one(
    shared: &Shared,
    listing: Listing,
    what: &str,
    id: Uuid,
) -> ApiResult<serde_json::Value> {
    let query = ListQuery {
        equals: vec![(listing.id_column(), id.to_string())],
        limit: 1,
        ..ListQuery::default()
    };
    shared
        .store
        .list(listing, &query)
        .await?
        .pop()
        .ok_or_else(|| ApiError::not_found(what, id))
}

/// An administrative write in the audit trail, with the token's actor and before/after.
pub struct Change<'a> {
    pub event_type: &'a str,
    pub action: &'a str,
    pub target_type: &'a str,
    pub target_id: Option<Uuid>,
    pub target_name: Option<String>,
    pub before: serde_json::Value,
    pub after: serde_json::Value,
}

pub fn audit(shared: &Shared, grant: &Grant, change: Change<'_>) {
    shared
        .audit
        .record(AuditRecord::Event(Box::new(AuditEventRecord {
            event_id: Uuid::now_v7(),
            timestamp: OffsetDateTime::now_utc(),
            event_type: change.event_type.to_owned(),
            severity: "info".to_owned(),
            actor_id: Some(grant.actor),
            actor_email: Some(grant.name.clone()),
            actor_type: Some("admin_token".to_owned()),
            target_type: Some(change.target_type.to_owned()),
            target_id: change.target_id,
            target_name: change.target_name,
            action: change.action.to_owned(),
            result: Some("success".to_owned()),
            decision_id: None,
            source: Some("admin_api".to_owned()),
            ip_address: None,
            event_data: Some(serde_json::json!({ "role": grant.role })),
            changes: Some(serde_json::json!({ "before": change.before, "after": change.after })),
        })));
}

/// Swaps in the store's exceptions after an exception changed: no policy rebuild.
pub async fn reload_exceptions(shared: &Shared) -> ApiResult<()> {
    shared
        .reloader
        .exceptions()
        .await
        .map(|_| ())
        .map_err(|error| {
            tracing::warn!(%error, "Cannot reload the exceptions after an admin change.");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the store is unavailable; retry later",
            )
        })
}

/// Rebuilds the enforcement snapshot after a write that changes it.
pub async fn reload(shared: &Shared) -> ApiResult<()> {
    shared
        .reloader
        .snapshot()
        .await
        .map(|_| ())
        .map_err(|error| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "reload_rejected",
                format!("saved, but the snapshot was not rebuilt: {error}"),
            )
        })
}

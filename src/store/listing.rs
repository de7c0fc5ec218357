//! The rows the management API lists, as typed items: one struct per table, read the same way
//! from both engines and serialised the same way (UUIDs hyphenated, times RFC 3339 in UTC,
//! booleans as `true`/`false`, lists as arrays, JSON columns as JSON), so the API's shape is
//! these structs and not either engine's schema.

use std::borrow::Cow;

use serde::Serialize;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgTypeInfo, PgValueRef, Postgres};
use sqlx::sqlite::{Sqlite, SqliteTypeInfo, SqliteValueRef};
use sqlx::{Decode, FromRow, Row, Type, TypeInfo};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, PrimitiveDateTime};
use utoipa::openapi::schema::{
    KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type as SchemaType,
};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};
use uuid::Uuid;

use super::admin::Listing;
use super::parse_timestamp;

/// A UUID column: `UUID` on PostgreSQL, text on SQLite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct DbUuid(pub Uuid);

/// A time column: `TIMESTAMP` (UTC) or `TIMESTAMPTZ` on PostgreSQL, RFC 3339 or SQL text on
/// SQLite; always written out as RFC 3339 in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbTime(pub OffsetDateTime);

/// A list of text: `TEXT[]` on PostgreSQL, a JSON array (or comma-separated text) on SQLite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct DbList(pub Vec<String>);

/// A JSON column: `JSONB` on PostgreSQL, JSON text on SQLite (text that is not JSON is kept as
/// a string).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct DbJson(pub serde_json::Value);

impl Serialize for DbTime {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = self
            .0
            .to_offset(time::UtcOffset::UTC)
            .format(&Rfc3339)
            .map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(&text)
    }
}

fn string_schema(format: Option<KnownFormat>) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(SchemaType::String)
        .format(format.map(SchemaFormat::KnownFormat))
        .into()
}

impl PartialSchema for DbUuid {
    fn schema() -> RefOr<Schema> {
        string_schema(Some(KnownFormat::Uuid))
    }
}
impl ToSchema for DbUuid {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Uuid")
    }
}
impl PartialSchema for DbTime {
    fn schema() -> RefOr<Schema> {
        string_schema(Some(KnownFormat::DateTime))
    }
}
impl ToSchema for DbTime {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Timestamp")
    }
}
impl PartialSchema for DbList {
    fn schema() -> RefOr<Schema> {
        <Vec<String> as PartialSchema>::schema()
    }
}
impl ToSchema for DbList {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("TextList")
    }
}
impl PartialSchema for DbJson {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new().into()
    }
}
impl ToSchema for DbJson {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("JsonValue")
    }
}

// PostgreSQL: the native types.

impl Type<Postgres> for DbUuid {
    fn type_info() -> PgTypeInfo {
        <Uuid as Type<Postgres>>::type_info()
    }
}
impl<'r> Decode<'r, Postgres> for DbUuid {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(DbUuid(<Uuid as Decode<Postgres>>::decode(value)?))
    }
}

impl Type<Postgres> for DbTime {
    fn type_info() -> PgTypeInfo {
        <OffsetDateTime as Type<Postgres>>::type_info()
    }
    fn compatible(ty: &PgTypeInfo) -> bool {
        <OffsetDateTime as Type<Postgres>>::compatible(ty)
            || <PrimitiveDateTime as Type<Postgres>>::compatible(ty)
    }
}
impl<'r> Decode<'r, Postgres> for DbTime {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        use sqlx::ValueRef;
        if value.type_info().name() == "TIMESTAMPTZ" {
            Ok(DbTime(<OffsetDateTime as Decode<Postgres>>::decode(value)?))
        } else {
            // The data model's TIMESTAMP columns hold UTC.
            Ok(DbTime(
                <PrimitiveDateTime as Decode<Postgres>>::decode(value)?.assume_utc(),
            ))
        }
    }
}

impl Type<Postgres> for DbList {
    fn type_info() -> PgTypeInfo {
        <Vec<String> as Type<Postgres>>::type_info()
    }
    fn compatible(ty: &PgTypeInfo) -> bool {
        <Vec<String> as Type<Postgres>>::compatible(ty)
    }
}
impl<'r> Decode<'r, Postgres> for DbList {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(DbList(<Vec<String> as Decode<Postgres>>::decode(value)?))
    }
}

impl Type<Postgres> for DbJson {
    fn type_info() -> PgTypeInfo {
        <serde_json::Value as Type<Postgres>>::type_info()
    }
    fn compatible(ty: &PgTypeInfo) -> bool {
        <serde_json::Value as Type<Postgres>>::compatible(ty)
    }
}
impl<'r> Decode<'r, Postgres> for DbJson {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(DbJson(<serde_json::Value as Decode<Postgres>>::decode(
            value,
        )?))
    }
}

// SQLite: everything is text; a column's declared type does not bind what a row holds.

impl Type<Sqlite> for DbUuid {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
    fn compatible(_: &SqliteTypeInfo) -> bool {
        true
    }
}
impl<'r> Decode<'r, Sqlite> for DbUuid {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <&str as Decode<Sqlite>>::decode(value)?;
        Ok(DbUuid(Uuid::parse_str(text)?))
    }
}

impl Type<Sqlite> for DbTime {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
    fn compatible(_: &SqliteTypeInfo) -> bool {
        true
    }
}
impl<'r> Decode<'r, Sqlite> for DbTime {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <&str as Decode<Sqlite>>::decode(value)?;
        parse_timestamp(text)
            .map(DbTime)
            .ok_or_else(|| format!("{text:?} is not a timestamp").into())
    }
}

impl Type<Sqlite> for DbList {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
    fn compatible(_: &SqliteTypeInfo) -> bool {
        true
    }
}
impl<'r> Decode<'r, Sqlite> for DbList {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <&str as Decode<Sqlite>>::decode(value)?;
        Ok(DbList(serde_json::from_str(text).unwrap_or_else(|_| {
            text.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        })))
    }
}

impl Type<Sqlite> for DbJson {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
    fn compatible(_: &SqliteTypeInfo) -> bool {
        true
    }
}
impl<'r> Decode<'r, Sqlite> for DbJson {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <&str as Decode<Sqlite>>::decode(value)?;
        Ok(DbJson(serde_json::from_str(text).unwrap_or_else(|_| {
            serde_json::Value::String(text.to_owned())
        })))
    }
}

/// A `decisions` row.
#[derive(Debug, Clone, Serialize, FromRow, ToSchema)]
pub struct DecisionItem {
    pub decision_id: DbUuid,
    pub request_id: Option<DbUuid>,
    pub timestamp: DbTime,
    pub user_id: Option<DbUuid>,
    pub user_email: Option<String>,
    pub user_department: Option<String>,
    pub action: Option<String>,
    pub resource_type: Option<String>,
    pub resource_id: Option<DbUuid>,
    pub resource_name: Option<String>,
    pub resource_url: Option<String>,
    pub decision: Option<String>,
    pub reason: Option<String>,
    pub confidence: Option<f64>,
    pub risk_score: Option<i32>,
    pub risk_factors: Option<DbJson>,
    pub policies_evaluated: Option<DbJson>,
    pub primary_policy_id: Option<DbUuid>,
    pub source: Option<String>,
    pub device_id: Option<DbUuid>,
    pub ip_address: Option<String>,
    pub geo_location: Option<String>,
    pub user_agent: Option<String>,
    pub content_classified: Option<bool>,
    pub detected_entities: Option<DbJson>,
    pub data_classification: Option<DbList>,
    pub evaluation_duration_ms: Option<i32>,
    pub explanation: Option<DbJson>,
}

/// A `violations` row.
#[derive(Debug, Clone, Serialize, FromRow, ToSchema)]
pub struct ViolationItem {
    pub violation_id: DbUuid,
    pub decision_id: Option<DbUuid>,
    pub timestamp: DbTime,
    pub user_id: Option<DbUuid>,
    pub user_email: Option<String>,
    pub user_department: Option<String>,
    pub violation_type: Option<String>,
    pub policy_id: Option<DbUuid>,
    pub policy_name: Option<String>,
    pub severity: Option<String>,
    pub resource_type: Option<String>,
    pub resource_id: Option<DbUuid>,
    pub resource_name: Option<String>,
    pub status: Option<String>,
    pub assigned_to: Option<DbUuid>,
    pub resolution_notes: Option<String>,
    pub resolved_at: Option<DbTime>,
    pub notification_sent: Option<bool>,
    pub escalated: Option<bool>,
    pub escalated_at: Option<DbTime>,
    pub created_at: Option<DbTime>,
    pub updated_at: Option<DbTime>,
}

/// An `audit_events` row.
#[derive(Debug, Clone, Serialize, FromRow, ToSchema)]
pub struct AuditEventItem {
    pub event_id: DbUuid,
    pub timestamp: DbTime,
    pub event_type: Option<String>,
    pub severity: Option<String>,
    pub actor_id: Option<DbUuid>,
    pub actor_email: Option<String>,
    pub actor_type: Option<String>,
    pub target_type: Option<String>,
    pub target_id: Option<DbUuid>,
    pub target_name: Option<String>,
    pub action: Option<String>,
    pub result: Option<String>,
    pub decision_id: Option<DbUuid>,
    pub source: Option<String>,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    pub event_data: Option<DbJson>,
    pub changes: Option<DbJson>,
    pub compliance_relevant: Option<bool>,
    pub frameworks: Option<DbList>,
}

/// An `exceptions` row.
#[derive(Debug, Clone, Serialize, FromRow, ToSchema)]
pub struct ExceptionItem {
    pub exception_id: DbUuid,
    pub exception_type: Option<String>,
    pub reason: Option<String>,
    pub justification: Option<String>,
    pub user_id: Option<DbUuid>,
    pub department_id: Option<DbUuid>,
    pub group_id: Option<DbUuid>,
    pub policy_id: Option<DbUuid>,
    pub ai_service_id: Option<DbUuid>,
    pub conditions: Option<DbJson>,
    pub status: Option<String>,
    pub requested_by: Option<DbUuid>,
    pub requested_at: DbTime,
    pub approved_by: Option<DbUuid>,
    pub approved_at: Option<DbTime>,
    pub effective_from: Option<DbTime>,
    pub effective_until: Option<DbTime>,
    pub usage_count: Option<i32>,
    pub last_used: Option<DbTime>,
    pub revoked_by: Option<DbUuid>,
    pub revoked_at: Option<DbTime>,
    pub revocation_reason: Option<String>,
}

/// A `policies` row.
#[derive(Debug, Clone, Serialize, FromRow, ToSchema)]
pub struct PolicyItem {
    pub policy_id: DbUuid,
    pub name: Option<String>,
    pub description: Option<String>,
    pub version: Option<String>,
    pub status: Option<String>,
    pub priority: Option<i32>,
    pub policy_type: Option<String>,
    pub framework: Option<String>,
    pub article_reference: Option<String>,
    pub rule_engine: Option<String>,
    pub rule_content: Option<String>,
    pub rule_metadata: Option<DbJson>,
    pub scope: Option<DbJson>,
    pub created_at: Option<DbTime>,
    pub created_by: Option<DbUuid>,
    pub updated_at: DbTime,
    pub updated_by: Option<DbUuid>,
    pub approved_by: Option<DbUuid>,
    pub approved_at: Option<DbTime>,
    pub effective_date: Option<DbTime>,
    pub expiry_date: Option<DbTime>,
    pub compliance_mappings: Option<DbJson>,
    pub tags: Option<DbList>,
    pub comments: Option<String>,
}

/// An `ai_services` row.
#[derive(Debug, Clone, Serialize, FromRow, ToSchema)]
pub struct ServiceItem {
    pub service_id: DbUuid,
    pub name: Option<String>,
    pub vendor: Option<String>,
    pub service_type: Option<String>,
    pub signatures: Option<DbJson>,
    pub risk_tier: Option<String>,
    pub risk_score: Option<i32>,
    pub risk_factors: Option<DbJson>,
    pub approval_status: Option<String>,
    pub approved_for: Option<DbList>,
    pub prohibited_for: Option<DbList>,
    pub vendor_contact_email: Option<String>,
    pub support_url: Option<String>,
    pub documentation_url: Option<String>,
    pub certifications: Option<DbList>,
    pub data_handling: Option<String>,
    pub data_regions: Option<DbList>,
    pub privacy_policy_url: Option<String>,
    pub terms_of_service_url: Option<String>,
    pub model_version: Option<String>,
    pub capabilities: Option<DbList>,
    pub pricing_model: Option<String>,
    pub discovered_at: Option<DbTime>,
    pub last_seen: Option<DbTime>,
    pub created_at: Option<DbTime>,
    pub updated_at: DbTime,
    pub slug: Option<String>,
    pub tenant_restriction_headers: Option<DbList>,
}

/// A `policy_conflicts` row.
#[derive(Debug, Clone, Serialize, FromRow, ToSchema)]
pub struct PolicyConflictItem {
    pub conflict_id: DbUuid,
    pub policy_a_id: Option<DbUuid>,
    pub policy_b_id: Option<DbUuid>,
    pub conflict_type: Option<String>,
    pub conflict_details: Option<DbJson>,
    pub severity: Option<String>,
    pub resolved: Option<bool>,
    pub resolution_notes: Option<String>,
    pub detected_at: DbTime,
    pub resolved_at: Option<DbTime>,
}

/// A `shadow_ai_detections` row.
#[derive(Debug, Clone, Serialize, FromRow, ToSchema)]
pub struct ShadowAiItem {
    pub detection_id: DbUuid,
    pub assessment_id: Option<DbUuid>,
    pub service_name: Option<String>,
    pub service_id: Option<DbUuid>,
    pub user_id: Option<DbUuid>,
    pub user_email: Option<String>,
    pub department: Option<String>,
    pub detected_at: Option<DbTime>,
    pub detection_source: Option<String>,
    pub access_count: Option<i32>,
    pub last_access: DbTime,
    pub approved: Option<bool>,
    pub risk_level: Option<String>,
    pub action_taken: Option<String>,
    pub action_date: Option<DbTime>,
    pub created_at: Option<DbTime>,
}

/// One listed row: the item as the API returns it, and its keyset position as the store holds
/// it (the time column's stored text, so a cursor compares like the stored values do).
#[derive(Debug, Clone)]
pub struct ListedRow {
    pub item: serde_json::Value,
    pub cursor: (String, String),
}

impl Listing {
    /// The table's columns, in table order: the fields of its item struct.
    pub fn columns(self) -> &'static [&'static str] {
        match self {
            Listing::Decisions => &[
                "decision_id",
                "request_id",
                "timestamp",
                "user_id",
                "user_email",
                "user_department",
                "action",
                "resource_type",
                "resource_id",
                "resource_name",
                "resource_url",
                "decision",
                "reason",
                "confidence",
                "risk_score",
                "risk_factors",
                "policies_evaluated",
                "primary_policy_id",
                "source",
                "device_id",
                "ip_address",
                "geo_location",
                "user_agent",
                "content_classified",
                "detected_entities",
                "data_classification",
                "evaluation_duration_ms",
                "explanation",
            ],
            Listing::Violations => &[
                "violation_id",
                "decision_id",
                "timestamp",
                "user_id",
                "user_email",
                "user_department",
                "violation_type",
                "policy_id",
                "policy_name",
                "severity",
                "resource_type",
                "resource_id",
                "resource_name",
                "status",
                "assigned_to",
                "resolution_notes",
                "resolved_at",
                "notification_sent",
                "escalated",
                "escalated_at",
                "created_at",
                "updated_at",
            ],
            Listing::AuditEvents => &[
                "event_id",
                "timestamp",
                "event_type",
                "severity",
                "actor_id",
                "actor_email",
                "actor_type",
                "target_type",
                "target_id",
                "target_name",
                "action",
                "result",
                "decision_id",
                "source",
                "ip_address",
                "user_agent",
                "event_data",
                "changes",
                "compliance_relevant",
                "frameworks",
            ],
            Listing::Exceptions => &[
                "exception_id",
                "exception_type",
                "reason",
                "justification",
                "user_id",
                "department_id",
                "group_id",
                "policy_id",
                "ai_service_id",
                "conditions",
                "status",
                "requested_by",
                "requested_at",
                "approved_by",
                "approved_at",
                "effective_from",
                "effective_until",
                "usage_count",
                "last_used",
                "revoked_by",
                "revoked_at",
                "revocation_reason",
            ],
            Listing::Policies => &[
                "policy_id",
                "name",
                "description",
                "version",
                "status",
                "priority",
                "policy_type",
                "framework",
                "article_reference",
                "rule_engine",
                "rule_content",
                "rule_metadata",
                "scope",
                "created_at",
                "created_by",
                "updated_at",
                "updated_by",
                "approved_by",
                "approved_at",
                "effective_date",
                "expiry_date",
                "compliance_mappings",
                "tags",
                "comments",
            ],
            Listing::Services => &[
                "service_id",
                "name",
                "vendor",
                "service_type",
                "signatures",
                "risk_tier",
                "risk_score",
                "risk_factors",
                "approval_status",
                "approved_for",
                "prohibited_for",
                "vendor_contact_email",
                "support_url",
                "documentation_url",
                "certifications",
                "data_handling",
                "data_regions",
                "privacy_policy_url",
                "terms_of_service_url",
                "model_version",
                "capabilities",
                "pricing_model",
                "discovered_at",
                "last_seen",
                "created_at",
                "updated_at",
                "slug",
                "tenant_restriction_headers",
            ],
            Listing::PolicyConflicts => &[
                "conflict_id",
                "policy_a_id",
                "policy_b_id",
                "conflict_type",
                "conflict_details",
                "severity",
                "resolved",
                "resolution_notes",
                "detected_at",
                "resolved_at",
            ],
            Listing::ShadowAi => &[
                "detection_id",
                "assessment_id",
                "service_name",
                "service_id",
                "user_id",
                "user_email",
                "department",
                "detected_at",
                "detection_source",
                "access_count",
                "last_access",
                "approved",
                "risk_level",
                "action_taken",
                "action_date",
                "created_at",
            ],
        }
    }

    /// `SELECT` list of the item's columns and the keyset position; `expression` lets an
    /// engine read a column its own way (PostgreSQL's INET).
    pub(crate) fn select_list(self, expression: impl Fn(&str) -> Option<String>) -> String {
        let mut list: Vec<String> = self
            .columns()
            .iter()
            .map(|column| expression(column).unwrap_or_else(|| format!("t.{column}")))
            .collect();
        list.push(format!(
            "CAST(t.{} AS TEXT) AS cursor_time, CAST(t.{} AS TEXT) AS cursor_id",
            self.time_column(),
            self.id_column()
        ));
        list.join(", ")
    }
}

/// Reads listed rows; a row that does not read as its item (a hand-edited value) is logged and
/// left out rather than failing the page.
pub(crate) fn listed_rows<R>(listing: Listing, rows: &[R]) -> Vec<ListedRow>
where
    R: Row,
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> DecisionItem: FromRow<'r, R>,
    for<'r> ViolationItem: FromRow<'r, R>,
    for<'r> AuditEventItem: FromRow<'r, R>,
    for<'r> ExceptionItem: FromRow<'r, R>,
    for<'r> PolicyItem: FromRow<'r, R>,
    for<'r> ServiceItem: FromRow<'r, R>,
    for<'r> PolicyConflictItem: FromRow<'r, R>,
    for<'r> ShadowAiItem: FromRow<'r, R>,
{
    rows.iter()
        .filter_map(|row| match listed(listing, row) {
            Ok(listed) => Some(listed),
            Err(error) => {
                tracing::warn!(%error, table = listing.table(), "Leaving out a stored row that does not read as an API item.");
                None
            }
        })
        .collect()
}

/// Reads a listed row into its item and keyset position.
fn listed<R>(listing: Listing, row: &R) -> Result<ListedRow, sqlx::Error>
where
    R: Row,
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> DecisionItem: FromRow<'r, R>,
    for<'r> ViolationItem: FromRow<'r, R>,
    for<'r> AuditEventItem: FromRow<'r, R>,
    for<'r> ExceptionItem: FromRow<'r, R>,
    for<'r> PolicyItem: FromRow<'r, R>,
    for<'r> ServiceItem: FromRow<'r, R>,
    for<'r> PolicyConflictItem: FromRow<'r, R>,
    for<'r> ShadowAiItem: FromRow<'r, R>,
{
    fn json<T: Serialize>(item: T) -> Result<serde_json::Value, sqlx::Error> {
        serde_json::to_value(item).map_err(|error| sqlx::Error::Decode(Box::new(error)))
    }
    let item = match listing {
        Listing::Decisions => json(DecisionItem::from_row(row)?)?,
        Listing::Violations => json(ViolationItem::from_row(row)?)?,
        Listing::AuditEvents => json(AuditEventItem::from_row(row)?)?,
        Listing::Exceptions => json(ExceptionItem::from_row(row)?)?,
        Listing::Policies => json(PolicyItem::from_row(row)?)?,
        Listing::Services => json(ServiceItem::from_row(row)?)?,
        Listing::PolicyConflicts => json(PolicyConflictItem::from_row(row)?)?,
        Listing::ShadowAi => json(ShadowAiItem::from_row(row)?)?,
    };
    Ok(ListedRow {
        item,
        cursor: (row.try_get("cursor_time")?, row.try_get("cursor_id")?),
    })
}

//! Rows as the store reads them (`sqlx::FromRow`), one struct per query shape for both engines,
//! and their conversion into domain types, written once.
//!
//! The engines store some columns differently: PostgreSQL has UUID, TIMESTAMP, TEXT[] and JSONB
//! where SQLite keeps TEXT. A row is generic over `Columns`, which names each engine's Rust
//! types for those columns, and `Stored` turns any of them into the domain value.

use sqlx::FromRow;
use time::{OffsetDateTime, PrimitiveDateTime};
use uuid::Uuid;

use super::{parse_timestamp, StoreError};
use crate::identity::DeviceContext;
use crate::policy::{ExceptionRecord, PolicyDefinition};

/// How one engine's driver hands over the columns the engines store differently.
pub(crate) trait Columns {
    type Id: Stored<Uuid>;
    type Time: Stored<OffsetDateTime>;
    type List: Stored<Vec<String>>;
    type Json: Stored<serde_json::Value>;
}

/// PostgreSQL: native types.
pub(crate) struct PgColumns;

impl Columns for PgColumns {
    type Id = Uuid;
    type Time = PrimitiveDateTime;
    type List = Vec<String>;
    type Json = serde_json::Value;
}

/// SQLite: TEXT holding a UUID, an RFC 3339 or SQL timestamp, a JSON array or JSON document.
pub(crate) struct SqliteColumns;

impl Columns for SqliteColumns {
    type Id = String;
    type Time = String;
    type List = String;
    type Json = String;
}

/// A stored column value read into its domain type; the error says what was wrong with it.
pub(crate) trait Stored<T> {
    fn read(self) -> Result<T, String>;
}

impl Stored<Uuid> for Uuid {
    fn read(self) -> Result<Uuid, String> {
        Ok(self)
    }
}

impl Stored<Uuid> for String {
    fn read(self) -> Result<Uuid, String> {
        Uuid::parse_str(&self).map_err(|error| format!("{self:?}: {error}"))
    }
}

/// The data model's `TIMESTAMP` columns hold UTC without an offset.
impl Stored<OffsetDateTime> for PrimitiveDateTime {
    fn read(self) -> Result<OffsetDateTime, String> {
        Ok(self.assume_utc())
    }
}

impl Stored<OffsetDateTime> for String {
    fn read(self) -> Result<OffsetDateTime, String> {
        parse_timestamp(&self).ok_or_else(|| format!("{self:?} is not a timestamp"))
    }
}

impl Stored<Vec<String>> for Vec<String> {
    fn read(self) -> Result<Vec<String>, String> {
        Ok(self)
    }
}

/// A list stored as JSON text (`["a","b"]`), tolerating a comma-separated value.
impl Stored<Vec<String>> for String {
    fn read(self) -> Result<Vec<String>, String> {
        Ok(serde_json::from_str(&self).unwrap_or_else(|_| {
            self.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        }))
    }
}

impl Stored<serde_json::Value> for serde_json::Value {
    fn read(self) -> Result<serde_json::Value, String> {
        Ok(self)
    }
}

impl Stored<serde_json::Value> for String {
    fn read(self) -> Result<serde_json::Value, String> {
        serde_json::from_str(&self).map_err(|error| error.to_string())
    }
}

/// Reads an optional column; `field` names it in the error.
fn optional<S: Stored<T>, T>(value: Option<S>, field: &str) -> Result<Option<T>, String> {
    value
        .map(Stored::read)
        .transpose()
        .map_err(|error| format!("{field}: {error}"))
}

fn required<S: Stored<T>, T>(value: S, field: &str) -> Result<T, String> {
    value.read().map_err(|error| format!("{field}: {error}"))
}

/// Builds the `Corrupt` error of a row of `table` whose key reads as `id`.
fn corrupt(table: &'static str, id: impl std::fmt::Display) -> impl Fn(String) -> StoreError {
    let id = id.to_string();
    move |message| StoreError::Corrupt {
        table,
        id: id.clone(),
        message,
    }
}

/// The key of a row for an error message, whether or not it reads as a UUID.
fn shown<S: Stored<Uuid> + Clone + std::fmt::Debug>(id: &S) -> String {
    id.clone()
        .read()
        .map(|id| id.to_string())
        .unwrap_or_else(|_| format!("{id:?}"))
}

#[derive(FromRow)]
pub(crate) struct PolicyRow<C: Columns> {
    policy_id: C::Id,
    name: String,
    description: Option<String>,
    version: String,
    status: String,
    priority: i32,
    policy_type: String,
    framework: Option<String>,
    article_reference: Option<String>,
    rule_engine: String,
    rule_content: String,
    rule_metadata: Option<C::Json>,
    scope: C::Json,
    effective_date: C::Time,
    expiry_date: Option<C::Time>,
    tags: Option<C::List>,
}

impl<C: Columns> PolicyRow<C>
where
    C::Id: Clone + std::fmt::Debug,
{
    pub(crate) fn into_definition(self) -> Result<PolicyDefinition, StoreError> {
        let corrupt = corrupt("policies", shown(&self.policy_id));
        let scope = required(self.scope, "scope").map_err(&corrupt)?;
        Ok(PolicyDefinition {
            policy_id: required(self.policy_id, "policy_id").map_err(&corrupt)?,
            scope: serde_json::from_value(scope).map_err(|e| corrupt(format!("scope: {e}")))?,
            rule_metadata: optional(self.rule_metadata, "rule_metadata").map_err(&corrupt)?,
            effective_date: required(self.effective_date, "effective_date").map_err(&corrupt)?,
            // An unreadable expiry has always meant "no expiry" on SQLite; PostgreSQL cannot
            // hold one.
            expiry_date: optional(self.expiry_date, "expiry_date").ok().flatten(),
            tags: optional(self.tags, "tags")
                .ok()
                .flatten()
                .unwrap_or_default(),
            name: self.name,
            description: self.description,
            version: self.version,
            status: self.status,
            priority: self.priority,
            policy_type: self.policy_type,
            framework: self.framework,
            article_reference: self.article_reference,
            rule_engine: self.rule_engine,
            rule_content: self.rule_content,
            rule_file: None,
        })
    }
}

#[derive(FromRow)]
pub(crate) struct ExceptionRow<C: Columns> {
    exception_id: C::Id,
    status: String,
    user_id: Option<C::Id>,
    department_id: Option<C::Id>,
    group_id: Option<C::Id>,
    policy_id: Option<C::Id>,
    ai_service_id: Option<C::Id>,
    conditions: Option<C::Json>,
    effective_from: Option<C::Time>,
    effective_until: Option<C::Time>,
    usage_count: Option<i64>,
}

impl<C: Columns> ExceptionRow<C>
where
    C::Id: Clone + std::fmt::Debug,
{
    pub(crate) fn into_record(self) -> Result<ExceptionRecord, StoreError> {
        let corrupt = corrupt("exceptions", shown(&self.exception_id));
        Ok(ExceptionRecord {
            exception_id: required(self.exception_id, "exception_id").map_err(&corrupt)?,
            status: self.status,
            user_id: optional(self.user_id, "user_id").map_err(&corrupt)?,
            department_id: optional(self.department_id, "department_id").map_err(&corrupt)?,
            group_id: optional(self.group_id, "group_id").map_err(&corrupt)?,
            policy_id: optional(self.policy_id, "policy_id").map_err(&corrupt)?,
            ai_service_id: optional(self.ai_service_id, "ai_service_id").map_err(&corrupt)?,
            conditions: optional(self.conditions, "conditions").map_err(&corrupt)?,
            effective_from: optional(self.effective_from, "effective_from")
                .ok()
                .flatten(),
            effective_until: optional(self.effective_until, "effective_until")
                .ok()
                .flatten(),
            usage_count: self.usage_count.unwrap_or(0),
        })
    }
}

/// `users` columns of a user context.
#[derive(FromRow)]
pub(crate) struct UserRow<C: Columns> {
    pub(crate) user_id: C::Id,
    email: String,
    department_id: Option<C::Id>,
    risk_score: Option<i32>,
    clearance_level: Option<String>,
    employee_type: Option<String>,
    status: String,
}

impl<C: Columns> UserRow<C>
where
    C::Id: Clone + std::fmt::Debug,
{
    /// The user without departments, groups and roles, and the department id as stored.
    pub(crate) fn into_context(
        self,
    ) -> Result<(crate::identity::UserContext, Option<C::Id>), StoreError> {
        let corrupt = corrupt("users", shown(&self.user_id));
        let department_id =
            optional(self.department_id.clone(), "department_id").map_err(&corrupt)?;
        let user = crate::identity::UserContext {
            id: required(self.user_id, "user_id").map_err(&corrupt)?,
            email: self.email,
            department_id,
            risk_score: self.risk_score.unwrap_or(50),
            clearance_level: self.clearance_level,
            employee_type: self.employee_type,
            status: self.status,
            ..Default::default()
        };
        Ok((user, self.department_id))
    }
}

/// A department or group's name and AI service lists.
#[derive(FromRow)]
pub(crate) struct ServiceListsRow<C: Columns> {
    name: String,
    allowed: Option<C::List>,
    prohibited: Option<C::List>,
}

impl<C: Columns> ServiceListsRow<C> {
    pub(crate) fn lists(self) -> (String, Vec<String>, Vec<String>) {
        let list =
            |value: Option<C::List>| optional(value, "list").ok().flatten().unwrap_or_default();
        (self.name, list(self.allowed), list(self.prohibited))
    }
}

#[derive(FromRow)]
pub(crate) struct GroupRow<C: Columns> {
    group_id: C::Id,
    name: String,
    allowed: Option<C::List>,
    prohibited: Option<C::List>,
}

impl<C: Columns> GroupRow<C>
where
    C::Id: Clone + std::fmt::Debug,
{
    /// Id, name, allowed and prohibited services.
    pub(crate) fn into_parts(self) -> Result<(Uuid, String, Vec<String>, Vec<String>), StoreError> {
        let id = required(self.group_id.clone(), "group_id")
            .map_err(corrupt("groups", shown(&self.group_id)))?;
        let (name, allowed, prohibited) = ServiceListsRow::<C> {
            name: self.name,
            allowed: self.allowed,
            prohibited: self.prohibited,
        }
        .lists();
        Ok((id, name, allowed, prohibited))
    }
}

/// A role assignment of a user.
#[derive(FromRow)]
pub(crate) struct RoleRow<C: Columns> {
    name: String,
    expires_at: Option<C::Time>,
}

impl<C: Columns> RoleRow<C> {
    /// The role's name unless its assignment expired before `now` (an unreadable expiry counts
    /// as none).
    pub(crate) fn unexpired_name(self, now: OffsetDateTime) -> Option<String> {
        let expires = optional(self.expires_at, "expires_at").ok().flatten();
        expires.is_none_or(|at| at > now).then_some(self.name)
    }
}

#[derive(FromRow)]
pub(crate) struct DeviceRow<C: Columns> {
    asset_id: C::Id,
    hostname: Option<String>,
    crown_jewel: Option<bool>,
    sensitivity: Option<String>,
    compliance_status: Option<String>,
    data_classification: Option<C::List>,
    owner_id: Option<C::Id>,
}

impl<C: Columns> DeviceRow<C>
where
    C::Id: Clone + std::fmt::Debug,
{
    pub(crate) fn into_context(self) -> Result<DeviceContext, StoreError> {
        let corrupt = corrupt("assets", shown(&self.asset_id));
        Ok(DeviceContext {
            id: required(self.asset_id, "asset_id").map_err(&corrupt)?,
            hostname: self.hostname,
            crown_jewel: self.crown_jewel.unwrap_or(false),
            sensitivity: self.sensitivity,
            compliance_status: self.compliance_status,
            data_classification: optional(self.data_classification, "data_classification")
                .ok()
                .flatten()
                .unwrap_or_default(),
            owner_id: optional(self.owner_id, "owner_id").map_err(&corrupt)?,
            policy_input: Default::default(),
        })
    }
}

#[derive(FromRow)]
pub(crate) struct CredentialRow<C: Columns> {
    user_id: C::Id,
    password_hash: String,
}

impl<C: Columns> CredentialRow<C>
where
    C::Id: Clone + std::fmt::Debug,
{
    pub(crate) fn into_pair(self) -> Result<(Uuid, String), StoreError> {
        let corrupt = corrupt("proxy_credentials", shown(&self.user_id));
        Ok((
            required(self.user_id, "user_id").map_err(&corrupt)?,
            self.password_hash,
        ))
    }
}

/// A `(natural key, primary key)` pair for matching a directory import.
#[derive(FromRow)]
pub(crate) struct KeyRow<C: Columns> {
    natural_key: String,
    stored_id: C::Id,
}

impl<C: Columns> KeyRow<C>
where
    C::Id: Clone + std::fmt::Debug,
{
    pub(crate) fn into_pair(self, table: &'static str) -> Result<(String, Uuid), StoreError> {
        let id = required(self.stored_id.clone(), "id")
            .map_err(corrupt(table, shown(&self.stored_id)))?;
        Ok((self.natural_key, id))
    }
}

#[derive(FromRow)]
pub(crate) struct TokenRow<C: Columns> {
    token_id: C::Id,
    name: String,
    role: String,
    permissions: C::Json,
    user_id: Option<C::Id>,
}

impl<C: Columns> TokenRow<C>
where
    C::Id: Clone + std::fmt::Debug,
{
    pub(crate) fn into_grant(self) -> Result<super::admin::TokenGrant, StoreError> {
        let corrupt = corrupt("admin_tokens", shown(&self.token_id));
        Ok(super::admin::TokenGrant {
            token_id: required(self.token_id, "token_id").map_err(&corrupt)?,
            name: self.name,
            role: self.role,
            permissions: self.permissions.read().unwrap_or_default(),
            user_id: optional(self.user_id, "user_id").map_err(&corrupt)?,
        })
    }
}

/// A `store_changes` row.
#[derive(FromRow)]
pub(crate) struct RevisionRow {
    pub(crate) domain: String,
    pub(crate) revision: i64,
}

/// An `integrations` row.
#[derive(FromRow)]
pub(crate) struct IntegrationRow<C: Columns> {
    integration_id: C::Id,
    name: String,
    integration_type: String,
    provider: String,
    config: C::Json,
    enabled: Option<bool>,
    webhook_url: Option<String>,
    webhook_secret: Option<String>,
    health_status: Option<String>,
    health_check_at: Option<C::Time>,
    last_sync_at: Option<C::Time>,
    last_sync_status: Option<String>,
    last_sync_error: Option<String>,
}

impl<C: Columns> IntegrationRow<C>
where
    C::Id: Clone + std::fmt::Debug,
{
    pub(crate) fn into_integration(self) -> Result<super::export::Integration, StoreError> {
        let corrupt = corrupt("integrations", shown(&self.integration_id));
        Ok(super::export::Integration {
            integration_id: required(self.integration_id, "integration_id").map_err(&corrupt)?,
            config: required(self.config, "config").map_err(&corrupt)?,
            health_check_at: optional(self.health_check_at, "health_check_at")
                .ok()
                .flatten(),
            last_sync_at: optional(self.last_sync_at, "last_sync_at").ok().flatten(),
            name: self.name,
            integration_type: self.integration_type,
            provider: self.provider,
            enabled: self.enabled.unwrap_or(true),
            webhook_url: self.webhook_url,
            webhook_secret: self.webhook_secret,
            health_status: self.health_status,
            last_sync_status: self.last_sync_status,
            last_sync_error: self.last_sync_error,
        })
    }
}

/// An `export_cursors` position.
#[derive(FromRow)]
pub(crate) struct CursorRow {
    pub(crate) cursor_time: String,
    pub(crate) cursor_id: String,
}

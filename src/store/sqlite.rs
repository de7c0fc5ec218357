//! The embedded SQLite store: zero set-up, one file, same tables as PostgreSQL with mapped types.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Sqlite};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::admin::{ExceptionChange, ListQuery, Listing, PolicyWrite, TokenGrant, ViolationPatch};
use super::{
    classify, parse_timestamp, signature_rows, DirectorySync, Revisions, Store, StoreError,
    TimeSeriesShape,
};
use crate::audit::{AuditEventRecord, DecisionRecord};
use crate::catalog::{AiService, Catalog};
use crate::identity::directory::DirectoryPlan;
use crate::identity::{DeviceContext, UserContext};
use crate::policy::{ExceptionRecord, NewException, PolicyDefinition};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

const DECISIONS_RETENTION_DAYS: i64 = 90;
const AUDIT_EVENTS_RETENTION_DAYS: i64 = 7 * 365 + 2;

#[derive(Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    in_memory: bool,
}

impl SqliteStore {
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let bad_url = |message: String| StoreError::Url {
            url: url.to_owned(),
            message,
        };
        let path = url
            .trim_start_matches("sqlite://")
            .trim_start_matches("sqlite:")
            .split('?')
            .next()
            .unwrap_or_default();
        if path.is_empty() {
            return Err(bad_url("no database file path".to_owned()));
        }
        if path != ":memory:" {
            if let Some(parent) = Path::new(path)
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
            {
                std::fs::create_dir_all(parent).map_err(|source| StoreError::Io {
                    path: parent.to_owned(),
                    source,
                })?;
            }
        }
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|error| bad_url(error.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(5))
            // Decision ingest (benches/store.rs, sqlite_ingest): a row with its JSON columns is a
            // few KiB; 16 KiB pages (new databases only) and a checkpoint every 4,000 pages
            // (64 MiB of WAL, truncated back after) took a 1,000-row batch from 47 ms to about
            // 32 ms. A larger page cache or mmap bought nothing measurable and would count
            // against resident memory.
            .page_size(16384)
            .pragma("wal_autocheckpoint", "4000")
            .pragma("journal_size_limit", "67108864");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(classify)?;
        Ok(Self {
            pool,
            in_memory: path == ":memory:",
        })
    }
}

fn parse_uuid(table: &'static str, row: &str, text: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(text).map_err(|e| StoreError::Corrupt {
        table,
        id: row.to_owned(),
        message: format!("{text:?}: {e}"),
    })
}

/// A list column stored as JSON text (`["a","b"]`), tolerating a comma-separated value.
fn text_list(text: Option<String>) -> Vec<String> {
    let Some(text) = text else {
        return Vec::new();
    };
    serde_json::from_str(&text).unwrap_or_else(|_| {
        text.split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    })
}

impl SqliteStore {
    async fn user_context(
        &self,
        clause: &str,
        value: String,
    ) -> Result<Option<UserContext>, StoreError> {
        type Row = (
            String,
            String,
            Option<String>,
            Option<i64>,
            Option<String>,
            Option<String>,
            String,
        );
        let row: Option<Row> = sqlx::query_as(&format!(
            "SELECT user_id, email, department_id, risk_score, clearance_level, employee_type, status FROM users WHERE {clause}"
        ))
        .bind(value)
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)?;
        let Some((id, email, department_id, risk_score, clearance_level, employee_type, status)) =
            row
        else {
            return Ok(None);
        };
        let mut user = UserContext {
            id: parse_uuid("users", &id, &id)?,
            email,
            department_id: department_id
                .as_deref()
                .map(|d| parse_uuid("users", &id, d))
                .transpose()?,
            risk_score: i32::try_from(risk_score.unwrap_or(50)).unwrap_or(50),
            clearance_level,
            employee_type,
            status,
            ..UserContext::default()
        };
        // The department and its parents, nearest first (bounded against cycles).
        let mut next = department_id;
        while let Some(department) = next.take() {
            if user.department_chain.len() >= 16 {
                break;
            }
            type Department = (String, Option<String>, Option<String>, Option<String>);
            let row: Option<Department> = sqlx::query_as(
                "SELECT name, parent_department_id, allowed_ai_services, prohibited_ai_services FROM departments WHERE department_id = ?",
            )
            .bind(&department)
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)?;
            let Some((name, parent, allowed, prohibited)) = row else {
                break;
            };
            if user.department_chain.is_empty() {
                user.department = Some(name.clone());
                user.allowed_ai_services.extend(text_list(allowed));
                user.prohibited_ai_services.extend(text_list(prohibited));
            }
            user.department_chain.push(name);
            next = parent;
        }
        let groups: Vec<(String, String, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT g.group_id, g.name, g.allowed_ai_services, g.prohibited_ai_services FROM groups g \
             JOIN user_groups ug ON ug.group_id = g.group_id WHERE ug.user_id = ? ORDER BY g.name",
        )
        .bind(&id)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        for (group_id, name, allowed, prohibited) in groups {
            user.group_ids
                .push(parse_uuid("groups", &group_id, &group_id)?);
            user.groups.push(name);
            user.allowed_ai_services.extend(text_list(allowed));
            user.prohibited_ai_services.extend(text_list(prohibited));
        }
        let roles: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT r.name, ur.expires_at FROM roles r JOIN user_roles ur ON ur.role_id = r.role_id WHERE ur.user_id = ? ORDER BY r.name",
        )
        .bind(&id)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        let now = OffsetDateTime::now_utc();
        user.roles = roles
            .into_iter()
            .filter(|(_, expires)| {
                expires
                    .as_deref()
                    .and_then(parse_timestamp)
                    .is_none_or(|at| at > now)
            })
            .map(|(name, _)| name)
            .collect();
        Ok(Some(user))
    }
}

/// What writing a policy row does to a stored row with the same id (see the PostgreSQL store).
#[derive(Debug, Clone, Copy)]
enum ExistingPolicy {
    Keep,
    Replace { approve: bool },
}

/// Inserts or replaces one `policies` row; returns the rows written (0 when an existing row was
/// kept).
async fn write_policy_row<'e>(
    executor: impl sqlx::SqliteExecutor<'e>,
    policy: &PolicyDefinition,
    actor: Uuid,
    existing: ExistingPolicy,
) -> Result<u64, StoreError> {
    macro_rules! insert {
        () => {
            "INSERT INTO policies (policy_id, name, description, version, status, priority, policy_type, \
             framework, article_reference, rule_engine, rule_content, rule_metadata, scope, created_by, \
             updated_by, effective_date, expiry_date, tags, approved_by, approved_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?14, ?15, ?16, ?17, \
             CASE WHEN ?18 THEN ?14 END, CASE WHEN ?18 THEN ?19 END) "
        };
    }
    let (sql, approve) = match existing {
        ExistingPolicy::Keep => (concat!(insert!(), "ON CONFLICT (policy_id) DO NOTHING"), false),
        ExistingPolicy::Replace { approve } => (
            concat!(
                insert!(),
                "ON CONFLICT (policy_id) DO UPDATE SET name = excluded.name, description = excluded.description, \
                 version = excluded.version, status = excluded.status, priority = excluded.priority, \
                 policy_type = excluded.policy_type, framework = excluded.framework, \
                 article_reference = excluded.article_reference, rule_engine = excluded.rule_engine, \
                 rule_content = excluded.rule_content, rule_metadata = excluded.rule_metadata, scope = excluded.scope, \
                 updated_by = excluded.updated_by, updated_at = ?19, effective_date = excluded.effective_date, \
                 expiry_date = excluded.expiry_date, tags = excluded.tags, \
                 approved_by = CASE WHEN ?18 THEN excluded.approved_by ELSE policies.approved_by END, \
                 approved_at = CASE WHEN ?18 THEN ?19 ELSE policies.approved_at END"
            ),
            approve,
        ),
    };
    let done = sqlx::query(sql)
        .bind(policy.policy_id.to_string())
        .bind(&policy.name)
        .bind(&policy.description)
        .bind(&policy.version)
        .bind(&policy.status)
        .bind(policy.priority)
        .bind(&policy.policy_type)
        .bind(&policy.framework)
        .bind(&policy.article_reference)
        .bind(&policy.rule_engine)
        .bind(&policy.rule_content)
        .bind(policy.rule_metadata.as_ref().map(json_text))
        .bind(json_text(&policy.scope))
        .bind(actor.to_string())
        .bind(rfc3339(policy.effective_date))
        .bind(policy.expiry_date.map(rfc3339))
        .bind(json_text(&policy.tags))
        .bind(approve)
        .bind(rfc3339(OffsetDateTime::now_utc()))
        .execute(executor)
        .await
        .map_err(classify)?;
    Ok(done.rows_affected())
}

/// In-app notifications for the violations of a batch (see the PostgreSQL store).
async fn notify_violations(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    batch: &[DecisionRecord],
) -> Result<(), StoreError> {
    let ids: Vec<String> = batch
        .iter()
        .filter(|d| !d.user_id.is_nil())
        .filter_map(|d| d.violation.as_ref().map(|v| v.violation_id.to_string()))
        .collect();
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO notifications (notification_id, notification_type, severity, recipient_id, title, message, \
         action_url, channels, related_entity_type, related_entity_id) \
         SELECT lower(hex(randomblob(16))), 'violation', r.severity, r.recipient, r.title, r.message, \
                '/admin/violations/' || r.violation_id, '[\"in_app\"]', 'violation', r.violation_id \
         FROM ( \
             SELECT v.violation_id, v.user_id AS recipient, \
                    CASE v.severity WHEN 'critical' THEN 'critical' WHEN 'high' THEN 'warning' ELSE 'info' END AS severity, \
                    'Request stopped by ' || COALESCE(v.policy_name, 'a policy') AS title, \
                    'Your request to ' || COALESCE(v.resource_name, 'an AI service') || ' was stopped: ' || v.violation_type AS message \
             FROM violations v WHERE v.violation_id IN (SELECT value FROM json_each(?1)) \
             UNION ALL \
             SELECT v.violation_id, u.manager_id, CASE v.severity WHEN 'critical' THEN 'critical' ELSE 'warning' END, \
                    'Violation by ' || COALESCE(v.user_email, 'a team member'), \
                    COALESCE(v.user_email, 'A team member') || ': ' || v.violation_type || ' (' || v.severity || ') on ' \
                      || COALESCE(v.resource_name, 'an AI service') || ', policy ' || COALESCE(v.policy_name, '?') \
             FROM violations v JOIN users u ON u.user_id = v.user_id \
             WHERE v.violation_id IN (SELECT value FROM json_each(?1)) AND u.manager_id IS NOT NULL \
               AND v.severity IN ('high', 'critical') \
         ) r \
         WHERE NOT EXISTS (SELECT 1 FROM notifications n WHERE n.related_entity_id = r.violation_id AND n.recipient_id = r.recipient)",
    )
    .bind(json_text(&ids))
    .execute(&mut **tx)
    .await
    .map_err(classify)?;
    Ok(())
}

/// One service row and its signature rows, replacing what was there.
async fn upsert_service(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    service: &AiService,
) -> Result<(), StoreError> {
    let id = service.service_id.to_string();
    sqlx::query(
        "INSERT INTO ai_services (service_id, slug, name, vendor, service_type, signatures, risk_tier, \
         risk_score, risk_factors, approval_status, approved_for, prohibited_for, certifications, \
         data_handling, data_regions, capabilities, pricing_model, documentation_url, \
         privacy_policy_url, terms_of_service_url, tenant_restriction_headers, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22) \
         ON CONFLICT (service_id) DO UPDATE SET slug = excluded.slug, name = excluded.name, vendor = excluded.vendor, \
         service_type = excluded.service_type, signatures = excluded.signatures, risk_tier = excluded.risk_tier, \
         risk_score = excluded.risk_score, risk_factors = excluded.risk_factors, approval_status = excluded.approval_status, \
         approved_for = excluded.approved_for, prohibited_for = excluded.prohibited_for, \
         certifications = excluded.certifications, data_handling = excluded.data_handling, \
         data_regions = excluded.data_regions, capabilities = excluded.capabilities, \
         pricing_model = excluded.pricing_model, documentation_url = excluded.documentation_url, \
         privacy_policy_url = excluded.privacy_policy_url, terms_of_service_url = excluded.terms_of_service_url, \
         tenant_restriction_headers = excluded.tenant_restriction_headers, updated_at = excluded.updated_at",
    )
    .bind(&id)
    .bind(&service.slug)
    .bind(&service.name)
    .bind(&service.vendor)
    .bind(&service.service_type)
    .bind(json_text(&service.signatures))
    .bind(service.risk_tier.as_str())
    .bind(i32::from(service.risk_score))
    .bind(service.risk_factors.as_ref().map(json_text))
    .bind(service.approval_status.as_str())
    .bind(json_text(&service.approved_for))
    .bind(json_text(&service.prohibited_for))
    .bind(json_text(&service.certifications))
    .bind(&service.data_handling)
    .bind(json_text(&service.data_regions))
    .bind(json_text(&service.capabilities))
    .bind(&service.pricing_model)
    .bind(&service.documentation_url)
    .bind(&service.privacy_policy_url)
    .bind(&service.terms_of_service_url)
    .bind(json_text(&service.tenant_restriction_headers))
    .bind(rfc3339(OffsetDateTime::now_utc()))
    .execute(&mut **tx)
    .await
    .map_err(classify)?;
    sqlx::query("DELETE FROM ai_service_signatures WHERE service_id = ?")
        .bind(&id)
        .execute(&mut **tx)
        .await
        .map_err(classify)?;
    for (kind, pattern) in signature_rows(service) {
        sqlx::query(
            "INSERT INTO ai_service_signatures (signature_id, service_id, signature_type, pattern) VALUES (?, ?, ?, ?)",
        )
        .bind(Uuid::new_v4().to_string())
        .bind(&id)
        .bind(kind)
        .bind(pattern)
        .execute(&mut **tx)
        .await
        .map_err(classify)?;
    }
    Ok(())
}

/// Rows per multi-row INSERT. The statement is prepared once and cached: a statement sized to
/// each batch was parsed again for almost every flush (27 parameters a row) and kept a
/// program of tens of thousands of instructions per size in the statement cache.
const ROWS_PER_INSERT: usize = 64;

/// A batch as full chunks of `ROWS_PER_INSERT` rows, then the rest in power-of-two sizes:
/// at most seven distinct statements, all cached.
fn insert_chunks(batch: &[DecisionRecord]) -> impl Iterator<Item = &[DecisionRecord]> {
    let mut rest = batch;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let size = if rest.len() >= ROWS_PER_INSERT {
            ROWS_PER_INSERT
        } else {
            1 << rest.len().ilog2()
        };
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        Some(chunk)
    })
}

async fn insert_decisions(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    rows: &[DecisionRecord],
) -> Result<(), StoreError> {
    let mut insert: QueryBuilder<Sqlite> = QueryBuilder::new(
        "INSERT OR IGNORE INTO decisions (decision_id, request_id, timestamp, user_id, user_email, \
         user_department, action, resource_type, resource_id, resource_name, resource_url, decision, \
         reason, confidence, risk_score, risk_factors, policies_evaluated, primary_policy_id, source, \
         device_id, ip_address, user_agent, content_classified, detected_entities, data_classification, \
         evaluation_duration_ms, explanation) ",
    );
    insert.push_values(rows, |mut row, d| {
        row.push_bind(d.decision_id.to_string())
            .push_bind(d.request_id.to_string())
            .push_bind(rfc3339(d.timestamp))
            .push_bind(d.user_id.to_string())
            .push_bind(d.user_email.as_deref())
            .push_bind(d.user_department.as_deref())
            .push_bind(d.action.as_str())
            .push_bind(d.resource_type.as_str())
            .push_bind(text_uuid(d.resource_id))
            .push_bind(d.resource_name.as_deref())
            .push_bind(d.resource_url.as_deref())
            .push_bind(d.decision.as_str())
            .push_bind(d.reason.as_str())
            .push_bind(d.confidence)
            .push_bind(d.risk_score)
            .push_bind(d.risk_factors.as_ref().map(json_text))
            .push_bind(d.policies_evaluated.get())
            .push_bind(text_uuid(d.primary_policy_id))
            .push_bind(d.source.as_deref())
            .push_bind(text_uuid(d.device_id))
            .push_bind(d.ip_address.map(|ip| ip.to_string()))
            .push_bind(d.user_agent.as_deref())
            .push_bind(d.content_classified)
            .push_bind(d.detected_entities.as_ref().map(json_text))
            .push_bind(json_text(&d.data_classification))
            .push_bind(d.evaluation_duration_ms)
            .push_bind(d.explanation.as_ref().map(|e| e.get()));
    });
    insert
        .build()
        .persistent(true)
        .execute(&mut **tx)
        .await
        .map_err(classify)?;
    Ok(())
}

/// Closes a connection whose write failed instead of returning it to the pool. After SQLITE_FULL
/// or an I/O error SQLite can roll the transaction back by itself; sqlx's ROLLBACK then fails
/// and it goes on counting a transaction that is gone, so every later "transaction" on that
/// connection is a savepoint whose release commits nothing: writes reported as stored were
/// never on disk. A fresh connection has no such history.
async fn discard(connection: sqlx::pool::PoolConnection<Sqlite>) {
    if let Err(error) = connection.close().await {
        tracing::debug!(%error, "Closing a failed SQLite connection.");
    }
}

async fn write_decision_rows(
    connection: &mut sqlx::SqliteConnection,
    batch: &[DecisionRecord],
) -> Result<(), StoreError> {
    use sqlx::Connection;
    let mut tx = connection.begin().await.map_err(classify)?;
    for rows in insert_chunks(batch) {
        insert_decisions(&mut tx, rows).await?;
    }

    let violations: Vec<_> = batch
        .iter()
        .filter_map(|d| Some((d, d.violation.as_ref()?)))
        .collect();
    if !violations.is_empty() {
        let mut insert: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT OR IGNORE INTO violations (violation_id, decision_id, timestamp, user_id, user_email, \
             user_department, violation_type, policy_id, policy_name, severity, resource_type, \
             resource_id, resource_name) ",
        );
        insert.push_values(violations, |mut row, (d, v)| {
            row.push_bind(v.violation_id.to_string())
                .push_bind(d.decision_id.to_string())
                .push_bind(rfc3339(d.timestamp))
                .push_bind(d.user_id.to_string())
                .push_bind(d.user_email.clone())
                .push_bind(d.user_department.clone())
                .push_bind(v.violation_type.clone())
                .push_bind(v.policy_id.to_string())
                .push_bind(v.policy_name.clone())
                .push_bind(v.severity.clone())
                .push_bind(d.resource_type.clone())
                .push_bind(text_uuid(d.resource_id))
                .push_bind(d.resource_name.clone());
        });
        insert.build().execute(&mut *tx).await.map_err(classify)?;
    }
    notify_violations(&mut tx, batch).await?;
    tx.commit().await.map_err(classify)
}

async fn write_event_rows(
    connection: &mut sqlx::SqliteConnection,
    batch: &[AuditEventRecord],
) -> Result<(), StoreError> {
    let mut insert: QueryBuilder<Sqlite> = QueryBuilder::new(
        "INSERT OR IGNORE INTO audit_events (event_id, timestamp, event_type, severity, actor_id, \
         actor_email, actor_type, target_type, target_id, target_name, action, result, decision_id, \
         source, ip_address, event_data, changes) ",
    );
    insert.push_values(batch, |mut row, e| {
        row.push_bind(e.event_id.to_string())
            .push_bind(rfc3339(e.timestamp))
            .push_bind(e.event_type.clone())
            .push_bind(e.severity.clone())
            .push_bind(text_uuid(e.actor_id))
            .push_bind(e.actor_email.clone())
            .push_bind(e.actor_type.clone())
            .push_bind(e.target_type.clone())
            .push_bind(text_uuid(e.target_id))
            .push_bind(e.target_name.clone())
            .push_bind(e.action.clone())
            .push_bind(e.result.clone())
            .push_bind(text_uuid(e.decision_id))
            .push_bind(e.source.clone())
            .push_bind(e.ip_address.map(|ip| ip.to_string()))
            .push_bind(e.event_data.as_ref().map(json_text))
            .push_bind(e.changes.as_ref().map(json_text));
    });
    insert
        .build()
        .execute(&mut *connection)
        .await
        .map_err(classify)?;
    Ok(())
}

fn text_uuid(id: Option<Uuid>) -> Option<String> {
    id.map(|id| id.to_string())
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

fn json_text<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> Result<TimeSeriesShape, StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(TimeSeriesShape::Embedded)
    }

    async fn write_decisions(&self, batch: &[DecisionRecord]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut connection = self.pool.acquire().await.map_err(classify)?;
        let written = write_decision_rows(&mut connection, batch).await;
        if written.is_err() {
            discard(connection).await;
        }
        written
    }

    async fn write_audit_events(&self, batch: &[AuditEventRecord]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut connection = self.pool.acquire().await.map_err(classify)?;
        let written = write_event_rows(&mut connection, batch).await;
        if written.is_err() {
            discard(connection).await;
        }
        written
    }

    async fn import_catalog(&self, catalog: &Catalog) -> Result<usize, StoreError> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let existing: i64 = sqlx::query_scalar("SELECT count(*) FROM ai_services")
            .fetch_one(&mut *tx)
            .await
            .map_err(classify)?;
        if existing > 0 {
            return Ok(0);
        }
        for service in catalog.services() {
            upsert_service(&mut tx, service).await?;
        }
        tx.commit().await.map_err(classify)?;
        Ok(catalog.services().len())
    }

    async fn save_service(&self, service: &AiService) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        upsert_service(&mut tx, service).await?;
        tx.commit().await.map_err(classify)
    }

    async fn delete_service(&self, id: Uuid) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM ai_services WHERE service_id = ?")
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(done.rows_affected() > 0)
    }

    async fn import_policies(&self, policies: &[PolicyDefinition]) -> Result<usize, StoreError> {
        let mut inserted = 0;
        for policy in policies {
            let written =
                write_policy_row(&self.pool, policy, Uuid::nil(), ExistingPolicy::Keep).await?;
            inserted += usize::try_from(written).unwrap_or(0);
        }
        Ok(inserted)
    }

    async fn load_policies(&self) -> Result<Vec<PolicyDefinition>, StoreError> {
        type Row = (
            String,
            String,
            Option<String>,
            String,
            String,
            i32,
            String,
            Option<String>,
            Option<String>,
            String,
            String,
            Option<String>,
            String,
            String,
            Option<String>,
            Option<String>,
        );
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT policy_id, name, description, version, status, priority, policy_type, framework, \
             article_reference, rule_engine, rule_content, rule_metadata, scope, effective_date, expiry_date, tags \
             FROM policies ORDER BY priority DESC, name",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        rows.into_iter()
            .map(
                |(
                    id,
                    name,
                    description,
                    version,
                    status,
                    priority,
                    policy_type,
                    framework,
                    article_reference,
                    rule_engine,
                    rule_content,
                    rule_metadata,
                    scope,
                    effective_date,
                    expiry_date,
                    tags,
                )| {
                    let corrupt = |message: String| StoreError::Corrupt {
                        table: "policies",
                        id: id.clone(),
                        message,
                    };
                    Ok(PolicyDefinition {
                        policy_id: Uuid::parse_str(&id)
                            .map_err(|e| corrupt(format!("policy_id: {e}")))?,
                        rule_metadata: rule_metadata
                            .map(|m| serde_json::from_str(&m))
                            .transpose()
                            .map_err(|e| corrupt(format!("rule_metadata: {e}")))?,
                        scope: serde_json::from_str(&scope)
                            .map_err(|e| corrupt(format!("scope: {e}")))?,
                        effective_date: parse_timestamp(&effective_date)
                            .ok_or_else(|| corrupt(format!("effective_date {effective_date:?}")))?,
                        expiry_date: expiry_date.as_deref().and_then(parse_timestamp),
                        tags: tags
                            .and_then(|t| serde_json::from_str(&t).ok())
                            .unwrap_or_default(),
                        name,
                        description,
                        version,
                        status,
                        priority,
                        policy_type,
                        framework,
                        article_reference,
                        rule_engine,
                        rule_content,
                        rule_file: None,
                    })
                },
            )
            .collect()
    }

    async fn load_exceptions(&self) -> Result<Vec<ExceptionRecord>, StoreError> {
        type Row = (
            String,
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<i64>,
        );
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT exception_id, status, user_id, department_id, group_id, policy_id, ai_service_id, \
             conditions, effective_from, effective_until, usage_count FROM exceptions WHERE status = 'approved'",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        rows.into_iter()
            .map(
                |(
                    id,
                    status,
                    user,
                    department,
                    group,
                    policy,
                    service,
                    conditions,
                    from,
                    until,
                    uses,
                )| {
                    let corrupt = |message: String| StoreError::Corrupt {
                        table: "exceptions",
                        id: id.clone(),
                        message,
                    };
                    let uuid = |text: Option<String>, field: &str| {
                        text.map(|t| Uuid::parse_str(&t))
                            .transpose()
                            .map_err(|e| corrupt(format!("{field}: {e}")))
                    };
                    Ok(ExceptionRecord {
                        exception_id: Uuid::parse_str(&id)
                            .map_err(|e| corrupt(format!("exception_id: {e}")))?,
                        status,
                        user_id: uuid(user, "user_id")?,
                        department_id: uuid(department, "department_id")?,
                        group_id: uuid(group, "group_id")?,
                        policy_id: uuid(policy, "policy_id")?,
                        ai_service_id: uuid(service, "ai_service_id")?,
                        conditions: conditions
                            .map(|c| serde_json::from_str(&c))
                            .transpose()
                            .map_err(|e| corrupt(format!("conditions: {e}")))?,
                        effective_from: from.as_deref().and_then(parse_timestamp),
                        effective_until: until.as_deref().and_then(parse_timestamp),
                        usage_count: uses.unwrap_or(0),
                    })
                },
            )
            .collect()
    }

    async fn insert_exception(&self, exception: &NewException) -> Result<(), StoreError> {
        let approved = exception.status == "approved";
        sqlx::query(
            "INSERT INTO exceptions (exception_id, exception_type, reason, justification, user_id, policy_id, \
             ai_service_id, status, requested_by, requested_at, approved_at, effective_from, effective_until, conditions) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(exception.exception_id.to_string())
        .bind(exception.exception_type)
        .bind(&exception.reason)
        .bind(&exception.justification)
        .bind(exception.user_id.to_string())
        .bind(text_uuid(exception.policy_id))
        .bind(text_uuid(exception.ai_service_id))
        .bind(exception.status)
        .bind(exception.requested_by.to_string())
        .bind(rfc3339(exception.effective_from))
        .bind(approved.then(|| rfc3339(exception.effective_from)))
        .bind(rfc3339(exception.effective_from))
        .bind(exception.effective_until.map(rfc3339))
        .bind(exception.conditions.as_ref().map(json_text))
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        Ok(())
    }

    async fn add_exception_uses(&self, uses: &[(Uuid, u64)]) -> Result<(), StoreError> {
        let now = rfc3339(OffsetDateTime::now_utc());
        for (id, count) in uses {
            sqlx::query("UPDATE exceptions SET usage_count = COALESCE(usage_count, 0) + ?, last_used = ? WHERE exception_id = ?")
                .bind(i64::try_from(*count).unwrap_or(i64::MAX))
                .bind(&now)
                .bind(id.to_string())
                .execute(&self.pool)
                .await
                .map_err(classify)?;
        }
        Ok(())
    }

    async fn revisions(&self) -> Result<Revisions, StoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as("SELECT domain, revision FROM store_changes")
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        Ok(Revisions::from_rows(rows))
    }

    async fn user_context_by_email(&self, email: &str) -> Result<Option<UserContext>, StoreError> {
        self.user_context("lower(email) = lower(?)", email.to_owned())
            .await
    }

    async fn user_context_by_id(&self, id: Uuid) -> Result<Option<UserContext>, StoreError> {
        self.user_context("user_id = ?", id.to_string()).await
    }

    async fn device_by_ip(
        &self,
        ip: std::net::IpAddr,
    ) -> Result<Option<DeviceContext>, StoreError> {
        type Row = (
            String,
            Option<String>,
            Option<bool>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let row: Option<Row> = sqlx::query_as(
            "SELECT a.asset_id, a.hostname, a.crown_jewel, a.sensitivity, a.compliance_status, a.data_classification, a.owner_id \
             FROM assets a, json_each(a.ip_addresses) ip WHERE ip.value = ? AND a.status = 'active' LIMIT 1",
        )
        .bind(ip.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)?;
        let Some((
            id,
            hostname,
            crown_jewel,
            sensitivity,
            compliance_status,
            classification,
            owner,
        )) = row
        else {
            return Ok(None);
        };
        Ok(Some(DeviceContext {
            id: parse_uuid("assets", &id, &id)?,
            hostname,
            crown_jewel: crown_jewel.unwrap_or(false),
            sensitivity,
            compliance_status,
            data_classification: text_list(classification),
            owner_id: owner
                .as_deref()
                .map(|o| parse_uuid("assets", &id, o))
                .transpose()?,
            policy_input: Default::default(),
        }))
    }

    async fn proxy_credential(&self, username: &str) -> Result<Option<(Uuid, String)>, StoreError> {
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT c.user_id, c.password_hash FROM proxy_credentials c WHERE c.username = ?",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)?;
        row.map(|(id, hash)| Ok((parse_uuid("proxy_credentials", &id, &id)?, hash)))
            .transpose()
    }

    async fn set_proxy_credential(
        &self,
        email: &str,
        password_hash: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO proxy_credentials (user_id, username, password_hash) \
             SELECT user_id, lower(email), ? FROM users WHERE lower(email) = lower(?) \
             ON CONFLICT(user_id) DO UPDATE SET password_hash = excluded.password_hash, updated_at = CURRENT_TIMESTAMP",
        )
        .bind(password_hash)
        .bind(email)
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        Ok(done.rows_affected() > 0)
    }

    async fn key_pairs(
        &self,
        table: &'static str,
        sql: &str,
    ) -> Result<std::collections::HashMap<String, Uuid>, StoreError> {
        let rows: Vec<(String, String)> = sqlx::query_as(sql)
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        rows.into_iter()
            .map(|(key, id)| Ok((key, parse_uuid(table, &id, &id)?)))
            .collect()
    }

    async fn apply_directory(&self, plan: &DirectoryPlan) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        // Parents and managers are set in a second pass: a row may name one inserted after it.
        for d in &plan.departments {
            sqlx::query(
                "INSERT INTO departments (department_id, name, cost_center, allowed_ai_services, prohibited_ai_services, business_unit, region) \
                 VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(department_id) DO UPDATE SET name = excluded.name, \
                 cost_center = excluded.cost_center, allowed_ai_services = excluded.allowed_ai_services, \
                 prohibited_ai_services = excluded.prohibited_ai_services, business_unit = excluded.business_unit, \
                 region = excluded.region, updated_at = CURRENT_TIMESTAMP",
            )
            .bind(d.id.to_string())
            .bind(d.entry.name.trim())
            .bind(&d.entry.cost_center)
            .bind(json_text(&d.entry.allowed_ai_services))
            .bind(json_text(&d.entry.prohibited_ai_services))
            .bind(&d.entry.business_unit)
            .bind(&d.entry.region)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        }
        for d in &plan.departments {
            sqlx::query("UPDATE departments SET parent_department_id = ? WHERE department_id = ?")
                .bind(text_uuid(d.parent_id))
                .bind(d.id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
        }
        for r in &plan.roles {
            sqlx::query(
                "INSERT INTO roles (role_id, name, description, permissions) VALUES (?, ?, ?, ?) \
                 ON CONFLICT(role_id) DO UPDATE SET description = excluded.description, \
                 permissions = excluded.permissions, updated_at = CURRENT_TIMESTAMP",
            )
            .bind(r.id.to_string())
            .bind(r.entry.name.trim())
            .bind(&r.entry.description)
            .bind(json_text(&r.entry.permissions))
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        }
        for g in &plan.groups {
            sqlx::query(
                "INSERT INTO groups (group_id, external_id, name, description, group_type, allowed_ai_services, prohibited_ai_services) \
                 VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(group_id) DO UPDATE SET name = excluded.name, \
                 description = excluded.description, group_type = excluded.group_type, \
                 allowed_ai_services = excluded.allowed_ai_services, prohibited_ai_services = excluded.prohibited_ai_services, \
                 updated_at = CURRENT_TIMESTAMP",
            )
            .bind(g.id.to_string())
            .bind(g.entry.external_id.trim())
            .bind(g.entry.name.trim())
            .bind(&g.entry.description)
            .bind(&g.entry.group_type)
            .bind(json_text(&g.entry.allowed_ai_services))
            .bind(json_text(&g.entry.prohibited_ai_services))
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        }
        for u in &plan.users {
            let id = u.id.to_string();
            sqlx::query(
                "INSERT INTO users (user_id, external_id, email, first_name, last_name, display_name, department_id, \
                 job_title, employee_type, risk_score, clearance_level, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
                 ON CONFLICT(user_id) DO UPDATE SET external_id = excluded.external_id, email = excluded.email, \
                 first_name = excluded.first_name, last_name = excluded.last_name, display_name = excluded.display_name, \
                 department_id = excluded.department_id, job_title = excluded.job_title, employee_type = excluded.employee_type, \
                 risk_score = excluded.risk_score, clearance_level = excluded.clearance_level, status = excluded.status, \
                 deactivated_at = CASE WHEN excluded.status = 'active' THEN NULL ELSE COALESCE(users.deactivated_at, CURRENT_TIMESTAMP) END, \
                 updated_at = CURRENT_TIMESTAMP",
            )
            .bind(&id)
            .bind(&u.entry.external_id)
            .bind(&u.entry.email)
            .bind(&u.entry.first_name)
            .bind(&u.entry.last_name)
            .bind(&u.entry.display_name)
            .bind(text_uuid(u.department_id))
            .bind(&u.entry.job_title)
            .bind(&u.entry.employee_type)
            .bind(u.risk_score)
            .bind(&u.entry.clearance_level)
            .bind(&u.status)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        }
        for u in &plan.users {
            let id = u.id.to_string();
            sqlx::query("UPDATE users SET manager_id = ? WHERE user_id = ?")
                .bind(text_uuid(u.manager_id))
                .bind(&id)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
            if let Some(groups) = &u.group_ids {
                sqlx::query("DELETE FROM user_groups WHERE user_id = ?")
                    .bind(&id)
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?;
                for group in groups {
                    sqlx::query(
                        "INSERT OR IGNORE INTO user_groups (user_id, group_id) VALUES (?, ?)",
                    )
                    .bind(&id)
                    .bind(group.to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?;
                }
            }
            if let Some(roles) = &u.roles {
                sqlx::query("DELETE FROM user_roles WHERE user_id = ?")
                    .bind(&id)
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?;
                for (role, expires) in roles {
                    sqlx::query("INSERT OR IGNORE INTO user_roles (user_id, role_id, expires_at) VALUES (?, ?, ?)")
                        .bind(&id)
                        .bind(role.to_string())
                        .bind(expires.map(rfc3339))
                        .execute(&mut *tx)
                        .await
                        .map_err(classify)?;
                }
            }
        }
        for a in &plan.assets {
            let ips: Vec<String> = a.ip_addresses.iter().map(ToString::to_string).collect();
            sqlx::query(
                "INSERT INTO assets (asset_id, external_id, asset_type, hostname, ip_addresses, mac_addresses, serial_number, \
                 owner_id, department_id, os, os_version, compliance_status, crown_jewel, sensitivity, data_classification, status) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(asset_id) DO UPDATE SET \
                 asset_type = excluded.asset_type, hostname = excluded.hostname, ip_addresses = excluded.ip_addresses, \
                 mac_addresses = excluded.mac_addresses, serial_number = excluded.serial_number, owner_id = excluded.owner_id, \
                 department_id = excluded.department_id, os = excluded.os, os_version = excluded.os_version, \
                 compliance_status = excluded.compliance_status, crown_jewel = excluded.crown_jewel, \
                 sensitivity = excluded.sensitivity, data_classification = excluded.data_classification, \
                 status = excluded.status, updated_at = CURRENT_TIMESTAMP",
            )
            .bind(a.id.to_string())
            .bind(&a.entry.external_id)
            .bind(a.entry.asset_type.trim())
            .bind(&a.entry.hostname)
            .bind(json_text(&ips))
            .bind(json_text(&a.entry.mac_addresses))
            .bind(&a.entry.serial_number)
            .bind(text_uuid(a.owner_id))
            .bind(text_uuid(a.department_id))
            .bind(&a.entry.os)
            .bind(&a.entry.os_version)
            .bind(&a.entry.compliance_status)
            .bind(a.entry.crown_jewel)
            .bind(&a.entry.sensitivity)
            .bind(json_text(&a.entry.data_classification))
            .bind(&a.status)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        }
        tx.commit().await.map_err(classify)
    }

    async fn record_directory_sync(&self, sync: &DirectorySync) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let existing: Option<String> = sqlx::query_scalar(
            "SELECT integration_id FROM integrations WHERE name = ? AND provider = ? LIMIT 1",
        )
        .bind(&sync.name)
        .bind(&sync.provider)
        .fetch_optional(&mut *tx)
        .await
        .map_err(classify)?;
        let integration = existing.unwrap_or_else(|| Uuid::new_v4().to_string());
        let config = serde_json::json!({"source": "file", "path": sync.file}).to_string();
        sqlx::query(
            "INSERT INTO integrations (integration_id, name, integration_type, provider, config, last_sync_at, last_sync_status, last_sync_error, health_status) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(integration_id) DO UPDATE SET config = excluded.config, \
             last_sync_at = excluded.last_sync_at, last_sync_status = excluded.last_sync_status, \
             last_sync_error = excluded.last_sync_error, health_status = excluded.health_status, updated_at = CURRENT_TIMESTAMP",
        )
        .bind(&integration)
        .bind(&sync.name)
        .bind(sync.integration_type)
        .bind(&sync.provider)
        .bind(config)
        .bind(rfc3339(sync.completed_at))
        .bind(sync.status)
        .bind(&sync.error)
        .bind(if sync.status == "success" { "healthy" } else { "unhealthy" })
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        sqlx::query(
            "INSERT INTO integration_sync_logs (log_id, integration_id, sync_started_at, sync_completed_at, status, \
             records_fetched, records_created, records_updated, records_deleted, records_failed, error_message) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?)",
        )
        .bind(Uuid::new_v4().to_string())
        .bind(&integration)
        .bind(rfc3339(sync.started_at))
        .bind(rfc3339(sync.completed_at))
        .bind(sync.status)
        .bind(sync.fetched)
        .bind(sync.created)
        .bind(sync.updated)
        .bind(sync.failed)
        .bind(&sync.error)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        tx.commit().await.map_err(classify)
    }

    async fn admin_token(&self, sha256: &str) -> Result<Option<TokenGrant>, StoreError> {
        type Row = (String, String, String, String, Option<String>);
        let row: Option<Row> = sqlx::query_as(
            "SELECT t.token_id, t.name, r.name, r.permissions, t.user_id FROM admin_tokens t \
             JOIN roles r ON r.role_id = t.role_id WHERE t.token_sha256 = ? AND t.revoked_at IS NULL \
             AND (t.expires_at IS NULL OR julianday(t.expires_at) > julianday('now'))",
        )
        .bind(sha256.to_ascii_lowercase())
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)?;
        let Some((token_id, name, role, permissions, user_id)) = row else {
            return Ok(None);
        };
        Ok(Some(TokenGrant {
            token_id: parse_uuid("admin_tokens", &token_id, &token_id)?,
            name,
            role,
            permissions: serde_json::from_str(&permissions).unwrap_or_default(),
            user_id: user_id
                .as_deref()
                .map(|u| parse_uuid("admin_tokens", &token_id, u))
                .transpose()?,
        }))
    }

    async fn create_admin_token(
        &self,
        name: &str,
        role: &str,
        sha256: &str,
    ) -> Result<Option<Uuid>, StoreError> {
        let id = Uuid::new_v4();
        let done = sqlx::query(
            "INSERT INTO admin_tokens (token_id, name, token_sha256, role_id) SELECT ?, ?, ?, role_id FROM roles WHERE name = ?",
        )
        .bind(id.to_string())
        .bind(name)
        .bind(sha256.to_ascii_lowercase())
        .bind(role)
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        Ok((done.rows_affected() > 0).then_some(id))
    }

    async fn role_permissions(&self, role: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let text: Option<String> =
            sqlx::query_scalar("SELECT permissions FROM roles WHERE name = ?")
                .bind(role)
                .fetch_optional(&self.pool)
                .await
                .map_err(classify)?;
        Ok(text.map(|t| serde_json::from_str(&t).unwrap_or_default()))
    }

    async fn save_policy(&self, write: &PolicyWrite<'_>) -> Result<(), StoreError> {
        let policy = write.definition;
        let actor = write.actor.to_string();
        let now = rfc3339(OffsetDateTime::now_utc());
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let existing = ExistingPolicy::Replace {
            approve: write.approve,
        };
        write_policy_row(&mut *tx, policy, write.actor, existing).await?;
        sqlx::query(
            "INSERT OR IGNORE INTO policy_versions (version_id, policy_id, version, rule_content, rule_metadata, \
             change_summary, changed_by, changed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(Uuid::new_v4().to_string())
        .bind(policy.policy_id.to_string())
        .bind(&policy.version)
        .bind(&policy.rule_content)
        .bind(policy.rule_metadata.as_ref().map(json_text))
        .bind(&write.change_summary)
        .bind(&actor)
        .bind(&now)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        tx.commit().await.map_err(classify)
    }

    async fn change_exception(
        &self,
        id: Uuid,
        change: &ExceptionChange,
    ) -> Result<bool, StoreError> {
        let sql = match change.status {
            "revoked" => {
                "UPDATE exceptions SET status = 'revoked', revoked_by = ?2, revoked_at = ?5, \
                 revocation_reason = ?3 WHERE exception_id = ?1"
            }
            _ => {
                "UPDATE exceptions SET status = ?4, approved_by = ?2, approved_at = ?5, \
                 effective_from = COALESCE(effective_from, ?5), \
                 revocation_reason = COALESCE(?3, revocation_reason) WHERE exception_id = ?1"
            }
        };
        let done = sqlx::query(sql)
            .bind(id.to_string())
            .bind(change.actor.to_string())
            .bind(&change.reason)
            .bind(change.status)
            .bind(rfc3339(OffsetDateTime::now_utc()))
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(done.rows_affected() > 0)
    }

    async fn update_violation(&self, id: Uuid, patch: &ViolationPatch) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE violations SET status = COALESCE(?2, status), assigned_to = COALESCE(?3, assigned_to), \
             resolution_notes = COALESCE(?4, resolution_notes), updated_at = ?5, \
             resolved_at = CASE WHEN COALESCE(?2, status) IN ('resolved', 'false_positive') THEN COALESCE(resolved_at, ?5) ELSE NULL END \
             WHERE violation_id = ?1",
        )
        .bind(id.to_string())
        .bind(&patch.status)
        .bind(text_uuid(patch.assigned_to))
        .bind(&patch.notes)
        .bind(rfc3339(OffsetDateTime::now_utc()))
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        Ok(done.rows_affected() > 0)
    }

    async fn record_policy_conflicts(
        &self,
        conflicts: &[crate::policy::Conflict],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        sqlx::query("DELETE FROM policy_conflicts WHERE resolved IS NOT 1")
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        let now = rfc3339(OffsetDateTime::now_utc());
        for conflict in conflicts {
            sqlx::query(
                "INSERT INTO policy_conflicts (conflict_id, policy_a_id, policy_b_id, conflict_type, conflict_details, \
                 severity, detected_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(Uuid::new_v4().to_string())
            .bind(conflict.policy_a.0.to_string())
            .bind(conflict.policy_b.0.to_string())
            .bind(conflict.conflict_type)
            .bind(json_text(&conflict.details))
            .bind(conflict.severity)
            .bind(&now)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        }
        tx.commit().await.map_err(classify)
    }

    async fn refresh_shadow_ai(&self, since: OffsetDateTime) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        sqlx::query("DELETE FROM shadow_ai_detections WHERE detection_source = 'aigate_proxy'")
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        sqlx::query(
            "INSERT INTO shadow_ai_detections (detection_id, service_name, service_id, user_id, user_email, department, \
             detected_at, detection_source, access_count, last_access, approved, risk_level, action_taken, action_date) \
             SELECT lower(hex(randomblob(16))), d.resource_name, s.service_id, d.user_id, d.user_email, d.user_department, \
             min(d.timestamp), 'aigate_proxy', count(*), max(d.timestamp), 0, \
             CASE WHEN max(d.risk_score) >= 80 THEN 'critical' WHEN max(d.risk_score) >= 60 THEN 'high' \
                  WHEN max(d.risk_score) >= 40 THEN 'medium' ELSE 'low' END, \
             CASE WHEN max(d.decision = 'DENY') THEN 'blocked' WHEN max(d.decision = 'REVIEW') THEN 'flagged' ELSE 'none' END, \
             max(d.timestamp) \
             FROM decisions d LEFT JOIN ai_services s ON s.service_id = d.resource_id \
             WHERE julianday(d.timestamp) >= julianday(?) AND ((d.resource_id IS NULL AND json_extract(d.explanation, '$.facts.unknown_ai') = 1) \
                OR (s.service_id IS NOT NULL AND s.approval_status <> 'approved')) \
             GROUP BY d.resource_name, s.service_id, d.user_id, d.user_email, d.user_department",
        )
        .bind(rfc3339(since))
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        tx.commit().await.map_err(classify)
    }

    async fn list(
        &self,
        listing: Listing,
        query: &ListQuery,
    ) -> Result<Vec<serde_json::Value>, StoreError> {
        let (table, time, id) = (listing.table(), listing.time_column(), listing.id_column());
        let columns: Vec<String> =
            sqlx::query_scalar("SELECT name FROM pragma_table_info(?) ORDER BY cid")
                .bind(table)
                .fetch_all(&self.pool)
                .await
                .map_err(classify)?;
        // SQLite has no row-to-JSON: build json_object over the columns, turning the TEXT columns
        // that hold JSON (arrays, objects) back into JSON.
        let fields: Vec<String> = columns
            .iter()
            .map(|c| {
                format!(
                    "'{c}', CASE WHEN json_valid(t.{c}) AND substr(t.{c}, 1, 1) IN ('[', '{{') THEN json(t.{c}) ELSE t.{c} END"
                )
            })
            .collect();
        let mut sql = QueryBuilder::<Sqlite>::new(format!(
            "SELECT json_object({}) FROM {table} t WHERE 1",
            fields.join(", ")
        ));
        for (column, value) in &query.equals {
            sql.push(format!(" AND CAST(t.{column} AS TEXT) = "))
                .push_bind(value.clone());
        }
        if let Some(since) = query.since {
            sql.push(format!(" AND julianday(t.{time}) >= julianday("))
                .push_bind(rfc3339(since))
                .push(")");
        }
        if let Some(until) = query.until {
            sql.push(format!(" AND julianday(t.{time}) < julianday("))
                .push_bind(rfc3339(until))
                .push(")");
        }
        if let Some((after_time, after_id)) = &query.after {
            sql.push(format!(" AND (t.{time}, t.{id}) < ("))
                .push_bind(after_time.clone())
                .push(", ")
                .push_bind(after_id.clone())
                .push(")");
        }
        sql.push(format!(" ORDER BY t.{time} DESC, t.{id} DESC LIMIT "))
            .push_bind(query.limit);
        let rows: Vec<String> = sql
            .build_query_scalar()
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        Ok(rows
            .iter()
            .filter_map(|row| serde_json::from_str(row).ok())
            .collect())
    }

    async fn decisions_per_hour(
        &self,
        since: OffsetDateTime,
    ) -> Result<Vec<serde_json::Value>, StoreError> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT json_object('hour', hour, 'decision', decision, 'count', sum(decision_count)) \
             FROM decisions_hourly WHERE julianday(hour) >= julianday(?) GROUP BY hour, decision ORDER BY hour, decision",
        )
        .bind(rfc3339(since))
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        Ok(rows
            .iter()
            .filter_map(|row| serde_json::from_str(row).ok())
            .collect())
    }

    async fn top_services(
        &self,
        since: OffsetDateTime,
        limit: i64,
    ) -> Result<Vec<serde_json::Value>, StoreError> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT json_object('name', resource_name, 'decisions', count(*), \
             'denied', sum(decision <> 'ALLOW')) FROM decisions \
             WHERE julianday(timestamp) >= julianday(?) AND resource_name IS NOT NULL \
             GROUP BY resource_name ORDER BY count(*) DESC, resource_name LIMIT ?",
        )
        .bind(rfc3339(since))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        Ok(rows
            .iter()
            .filter_map(|row| serde_json::from_str(row).ok())
            .collect())
    }

    async fn bypass_hosts(&self) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar("SELECT host FROM intercept_bypass ORDER BY host")
            .fetch_all(&self.pool)
            .await
            .map_err(classify)
    }

    async fn add_bypass_host(&self, host: &str, reason: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO intercept_bypass (host, reason) VALUES (?, ?) ON CONFLICT (host) DO NOTHING")
            .bind(host)
            .bind(reason)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn remove_bypass_host(&self, host: &str) -> Result<bool, StoreError> {
        let result = sqlx::query("DELETE FROM intercept_bypass WHERE host = ?")
            .bind(host)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(result.rows_affected() > 0)
    }

    async fn dedicated_writer(&self) -> Option<Arc<dyn Store>> {
        if self.in_memory {
            return None;
        }
        // SQLite has one writer at a time anyway; the busy timeout orders it with the others.
        // The connection's worker thread is named after the writer's, which schedules both.
        let options = (*self.pool.connect_options())
            .clone()
            .thread_name(|id| format!("{}-db-{id}", crate::audit::WRITER_THREAD_PREFIX));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(|error| tracing::warn!(%error, "Cannot open the audit writer's own SQLite connection; sharing the pool."))
            .ok()?;
        Some(Arc::new(SqliteStore {
            pool,
            in_memory: false,
        }))
    }

    async fn maintain(&self) -> Result<Vec<String>, StoreError> {
        let mut done = Vec::new();
        for (table, days) in [
            ("decisions", DECISIONS_RETENTION_DAYS),
            ("audit_events", AUDIT_EVENTS_RETENTION_DAYS),
        ] {
            let cutoff = rfc3339(OffsetDateTime::now_utc() - Duration::days(days));
            let deleted = sqlx::query(&format!("DELETE FROM {table} WHERE timestamp < ?"))
                .bind(cutoff)
                .execute(&self.pool)
                .await
                .map_err(classify)?
                .rows_affected();
            if deleted > 0 {
                done.push(format!("deleted {deleted} expired rows from {table}"));
            }
        }
        Ok(done)
    }
}

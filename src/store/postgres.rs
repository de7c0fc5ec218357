//! PostgreSQL (and TimescaleDB when the extension is there).

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{Postgres, QueryBuilder};
use time::{Date, Duration, Month, OffsetDateTime};
use tracing::info;

use super::admin::{ExceptionChange, ListQuery, Listing, PolicyWrite, TokenGrant, ViolationPatch};
use super::{
    classify, pg_copy, pg_timeseries, redact_url, signature_rows, ChangeDomain, DirectorySync,
    Revisions, Store, StoreError, TimeSeries, TimeSeriesShape,
};
use crate::audit::{AuditEventRecord, DecisionRecord};
use crate::catalog::{AiService, Catalog};
use crate::identity::directory::DirectoryPlan;
use crate::identity::{DeviceContext, UserContext};
use crate::policy::{ExceptionRecord, NewException, PolicyDefinition};
use time::PrimitiveDateTime;
use uuid::Uuid;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// Retention from the data model.
const DECISIONS_RETENTION_DAYS: i64 = 90;
const AUDIT_EVENTS_RETENTION_DAYS: i64 = 7 * 365 + 2;
/// Monthly partitions are kept this many months ahead of now.
const MONTHS_AHEAD: i32 = 2;
/// Batches this large are COPYed in two halves at once; smaller ones would pay a second commit
/// for little.
const PARALLEL_COPY_ROWS: usize = 400;

#[derive(Debug)]
pub struct PostgresStore {
    pool: PgPool,
    time_series: TimeSeries,
}

impl PostgresStore {
    pub async fn open(url: &str, time_series: TimeSeries) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect_lazy(url)
            .map_err(|error| StoreError::Url {
                url: redact_url(url),
                message: error.to_string(),
            })?;
        Ok(Self { pool, time_series })
    }

    async fn shape(&self) -> Result<TimeSeriesShape, StoreError> {
        Ok(pg_timeseries::existing_shape(&self.pool)
            .await?
            .unwrap_or(TimeSeriesShape::NativePartitions))
    }

    /// Creates the monthly partition of `table` that holds `month_start`, moving any rows the
    /// default partition caught for that month into it (an attach would fail otherwise).
    async fn ensure_partition(
        &self,
        table: &str,
        month_start: Date,
    ) -> Result<Option<String>, StoreError> {
        let name = format!(
            "{table}_y{:04}m{:02}",
            month_start.year(),
            u8::from(month_start.month())
        );
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_class WHERE relname = $1)")
                .bind(&name)
                .fetch_one(&self.pool)
                .await
                .map_err(classify)?;
        if exists {
            return Ok(None);
        }
        let next = next_month(month_start);
        let (from, to) = (month_start.to_string(), next.to_string());
        let mut tx = self.pool.begin().await.map_err(classify)?;
        for statement in [
            format!("CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"),
            format!("INSERT INTO {name} SELECT * FROM {table}_default WHERE timestamp >= '{from}' AND timestamp < '{to}'"),
            format!("DELETE FROM {table}_default WHERE timestamp >= '{from}' AND timestamp < '{to}'"),
            format!("ALTER TABLE {table} ATTACH PARTITION {name} FOR VALUES FROM ('{from}') TO ('{to}')"),
        ] {
            sqlx::query(&statement).execute(&mut *tx).await.map_err(classify)?;
        }
        tx.commit().await.map_err(classify)?;
        Ok(Some(name))
    }

    /// Drops whole monthly partitions of `table` that ended before the retention cut-off, and
    /// expired rows the default partition holds.
    async fn drop_expired(
        &self,
        table: &str,
        retention_days: i64,
    ) -> Result<Vec<String>, StoreError> {
        let cutoff = OffsetDateTime::now_utc() - Duration::days(retention_days);
        let partitions: Vec<String> = sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = $1",
        )
        .bind(table)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        let mut dropped = Vec::new();
        for partition in partitions {
            let Some(month) = partition_month(table, &partition) else {
                continue;
            };
            if next_month(month) <= cutoff.date() {
                sqlx::query(&format!("DROP TABLE {partition}"))
                    .execute(&self.pool)
                    .await
                    .map_err(classify)?;
                dropped.push(partition);
            }
        }
        sqlx::query(&format!("DELETE FROM {table}_default WHERE timestamp < $1"))
            .bind(cutoff)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(dropped)
    }

    /// The idempotent path: multi-row INSERT ... ON CONFLICT DO NOTHING.
    async fn insert_decisions(&self, batch: &[DecisionRecord]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let mut insert: QueryBuilder<Postgres> = QueryBuilder::new(format!(
            "INSERT INTO decisions ({}) ",
            pg_copy::DECISION_COLUMNS
        ));
        insert.push_values(batch, |mut row, d| {
            row.push_bind(d.decision_id)
                .push_bind(d.request_id)
                .push_bind(d.timestamp)
                .push_bind(d.user_id)
                .push_bind(&d.user_email)
                .push_bind(&d.user_department)
                .push_bind(&d.action)
                .push_bind(&d.resource_type)
                .push_bind(d.resource_id)
                .push_bind(&d.resource_name)
                .push_bind(&d.resource_url)
                .push_bind(&d.decision)
                .push_bind(&d.reason)
                .push_bind(d.confidence)
                .push_bind(d.risk_score)
                .push_bind(d.risk_factors.as_ref().map(Json))
                .push_bind(Json(&d.policies_evaluated))
                .push_bind(d.primary_policy_id)
                .push_bind(&d.source)
                .push_bind(d.device_id)
                .push_bind(d.ip_address.map(|ip| ip.to_string()))
                .push_unseparated("::inet")
                .push_bind(&d.user_agent)
                .push_bind(d.content_classified)
                .push_bind(d.detected_entities.as_ref().map(Json))
                .push_bind(&d.data_classification)
                .push_bind(d.evaluation_duration_ms)
                .push_bind(d.explanation.as_ref().map(Json));
        });
        // A replayed batch may already be partly stored: the primary key makes it exactly-once.
        insert.push(" ON CONFLICT DO NOTHING");
        insert.build().execute(&mut *tx).await.map_err(classify)?;

        let violations: Vec<_> = batch
            .iter()
            .filter_map(|d| Some((d, d.violation.as_ref()?)))
            .collect();
        if !violations.is_empty() {
            let mut insert: QueryBuilder<Postgres> = QueryBuilder::new(format!(
                "INSERT INTO violations ({}) ",
                pg_copy::VIOLATION_COLUMNS
            ));
            insert.push_values(violations, |mut row, (d, v)| {
                row.push_bind(v.violation_id)
                    .push_bind(d.decision_id)
                    .push_bind(d.timestamp)
                    .push_bind(d.user_id)
                    .push_bind(&d.user_email)
                    .push_bind(&d.user_department)
                    .push_bind(&v.violation_type)
                    .push_bind(v.policy_id)
                    .push_bind(&v.policy_name)
                    .push_bind(&v.severity)
                    .push_bind(&d.resource_type)
                    .push_bind(d.resource_id)
                    .push_bind(&d.resource_name);
            });
            insert.push(" ON CONFLICT DO NOTHING");
            insert.build().execute(&mut *tx).await.map_err(classify)?;
        }
        notify_violations(&mut tx, batch).await?;
        tx.commit().await.map_err(classify)
    }

    /// COPY first; a batch colliding with stored rows (a replay) goes through the idempotent
    /// INSERT instead.
    async fn write_decision_part(&self, batch: &[DecisionRecord]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        match self.copy_decisions(batch).await {
            Ok(()) => return Ok(()),
            Err(StoreError::Rejected(sqlx::Error::Database(db)))
                if db.code().as_deref() == Some("23505") =>
            {
                // Some rows are already stored (a replay): the idempotent path below skips them.
            }
            Err(error) => return Err(error),
        }
        self.insert_decisions(batch).await
    }

    /// The fast path: binary COPY of decisions and violations in one transaction.
    async fn copy_decisions(&self, batch: &[DecisionRecord]) -> Result<(), StoreError> {
        let mut rows = Vec::with_capacity(batch.len() * 1024);
        pg_copy::decision_rows(batch, &mut rows);
        let mut tx = self.pool.begin().await.map_err(classify)?;
        copy_in(&mut tx, "decisions", pg_copy::DECISION_COLUMNS, &rows).await?;
        rows.clear();
        if pg_copy::violation_rows(batch, &mut rows) > 0 {
            copy_in(&mut tx, "violations", pg_copy::VIOLATION_COLUMNS, &rows).await?;
        }
        notify_violations(&mut tx, batch).await?;
        tx.commit().await.map_err(classify)
    }
}

async fn copy_in(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    table: &str,
    columns: &str,
    stream: &[u8],
) -> Result<(), StoreError> {
    let mut copy = tx
        .copy_in_raw(&format!(
            "COPY {table} ({columns}) FROM STDIN (FORMAT binary)"
        ))
        .await
        .map_err(classify)?;
    copy.send(stream).await.map_err(classify)?;
    copy.finish().await.map_err(classify)?;
    Ok(())
}

/// In-app notifications for the violations of a batch: the user whose request was stopped and,
/// for high and critical ones, their manager. Anonymous requests notify nobody; a replayed
/// violation is not notified twice.
async fn notify_violations(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    batch: &[DecisionRecord],
) -> Result<(), StoreError> {
    let ids: Vec<Uuid> = batch
        .iter()
        .filter(|d| !d.user_id.is_nil())
        .filter_map(|d| d.violation.as_ref().map(|v| v.violation_id))
        .collect();
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO notifications (notification_type, severity, recipient_id, title, message, action_url, channels, \
         related_entity_type, related_entity_id) \
         SELECT 'violation', r.severity, r.recipient, r.title, r.message, '/admin/violations/' || v.violation_id, \
                ARRAY['in_app'], 'violation', v.violation_id \
         FROM violations v CROSS JOIN LATERAL ( \
             SELECT v.user_id AS recipient, \
                    CASE v.severity WHEN 'critical' THEN 'critical' WHEN 'high' THEN 'warning' ELSE 'info' END AS severity, \
                    'Request stopped by ' || COALESCE(v.policy_name, 'a policy') AS title, \
                    'Your request to ' || COALESCE(v.resource_name, 'an AI service') || ' was stopped: ' || v.violation_type AS message \
             UNION ALL \
             SELECT u.manager_id, CASE v.severity WHEN 'critical' THEN 'critical' ELSE 'warning' END, \
                    'Violation by ' || COALESCE(v.user_email, 'a team member'), \
                    COALESCE(v.user_email, 'A team member') || ': ' || v.violation_type || ' (' || v.severity || ') on ' \
                      || COALESCE(v.resource_name, 'an AI service') || ', policy ' || COALESCE(v.policy_name, '?') \
             FROM users u WHERE u.user_id = v.user_id AND u.manager_id IS NOT NULL AND v.severity IN ('high', 'critical') \
         ) r \
         WHERE v.violation_id = ANY($1) \
           AND NOT EXISTS (SELECT 1 FROM notifications n WHERE n.related_entity_id = v.violation_id AND n.recipient_id = r.recipient)",
    )
    .bind(&ids)
    .execute(&mut **tx)
    .await
    .map_err(classify)?;
    Ok(())
}

#[async_trait]
impl Store for PostgresStore {
    async fn migrate(&self) -> Result<TimeSeriesShape, StoreError> {
        let shape = pg_timeseries::choose_shape(&self.pool, self.time_series).await?;
        pg_timeseries::migrator_for(&MIGRATOR, shape)
            .await?
            .run(&self.pool)
            .await?;
        if shape == TimeSeriesShape::Timescale {
            pg_timeseries::ensure_continuous_aggregate(&self.pool).await?;
        } else {
            self.maintain().await?;
        }
        Ok(shape)
    }

    async fn write_decisions(&self, batch: &[DecisionRecord]) -> Result<(), StoreError> {
        if batch.len() < PARALLEL_COPY_ROWS {
            return self.write_decision_part(batch).await;
        }
        // A COPY keeps one server backend busy (index upkeep, WAL), so halves on two pooled
        // connections go in about 1.5x as fast. Each half is its own transaction: when one fails
        // the writer spills or isolates the whole batch, and the replay stores the half that did
        // commit exactly once (the INSERT path skips rows already there).
        let (first, second) = batch.split_at(batch.len() / 2);
        let (first, second) = tokio::join!(
            self.write_decision_part(first),
            self.write_decision_part(second)
        );
        first.and(second)
    }

    async fn write_audit_events(&self, batch: &[AuditEventRecord]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut insert: QueryBuilder<Postgres> = QueryBuilder::new(
            "INSERT INTO audit_events (event_id, timestamp, event_type, severity, actor_id, actor_email, \
             actor_type, target_type, target_id, target_name, action, result, decision_id, source, \
             ip_address, event_data, changes) ",
        );
        insert.push_values(batch, |mut row, e| {
            row.push_bind(e.event_id)
                .push_bind(e.timestamp)
                .push_bind(&e.event_type)
                .push_bind(&e.severity)
                .push_bind(e.actor_id)
                .push_bind(&e.actor_email)
                .push_bind(&e.actor_type)
                .push_bind(&e.target_type)
                .push_bind(e.target_id)
                .push_bind(&e.target_name)
                .push_bind(&e.action)
                .push_bind(&e.result)
                .push_bind(e.decision_id)
                .push_bind(&e.source)
                .push_bind(e.ip_address.map(|ip| ip.to_string()))
                .push_unseparated("::inet")
                .push_bind(e.event_data.as_ref().map(Json))
                .push_bind(e.changes.as_ref().map(Json));
        });
        insert.push(" ON CONFLICT DO NOTHING");
        insert.build().execute(&self.pool).await.map_err(classify)?;
        Ok(())
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
        let done = sqlx::query("DELETE FROM ai_services WHERE service_id = $1")
            .bind(id)
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
            Uuid,
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
            Option<serde_json::Value>,
            serde_json::Value,
            PrimitiveDateTime,
            Option<PrimitiveDateTime>,
            Option<Vec<String>>,
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
                    policy_id,
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
                    Ok(PolicyDefinition {
                        scope: serde_json::from_value(scope).map_err(|e| StoreError::Corrupt {
                            table: "policies",
                            id: policy_id.to_string(),
                            message: format!("scope: {e}"),
                        })?,
                        policy_id,
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
                        rule_metadata,
                        effective_date: effective_date.assume_utc(),
                        expiry_date: expiry_date.map(PrimitiveDateTime::assume_utc),
                        tags: tags.unwrap_or_default(),
                    })
                },
            )
            .collect()
    }

    async fn load_exceptions(&self) -> Result<Vec<ExceptionRecord>, StoreError> {
        type Row = (
            Uuid,
            String,
            Option<Uuid>,
            Option<Uuid>,
            Option<Uuid>,
            Option<Uuid>,
            Option<Uuid>,
            Option<serde_json::Value>,
            Option<PrimitiveDateTime>,
            Option<PrimitiveDateTime>,
            Option<i32>,
        );
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT exception_id, status, user_id, department_id, group_id, policy_id, ai_service_id, \
             conditions, effective_from, effective_until, usage_count FROM exceptions WHERE status = 'approved'",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        Ok(rows
            .into_iter()
            .map(
                |(
                    exception_id,
                    status,
                    user_id,
                    department_id,
                    group_id,
                    policy_id,
                    ai_service_id,
                    conditions,
                    from,
                    until,
                    uses,
                )| ExceptionRecord {
                    exception_id,
                    status,
                    user_id,
                    department_id,
                    group_id,
                    policy_id,
                    ai_service_id,
                    conditions,
                    effective_from: from.map(PrimitiveDateTime::assume_utc),
                    effective_until: until.map(PrimitiveDateTime::assume_utc),
                    usage_count: i64::from(uses.unwrap_or(0)),
                },
            )
            .collect())
    }

    async fn insert_exception(&self, exception: &NewException) -> Result<(), StoreError> {
        let approved = exception.status == "approved";
        sqlx::query(
            "INSERT INTO exceptions (exception_id, exception_type, reason, justification, user_id, policy_id, \
             ai_service_id, status, requested_by, requested_at, approved_at, effective_from, effective_until, conditions) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $10, $12, $13)",
        )
        .bind(exception.exception_id)
        .bind(exception.exception_type)
        .bind(&exception.reason)
        .bind(&exception.justification)
        .bind(exception.user_id)
        .bind(exception.policy_id)
        .bind(exception.ai_service_id)
        .bind(exception.status)
        .bind(exception.requested_by)
        .bind(utc(exception.effective_from))
        .bind(approved.then(|| utc(exception.effective_from)))
        .bind(exception.effective_until.map(utc))
        .bind(exception.conditions.clone().map(Json))
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        Ok(())
    }

    async fn add_exception_uses(&self, uses: &[(Uuid, u64)]) -> Result<(), StoreError> {
        for (id, count) in uses {
            sqlx::query("UPDATE exceptions SET usage_count = COALESCE(usage_count, 0) + $1, last_used = now() WHERE exception_id = $2")
                .bind(i32::try_from(*count).unwrap_or(i32::MAX))
                .bind(id)
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

    async fn change_notifications(&self) -> Option<tokio::sync::mpsc::Receiver<ChangeDomain>> {
        let mut listener = match sqlx::postgres::PgListener::connect_with(&self.pool).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, "Cannot LISTEN for policy changes; polling only.");
                return None;
            }
        };
        if let Err(error) = listener.listen("aigate_reload").await {
            tracing::warn!(%error, "Cannot LISTEN for policy changes; polling only.");
            return None;
        }
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                match listener.recv().await {
                    Ok(notification) => {
                        // A payload from an older trigger (a table name) refreshes everything.
                        let domains = match ChangeDomain::from_name(notification.payload()) {
                            Some(domain) => vec![domain],
                            None => ChangeDomain::ALL.to_vec(),
                        };
                        for domain in domains {
                            // A full channel holds pending changes; the reloader drains them
                            // all and then compares revisions, so none is missed.
                            if let Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) =
                                tx.try_send(domain)
                            {
                                return;
                            }
                        }
                    }
                    // sqlx reconnects on the next recv; changes made meanwhile reach the poller.
                    Err(error) => {
                        tracing::debug!(%error, "Policy change listener lost its connection; reconnecting.");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Some(rx)
    }

    async fn user_context_by_email(&self, email: &str) -> Result<Option<UserContext>, StoreError> {
        let id: Option<Uuid> =
            sqlx::query_scalar("SELECT user_id FROM users WHERE lower(email) = lower($1)")
                .bind(email)
                .fetch_optional(&self.pool)
                .await
                .map_err(classify)?;
        match id {
            Some(id) => self.user_context_by_id(id).await,
            None => Ok(None),
        }
    }

    async fn user_context_by_id(&self, id: Uuid) -> Result<Option<UserContext>, StoreError> {
        type Row = (
            String,
            Option<Uuid>,
            Option<i32>,
            Option<String>,
            Option<String>,
            String,
        );
        let row: Option<Row> = sqlx::query_as(
            "SELECT email, department_id, risk_score, clearance_level, employee_type, status FROM users WHERE user_id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)?;
        let Some((email, department_id, risk_score, clearance_level, employee_type, status)) = row
        else {
            return Ok(None);
        };
        let mut user = UserContext {
            id,
            email,
            department_id,
            risk_score: risk_score.unwrap_or(50),
            clearance_level,
            employee_type,
            status,
            ..UserContext::default()
        };
        // The department and its parents, nearest first (depth-bounded against cycles).
        let chain: Vec<(String, Option<Vec<String>>, Option<Vec<String>>)> = sqlx::query_as(
            "WITH RECURSIVE chain(department_id, name, parent, allowed, prohibited, depth) AS ( \
               SELECT department_id, name, parent_department_id, allowed_ai_services, prohibited_ai_services, 0 \
               FROM departments WHERE department_id = $1 \
               UNION ALL \
               SELECT d.department_id, d.name, d.parent_department_id, d.allowed_ai_services, d.prohibited_ai_services, c.depth + 1 \
               FROM departments d JOIN chain c ON d.department_id = c.parent WHERE c.depth < 16) \
             SELECT name, allowed, prohibited FROM chain ORDER BY depth",
        )
        .bind(department_id)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        for (depth, (name, allowed, prohibited)) in chain.into_iter().enumerate() {
            if depth == 0 {
                user.department = Some(name.clone());
                user.allowed_ai_services.extend(allowed.unwrap_or_default());
                user.prohibited_ai_services
                    .extend(prohibited.unwrap_or_default());
            }
            user.department_chain.push(name);
        }
        let groups: Vec<(Uuid, String, Option<Vec<String>>, Option<Vec<String>>)> = sqlx::query_as(
            "SELECT g.group_id, g.name, g.allowed_ai_services, g.prohibited_ai_services FROM groups g \
             JOIN user_groups ug ON ug.group_id = g.group_id WHERE ug.user_id = $1 ORDER BY g.name",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        for (group_id, name, allowed, prohibited) in groups {
            user.group_ids.push(group_id);
            user.groups.push(name);
            user.allowed_ai_services.extend(allowed.unwrap_or_default());
            user.prohibited_ai_services
                .extend(prohibited.unwrap_or_default());
        }
        user.roles = sqlx::query_scalar(
            "SELECT r.name FROM roles r JOIN user_roles ur ON ur.role_id = r.role_id \
             WHERE ur.user_id = $1 AND (ur.expires_at IS NULL OR ur.expires_at > now() AT TIME ZONE 'UTC') ORDER BY r.name",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)?;
        Ok(Some(user))
    }

    async fn device_by_ip(
        &self,
        ip: std::net::IpAddr,
    ) -> Result<Option<DeviceContext>, StoreError> {
        type Row = (
            Uuid,
            Option<String>,
            Option<bool>,
            Option<String>,
            Option<String>,
            Option<Vec<String>>,
            Option<Uuid>,
        );
        let row: Option<Row> = sqlx::query_as(
            "SELECT asset_id, hostname, crown_jewel, sensitivity, compliance_status, data_classification, owner_id \
             FROM assets WHERE $1::inet = ANY(ip_addresses) AND status = 'active' LIMIT 1",
        )
        .bind(ip.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)?;
        Ok(row.map(
            |(
                id,
                hostname,
                crown_jewel,
                sensitivity,
                compliance_status,
                classification,
                owner_id,
            )| DeviceContext {
                id,
                hostname,
                crown_jewel: crown_jewel.unwrap_or(false),
                sensitivity,
                compliance_status,
                data_classification: classification.unwrap_or_default(),
                owner_id,
                policy_input: Default::default(),
            },
        ))
    }

    async fn proxy_credential(&self, username: &str) -> Result<Option<(Uuid, String)>, StoreError> {
        sqlx::query_as(
            "SELECT user_id, password_hash FROM proxy_credentials WHERE lower(username) = lower($1)",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)
    }

    async fn set_proxy_credential(
        &self,
        email: &str,
        password_hash: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO proxy_credentials (user_id, username, password_hash) \
             SELECT user_id, lower(email), $1 FROM users WHERE lower(email) = lower($2) \
             ON CONFLICT (user_id) DO UPDATE SET password_hash = EXCLUDED.password_hash, updated_at = NOW()",
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
        _table: &'static str,
        sql: &str,
    ) -> Result<std::collections::HashMap<String, Uuid>, StoreError> {
        let rows: Vec<(String, Uuid)> = sqlx::query_as(sql)
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        Ok(rows.into_iter().collect())
    }

    async fn apply_directory(&self, plan: &DirectoryPlan) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        // Parents and managers are set in a second pass: a row may name one inserted after it.
        for d in &plan.departments {
            sqlx::query(
                "INSERT INTO departments (department_id, name, cost_center, allowed_ai_services, prohibited_ai_services, business_unit, region) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (department_id) DO UPDATE SET name = EXCLUDED.name, \
                 cost_center = EXCLUDED.cost_center, allowed_ai_services = EXCLUDED.allowed_ai_services, \
                 prohibited_ai_services = EXCLUDED.prohibited_ai_services, business_unit = EXCLUDED.business_unit, \
                 region = EXCLUDED.region, updated_at = NOW()",
            )
            .bind(d.id)
            .bind(d.entry.name.trim())
            .bind(&d.entry.cost_center)
            .bind(&d.entry.allowed_ai_services)
            .bind(&d.entry.prohibited_ai_services)
            .bind(&d.entry.business_unit)
            .bind(&d.entry.region)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        }
        for d in &plan.departments {
            sqlx::query(
                "UPDATE departments SET parent_department_id = $1 WHERE department_id = $2",
            )
            .bind(d.parent_id)
            .bind(d.id)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        }
        for r in &plan.roles {
            sqlx::query(
                "INSERT INTO roles (role_id, name, description, permissions) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (role_id) DO UPDATE SET description = EXCLUDED.description, \
                 permissions = EXCLUDED.permissions, updated_at = NOW()",
            )
            .bind(r.id)
            .bind(r.entry.name.trim())
            .bind(&r.entry.description)
            .bind(Json(&r.entry.permissions))
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        }
        for g in &plan.groups {
            sqlx::query(
                "INSERT INTO groups (group_id, external_id, name, description, group_type, allowed_ai_services, prohibited_ai_services) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (group_id) DO UPDATE SET name = EXCLUDED.name, \
                 description = EXCLUDED.description, group_type = EXCLUDED.group_type, \
                 allowed_ai_services = EXCLUDED.allowed_ai_services, prohibited_ai_services = EXCLUDED.prohibited_ai_services, \
                 updated_at = NOW()",
            )
            .bind(g.id)
            .bind(g.entry.external_id.trim())
            .bind(g.entry.name.trim())
            .bind(&g.entry.description)
            .bind(&g.entry.group_type)
            .bind(&g.entry.allowed_ai_services)
            .bind(&g.entry.prohibited_ai_services)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        }
        for u in &plan.users {
            sqlx::query(
                "INSERT INTO users (user_id, external_id, email, first_name, last_name, display_name, department_id, \
                 job_title, employee_type, risk_score, clearance_level, status) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                 ON CONFLICT (user_id) DO UPDATE SET external_id = EXCLUDED.external_id, email = EXCLUDED.email, \
                 first_name = EXCLUDED.first_name, last_name = EXCLUDED.last_name, display_name = EXCLUDED.display_name, \
                 department_id = EXCLUDED.department_id, job_title = EXCLUDED.job_title, employee_type = EXCLUDED.employee_type, \
                 risk_score = EXCLUDED.risk_score, clearance_level = EXCLUDED.clearance_level, status = EXCLUDED.status, \
                 deactivated_at = CASE WHEN EXCLUDED.status = 'active' THEN NULL ELSE COALESCE(users.deactivated_at, NOW()) END, \
                 updated_at = NOW()",
            )
            .bind(u.id)
            .bind(&u.entry.external_id)
            .bind(&u.entry.email)
            .bind(&u.entry.first_name)
            .bind(&u.entry.last_name)
            .bind(&u.entry.display_name)
            .bind(u.department_id)
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
            sqlx::query("UPDATE users SET manager_id = $1 WHERE user_id = $2")
                .bind(u.manager_id)
                .bind(u.id)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
            if let Some(groups) = &u.group_ids {
                sqlx::query("DELETE FROM user_groups WHERE user_id = $1")
                    .bind(u.id)
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?;
                sqlx::query(
                    "INSERT INTO user_groups (user_id, group_id) SELECT $1, unnest($2::uuid[]) ON CONFLICT DO NOTHING",
                )
                .bind(u.id)
                .bind(groups)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
            }
            if let Some(roles) = &u.roles {
                sqlx::query("DELETE FROM user_roles WHERE user_id = $1")
                    .bind(u.id)
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?;
                for (role, expires) in roles {
                    sqlx::query(
                        "INSERT INTO user_roles (user_id, role_id, expires_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    )
                    .bind(u.id)
                    .bind(role)
                    .bind(expires.map(utc))
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
                 VALUES ($1, $2, $3, $4, $5::inet[], $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) ON CONFLICT (asset_id) DO UPDATE SET \
                 asset_type = EXCLUDED.asset_type, hostname = EXCLUDED.hostname, ip_addresses = EXCLUDED.ip_addresses, \
                 mac_addresses = EXCLUDED.mac_addresses, serial_number = EXCLUDED.serial_number, owner_id = EXCLUDED.owner_id, \
                 department_id = EXCLUDED.department_id, os = EXCLUDED.os, os_version = EXCLUDED.os_version, \
                 compliance_status = EXCLUDED.compliance_status, crown_jewel = EXCLUDED.crown_jewel, \
                 sensitivity = EXCLUDED.sensitivity, data_classification = EXCLUDED.data_classification, \
                 status = EXCLUDED.status, updated_at = NOW()",
            )
            .bind(a.id)
            .bind(&a.entry.external_id)
            .bind(a.entry.asset_type.trim())
            .bind(&a.entry.hostname)
            .bind(ips)
            .bind(&a.entry.mac_addresses)
            .bind(&a.entry.serial_number)
            .bind(a.owner_id)
            .bind(a.department_id)
            .bind(&a.entry.os)
            .bind(&a.entry.os_version)
            .bind(&a.entry.compliance_status)
            .bind(a.entry.crown_jewel)
            .bind(&a.entry.sensitivity)
            .bind(&a.entry.data_classification)
            .bind(&a.status)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        }
        tx.commit().await.map_err(classify)
    }

    async fn record_directory_sync(&self, sync: &DirectorySync) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let existing: Option<Uuid> = sqlx::query_scalar(
            "SELECT integration_id FROM integrations WHERE name = $1 AND provider = $2 LIMIT 1",
        )
        .bind(&sync.name)
        .bind(&sync.provider)
        .fetch_optional(&mut *tx)
        .await
        .map_err(classify)?;
        let integration = existing.unwrap_or_else(Uuid::new_v4);
        sqlx::query(
            "INSERT INTO integrations (integration_id, name, integration_type, provider, config, last_sync_at, last_sync_status, last_sync_error, health_status) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (integration_id) DO UPDATE SET config = EXCLUDED.config, \
             last_sync_at = EXCLUDED.last_sync_at, last_sync_status = EXCLUDED.last_sync_status, \
             last_sync_error = EXCLUDED.last_sync_error, health_status = EXCLUDED.health_status, updated_at = NOW()",
        )
        .bind(integration)
        .bind(&sync.name)
        .bind(sync.integration_type)
        .bind(&sync.provider)
        .bind(Json(serde_json::json!({"source": "file", "path": sync.file})))
        .bind(utc(sync.completed_at))
        .bind(sync.status)
        .bind(&sync.error)
        .bind(if sync.status == "success" { "healthy" } else { "unhealthy" })
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        sqlx::query(
            "INSERT INTO integration_sync_logs (integration_id, sync_started_at, sync_completed_at, status, \
             records_fetched, records_created, records_updated, records_deleted, records_failed, error_message) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9)",
        )
        .bind(integration)
        .bind(utc(sync.started_at))
        .bind(utc(sync.completed_at))
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
        type Row = (Uuid, String, String, serde_json::Value, Option<Uuid>);
        let row: Option<Row> = sqlx::query_as(
            "SELECT t.token_id, t.name, r.name, r.permissions, t.user_id FROM admin_tokens t \
             JOIN roles r ON r.role_id = t.role_id WHERE t.token_sha256 = $1 AND t.revoked_at IS NULL \
             AND (t.expires_at IS NULL OR t.expires_at > NOW())",
        )
        .bind(sha256.to_ascii_lowercase())
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)?;
        Ok(
            row.map(|(token_id, name, role, permissions, user_id)| TokenGrant {
                token_id,
                name,
                role,
                permissions,
                user_id,
            }),
        )
    }

    async fn create_admin_token(
        &self,
        name: &str,
        role: &str,
        sha256: &str,
    ) -> Result<Option<Uuid>, StoreError> {
        sqlx::query_scalar(
            "INSERT INTO admin_tokens (name, token_sha256, role_id) SELECT $1, $2, role_id FROM roles WHERE name = $3 \
             RETURNING token_id",
        )
        .bind(name)
        .bind(sha256.to_ascii_lowercase())
        .bind(role)
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)
    }

    async fn role_permissions(&self, role: &str) -> Result<Option<serde_json::Value>, StoreError> {
        sqlx::query_scalar("SELECT permissions FROM roles WHERE name = $1")
            .bind(role)
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)
    }

    async fn save_policy(&self, write: &PolicyWrite<'_>) -> Result<(), StoreError> {
        let policy = write.definition;
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let existing = ExistingPolicy::Replace {
            approve: write.approve,
        };
        write_policy_row(&mut *tx, policy, write.actor, existing).await?;
        sqlx::query(
            "INSERT INTO policy_versions (policy_id, version, rule_content, rule_metadata, change_summary, changed_by) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (policy_id, version) DO NOTHING",
        )
        .bind(policy.policy_id)
        .bind(&policy.version)
        .bind(&policy.rule_content)
        .bind(policy.rule_metadata.clone().map(Json))
        .bind(&write.change_summary)
        .bind(write.actor)
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
                "UPDATE exceptions SET status = 'revoked', revoked_by = $2, revoked_at = NOW(), \
                 revocation_reason = $3 WHERE exception_id = $1"
            }
            _ => {
                "UPDATE exceptions SET status = $4, approved_by = $2, approved_at = NOW(), \
                 effective_from = COALESCE(effective_from, NOW()), \
                 revocation_reason = COALESCE($3, revocation_reason) WHERE exception_id = $1"
            }
        };
        let done = sqlx::query(sql)
            .bind(id)
            .bind(change.actor)
            .bind(&change.reason)
            .bind(change.status)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(done.rows_affected() > 0)
    }

    async fn update_violation(&self, id: Uuid, patch: &ViolationPatch) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE violations SET status = COALESCE($2, status), assigned_to = COALESCE($3, assigned_to), \
             resolution_notes = COALESCE($4, resolution_notes), updated_at = NOW(), \
             resolved_at = CASE WHEN COALESCE($2, status) IN ('resolved', 'false_positive') THEN COALESCE(resolved_at, NOW()) ELSE NULL END \
             WHERE violation_id = $1",
        )
        .bind(id)
        .bind(&patch.status)
        .bind(patch.assigned_to)
        .bind(&patch.notes)
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
        sqlx::query("DELETE FROM policy_conflicts WHERE resolved IS NOT TRUE")
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        for conflict in conflicts {
            sqlx::query(
                "INSERT INTO policy_conflicts (policy_a_id, policy_b_id, conflict_type, conflict_details, severity) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(conflict.policy_a.0)
            .bind(conflict.policy_b.0)
            .bind(conflict.conflict_type)
            .bind(Json(&conflict.details))
            .bind(conflict.severity)
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
            "INSERT INTO shadow_ai_detections (service_name, service_id, user_id, user_email, department, detected_at, \
             detection_source, access_count, last_access, approved, risk_level, action_taken, action_date) \
             SELECT d.resource_name, s.service_id, d.user_id, d.user_email, d.user_department, \
             min(d.timestamp) AT TIME ZONE 'UTC', 'aigate_proxy', count(*), max(d.timestamp) AT TIME ZONE 'UTC', FALSE, \
             CASE WHEN max(d.risk_score) >= 80 THEN 'critical' WHEN max(d.risk_score) >= 60 THEN 'high' \
                  WHEN max(d.risk_score) >= 40 THEN 'medium' ELSE 'low' END, \
             CASE WHEN bool_or(d.decision = 'DENY') THEN 'blocked' WHEN bool_or(d.decision = 'REVIEW') THEN 'flagged' ELSE 'none' END, \
             max(d.timestamp) AT TIME ZONE 'UTC' \
             FROM decisions d LEFT JOIN ai_services s ON s.service_id = d.resource_id \
             WHERE d.timestamp >= $1 AND ((d.resource_id IS NULL AND COALESCE((d.explanation -> 'facts' ->> 'unknown_ai')::boolean, FALSE)) \
                OR (s.service_id IS NOT NULL AND s.approval_status <> 'approved')) \
             GROUP BY d.resource_name, s.service_id, d.user_id, d.user_email, d.user_department",
        )
        .bind(since)
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
        let (time, id) = (listing.time_column(), listing.id_column());
        let cast = if listing.time_has_zone() {
            "timestamptz"
        } else {
            "timestamp"
        };
        let mut sql = QueryBuilder::<Postgres>::new(format!(
            "SELECT to_jsonb(t) FROM {} t WHERE TRUE",
            listing.table()
        ));
        for (column, value) in &query.equals {
            sql.push(format!(" AND t.{column}::text = "))
                .push_bind(value.clone());
        }
        // Bound as text and cast, so one code path serves TIMESTAMP and TIMESTAMPTZ columns.
        let text = |at: OffsetDateTime| {
            at.to_offset(time::UtcOffset::UTC)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        };
        if let Some(since) = query.since {
            sql.push(format!(" AND t.{time} >= ("))
                .push_bind(text(since))
                .push(format!(")::timestamptz::{cast}"));
        }
        if let Some(until) = query.until {
            sql.push(format!(" AND t.{time} < ("))
                .push_bind(text(until))
                .push(format!(")::timestamptz::{cast}"));
        }
        if let Some((after_time, after_id)) = &query.after {
            sql.push(format!(" AND (t.{time}, t.{id}::text) < (("))
                .push_bind(after_time.clone())
                .push(format!(")::{cast}, "))
                .push_bind(after_id.clone())
                .push(")");
        }
        sql.push(format!(" ORDER BY t.{time} DESC, t.{id}::text DESC LIMIT "))
            .push_bind(query.limit);
        sql.build_query_scalar()
            .fetch_all(&self.pool)
            .await
            .map_err(classify)
    }

    async fn decisions_per_hour(
        &self,
        since: OffsetDateTime,
    ) -> Result<Vec<serde_json::Value>, StoreError> {
        sqlx::query_scalar(
            "SELECT jsonb_build_object('hour', hour, 'decision', decision, 'count', sum(decision_count)) \
             FROM decisions_hourly WHERE hour >= $1 GROUP BY hour, decision ORDER BY hour, decision",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)
    }

    async fn top_services(
        &self,
        since: OffsetDateTime,
        limit: i64,
    ) -> Result<Vec<serde_json::Value>, StoreError> {
        sqlx::query_scalar(
            "SELECT jsonb_build_object('name', resource_name, 'decisions', count(*), \
             'denied', count(*) FILTER (WHERE decision <> 'ALLOW')) FROM decisions \
             WHERE timestamp >= $1 AND resource_name IS NOT NULL GROUP BY resource_name ORDER BY count(*) DESC, resource_name LIMIT $2",
        )
        .bind(since)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(classify)
    }

    async fn bypass_hosts(&self) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar("SELECT host::text FROM intercept_bypass ORDER BY host")
            .fetch_all(&self.pool)
            .await
            .map_err(classify)
    }

    async fn add_bypass_host(&self, host: &str, reason: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO intercept_bypass (host, reason) VALUES ($1, $2) ON CONFLICT (host) DO NOTHING")
            .bind(host)
            .bind(reason)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn remove_bypass_host(&self, host: &str) -> Result<bool, StoreError> {
        let result = sqlx::query("DELETE FROM intercept_bypass WHERE host = $1")
            .bind(host)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(result.rows_affected() > 0)
    }

    async fn dedicated_writer(&self) -> Option<Arc<dyn Store>> {
        let options = (*self.pool.connect_options()).clone();
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect_lazy_with(options);
        Some(Arc::new(PostgresStore {
            pool,
            time_series: self.time_series,
        }))
    }

    async fn maintain(&self) -> Result<Vec<String>, StoreError> {
        if self.shape().await? == TimeSeriesShape::Timescale {
            // Retention and the aggregate refresh are TimescaleDB background jobs.
            return Ok(Vec::new());
        }
        let mut done = Vec::new();
        let today = OffsetDateTime::now_utc().date();
        let mut month = first_of_month(today);
        for _ in 0..=MONTHS_AHEAD {
            for table in ["decisions", "audit_events"] {
                if let Some(created) = self.ensure_partition(table, month).await? {
                    done.push(format!("created partition {created}"));
                }
            }
            month = next_month(month);
        }
        for (table, days) in [
            ("decisions", DECISIONS_RETENTION_DAYS),
            ("audit_events", AUDIT_EVENTS_RETENTION_DAYS),
        ] {
            for dropped in self.drop_expired(table, days).await? {
                done.push(format!("dropped expired partition {dropped}"));
            }
        }
        let populated: bool = sqlx::query_scalar(
            "SELECT relispopulated FROM pg_class WHERE relname = 'decisions_hourly'",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(classify)?;
        let refresh = if populated {
            "REFRESH MATERIALIZED VIEW CONCURRENTLY decisions_hourly"
        } else {
            "REFRESH MATERIALIZED VIEW decisions_hourly"
        };
        sqlx::query(refresh)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        for line in &done {
            info!(action = %line, "Store maintenance.");
        }
        Ok(done)
    }
}

fn first_of_month(date: Date) -> Date {
    date.replace_day(1).unwrap_or(date)
}

fn next_month(month_start: Date) -> Date {
    let (year, month) = match month_start.month() {
        Month::December => (month_start.year() + 1, Month::January),
        month => (month_start.year(), month.next()),
    };
    Date::from_calendar_date(year, month, 1).unwrap_or(month_start)
}

/// `decisions_y2026m11` → 2026-11-01.
fn partition_month(table: &str, partition: &str) -> Option<Date> {
    let rest = partition.strip_prefix(table)?.strip_prefix("_y")?;
    let (year, month) = rest.split_once('m')?;
    let month = Month::try_from(month.parse::<u8>().ok()?).ok()?;
    Date::from_calendar_date(year.parse().ok()?, month, 1).ok()
}

/// What writing a policy row does to a stored row with the same id.
#[derive(Debug, Clone, Copy)]
enum ExistingPolicy {
    /// Leave it (file import: never overwrite an administrator's row).
    Keep,
    /// Replace it; `approve` stamps `approved_by`/`approved_at` (an activation).
    Replace { approve: bool },
}

/// Inserts or replaces one `policies` row; returns the rows written (0 when an existing row was
/// kept).
async fn write_policy_row<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    policy: &PolicyDefinition,
    actor: Uuid,
    existing: ExistingPolicy,
) -> Result<u64, StoreError> {
    macro_rules! insert {
        () => {
            "INSERT INTO policies (policy_id, name, description, version, status, priority, policy_type, \
             framework, article_reference, rule_engine, rule_content, rule_metadata, scope, created_by, \
             updated_by, effective_date, expiry_date, tags, approved_by, approved_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14, $15, $16, $17, \
             CASE WHEN $18 THEN $14 END, CASE WHEN $18 THEN NOW() END) "
        };
    }
    let (sql, approve) = match existing {
        ExistingPolicy::Keep => (concat!(insert!(), "ON CONFLICT (policy_id) DO NOTHING"), false),
        ExistingPolicy::Replace { approve } => (
            concat!(
                insert!(),
                "ON CONFLICT (policy_id) DO UPDATE SET name = EXCLUDED.name, description = EXCLUDED.description, \
                 version = EXCLUDED.version, status = EXCLUDED.status, priority = EXCLUDED.priority, \
                 policy_type = EXCLUDED.policy_type, framework = EXCLUDED.framework, \
                 article_reference = EXCLUDED.article_reference, rule_engine = EXCLUDED.rule_engine, \
                 rule_content = EXCLUDED.rule_content, rule_metadata = EXCLUDED.rule_metadata, scope = EXCLUDED.scope, \
                 updated_by = EXCLUDED.updated_by, updated_at = NOW(), effective_date = EXCLUDED.effective_date, \
                 expiry_date = EXCLUDED.expiry_date, tags = EXCLUDED.tags, \
                 approved_by = CASE WHEN $18 THEN EXCLUDED.approved_by ELSE policies.approved_by END, \
                 approved_at = CASE WHEN $18 THEN NOW() ELSE policies.approved_at END"
            ),
            approve,
        ),
    };
    let done = sqlx::query(sql)
        .bind(policy.policy_id)
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
        .bind(policy.rule_metadata.clone().map(Json))
        .bind(Json(&policy.scope))
        .bind(actor)
        .bind(utc(policy.effective_date))
        .bind(policy.expiry_date.map(utc))
        .bind(&policy.tags)
        .bind(approve)
        .execute(executor)
        .await
        .map_err(classify)?;
    Ok(done.rows_affected())
}

/// One service row and its signature rows, replacing what was there.
async fn upsert_service(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    service: &AiService,
) -> Result<(), StoreError> {
    let signatures = serde_json::to_value(&service.signatures).unwrap_or_default();
    sqlx::query(
        "INSERT INTO ai_services (service_id, slug, name, vendor, service_type, signatures, risk_tier, \
         risk_score, risk_factors, approval_status, approved_for, prohibited_for, certifications, \
         data_handling, data_regions, capabilities, pricing_model, documentation_url, \
         privacy_policy_url, terms_of_service_url, tenant_restriction_headers) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21) \
         ON CONFLICT (service_id) DO UPDATE SET slug = EXCLUDED.slug, name = EXCLUDED.name, vendor = EXCLUDED.vendor, \
         service_type = EXCLUDED.service_type, signatures = EXCLUDED.signatures, risk_tier = EXCLUDED.risk_tier, \
         risk_score = EXCLUDED.risk_score, risk_factors = EXCLUDED.risk_factors, approval_status = EXCLUDED.approval_status, \
         approved_for = EXCLUDED.approved_for, prohibited_for = EXCLUDED.prohibited_for, \
         certifications = EXCLUDED.certifications, data_handling = EXCLUDED.data_handling, \
         data_regions = EXCLUDED.data_regions, capabilities = EXCLUDED.capabilities, \
         pricing_model = EXCLUDED.pricing_model, documentation_url = EXCLUDED.documentation_url, \
         privacy_policy_url = EXCLUDED.privacy_policy_url, terms_of_service_url = EXCLUDED.terms_of_service_url, \
         tenant_restriction_headers = EXCLUDED.tenant_restriction_headers, updated_at = NOW()",
    )
    .bind(service.service_id)
    .bind(&service.slug)
    .bind(&service.name)
    .bind(&service.vendor)
    .bind(&service.service_type)
    .bind(Json(signatures))
    .bind(service.risk_tier.as_str())
    .bind(i32::from(service.risk_score))
    .bind(service.risk_factors.as_ref().map(Json))
    .bind(service.approval_status.as_str())
    .bind(&service.approved_for)
    .bind(&service.prohibited_for)
    .bind(&service.certifications)
    .bind(&service.data_handling)
    .bind(&service.data_regions)
    .bind(&service.capabilities)
    .bind(&service.pricing_model)
    .bind(&service.documentation_url)
    .bind(&service.privacy_policy_url)
    .bind(&service.terms_of_service_url)
    .bind(&service.tenant_restriction_headers)
    .execute(&mut **tx)
    .await
    .map_err(classify)?;
    sqlx::query("DELETE FROM ai_service_signatures WHERE service_id = $1")
        .bind(service.service_id)
        .execute(&mut **tx)
        .await
        .map_err(classify)?;
    for (kind, pattern) in signature_rows(service) {
        sqlx::query(
            "INSERT INTO ai_service_signatures (service_id, signature_type, pattern) VALUES ($1, $2, $3)",
        )
        .bind(service.service_id)
        .bind(kind)
        .bind(pattern)
        .execute(&mut **tx)
        .await
        .map_err(classify)?;
    }
    Ok(())
}

/// The data model's `TIMESTAMP` columns hold UTC without an offset.
fn utc(at: OffsetDateTime) -> PrimitiveDateTime {
    let at = at.to_offset(time::UtcOffset::UTC);
    PrimitiveDateTime::new(at.date(), at.time())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_round_trip() {
        let month = Date::from_calendar_date(2026, Month::December, 1).unwrap();
        assert_eq!(
            partition_month("decisions", "decisions_y2026m12"),
            Some(month)
        );
        assert_eq!(next_month(month).to_string(), "2027-01-01");
        assert_eq!(partition_month("decisions", "decisions_default"), None);
        assert_eq!(partition_month("decisions", "audit_events_y2026m12"), None);
    }
}

//! The embedded SQLite store: zero set-up, one file, same tables as PostgreSQL with mapped types.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Sqlite};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::admin::{ListQuery, Listing, TokenGrant};
use super::common::{store_impl, CLEAR_GATEWAY_SHADOW_AI};
use super::directory::identity_repositories;
use super::listing::{listed_rows, ListedRow};
use super::rows::{SqliteColumns, TokenRow};
use super::{classify, Store, StoreError, TimeSeriesShape};
use crate::audit::{AuditEventRecord, DecisionRecord};

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

/// How SQLite binds the values it stores as TEXT.
mod encode {
    use time::OffsetDateTime;
    use uuid::Uuid;

    pub(super) fn id(id: Uuid) -> String {
        id.to_string()
    }

    pub(super) fn stamp(at: OffsetDateTime) -> String {
        super::rfc3339(at)
    }

    pub(super) fn list(items: &[String]) -> String {
        super::json_text(&items)
    }

    pub(super) fn json<T: serde::Serialize>(value: &T) -> String {
        super::json_text(value)
    }
}

// SQLite has no INET: addresses are a JSON array of text.
identity_repositories!(
    SqliteStore,
    SqliteColumns,
    device_by_ip: "SELECT a.asset_id, a.hostname, a.crown_jewel, a.sensitivity, a.compliance_status, \
                   a.data_classification, a.owner_id \
                   FROM assets a, json_each(a.ip_addresses) ip WHERE ip.value = $1 AND a.status = 'active' LIMIT 1",
    inet_list: "$5"
);

// The methods below are SQLite's own; the rest of `Store` is in `common.rs`. They differ where
// the engines truly do: batch ingest (chunked cached INSERT OR IGNORE here, binary COPY there),
// timestamps kept as text (compared through julianday()), JSON through json_each/json_extract,
// no boolean aggregates, no row-to-JSON, and retention by DELETE instead of partitions.
store_impl!(SqliteStore, SqliteColumns, sqlx::Sqlite,
schema: {
    async fn migrate(&self) -> Result<TimeSeriesShape, StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(TimeSeriesShape::Embedded)
    }
},
audit: {
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
},
admin: {
    async fn admin_token(&self, sha256: &str) -> Result<Option<TokenGrant>, StoreError> {
        let row: Option<TokenRow<SqliteColumns>> = sqlx::query_as(
            "SELECT t.token_id, t.name, r.name AS role, r.permissions, t.user_id FROM admin_tokens t \
             JOIN roles r ON r.role_id = t.role_id WHERE t.token_sha256 = $1 AND t.revoked_at IS NULL \
             AND (t.expires_at IS NULL OR julianday(t.expires_at) > julianday('now'))",
        )
        .bind(sha256.to_ascii_lowercase())
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)?;
        row.map(TokenRow::into_grant).transpose()
    }

    async fn refresh_shadow_ai(&self, since: OffsetDateTime) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        sqlx::query(CLEAR_GATEWAY_SHADOW_AI)
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

    async fn list_rows(
        &self,
        listing: Listing,
        query: &ListQuery,
    ) -> Result<Vec<ListedRow>, StoreError> {
        let (table, time, id) = (listing.table(), listing.time_column(), listing.id_column());
        let (comparison, order) = if query.oldest_first { (">", "ASC") } else { ("<", "DESC") };
        // The exporter's order must hold across differently written timestamps (RFC 3339 with
        // any number of fraction digits, SQL defaults), which text comparison does not:
        // it compares the instants.
        let (key, bound_key) = if query.oldest_first {
            (format!("julianday(t.{time})"), ("julianday(", ")"))
        } else {
            (format!("t.{time}"), ("", ""))
        };
        let mut sql = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {} FROM {table} t WHERE 1",
            listing.select_list(|_| None)
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
            sql.push(format!(" AND ({key}, t.{id}) {comparison} ({}", bound_key.0))
                .push_bind(after_time.clone())
                .push(format!("{}, ", bound_key.1))
                .push_bind(after_id.clone())
                .push(")");
        }
        sql.push(format!(" ORDER BY {key} {order}, t.{id} {order} LIMIT "))
            .push_bind(query.limit);
        let rows = sql.build().fetch_all(&self.pool).await.map_err(classify)?;
        Ok(listed_rows(listing, &rows))
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
},
upkeep: {
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
);

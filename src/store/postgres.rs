//! PostgreSQL (and TimescaleDB when the extension is there).

use std::sync::Arc;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{Postgres, QueryBuilder};
use time::{Date, Duration, Month, OffsetDateTime};
use tracing::info;

use super::admin::{ListQuery, Listing, TokenGrant};
use super::common::{store_impl, CLEAR_GATEWAY_SHADOW_AI};
use super::directory::identity_repositories;
use super::listing::{listed_rows, ListedRow};
use super::rows::{PgColumns, TokenRow};
use super::{
    classify, pg_copy, pg_timeseries, redact_url, ChangeDomain, Store, StoreError, TimeSeries,
    TimeSeriesShape,
};
use crate::audit::{AuditEventRecord, DecisionRecord};
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

/// How PostgreSQL binds the values it has native types for.
mod encode {
    use sqlx::types::Json;
    use time::{OffsetDateTime, PrimitiveDateTime};
    use uuid::Uuid;

    pub(super) fn id(id: Uuid) -> Uuid {
        id
    }

    pub(super) fn stamp(at: OffsetDateTime) -> PrimitiveDateTime {
        super::utc(at)
    }

    pub(super) fn list(items: &[String]) -> Vec<String> {
        items.to_vec()
    }

    pub(super) fn json<T: serde::Serialize>(value: &T) -> Json<&T> {
        Json(value)
    }
}

// Addresses are INET[]: membership and the cast of the bound text list are PostgreSQL's own.
identity_repositories!(
    PostgresStore,
    PgColumns,
    device_by_ip: "SELECT asset_id, hostname, crown_jewel, sensitivity, compliance_status, data_classification, owner_id \
                   FROM assets WHERE $1::inet = ANY(ip_addresses) AND status = 'active' LIMIT 1",
    inet_list: "$5::inet[]"
);

// The methods below are PostgreSQL's own; the rest of `Store` is in `common.rs`. They differ
// where the engines truly do: batch ingest (binary COPY, INSERT with INET casts on replay),
// LISTEN/NOTIFY, arrays and LATERAL joins, boolean aggregates, TIMESTAMPTZ comparisons, and
// the time-series shape (partitions or TimescaleDB) and its maintenance.
store_impl!(PostgresStore, PgColumns, sqlx::Postgres,
schema: {
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
},
audit: {
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
},
admin: {
    async fn admin_token(&self, sha256: &str) -> Result<Option<TokenGrant>, StoreError> {
        let row: Option<TokenRow<PgColumns>> = sqlx::query_as(
            "SELECT t.token_id, t.name, r.name AS role, r.permissions, t.user_id FROM admin_tokens t \
             JOIN roles r ON r.role_id = t.role_id WHERE t.token_sha256 = $1 AND t.revoked_at IS NULL \
             AND (t.expires_at IS NULL OR t.expires_at > NOW())",
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

    async fn list_rows(
        &self,
        listing: Listing,
        query: &ListQuery,
    ) -> Result<Vec<ListedRow>, StoreError> {
        let (time, id) = (listing.time_column(), listing.id_column());
        let (comparison, order) = if query.oldest_first { (">", "ASC") } else { ("<", "DESC") };
        let cast = if listing.time_has_zone() {
            "timestamptz"
        } else {
            "timestamp"
        };
        // INET is read as text, as `to_jsonb` writes it (no /32 on a host address).
        let select = listing.select_list(|column| {
            (column == "ip_address").then(|| "abbrev(t.ip_address) AS ip_address".to_owned())
        });
        let mut sql = QueryBuilder::<Postgres>::new(format!(
            "SELECT {select} FROM {} t WHERE TRUE",
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
            sql.push(format!(" AND (t.{time}, t.{id}::text) {comparison} (("))
                .push_bind(after_time.clone())
                .push(format!(")::{cast}, "))
                .push_bind(after_id.clone())
                .push(")");
        }
        sql.push(format!(" ORDER BY t.{time} {order}, t.{id}::text {order} LIMIT "))
            .push_bind(query.limit);
        let rows = sql.build().fetch_all(&self.pool).await.map_err(classify)?;
        Ok(listed_rows(listing, &rows))
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
},
upkeep: {
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
);

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

//! How PostgreSQL stores decisions and audit events: TimescaleDB hypertables or native
//! partitions (`[store] time_series`), chosen once when migration 0002 creates the tables, and
//! the TimescaleDB rollup that cannot be created inside a migration.

use sqlx::migrate::{Migration, MigrationSource, Migrator};
use sqlx::postgres::PgPool;
use tracing::{info, warn};

use super::{classify, StoreError, TimeSeries, TimeSeriesShape};

/// Migration 0002 (`0002_timeseries.sql`) creates decisions and audit events as hypertables or as
/// native partitions, deciding with this expression of its own.
const TIMESERIES_MIGRATION: i64 = 2;
const TIMESERIES_PROBE: &str =
    "EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')";

/// The shape migration 0002 gave this database, read from the tables themselves (an extension
/// created in the database says nothing about how its tables were made); `None` before 0002.
pub(super) async fn existing_shape(pool: &PgPool) -> Result<Option<TimeSeriesShape>, StoreError> {
    let partitioned: Option<bool> = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = d.oid) \
         FROM (SELECT to_regclass('decisions') AS oid) d WHERE d.oid IS NOT NULL",
    )
    .fetch_optional(pool)
    .await
    .map_err(classify)?;
    Ok(partitioned.map(|partitioned| {
        if partitioned {
            TimeSeriesShape::NativePartitions
        } else {
            TimeSeriesShape::Timescale
        }
    }))
}

/// The shape this database has or, before migration 0002, gets: `[store] time_series` against
/// what the server offers.
pub(super) async fn choose_shape(
    pool: &PgPool,
    time_series: TimeSeries,
) -> Result<TimeSeriesShape, StoreError> {
    let existing = existing_shape(pool).await?;
    // The loader TimescaleDB preloads defines timescaledb.disable_load in every session; a server
    // that only has the files installed does not (shared_preload_libraries itself is readable by
    // superusers only).
    let (installed, preloaded): (bool, bool) = sqlx::query_as(&format!(
        "SELECT {TIMESERIES_PROBE}, current_setting('timescaledb.disable_load', true) IS NOT NULL"
    ))
    .fetch_one(pool)
    .await
    .map_err(classify)?;
    if existing.is_none() && time_series == TimeSeries::Auto && installed && !preloaded {
        warn!("TimescaleDB is installed but not in shared_preload_libraries: decisions and audit events get native partitions.");
    }
    let offer = TimescaleOffer {
        installed,
        preloaded,
    };
    decide(time_series, existing, offer).map_err(StoreError::TimeSeries)
}

/// What the PostgreSQL server offers for the time-series tables.
#[derive(Debug, Clone, Copy)]
struct TimescaleOffer {
    /// `pg_available_extensions` lists it: the files are installed.
    installed: bool,
    /// It is in `shared_preload_libraries`, without which `CREATE EXTENSION` fails.
    preloaded: bool,
}

/// An existing database keeps its shape (an explicit choice contradicting it is an error:
/// converting tables is an operator's job); a new one gets TimescaleDB when chosen or, for
/// `auto`, when it is usable.
fn decide(
    time_series: TimeSeries,
    existing: Option<TimeSeriesShape>,
    offer: TimescaleOffer,
) -> Result<TimeSeriesShape, String> {
    use TimeSeriesShape::{NativePartitions, Timescale};
    match (time_series, existing) {
        (TimeSeries::Timescaledb, Some(NativePartitions)) => Err(
            "\"timescaledb\", but this database's decisions and audit_events are native \
             partitions (created without TimescaleDB); set \"partitions\" or \"auto\", or move the \
             data into a new database"
                .to_owned(),
        ),
        (TimeSeries::Partitions, Some(Timescale)) => Err(
            "\"partitions\", but this database's decisions and audit_events are TimescaleDB \
             hypertables; set \"timescaledb\" or \"auto\", or move the data into a new database"
                .to_owned(),
        ),
        (_, Some(shape)) => Ok(shape),
        (TimeSeries::Partitions, None) => Ok(NativePartitions),
        (TimeSeries::Auto, None) if offer.installed && offer.preloaded => Ok(Timescale),
        (TimeSeries::Auto, None) => Ok(NativePartitions),
        (TimeSeries::Timescaledb, None) if !offer.installed => Err(
            "\"timescaledb\", but the PostgreSQL server does not have the extension installed \
             (pg_available_extensions does not list it)"
                .to_owned(),
        ),
        (TimeSeries::Timescaledb, None) if !offer.preloaded => Err(
            "\"timescaledb\", but the extension is not preloaded: add timescaledb to \
             shared_preload_libraries in postgresql.conf and restart PostgreSQL"
                .to_owned(),
        ),
        (TimeSeries::Timescaledb, None) => Ok(Timescale),
    }
}

/// The embedded migrations with 0002's shape decided by the gateway rather than by the
/// migration: 0002 only asks whether the extension is installed, so it fails on a server where
/// it is installed but not preloaded, and it cannot honour `[store] time_series`.
///
/// The file itself must not change: sqlx records each applied migration's checksum and refuses
/// to start when a file no longer matches, which would stop every database 0002 already
/// created. So the probe in its text is replaced by the decided constant here while the
/// canonical checksum is kept: the recorded checksum goes on identifying "migration 0002" in
/// either shape, and a database migrated by this or an earlier gateway (or by `sqlx migrate`
/// from the files) validates against the unchanged file.
pub(super) async fn migrator_for(
    embedded: &Migrator,
    shape: TimeSeriesShape,
) -> Result<Migrator, StoreError> {
    let mut migrations: Vec<Migration> = embedded.iter().cloned().collect();
    for migration in &mut migrations {
        if migration.version == TIMESERIES_MIGRATION {
            migration.sql = decided_sql(&migration.sql, shape)?.into();
        }
    }
    Ok(Migrator::new(Resolved(migrations)).await?)
}

/// 0002's text with its TimescaleDB probe replaced by the decided answer.
fn decided_sql(sql: &str, shape: TimeSeriesShape) -> Result<String, StoreError> {
    if !sql.contains(TIMESERIES_PROBE) {
        return Err(StoreError::TimeSeries(
            "migration 0002 no longer contains the TimescaleDB probe the gateway replaces; \
             this build's migrations are inconsistent"
                .to_owned(),
        ));
    }
    let decided = if shape == TimeSeriesShape::Timescale {
        "TRUE"
    } else {
        "FALSE"
    };
    Ok(sql.replace(TIMESERIES_PROBE, decided))
}

/// Migrations already in memory, for `Migrator::new`.
#[derive(Debug)]
struct Resolved(Vec<Migration>);

impl MigrationSource<'static> for Resolved {
    fn resolve(
        self,
    ) -> futures::future::BoxFuture<'static, Result<Vec<Migration>, sqlx::error::BoxDynError>> {
        Box::pin(async move { Ok(self.0) })
    }
}

/// The continuous aggregate behind the dashboard and the API rollups, answering in real time:
/// its refresh job materializes an hour only after a one-hour end offset, and TimescaleDB 2.13+
/// creates aggregates materialized-only, which left the latest hours out of every rollup.
/// Real-time aggregation adds the rows not yet materialized, read from the hypertable.
pub(super) async fn ensure_continuous_aggregate(pool: &PgPool) -> Result<(), StoreError> {
    // Continuous aggregates cannot be created inside a transaction, so not in a migration.
    for statement in [
        "CREATE MATERIALIZED VIEW IF NOT EXISTS decisions_hourly \
         WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS \
         SELECT time_bucket('1 hour', timestamp) AS hour, user_id, resource_id, decision, \
         COUNT(*) AS decision_count, AVG(risk_score) AS avg_risk_score, \
         AVG(evaluation_duration_ms) AS avg_duration_ms \
         FROM decisions GROUP BY hour, user_id, resource_id, decision WITH NO DATA",
        "SELECT add_continuous_aggregate_policy('decisions_hourly', \
         start_offset => INTERVAL '3 hours', end_offset => INTERVAL '1 hour', \
         schedule_interval => INTERVAL '1 hour', if_not_exists => TRUE)",
    ] {
        sqlx::query(statement)
            .execute(pool)
            .await
            .map_err(classify)?;
    }
    // Databases an earlier gateway migrated have a materialized-only aggregate.
    let materialized_only: bool = sqlx::query_scalar(
        "SELECT materialized_only FROM timescaledb_information.continuous_aggregates \
         WHERE view_name = 'decisions_hourly' AND view_schema = current_schema()",
    )
    .fetch_one(pool)
    .await
    .map_err(classify)?;
    if materialized_only {
        sqlx::query(
            "ALTER MATERIALIZED VIEW decisions_hourly SET (timescaledb.materialized_only = false)",
        )
        .execute(pool)
        .await
        .map_err(classify)?;
        info!("decisions_hourly now aggregates in real time (it was materialized-only).");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    static EMBEDDED: Migrator = sqlx::migrate!("migrations/postgres");

    fn offer(installed: bool, preloaded: bool) -> TimescaleOffer {
        TimescaleOffer {
            installed,
            preloaded,
        }
    }

    #[test]
    fn auto_takes_timescaledb_only_when_installed_and_preloaded() {
        let fresh = |time_series, offer| decide(time_series, None, offer);
        assert_eq!(
            fresh(TimeSeries::Auto, offer(true, true)),
            Ok(TimeSeriesShape::Timescale)
        );
        // Installed but not preloaded: CREATE EXTENSION would fail, so partitions.
        assert_eq!(
            fresh(TimeSeries::Auto, offer(true, false)),
            Ok(TimeSeriesShape::NativePartitions)
        );
        assert_eq!(
            fresh(TimeSeries::Auto, offer(false, false)),
            Ok(TimeSeriesShape::NativePartitions)
        );
        assert_eq!(
            fresh(TimeSeries::Partitions, offer(true, true)),
            Ok(TimeSeriesShape::NativePartitions)
        );
        let missing = fresh(TimeSeries::Timescaledb, offer(false, false)).unwrap_err();
        assert!(
            missing.contains("not have the extension installed"),
            "{missing}"
        );
        let unloaded = fresh(TimeSeries::Timescaledb, offer(true, false)).unwrap_err();
        assert!(unloaded.contains("shared_preload_libraries"), "{unloaded}");
    }

    #[test]
    fn an_existing_database_keeps_its_shape() {
        for shape in [
            TimeSeriesShape::Timescale,
            TimeSeriesShape::NativePartitions,
        ] {
            assert_eq!(
                decide(TimeSeries::Auto, Some(shape), offer(true, true)),
                Ok(shape)
            );
        }
        assert_eq!(
            decide(
                TimeSeries::Partitions,
                Some(TimeSeriesShape::NativePartitions),
                offer(true, false)
            ),
            Ok(TimeSeriesShape::NativePartitions)
        );
        let contradicted = decide(
            TimeSeries::Partitions,
            Some(TimeSeriesShape::Timescale),
            offer(true, true),
        )
        .unwrap_err();
        assert!(contradicted.contains("hypertables"), "{contradicted}");
        let contradicted = decide(
            TimeSeries::Timescaledb,
            Some(TimeSeriesShape::NativePartitions),
            offer(true, true),
        )
        .unwrap_err();
        assert!(contradicted.contains("native partitions"), "{contradicted}");
    }

    #[tokio::test]
    async fn the_decided_migration_keeps_the_canonical_checksum() {
        let canonical = EMBEDDED
            .iter()
            .find(|m| m.version == TIMESERIES_MIGRATION)
            .unwrap();
        for (shape, decided) in [
            (TimeSeriesShape::Timescale, "timescale BOOLEAN := TRUE;"),
            (
                TimeSeriesShape::NativePartitions,
                "timescale BOOLEAN := FALSE;",
            ),
        ] {
            let migrator = migrator_for(&EMBEDDED, shape).await.unwrap();
            assert_eq!(migrator.iter().count(), EMBEDDED.iter().count());
            for (built, embedded) in migrator.iter().zip(EMBEDDED.iter()) {
                assert_eq!(built.version, embedded.version);
                assert_eq!(built.checksum, embedded.checksum);
                if built.version != TIMESERIES_MIGRATION {
                    assert_eq!(built.sql, embedded.sql);
                }
            }
            let built = migrator
                .iter()
                .find(|m| m.version == TIMESERIES_MIGRATION)
                .unwrap();
            assert!(built.sql.contains(decided), "{shape:?}");
            assert!(!built.sql.contains("pg_available_extensions"));
            assert_ne!(built.sql, canonical.sql);
        }
    }
}

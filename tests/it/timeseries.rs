//! The two shapes of PostgreSQL's time-series tables against a real server with TimescaleDB
//! installed and preloaded (`.ci/run` installs it): migrations into hypertables or native
//! partitions, the `[store] time_series` choice, retention, and the hourly rollup the dashboard
//! and the API read.

use sqlx::Connection;

use aigate::store::{self, Store, TimeSeries, TimeSeriesShape};

use crate::store::{
    decision, drop_pg_database, expected_shape, fresh_pg_database, fresh_pg_store, PG_SHAPES,
};

#[tokio::test]
async fn postgres_migrations_apply_idempotently_with_constraints_and_partitions() {
    migrations_apply_idempotently(TimeSeries::Partitions).await;
}

#[tokio::test]
async fn postgres_migrations_apply_idempotently_with_constraints_and_hypertables() {
    migrations_apply_idempotently(TimeSeries::Timescaledb).await;
}

/// `auto` (the default) takes TimescaleDB exactly when the server has it installed and preloaded.
#[tokio::test]
async fn postgres_auto_takes_timescaledb_when_the_server_preloads_it() {
    let url = fresh_pg_database().await;
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    let usable: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') \
         AND current_setting('shared_preload_libraries') LIKE '%timescaledb%'",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    let store = store::open(&url).await.unwrap();
    let expected = if usable {
        TimeSeriesShape::Timescale
    } else {
        TimeSeriesShape::NativePartitions
    };
    assert_eq!(store.migrate().await.unwrap(), expected);
    db.close().await.unwrap();
    drop_pg_database(&url).await;
}

/// A database keeps the shape it was created with: `auto` follows it, an explicit choice that
/// contradicts it stops the migration with a message naming the key.
#[tokio::test]
async fn an_explicit_time_series_choice_never_converts_an_existing_database() {
    for (created, contradicting) in [
        (TimeSeries::Timescaledb, TimeSeries::Partitions),
        (TimeSeries::Partitions, TimeSeries::Timescaledb),
    ] {
        let (url, _) = fresh_pg_store(created).await;
        let auto = store::open(&url).await.unwrap();
        assert_eq!(auto.migrate().await.unwrap(), expected_shape(created));
        let error = store::open_with(&url, contradicting)
            .await
            .unwrap()
            .migrate()
            .await
            .unwrap_err();
        assert!(
            error.to_string().starts_with("[store] time_series: ") && !error.is_retriable(),
            "{error}"
        );
        drop_pg_database(&url).await;
    }
    let error = store::open_with("sqlite::memory:", TimeSeries::Partitions)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("PostgreSQL only"), "{error}");
}

/// A database an earlier gateway migrated (0002 as the file says, the continuous aggregate
/// materialized-only) is accepted as it is (the recorded checksum still matches) and its
/// rollup starts answering in real time.
#[tokio::test]
async fn a_database_migrated_by_an_earlier_gateway_gets_a_real_time_rollup() {
    let url = fresh_pg_database().await;
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::migrate!("migrations/postgres")
        .run(&mut db)
        .await
        .unwrap();
    for statement in [
        "CREATE MATERIALIZED VIEW decisions_hourly WITH (timescaledb.continuous, timescaledb.materialized_only = true) AS \
         SELECT time_bucket('1 hour', timestamp) AS hour, user_id, resource_id, decision, \
         COUNT(*) AS decision_count, AVG(risk_score) AS avg_risk_score, \
         AVG(evaluation_duration_ms) AS avg_duration_ms \
         FROM decisions GROUP BY hour, user_id, resource_id, decision WITH NO DATA",
        "SELECT add_continuous_aggregate_policy('decisions_hourly', start_offset => INTERVAL '3 hours', \
         end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '1 hour')",
    ] {
        sqlx::query(statement).execute(&mut db).await.unwrap();
    }
    let store = store::open(&url).await.unwrap();
    let now = time::OffsetDateTime::now_utc();
    store.write_decisions(&[decision(now, true)]).await.unwrap();
    assert_eq!(
        hourly_counts(&*store, now).await,
        Vec::<(String, String, i64)>::new(),
        "materialized-only: the current hour is missing"
    );
    assert_eq!(store.migrate().await.unwrap(), TimeSeriesShape::Timescale);
    assert_eq!(
        hourly_counts(&*store, now).await,
        vec![(hour_of(now), "DENY".to_owned(), 1)]
    );
    db.close().await.unwrap();
    drop_pg_database(&url).await;
}

async fn migrations_apply_idempotently(time_series: TimeSeries) {
    let (url, store) = fresh_pg_store(time_series).await;
    assert_eq!(
        store.migrate().await.unwrap(),
        expected_shape(time_series),
        "second run is a no-op"
    );

    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' AND tablename NOT LIKE '%\\_y%' \
         AND tablename NOT LIKE '%\\_default' AND tablename NOT LIKE '\\_sqlx%' ORDER BY 1",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    for table in [
        "ai_service_signatures",
        "ai_services",
        "assets",
        "audit_events",
        "compliance_controls",
        "compliance_evidence",
        "compliance_frameworks",
        "decisions",
        "departments",
        "exceptions",
        "groups",
        "integration_sync_logs",
        "integrations",
        "notifications",
        "policies",
        "policy_conflicts",
        "policy_control_mappings",
        "policy_versions",
        "readiness_assessments",
        "roles",
        "shadow_ai_detections",
        "user_groups",
        "user_roles",
        "users",
        "violations",
    ] {
        assert!(
            tables.contains(&table.to_owned()),
            "{table} missing: {tables:?}"
        );
    }
    let frameworks: i64 = sqlx::query_scalar("SELECT count(*) FROM compliance_frameworks")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(frameworks, 5, "the data model's seed rows");

    let check = sqlx::query(
        "INSERT INTO ai_services (name, signatures, risk_tier, risk_score, approval_status) \
         VALUES ('x', '{}', 'extreme', 10, 'approved')",
    )
    .execute(&mut db)
    .await
    .unwrap_err();
    assert!(check.to_string().contains("valid_risk_tier"), "{check}");

    // Decisions land in the partition of their month (a chunk of the hypertable).
    let now = time::OffsetDateTime::now_utc();
    store.write_decisions(&[decision(now, true)]).await.unwrap();
    let partition: String = sqlx::query_scalar("SELECT tableoid::regclass::text FROM decisions")
        .fetch_one(&mut db)
        .await
        .unwrap();
    match time_series {
        TimeSeries::Timescaledb => assert!(
            partition.starts_with("_timescaledb_internal._hyper_"),
            "{partition}"
        ),
        _ => assert_eq!(
            partition,
            format!("decisions_y{:04}m{:02}", now.year(), u8::from(now.month()))
        ),
    }
    let violations: i64 = sqlx::query_scalar("SELECT count(*) FROM violations")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(violations, 1);

    // A replayed batch (COPY collides with stored rows) is written idempotently.
    let replayed = decision(now, true);
    store
        .write_decisions(std::slice::from_ref(&replayed))
        .await
        .unwrap();
    store
        .write_decisions(&[replayed, decision(now, false)])
        .await
        .unwrap();
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM decisions")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(stored, 3, "the replayed row once, the new row once");

    // An old month's decisions are dropped by retention: the gateway's job drops the partition,
    // TimescaleDB's retention job the chunk.
    if time_series == TimeSeries::Partitions {
        sqlx::query("CREATE TABLE decisions_y2020m01 PARTITION OF decisions FOR VALUES FROM ('2020-01-01') TO ('2020-02-01')")
            .execute(&mut db)
            .await
            .unwrap();
    }
    let old = time::macros::datetime!(2020-01-15 12:00 UTC);
    store
        .write_decisions(&[decision(old, false)])
        .await
        .unwrap();
    let report = store.maintain().await.unwrap();
    match time_series {
        TimeSeries::Timescaledb => {
            assert_eq!(report, Vec::<String>::new(), "TimescaleDB's jobs do it");
            assert_timescale_shape(&mut db).await;
            let job: i32 = sqlx::query_scalar(
                "SELECT job_id FROM timescaledb_information.jobs \
                 WHERE proc_name = 'policy_retention' AND hypertable_name = 'decisions'",
            )
            .fetch_one(&mut db)
            .await
            .unwrap();
            sqlx::query("CALL run_job($1)")
                .bind(job)
                .execute(&mut db)
                .await
                .unwrap();
        }
        _ => {
            assert!(
                report
                    .iter()
                    .any(|line| line.contains("decisions_y2020m01")),
                "{report:?}"
            );
            let hypertables: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')",
            )
            .fetch_one(&mut db)
            .await
            .unwrap();
            assert!(!hypertables, "partitions never create the extension");
        }
    }
    let remaining: i64 = sqlx::query_scalar("SELECT count(*) FROM decisions")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(
        remaining, 3,
        "only this month's decisions survive retention"
    );
    db.close().await.unwrap();
    drop_pg_database(&url).await;
}

/// Hypertables with the data model's retention jobs and the real-time continuous aggregate with
/// its refresh job.
async fn assert_timescale_shape(db: &mut sqlx::PgConnection) {
    let hypertables: Vec<String> = sqlx::query_scalar(
        "SELECT hypertable_name::text FROM timescaledb_information.hypertables ORDER BY 1",
    )
    .fetch_all(&mut *db)
    .await
    .unwrap();
    assert_eq!(hypertables, ["audit_events", "decisions"]);
    let retention: Vec<(String, String)> = sqlx::query_as(
        "SELECT hypertable_name::text, config->>'drop_after' FROM timescaledb_information.jobs \
         WHERE proc_name = 'policy_retention' ORDER BY 1",
    )
    .fetch_all(&mut *db)
    .await
    .unwrap();
    assert_eq!(
        retention,
        [
            ("audit_events".to_owned(), "7 years".to_owned()),
            ("decisions".to_owned(), "90 days".to_owned())
        ]
    );
    let (materialized_only, refresh_jobs): (bool, i64) = sqlx::query_as(
        "SELECT c.materialized_only, (SELECT count(*) FROM timescaledb_information.jobs j \
         WHERE j.proc_name = 'policy_refresh_continuous_aggregate' \
         AND j.hypertable_name = c.view_name) \
         FROM timescaledb_information.continuous_aggregates c WHERE c.view_name = 'decisions_hourly'",
    )
    .fetch_one(&mut *db)
    .await
    .unwrap();
    assert!(!materialized_only, "the rollup includes the latest hours");
    assert_eq!(refresh_jobs, 1);
}

/// The rollup behind the dashboard and the API counts the current hour in both shapes, after
/// what the periodic job does (the gateway's maintenance, TimescaleDB's refresh policy).
#[tokio::test]
async fn decisions_per_hour_includes_the_current_hour_in_both_shapes() {
    for time_series in PG_SHAPES {
        let (url, store) = fresh_pg_store(time_series).await;
        let now = time::OffsetDateTime::now_utc();
        let earlier = now - time::Duration::hours(2);
        let batch = [
            decision(now, true),
            decision(now, true),
            decision(now, false),
            decision(earlier, false),
            decision(now - time::Duration::hours(30), false),
        ];
        store.write_decisions(&batch).await.unwrap();
        store.maintain().await.unwrap();
        if time_series == TimeSeries::Timescaledb {
            // What the refresh policy does: materialize up to its one-hour end offset.
            let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::query(
                "CALL refresh_continuous_aggregate('decisions_hourly', NULL, \
                 date_trunc('hour', now()) - INTERVAL '1 hour')",
            )
            .execute(&mut db)
            .await
            .unwrap();
            db.close().await.unwrap();
        }
        assert_eq!(
            hourly_counts(&*store, now).await,
            vec![
                (hour_of(earlier), "ALLOW".to_owned(), 1),
                (hour_of(now), "ALLOW".to_owned(), 1),
                (hour_of(now), "DENY".to_owned(), 2),
            ],
            "{time_series:?}"
        );
        let services = store
            .top_services(now - time::Duration::hours(24), 10)
            .await
            .unwrap();
        assert_eq!(
            services,
            vec![serde_json::json!({"name": "DeepSeek", "decisions": 4, "denied": 2})],
            "{time_series:?}"
        );
        drop_pg_database(&url).await;
    }
}

/// `decisions_per_hour` over the 24 hours before `now`: (hour as `YYYY-MM-DDTHH`, decision,
/// count).
async fn hourly_counts(store: &dyn Store, now: time::OffsetDateTime) -> Vec<(String, String, i64)> {
    store
        .decisions_per_hour(now - time::Duration::hours(24))
        .await
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["hour"].as_str().unwrap()[..13].to_owned(),
                row["decision"].as_str().unwrap().to_owned(),
                row["count"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn hour_of(at: time::OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour()
    )
}

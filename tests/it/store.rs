//! The store and the audit pipeline against real databases: SQLite through the gateway, and a
//! real PostgreSQL (CI starts it) for migrations, partitions, retention and the outage test.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{Connection, Row};
use tokio::net::{TcpListener, TcpStream};

use aigate::audit::{AuditHandle, AuditRecord, AuditWriterConfig, DecisionRecord, ViolationRecord};
use aigate::store::{self, Store, TimeSeries, TimeSeriesShape};

use crate::support::{upstream_ca, Http, Origin, TestGateway};

/// The PostgreSQL server tests use (`AIGATE_TEST_PG` overrides; CI starts the local cluster).
fn pg_server() -> String {
    std::env::var("AIGATE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// A fresh, uniquely named database. A passing test drops it (`drop_pg_database`); a failing one
/// leaves it for inspection.
pub(crate) async fn fresh_pg_database() -> String {
    let name = format!("aigate_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&format!("{}/postgres", pg_server())).await.expect(
        "PostgreSQL must be running for the store tests (pg_ctlcluster --skip-systemctl-redirect 15 main start)",
    );
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    format!("{}/{name}", pg_server())
}

/// The two shapes of a PostgreSQL store: tests of the time-series tables (migrations, the
/// decisions write path, rollups) run in both. CI installs and preloads TimescaleDB
/// (`.ci/run`), so both are always available there.
pub(crate) const PG_SHAPES: [TimeSeries; 2] = [TimeSeries::Timescaledb, TimeSeries::Partitions];

/// A fresh database (as `fresh_pg_database`) migrated into `time_series` shape, with its store:
/// `TimeSeries::Timescaledb` gives hypertables, retention jobs and the continuous aggregate,
/// `TimeSeries::Partitions` native partitions, whatever the server offers.
pub(crate) async fn fresh_pg_store(time_series: TimeSeries) -> (String, Arc<dyn Store>) {
    let url = fresh_pg_database().await;
    let store = store::open_with(&url, time_series).await.unwrap();
    let shape = store.migrate().await.unwrap_or_else(|error| {
        panic!("{error} (TimescaleDB: run ../shared/timescaledb/install.sh as .ci/run does)")
    });
    assert_eq!(shape, expected_shape(time_series), "{url}");
    (url, store)
}

pub(crate) fn expected_shape(time_series: TimeSeries) -> TimeSeriesShape {
    match time_series {
        TimeSeries::Timescaledb => TimeSeriesShape::Timescale,
        TimeSeries::Partitions => TimeSeriesShape::NativePartitions,
        TimeSeries::Auto => unreachable!("tests name the shape they need"),
    }
}

pub(crate) async fn drop_pg_database(url: &str) {
    let name = url.rsplit('/').next().unwrap();
    let mut admin = sqlx::PgConnection::connect(&format!("{}/postgres", pg_server()))
        .await
        .unwrap();
    // DROP DATABASE forces a cluster-wide checkpoint, which fails while the disk-full fault
    // test holds its tablespace full; that test frees the space within seconds.
    let mut attempts = 0;
    while let Err(error) = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
    {
        attempts += 1;
        assert!(
            attempts < 60 && error.to_string().contains("checkpoint request failed"),
            "dropping {name}: {error}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

pub(crate) fn decision(at: time::OffsetDateTime, deny: bool) -> DecisionRecord {
    DecisionRecord {
        decision_id: uuid::Uuid::now_v7(),
        request_id: uuid::Uuid::now_v7(),
        timestamp: at,
        user_id: aigate::audit::ANONYMOUS_USER,
        user_email: None,
        user_department: None,
        action: "send_prompt".into(),
        resource_type: "ai_service".into(),
        resource_id: None,
        resource_name: Some("DeepSeek".into()),
        resource_url: Some("https://api.deepseek.com/chat/completions".into()),
        decision: if deny { "DENY" } else { "ALLOW" }.into(),
        reason: "test".into(),
        confidence: Some(1.0),
        risk_score: Some(92),
        risk_factors: None,
        policies_evaluated: aigate::audit::JsonText::of(&serde_json::json!([])).unwrap(),
        primary_policy_id: None,
        source: Some("proxy".into()),
        device_id: None,
        ip_address: Some("10.1.2.3".parse().unwrap()),
        user_agent: Some("test".into()),
        content_classified: false,
        detected_entities: None,
        data_classification: vec!["PII".into()],
        evaluation_duration_ms: Some(0),
        // Raw JSON columns must survive the spill journal too.
        explanation: aigate::audit::JsonText::of(
            &serde_json::json!({"decided_by": null, "facts": {"service": "deepseek"}}),
        ),
        pending_explanation: Default::default(),
        violation: deny.then(|| ViolationRecord {
            violation_id: uuid::Uuid::now_v7(),
            violation_type: "unapproved_service".into(),
            policy_id: aigate::audit::BUILTIN_APPROVAL_POLICY,
            policy_name: None,
            severity: "critical".into(),
        }),
    }
}

/// A TCP relay in front of PostgreSQL that the test can cut and restore.
struct Cuttable {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
}

impl Cuttable {
    async fn start(target: SocketAddr) -> Cuttable {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let gate = up.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let gate = gate.clone();
                tokio::spawn(async move {
                    if !gate.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    let relay = tokio::io::copy_bidirectional(&mut client, &mut server);
                    let watch = async {
                        while gate.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    };
                    tokio::select! { _ = relay => {}, () = watch => {} }
                });
            }
        });
        Cuttable { addr, up }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_survive_a_database_outage_exactly_once_in_order() {
    let url = fresh_pg_database().await;
    store::open(&url).await.unwrap().migrate().await.unwrap();
    let database = url.rsplit('/').next().unwrap().to_owned();
    let relay = Cuttable::start("127.0.0.1:5432".parse().unwrap()).await;
    let relayed_url = format!("postgres://postgres@{}/{database}", relay.addr);
    let journal = tempfile::tempdir().unwrap();
    let audit = AuditHandle::start(
        store::open(&relayed_url).await.unwrap(),
        AuditWriterConfig {
            queue_capacity: 64,
            batch_size: 50,
            flush_interval: Duration::from_millis(20),
            retry_interval: Duration::from_millis(100),
            journal_dir: journal.path().to_owned(),
            overflow_limit: 1_000_000,
            writer_nice: 0,
            writer_priority: aigate::config::WriterPriority::Adaptive,
        },
    )
    .unwrap();

    let spilled_before = aigate::metrics::AUDIT_SPILLED_TOTAL.get();
    let replayed_before = aigate::metrics::AUDIT_REPLAYED_TOTAL.get();
    let mut written = Vec::new();
    let mut slowest = Duration::ZERO;
    let mut enqueue = |count: usize, written: &mut Vec<uuid::Uuid>| {
        for _ in 0..count {
            let record = decision(
                time::OffsetDateTime::now_utc(),
                written.len().is_multiple_of(3),
            );
            written.push(record.decision_id);
            let started = Instant::now();
            audit.record(AuditRecord::Decision(Box::new(record)));
            slowest = slowest.max(started.elapsed());
        }
    };
    enqueue(200, &mut written);
    tokio::time::sleep(Duration::from_millis(300)).await;
    relay.up.store(false, Ordering::SeqCst);
    enqueue(500, &mut written);
    tokio::time::sleep(Duration::from_secs(2)).await;
    enqueue(300, &mut written);
    relay.up.store(true, Ordering::SeqCst);
    audit.shutdown().await;

    assert!(
        slowest < Duration::from_millis(50),
        "enqueue blocked for {slowest:?}"
    );
    let spilled_now = aigate::metrics::AUDIT_SPILLED_TOTAL.get() - spilled_before;
    let replayed_now = aigate::metrics::AUDIT_REPLAYED_TOTAL.get() - replayed_before;
    assert!(
        spilled_now >= 500,
        "the outage must have gone through the journal ({spilled_now} spilled)"
    );
    assert!(
        replayed_now >= spilled_now,
        "{replayed_now} replayed of {spilled_now} spilled"
    );
    let spilled = std::fs::metadata(journal.path().join("audit-spill.jsonl"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert_eq!(spilled, 0, "the journal must be fully replayed");

    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    let rows = sqlx::query("SELECT decision_id FROM decisions")
        .fetch_all(&mut db)
        .await
        .unwrap();
    let stored: std::collections::HashSet<uuid::Uuid> =
        rows.iter().map(|r| r.get::<uuid::Uuid, _>(0)).collect();
    assert_eq!(rows.len(), written.len(), "every decision exactly once");
    assert!(written.iter().all(|id| stored.contains(id)));
    let violations: i64 = sqlx::query_scalar("SELECT count(*) FROM violations")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(violations as usize, written.len().div_ceil(3));
    db.close().await.unwrap();
    drop_pg_database(&url).await;
}

#[tokio::test]
async fn the_embedded_store_records_a_denied_request_with_its_violation() {
    let ca = upstream_ca();
    let origin = Origin::start_tls(&ca, &["api.openai.com"]).await;
    let gateway = TestGateway::start(&ca, &[("api.openai.com", origin.addr)]).await;
    let client = gateway.client(&gateway.ca_pem(), Http::One);
    let denied = client
        .post("https://api.deepseek.com/chat/completions?key=secret")
        .body(r#"{"messages":[{"role":"user","content":"my card is 4111 1111 1111 1111"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    let decision_id = denied.headers()["x-aigate-decision-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        client
            .get("https://api.openai.com/v1/models")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let rows: Vec<(String, String, String, String)> = gateway
        .rows_eventually(
            "SELECT decision_id, decision, resource_url, source FROM decisions ORDER BY timestamp",
            2,
        )
        .await;
    let db_path = gateway.dir.path().join("aigate.db");
    let mut db = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db_path.display()))
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].0, decision_id);
    assert_eq!(rows[0].1, "DENY");
    assert_eq!(
        rows[0].2, "https://api.deepseek.com/chat/completions",
        "no query string"
    );
    assert_eq!(rows[0].3, "proxy");
    assert_eq!(rows[1].1, "ALLOW");
    let violation: (String, String, String) =
        sqlx::query_as("SELECT decision_id, violation_type, status FROM violations")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(
        violation,
        (
            decision_id,
            "unapproved_service".to_owned(),
            "open".to_owned()
        )
    );
    let services: i64 = sqlx::query_scalar("SELECT count(*) FROM ai_services")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert!(services >= 30, "the catalog is imported on first start");
    let stored: String = sqlx::query_scalar(
        "SELECT group_concat(coalesce(reason,'') || coalesce(explanation,'')) FROM decisions",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert!(
        !stored.contains("4111"),
        "prompt content must never be stored"
    );
}

#[tokio::test]
async fn the_gateway_on_postgres_records_decisions_and_imports_the_catalog_once() {
    for time_series in PG_SHAPES {
        gateway_on_postgres_records_decisions_and_imports_the_catalog_once(time_series).await;
    }
}

/// The gateway migrates a new database into the `[store] time_series` shape it is configured
/// with, then records decisions there.
async fn gateway_on_postgres_records_decisions_and_imports_the_catalog_once(
    time_series: TimeSeries,
) {
    let url = fresh_pg_database().await;
    let ca = upstream_ca();
    let store_url = url.clone();
    let gateway = TestGateway::start_with(&ca, &[], move |config| {
        config.store.url = store_url;
        config.store.time_series = time_series;
    })
    .await;
    let client = gateway.client(&gateway.ca_pem(), Http::One);
    let denied = client
        .get("https://chat.deepseek.com/")
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    let decision_id: uuid::Uuid = denied.headers()["x-aigate-decision-id"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    gateway.gateway.shutdown().await;

    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    let (decision, ip): (String, String) =
        sqlx::query_as("SELECT decision, host(ip_address) FROM decisions WHERE decision_id = $1")
            .bind(decision_id)
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!((decision.as_str(), ip.as_str()), ("DENY", "127.0.0.1"));
    let violations: i64 =
        sqlx::query_scalar("SELECT count(*) FROM violations WHERE decision_id = $1")
            .bind(decision_id)
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(violations, 1);

    // An administrator's change survives a restart: the import never overwrites.
    sqlx::query("UPDATE ai_services SET approval_status = 'approved' WHERE name = 'DeepSeek'")
        .execute(&mut db)
        .await
        .unwrap();
    let partitioned: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = 'decisions'::regclass)",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(
        partitioned,
        time_series == TimeSeries::Partitions,
        "{time_series:?}"
    );
    let store_url = url.clone();
    let again = TestGateway::start_with(&ca, &[], move |config| config.store.url = store_url).await;
    again.gateway.shutdown().await;
    let status: String =
        sqlx::query_scalar("SELECT approval_status FROM ai_services WHERE name = 'DeepSeek'")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(status, "approved");
    let signatures: i64 = sqlx::query_scalar("SELECT count(*) FROM ai_service_signatures")
        .fetch_one(&mut db)
        .await
        .unwrap();
    let services: i64 = sqlx::query_scalar("SELECT count(*) FROM ai_services")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert!(
        services >= 30 && signatures > services,
        "{services} services, {signatures} signatures"
    );
    db.close().await.unwrap();
    drop_pg_database(&url).await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_full_queue_parks_records_up_to_the_limit_then_drops_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let store = store::open(&format!("sqlite://{}", dir.path().join("a.db").display()))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let audit = AuditHandle::start(
        store,
        AuditWriterConfig {
            queue_capacity: 4,
            batch_size: 100,
            flush_interval: Duration::from_millis(10),
            retry_interval: Duration::from_millis(100),
            journal_dir: dir.path().join("journal"),
            overflow_limit: 10,
            writer_nice: 0,
            writer_priority: aigate::config::WriterPriority::Adaptive,
        },
    )
    .unwrap();
    let dropped_before = aigate::metrics::AUDIT_DROPPED_TOTAL.get();
    // 4 fit the queue and 10 are parked; the writer, on its own thread, may drain some while
    // this loop runs, but not the 86 it would take to avoid dropping.
    for _ in 0..100 {
        audit.record(AuditRecord::Decision(Box::new(decision(
            time::OffsetDateTime::now_utc(),
            false,
        ))));
    }
    let dropped = (aigate::metrics::AUDIT_DROPPED_TOTAL.get() - dropped_before) as i64;
    audit.shutdown().await;
    let url = format!("sqlite://{}", dir.path().join("a.db").display());
    let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM decisions")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert!(
        dropped > 0,
        "beyond the queue and the parking limit records are dropped"
    );
    assert!(
        stored >= 14,
        "queued and parked records are all written: {stored}"
    );
    assert_eq!(
        stored + dropped,
        100,
        "every record is either stored or counted as dropped"
    );
}

/// The writer is woken once a batch is waiting, not per record: a full batch is written at once,
/// a partial one only when its flush interval has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_batch_is_written_at_once_and_a_partial_one_at_its_interval() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("a.db").display());
    let store = store::open(&url).await.unwrap();
    store.migrate().await.unwrap();
    let start = |flush_interval| {
        AuditHandle::start(
            store.clone(),
            AuditWriterConfig {
                queue_capacity: 1000,
                batch_size: 10,
                flush_interval,
                retry_interval: Duration::from_millis(100),
                journal_dir: dir.path().join("journal"),
                overflow_limit: 1000,
                writer_nice: 0,
                writer_priority: aigate::config::WriterPriority::Normal,
            },
        )
        .unwrap()
    };
    let record = |audit: &AuditHandle, count: usize| {
        for _ in 0..count {
            audit.record(AuditRecord::Decision(Box::new(decision(
                time::OffsetDateTime::now_utc(),
                false,
            ))));
        }
    };
    let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
    // The stored count once it reaches `at_least`, or after 10 s (0: the count now).
    let mut stored = async |at_least: i64| -> i64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let count: i64 = sqlx::query_scalar("SELECT count(*) FROM decisions")
                .fetch_one(&mut db)
                .await
                .unwrap();
            if count >= at_least || Instant::now() >= deadline {
                return count;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };

    let audit = start(Duration::from_secs(600));
    record(&audit, 13);
    assert_eq!(
        stored(10).await,
        10,
        "the full batch is written long before its interval"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        stored(0).await,
        10,
        "the partial batch waits for its interval"
    );
    audit.shutdown().await;
    assert_eq!(stored(13).await, 13, "shutting down writes the rest");

    let audit = start(Duration::from_millis(50));
    record(&audit, 3);
    assert_eq!(
        stored(16).await,
        16,
        "a partial batch is written once its interval passes"
    );
    audit.shutdown().await;
}

/// Policies and exceptions round-trip through both stores the same way: import never overwrites,
/// the revision moves on every change an administrator makes, uses are counted.
#[tokio::test]
async fn policies_and_exceptions_round_trip_in_both_stores() {
    let pg_url = fresh_pg_database().await;
    let dir = tempfile::tempdir().unwrap();
    let sqlite_url = format!("sqlite://{}", dir.path().join("policies.db").display());
    let shipped = aigate::policy::load_dir(&crate::support::repo_path("config/policies")).unwrap();
    for url in [&pg_url, &sqlite_url] {
        let store = store::open(url).await.unwrap();
        store.migrate().await.unwrap();
        assert_eq!(
            store.import_policies(&shipped).await.unwrap(),
            shipped.len(),
            "{url}"
        );
        assert_eq!(
            store.import_policies(&shipped).await.unwrap(),
            0,
            "import is idempotent: {url}"
        );
        let loaded = store.load_policies().await.unwrap();
        assert_eq!(loaded.len(), shipped.len());
        let eu = loaded
            .iter()
            .find(|p| p.name == "EU AI Act - Prohibited AI Systems")
            .unwrap();
        let original = shipped
            .iter()
            .find(|p| p.policy_id == eu.policy_id)
            .unwrap();
        assert_eq!(eu.rule_content, original.rule_content);
        assert_eq!(eu.effective_date, original.effective_date);
        assert_eq!(eu.rule_metadata, original.rule_metadata);
        assert_eq!(eu.priority, 1000);

        let before = store.revisions().await.unwrap();
        let now = time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap();
        let exception = aigate::policy::NewException {
            exception_id: uuid::Uuid::now_v7(),
            exception_type: "temporary",
            reason: "test".into(),
            justification: "a business reason".into(),
            user_id: uuid::Uuid::nil(),
            ai_service_id: None,
            policy_id: Some(eu.policy_id),
            conditions: Some(serde_json::json!({"max_uses": 3, "decisions": ["review"]})),
            status: "approved",
            requested_by: uuid::Uuid::nil(),
            effective_from: now,
            effective_until: Some(now + time::Duration::hours(1)),
        };
        store.insert_exception(&exception).await.unwrap();
        let after = store.revisions().await.unwrap();
        assert_ne!(before, after, "a new exception changes the revision: {url}");
        store
            .add_exception_uses(&[(exception.exception_id, 2)])
            .await
            .unwrap();
        assert_eq!(
            store.revisions().await.unwrap(),
            after,
            "uses do not trigger reloads"
        );
        let exceptions = store.load_exceptions().await.unwrap();
        assert_eq!(exceptions.len(), 1);
        assert_eq!(exceptions[0].usage_count, 2);
        assert_eq!(exceptions[0].policy_id, Some(eu.policy_id));
        assert_eq!(
            exceptions[0].effective_until,
            Some(now + time::Duration::hours(1)),
            "{url}"
        );
        let rule = aigate::policy::ExceptionRule::from(exceptions[0].clone());
        assert_eq!(
            (rule.max_uses, rule.decisions.clone()),
            (Some(3), vec![aigate::policy::Decision::Review])
        );
    }
    // An edit made with plain SQL moves the revision (the trigger stamps updated_at).
    let pg = store::open(&pg_url).await.unwrap();
    let before = pg.revisions().await.unwrap();
    let mut db = sqlx::PgConnection::connect(&pg_url).await.unwrap();
    sqlx::query("UPDATE policies SET priority = 999 WHERE priority = 1000")
        .execute(&mut db)
        .await
        .unwrap();
    assert_ne!(pg.revisions().await.unwrap(), before);
    drop(db);
    drop_pg_database(&pg_url).await;
}

/// On PostgreSQL a policy change reaches the gateway by NOTIFY, long before its next poll.
#[tokio::test]
async fn a_policy_inserted_in_postgres_is_enforced_at_once_through_notify() {
    let url = fresh_pg_database().await;
    let ca = upstream_ca();
    let origin = crate::support::Origin::start_tls(&ca, &["api.openai.com"]).await;
    let store_url = url.clone();
    let gateway = TestGateway::start_with(&ca, &[("api.openai.com", origin.addr)], move |config| {
        config.store.url = store_url;
        config.policy.reload_interval_secs = 3600;
    })
    .await;
    let client = gateway.client(&gateway.ca_pem(), Http::One);
    let call = || async {
        client
            .post("https://api.openai.com/v1/chat/completions")
            .header("content-type", "application/json")
            .body(r#"{"messages":[{"role":"user","content":"hello"}]}"#)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(call().await, 200);

    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query(
        "INSERT INTO policies (policy_id, name, version, status, priority, policy_type, rule_engine, rule_content, \
         scope, created_by, updated_by, effective_date) VALUES ($1, 'Weekend freeze', '1.0.0', 'active', 990, \
         'organizational', 'opa', 'package freeze\ndeny if true', '{}', $2, $2, '2020-01-01')",
    )
    .bind(uuid::Uuid::new_v4())
    .bind(uuid::Uuid::nil())
    .execute(&mut db)
    .await
    .unwrap();
    let mut status = 0;
    for _ in 0..40 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        status = call().await;
        if status == 403 {
            break;
        }
    }
    assert_eq!(
        status, 403,
        "the notification reloads the policies (the poll is an hour away)"
    );
    gateway.gateway.shutdown().await;
    drop(db);
    drop_pg_database(&url).await;
}

/// SQLite inserts a batch in cached fixed-size statements: every size of batch lands whole,
/// once, with its violations, and a replay of it adds nothing.
#[tokio::test]
async fn sqlite_stores_batches_of_any_size_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("chunks.db").display());
    stores_batches_of_any_size_once(&url, &[1, 63, 64, 65, 1077]).await;
}

/// Batches split in halves (400 rows and up) land once too, also when one half was stored
/// before (a replay after a half committed).
#[tokio::test]
async fn postgres_stores_batches_of_any_size_once() {
    for time_series in PG_SHAPES {
        let (url, _) = fresh_pg_store(time_series).await;
        stores_batches_of_any_size_once(&url, &[1, 399, 400, 401, 1077]).await;
        drop_pg_database(&url).await;
    }
}

/// Writes each batch size twice, the second time after storing the batch's second half alone,
/// then counts decisions and violations (every tenth decision is a DENY).
async fn stores_batches_of_any_size_once(url: &str, sizes: &[usize]) {
    let store = store::open(url).await.unwrap();
    store.migrate().await.unwrap();
    let mut expected = 0i64;
    let mut expected_violations = 0i64;
    for &size in sizes {
        let batch: Vec<_> = (0..size)
            .map(|i| decision(time::OffsetDateTime::now_utc(), i % 10 == 0))
            .collect();
        store.write_decisions(&batch[size / 2..]).await.unwrap();
        store.write_decisions(&batch).await.unwrap();
        store.write_decisions(&batch).await.unwrap();
        expected += size as i64;
        expected_violations += size.div_ceil(10) as i64;
    }
    let query = "SELECT (SELECT count(DISTINCT decision_id) FROM decisions), \
                 (SELECT count(*) FROM decisions), (SELECT count(*) FROM violations)";
    let (stored, rows, violations): (i64, i64, i64) = if url.starts_with("sqlite:") {
        let mut db = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query_as(query).fetch_one(&mut db).await.unwrap()
    } else {
        let mut db = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query_as(query).fetch_one(&mut db).await.unwrap()
    };
    assert_eq!((stored, rows), (expected, expected));
    assert_eq!(violations, expected_violations);
}

/// Binary COPY (fresh batches) and INSERT (replays) must store the very same values: a replay
/// relies on hitting the same primary key, and readers must not see which path wrote a row.
#[tokio::test]
async fn postgres_copy_and_insert_store_identical_rows() {
    for time_series in PG_SHAPES {
        let (url, store) = fresh_pg_store(time_series).await;
        copy_and_insert_store_identical_rows(&url, &*store).await;
        drop_pg_database(&url).await;
    }
}

async fn copy_and_insert_store_identical_rows(url: &str, store: &dyn Store) {
    let at = time::OffsetDateTime::now_utc()
        .replace_nanosecond(123_456_789)
        .unwrap();
    let full = DecisionRecord {
        user_email: Some("o'neil\t\"quoted\"\\back@example.com".into()),
        user_department: Some("R&D — München\nline two".into()),
        resource_id: Some(uuid::Uuid::new_v4()),
        reason: "tab\tnewline\nbackslash\\ and NUL-free unicode ✓".into(),
        confidence: Some(0.8125),
        risk_score: Some(-3),
        risk_factors: Some(serde_json::json!({"compliance": ["SOC2"], "nested": {"n": 1.5, "s": "a\tb"}})),
        policies_evaluated: aigate::audit::JsonText::of(
            &serde_json::json!([{"policy_id": uuid::Uuid::new_v4(), "matched": true, "name": "é\n"}]),
        )
        .unwrap(),
        primary_policy_id: Some(uuid::Uuid::new_v4()),
        device_id: Some(uuid::Uuid::new_v4()),
        ip_address: Some("2001:db8::7".parse().unwrap()),
        content_classified: true,
        detected_entities: Some(serde_json::json!([{"type": "EMAIL", "count": 2}])),
        data_classification: vec!["PII".into(), "with \"quote\", comma\\slash".into(), "".into()],
        evaluation_duration_ms: Some(17),
        ..decision(at, true)
    };
    let bare = DecisionRecord {
        resource_name: None,
        resource_url: None,
        confidence: None,
        risk_score: None,
        source: None,
        ip_address: None,
        user_agent: None,
        data_classification: Vec::new(),
        evaluation_duration_ms: None,
        explanation: None,
        ..decision(at, false)
    };
    let replica = |original: &DecisionRecord| {
        let mut copy = original.clone();
        copy.decision_id = uuid::Uuid::now_v7();
        if let Some(violation) = copy.violation.as_mut() {
            violation.violation_id = uuid::Uuid::now_v7();
        }
        copy
    };
    let (full_again, bare_again) = (replica(&full), replica(&bare));
    // The first batch is COPYed; the second collides with it and goes through INSERT.
    store
        .write_decisions(&[full.clone(), bare.clone()])
        .await
        .unwrap();
    store
        .write_decisions(&[full.clone(), full_again.clone(), bare_again.clone()])
        .await
        .unwrap();

    let mut db = sqlx::PgConnection::connect(url).await.unwrap();
    let row = |id: uuid::Uuid| {
        sqlx::query_scalar::<_, serde_json::Value>(
            "SELECT to_jsonb(d) - 'decision_id' FROM decisions d WHERE decision_id = $1",
        )
        .bind(id)
    };
    for (copied, inserted) in [(&full, &full_again), (&bare, &bare_again)] {
        let by_copy = row(copied.decision_id).fetch_one(&mut db).await.unwrap();
        let by_insert = row(inserted.decision_id).fetch_one(&mut db).await.unwrap();
        assert_eq!(by_copy, by_insert);
    }
    let stored = row(full.decision_id).fetch_one(&mut db).await.unwrap();
    assert_eq!(stored["ip_address"], "2001:db8::7");
    assert_eq!(stored["user_email"], full.user_email.as_deref().unwrap());
    assert_eq!(
        stored["user_department"],
        full.user_department.as_deref().unwrap()
    );
    assert_eq!(stored["reason"], full.reason);
    assert_eq!(stored["risk_factors"], *full.risk_factors.as_ref().unwrap());
    assert_eq!(
        stored["data_classification"],
        serde_json::json!(full.data_classification)
    );
    let micros: i64 = sqlx::query_scalar(
        "SELECT (extract(epoch FROM timestamp) * 1000000)::bigint FROM decisions WHERE decision_id = $1",
    )
    .bind(full.decision_id)
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(i128::from(micros), at.unix_timestamp_nanos() / 1000);
    let bare_stored = row(bare.decision_id).fetch_one(&mut db).await.unwrap();
    assert_eq!(bare_stored["data_classification"], serde_json::json!([]));
    assert_eq!(bare_stored["ip_address"], serde_json::Value::Null);

    let violations: Vec<serde_json::Value> = sqlx::query_scalar(
        "SELECT to_jsonb(v) - 'violation_id' - 'decision_id' - 'created_at' - 'updated_at' \
         FROM violations v ORDER BY violation_id",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert_eq!(violations.len(), 2, "{violations:?}");
    assert_eq!(violations[0], violations[1]);
    db.close().await.unwrap();
}

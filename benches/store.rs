//! Sustained decision ingest through the store, by batch size: into PostgreSQL (needs the local
//! server, `AIGATE_BENCH_PG`, default postgres://postgres@127.0.0.1:5432) and into the embedded
//! SQLite store with rows the size the gateway writes (seven policies evaluated).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark without its fixtures cannot run"
)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sqlx::Connection;

use aigate::audit::{DecisionRecord, ANONYMOUS_USER};

fn record() -> DecisionRecord {
    DecisionRecord {
        decision_id: uuid::Uuid::now_v7(),
        request_id: uuid::Uuid::now_v7(),
        timestamp: time::OffsetDateTime::now_utc(),
        user_id: ANONYMOUS_USER,
        user_email: Some("alice@example.com".into()),
        user_department: Some("Engineering".into()),
        action: "send_prompt".into(),
        resource_type: "ai_service".into(),
        // One service, as under real traffic: a random id per row would make every insert a
        // random walk through the resource index.
        resource_id: Some(uuid::Uuid::from_u128(
            0x0190_0000_0000_7000_8000_0000_0000_0001,
        )),
        resource_name: Some("OpenAI API".into()),
        resource_url: Some("https://api.openai.com/v1/chat/completions".into()),
        decision: "ALLOW".into(),
        reason: "OpenAI API is not prohibited.".into(),
        confidence: Some(1.0),
        risk_score: Some(55),
        risk_factors: None,
        policies_evaluated: aigate::audit::JsonText::of(
            &serde_json::json!([{"policy_id": "x", "matched": false}]),
        )
        .unwrap(),
        primary_policy_id: None,
        source: Some("proxy".into()),
        device_id: None,
        ip_address: Some("10.0.0.7".parse().unwrap()),
        user_agent: Some("python-httpx/0.27".into()),
        content_classified: false,
        detected_entities: None,
        data_classification: Vec::new(),
        evaluation_duration_ms: Some(0),
        explanation: None,
        pending_explanation: Default::default(),
        violation: None,
    }
}

/// A decision as the gateway records an allowed chat request under the shipped policies.
fn realistic_record() -> DecisionRecord {
    let policies: Vec<serde_json::Value> = (0..7)
        .map(|i| {
            serde_json::json!({"policy_id": uuid::Uuid::new_v4(), "policy_name": format!("Shipped policy number {i}"),
                               "priority": 1000 - i * 100, "matched": false})
        })
        .collect();
    DecisionRecord {
        policies_evaluated: aigate::audit::JsonText::of(&policies).unwrap(),
        explanation: aigate::audit::JsonText::of(&serde_json::json!({
            "decided_by": null, "default_for_approval_status": "review_required", "policy_error": false,
            "policies": [], "exceptions_used": [],
            "facts": {"service": "openai-api", "unknown_ai": false, "signals": [
                {"kind": "domain", "signature": "api.openai.com", "service": "openai-api"},
                {"kind": "api_pattern", "signature": "/v1/chat/completions", "service": "openai-api"}],
                "content": {"format": "openai_chat", "problem": null}, "body_truncated": false}})),
        risk_factors: Some(
            serde_json::json!({"compliance": ["SOC2"], "data_retention": "30 days"}),
        ),
        ..record()
    }
}

fn sqlite_ingest(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let store = runtime.block_on(async {
        let store = aigate::store::open(&url).await.unwrap();
        store.migrate().await.unwrap();
        store
    });
    let mut group = c.benchmark_group("sqlite_ingest");
    group.sample_size(10);
    for batch_size in [100usize, 1000] {
        group.throughput(Throughput::Elements(batch_size as u64));
        group.bench_function(format!("batch_{batch_size}"), |b| {
            b.iter_batched(
                || {
                    (0..batch_size)
                        .map(|_| realistic_record())
                        .collect::<Vec<_>>()
                },
                |batch| runtime.block_on(store.write_decisions(&batch)).unwrap(),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn ingest(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = std::env::var("AIGATE_BENCH_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let name = format!("aigate_bench_{}", uuid::Uuid::new_v4().simple());
    let store = runtime.block_on(async {
        let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres"))
            .await
            .unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        let store = aigate::store::open(&format!("{server}/{name}"))
            .await
            .unwrap();
        store.migrate().await.unwrap();
        store
    });
    let mut group = c.benchmark_group("postgres_ingest");
    group.sample_size(10);
    for batch_size in [1usize, 100, 1000] {
        group.throughput(Throughput::Elements(batch_size as u64));
        group.bench_function(format!("batch_{batch_size}"), |b| {
            b.iter_batched(
                || (0..batch_size).map(|_| record()).collect::<Vec<_>>(),
                |batch| runtime.block_on(store.write_decisions(&batch)).unwrap(),
                BatchSize::SmallInput,
            )
        });
    }
    // Rows the size the gateway writes (seven policies evaluated, an explanation).
    group.throughput(Throughput::Elements(1000));
    group.bench_function("realistic_batch_1000", |b| {
        b.iter_batched(
            || (0..1000).map(|_| realistic_record()).collect::<Vec<_>>(),
            |batch| runtime.block_on(store.write_decisions(&batch)).unwrap(),
            BatchSize::SmallInput,
        )
    });
    // Two batches in flight on two pooled connections: what a second writer would add.
    group.throughput(Throughput::Elements(2000));
    group.bench_function("batch_1000_x2_concurrent", |b| {
        b.iter_batched(
            || {
                let batch = || (0..1000).map(|_| record()).collect::<Vec<_>>();
                (batch(), batch())
            },
            |(first, second)| {
                runtime.block_on(async {
                    let (a, b) = tokio::join!(
                        store.write_decisions(&first),
                        store.write_decisions(&second)
                    );
                    a.and(b).unwrap();
                })
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
    runtime.block_on(async {
        let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres"))
            .await
            .unwrap();
        sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await
            .unwrap();
    });
}

criterion_group!(benches, sqlite_ingest, ingest);
criterion_main!(benches);

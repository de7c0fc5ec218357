//! Per-stage benchmarks of the gateway core: routing a CONNECT, the decision seam, leaf minting
//! (cold and cached). The end-to-end load harness is a separate issue.

#![allow(clippy::panic, reason = "a benchmark without its fixtures cannot run")]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};

use aigate::catalog::{Catalog, HeaderSignature, RequestSignals};
use aigate::config::InterceptConfig;
use aigate::front::route::Router;
use aigate::inspect::Inspector;
use aigate::pipeline::{decide, RequestFacts, Snapshot, Source};
use aigate::tls::{CertificateAuthority, LeafMinter};

fn catalog() -> Catalog {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/catalog");
    Catalog::load_dir(&dir).unwrap_or_else(|error| panic!("catalog: {error}"))
}

fn routing(c: &mut Criterion) {
    let catalog = catalog();
    let router = Router::new(&InterceptConfig::default());
    c.bench_function("route/catalog_subdomain", |b| {
        b.iter(|| router.route(&catalog, std::hint::black_box("api.openai.com")))
    });
    c.bench_function("route/unknown_host", |b| {
        b.iter(|| router.route(&catalog, std::hint::black_box("cdn.static.example.org")))
    });
}

fn decision(c: &mut Criterion) {
    let policies =
        aigate::policy::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/policies"))
            .unwrap_or_else(|error| panic!("policies: {error}"));
    let snapshot = Snapshot {
        catalog: catalog(),
        inspector: Arc::new(
            Inspector::new(&[], 0.5, 10 << 20).unwrap_or_else(|error| panic!("inspector: {error}")),
        ),
        policies: aigate::policy::PolicySet::compile(
            &policies,
            aigate::policy::Defaults::default(),
            aigate::policy::FailMode::Closed,
        )
        .unwrap_or_else(|error| panic!("compile: {error}")),
        exceptions: aigate::policy::Exceptions::default(),
    };
    // The policy stage alone, with its latency distribution (criterion reports means).
    let input = aigate::policy::sample_input();
    let subject = aigate::policy::Subject {
        service_slug: Some("chatgpt"),
        approval_status: Some("review_required"),
        ..Default::default()
    };
    let now = time::OffsetDateTime::now_utc();
    let mut samples: Vec<u128> = (0..20_000)
        .map(|_| {
            let started = std::time::Instant::now();
            std::hint::black_box(snapshot.policies.evaluate(
                &subject,
                &input,
                &snapshot.exceptions,
                now,
            ));
            started.elapsed().as_nanos()
        })
        .collect();
    samples.sort_unstable();
    eprintln!(
        "policy/evaluate_shipped ({} policies): p50 {:.1} µs, p99 {:.1} µs",
        snapshot.policies.len(),
        samples[samples.len() / 2] as f64 / 1000.0,
        samples[samples.len() * 99 / 100] as f64 / 1000.0
    );
    c.bench_function("policy/evaluate_shipped", |b| {
        b.iter(|| {
            snapshot.policies.evaluate(
                &subject,
                std::hint::black_box(&input),
                &snapshot.exceptions,
                now,
            )
        })
    });
    let headers = http::HeaderMap::new();
    let anonymous = aigate::identity::Identity::anonymous();
    let body = vec![b'a'; 2048];
    c.bench_function("pipeline/decide_2k", |b| {
        b.iter(|| {
            let facts = RequestFacts {
                method: "POST",
                scheme: "https",
                host: "api.openai.com",
                port: 443,
                path: "/v1/chat/completions",
                headers: &headers,
                body: &body,
                body_truncated: false,
                client: None,
                source: Source::ProxyIntercepted,
                ja4: None,
                identity: &anonymous,
            };
            decide(&snapshot, std::hint::black_box(&facts))
        })
    });
}

/// 50 services of 200 signatures each (20 domains, 150 API patterns, 30 headers): the size the
/// fingerprinting target is stated for.
fn large_catalog() -> Catalog {
    let template = catalog().services()[0].as_ref().clone();
    let services = (0..50)
        .map(|i| {
            let mut service = template.clone();
            service.slug = format!("service-{i}");
            service.service_id = uuid::Uuid::from_u128(i as u128 + 1);
            service.signatures.domains = (0..20)
                .map(|d| format!("d{d}.service{i}.example"))
                .collect();
            service.signatures.api_patterns = (0..150)
                .map(|p| match p % 3 {
                    0 => format!("/v{}/s{i}/endpoint{p}", p % 4),
                    1 => format!("/api/s{i}/models/*:op{p}"),
                    _ => format!("/s{i}/projects/*/locations/*/run{p}"),
                })
                .collect();
            service.signatures.headers = (0..30)
                .map(|h| HeaderSignature {
                    name: format!("x-s{i}-h{h}"),
                    pattern: "^v[0-9]+$".into(),
                })
                .collect();
            service
        })
        .collect();
    Catalog::from_services(services).unwrap_or_else(|error| panic!("large catalog: {error}"))
}

fn fingerprinting(c: &mut Criterion) {
    let shipped = catalog();
    let large = large_catalog();
    let mut headers = http::HeaderMap::new();
    for (name, value) in [
        ("content-type", "application/json"),
        ("user-agent", "OpenAI/Python 1.40.0"),
        ("accept", "application/json"),
        ("authorization", "Bearer redacted"),
        ("openai-organization", "org-123"),
        ("x-s7-h3", "v2"),
        ("accept-encoding", "gzip, deflate"),
        ("x-stainless-lang", "python"),
    ] {
        headers.insert(name, http::HeaderValue::from_static(value));
    }
    let request = |host, path| RequestSignals {
        host,
        path,
        headers: &headers,
        ja4: Some("t13d1516h2_8daaf6152771_e5627efa2ab1"),
    };
    c.bench_function("fingerprint/shipped_catalog", |b| {
        let r = request("api.openai.com", "/v1/chat/completions");
        b.iter(|| shipped.fingerprint(std::hint::black_box(&r)))
    });
    c.bench_function("fingerprint/50x200_known_host", |b| {
        let r = request("d3.service7.example", "/api/s7/models/m-1:op1");
        b.iter(|| large.fingerprint(std::hint::black_box(&r)))
    });
    c.bench_function("fingerprint/50x200_unknown_host", |b| {
        let r = request("llm.internal.example", "/s9/projects/p/locations/eu/run2/x");
        b.iter(|| large.fingerprint(std::hint::black_box(&r)))
    });
}

/// Identity on a warm cache: trusted header → user context, source IP → device.
fn identity(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|error| panic!("runtime: {error}"));
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("tempdir: {error}"));
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let resolver = runtime.block_on(async {
        let store = aigate::store::open(&url).await.unwrap_or_else(|error| panic!("store: {error}"));
        store.migrate().await.unwrap_or_else(|error| panic!("migrate: {error}"));
        use sqlx::Connection;
        let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap_or_else(|error| panic!("db: {error}"));
        for statement in [
                "INSERT INTO departments (department_id, name) VALUES ('11111111-1111-4111-8111-111111111111', 'Engineering')",
                "INSERT INTO users (user_id, email, department_id, employee_type) VALUES ('22222222-2222-4222-8222-222222222222', 'dev@corp.example', '11111111-1111-4111-8111-111111111111', 'full_time')",
                "INSERT INTO assets (asset_id, asset_type, ip_addresses, owner_id) VALUES ('33333333-3333-4333-8333-333333333333', 'laptop', '[\"10.1.2.3\"]', '22222222-2222-4222-8222-222222222222')",
        ] {
            sqlx::query(statement).execute(&mut db).await.unwrap_or_else(|error| panic!("seed: {error}"));
        }
        let config = aigate::config::IdentityConfig {
            trusted_networks: vec!["10.0.0.0/8".parse().unwrap_or_else(|error| panic!("net: {error}"))],
            ..Default::default()
        };
        let hash = aigate::identity::hash_password("bench password").unwrap_or_else(|error| panic!("hash: {error}"));
        store.set_proxy_credential("dev@corp.example", &hash).await.unwrap_or_else(|error| panic!("credential: {error}"));
        aigate::identity::Resolver::new(store, &config)
    });
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "x-authenticated-user",
        http::HeaderValue::from_static("dev@corp.example"),
    );
    let ip: std::net::IpAddr = [10, 1, 2, 3].into();
    let claims = aigate::identity::Claims {
        client: Some(ip),
        headers: &headers,
        tunnel_user: None,
        proxy_auth_applies: true,
    };
    let mut basic = http::HeaderMap::new();
    basic.insert(
        http::header::PROXY_AUTHORIZATION,
        // dev@corp.example:bench password
        http::HeaderValue::from_static("Basic ZGV2QGNvcnAuZXhhbXBsZTpiZW5jaCBwYXNzd29yZA=="),
    );
    let basic_claims = aigate::identity::Claims {
        client: Some([192, 0, 2, 1].into()),
        headers: &basic,
        ..claims
    };
    for claims in [&claims, &basic_claims] {
        let warm = runtime
            .block_on(resolver.identify(claims))
            .unwrap_or_else(|error| panic!("identify: {error}"));
        assert!(warm.user.is_some(), "bench fixtures must resolve");
    }
    c.bench_function("identity/warm_header_and_device", |b| {
        b.iter(|| runtime.block_on(resolver.identify(std::hint::black_box(&claims))))
    });
    c.bench_function("identity/warm_proxy_basic", |b| {
        b.iter(|| runtime.block_on(resolver.identify(std::hint::black_box(&basic_claims))))
    });
}

fn minting(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|error| panic!("runtime: {error}"));
    let ca = Arc::new(
        CertificateAuthority::generate_in_memory("aigate bench CA")
            .unwrap_or_else(|error| panic!("ca: {error}")),
    );
    let minter = LeafMinter::new(ca, 1_000_000, Duration::from_secs(86_400))
        .unwrap_or_else(|error| panic!("minter: {error}"));
    let mut counter = 0u64;
    c.bench_function("tls/mint_cold", |b| {
        b.iter_batched(
            || {
                counter += 1;
                format!("host{counter}.example.com")
            },
            |host| runtime.block_on(minter.certified_key(&host)),
            BatchSize::SmallInput,
        )
    });
    runtime
        .block_on(minter.certified_key("api.openai.com"))
        .unwrap_or_else(|error| panic!("mint: {error}"));
    c.bench_function("tls/mint_cached", |b| {
        b.iter(|| runtime.block_on(minter.certified_key("api.openai.com")))
    });
}

criterion_group!(
    benches,
    routing,
    fingerprinting,
    identity,
    decision,
    minting
);
criterion_main!(benches);

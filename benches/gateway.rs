//! Per-stage benchmarks of the gateway core: routing a CONNECT, the decision seam, leaf minting
//! (cold and cached). The end-to-end load harness is a separate issue.

#![allow(clippy::panic, reason = "a benchmark without its fixtures cannot run")]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};

use aigate::catalog::Catalog;
use aigate::config::InterceptConfig;
use aigate::front::route::Router;
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
    let snapshot = Snapshot { catalog: catalog() };
    let headers = http::HeaderMap::new();
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
            };
            decide(&snapshot, std::hint::black_box(&facts))
        })
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

criterion_group!(benches, routing, decision, minting);
criterion_main!(benches);

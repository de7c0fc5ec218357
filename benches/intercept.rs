//! Latency of one intercepted HTTPS POST (2 KiB chat-completion body, keep-alive, TLS on both
//! legs) through the real gateway, next to the same request sent directly to the origin.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code,
    reason = "a benchmark without its fixtures cannot run"
)]

#[path = "../tests/it/support/mod.rs"]
mod support;

use criterion::{criterion_group, criterion_main, Criterion};

use support::{upstream_ca, Http, Origin, TestGateway};

fn chat_body() -> String {
    let prompt =
        "Draft a polite reply to the customer asking about the delayed shipment. ".repeat(30);
    serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": &prompt[..1900]}]}).to_string()
}

fn intercepted_requests(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let ca = upstream_ca();
    let (origin, gateway) = runtime.block_on(async {
        let origin = Origin::start_tls(&ca, &["api.openai.com", "tunnel.example"]).await;
        let gateway = TestGateway::start(
            &ca,
            &[
                ("api.openai.com", origin.addr),
                ("tunnel.example", origin.addr),
            ],
        )
        .await;
        (origin, gateway)
    });
    let body = chat_body();
    let direct = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.cert_pem().as_bytes()).unwrap())
        .resolve("api.openai.com", origin.addr)
        .no_proxy()
        .http1_only()
        .build()
        .unwrap();
    let url = format!(
        "https://api.openai.com:{}/v1/chat/completions",
        origin.addr.port()
    );
    let tunnelled = gateway.client(ca.cert_pem(), Http::One);
    let intercepted_h1 = gateway.client(&gateway.ca_pem(), Http::One);
    let intercepted_h2 = gateway.client(&gateway.ca_pem(), Http::Negotiate);
    // A new client connection (CONNECT + TLS handshake with a cached leaf) for every request.
    let churn = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(gateway.proxy_url()).unwrap())
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(gateway.ca_pem().as_bytes()).unwrap())
        .pool_max_idle_per_host(0)
        .http1_only()
        .build()
        .unwrap();
    let intercepted_url = "https://api.openai.com/v1/chat/completions";
    let cases = [
        ("direct_h1", &direct, url.as_str()),
        (
            "tunnelled_h1",
            &tunnelled,
            "https://tunnel.example/v1/chat/completions",
        ),
        ("intercepted_h1", &intercepted_h1, intercepted_url),
        ("intercepted_h2", &intercepted_h2, intercepted_url),
        ("intercepted_h1_new_connection", &churn, intercepted_url),
    ];
    let mut group = c.benchmark_group("post_2k");
    for (name, client, target) in cases {
        group.bench_function(name, |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let response = client.post(target).body(body.clone()).send().await.unwrap();
                    response.bytes().await.unwrap()
                })
            })
        });
    }
    group.finish();
    origin.seen.lock().unwrap().clear();
    let hits = aigate::metrics::CERT_CACHE_HITS.get();
    let misses = aigate::metrics::CERT_CACHE_MISSES.get();
    eprintln!(
        "leaf cache: {hits} hits, {misses} misses ({:.2}% hit rate over the intercepted connections)",
        100.0 * hits as f64 / (hits + misses).max(1) as f64
    );
}

criterion_group!(benches, intercepted_requests);
criterion_main!(benches);

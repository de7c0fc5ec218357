//! The management listener: health, metrics and the CA download.

use crate::support::{upstream_ca, TestGateway};

#[tokio::test]
async fn health_metrics_and_ca_download() {
    let ca = upstream_ca();
    let gateway = TestGateway::start(&ca, &[]).await;
    let base = format!("http://{}", gateway.gateway.admin_addr);
    let client = reqwest::Client::new();

    let health = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    let ready: serde_json::Value = client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(ready["catalog_services"].as_u64().unwrap() >= 20);

    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "aigate_connections_total",
        "aigate_requests_total",
        "aigate_tunnel_bytes_total",
        "aigate_cert_cache_hits_total",
        "aigate_cert_mint_seconds",
    ] {
        assert!(metrics.contains(name), "{name} missing");
    }

    let pem = client.get(format!("{base}/ca.pem")).send().await.unwrap();
    assert_eq!(pem.headers()["content-type"], "application/x-pem-file");
    assert_eq!(pem.text().await.unwrap(), gateway.ca_pem());

    let pac = client
        .get(format!("{base}/proxy.pac"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Fails closed: no DIRECT after the gateway unless configured.
    assert!(
        pac.contains(&format!("\"PROXY {}\";", gateway.gateway.proxy_addr)),
        "{pac}"
    );
}

#[tokio::test]
async fn admin_routes_require_a_configured_token() {
    let ca = upstream_ca();
    let token = "s3cret-admin-token";
    let digest = crate::support::sha256_hex(token);
    let gateway =
        TestGateway::start_with(&ca, &[], |config| config.admin.token_sha256 = vec![digest]).await;
    let url = format!("http://{}/admin/bypass", gateway.gateway.admin_addr);
    let client = reqwest::Client::new();

    assert_eq!(client.get(&url).send().await.unwrap().status(), 401);
    assert_eq!(
        client
            .get(&url)
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let listed: serde_json::Value = client
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["learned"], serde_json::json!([]));

    learn_bypass(&gateway, "claude.ai");
    let listed: serde_json::Value = client
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["learned"][0]["host"], "claude.ai");
    assert_eq!(listed["learned"][0]["client"], "10.0.0.7");
    let forget = format!("{url}/learned/claude.ai");
    assert_eq!(client.delete(&forget).send().await.unwrap().status(), 401);
    assert_eq!(
        client
            .delete(&forget)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        client
            .delete(&forget)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // The removal is in the audit trail, with its before/after.
    let events: Vec<(String, String)> = gateway
        .rows_eventually("SELECT event_type, changes FROM audit_events", 1)
        .await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, "intercept_bypass_changed");
    assert!(events[0].1.contains("\"before\""), "{}", events[0].1);
}

/// A learned bypass for claude.ai, as a pinning app on 10.0.0.7 (which trusts the CA) makes one.
fn learn_bypass(gateway: &TestGateway, host: &str) {
    let router = &gateway.gateway.shared.router;
    let client = "10.0.0.7".parse().unwrap();
    router.note_completed_handshake(client);
    for _ in 0..3 {
        router.record_handshake_abort(client, Some("t13d1516h2_app"), host, None);
    }
}

#[tokio::test]
async fn admin_routes_are_closed_without_configured_tokens() {
    let ca = upstream_ca();
    let gateway = TestGateway::start(&ca, &[]).await;
    let url = format!("http://{}/admin/bypass", gateway.gateway.admin_addr);
    let response = reqwest::Client::new()
        .get(&url)
        .bearer_auth("anything")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

/// Evaluates the served PAC file with Node.js, with `dnsDomainIs` as browsers define it.
async fn pac_decisions(pac: &str, hosts: &[&str]) -> Vec<String> {
    let harness = format!(
        "function dnsDomainIs(host, domain) {{ return host.length >= domain.length && host.substring(host.length - domain.length) == domain; }}\n{pac}\n\
         for (const host of {hosts}) console.log(FindProxyForURL('https://' + host + '/', host));",
        hosts = serde_json::to_string(hosts).unwrap()
    );
    let output = tokio::process::Command::new("node")
        .args(["-e", &harness])
        .output()
        .await
        .expect("node must be installed to evaluate the PAC file");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

async fn served_pac(direct_fallback: bool) -> String {
    let ca = upstream_ca();
    let gateway = TestGateway::start_with(&ca, &[], |config| {
        config.admin.pac_proxies = vec![
            "gw1.corp.example:3128".into(),
            "gw2.corp.example:3128".into(),
        ];
        config.admin.pac_direct_fallback = direct_fallback;
        config.intercept.extra_hosts = vec!["llm.internal.example".into()];
        config.intercept.bypass = vec!["copilot-proxy.githubusercontent.com".into()];
    })
    .await;
    let response = reqwest::get(format!("http://{}/proxy.pac", gateway.gateway.admin_addr))
        .await
        .unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "application/x-ns-proxy-autoconfig"
    );
    response.text().await.unwrap()
}

const PAC_HOSTS: [&str; 8] = [
    "api.openai.com",
    "CHAT.DeepSeek.com",
    "claude.ai",
    "a.b.llm.internal.example",
    "notopenai.com",
    "example.org",
    "copilot-proxy.githubusercontent.com",
    "openai.com.evil.example",
];

/// AI hosts get the gateways and nothing after them: when every gateway is down the browser
/// fails rather than reaching the service unpoliced.
#[tokio::test]
async fn the_pac_file_sends_ai_domains_to_the_gateways_only_and_the_rest_direct() {
    let pac = served_pac(false).await;
    let via = "PROXY gw1.corp.example:3128; PROXY gw2.corp.example:3128";
    let decisions = pac_decisions(&pac, &PAC_HOSTS).await;
    assert_eq!(
        decisions,
        [via, via, via, via, "DIRECT", "DIRECT", "DIRECT", "DIRECT"]
    );
}

#[tokio::test]
async fn the_pac_direct_fallback_is_an_explicit_option() {
    let pac = served_pac(true).await;
    let via = "PROXY gw1.corp.example:3128; PROXY gw2.corp.example:3128; DIRECT";
    let decisions = pac_decisions(&pac, &PAC_HOSTS).await;
    assert_eq!(
        decisions,
        [via, via, via, via, "DIRECT", "DIRECT", "DIRECT", "DIRECT"]
    );
}

#[tokio::test]
async fn a_learned_bypass_can_be_made_permanent_and_survives_a_restart() {
    use aigate::front::route::Route;
    let ca = upstream_ca();
    let token = "another-admin-token";
    let digest = crate::support::sha256_hex(token);
    let dir = tempfile::tempdir().unwrap();
    let store_url = format!("sqlite://{}", dir.path().join("shared.db").display());
    let configure = |digest: String, store_url: String| {
        move |config: &mut aigate::config::Config| {
            config.admin.token_sha256 = vec![digest];
            config.store.url = store_url;
        }
    };
    let gateway =
        TestGateway::start_with(&ca, &[], configure(digest.clone(), store_url.clone())).await;
    let base = format!("http://{}/admin/bypass", gateway.gateway.admin_addr);
    let client = reqwest::Client::new();
    learn_bypass(&gateway, "claude.ai");
    let promote = format!("{base}/permanent/claude.ai");
    assert_eq!(client.put(&promote).send().await.unwrap().status(), 401);
    assert_eq!(
        client
            .put(&promote)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    let bad = format!("{base}/permanent/not%20a%20host");
    assert_eq!(
        client
            .put(&bad)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    let listed: serde_json::Value = client
        .get(&base)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["permanent"], serde_json::json!(["claude.ai"]));
    assert_eq!(listed["learned"], serde_json::json!([]));
    gateway.gateway.shutdown().await;

    let restarted = TestGateway::start_with(&ca, &[], configure(digest, store_url)).await;
    let catalog = restarted.gateway.shared.snapshot.load();
    assert_eq!(
        restarted
            .gateway
            .shared
            .router
            .route(&catalog.catalog, "claude.ai"),
        Route::Bypass(aigate::front::route::BypassKind::Permanent)
    );
    let base = format!("http://{}/admin/bypass", restarted.gateway.admin_addr);
    let remove = format!("{base}/permanent/claude.ai");
    assert_eq!(
        client
            .delete(&remove)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        client
            .delete(&remove)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        restarted
            .gateway
            .shared
            .router
            .route(&catalog.catalog, "claude.ai"),
        Route::Intercept
    );
}

#[tokio::test]
async fn the_management_listener_serves_https_with_a_certificate_from_the_gateway_ca() {
    let ca = upstream_ca();
    let gateway = TestGateway::start_with(&ca, &[], |config| {
        config.admin.tls = true;
        config.admin.token_sha256 = vec![crate::support::sha256_hex("tls-token")];
    })
    .await;
    let addr = gateway.gateway.admin_addr;
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(gateway.ca_pem().as_bytes()).unwrap())
        .resolve("localhost", addr)
        .build()
        .unwrap();
    for http2 in [false, true] {
        let builder = client.get(format!("https://localhost:{}/healthz", addr.port()));
        let builder = if http2 {
            builder.version(http::Version::HTTP_2)
        } else {
            builder
        };
        let response = builder.send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    let policies = client
        .get(format!("https://localhost:{}/admin/policies", addr.port()))
        .bearer_auth("tls-token")
        .send()
        .await
        .unwrap();
    assert_eq!(policies.status(), 200);
    // Plain HTTP is not answered as HTTP.
    let plain = reqwest::get(format!("http://{addr}/healthz")).await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);

    let mut config = aigate::config::Config::default();
    config.admin.tls_cert = Some("cert.pem".into());
    let error = config.validate().unwrap_err().to_string();
    assert!(error.contains("[admin] tls_cert / tls_key"), "{error}");
}

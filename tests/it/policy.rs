//! Policy enforcement through the gateway, with the shipped policy set.

use crate::support::{upstream_ca, Http, Origin, TestGateway};

fn test_service(slug: &str, domain: &str, approval: &str, capabilities: &[&str]) -> String {
    format!(
        "services:\n- service_id: {id}\n  slug: {slug}\n  name: {slug} AI\n  signatures:\n    domains: [{domain}]\n    api_patterns: [/v1/chat/completions]\n  \
         risk_tier: high\n  risk_score: 80\n  approval_status: {approval}\n  certifications: [SOC2]\n  data_handling: no_retention\n  capabilities: [{caps}]\n",
        id = uuid::Uuid::new_v4(),
        caps = capabilities.join(", "),
    )
}

async fn gateway_with(catalog_yaml: &str, hosts: &[&'static str]) -> (TestGateway, Origin) {
    let ca = upstream_ca();
    let origin = Origin::start_tls(&ca, hosts).await;
    let resolve: Vec<(&str, std::net::SocketAddr)> =
        hosts.iter().map(|h| (*h, origin.addr)).collect();
    let catalog_dir = tempfile::tempdir().unwrap().keep();
    std::fs::write(catalog_dir.join("test.yaml"), catalog_yaml).unwrap();
    let gateway = TestGateway::start_with(&ca, &resolve, |config| {
        TestGateway::shipped_policies(config);
        config.catalog.dir = catalog_dir;
    })
    .await;
    (gateway, origin)
}

async fn post_json(gateway: &TestGateway, url: &str, body: &str) -> (u16, serde_json::Value) {
    let client = gateway.client(&gateway.ca_pem(), Http::One);
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.json().await.unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn the_eu_ai_act_policy_denies_a_social_scoring_service() {
    let catalog = test_service("scorer", "scorer.example", "approved", &["social_scoring"]);
    let (gateway, origin) = gateway_with(&catalog, &["scorer.example"]).await;
    let (status, error) = post_json(
        &gateway,
        "https://scorer.example/v1/chat/completions",
        r#"{"messages":[{"role":"user","content":"rate citizen 42"}]}"#,
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(
        error["error"]["policy"], "EU AI Act - Prohibited AI Systems",
        "{error}"
    );
    assert!(origin.requests().is_empty());
    let rows: Vec<(String, String)> = gateway
        .rows_eventually("SELECT v.violation_type, d.primary_policy_id FROM violations v JOIN decisions d USING (decision_id)", 1)
        .await;
    assert_eq!(rows[0].0, "prohibited_ai_practice");
    assert_eq!(
        rows[0].1, "2fe22bad-7b03-5b63-9fcf-29b83acde7c4",
        "the EU AI Act policy's id"
    );
}

#[tokio::test]
async fn a_secret_sent_to_an_approved_service_is_denied_naming_the_policy() {
    let catalog = test_service("goodai", "good.example", "approved", &["text_generation"]);
    let (gateway, origin) = gateway_with(&catalog, &["good.example"]).await;
    let (status, _) = post_json(
        &gateway,
        "https://good.example/v1/chat/completions",
        r#"{"messages":[{"role":"user","content":"summarize our roadmap"}]}"#,
    )
    .await;
    assert_eq!(
        status, 200,
        "an approved service with clean content is forwarded"
    );
    let (status, error) = post_json(
        &gateway,
        "https://good.example/v1/chat/completions",
        r#"{"messages":[{"role":"user","content":"why does AKIAIOSFODNN7EXAMPLE fail?"}]}"#,
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(
        error["error"]["policy"], "No credentials or secrets to AI services",
        "{error}"
    );
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("AWS_ACCESS_KEY"));
    assert!(!error.to_string().contains("AKIAIOSFODNN7EXAMPLE"));
    assert_eq!(
        origin.requests().len(),
        1,
        "only the clean request reached the upstream"
    );
}

#[tokio::test]
async fn an_unapproved_service_asks_api_clients_for_review() {
    let catalog = test_service(
        "newai",
        "new.example",
        "review_required",
        &["text_generation"],
    );
    let (gateway, origin) = gateway_with(&catalog, &["new.example"]).await;
    let (status, error) = post_json(
        &gateway,
        "https://new.example/v1/chat/completions",
        r#"{"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(error["error"]["type"], "review_required", "{error}");
    assert_eq!(
        error["error"]["policy"],
        "Review unapproved and unknown AI services"
    );
    assert!(origin.requests().is_empty());
}

#[tokio::test]
async fn a_policy_change_is_enforced_after_reload_without_restart() {
    let catalog = test_service("goodai", "good.example", "approved", &["text_generation"]);
    let ca = upstream_ca();
    let origin = Origin::start_tls(&ca, &["good.example"]).await;
    let catalog_dir = tempfile::tempdir().unwrap().keep();
    std::fs::write(catalog_dir.join("test.yaml"), &catalog).unwrap();
    let policy_dir = crate::support::shipped_policies_without(&catalog_dir, &[]);
    let token = "reload-token";
    let gateway = TestGateway::start_with(&ca, &[("good.example", origin.addr)], |config| {
        TestGateway::shipped_policies(config);
        config.policy.dir = policy_dir.clone();
        config.catalog.dir = catalog_dir.clone();
        config.admin.token_sha256 = vec![crate::support::sha256_hex(token)];
    })
    .await;
    let body = r#"{"messages":[{"role":"user","content":"hello"}]}"#;
    assert_eq!(
        post_json(&gateway, "https://good.example/v1/chat/completions", body)
            .await
            .0,
        200
    );

    std::fs::write(
        policy_dir.join("night-freeze.yaml"),
        format!(
            "policy_id: {}\nname: Change freeze\nversion: 1.0.0\nstatus: active\npriority: 950\npolicy_type: organizational\n\
             rule_file: night-freeze.rego\neffective_date: 2020-01-01T00:00:00Z\n",
            uuid::Uuid::new_v4()
        ),
    )
    .unwrap();
    std::fs::write(
        policy_dir.join("night-freeze.rego"),
        "package freeze\ndeny if input.request.host == \"good.example\"\nreason := \"frozen\"\n",
    )
    .unwrap();
    let admin = reqwest::Client::new();
    let url = format!("http://{}/admin/reload", gateway.gateway.admin_addr);
    let reloaded = admin.post(&url).bearer_auth(token).send().await.unwrap();
    assert_eq!(reloaded.status(), 200);
    let (status, error) =
        post_json(&gateway, "https://good.example/v1/chat/completions", body).await;
    assert_eq!(
        (status, error["error"]["policy"].as_str()),
        (403, Some("Change freeze"))
    );

    // A broken policy is rejected with its name and line; the previous snapshot keeps serving.
    std::fs::write(
        policy_dir.join("night-freeze.rego"),
        "package freeze\ndeny if {\n",
    )
    .unwrap();
    let rejected = admin.post(&url).bearer_auth(token).send().await.unwrap();
    assert_eq!(rejected.status(), 422);
    let message = rejected.text().await.unwrap();
    assert!(
        message.contains("policy:Change freeze:"),
        "name and line: {message}"
    );
    assert_eq!(
        post_json(&gateway, "https://good.example/v1/chat/completions", body)
            .await
            .0,
        403
    );
}

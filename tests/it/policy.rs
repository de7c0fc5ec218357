//! Policy enforcement through the gateway, with the shipped policy set.

use crate::support::{upstream_ca, Http, Origin, TestGateway};

pub(crate) fn test_service(
    slug: &str,
    domain: &str,
    approval: &str,
    capabilities: &[&str],
) -> String {
    format!(
        "services:\n- service_id: {id}\n  slug: {slug}\n  name: {slug} AI\n  signatures:\n    domains: [{domain}]\n    api_patterns: [/v1/chat/completions]\n  \
         risk_tier: high\n  risk_score: 80\n  approval_status: {approval}\n  certifications: [SOC2]\n  data_handling: no_retention\n  capabilities: [{caps}]\n",
        id = uuid::Uuid::new_v4(),
        caps = capabilities.join(", "),
    )
}

/// A gateway over a one-file catalog and a copy of the shipped policies (plus `extra`
/// policies, as `(name, priority, rego)`), polling the store every second. Returns the policy
/// directory too, for tests that change it.
pub(crate) async fn policy_gateway(
    catalog_yaml: &str,
    host: &'static str,
    extra: &[(&str, i32, &str)],
    adjust: impl FnOnce(&mut aigate::config::Config),
) -> (TestGateway, Origin, std::path::PathBuf) {
    let ca = upstream_ca();
    let origin = Origin::start_tls(&ca, &[host]).await;
    let catalog_dir = tempfile::tempdir().unwrap().keep();
    std::fs::write(catalog_dir.join("test.yaml"), catalog_yaml).unwrap();
    let policy_dir = crate::support::shipped_policies_without(&catalog_dir, &[]);
    for (name, priority, rego) in extra {
        write_policy(&policy_dir, name, *priority, rego);
    }
    let gateway = TestGateway::start_with(&ca, &[(host, origin.addr)], |config| {
        TestGateway::shipped_policies(config);
        config.policy.dir = policy_dir.clone();
        config.policy.reload_interval_secs = 1;
        config.catalog.dir = catalog_dir;
        adjust(config);
    })
    .await;
    (gateway, origin, policy_dir)
}

pub(crate) async fn gateway_with(catalog_yaml: &str, host: &'static str) -> (TestGateway, Origin) {
    let (gateway, origin, _) = policy_gateway(catalog_yaml, host, &[], |_| {}).await;
    (gateway, origin)
}

const GOOD_URL: &str = "https://good.example/v1/chat/completions";
const HELLO: &str = r#"{"messages":[{"role":"user","content":"hello"}]}"#;

/// A gateway for an approved service at `GOOD_URL`, administered with `token`, its origin and
/// its policy directory: for tests that change policies while it runs.
async fn reloadable_gateway(token: &str) -> (TestGateway, Origin, std::path::PathBuf) {
    let catalog = test_service("goodai", "good.example", "approved", &["text_generation"]);
    policy_gateway(&catalog, "good.example", &[], |config| {
        config.admin.token_sha256 = vec![crate::support::sha256_hex(token)];
    })
    .await
}

async fn reload(gateway: &TestGateway, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!(
            "http://{}/admin/reload",
            gateway.gateway.admin_addr
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// `NAME.yaml` + `NAME.rego`: an active policy named `name`.
fn write_policy(dir: &std::path::Path, name: &str, priority: i32, rego: &str) {
    let file = name.to_lowercase().replace(' ', "-");
    std::fs::write(
        dir.join(format!("{file}.yaml")),
        format!(
            "policy_id: {}\nname: {name}\nversion: 1.0.0\nstatus: active\npriority: {priority}\n\
             policy_type: organizational\nrule_file: {file}.rego\neffective_date: 2020-01-01T00:00:00Z\n",
            uuid::Uuid::new_v4()
        ),
    )
    .unwrap();
    std::fs::write(dir.join(format!("{file}.rego")), rego).unwrap();
}

pub(crate) async fn post_json(
    gateway: &TestGateway,
    url: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    post_json_with(gateway, url, body, &[]).await
}

pub(crate) async fn post_json_with(
    gateway: &TestGateway,
    url: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let client = gateway.client(&gateway.ca_pem(), Http::One);
    let mut request = client.post(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request
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
    let (gateway, origin) = gateway_with(&catalog, "scorer.example").await;
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
    let rows: Vec<(String, String, String)> = gateway
        .rows_eventually("SELECT v.violation_type, d.primary_policy_id, CAST(d.explanation AS TEXT) FROM violations v JOIN decisions d USING (decision_id)", 1)
        .await;
    assert_eq!(rows[0].0, "prohibited_ai_practice");
    assert_eq!(
        rows[0].1, "2fe22bad-7b03-5b63-9fcf-29b83acde7c4",
        "the EU AI Act policy's id"
    );
    // A stop's explanation is rendered by the audit writer: it holds the policy input the
    // policies saw, without the request headers and without the prompt.
    let explanation: serde_json::Value = serde_json::from_str(&rows[0].2).unwrap();
    let input = &explanation["facts"]["input"];
    assert_eq!(
        input["resource"]["capabilities"],
        serde_json::json!(["social_scoring"]),
        "{explanation}"
    );
    assert_eq!(input["request"]["host"], "scorer.example");
    assert!(input["request"].get("headers").is_none(), "{explanation}");
    assert!(!rows[0].2.contains("rate citizen"), "{explanation}");
    assert_eq!(
        explanation["decided_by"]["policy_name"],
        "EU AI Act - Prohibited AI Systems"
    );
}

#[tokio::test]
async fn a_secret_sent_to_an_approved_service_is_denied_naming_the_policy() {
    let catalog = test_service("goodai", "good.example", "approved", &["text_generation"]);
    let (gateway, origin) = gateway_with(&catalog, "good.example").await;
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
    let (gateway, origin) = gateway_with(&catalog, "new.example").await;
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
async fn policy_changes_in_files_and_in_the_store_apply_without_restart() {
    let token = "reload-token";
    let (gateway, _origin, policy_dir) = reloadable_gateway(token).await;
    let (url, body) = (GOOD_URL, HELLO);
    assert_eq!(post_json(&gateway, url, body).await.0, 200);

    // A new policy file is imported into the store and enforced on POST /admin/reload.
    write_policy(
        &policy_dir,
        "Change freeze",
        950,
        "package freeze\ndeny if input.request.host == \"good.example\"\nreason := \"frozen\"\n",
    );
    assert_eq!(reload(&gateway, token).await.status(), 200);
    let (status, error) = post_json(&gateway, url, body).await;
    assert_eq!(
        (status, error["error"]["policy"].as_str()),
        (403, Some("Change freeze"))
    );

    // An administrator archives it with plain SQL: the reloader sees the change by itself.
    assert_eq!(
        gateway
            .execute("UPDATE policies SET status = 'archived' WHERE name = 'Change freeze'")
            .await,
        1
    );
    let mut status = 0;
    for _ in 0..40 {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        status = post_json(&gateway, url, body).await.0;
        if status == 200 {
            break;
        }
    }
    assert_eq!(
        status, 200,
        "the archived policy stops applying without a restart"
    );

    // A broken policy in the store does not stop the reload: it is named, and its scope (here
    // everything) is denied until it is fixed.
    gateway
        .execute("UPDATE policies SET status = 'active', rule_content = 'package freeze\ndeny if {\n' WHERE name = 'Change freeze'")
        .await;
    let reloaded = reload(&gateway, token).await;
    assert_eq!(reloaded.status(), 200);
    let reloaded: serde_json::Value = reloaded.json().await.unwrap();
    assert_eq!(
        reloaded["broken_policies"][0], "Change freeze",
        "{reloaded}"
    );
    let (status, error) = post_json(&gateway, url, body).await;
    assert_eq!(
        (status, error["error"]["policy"].as_str()),
        (403, Some("Change freeze"))
    );
    let ready = readyz(&gateway).await;
    assert_eq!(ready["status"], "degraded");
    assert!(
        ready["broken_policies"][0]["error"]
            .as_str()
            .unwrap()
            .contains("policy:Change freeze:"),
        "name and line: {ready}"
    );
}

async fn readyz(gateway: &TestGateway) -> serde_json::Value {
    reqwest::get(format!("http://{}/readyz", gateway.gateway.admin_addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A policy whose Rego does not compile, scoped to the `goodai` service only.
fn write_broken_policy(dir: &std::path::Path, name: &str) {
    let file = name.to_lowercase().replace(' ', "-");
    std::fs::write(
        dir.join(format!("{file}.yaml")),
        format!(
            "policy_id: {}\nname: {name}\nversion: 1.0.0\nstatus: active\npriority: 950\n\
             policy_type: organizational\nrule_file: {file}.rego\nscope: {{departments: [], users: [], services: [goodai]}}\n\
             effective_date: 2020-01-01T00:00:00Z\n",
            uuid::Uuid::new_v4()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join(format!("{file}.rego")),
        "package broken\ndeny if {\n",
    )
    .unwrap();
}

/// Two approved services (`goodai` at good.example, `otherai` at other.example), their origin,
/// and a gateway configuration over them; `prepare` runs on the policy directory and the store
/// (migrated) before the gateway starts.
async fn start_over_a_prepared_store<F, Fut>(prepare: F) -> (TestGateway, Origin)
where
    F: FnOnce(std::path::PathBuf, std::sync::Arc<dyn aigate::store::Store>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let ca = upstream_ca();
    let origin = Origin::start_tls(&ca, &["good.example", "other.example"]).await;
    let dir = tempfile::tempdir().unwrap();
    let resolve = [
        ("good.example", origin.addr),
        ("other.example", origin.addr),
    ];
    let mut config = TestGateway::config(dir.path(), &ca, &resolve);
    let catalog_dir = dir.path().join("catalog");
    std::fs::create_dir(&catalog_dir).unwrap();
    for (slug, domain) in [("goodai", "good.example"), ("otherai", "other.example")] {
        let yaml = test_service(slug, domain, "approved", &["text_generation"]);
        std::fs::write(catalog_dir.join(format!("{slug}.yaml")), yaml).unwrap();
    }
    config.catalog.dir = catalog_dir;
    let store = aigate::store::open(&config.store.url).await.unwrap();
    store.migrate().await.unwrap();
    prepare(config.policy.dir.clone(), store).await;
    config.validate().unwrap();
    let gateway = aigate::server::start(config)
        .await
        .expect("a policy that does not compile must not stop start-up");
    (TestGateway { gateway, dir }, origin)
}

/// The broken policy's scope (goodai) is denied naming it; the other service still passes, and
/// `/readyz` says degraded with the policy's name.
async fn assert_only_the_broken_scope_is_denied(gateway: &TestGateway, name: &str) {
    let (status, error) = post_json(gateway, GOOD_URL, HELLO).await;
    assert_eq!(
        (status, error["error"]["policy"].as_str()),
        (403, Some(name)),
        "{error}"
    );
    let other = "https://other.example/v1/chat/completions";
    assert_eq!(post_json(gateway, other, HELLO).await.0, 200);
    let ready = readyz(gateway).await;
    assert_eq!(ready["status"], "degraded");
    assert_eq!(ready["broken_policies"][0]["name"], name, "{ready}");
    let events: Vec<(String,)> = gateway
        .rows_eventually(
            &format!("SELECT event_type FROM audit_events WHERE target_name = '{name}'"),
            1,
        )
        .await;
    assert_eq!(events[0].0, "policy_load_failed");
}

#[tokio::test]
async fn a_stored_policy_that_does_not_compile_does_not_stop_start_up_and_denies_only_its_scope() {
    let (gateway, _origin) = start_over_a_prepared_store(|_, store| async move {
        // The row an older gateway (or an administrator with SQL) left behind.
        let staging = tempfile::tempdir().unwrap();
        write_broken_policy(staging.path(), "Broken row");
        let rows = aigate::policy::load_dir(staging.path()).unwrap();
        assert_eq!(store.import_policies(&rows).await.unwrap(), 1);
    })
    .await;
    assert_only_the_broken_scope_is_denied(&gateway, "Broken row").await;
}

#[tokio::test]
async fn a_policy_file_that_does_not_compile_is_not_imported_and_denies_only_its_scope() {
    let (gateway, _origin) = start_over_a_prepared_store(|policy_dir, _| async move {
        write_broken_policy(&policy_dir, "Broken file");
    })
    .await;
    assert_only_the_broken_scope_is_denied(&gateway, "Broken file").await;
    let stored: Vec<(i64,)> = gateway
        .rows_eventually(
            "SELECT count(*) FROM policies WHERE name = 'Broken file'",
            1,
        )
        .await;
    assert_eq!(
        stored[0].0, 0,
        "a file that does not compile never lands in the store"
    );
}

#[tokio::test]
async fn a_policy_loaded_at_runtime_reads_request_headers_but_never_credentials() {
    let token = "headers-token";
    let (gateway, _origin, policy_dir) = reloadable_gateway(token).await;
    let (url, body) = (GOOD_URL, HELLO);
    let red_team = [("x-team", "red"), ("authorization", "Bearer sk-live")];
    assert_eq!(post_json_with(&gateway, url, body, &red_team).await.0, 200);

    // The shipped set reads no header, so the gateway leaves them out of the input; a policy
    // that reads them, loaded without a restart, must still see them.
    write_policy(
        &policy_dir,
        "Red team only",
        960,
        "package redteam\ndeny if input.request.headers[\"x-team\"] == \"red\"\n\
         deny if input.request.headers.authorization\nreason := \"red team traffic\"\n",
    );
    assert_eq!(reload(&gateway, token).await.status(), 200);
    let (status, error) = post_json_with(&gateway, url, body, &red_team).await;
    assert_eq!(
        (status, error["error"]["policy"].as_str()),
        (403, Some("Red team only"))
    );
    let credentials_only = [("authorization", "Bearer sk-live"), ("x-team", "blue")];
    assert_eq!(
        post_json_with(&gateway, url, body, &credentials_only)
            .await
            .0,
        200,
        "credential headers never reach the policy input"
    );
}

#[tokio::test]
async fn a_business_justification_lifts_a_review_but_never_a_denial() {
    let catalog = test_service(
        "newai",
        "new.example",
        "review_required",
        &["text_generation"],
    );
    let (gateway, origin) = gateway_with(&catalog, "new.example").await;
    let browser = gateway.client(&gateway.ca_pem(), Http::One);
    let page = browser
        .get("https://new.example/chat?x=1")
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 403);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("/.aigate/justify")
            && html.contains("name=\"return_to\" value=\"/chat?x=1\""),
        "{html}"
    );
    let token = crate::coach::token_of(&html);

    let too_short = browser
        .post("https://new.example/.aigate/justify")
        .form(&[
            ("justification", "need"),
            ("return_to", "/chat?x=1"),
            ("token", &token),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(too_short.status(), 400);
    let no_redirects = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(gateway.proxy_url()).unwrap())
        .add_root_certificate(reqwest::Certificate::from_pem(gateway.ca_pem().as_bytes()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .http1_only()
        .build()
        .unwrap();
    let justified = no_redirects
        .post("https://new.example/.aigate/justify")
        .form(&[
            ("justification", "Evaluating it for the Q3 vendor review"),
            ("return_to", "/chat?x=1"),
            ("token", &token),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(justified.status(), 303);
    assert_eq!(justified.headers()["location"], "/chat?x=1");
    assert!(
        origin.requests().is_empty(),
        "the justification itself never reaches the service"
    );

    let retried = browser
        .get("https://new.example/chat?x=1")
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(retried.status(), 200, "the exception lifts the review");
    let (status, _) = post_json(
        &gateway,
        "https://new.example/v1/chat/completions",
        r#"{"messages":[{"role":"user","content":"key AKIAIOSFODNN7EXAMPLE"}]}"#,
    )
    .await;
    assert_eq!(status, 403, "a justification never lifts a denial");

    let exceptions: Vec<(String, String, Option<String>)> = gateway
        .rows_eventually(
            "SELECT status, justification, effective_until FROM exceptions",
            1,
        )
        .await;
    assert_eq!(exceptions[0].0, "approved");
    assert!(exceptions[0].2.is_some());
    let events: Vec<(String,)> = gateway
        .rows_eventually(
            "SELECT event_type FROM audit_events WHERE event_type = 'exception_requested'",
            1,
        )
        .await;
    assert_eq!(events.len(), 1);
    let uses: Vec<(i64,)> = gateway
        .rows_eventually(
            "SELECT usage_count FROM exceptions WHERE usage_count > 0",
            1,
        )
        .await;
    assert!(uses[0].0 >= 1, "uses are written back to the store");
}

#[test]
fn the_policy_commands_test_and_evaluate_without_the_proxy() {
    let bin = env!("CARGO_BIN_EXE_aigate");
    let policies = crate::support::repo_path("config/policies");
    let tested = std::process::Command::new(bin)
        .args(["policy", "test"])
        .arg(&policies)
        .output()
        .unwrap();
    assert!(
        tested.status.success(),
        "{}",
        String::from_utf8_lossy(&tested.stderr)
    );
    assert!(String::from_utf8_lossy(&tested.stdout).contains(" 0 failed"));

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.json");
    let mut document = aigate::policy::sample_input();
    document["resource"]["capabilities"] = serde_json::json!(["social_scoring"]);
    std::fs::write(&input, document.to_string()).unwrap();
    let evaluated = std::process::Command::new(bin)
        .args(["policy", "eval", "--input"])
        .arg(&input)
        .arg("--dir")
        .arg(&policies)
        .output()
        .unwrap();
    assert!(
        evaluated.status.success(),
        "{}",
        String::from_utf8_lossy(&evaluated.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&evaluated.stdout).unwrap();
    assert_eq!(report["decision"], "DENY");
    assert_eq!(report["policy"], "EU AI Act - Prohibited AI Systems");

    // A failing policy test fails the command.
    std::fs::write(dir.path().join("p.rego"), "package p\ndeny if false\n").unwrap();
    std::fs::write(
        dir.path().join("p_test.rego"),
        "package p_test\nimport data.p\ntest_denies if p.deny\n",
    )
    .unwrap();
    let failing = std::process::Command::new(bin)
        .args(["policy", "test"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!failing.status.success());
    assert!(String::from_utf8_lossy(&failing.stdout).contains("FAIL data.p_test.test_denies"));
}

#[tokio::test]
async fn redact_and_inject_headers_obligations_shape_the_forwarded_request() {
    let catalog = test_service("goodai", "good.example", "approved", &["text_generation"]);
    let mask = "package mask\nallow if input.resource.approval_status == \"approved\"\n\
                redact if \"PII\" in input.content.data_classification\n\
                inject_headers := {\"chatgpt-allowed-workspace-id\": \"ws-corp\"}\n";
    let (gateway, origin, _) = policy_gateway(
        &catalog,
        "good.example",
        &[("Mask personal data", 650, mask)],
        |_| {},
    )
    .await;
    let body = r#"{"messages":[{"role":"user","content":"Reply to jane.doe@example.com about 123-45-6789 (SSN)"}]}"#;
    let (status, _) = post_json(&gateway, "https://good.example/v1/chat/completions", body).await;
    assert_eq!(status, 200);
    let seen = origin.requests();
    let forwarded: serde_json::Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(
        forwarded["messages"][0]["content"],
        "Reply to j***.***@example.com about ***-**-6789 (SSN)",
        "the upstream gets valid JSON with the entities masked"
    );
    assert_eq!(
        seen[0]
            .headers
            .get("chatgpt-allowed-workspace-id")
            .map(|v| v.to_str().unwrap()),
        Some("ws-corp")
    );
    let rows: Vec<(String,)> = gateway
        .rows_eventually("SELECT explanation FROM decisions", 1)
        .await;
    assert!(
        rows[0].0.contains("\"body_redacted\":true"),
        "{}",
        rows[0].0
    );
}

#[tokio::test]
async fn an_unknown_ai_service_is_coached_and_a_justification_lets_the_user_through() {
    // Not in the catalog; intercepted because the operator listed it, recognised by its API path.
    // Two services share the OpenAI path, so the path alone names neither: shadow AI.
    let catalog = test_service("one", "one.example", "approved", &["text_generation"])
        + test_service("two", "two.example", "approved", &["text_generation"])
            .trim_start_matches("services:\n");
    let (gateway, origin, _) = policy_gateway(&catalog, "llm.internal.example", &[], |config| {
        config.intercept.extra_hosts = vec!["llm.internal.example".into()];
    })
    .await;
    let browser = gateway.client(&gateway.ca_pem(), Http::One);
    let page = browser
        .get("https://llm.internal.example/v1/chat/completions")
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 403);
    let html = page.text().await.unwrap();
    assert!(html.contains("/.aigate/justify"));
    let token = crate::coach::token_of(&html);

    let justified = browser
        .post("https://llm.internal.example/.aigate/justify")
        .form(&[
            (
                "justification",
                "Trying our internal model gateway for the pilot",
            ),
            ("return_to", "/v1/chat/completions"),
            ("token", &token),
        ])
        .send()
        .await
        .unwrap();
    // reqwest follows the 303 back to the page, which is now allowed and reaches the origin.
    assert_eq!(justified.status(), 200);
    assert_eq!(origin.requests().len(), 1);
    let exceptions: Vec<(Option<String>, String)> = gateway
        .rows_eventually("SELECT ai_service_id, conditions FROM exceptions", 1)
        .await;
    assert!(exceptions[0].0.is_none());
    assert!(
        exceptions[0].1.contains("llm.internal.example"),
        "{}",
        exceptions[0].1
    );
    let other_host = browser
        .get("https://other-llm.example/v1/chat/completions")
        .send()
        .await;
    assert!(
        other_host.is_err() || other_host.unwrap().status() != 200,
        "the exception names one host"
    );
}

#[tokio::test]
async fn allow_and_flag_forwards_a_review_and_opens_a_violation() {
    let catalog = test_service(
        "newai",
        "new.example",
        "review_required",
        &["text_generation"],
    );
    let (gateway, origin, _) = policy_gateway(&catalog, "new.example", &[], |config| {
        config.policy.review_action = aigate::config::ReviewAction::AllowAndFlag;
    })
    .await;
    let (status, _) = post_json(
        &gateway,
        "https://new.example/v1/chat/completions",
        r#"{"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(origin.requests().len(), 1);
    let rows: Vec<(String, String, String)> = gateway
        .rows_eventually(
            "SELECT d.decision, v.violation_type, v.status FROM decisions d JOIN violations v USING (decision_id)",
            1,
        )
        .await;
    assert_eq!(
        rows[0],
        ("REVIEW".into(), "review_required".into(), "open".into())
    );
}

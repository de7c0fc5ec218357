//! The management API over real HTTP against PostgreSQL: the role matrix, the policy lifecycle
//! enforced through the proxy, exceptions, violation triage, the audit trail of every write, and
//! the OpenAPI document.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{upstream_ca, Http, Origin, TestGateway};

const CHAT: &str =
    r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Draft a polite reminder"}]}"#;
const ANONYMOUS: &str = "00000000-0000-0000-0000-000000000000";

struct Api {
    gateway: TestGateway,
    origin: Origin,
    pg_url: String,
    http: reqwest::Client,
}

impl Api {
    /// A gateway on a fresh PostgreSQL database with one token per built-in role
    /// (`token-<role>`).
    async fn start() -> Api {
        let pg_url = crate::store::fresh_pg_database().await;
        let ca = upstream_ca();
        let origin = Origin::start_tls(&ca, &["api.openai.com"]).await;
        let url = pg_url.clone();
        let gateway =
            TestGateway::start_with(&ca, &[("api.openai.com", origin.addr)], move |config| {
                config.store.url = url;
            })
            .await;
        let store = aigate::store::open(&pg_url).await.unwrap();
        for role in ["admin", "policy_author", "auditor", "readonly"] {
            let digest = aigate::admin::auth::token_sha256(&format!("token-{role}"));
            assert!(store
                .create_admin_token(&format!("{role} tester"), role, &digest)
                .await
                .unwrap()
                .is_some());
        }
        Api {
            gateway,
            origin,
            pg_url,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gateway.gateway.admin_addr)
    }

    async fn call(
        &self,
        role: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self.http.request(method.parse().unwrap(), self.url(path));
        if let Some(role) = role {
            request = request.bearer_auth(format!("token-{role}"));
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(Some("admin"), method, path, body).await
    }

    /// A chat completion through the proxy.
    async fn chat(&self) -> u16 {
        self.gateway
            .client(&self.gateway.ca_pem(), Http::One)
            .post("https://api.openai.com/v1/chat/completions")
            .header("content-type", "application/json")
            .body(CHAT)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Audit events of a type, once at least `at_least` exist (the audit writer is async).
    async fn audit_events(&self, event_type: &str, at_least: usize) -> Vec<Value> {
        for _ in 0..100 {
            let (status, page) = self
                .admin(
                    "GET",
                    &format!("/admin/audit-events?event_type={event_type}&limit=500"),
                    None,
                )
                .await;
            assert_eq!(status, 200);
            let items = page["items"].as_array().unwrap().clone();
            if items.len() >= at_least {
                return items;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("fewer than {at_least} {event_type} audit events");
    }

    async fn finish(self) {
        let url = self.pg_url.clone();
        drop(self);
        crate::store::drop_pg_database(&url).await;
    }
}

fn freeze_policy(rego: &str) -> Value {
    json!({
        "name": "Change freeze",
        "priority": 950,
        "policy_type": "organizational",
        "rule_content": rego,
        "tags": ["freeze"],
    })
}

const FREEZE: &str = "package freeze\n\ndeny if input.request.host == \"api.openai.com\"\n\nreason := \"AI use is frozen during the audit\"\n";

#[tokio::test]
async fn each_role_gets_exactly_its_permissions() {
    let api = Api::start().await;
    // Public endpoints need no token; everything else does.
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/proxy.pac",
        "/ca.pem",
        "/openapi.json",
    ] {
        assert_eq!(api.call(None, "GET", path, None).await.0, 200, "{path}");
    }
    for path in ["/", "/admin/policies", "/admin/decisions"] {
        let (status, body) = api.call(None, "GET", path, None).await;
        assert_eq!(status, 401, "{path}");
        assert_eq!(body["error"]["type"], "unauthorized");
        let bogus = api
            .http
            .get(api.url(path))
            .bearer_auth("not-a-token")
            .send()
            .await
            .unwrap();
        assert_eq!(bogus.status(), 401);
    }

    let draft = freeze_policy("package p\ndeny if false\n");
    let cases: Vec<(&str, &str, Option<Value>, [u16; 4])> = vec![
        // [admin, policy_author, auditor, readonly]
        ("GET", "/admin/policies", None, [200, 200, 200, 200]),
        (
            "POST",
            "/admin/policies",
            Some(draft.clone()),
            [201, 201, 403, 403],
        ),
        ("GET", "/admin/exceptions", None, [200, 200, 200, 403]),
        ("GET", "/admin/decisions", None, [200, 200, 200, 200]),
        ("GET", "/admin/decisions/hourly", None, [200, 200, 200, 200]),
        ("GET", "/admin/violations", None, [200, 200, 200, 200]),
        ("GET", "/admin/audit-events", None, [200, 403, 200, 403]),
        ("GET", "/admin/bypass", None, [200, 403, 200, 403]),
        ("POST", "/admin/reload", None, [200, 403, 403, 403]),
        (
            "POST",
            "/admin/tokens",
            Some(json!({"name": "ci", "role": "readonly"})),
            [201, 403, 403, 403],
        ),
        ("GET", "/", None, [200, 200, 200, 200]),
    ];
    for (method, path, body, expected) in cases {
        for (role, status) in ["admin", "policy_author", "auditor", "readonly"]
            .iter()
            .zip(expected)
        {
            let (got, answer) = api.call(Some(role), method, path, body.clone()).await;
            assert_eq!(got, status, "{role} {method} {path}: {answer}");
            if got == 403 {
                assert_eq!(answer["error"]["type"], "forbidden");
            }
        }
    }
    // An issued token works and carries its role.
    let (_, issued) = api
        .admin(
            "POST",
            "/admin/tokens",
            Some(json!({"name": "dashboards", "role": "readonly"})),
        )
        .await;
    let token = issued["token"].as_str().unwrap();
    let listed = api
        .http
        .get(api.url("/admin/policies"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    let (status, _) = api
        .admin(
            "POST",
            "/admin/tokens",
            Some(json!({"name": "x", "role": "superuser"})),
        )
        .await;
    assert_eq!(status, 400);
    api.finish().await;
}

#[tokio::test]
async fn a_policy_goes_from_draft_to_enforced_to_archived_and_every_write_is_audited() {
    let api = Api::start().await;
    assert_eq!(api.chat().await, 200);

    // A syntax error is refused with its line.
    let broken = "package freeze\n\ndeny if {\n    input.request.host ==\n";
    let (status, error) = api
        .admin("POST", "/admin/policies", Some(freeze_policy(broken)))
        .await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["error"]["type"], "invalid_rego");
    assert!(
        error["error"]["line"]
            .as_u64()
            .is_some_and(|l| (3..=5).contains(&l)),
        "{error}"
    );
    let (status, error) = api
        .admin(
            "POST",
            "/admin/policies",
            Some(json!({"name": "x", "rule_content": FREEZE, "priority": 5000})),
        )
        .await;
    assert_eq!(status, 400, "{error}");
    let (status, _) = api
        .admin(
            "POST",
            "/admin/policies",
            Some(json!({"name": "x", "rule_content": FREEZE, "colour": "red"})),
        )
        .await;
    assert!(
        status == 400 || status == 422,
        "unknown fields are refused: {status}"
    );

    // Nothing refused landed in the store.
    let (status, listed) = api.admin("GET", "/admin/policies", None).await;
    assert_eq!(status, 200);
    assert!(!listed.to_string().contains("Change freeze"), "{listed}");

    // A valid one is a draft and is not enforced.
    let (status, created) = api
        .admin("POST", "/admin/policies", Some(freeze_policy(FREEZE)))
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["status"], "draft");
    let id = created["policy_id"].as_str().unwrap().to_owned();
    assert_eq!(api.chat().await, 200);

    // An edit that does not compile is refused and the stored Rego stays.
    let (status, error) = api
        .admin(
            "PUT",
            &format!("/admin/policies/{id}"),
            Some(freeze_policy(broken)),
        )
        .await;
    assert_eq!(
        (status, error["error"]["type"].as_str()),
        (400, Some("invalid_rego")),
        "{error}"
    );
    let (_, stored) = api
        .admin("GET", &format!("/admin/policies/{id}"), None)
        .await;
    assert_eq!(stored["rule_content"], FREEZE, "{stored}");

    // A dry run evaluates the draft.
    let (status, dry) = api
        .admin(
            "POST",
            &format!("/admin/policies/{id}/dry-run"),
            Some(json!({"input": {"request": {"host": "api.openai.com"}}})),
        )
        .await;
    assert_eq!(
        (status, dry["decision"].as_str()),
        (200, Some("DENY")),
        "{dry}"
    );

    // Editing the Rego bumps the version and records it.
    let edited = FREEZE.replace("during the audit", "until Monday");
    let (status, updated) = api
        .admin(
            "PUT",
            &format!("/admin/policies/{id}"),
            Some(freeze_policy(&edited)),
        )
        .await;
    assert_eq!(
        (status, updated["version"].as_str()),
        (200, Some("1.0.1")),
        "{updated}"
    );

    // draft → active directly is not a lifecycle step; draft → review → active is.
    let status_url = format!("/admin/policies/{id}/status");
    let (status, _) = api
        .admin("POST", &status_url, Some(json!({"status": "active"})))
        .await;
    assert_eq!(status, 409);
    assert_eq!(
        api.admin("POST", &status_url, Some(json!({"status": "review"})))
            .await
            .0,
        200
    );
    let (status, active) = api
        .admin(
            "POST",
            &status_url,
            Some(json!({"status": "active", "comment": "approved by CAB"})),
        )
        .await;
    assert_eq!(status, 200, "{active}");
    assert_eq!(
        api.chat().await,
        403,
        "an active policy is enforced at once"
    );
    assert_eq!(api.origin.requests().len(), 2);

    let (_, stored) = api
        .admin("GET", &format!("/admin/policies/{id}"), None)
        .await;
    assert_eq!(stored["status"], "active");
    let (_, listed) = api
        .admin("GET", "/admin/policies?status=active&limit=500", None)
        .await;
    assert!(listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["policy_id"] == id.as_str()
            && p["approved_by"] == ANONYMOUS
            && p["approved_at"].is_string()));

    assert_eq!(
        api.admin("POST", &status_url, Some(json!({"status": "archived"})))
            .await
            .0,
        200
    );
    assert_eq!(api.chat().await, 200, "archived: allowed again");

    // Versions and the audit trail.
    let versions: Vec<(String, String)> = {
        use sqlx::Connection;
        let mut db = sqlx::PgConnection::connect(&api.pg_url).await.unwrap();
        sqlx::query_as("SELECT version, changed_by::text FROM policy_versions WHERE policy_id = $1::uuid ORDER BY version")
            .bind(&id)
            .fetch_all(&mut db)
            .await
            .unwrap()
    };
    assert_eq!(
        versions,
        vec![
            ("1.0.0".to_owned(), ANONYMOUS.to_owned()),
            ("1.0.1".to_owned(), ANONYMOUS.to_owned())
        ]
    );
    let created_events = api.audit_events("policy_created", 1).await;
    assert_eq!(created_events[0]["target_id"], id.as_str());
    assert_eq!(created_events[0]["actor_type"], "admin_token");
    assert_eq!(created_events[0]["actor_email"], "admin tester");
    let updates = api.audit_events("policy_updated", 1).await;
    assert_eq!(updates[0]["changes"]["before"]["version"], "1.0.0");
    assert_eq!(updates[0]["changes"]["after"]["version"], "1.0.1");
    let transitions = api.audit_events("policy_status_changed", 3).await;
    let mut seen: Vec<(String, String)> = transitions
        .iter()
        .map(|e| {
            (
                e["changes"]["before"]["status"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                e["changes"]["after"]["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("active".to_owned(), "archived".to_owned()),
            ("draft".to_owned(), "review".to_owned()),
            ("review".to_owned(), "active".to_owned()),
        ]
    );
    api.finish().await;
}

#[tokio::test]
async fn exceptions_and_violations_follow_their_workflows() {
    let api = Api::start().await;
    let (_, created) = api
        .admin("POST", "/admin/policies", Some(freeze_policy(FREEZE)))
        .await;
    let id = created["policy_id"].as_str().unwrap().to_owned();
    let status_url = format!("/admin/policies/{id}/status");
    api.admin("POST", &status_url, Some(json!({"status": "review"})))
        .await;
    api.admin("POST", &status_url, Some(json!({"status": "active"})))
        .await;
    assert_eq!(api.chat().await, 403);

    // An exception for the (anonymous) requester: pending changes nothing, approval lifts the
    // block, revocation restores it.
    let until = (time::OffsetDateTime::now_utc() + time::Duration::days(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let request = json!({"user_id": ANONYMOUS, "policy_id": id, "reason": "quarter close",
                         "justification": "finance needs summaries", "effective_until": until});
    let (status, exception) = api
        .call(
            Some("policy_author"),
            "POST",
            "/admin/exceptions",
            Some(request),
        )
        .await;
    assert_eq!(status, 201, "{exception}");
    assert_eq!(exception["status"], "pending");
    let exception_id = exception["exception_id"].as_str().unwrap().to_owned();
    assert_eq!(api.chat().await, 403);
    let (status, _) = api
        .call(
            Some("readonly"),
            "POST",
            &format!("/admin/exceptions/{exception_id}/approve"),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 403);
    let (status, approved) = api
        .admin(
            "POST",
            &format!("/admin/exceptions/{exception_id}/approve"),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (status, approved["status"].as_str()),
        (200, Some("approved")),
        "{approved}"
    );
    assert_eq!(
        api.chat().await,
        200,
        "the approved exception applies at once"
    );
    let revoke = format!("/admin/exceptions/{exception_id}/revoke");
    assert_eq!(
        api.admin("POST", &revoke, Some(json!({}))).await.0,
        400,
        "a revocation needs a reason"
    );
    let (status, revoked) = api
        .admin("POST", &revoke, Some(json!({"reason": "quarter closed"})))
        .await;
    assert_eq!((status, revoked["status"].as_str()), (200, Some("revoked")));
    assert_eq!(revoked["revocation_reason"], "quarter closed");
    assert_eq!(api.chat().await, 403);
    let (status, _) = api
        .admin(
            "POST",
            &format!("/admin/exceptions/{exception_id}/approve"),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 409, "a revoked exception cannot be approved again");
    let (status, _) = api
        .admin(
            "POST",
            "/admin/exceptions/not-a-uuid/approve",
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 400);

    // The three denials opened violations; triage one.
    let violations = loop {
        let (_, page) = api
            .admin("GET", "/admin/violations?status=open", None)
            .await;
        let items = page["items"].as_array().unwrap().clone();
        if items.len() >= 3 {
            break items;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(violations[0]["policy_name"], "Change freeze");
    let violation = format!(
        "/admin/violations/{}",
        violations[0]["violation_id"].as_str().unwrap()
    );
    let (status, investigating) = api
        .admin(
            "PATCH",
            &violation,
            Some(json!({"status": "investigating", "assigned_to": ANONYMOUS})),
        )
        .await;
    assert_eq!(
        (status, investigating["status"].as_str()),
        (200, Some("investigating")),
        "{investigating}"
    );
    assert_eq!(
        api.admin("PATCH", &violation, Some(json!({"status": "resolved"})))
            .await
            .0,
        400,
        "resolving needs notes"
    );
    assert_eq!(
        api.admin("PATCH", &violation, Some(json!({"status": "closed"})))
            .await
            .0,
        400
    );
    let (status, resolved) = api
        .admin(
            "PATCH",
            &violation,
            Some(json!({"status": "resolved", "notes": "user coached"})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(resolved["resolution_notes"], "user coached");
    assert!(resolved["resolved_at"].is_string());
    assert_eq!(
        api.admin(
            "PATCH",
            &violation,
            Some(json!({"status": "investigating"}))
        )
        .await
        .0,
        409
    );
    let (_, open) = api
        .admin("GET", "/admin/violations?status=open", None)
        .await;
    assert_eq!(open["items"].as_array().unwrap().len(), 2);

    // Decisions query with filters and pages.
    let (_, denied) = api
        .admin("GET", "/admin/decisions?decision=deny&limit=1", None)
        .await;
    assert_eq!(denied["items"].as_array().unwrap().len(), 1);
    assert_eq!(denied["items"][0]["decision"], "DENY");
    let cursor = denied["next_cursor"].as_str().unwrap();
    let (_, next) = api
        .admin(
            "GET",
            &format!("/admin/decisions?decision=DENY&limit=1&cursor={cursor}"),
            None,
        )
        .await;
    assert_ne!(
        next["items"][0]["decision_id"],
        denied["items"][0]["decision_id"]
    );
    assert_eq!(
        api.admin("GET", "/admin/decisions?limit=0", None).await.0,
        400
    );
    assert_eq!(
        api.admin("GET", "/admin/decisions?since=yesterday", None)
            .await
            .0,
        400
    );

    // Every write is in the audit trail.
    assert_eq!(
        api.audit_events("exception_requested", 1).await[0]["actor_email"],
        "policy_author tester"
    );
    let decided = api.audit_events("exception_decided", 2).await;
    let mut actions: Vec<&str> = decided
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    actions.sort_unstable();
    assert_eq!(actions, vec!["approve_exception", "revoke_exception"]);
    let triage = api.audit_events("violation_updated", 2).await;
    assert!(triage
        .iter()
        .any(|e| e["changes"]["after"]["status"] == "resolved"
            && e["changes"]["before"]["status"] == "investigating"));

    // The dashboard shows it.
    let (status, page) = api.call(Some("readonly"), "GET", "/", None).await;
    assert_eq!(status, 200);
    let html = page.as_str().unwrap();
    assert!(
        html.contains("Decisions per hour") && html.contains("Change freeze"),
        "{html}"
    );
    api.finish().await;
}

#[tokio::test]
async fn the_openapi_document_is_valid_and_lists_every_route() {
    let api = Api::start().await;
    let (status, document) = api.call(None, "GET", "/openapi.json", None).await;
    assert_eq!(status, 200);
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));

    // A real validator (openapi-spec-validator, installed by .ci/run).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("openapi.json");
    std::fs::write(&path, serde_json::to_vec(&document).unwrap()).unwrap();
    let validated = std::process::Command::new("python3")
        .args(["-c", "import json, sys\nfrom openapi_spec_validator import validate\nvalidate(json.load(open(sys.argv[1])))", path.to_str().unwrap()])
        .output()
        .expect("python3 must be installed");
    assert!(
        validated.status.success(),
        "openapi-spec-validator (pip install openapi-spec-validator): {}",
        String::from_utf8_lossy(&validated.stderr)
    );

    // Every documented operation is routed (no bare 404/405 from the router), and the routes the
    // README promises are documented.
    let paths = document["paths"].as_object().unwrap();
    for expected in [
        "/admin/policies",
        "/admin/policies/{id}/status",
        "/admin/exceptions/{id}/revoke",
        "/admin/violations/{id}",
        "/admin/decisions/hourly",
        "/admin/audit-events",
        "/admin/reload",
        "/admin/bypass/permanent/{host}",
        "/proxy.pac",
        "/",
        "/openapi.json",
    ] {
        assert!(paths.contains_key(expected), "{expected} is not documented");
    }
    let mut operations = 0;
    for (path, item) in paths {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            operations += 1;
            let concrete = path
                .replace("{id}", "00000000-0000-4000-8000-000000000999")
                .replace("{host}", "unknown.example");
            let mut request = api
                .http
                .request(method.to_uppercase().parse().unwrap(), api.url(&concrete))
                .bearer_auth("token-readonly");
            if method != "get" && method != "delete" {
                request = request.json(&json!({}));
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let body = response.text().await.unwrap();
            assert_ne!(status, 405, "{method} {path}");
            assert!(
                !(status == 404 && body.is_empty()),
                "{method} {path} is not routed"
            );
        }
    }
    assert!(operations >= 25, "{operations} operations");
    api.finish().await;
}

/// Creates and activates a policy; returns its id.
async fn active_policy(api: &Api, name: &str, priority: i32, rego: &str) -> String {
    let body = json!({"name": name, "priority": priority, "rule_content": rego});
    let (status, created) = api.admin("POST", "/admin/policies", Some(body)).await;
    assert_eq!(status, 201, "{created}");
    let id = created["policy_id"].as_str().unwrap().to_owned();
    for step in ["review", "active"] {
        let (status, answer) = api
            .admin(
                "POST",
                &format!("/admin/policies/{id}/status"),
                Some(json!({"status": step})),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
    }
    id
}

#[tokio::test]
async fn catalog_changes_rebuild_the_matcher_and_conflicts_and_shadow_ai_are_reported() {
    let pg_url = crate::store::fresh_pg_database().await;
    let ca = upstream_ca();
    let acme = Origin::start_tls(&ca, &["acme-chat.example"]).await;
    let shadow = Origin::start_plain().await;
    let url = pg_url.clone();
    let gateway = TestGateway::start_with(
        &ca,
        &[
            ("acme-chat.example", acme.addr),
            ("llm.internal.example", shadow.addr),
        ],
        move |config| config.store.url = url,
    )
    .await;
    let store = aigate::store::open(&pg_url).await.unwrap();
    store
        .create_admin_token(
            "admin tester",
            "admin",
            &aigate::admin::auth::token_sha256("token-admin"),
        )
        .await
        .unwrap();
    let origin = Origin::start_plain().await;
    let api = Api {
        gateway,
        origin,
        pg_url,
        http: reqwest::Client::new(),
    };
    let client = api.gateway.client(&api.gateway.ca_pem(), Http::One);
    // A new client each time: a kept-alive tunnel stays what it was when it opened.
    let post = || {
        api.gateway
            .client(&api.gateway.ca_pem(), Http::One)
            .post("https://acme-chat.example/v1/chat/completions")
            .body(CHAT)
            .send()
    };

    // Not in the catalog: tunnelled, so the client sees the origin's own certificate (which it
    // does not trust).
    assert!(post().await.is_err());

    let service = json!({
        "slug": "acme-chat", "name": "Acme Chat", "vendor": "Acme",
        "signatures": {"domains": ["acme-chat.example"], "headers": [], "api_patterns": ["/v1/chat/completions"], "ssl_fingerprints": []},
        "risk_tier": "medium", "risk_score": 40, "approval_status": "approved",
    });
    let (status, created) = api
        .admin("POST", "/admin/services", Some(service.clone()))
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["service_id"].as_str().unwrap().to_owned();
    assert_eq!(
        post().await.unwrap().status(),
        200,
        "now intercepted and allowed"
    );

    // A clash with another service's domain or a bad regex is refused.
    let mut clash = service.clone();
    clash["slug"] = "openai-clone".into();
    clash["signatures"]["domains"] = json!(["api.openai.com"]);
    let (status, error) = api.admin("POST", "/admin/services", Some(clash)).await;
    assert_eq!(status, 400, "{error}");
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("api.openai.com"));
    let mut bad_regex = service.clone();
    bad_regex["signatures"]["headers"] = json!([{"name": "x-acme", "pattern": "(unclosed"}]);
    assert_eq!(
        api.admin("PUT", &format!("/admin/services/{id}"), Some(bad_regex))
            .await
            .0,
        400
    );

    let mut prohibited = service.clone();
    prohibited["approval_status"] = "prohibited".into();
    let (status, _) = api
        .admin("PUT", &format!("/admin/services/{id}"), Some(prohibited))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        post().await.unwrap().status(),
        403,
        "prohibited by the shipped policy"
    );
    let (_, listed) = api
        .admin("GET", "/admin/services?approval_status=prohibited", None)
        .await;
    assert!(listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["service_id"] == id.as_str()));

    assert_eq!(
        api.admin("DELETE", &format!("/admin/services/{id}"), None)
            .await
            .0,
        204
    );
    assert_eq!(
        api.admin("GET", &format!("/admin/services/{id}"), None)
            .await
            .0,
        404
    );
    assert!(post().await.is_err(), "tunnelled again");
    let changes = api.audit_events("ai_service_changed", 3).await;
    assert!(changes
        .iter()
        .any(|e| e["action"] == "delete_service" && e["changes"]["after"].is_null()));

    // Two active policies pulling opposite ways at one priority are a conflict.
    let allow = active_policy(
        &api,
        "Allow pilots",
        500,
        "package pilots\nallow if \"AI pilot\" in input.user.groups\n",
    )
    .await;
    let deny = active_policy(
        &api,
        "No uploads",
        500,
        "package uploads\ndeny if count(input.content.files) > 0\n",
    )
    .await;
    let (status, conflicts) = api.admin("GET", "/admin/policy-conflicts", None).await;
    assert_eq!(status, 200);
    let pair = conflicts["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            let ids = [
                c["policy_a"]["policy_id"].as_str().unwrap(),
                c["policy_b"]["policy_id"].as_str().unwrap(),
            ];
            ids.contains(&allow.as_str()) && ids.contains(&deny.as_str())
        })
        .expect("the allow/deny pair is reported");
    assert_eq!(pair["conflict_type"], "priority_ambiguity");
    let stored: i64 = {
        use sqlx::Connection;
        let mut db = sqlx::PgConnection::connect(&api.pg_url).await.unwrap();
        sqlx::query_scalar("SELECT count(*) FROM policy_conflicts WHERE NOT resolved AND conflict_type = 'priority_ambiguity'")
            .fetch_one(&mut db)
            .await
            .unwrap()
    };
    assert!(stored >= 1);

    // An AI API on a host outside the catalog is shadow AI.
    for _ in 0..2 {
        let response = client
            .post("http://llm.internal.example/v1/chat/completions")
            .body(CHAT)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let report = loop {
        let (status, report) = api.admin("GET", "/admin/shadow-ai", None).await;
        assert_eq!(status, 200, "{report}");
        let found = report["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["service_name"] == "llm.internal.example")
            .cloned();
        if let Some(found) = found.filter(|f| f["requests"] == 2) {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(report["in_catalog"], false);
    assert_eq!(report["users"][0]["user_id"], ANONYMOUS);
    api.finish().await;
}

#[tokio::test]
async fn the_dashboard_renders_in_headless_chromium() {
    let api = Api::start().await;
    let (_, created) = api
        .admin("POST", "/admin/policies", Some(freeze_policy(FREEZE)))
        .await;
    let id = created["policy_id"].as_str().unwrap().to_owned();
    assert_eq!(api.chat().await, 200);
    for step in ["review", "active"] {
        api.admin(
            "POST",
            &format!("/admin/policies/{id}/status"),
            Some(json!({"status": step})),
        )
        .await;
    }
    assert_eq!(api.chat().await, 403);
    assert_eq!(api.chat().await, 403);
    // Wait for the three decisions and two violations to land.
    loop {
        let (_, open) = api
            .admin("GET", "/admin/violations?status=open", None)
            .await;
        let (_, decisions) = api.admin("GET", "/admin/decisions", None).await;
        if open["items"].as_array().unwrap().len() == 2
            && decisions["items"].as_array().unwrap().len() == 3
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The rollup is a materialized view on plain PostgreSQL: refresh it as maintenance would.
    let store = aigate::store::open(&api.pg_url).await.unwrap();
    store.maintain().await.unwrap();

    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard.png");
    // Asynchronously: the gateway serves the page from this test's runtime.
    let output = tokio::process::Command::new("node")
        .arg(crate::support::repo_path("tests/dashboard/screenshot.mjs"))
        .arg(api.url("/"))
        .arg("token-readonly")
        .arg(&out)
        .output()
        .await
        .expect("node must be installed");
    assert!(
        output.status.success(),
        "headless Chromium (apt chromium, npm playwright-core; .ci/run installs both): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rendered: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(rendered["title"], "aigate dashboard");
    assert_eq!(rendered["total"], "3");
    assert_eq!(rendered["denied"], "2");
    assert_eq!(rendered["open"], "2");
    assert!(rendered["bars"].as_u64().unwrap() >= 2);
    let png = std::fs::read(&out).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real screenshot"
    );
    api.finish().await;
}

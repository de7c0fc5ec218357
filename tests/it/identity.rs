//! Identity through the gateway: each attribution path, proxy authentication, the context
//! reaching the policy engine, and the directory import (CLI, SQLite and PostgreSQL).

use std::path::{Path, PathBuf};

use aigate::store::Store;

use crate::support::{upstream_ca, Http, Origin, TestGateway};

const ANONYMOUS: &str = "00000000-0000-0000-0000-000000000000";
pub(crate) const CHAT: &str =
    r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Summarise our meeting notes"}]}"#;

/// An Okta-like export: a department tree, a group, a role, four people and one laptop at
/// 127.0.0.1 (where every test client connects from) owned by dev@.
pub(crate) fn export(with_laptop: bool) -> serde_json::Value {
    let mut export = serde_json::json!({
        "source": {"provider": "okta", "name": "Okta test tenant"},
        "departments": [
            {"name": "Technology"},
            {"name": "Engineering", "parent": "Technology", "allowed_ai_services": ["openai"]}
        ],
        "roles": [{"name": "ai_user", "description": "May use approved AI", "permissions": {"ai": ["use"]}}],
        "groups": [{"external_id": "00g-pilot", "name": "AI pilot", "group_type": "security",
                    "prohibited_ai_services": ["deepseek"]}],
        "users": [
            {"external_id": "00u-ana", "email": "Ana.Lopez@corp.example", "department": "Engineering",
             "employee_type": "full_time", "groups": ["00g-pilot"],
             "roles": ["ai_user", {"name": "ai_user_expired", "expires_at": "2020-01-01T00:00:00Z"}]},
            {"external_id": "00u-carl", "email": "carl@corp.example", "department": "Engineering",
             "employee_type": "contractor", "manager": "00u-ana"},
            {"external_id": "00u-sam", "email": "sam@corp.example", "department": "Technology",
             "employee_type": "full_time", "status": "suspended"},
            {"external_id": "00u-dev", "email": "dev@corp.example", "department": "Engineering",
             "employee_type": "full_time"}
        ],
        "assets": []
    });
    export["roles"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "ai_user_expired", "permissions": {}}));
    if with_laptop {
        export["assets"] = serde_json::json!([
            {"external_id": "cs-laptop-1", "asset_type": "laptop", "hostname": "lt-dev",
             "ip_addresses": ["127.0.0.1"], "owner": "dev@corp.example", "crown_jewel": true,
             "sensitivity": "high", "compliance_status": "compliant", "data_classification": ["PII"]}
        ]);
    }
    export
}

fn write_export(dir: &Path, name: &str, export: &serde_json::Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(export).unwrap()).unwrap();
    path
}

fn sqlite_url(gateway: &TestGateway) -> String {
    format!(
        "sqlite://{}",
        gateway.dir.path().join("aigate.db").display()
    )
}

/// Imports `export` into the running gateway's store, as `aigate directory import` would.
pub(crate) async fn import_into(
    gateway: &TestGateway,
    export: &serde_json::Value,
) -> std::sync::Arc<dyn Store> {
    let store = aigate::store::open(&sqlite_url(gateway)).await.unwrap();
    let path = write_export(gateway.dir.path(), "export.json", export);
    aigate::identity::directory::import(&*store, &path)
        .await
        .unwrap();
    store
}

/// A gateway with a TLS catalog origin (api.openai.com) and a plain origin (plain.example).
pub(crate) async fn gateway_with(
    adjust: impl FnOnce(&mut aigate::config::Config),
) -> (
    TestGateway,
    Origin,
    Origin,
    aigate::tls::CertificateAuthority,
) {
    let ca = upstream_ca();
    let tls = Origin::start_tls(&ca, &["api.openai.com"]).await;
    let plain = Origin::start_plain().await;
    let gateway = TestGateway::start_with(
        &ca,
        &[("api.openai.com", tls.addr), ("plain.example", plain.addr)],
        adjust,
    )
    .await;
    (gateway, tls, plain, ca)
}

type UserFields = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
);

/// `(user_id, user_email, user_department, device_id, source)` of the decisions, oldest first.
async fn decision_users(gateway: &TestGateway, at_least: usize) -> Vec<UserFields> {
    gateway
        .rows_eventually(
            "SELECT user_id, user_email, user_department, device_id, source FROM decisions ORDER BY timestamp",
            at_least,
        )
        .await
}

async fn post_chat(client: &reqwest::Client, header: Option<&str>) -> u16 {
    let mut request = client
        .post("https://api.openai.com/v1/chat/completions")
        .header("content-type", "application/json")
        .body(CHAT);
    if let Some(email) = header {
        request = request.header("X-Authenticated-User", email);
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn a_trusted_header_counts_only_from_trusted_networks_and_never_reaches_the_origin() {
    for (trusted_network, expected) in [
        ("127.0.0.0/8", Some("ana.lopez@corp.example")),
        ("10.0.0.0/8", None),
    ] {
        let (gateway, origin, _, _) = gateway_with(|config| {
            config.identity.trusted_networks = vec![trusted_network.parse().unwrap()];
        })
        .await;
        import_into(&gateway, &export(false)).await;
        let client = gateway.client(&gateway.ca_pem(), Http::One);
        assert_eq!(
            post_chat(&client, Some("ana.lopez@corp.example")).await,
            200
        );

        let rows = decision_users(&gateway, 1).await;
        let (user_id, email, department, _, source) = &rows[0];
        assert_eq!(
            email.as_deref(),
            expected,
            "trusted network {trusted_network}"
        );
        assert_eq!(source, "proxy");
        if expected.is_some() {
            assert_ne!(user_id, ANONYMOUS);
            assert_eq!(department.as_deref(), Some("Engineering"));
        } else {
            assert_eq!(user_id, ANONYMOUS);
            assert_eq!(department, &None);
        }
        let seen = origin.requests();
        assert_eq!(seen.len(), 1);
        assert!(
            seen[0].headers.get("x-authenticated-user").is_none(),
            "the identity header reached the origin"
        );
    }
}

pub(crate) fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// Sends a raw CONNECT and returns the response head.
async fn raw_connect(gateway: &TestGateway, authorization: Option<&str>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(gateway.gateway.proxy_addr)
        .await
        .unwrap();
    let credentials = authorization
        .map(|a| format!("Proxy-Authorization: {a}\r\n"))
        .unwrap_or_default();
    socket
        .write_all(
            format!("CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n{credentials}\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut head = vec![0; 4096];
    let read = socket.read(&mut head).await.unwrap();
    String::from_utf8_lossy(&head[..read]).into_owned()
}

#[tokio::test]
async fn proxy_basic_authentication_admits_good_credentials_and_challenges_bad_or_missing_ones() {
    let (gateway, tls_origin, plain_origin, _) = gateway_with(|config| {
        config.identity.require_proxy_auth = true;
    })
    .await;
    let store = import_into(&gateway, &export(true)).await;
    let hash = aigate::identity::hash_password("correct horse battery").unwrap();
    assert!(store
        .set_proxy_credential("ANA.LOPEZ@corp.example", &hash)
        .await
        .unwrap());
    assert!(!store
        .set_proxy_credential("nobody@corp.example", &hash)
        .await
        .unwrap());
    let stored: Option<String> = gateway
        .rows_eventually::<(String,)>("SELECT password_hash FROM proxy_credentials", 1)
        .await
        .pop()
        .map(|row| row.0);
    assert!(
        stored.unwrap().starts_with("$argon2id$"),
        "only a hash is stored"
    );

    let proxy = |password: &str| {
        reqwest::Client::builder()
            .proxy(
                reqwest::Proxy::all(gateway.proxy_url())
                    .unwrap()
                    .basic_auth("ana.lopez@corp.example", password),
            )
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(gateway.ca_pem().as_bytes()).unwrap(),
            )
            .http1_only()
            .build()
            .unwrap()
    };

    // Good credentials win over the laptop's owner: through CONNECT (intercepted) and as a plain absolute-form request.
    assert_eq!(post_chat(&proxy("correct horse battery"), None).await, 200);
    let plain = proxy("correct horse battery")
        .post("http://plain.example/v1/chat/completions")
        .body(CHAT)
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 200);
    let rows = decision_users(&gateway, 2).await;
    for (_, email, department, device, _) in &rows {
        assert_eq!(email.as_deref(), Some("ana.lopez@corp.example"));
        assert_eq!(department.as_deref(), Some("Engineering"));
        assert!(device.is_some(), "the laptop at 127.0.0.1 is the device");
    }
    for seen in tls_origin
        .requests()
        .iter()
        .chain(plain_origin.requests().iter())
    {
        assert!(seen.headers.get("proxy-authorization").is_none());
    }
    assert_eq!(plain_origin.requests().len(), 1);

    // Wrong password and no credentials: 407 with a Basic challenge, on both paths.
    let wrong = proxy("wrong password")
        .post("http://plain.example/v1/chat/completions")
        .body(CHAT)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 407);
    assert_eq!(
        wrong.headers()["proxy-authenticate"],
        "Basic realm=\"aigate\", charset=\"UTF-8\""
    );
    let anonymous = gateway
        .client(&gateway.ca_pem(), Http::One)
        .post("http://plain.example/v1/chat/completions")
        .body(CHAT)
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 407);
    assert_eq!(
        plain_origin.requests().len(),
        1,
        "a refused request reached the origin"
    );

    let missing = raw_connect(&gateway, None).await;
    assert!(missing.starts_with("HTTP/1.1 407 "), "{missing}");
    assert!(
        missing.contains("Proxy-Authenticate: Basic realm=\"aigate\""),
        "{missing}"
    );
    let bad = raw_connect(&gateway, Some(&basic("ana.lopez@corp.example", "nope"))).await;
    assert!(bad.starts_with("HTTP/1.1 407 "), "{bad}");
    let unknown = raw_connect(
        &gateway,
        Some(&basic("ghost@corp.example", "correct horse battery")),
    )
    .await;
    assert!(unknown.starts_with("HTTP/1.1 407 "), "{unknown}");
    let good = raw_connect(
        &gateway,
        Some(&basic("ana.lopez@corp.example", "correct horse battery")),
    )
    .await;
    assert!(good.starts_with("HTTP/1.1 200 "), "{good}");
    assert_eq!(tls_origin.requests().len(), 1);
}

#[tokio::test]
async fn the_source_address_maps_to_the_owner_of_the_asset() {
    let (gateway, _, _, _) = gateway_with(|_| {}).await;
    import_into(&gateway, &export(true)).await;
    let client = gateway.client(&gateway.ca_pem(), Http::One);
    // The header is ignored (no trusted networks): the laptop's owner is who sent it.
    assert_eq!(
        post_chat(&client, Some("ana.lopez@corp.example")).await,
        200
    );
    let rows = decision_users(&gateway, 1).await;
    let (user_id, email, department, device, _) = &rows[0];
    let (owner, asset): (String, String) = gateway
        .rows_eventually(
            "SELECT owner_id, asset_id FROM assets WHERE external_id = 'cs-laptop-1'",
            1,
        )
        .await
        .pop()
        .unwrap();
    assert_eq!(user_id, &owner);
    assert_eq!(email.as_deref(), Some("dev@corp.example"));
    assert_eq!(department.as_deref(), Some("Engineering"));
    assert_eq!(device.as_deref(), Some(asset.as_str()));
}

#[tokio::test]
async fn nobody_known_is_anonymous() {
    let (gateway, _, _, _) = gateway_with(|_| {}).await;
    let client = gateway.client(&gateway.ca_pem(), Http::One);
    assert_eq!(
        post_chat(&client, Some("ana.lopez@corp.example")).await,
        200
    );
    let rows = decision_users(&gateway, 1).await;
    assert_eq!(
        rows[0],
        (ANONYMOUS.to_owned(), None, None, None, "proxy".to_owned())
    );
}

#[tokio::test]
async fn policies_see_the_user_context_contractors_suspended_and_anonymous_are_denied() {
    let policy_dir = tempfile::tempdir().unwrap().keep();
    let rego = "package staff_only\n\
        deny if input.user.employee_type == \"contractor\"\n\
        deny if input.user.suspended\n\
        deny if not input.user.authenticated\n\
        deny if \"ai_user_expired\" in input.user.roles\n\
        reason := \"AI services are for active staff\"\n";
    std::fs::write(policy_dir.join("staff-only.rego"), rego).unwrap();
    std::fs::write(
        policy_dir.join("staff-only.yaml"),
        format!(
            "policy_id: {}\nname: Staff only\nversion: 1.0.0\nstatus: active\npriority: 900\n\
             policy_type: organizational\nrule_file: staff-only.rego\neffective_date: 2020-01-01T00:00:00Z\n",
            uuid::Uuid::new_v4()
        ),
    )
    .unwrap();
    let (gateway, origin, _, _) = gateway_with(|config| {
        config.identity.trusted_networks = vec!["127.0.0.0/8".parse().unwrap()];
        config.policy.dir = policy_dir;
    })
    .await;
    import_into(&gateway, &export(false)).await;
    let client = gateway.client(&gateway.ca_pem(), Http::One);
    for (user, status) in [
        (Some("ana.lopez@corp.example"), 200),
        (Some("carl@corp.example"), 403),
        (Some("sam@corp.example"), 403),
        (Some("nobody@corp.example"), 403),
        (None, 403),
    ] {
        assert_eq!(post_chat(&client, user).await, status, "{user:?}");
    }
    assert_eq!(origin.requests().len(), 1);
    let violations: Vec<(String,)> = gateway
        .rows_eventually("SELECT user_id FROM violations", 4)
        .await;
    assert_eq!(violations.len(), 4);

    // The identified violators are notified in-app (anonymous ones cannot be), and carl's
    // manager too when his violation is high or critical.
    let notified: Vec<(String, String, String)> = gateway
        .rows_eventually(
            "SELECT u.email, v.severity, n.channels FROM notifications n JOIN users u ON u.user_id = n.recipient_id \
             JOIN violations v ON v.violation_id = n.related_entity_id ORDER BY u.email",
            2,
        )
        .await;
    let recipients: Vec<&str> = notified.iter().map(|n| n.0.as_str()).collect();
    assert!(recipients.contains(&"carl@corp.example") && recipients.contains(&"sam@corp.example"));
    let carl_severity = &notified
        .iter()
        .find(|n| n.0 == "carl@corp.example")
        .unwrap()
        .1;
    let manager_notified = recipients.contains(&"ana.lopez@corp.example");
    assert_eq!(
        manager_notified,
        matches!(carl_severity.as_str(), "high" | "critical")
    );
    assert_eq!(notified.len(), 2 + usize::from(manager_notified));
    assert!(notified.iter().all(|n| n.2 == "[\"in_app\"]"));
}

/// A config file for the CLI, on a SQLite store in `dir`.
fn cli_config(dir: &Path) -> PathBuf {
    let path = dir.join("aigate.toml");
    std::fs::write(
        &path,
        format!(
            "[store]\nurl = \"sqlite://{}\"\n",
            dir.join("cli.db").display()
        ),
    )
    .unwrap();
    path
}

fn aigate(args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_aigate"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

async fn cli_db(dir: &Path) -> sqlx::SqliteConnection {
    use sqlx::Connection;
    sqlx::SqliteConnection::connect(&format!("sqlite://{}", dir.join("cli.db").display()))
        .await
        .unwrap()
}

#[tokio::test]
async fn directory_import_upserts_by_external_id_and_records_every_run() {
    let dir = tempfile::tempdir().unwrap();
    let config = cli_config(dir.path());
    let config = config.to_str().unwrap();
    let first = write_export(dir.path(), "okta.json", &export(true));
    let output = aigate(
        &["directory", "import", first.to_str().unwrap(), "-c", config],
        "",
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    // 2 departments + 2 roles + 1 group + 4 users + 1 asset.
    assert!(
        stderr.contains("10 records, 10 created, 0 updated"),
        "{stderr}"
    );

    // The second run renames a group, suspends carl and adds a CSV-exported user.
    let mut changed = export(true);
    changed["groups"][0]["name"] = "AI pilot (wave 2)".into();
    changed["users"][1]["status"] = "suspended".into();
    let second = write_export(dir.path(), "okta.json", &changed);
    let output = aigate(
        &[
            "directory",
            "import",
            second.to_str().unwrap(),
            "-c",
            config,
        ],
        "",
    );
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("0 created, 10 updated"));
    let csv = dir.path().join("users.csv");
    std::fs::write(
        &csv,
        "external_id,email,first_name,department,employee_type,manager,groups,roles\n\
         00u-eve,eve@corp.example,Eve,Research,intern,00u-ana,AI pilot (wave 2),ai_user\n\
         00u-dev,dev@corp.example,Dev,Engineering,full_time,,,\n",
    )
    .unwrap();
    let output = aigate(
        &["directory", "import", csv.to_str().unwrap(), "-c", config],
        "",
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    // Eve and her new department are created; dev is updated.
    assert!(
        stderr.contains("2 records, 2 created, 1 updated"),
        "{stderr}"
    );

    let mut db = cli_db(dir.path()).await;
    let carl: (String, Option<String>) =
        sqlx::query_as("SELECT status, deactivated_at FROM users WHERE external_id = '00u-carl'")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(carl.0, "suspended");
    assert!(carl.1.is_some());
    let groups: Vec<(String,)> = sqlx::query_as("SELECT name FROM groups")
        .fetch_all(&mut db)
        .await
        .unwrap();
    assert_eq!(groups, vec![("AI pilot (wave 2)".to_owned(),)]);
    let eve: (String, String, String) = sqlx::query_as(
        "SELECT d.name, m.email, (SELECT g.name FROM user_groups ug JOIN groups g USING (group_id) WHERE ug.user_id = u.user_id) \
         FROM users u JOIN departments d ON d.department_id = u.department_id JOIN users m ON m.user_id = u.manager_id \
         WHERE u.email = 'eve@corp.example'",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(
        eve,
        (
            "Research".to_owned(),
            "ana.lopez@corp.example".to_owned(),
            "AI pilot (wave 2)".to_owned()
        )
    );

    // A broken export changes nothing, names the row, and is logged as a failed run.
    let mut broken = export(true);
    broken["users"][0]["groups"] = serde_json::json!(["00g-missing"]);
    broken["users"][0]["status"] = "inactive".into();
    let bad = write_export(dir.path(), "broken.json", &broken);
    let output = aigate(
        &["directory", "import", bad.to_str().unwrap(), "-c", config],
        "",
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("users[0] (Ana.Lopez@corp.example): group \"00g-missing\""),
        "{stderr}"
    );
    let status: String =
        sqlx::query_scalar("SELECT status FROM users WHERE external_id = '00u-ana'")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(status, "active");
    let runs: Vec<(String, i64, i64, i64, Option<String>)> = sqlx::query_as(
        "SELECT l.status, l.records_fetched, l.records_created, l.records_updated, l.error_message \
         FROM integration_sync_logs l ORDER BY l.sync_started_at",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    let summary: Vec<_> = runs.iter().map(|r| (r.0.as_str(), r.1, r.2, r.3)).collect();
    assert_eq!(
        summary,
        vec![
            ("success", 10, 10, 0),
            ("success", 10, 0, 10),
            ("success", 2, 2, 1),
            ("failure", 10, 0, 0)
        ]
    );
    assert!(runs[3].4.as_deref().unwrap().contains("00g-missing"));
    let integrations: Vec<(String, String, String)> =
        sqlx::query_as("SELECT name, provider, last_sync_status FROM integrations ORDER BY name")
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert_eq!(
        integrations,
        vec![
            (
                "Okta test tenant".to_owned(),
                "okta".to_owned(),
                "failure".to_owned()
            ),
            (
                "directory import (file)".to_owned(),
                "file".to_owned(),
                "success".to_owned()
            ),
        ]
    );

    // The proxy password CLI stores an argon2 hash for a known user only.
    let output = aigate(
        &[
            "directory",
            "set-password",
            "eve@corp.example",
            "-c",
            config,
        ],
        "long enough pass\n",
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let output = aigate(
        &[
            "directory",
            "set-password",
            "ghost@corp.example",
            "-c",
            config,
        ],
        "long enough pass\n",
    );
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("no user with email ghost@corp.example")
    );
    let output = aigate(
        &[
            "directory",
            "set-password",
            "eve@corp.example",
            "-c",
            config,
        ],
        "short\n",
    );
    assert!(!output.status.success());
}

#[tokio::test]
async fn postgres_directory_import_feeds_the_user_and_device_context() {
    let url = crate::store::fresh_pg_database().await;
    let store = aigate::store::open(&url).await.unwrap();
    store.migrate().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = write_export(dir.path(), "okta.json", &export(true));
    let report = aigate::identity::directory::import(&*store, &path)
        .await
        .unwrap();
    assert_eq!((report.created, report.updated), (10, 0));
    let report = aigate::identity::directory::import(&*store, &path)
        .await
        .unwrap();
    assert_eq!((report.created, report.updated), (0, 10));

    let ana = store
        .user_context_by_email("ANA.LOPEZ@corp.example")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ana.department.as_deref(), Some("Engineering"));
    assert_eq!(ana.department_chain, vec!["Engineering", "Technology"]);
    assert_eq!(ana.groups, vec!["AI pilot"]);
    assert_eq!(ana.roles, vec!["ai_user"], "the expired role is not listed");
    assert_eq!(ana.allowed_ai_services, vec!["openai"]);
    assert_eq!(ana.prohibited_ai_services, vec!["deepseek"]);
    let device = store
        .device_by_ip("127.0.0.1".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(device.crown_jewel);
    assert_eq!(device.sensitivity.as_deref(), Some("high"));
    let owner = store
        .user_context_by_id(device.owner_id.unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(owner.email, "dev@corp.example");

    let hash = aigate::identity::hash_password("correct horse battery").unwrap();
    assert!(store
        .set_proxy_credential("carl@corp.example", &hash)
        .await
        .unwrap());
    let (user, stored) = store
        .proxy_credential("Carl@Corp.Example")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored, hash);
    assert_eq!(
        store
            .user_context_by_id(user)
            .await
            .unwrap()
            .unwrap()
            .employee_type
            .as_deref(),
        Some("contractor")
    );
    let runs: i64 = {
        use sqlx::Connection;
        let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query_scalar("SELECT count(*) FROM integration_sync_logs WHERE status = 'success'")
            .fetch_one(&mut db)
            .await
            .unwrap()
    };
    assert_eq!(runs, 2);

    // A critical violation by carl notifies him and his manager, once even when replayed.
    let mut denied = crate::store::decision(time::OffsetDateTime::now_utc(), true);
    denied.user_id = user;
    denied.user_email = Some("carl@corp.example".into());
    store
        .write_decisions(std::slice::from_ref(&denied))
        .await
        .unwrap();
    store
        .write_decisions(std::slice::from_ref(&denied))
        .await
        .unwrap();
    let notified: Vec<(String, String)> = {
        use sqlx::Connection;
        let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query_as(
            "SELECT u.email, n.severity FROM notifications n JOIN users u ON u.user_id = n.recipient_id ORDER BY u.email",
        )
        .fetch_all(&mut db)
        .await
        .unwrap()
    };
    assert_eq!(
        notified,
        vec![
            ("ana.lopez@corp.example".to_owned(), "critical".to_owned()),
            ("carl@corp.example".to_owned(), "critical".to_owned())
        ]
    );
    drop(store);
    crate::store::drop_pg_database(&url).await;
}

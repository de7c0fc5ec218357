//! A fleet: two gateway processes on one PostgreSQL. Whatever an administrator or a provisioning
//! system changes in the store through one of them (catalog, directory, bypass) reaches the other
//! within about a second, without a restart: the other's poll interval is set to a minute here, so
//! only the store's change notifications can make the deadline.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::store::{drop_pg_database, fresh_pg_database};
use crate::support::process::GatewayProcess;
use crate::support::{repo_path, sha256_hex, upstream_ca, Origin};

const TOKEN: &str = "fleet-admin-token";
/// How long a change may take to reach the other gateway ("about a second", with room for a
/// loaded CI machine).
const PROPAGATION: Duration = Duration::from_secs(3);

/// One gateway process with its own CA and addresses, on the shared store.
struct Member {
    process: GatewayProcess,
    dir: tempfile::TempDir,
}

impl Member {
    /// `identity`: extra lines of the `[identity]` section.
    async fn spawn(
        store_url: &str,
        upstream_ca_pem: &str,
        resolve: &[(&str, std::net::SocketAddr)],
        identity: &str,
    ) -> Member {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), store_url, upstream_ca_pem, resolve, identity);
        Member {
            process: GatewayProcess::start(&config).await,
            dir,
        }
    }

    fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("certs/ca.pem")).unwrap()
    }

    async fn admin(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let client = reqwest::Client::new();
        let mut request = client
            .request(
                method.parse().unwrap(),
                format!("http://{}{path}", self.process.admin),
            )
            .bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }

    /// A fresh client through this gateway's proxy (a kept-alive tunnel stays what it was).
    fn client(&self, credentials: Option<(&str, &str)>) -> reqwest::Client {
        let mut proxy = reqwest::Proxy::all(format!("http://{}", self.process.proxy)).unwrap();
        if let Some((user, password)) = credentials {
            proxy = proxy.basic_auth(user, password);
        }
        reqwest::Client::builder()
            .proxy(proxy)
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca_pem().as_bytes()).unwrap())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }
}

fn write_config(
    dir: &Path,
    store_url: &str,
    upstream_ca_pem: &str,
    resolve: &[(&str, std::net::SocketAddr)],
    identity: &str,
) -> std::path::PathBuf {
    let roots = dir.join("upstream-ca.pem");
    std::fs::write(&roots, upstream_ca_pem).unwrap();
    let mut config = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\ntoken_sha256 = [\"{token}\"]\n\
         [tls]\nca_dir = \"{dir}/certs\"\n\
         [store]\nurl = \"{store_url}\"\n\
         [audit]\njournal_dir = \"{dir}/journal\"\n\
         [catalog]\ndir = \"{catalog}\"\n\
         [policy]\ndir = \"{policies}\"\nreload_interval_secs = 60\n\
         [identity]\ncache_ttl_secs = 3600\n{identity}\n\
         [upstream]\nextra_roots = [\"{roots}\"]\n\
         [upstream.resolve]\n",
        token = sha256_hex(TOKEN),
        dir = dir.display(),
        catalog = repo_path("config/catalog").display(),
        policies = repo_path("config/policies").display(),
        roots = roots.display(),
    );
    for (host, addr) in resolve {
        config.push_str(&format!("\"{host}\" = \"{addr}\"\n"));
    }
    let path = dir.join("aigate.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// Polls `probe` until it holds, for at most `PROPAGATION`; says what it waited for otherwise.
async fn within_propagation<F, Fut>(what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + PROPAGATION;
    while !probe().await {
        assert!(
            Instant::now() < deadline,
            "not seen by the other gateway within {PROPAGATION:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_through_one_gateway_reaches_the_other_at_once() {
    let pg_url = fresh_pg_database().await;
    let ca = upstream_ca();
    let origin = Origin::start_tls(&ca, &["chatgpt.com"]).await;
    let resolve = [("chatgpt.com", origin.addr)];
    let a = Member::spawn(&pg_url, ca.cert_pem(), &resolve, "").await;
    let b = Member::spawn(&pg_url, ca.cert_pem(), &resolve, "").await;
    let chat = |member: &Member| {
        let client = member.client(None);
        async move {
            client
                .post("https://chatgpt.com/backend-api/conversation")
                .header("content-type", "application/json")
                .body(r#"{"messages":[{"content":{"parts":["hello"]}}]}"#)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };

    // The catalog: the shipped policies put unapproved ChatGPT under review on both.
    assert_ne!(chat(&a).await, 200);
    assert_ne!(chat(&b).await, 200);
    let (_, services) = a.admin("GET", "/admin/services?limit=200", None).await;
    let id = services["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["slug"] == "chatgpt")
        .unwrap()["service_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, mut chatgpt) = a.admin("GET", &format!("/admin/services/{id}"), None).await;
    chatgpt["approval_status"] = json!("approved");
    let (status, body) = a
        .admin("PUT", &format!("/admin/services/{id}"), Some(chatgpt))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        chat(&a).await,
        200,
        "the gateway that made the change allows at once"
    );
    within_propagation("ChatGPT approved", || async { chat(&b).await == 200 }).await;

    // The bypass: a permanent member added through A is tunnelled by B.
    let (status, body) = a
        .admin(
            "PUT",
            "/admin/bypass/permanent/pinned.example",
            Some(json!({"reason": "pinning app"})),
        )
        .await;
    assert!(status < 300, "{status} {body}");
    within_propagation("permanent bypass", || async {
        let (_, listing) = b.admin("GET", "/admin/bypass", None).await;
        listing.to_string().contains("pinned.example")
    })
    .await;

    drop((a, b));
    drop_pg_database(&pg_url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provisioned_password_is_accepted_by_every_gateway_at_once() {
    let pg_url = fresh_pg_database().await;
    let ca = upstream_ca();
    let origin = Origin::start_tls(&ca, &["chatgpt.com"]).await;
    let resolve = [("chatgpt.com", origin.addr)];
    let a = Member::spawn(
        &pg_url,
        ca.cert_pem(),
        &resolve,
        "require_proxy_auth = true",
    )
    .await;
    let b = Member::spawn(
        &pg_url,
        ca.cert_pem(),
        &resolve,
        "require_proxy_auth = true",
    )
    .await;
    let store = aigate::store::open(&pg_url).await.unwrap();
    let export = a.dir.path().join("export.json");
    std::fs::write(
        &export,
        json!({"users": [{"external_id": "00u-dana", "email": "dana@corp.example"}]}).to_string(),
    )
    .unwrap();
    aigate::identity::directory::import(&*store, &export)
        .await
        .unwrap();

    // Each gateway remembers that these credentials are wrong (identity cache, an hour here).
    let connect = |member: &Member| {
        let client = member.client(Some(("dana@corp.example", "correct horse battery")));
        async move {
            match client.get("https://chatgpt.com/").send().await {
                Ok(response) => response.status().as_u16(),
                // reqwest reports a refused CONNECT as an error without a status.
                Err(error) if format!("{error:?}").contains("ProxyAuthRequired") => 407,
                Err(error) => panic!("{error:?}"),
            }
        }
    };
    let refused_a = connect(&a).await;
    let refused_b = connect(&b).await;
    assert_eq!((refused_a, refused_b), (407, 407));

    // A provisioning system sets the password in the store, through neither gateway.
    let hash = aigate::identity::hash_password("correct horse battery").unwrap();
    store
        .set_proxy_credential("dana@corp.example", &hash)
        .await
        .unwrap();
    within_propagation("proxy password on A", || async { connect(&a).await != 407 }).await;
    within_propagation("proxy password on B", || async { connect(&b).await != 407 }).await;

    drop((a, b));
    drop_pg_database(&pg_url).await;
}

/// SQLite has no notifications: the gateway polls each part's revision, so a change made with
/// plain SQL (a provisioning job, an operator) is applied within `[policy] reload_interval_secs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_changes_made_behind_the_gateway_are_polled() {
    let ca = upstream_ca();
    let gateway = crate::support::TestGateway::start_with(&ca, &[], |config| {
        config.policy.reload_interval_secs = 1;
    })
    .await;
    let shared = &gateway.gateway.shared;
    gateway
        .execute("INSERT INTO intercept_bypass (host, reason) VALUES ('pinned.example', 'sql')")
        .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while shared
        .router
        .route(&shared.snapshot.load().catalog, "app.pinned.example")
        != aigate::front::route::Route::Tunnel
    {
        assert!(
            Instant::now() < deadline,
            "the SQL-added bypass was not polled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The catalog too: a service added with SQL is intercepted once polled.
    assert!(shared
        .snapshot
        .load()
        .catalog
        .service_for_host("acme-chat.example")
        .is_none());
    gateway
        .execute(
            "INSERT INTO ai_services (service_id, slug, name, signatures, risk_tier, risk_score, approval_status) \
             VALUES ('6f1c1c52-8a55-4ec4-9a59-0d0c3b0a7f01', 'acme-chat', 'Acme Chat', \
             '{\"domains\":[\"acme-chat.example\"]}', 'medium', 40, 'approved')",
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while shared
        .snapshot
        .load()
        .catalog
        .service_for_host("acme-chat.example")
        .is_none()
    {
        assert!(
            Instant::now() < deadline,
            "the SQL-added service was not polled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

//! SIEM and webhook export against real receivers: a local HTTP receiver that verifies the
//! webhook signature (stopped mid-stream and restarted), a Splunk HEC receiver checking the token,
//! and (`syslog`) rsyslog from apt receiving RFC 5424 over TCP and TLS.

mod syslog;

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aigate::audit::AuditEventRecord;
use aigate::export::ExportConfig;
use aigate::store::Store;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use sha2::Sha256;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::task::AbortHandle;

const SECRET: &str = "whsec-test-secret";
const HEC_TOKEN: &str = "hec-token-1234";

/// What a receiver saw.
#[derive(Default)]
struct Received {
    /// Event ids, in arrival order (duplicates kept).
    ids: Vec<String>,
    /// The verified request bodies.
    bodies: Vec<String>,
    /// Requests refused for a missing, stale or wrong signature or token.
    refused: usize,
}

/// An HTTP receiver that can be stopped (every connection cut) and started again on its port.
struct Receiver {
    addr: SocketAddr,
    received: Arc<Mutex<Received>>,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
    hec: bool,
}

impl Receiver {
    async fn start(hec: bool) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let receiver = Receiver {
            addr: listener.local_addr().unwrap(),
            received: Arc::default(),
            tasks: Arc::default(),
            hec,
        };
        receiver.serve(listener);
        receiver
    }

    fn serve(&self, listener: TcpListener) {
        let (received, tasks, hec) = (self.received.clone(), self.tasks.clone(), self.hec);
        let connections = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let received = received.clone();
                let connection = tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        receive(request, received.clone(), hec)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
                connections.lock().unwrap().push(connection.abort_handle());
            }
        });
        tasks.lock().unwrap().push(accept.abort_handle());
    }

    fn stop(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    async fn restart(&self) {
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        self.serve(listener);
    }

    fn ids(&self) -> Vec<String> {
        self.received.lock().unwrap().ids.clone()
    }

    fn bodies(&self) -> Vec<String> {
        self.received.lock().unwrap().bodies.clone()
    }

    fn refused(&self) -> usize {
        self.received.lock().unwrap().refused
    }

    /// Waits (bounded) until every id in `expected` has arrived.
    async fn wait_for(&self, expected: &BTreeSet<String>) {
        for _ in 0..600 {
            let seen: BTreeSet<String> = self.ids().into_iter().collect();
            if expected.is_subset(&seen) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let seen: BTreeSet<String> = self.ids().into_iter().collect();
        panic!(
            "missing after 30 s: {:?}",
            expected.difference(&seen).collect::<Vec<_>>()
        );
    }
}

/// Verifies as a webhook consumer would: HMAC-SHA256 over "<timestamp>.<body>" with the shared
/// secret, and a timestamp within five minutes (replays of old deliveries are refused).
fn webhook_verified(headers: &http::HeaderMap, body: &[u8]) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(timestamp), Some(signature)) =
        (header("x-aigate-timestamp"), header("x-aigate-signature"))
    else {
        return false;
    };
    let Ok(at) = timestamp.parse::<i64>() else {
        return false;
    };
    if (OffsetDateTime::now_utc().unix_timestamp() - at).abs() > 300 {
        return false;
    }
    let Some(hex_signature) = signature.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(signature) = hex::decode(hex_signature) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&signature).is_ok()
}

async fn receive(
    request: Request<Incoming>,
    received: Arc<Mutex<Received>>,
    hec: bool,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let ids: Option<Vec<String>> = if hec {
        let authorized = parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            == Some(&format!("Splunk {HEC_TOKEN}"));
        // HEC batches are JSON objects back to back, each an envelope around one event.
        authorized.then(|| {
            serde_json::Deserializer::from_slice(&body)
                .into_iter::<serde_json::Value>()
                .map(|envelope| {
                    let envelope = envelope.unwrap();
                    assert_eq!(envelope["sourcetype"], "aigate:event");
                    assert!(envelope["time"].as_f64().unwrap() > 1.7e9);
                    envelope["event"]["id"].as_str().unwrap().to_owned()
                })
                .collect()
        })
    } else {
        webhook_verified(&parts.headers, &body).then(|| {
            let batch: serde_json::Value = serde_json::from_slice(&body).unwrap();
            batch["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|event| event["id"].as_str().unwrap().to_owned())
                .collect()
        })
    };
    let mut received = received.lock().unwrap();
    let status = match ids {
        Some(ids) => {
            received.ids.extend(ids);
            received
                .bodies
                .push(String::from_utf8_lossy(&body).into_owned());
            200
        }
        None => {
            received.refused += 1;
            401
        }
    };
    Ok(Response::builder()
        .status(status)
        .body(Full::new(Bytes::from_static(b"{\"code\":0}")))
        .unwrap())
}

async fn open_store(dir: &Path) -> Arc<dyn Store> {
    let store = aigate::store::open(&format!("sqlite://{}", dir.join("aigate.db").display()))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    store
}

/// Stores `count` admin-change events and returns their export ids.
async fn admin_changes(store: &dyn Store, count: usize) -> BTreeSet<String> {
    let events: Vec<AuditEventRecord> = (0..count)
        .map(|n| {
            let mut event =
                AuditEventRecord::about_host("policy_updated", "info", "update", "example.com");
            event.target_type = Some("policy".to_owned());
            event.target_name = Some(format!("policy {n}"));
            event
        })
        .collect();
    store.write_audit_events(&events).await.unwrap();
    events
        .iter()
        .map(|event| format!("audit:{}", event.event_id))
        .collect()
}

/// Stores `count` violations (as the audit writer does for a decision with a violation) and
/// returns their export ids.
async fn violations(dir: &Path, count: usize) -> BTreeSet<String> {
    use sqlx::Connection;
    let url = format!("sqlite://{}", dir.join("aigate.db").display());
    let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let mut ids = BTreeSet::new();
    for _ in 0..count {
        let id = uuid::Uuid::new_v4();
        let at = OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        sqlx::query(
            "INSERT INTO violations (violation_id, decision_id, timestamp, user_id, violation_type, \
             policy_id, severity) VALUES ($1, $2, $3, $4, 'pii_detected', $5, 'high')",
        )
        .bind(id.to_string())
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(at)
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(uuid::Uuid::new_v4().to_string())
        .execute(&mut db)
        .await
        .unwrap();
        ids.insert(format!("violation:{id}"));
    }
    ids
}

fn entry(text: &str) -> ExportConfig {
    let entry: ExportConfig = toml::from_str(text).unwrap();
    aigate::export::validate_entries(std::slice::from_ref(&entry)).unwrap();
    entry
}

async fn scalar(dir: &Path, sql: &str) -> String {
    use sqlx::Connection;
    let url = format!("sqlite://{}", dir.join("aigate.db").display());
    let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query_scalar::<_, String>(sql)
        .fetch_one(&mut db)
        .await
        .unwrap()
}

async fn count_eventually(dir: &Path, sql: &str, at_least: i64) {
    for _ in 0..600 {
        if scalar(dir, sql).await.parse::<i64>().unwrap() >= at_least {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{sql} stayed below {at_least} for 30 s");
}

fn webhook_entry(receiver: &Receiver, dir: &Path, secret: &str) -> ExportConfig {
    entry(&format!(
        "name = \"soc-webhook\"\nkind = \"webhook\"\nurl = \"http://{}/hook\"\nsecret = \"{secret}\"\n\
         batch_size = 5\nmax_attempts = 1000\nretry_initial_ms = 20\nretry_max_ms = 200\n\
         poll_interval_ms = 50\nsettle_ms = 0\ndead_letter_dir = \"{}\"\n",
        receiver.addr,
        dir.join("dead").display()
    ))
}

#[tokio::test]
async fn webhook_delivery_survives_a_receiver_outage_and_an_exporter_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path()).await;
    let receiver = Receiver::start(false).await;
    let mut expected = admin_changes(store.as_ref(), 20).await;
    expected.extend(violations(dir.path(), 7).await);
    let exporter = tokio::spawn(aigate::export::run(
        vec![webhook_entry(&receiver, dir.path(), SECRET)],
        store.clone(),
    ));

    // Mid-stream: some batches are in, the receiver goes away while more events are stored.
    for _ in 0..600 {
        if receiver.ids().len() >= 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    receiver.stop();
    expected.extend(admin_changes(store.as_ref(), 20).await);
    expected.extend(violations(dir.path(), 6).await);
    count_eventually(
        dir.path(),
        "SELECT CAST(count(*) AS TEXT) FROM integration_sync_logs WHERE status = 'failure'",
        2,
    )
    .await;
    assert_eq!(
        scalar(dir.path(), "SELECT health_status FROM integrations").await,
        "degraded"
    );
    receiver.restart().await;
    receiver.wait_for(&expected).await;

    // The exporter restarts (a gateway restart): it resumes at its stored cursor.
    exporter.abort();
    let _ = exporter.await;
    let before_restart = receiver.ids().len();
    let later = admin_changes(store.as_ref(), 3).await;
    let exporter = tokio::spawn(aigate::export::run(
        vec![webhook_entry(&receiver, dir.path(), SECRET)],
        store.clone(),
    ));
    receiver.wait_for(&later).await;
    exporter.abort();
    expected.extend(later.iter().cloned());

    let ids = receiver.ids();
    let unique: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(unique, expected, "every event arrives, nothing else");
    // At-least-once: only the batch in flight when the receiver was cut can arrive twice.
    assert!(
        ids.len() - unique.len() <= 5,
        "{} duplicates",
        ids.len() - unique.len()
    );
    assert!(
        ids[before_restart..].iter().all(|id| later.contains(id)),
        "the restarted exporter re-sent delivered events"
    );
    assert_eq!(receiver.refused(), 0, "every delivery verified");
    assert_eq!(
        scalar(dir.path(), "SELECT health_status FROM integrations").await,
        "healthy"
    );
    let successes = scalar(
        dir.path(),
        "SELECT CAST(sum(records_created) AS TEXT) FROM integration_sync_logs WHERE status = 'success'",
    )
    .await;
    assert!(successes.parse::<usize>().unwrap() >= expected.len());
    assert!(!dir.path().join("dead").exists());
}

#[tokio::test]
async fn undeliverable_batches_go_to_the_dead_letter_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path()).await;
    let receiver = Receiver::start(false).await;
    let expected = admin_changes(store.as_ref(), 3).await;
    // The receiver refuses the signature made with another secret.
    let mut wrong = webhook_entry(&receiver, dir.path(), "not-the-shared-secret");
    wrong.max_attempts = 2;
    let exporter = tokio::spawn(aigate::export::run(vec![wrong], store.clone()));
    let file = dir.path().join("dead/soc-webhook.jsonl");
    for _ in 0..600 {
        if file.exists()
            && std::fs::read_to_string(&file).unwrap().lines().count() >= expected.len()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    exporter.abort();
    let dead: BTreeSet<String> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|line| {
            let line: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(line["attempts"], 2);
            assert!(!line.to_string().contains("not-the-shared-secret"));
            line["event"]["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(dead, expected);
    assert!(receiver.ids().is_empty());
    assert_eq!(receiver.refused(), 2);
    count_eventually(
        dir.path(),
        "SELECT CAST(count(*) AS TEXT) FROM integrations WHERE health_status = 'unhealthy'",
        1,
    )
    .await;
}

async fn hec_delivers_every_event_once(store: Arc<dyn Store>) {
    let receiver = Receiver::start(true).await;
    let expected = admin_changes(store.as_ref(), 7).await;
    let hec = entry(&format!(
        "name = \"splunk\"\nkind = \"splunk_hec\"\nurl = \"http://{}/services/collector/event\"\n\
         token = \"{HEC_TOKEN}\"\nbatch_size = 3\npoll_interval_ms = 50\nsettle_ms = 0\n",
        receiver.addr
    ));
    let exporter = tokio::spawn(aigate::export::run(vec![hec], store.clone()));
    receiver.wait_for(&expected).await;
    exporter.abort();
    assert_eq!(receiver.refused(), 0);
    assert_eq!(receiver.ids().len(), expected.len());
}

#[tokio::test]
async fn splunk_hec_receives_enveloped_events_with_the_token() {
    let dir = tempfile::tempdir().unwrap();
    hec_delivers_every_event_once(open_store(dir.path()).await).await;
}

#[tokio::test]
async fn the_exporter_keeps_its_cursor_and_sync_logs_in_postgresql() {
    let url = crate::store::fresh_pg_database().await;
    let store = aigate::store::open(&url).await.unwrap();
    store.migrate().await.unwrap();
    hec_delivers_every_event_once(store.clone()).await;
    let rows = store.load_integrations(&["siem"]).await.unwrap();
    assert_eq!(rows.len(), 1);
    // The exporter was stopped once the receiver had everything; the last batch's log and
    // cursor may or may not have been written by then, the first batch's were.
    assert!(rows[0].health_status.as_deref() == Some("healthy"));
    assert!(rows[0].health_check_at.is_some());
    assert_eq!(rows[0].last_sync_status.as_deref(), Some("success"));
    let cursor = store
        .export_cursor(
            rows[0].integration_id,
            aigate::store::export::ExportSource::AuditEvents,
        )
        .await
        .unwrap();
    assert!(cursor.is_some());
}

/// Waits (bounded) until an event of `kind` has arrived; returns the ids seen so far.
async fn wait_for_kind(receiver: &Receiver, store_dir: &Path, kind: &str) {
    let sql =
        format!("SELECT CAST(count(*) AS TEXT) FROM audit_events WHERE event_type = '{kind}'");
    count_eventually(store_dir, &sql, 1).await;
    let ids: BTreeSet<String> = {
        use sqlx::Connection;
        let url = format!("sqlite://{}", store_dir.join("aigate.db").display());
        let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query_scalar::<_, String>(&format!(
            "SELECT 'audit:' || event_id FROM audit_events WHERE event_type = '{kind}'"
        ))
        .fetch_all(&mut db)
        .await
        .unwrap()
        .into_iter()
        .collect()
    };
    receiver.wait_for(&ids).await;
}

#[tokio::test]
async fn integrations_managed_over_the_admin_api_export_the_gateways_own_admin_changes() {
    let ca = crate::support::upstream_ca();
    let gateway = crate::support::TestGateway::start(&ca, &[]).await;
    let dir = gateway.dir.path();
    let store = open_store(dir).await;
    let digest = aigate::admin::auth::token_sha256("token-admin");
    store
        .create_admin_token("export tester", "admin", &digest)
        .await
        .unwrap()
        .unwrap();
    let receiver = Receiver::start(false).await;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://{}{path}", gateway.gateway.admin_addr);

    let created = http
        .post(url("/admin/integrations"))
        .bearer_auth("token-admin")
        .json(&serde_json::json!({
            "name": "soc",
            "integration_type": "siem",
            "provider": "webhook",
            "webhook_url": format!("http://{}/hook", receiver.addr),
            "webhook_secret": SECRET,
            "config": {"poll_interval_ms": 50, "settle_ms": 0, "batch_size": 10},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: serde_json::Value = created.json().await.unwrap();
    let id = created["integration_id"].as_str().unwrap().to_owned();

    let listed = http
        .get(url("/admin/integrations"))
        .bearer_auth("token-admin")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !listed.contains(SECRET),
        "GET returned the secret: {listed}"
    );
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed["items"][0]["webhook_secret_set"], true);

    // The gateway's exporter delivers the creation itself, signed with the stored secret.
    wait_for_kind(&receiver, dir, "integration_changed").await;

    // A PUT without the secret keeps it: later changes still arrive verified.
    let updated = http
        .put(url(&format!("/admin/integrations/{id}")))
        .bearer_auth("token-admin")
        .json(&serde_json::json!({
            "name": "soc",
            "integration_type": "siem",
            "provider": "webhook",
            "webhook_url": format!("http://{}/hook", receiver.addr),
            "config": {"poll_interval_ms": 50, "settle_ms": 0, "batch_size": 3},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(updated.status(), 200);
    count_eventually(
        dir,
        "SELECT CAST(count(*) AS TEXT) FROM audit_events WHERE action = 'update_integration'",
        1,
    )
    .await;
    wait_for_kind(&receiver, dir, "integration_changed").await;
    assert_eq!(receiver.refused(), 0);
    let audit = scalar(
        dir,
        "SELECT group_concat(changes, ' ') FROM audit_events WHERE event_type = 'integration_changed'",
    )
    .await;
    assert!(!audit.contains(SECRET), "the audit trail holds the secret");

    let invalid = http
        .post(url("/admin/integrations"))
        .bearer_auth("token-admin")
        .json(&serde_json::json!({
            "name": "bad", "integration_type": "siem", "provider": "syslog", "config": {},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(invalid.status(), 400);
    assert!(invalid.text().await.unwrap().contains("address"));

    let deleted = http
        .delete(url(&format!("/admin/integrations/{id}")))
        .bearer_auth("token-admin")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn a_denied_request_reaches_the_webhook_as_a_violation_without_its_prompt() {
    let receiver = Receiver::start(false).await;
    let dead_letters = tempfile::tempdir().unwrap();
    let hook = webhook_entry(&receiver, dead_letters.path(), SECRET);
    let catalog =
        crate::policy::test_service("scorer", "scorer.example", "approved", &["social_scoring"]);
    let (gateway, _origin, _) =
        crate::policy::policy_gateway(&catalog, "scorer.example", &[], move |config| {
            config.export = vec![hook];
        })
        .await;
    let (status, _) = crate::policy::post_json(
        &gateway,
        "https://scorer.example/v1/chat/completions",
        r#"{"messages":[{"role":"user","content":"rate citizen 42"}]}"#,
    )
    .await;
    assert_eq!(status, 403);
    let ids: Vec<(String,)> = gateway
        .rows_eventually("SELECT 'violation:' || violation_id FROM violations", 1)
        .await;
    let expected: BTreeSet<String> = ids.into_iter().map(|(id,)| id).collect();
    receiver.wait_for(&expected).await;
    assert_eq!(receiver.refused(), 0);
    let delivered = receiver.bodies().join("\n");
    assert!(delivered.contains("prohibited_ai_practice"), "{delivered}");
    assert!(
        !delivered.contains("rate citizen"),
        "the prompt was exported"
    );
    gateway.gateway.shutdown().await;
}

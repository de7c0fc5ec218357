//! Bypasses of interception are scoped and decided: a learned bypass covers only the client app
//! that showed certificate pinning (and only when its machine trusts the gateway CA), a host the
//! policy denies is never tunnelled, and every bypassed tunnel is a decision row.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::support::{gateway_tls_config, sha256_hex, upstream_ca, Origin, TestGateway};

const TOKEN: &str = "bypass-admin-token";
const URL: &str = "https://api.openai.com/v1/models";

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A client on the loopback address `local` going through the proxy, trusting only `root_pem`.
fn client_from(gateway: &TestGateway, local: IpAddr, root_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(gateway.proxy_url()).unwrap())
        .local_address(local)
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(root_pem.as_bytes()).unwrap())
        .http1_only()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// A pinning app on `local`: it accepts only the origin's own CA.
async fn pinned_app(gateway: &TestGateway, local: IpAddr, origin_ca_pem: &str) -> bool {
    client_from(gateway, local, origin_ca_pem)
        .get(URL)
        .send()
        .await
        .is_ok()
}

async fn admin(gateway: &TestGateway, method: reqwest::Method, path: &str) -> reqwest::Response {
    reqwest::Client::new()
        .request(
            method,
            format!("http://{}{path}", gateway.gateway.admin_addr),
        )
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_learned_bypass_covers_only_the_pinning_app_on_a_machine_that_trusts_the_ca() {
    let ca = upstream_ca();
    let origin = Origin::start_tls(&ca, &["api.openai.com"]).await;
    let gateway = TestGateway::start_with(&ca, &[("api.openai.com", origin.addr)], |config| {
        config.admin.token_sha256 = vec![sha256_hex(TOKEN)];
    })
    .await;
    let (laptop, colleague, fresh) = (ip("127.0.0.1"), ip("127.0.0.2"), ip("127.0.0.3"));

    // A machine that never completed an intercepted handshake most likely lacks the CA: its
    // aborts are no evidence of pinning, however many.
    for _ in 0..4 {
        assert!(!pinned_app(&gateway, fresh, ca.cert_pem()).await);
    }
    assert!(gateway.gateway.shared.router.learned_bypass().is_empty());

    // The laptop trusts the gateway CA (an intercepted request succeeds), then its pinning app
    // rejects our leaf three times: that app is tunnelled.
    let trusting = client_from(&gateway, laptop, &gateway.ca_pem());
    assert_eq!(trusting.get(URL).send().await.unwrap().status(), 200);
    for attempt in 1..=3 {
        assert!(
            !pinned_app(&gateway, laptop, ca.cert_pem()).await,
            "attempt {attempt} must see our leaf"
        );
    }
    let mut tunnelled = false;
    for _ in 0..20 {
        if pinned_app(&gateway, laptop, ca.cert_pem()).await {
            tunnelled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(tunnelled, "the pinning app on the laptop must be tunnelled");

    // The same app on another machine is still intercepted, and so is that machine's traffic.
    assert!(
        !pinned_app(&gateway, colleague, ca.cert_pem()).await,
        "a bypass learned on one client must not tunnel another"
    );
    let other = client_from(&gateway, colleague, &gateway.ca_pem());
    assert_eq!(other.get(URL).send().await.unwrap().status(), 200);

    // The administrator sees the entry per client app, with its evidence.
    let listed: serde_json::Value = admin(&gateway, reqwest::Method::GET, "/admin/bypass")
        .await
        .json()
        .await
        .unwrap();
    let learned = listed["learned"].as_array().unwrap();
    assert_eq!(learned.len(), 1, "{listed}");
    assert_eq!(learned[0]["host"], "api.openai.com");
    assert_eq!(learned[0]["client"], "127.0.0.1");
    assert!(
        learned[0]["ja4"].as_str().unwrap().starts_with('t'),
        "{listed}"
    );
    assert!(learned[0]["learned_at"].is_string() && learned[0]["expires_at"].is_string());
    assert!(
        learned[0]["evidence"]
            .as_str()
            .unwrap()
            .contains("completed an intercepted handshake"),
        "{listed}"
    );

    // The bypassed tunnel is a decision, not classified.
    let rows: Vec<(String, bool, String, String, String)> = gateway
        .rows_eventually(
            "SELECT decision, content_classified, action, ip_address, resource_type FROM decisions \
             WHERE reason LIKE '%learned bypass%'",
            1,
        )
        .await;
    assert_eq!(
        rows[0],
        (
            "ALLOW".to_owned(),
            false,
            "access_ai_service".to_owned(),
            "127.0.0.1".to_owned(),
            "ai_service".to_owned()
        )
    );
    let events: Vec<(String,)> = gateway
        .rows_eventually(
            "SELECT event_data FROM audit_events WHERE event_type = 'intercept_bypass_learned'",
            1,
        )
        .await;
    assert!(events[0].0.contains("unknown_ca"), "{}", events[0].0);

    // Forgetting one client's entry: none for the colleague, the laptop's goes.
    let forget = "/admin/bypass/learned/api.openai.com";
    let only = |client: &str| format!("{forget}?client={client}");
    assert_eq!(
        admin(&gateway, reqwest::Method::DELETE, &only("127.0.0.2"))
            .await
            .status(),
        404
    );
    assert_eq!(
        admin(&gateway, reqwest::Method::DELETE, &only("nonsense"))
            .await
            .status(),
        400
    );
    assert_eq!(
        admin(&gateway, reqwest::Method::DELETE, &only("127.0.0.1"))
            .await
            .status(),
        204
    );
    assert!(!pinned_app(&gateway, laptop, ca.cert_pem()).await);
}

/// A raw CONNECT from `local`; returns the proxy's answer head.
async fn connect_from(
    gateway: &TestGateway,
    local: IpAddr,
    authority: &str,
) -> (TcpStream, String) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind((local, 0).into()).unwrap();
    let mut stream = socket.connect(gateway.gateway.proxy_addr).await.unwrap();
    stream
        .write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    (stream, String::from_utf8(head).unwrap())
}

#[tokio::test]
async fn a_prohibited_service_is_never_bypassed_and_is_refused_at_connect() {
    let ca = upstream_ca();
    let origin = Origin::start_tls(&ca, &["chat.deepseek.com", "api.openai.com"]).await;
    let hosts = [
        ("chat.deepseek.com", origin.addr),
        ("api.openai.com", origin.addr),
    ];
    let gateway = TestGateway::start_with(&ca, &hosts, |config| {
        config.intercept.bypass = vec!["chat.deepseek.com".into(), "api.openai.com".into()];
    })
    .await;

    let (mut refused, head) =
        connect_from(&gateway, ip("127.0.0.1"), "chat.deepseek.com:443").await;
    assert!(head.starts_with("HTTP/1.1 403 "), "{head}");
    let mut message = String::new();
    refused.read_to_string(&mut message).await.unwrap();
    assert!(message.contains("Blocked by policy"), "{message}");

    // An allowed service in the same bypass is tunnelled (the origin's own certificate).
    let pinned = client_from(&gateway, ip("127.0.0.1"), ca.cert_pem());
    assert_eq!(pinned.get(URL).send().await.unwrap().status(), 200);
    assert_eq!(
        origin.requests().len(),
        1,
        "only the allowed tunnel got through"
    );

    let mut rows: Vec<(String, bool, String, String)> = gateway
        .rows_eventually(
            "SELECT decision, content_classified, resource_url, reason FROM decisions",
            2,
        )
        .await;
    rows.sort();
    assert_eq!(rows[0].0, "ALLOW");
    assert!(!rows[0].1);
    assert!(rows[0].2.contains("api.openai.com"));
    assert!(rows[0].3.contains("configured bypass"), "{}", rows[0].3);
    assert_eq!(rows[1].0, "DENY");
    assert!(!rows[1].1);
    assert!(rows[1].2.contains("chat.deepseek.com"));
}

#[tokio::test]
async fn a_learned_bypass_of_a_prohibited_service_is_refused_at_connect() {
    let ca = upstream_ca();
    let origin = Origin::start_tls(&ca, &["chat.deepseek.com"]).await;
    let gateway = TestGateway::start(&ca, &[("chat.deepseek.com", origin.addr)]).await;
    let router = &gateway.gateway.shared.router;
    let laptop = ip("127.0.0.1");
    // Learned as a pinning app would be (the laptop trusts the CA); JA4 unknown to the CONNECT.
    router.note_completed_handshake(laptop);
    for _ in 0..3 {
        router.record_handshake_abort(laptop, Some("t13d_app"), "chat.deepseek.com", None);
    }
    assert_eq!(router.learned_bypass().len(), 1);
    let (_, head) = connect_from(&gateway, laptop, "chat.deepseek.com:443").await;
    assert!(head.starts_with("HTTP/1.1 403 "), "{head}");
    assert!(origin.requests().is_empty());
    let rows: Vec<(String, bool)> = gateway
        .rows_eventually("SELECT decision, content_classified FROM decisions", 1)
        .await;
    assert_eq!(rows, vec![("DENY".to_owned(), false)]);
}

/// CONNECT to the origin's IP literal, then TLS naming `sni` with a client that trusts the gateway
/// CA only, and one request.
async fn through_ip_literal(gateway: &TestGateway, origin: &Origin, sni: &str) -> String {
    let (stream, head) = connect_from(gateway, ip("127.0.0.1"), &origin.addr.to_string()).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let config = gateway_tls_config(&gateway.ca_pem(), rustls::crypto::ring::default_provider());
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from(sni.to_owned()).unwrap();
    let mut tls = connector
        .connect(name, stream)
        .await
        .expect("the gateway intercepts an IP-literal CONNECT whose SNI is an AI service");
    tls.write_all(
        format!("GET /v1/models HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut reply = String::new();
    let _ = tls.read_to_string(&mut reply).await;
    reply
}

#[tokio::test]
async fn a_connect_to_an_ip_literal_is_routed_by_the_sni() {
    let ca = upstream_ca();
    let origin = Origin::start_tls(&ca, &["api.openai.com", "chat.deepseek.com"]).await;
    // The origin is on loopback, which the destination policy refuses unless allowed.
    let gateway = TestGateway::start_with(&ca, &[], |config| {
        config.upstream.allow_networks = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;

    let reply = through_ip_literal(&gateway, &origin, "api.openai.com").await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert_eq!(origin.requests().len(), 1, "the upstream is the IP literal");
    let denied = through_ip_literal(&gateway, &origin, "chat.deepseek.com").await;
    assert!(denied.starts_with("HTTP/1.1 403"), "{denied}");
    assert_eq!(origin.requests().len(), 1);

    let mut rows: Vec<(String, String)> = gateway
        .rows_eventually("SELECT decision, resource_url FROM decisions", 2)
        .await;
    rows.sort();
    assert_eq!(
        rows,
        vec![
            (
                "ALLOW".to_owned(),
                "https://api.openai.com/v1/models".to_owned()
            ),
            (
                "DENY".to_owned(),
                "https://chat.deepseek.com/v1/models".to_owned()
            ),
        ]
    );
}

#[tokio::test]
async fn plain_requests_to_non_ai_hosts_are_not_ai_decisions() {
    let ca = upstream_ca();
    let origin = Origin::start_plain().await;
    let gateway = TestGateway::start(
        &ca,
        &[
            ("plain.example", origin.addr),
            ("chat.deepseek.com", origin.addr),
        ],
    )
    .await;
    let client = client_from(&gateway, ip("127.0.0.1"), ca.cert_pem());
    let page = client
        .get("http://plain.example/page")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let ai = client
        .get("http://chat.deepseek.com/")
        .send()
        .await
        .unwrap();
    assert_eq!(
        ai.status(),
        403,
        "plain HTTP to an AI service is still decided"
    );

    // The records are written in order: once the AI one is in, the plain one would be too.
    let rows: Vec<(String,)> = gateway
        .rows_eventually("SELECT resource_url FROM decisions", 1)
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rows_after: Vec<(String,)> = gateway
        .rows_eventually("SELECT resource_url FROM decisions", 1)
        .await;
    assert_eq!(rows, rows_after);
    assert_eq!(rows, vec![("http://chat.deepseek.com/".to_owned(),)]);
    assert_eq!(
        origin.requests().len(),
        1,
        "the plain request was forwarded"
    );
}

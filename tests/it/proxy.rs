//! The gateway core through real sockets: plain HTTP, blind tunnels, interception over h1 and h2,
//! the built-in block rule and malformed input.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{upstream_ca, Http, Origin, TestGateway};

#[tokio::test]
async fn absolute_form_http_is_proxied_in_origin_form() {
    let ca = upstream_ca();
    let origin = Origin::start_plain().await;
    let gateway = TestGateway::start(&ca, &[("plain.example", origin.addr)]).await;
    let client = gateway.client(ca.cert_pem(), Http::One);

    let response = client
        .get("http://plain.example:8080/hello?x=1")
        .header("proxy-authorization", "Basic dTpw")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers().get("alt-svc").is_none(),
        "Alt-Svc must be stripped"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["path"], "/hello");

    let seen = origin.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uri, "/hello?x=1", "origin must get origin-form");
    assert_eq!(seen[0].headers["host"], "plain.example:8080");
    assert!(seen[0].headers.get("proxy-authorization").is_none());
}

#[tokio::test]
async fn connect_to_a_non_catalog_host_is_a_blind_tunnel() {
    let ca = upstream_ca();
    let origin = Origin::start_tls(&ca, &["tunnel.example"]).await;
    let gateway = TestGateway::start(&ca, &[("tunnel.example", origin.addr)]).await;
    // The client trusts only the origin's CA: success proves it saw the origin's own certificate.
    let client = gateway.client(ca.cert_pem(), Http::Negotiate);

    let response = client
        .get("https://tunnel.example/data")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.version(),
        http::Version::HTTP_2,
        "ALPN passes through the tunnel"
    );
    assert!(
        response.headers().get("alt-svc").is_some(),
        "tunnels are not modified"
    );
    assert_eq!(origin.requests().len(), 1);

    // And a client that trusts only the gateway CA fails: nothing was intercepted.
    let intercept_only = gateway.client(&gateway.ca_pem(), Http::One);
    assert!(intercept_only
        .get("https://tunnel.example/data")
        .send()
        .await
        .is_err());
}

async fn intercepted_post(http: Http, body_len: usize, expect_version: http::Version) {
    let ca = upstream_ca();
    let origin = Origin::start_tls(&ca, &["api.openai.com"]).await;
    let gateway = TestGateway::start(&ca, &[("api.openai.com", origin.addr)]).await;
    // Trusting only the gateway CA proves the client got a leaf minted by the gateway.
    let client = gateway.client(&gateway.ca_pem(), http);

    let prompt: String = "Summarize the quarterly report. ".repeat(body_len / 32 + 1);
    let body = serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": &prompt[..body_len.min(prompt.len())]}]}).to_string();
    let response = client
        .post("https://api.openai.com/v1/chat/completions?stream=false")
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), expect_version);
    assert!(
        response.headers().get("alt-svc").is_none(),
        "Alt-Svc must be stripped"
    );
    let reply: serde_json::Value = response.json().await.unwrap();
    assert_eq!(reply["body_len"], body.len());

    let seen = origin.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert!(
        seen[0].uri.ends_with("/v1/chat/completions?stream=false"),
        "{}",
        seen[0].uri
    );
    assert_eq!(seen[0].body, body.as_bytes(), "body must arrive intact");
    assert_eq!(
        seen[0].version,
        http::Version::HTTP_2,
        "the upstream leg negotiates h2"
    );
}

#[tokio::test]
async fn intercepted_http1_post_reaches_upstream_intact() {
    intercepted_post(Http::One, 2 * 1024, http::Version::HTTP_11).await;
}

#[tokio::test]
async fn intercepted_http2_post_reaches_upstream_intact() {
    intercepted_post(Http::Negotiate, 2 * 1024, http::Version::HTTP_2).await;
}

#[tokio::test]
async fn upstream_http2_off_sends_every_request_over_http1() {
    let ca = upstream_ca();
    let origin = Origin::start_tls(&ca, &["api.openai.com"]).await;
    let gateway = TestGateway::start_with(&ca, &[("api.openai.com", origin.addr)], |config| {
        config.upstream.http2 = false;
    })
    .await;
    // An h2 client, so the downstream and upstream protocols differ.
    let client = gateway.client(&gateway.ca_pem(), Http::Negotiate);
    for _ in 0..3 {
        let response = client
            .post("https://api.openai.com/v1/chat/completions")
            .header("content-type", "application/json")
            .body(r#"{"messages":[{"role":"user","content":"hello"}]}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert_eq!(response.status(), 200);
    }
    let seen = origin.requests();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|r| r.version == http::Version::HTTP_11));
}

#[tokio::test]
async fn intercepted_large_bodies_beyond_the_replay_buffer_arrive_intact() {
    intercepted_post(Http::One, 300 * 1024, http::Version::HTTP_11).await;
    intercepted_post(Http::Negotiate, 300 * 1024, http::Version::HTTP_2).await;
}

#[tokio::test]
async fn bodies_beyond_the_inspection_cap_are_forwarded_whole() {
    let ca = upstream_ca();
    let origin = Origin::start_tls(&ca, &["api.openai.com"]).await;
    let gateway = TestGateway::start_with(&ca, &[("api.openai.com", origin.addr)], |config| {
        config.proxy.body_buffer_bytes = 100 * 1024;
    })
    .await;
    for http in [Http::One, Http::Negotiate] {
        let client = gateway.client(&gateway.ca_pem(), http);
        let body = vec![b'x'; 400 * 1024];
        let response = client
            .post("https://api.openai.com/v1/files")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let seen = origin.requests();
        assert_eq!(seen.last().unwrap().body.len(), body.len());
        assert_eq!(seen.last().unwrap().body, body);
    }
}

#[tokio::test]
async fn keep_alive_requests_on_one_intercepted_connection() {
    let ca = upstream_ca();
    let origin = Origin::start_tls(&ca, &["api.openai.com"]).await;
    let gateway = TestGateway::start(&ca, &[("api.openai.com", origin.addr)]).await;
    let client = gateway.client(&gateway.ca_pem(), Http::One);
    for i in 0..5 {
        let response = client
            .post("https://api.openai.com/v1/embeddings")
            .body(format!("{{\"input\":\"n{i}\"}}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(origin.requests().len(), 5);
}

#[tokio::test]
async fn prohibited_service_gets_a_403_and_the_upstream_sees_nothing() {
    let ca = upstream_ca();
    let origin = Origin::start_tls(&ca, &["api.deepseek.com", "chat.deepseek.com"]).await;
    let gateway = TestGateway::start(
        &ca,
        &[
            ("api.deepseek.com", origin.addr),
            ("chat.deepseek.com", origin.addr),
        ],
    )
    .await;
    for http in [Http::One, Http::Negotiate] {
        let client = gateway.client(&gateway.ca_pem(), http);
        let response = client
            .post("https://api.deepseek.com/chat/completions")
            .header("content-type", "application/json")
            .body(r#"{"model":"deepseek-chat","messages":[{"role":"user","content":"hi"}]}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403);
        let decision_id = response.headers()["x-aigate-decision-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let error: serde_json::Value = response.json().await.unwrap();
        assert_eq!(error["error"]["type"], "policy_violation");
        assert_eq!(error["error"]["decision_id"], decision_id);
        assert!(error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("DeepSeek"));

        let page = client
            .get("https://chat.deepseek.com/")
            .header("accept", "text/html,application/xhtml+xml")
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 403);
        assert!(page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        assert!(page.text().await.unwrap().contains("blocked"));
    }
    assert!(
        origin.requests().is_empty(),
        "a denied request must never reach the upstream"
    );
}

#[tokio::test]
async fn inner_host_must_match_the_connect_target() {
    let ca = upstream_ca();
    let origin = Origin::start_tls(&ca, &["api.openai.com"]).await;
    let gateway = TestGateway::start(&ca, &[("api.openai.com", origin.addr)]).await;
    let client = gateway.client(&gateway.ca_pem(), Http::One);
    let response = client
        .get("https://api.openai.com/v1/models")
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 421);
    assert!(origin.requests().is_empty());
}

async fn raw_exchange(gateway: &TestGateway, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(gateway.gateway.proxy_addr)
        .await
        .unwrap();
    stream.write_all(request).await.unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn malformed_requests_get_clear_errors_not_panics() {
    let ca = upstream_ca();
    let origin = Origin::start_tls(&ca, &["api.openai.com"]).await;
    let gateway = TestGateway::start(&ca, &[("api.openai.com", origin.addr)]).await;

    let garbage = raw_exchange(&gateway, b"\x00\x01\x02 garbage\r\n\r\n").await;
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage}");

    for target in [
        "api.openai.com",
        "api.openai.com:0",
        "api.openai.com:notaport",
        "exa$mple:443",
    ] {
        let reply = raw_exchange(
            &gateway,
            format!("CONNECT {target} HTTP/1.1\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(reply.starts_with("HTTP/1.1 400"), "{target}: {reply}");
    }

    let huge = format!(
        "GET http://x.example/ HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(40 * 1024)
    );
    let reply = raw_exchange(&gateway, huge.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");

    let relative = raw_exchange(&gateway, b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(relative.starts_with("HTTP/1.1 400"), "{relative}");
    assert!(relative.contains("absolute-form"), "{relative}");

    // Plain bytes where a ClientHello belongs: the CONNECT is accepted, then the connection closes.
    let not_tls = raw_exchange(
        &gateway,
        b"CONNECT api.openai.com:443 HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nHost: api.openai.com\r\n\r\n",
    )
    .await;
    assert_eq!(not_tls, "HTTP/1.1 200 Connection Established\r\n\r\n");
    assert!(origin.requests().is_empty());

    // The gateway still serves after all of that.
    let client = gateway.client(&gateway.ca_pem(), Http::One);
    assert_eq!(
        client
            .get("https://api.openai.com/v1/models")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn the_proxy_refuses_to_reach_its_own_listeners() {
    let ca = upstream_ca();
    let gateway = TestGateway::start(&ca, &[]).await;
    let admin = gateway.gateway.admin_addr;
    let proxy = gateway.gateway.proxy_addr;

    let reply = raw_exchange(
        &gateway,
        format!("CONNECT 127.0.0.1:{} HTTP/1.1\r\n\r\n", admin.port()).as_bytes(),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");
    let reply = raw_exchange(
        &gateway,
        format!("CONNECT localhost:{} HTTP/1.1\r\n\r\n", proxy.port()).as_bytes(),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");
    let reply = raw_exchange(
        &gateway,
        format!(
            "GET http://127.0.0.1:{}/metrics HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
            admin.port(),
            admin.port()
        )
        .as_bytes(),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");
}

#[tokio::test]
async fn curl_through_the_proxy_trusting_the_exported_ca() {
    let ca = upstream_ca();
    let origin = Origin::start_tls(&ca, &["api.anthropic.com"]).await;
    let gateway = TestGateway::start(&ca, &[("api.anthropic.com", origin.addr)]).await;
    let output = tokio::process::Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "20", "--proxy", &gateway.proxy_url(), "--cacert"])
        .arg(gateway.ca_pem_path())
        .args([
            "-H",
            "content-type: application/json",
            "-H",
            "anthropic-version: 2023-06-01",
            "--data",
            r#"{"model":"claude-sonnet-4","max_tokens":16,"messages":[{"role":"user","content":"hello"}]}"#,
            "https://api.anthropic.com/v1/messages",
        ])
        .output()
        .await
        .expect("curl must be installed (apt-get install curl)");
    assert!(
        output.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reply: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(reply["path"], "/v1/messages");
    assert_eq!(
        origin.requests()[0].headers["anthropic-version"],
        "2023-06-01"
    );
}

#[tokio::test]
async fn an_upstream_certificate_the_gateway_does_not_trust_is_refused() {
    let trusted = upstream_ca();
    let untrusted = upstream_ca();
    let impostor = Origin::start_tls(&untrusted, &["api.openai.com"]).await;
    let wrong_name = Origin::start_tls(&trusted, &["somewhere-else.example"]).await;
    for origin in [&impostor, &wrong_name] {
        let gateway = TestGateway::start(&trusted, &[("api.openai.com", origin.addr)]).await;
        let client = gateway.client(&gateway.ca_pem(), Http::One);
        let response = client
            .get("https://api.openai.com/v1/models")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 502);
        let message = response.text().await.unwrap();
        assert!(
            message.contains("certificate could not be verified"),
            "{message}"
        );
        assert!(
            origin.requests().is_empty(),
            "no request may be sent over an unverified connection"
        );
    }
}

#[tokio::test]
async fn a_denied_request_is_answered_without_resolving_the_service() {
    let ca = upstream_ca();
    // No resolve override and no network: any DNS lookup or connect attempt would end in a 502.
    let gateway = TestGateway::start(&ca, &[]).await;
    let client = gateway.client(&gateway.ca_pem(), Http::One);
    let response = client
        .post("https://api.deepseek.com/chat/completions")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let plain = gateway.client(ca.cert_pem(), Http::One);
    let response = plain.get("http://chat.deepseek.com/").send().await.unwrap();
    assert_eq!(
        response.status(),
        403,
        "plain HTTP to a prohibited service is denied too"
    );
}

#[tokio::test]
async fn busy_polling_threads_serve_intercepted_and_tunnelled_traffic_and_stop() {
    let ca = upstream_ca();
    let api = Origin::start_tls(&ca, &["api.openai.com"]).await;
    let other = Origin::start_tls(&ca, &["tunnel.example"]).await;
    let gateway = TestGateway::start_with(
        &ca,
        &[("api.openai.com", api.addr), ("tunnel.example", other.addr)],
        |config| {
            config.proxy.threads = 2;
            // Long enough that every request below lands inside a polling window.
            config.proxy.busy_poll_us = 10_000;
            // Connections the clients' pools still hold at shutdown get this long.
            config.proxy.drain_timeout_secs = 1;
        },
    )
    .await;

    // Keep-alive intercepted requests over h1 and h2: each answer must come while the serving
    // thread polls instead of parking, so a poller that starved the I/O driver would stall here.
    for http in [Http::One, Http::Negotiate] {
        let client = gateway.client(&gateway.ca_pem(), http);
        for i in 0..20 {
            let response = tokio::time::timeout(
                Duration::from_secs(10),
                client
                    .post("https://api.openai.com/v1/embeddings")
                    .body(format!("{{\"input\":\"n{i}\"}}"))
                    .send(),
            )
            .await
            .expect("an intercepted request stalled while its thread polled")
            .unwrap();
            assert_eq!(response.status(), 200);
        }
    }
    assert_eq!(api.requests().len(), 40);

    let tunnel = gateway.client(ca.cert_pem(), Http::Negotiate);
    let response = tunnel
        .get("https://tunnel.example/data")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(other.requests().len(), 1);
    drop(tunnel);

    // The pollers end with their threads: shutdown takes the drain timeout at most.
    tokio::time::timeout(Duration::from_secs(15), gateway.gateway.shutdown())
        .await
        .expect("shutdown hung with busy polling on");
}

//! The network edge through the real gateway: the destination policy (what the proxy may connect
//! to after resolution), loop detection, and how refusals are reported.
//!
//! The origins of the other tests listen on 127.0.0.1 and are reached through `[upstream]
//! resolve` overrides, which are the operator's own choice and not subject to the policy; the
//! test gateway keeps the default policy, so these tests see exactly what a deployment sees.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{upstream_ca, Origin, TestGateway};

/// A Redis stand-in: answers `+PONG` to anything and counts the connections it accepted.
struct Service {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl Service {
    async fn start(bind: &str) -> Service {
        let listener = TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buffer = [0u8; 64];
                    if socket.read(&mut buffer).await.unwrap_or(0) > 0 {
                        let _ = socket.write_all(b"+PONG\r\n").await;
                    }
                });
            }
        });
        Service { addr, accepted }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

async fn exchange(gateway: &TestGateway, request: &str) -> String {
    let mut stream = TcpStream::connect(gateway.gateway.proxy_addr)
        .await
        .unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response).into_owned()
}

/// CONNECTs `authority`, then sends `PING` through the tunnel if it opened.
async fn connect_and_ping(gateway: &TestGateway, authority: &str) -> String {
    let mut stream = TcpStream::connect(gateway.gateway.proxy_addr)
        .await
        .unwrap();
    let head = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut reply = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut reply))
        .await
        .unwrap()
        .unwrap();
    let mut reply = String::from_utf8_lossy(&reply[..read]).into_owned();
    if reply.starts_with("HTTP/1.1 200") {
        stream.write_all(b"PING\r\n").await.unwrap();
        let mut pong = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut pong))
            .await
            .unwrap()
            .unwrap();
        reply.push_str(&String::from_utf8_lossy(&pong[..read]));
    } else {
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
        reply.push_str(&String::from_utf8_lossy(&rest));
    }
    reply
}

fn assert_refused(reply: &str, reason: &str, what: &str) {
    assert!(reply.starts_with("HTTP/1.1 403"), "{what}: {reply}");
    let header = reply
        .lines()
        .find(|line| line.to_ascii_lowercase().starts_with("x-aigate-error:"))
        .unwrap_or_else(|| panic!("{what}: no X-Aigate-Error in {reply}"));
    assert!(header.contains(reason), "{what}: {header}");
}

/// A non-loopback address of this host, as a LAN client would reach it.
fn own_lan_address() -> IpAddr {
    nix::ifaddrs::getifaddrs()
        .unwrap()
        .filter_map(|interface| {
            interface
                .address?
                .as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
        })
        .find(|ip| !ip.is_loopback())
        .expect("the test host has a non-loopback IPv4 address")
}

#[tokio::test]
async fn connect_to_host_only_networks_is_refused_after_resolution() {
    let ca = upstream_ca();
    let redis = Service::start("127.0.0.1:0").await;
    let redis6 = Service::start("[::1]:0").await;
    let wildcard = Service::start("0.0.0.0:0").await;
    let gateway = TestGateway::start_with(&ca, &[], |config| {
        config.upstream.connect_timeout_secs = 1;
    })
    .await;

    let port = redis.addr.port();
    for (authority, reason) in [
        (format!("127.0.0.1:{port}"), "loopback"),
        (format!("localhost:{port}"), "loopback"),
        (format!("127.0.0.2:{port}"), "loopback"),
        (format!("[::ffff:127.0.0.1]:{port}"), "loopback"),
        (format!("[::1]:{}", redis6.addr.port()), "loopback"),
        ("169.254.169.254:80".to_owned(), "link_local"),
        ("[fe80::1]:80".to_owned(), "link_local"),
        (format!("0.0.0.0:{port}"), "unspecified"),
        (
            format!("{}:{}", own_lan_address(), wildcard.addr.port()),
            "own_address",
        ),
    ] {
        let reply = connect_and_ping(&gateway, &authority).await;
        assert_refused(&reply, reason, &authority);
        assert!(!reply.contains("PONG"), "{authority}: {reply}");
    }
    assert_eq!(redis.accepted(), 0, "nothing reached the loopback service");
    assert_eq!(redis6.accepted(), 0, "nothing reached the ::1 service");
    assert_eq!(
        wildcard.accepted(),
        0,
        "nothing reached the wildcard service"
    );
}

#[tokio::test]
async fn absolute_form_requests_to_loopback_apps_are_refused() {
    let ca = upstream_ca();
    let app = Origin::start_plain().await;
    let gateway = TestGateway::start(&ca, &[]).await;
    let port = app.addr.port();
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::ffff:127.0.0.1]:{port}"),
    ] {
        let reply = exchange(
            &gateway,
            &format!("GET http://{host}/admin HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        )
        .await;
        assert_refused(&reply, "loopback", &host);
    }
    assert!(app.requests().is_empty(), "the loopback app saw a request");
}

#[tokio::test]
async fn private_ranges_are_refused_when_configured() {
    let ca = upstream_ca();
    let gateway = TestGateway::start_with(&ca, &[], |config| {
        config.upstream.deny_private = true;
        config.upstream.connect_timeout_secs = 1;
    })
    .await;
    for authority in ["10.255.255.1:6379", "192.168.77.1:443", "[fd00::77]:443"] {
        let reply = connect_and_ping(&gateway, authority).await;
        assert_refused(&reply, "private", authority);
    }
}

#[tokio::test]
async fn overrides_and_the_allow_list_win_over_the_policy() {
    let ca = upstream_ca();
    let redis = Service::start("127.0.0.1:0").await;
    let allowed = Service::start("127.0.0.1:0").await;
    let allow = format!("{}/32", allowed.addr.ip());
    let gateway = TestGateway::start_with(&ca, &[("redis.internal", redis.addr)], |config| {
        config.upstream.allow_networks = vec![allow.parse().unwrap()];
    })
    .await;

    let reply = connect_and_ping(&gateway, "redis.internal:6379").await;
    assert!(
        reply.starts_with("HTTP/1.1 200") && reply.ends_with("+PONG\r\n"),
        "{reply}"
    );
    let reply = connect_and_ping(&gateway, &allowed.addr.to_string()).await;
    assert!(
        reply.starts_with("HTTP/1.1 200") && reply.ends_with("+PONG\r\n"),
        "{reply}"
    );
    // The allow entry is for 127.0.0.1 only, and never opens the gateway's own listeners.
    let reply = connect_and_ping(&gateway, &format!("127.0.0.2:{}", allowed.addr.port())).await;
    assert_refused(&reply, "loopback", "127.0.0.2");
    let admin = gateway.gateway.admin_addr;
    let reply = connect_and_ping(&gateway, &admin.to_string()).await;
    assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");
}

#[tokio::test]
async fn a_request_carrying_this_gateways_via_is_a_loop() {
    let ca = upstream_ca();
    let origin = Origin::start_plain().await;
    let gateway = TestGateway::start(&ca, &[("plain.example", origin.addr)]).await;

    let first = exchange(
        &gateway,
        "GET http://plain.example/a HTTP/1.1\r\nHost: plain.example\r\nVia: 1.0 corp-proxy\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    let seen = origin.requests();
    let via: Vec<&str> = seen[0]
        .headers
        .get_all("via")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    let ours = via.iter().find(|v| v.contains("aigate-")).copied();
    let ours = ours.unwrap_or_else(|| panic!("no aigate Via upstream: {via:?}"));
    assert!(via.iter().any(|v| v.contains("corp-proxy")), "{via:?}");

    // The same request coming back (an origin or another proxy pointing at this gateway).
    let looped = exchange(
        &gateway,
        &format!("GET http://plain.example/b HTTP/1.1\r\nHost: plain.example\r\nVia: 1.1 other, {ours}\r\n\r\n"),
    )
    .await;
    assert!(looped.starts_with("HTTP/1.1 508"), "{looped}");
    let connect = exchange(
        &gateway,
        &format!("CONNECT plain.example:80 HTTP/1.1\r\nVia: {ours}\r\n\r\n"),
    )
    .await;
    assert!(connect.starts_with("HTTP/1.1 508"), "{connect}");
    assert_eq!(
        origin.requests().len(),
        1,
        "the looped requests were not forwarded"
    );

    // Another aigate instance's entry is not ours.
    let other = exchange(
        &gateway,
        "GET http://plain.example/c HTTP/1.1\r\nHost: plain.example\r\nVia: 1.1 aigate-0000000000000000\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(other.starts_with("HTTP/1.1 200"), "{other}");
}

#[tokio::test]
async fn an_unresolvable_host_says_why_in_a_header_and_the_reason_phrase() {
    let ca = upstream_ca();
    let gateway = TestGateway::start(&ca, &[]).await;
    let reply = exchange(
        &gateway,
        "GET http://no-such-host.invalid/simple/ HTTP/1.1\r\nHost: no-such-host.invalid\r\n\r\n",
    )
    .await;
    let status_line = reply.lines().next().unwrap_or_default();
    assert!(status_line.starts_with("HTTP/1.1 502 "), "{reply}");
    assert!(
        status_line.contains("no-such-host.invalid"),
        "{status_line}"
    );
    let header = reply
        .lines()
        .find(|line| line.to_ascii_lowercase().starts_with("x-aigate-error:"))
        .unwrap_or_else(|| panic!("no X-Aigate-Error: {reply}"));
    assert!(
        header.contains("cannot resolve no-such-host.invalid"),
        "{header}"
    );
}

#[tokio::test]
async fn the_admin_api_takes_the_bearer_scheme_in_any_case_and_the_dashboard_has_a_csp() {
    use sha2::Digest;

    let ca = upstream_ca();
    let gateway = TestGateway::start(&ca, &[]).await;
    let digest = aigate::admin::auth::token_sha256("token-readonly");
    assert!(gateway
        .gateway
        .shared
        .store
        .create_admin_token("readonly tester", "readonly", &digest)
        .await
        .unwrap()
        .is_some());
    let http = reqwest::Client::new();
    let base = format!("http://{}", gateway.gateway.admin_addr);
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR "] {
        let response = http
            .get(format!("{base}/admin/policies"))
            .header("authorization", format!("{scheme} token-readonly"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{scheme:?}");
    }
    for refused in [
        "Basic token-readonly",
        "bearer",
        "bearertoken-readonly",
        "bearer wrong",
    ] {
        let response = http
            .get(format!("{base}/admin/policies"))
            .header("authorization", refused)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{refused:?}");
    }

    let page = http
        .get(format!("{base}/"))
        .bearer_auth("token-readonly")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    let html = page.text().await.unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("script-src"),
        "{csp}"
    );
    // The policy lets the page's own stylesheet apply, and nothing inline beside it.
    let style = html
        .split_once("<style>")
        .and_then(|(_, rest)| rest.split_once("</style>"))
        .map(|(style, _)| style)
        .unwrap();
    use base64::Engine;
    let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(style));
    assert!(csp.contains(&format!("style-src 'sha256-{hash}'")), "{csp}");
    assert!(
        !html.contains("style=\"") && !html.contains("<script"),
        "{html}"
    );
}

#[tokio::test]
async fn a_chunk_size_overflow_is_a_bad_request() {
    let ca = upstream_ca();
    let origin = Origin::start_plain().await;
    let gateway = TestGateway::start(&ca, &[("plain.example", origin.addr)]).await;
    let reply = exchange(
        &gateway,
        "POST http://plain.example/upload HTTP/1.1\r\nHost: plain.example\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFFFFFF\r\nabc\r\n0\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(origin.requests().is_empty());
}

/// Uploads a 1.5 MiB body with curl, which sends `Expect: 100-continue` for bodies over 1 MiB
/// and is told to wait 60 s for the interim answer: only a gateway that answers `100 Continue`
/// itself lets it finish within its 30 s limit.
async fn curl_upload(gateway: &TestGateway, url: &str) -> String {
    let body = gateway.dir.path().join("upload.json");
    let text = "hello world ".repeat(1536 * 1024 / 12);
    std::fs::write(
        &body,
        format!("{{\"messages\":[{{\"role\":\"user\",\"content\":\"{text}\"}}]}}"),
    )
    .unwrap();
    let output = tokio::process::Command::new("curl")
        .args(["-v", "-sS", "--http1.1", "--fail", "--max-time", "30"])
        .args([
            "--expect100-timeout",
            "60",
            "--proxy",
            &gateway.proxy_url(),
            "--cacert",
        ])
        .arg(gateway.ca_pem_path())
        .args(["-H", "content-type: application/json", "--data-binary"])
        .arg(format!("@{}", body.display()))
        .arg(url)
        .output()
        .await
        .expect("curl must be installed (apt-get install curl)");
    let verbose = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "curl failed: {verbose}");
    verbose
}

#[tokio::test]
async fn expect_100_continue_is_answered_by_the_gateway_in_plain_http_and_inside_tls() {
    let ca = upstream_ca();
    let plain = Origin::start_plain().await;
    let tls = Origin::start_tls(&ca, &["api.openai.com"]).await;
    let gateway = TestGateway::start(
        &ca,
        &[("plain.example", plain.addr), ("api.openai.com", tls.addr)],
    )
    .await;
    for (url, origin) in [
        ("http://plain.example/upload", &plain),
        ("https://api.openai.com/v1/chat/completions", &tls),
    ] {
        let verbose = curl_upload(&gateway, url).await;
        assert!(
            verbose.contains("> Expect: 100-continue"),
            "{url}: {verbose}"
        );
        assert!(
            verbose.contains("< HTTP/1.1 100 Continue"),
            "{url}: {verbose}"
        );
        let seen = origin.requests();
        let upload = seen.last().unwrap();
        assert!(
            upload.body.len() > 1024 * 1024,
            "{url}: the whole body arrives"
        );
        assert!(
            upload.headers.get("expect").is_none(),
            "{url}: Expect was passed on"
        );
    }
}

/// CONNECT api.openai.com through the gateway and an HTTP/1.1 TLS session on the minted leaf.
async fn intercepted(gateway: &TestGateway) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut stream = TcpStream::connect(gateway.gateway.proxy_addr)
        .await
        .unwrap();
    stream
        .write_all(b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n\r\n")
        .await
        .unwrap();
    let mut established = [0u8; 39];
    stream.read_exact(&mut established).await.unwrap();
    assert_eq!(&established, b"HTTP/1.1 200 Connection Established\r\n\r\n");
    let config = crate::support::gateway_tls_config(
        &gateway.ca_pem(),
        rustls::crypto::ring::default_provider(),
    );
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("api.openai.com").unwrap();
    connector.connect(name, stream).await.unwrap()
}

/// Reads one response head and its Content-Length body from `stream`.
async fn read_response<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> String {
    let mut response = Vec::new();
    let mut byte = [0u8; 1];
    while !response.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        response.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&response).into_owned();
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.unwrap();
    head + &String::from_utf8_lossy(&body)
}

/// Sends `drip` one byte every 100 ms (at most 15 s of it) while watching for the gateway to
/// answer or close; returns what it answered, or `None` when it never did.
async fn drip_until_closed(
    stream: tokio_rustls::client::TlsStream<TcpStream>,
    drip: &[u8],
) -> Option<String> {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let dripping = async {
        for byte in drip.iter().cycle().take(150) {
            if writer.write_all(&[*byte]).await.is_err() || writer.flush().await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Dripped for 15 s without being cut off: wait no more.
        std::future::pending::<()>().await;
    };
    let watching = async {
        let mut answer = Vec::new();
        let _ = reader.read_to_end(&mut answer).await;
        String::from_utf8_lossy(&answer).into_owned()
    };
    tokio::select! {
        answer = watching => Some(answer),
        () = dripping => None,
        () = tokio::time::sleep(Duration::from_secs(16)) => None,
    }
}

fn slow_client_limits(config: &mut aigate::config::Config) {
    config.proxy.header_read_timeout_secs = 1;
    config.proxy.min_body_rate_bytes_per_sec = 1024;
    config.proxy.body_rate_grace_secs = 1;
}

#[tokio::test]
async fn a_dripped_head_inside_tls_is_cut_off_on_every_keep_alive_request() {
    let ca = upstream_ca();
    let origin = Origin::start_tls(&ca, &["api.openai.com"]).await;
    let gateway =
        TestGateway::start_with(&ca, &[("api.openai.com", origin.addr)], slow_client_limits).await;

    // First request of the connection, dripped.
    let mut tls = intercepted(&gateway).await;
    tls.write_all(b"GET /v1/models HTTP/1.1\r\nHost: api.openai.com\r\n")
        .await
        .unwrap();
    let answer = drip_until_closed(tls, b"X-Drip: aaaa\r\n").await;
    let answer = answer.expect("a dripped head must be cut off by the head deadline");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );

    // A keep-alive request after a normal one.
    let mut tls = intercepted(&gateway).await;
    tls.write_all(b"GET /v1/models HTTP/1.1\r\nHost: api.openai.com\r\n\r\n")
        .await
        .unwrap();
    let first = read_response(&mut tls).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    tls.write_all(b"GET /v1/models HTTP/1.1\r\nHost: api.openai.com\r\n")
        .await
        .unwrap();
    let answer = drip_until_closed(tls, b"X-Drip: aaaa\r\n").await;
    let answer = answer.expect("the second head is under the deadline too");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    assert_eq!(origin.requests().len(), 1);
}

#[tokio::test]
async fn a_slow_body_inside_tls_is_cut_off() {
    let ca = upstream_ca();
    let origin = Origin::start_tls(&ca, &["api.openai.com"]).await;
    let gateway =
        TestGateway::start_with(&ca, &[("api.openai.com", origin.addr)], slow_client_limits).await;
    let mut tls = intercepted(&gateway).await;
    tls.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"messages\":\"",
    )
    .await
    .unwrap();
    let answer = drip_until_closed(tls, b"aaaaaaaaaa").await;
    assert!(
        answer.is_some(),
        "a 100 B/s body must be cut off by the minimum rate"
    );
    assert!(origin.requests().is_empty());
}

#[tokio::test]
async fn a_head_over_max_header_bytes_inside_tls_gets_431() {
    let ca = upstream_ca();
    let origin = Origin::start_tls(&ca, &["api.openai.com"]).await;
    // HTTP/1.1 upstream: the test origin then takes heads far larger than the gateway's limit,
    // so the 431 can only be the gateway's.
    let gateway = TestGateway::start_with(&ca, &[("api.openai.com", origin.addr)], |config| {
        config.upstream.http2 = false;
    })
    .await;
    let mut tls = intercepted(&gateway).await;
    let head = format!(
        "GET /v1/models HTTP/1.1\r\nHost: api.openai.com\r\nX-Big: {}\r\n\r\n",
        "a".repeat(40 * 1024)
    );
    let _ = tls.write_all(head.as_bytes()).await;
    let answer = read_response(&mut tls).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(answer.ends_with("Request head too large.\n"), "{answer}");
    assert!(origin.requests().is_empty());

    // A large head within the limit is served.
    let mut tls = intercepted(&gateway).await;
    let head = format!(
        "GET /v1/models HTTP/1.1\r\nHost: api.openai.com\r\nX-Big: {}\r\n\r\n",
        "a".repeat(30 * 1024)
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    let answer = read_response(&mut tls).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn one_client_cannot_hold_more_than_its_connections() {
    let ca = upstream_ca();
    let origin = Origin::start_plain().await;
    let gateway = TestGateway::start_with(&ca, &[("plain.example", origin.addr)], |config| {
        config.proxy.max_connections_per_client = 2;
    })
    .await;
    let first = TcpStream::connect(gateway.gateway.proxy_addr)
        .await
        .unwrap();
    let _second = TcpStream::connect(gateway.gateway.proxy_addr)
        .await
        .unwrap();
    // Both are accepted (and idle) before the third arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let third = exchange(
        &gateway,
        "GET http://plain.example/ HTTP/1.1\r\nHost: plain.example\r\n\r\n",
    )
    .await;
    assert!(third.starts_with("HTTP/1.1 503"), "{third}");
    assert!(
        third.contains("Too many connections from this client"),
        "{third}"
    );

    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let again = exchange(
        &gateway,
        "GET http://plain.example/ HTTP/1.1\r\nHost: plain.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(again.starts_with("HTTP/1.1 200"), "{again}");
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut frame = vec![length[1], length[2], length[3], kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// CONNECT api.openai.com through the gateway and a TLS session that negotiated h2.
async fn intercepted_h2(gateway: &TestGateway) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut stream = TcpStream::connect(gateway.gateway.proxy_addr)
        .await
        .unwrap();
    stream
        .write_all(b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n\r\n")
        .await
        .unwrap();
    let mut established = [0u8; 39];
    stream.read_exact(&mut established).await.unwrap();
    let mut config = crate::support::gateway_tls_config(
        &gateway.ca_pem(),
        rustls::crypto::ring::default_provider(),
    );
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("api.openai.com").unwrap();
    let tls = connector.connect(name, stream).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(b"h2".as_slice()));
    tls
}

#[tokio::test]
async fn a_dripped_h2_header_block_inside_tls_is_cut_off() {
    let ca = upstream_ca();
    let origin = Origin::start_tls(&ca, &["api.openai.com"]).await;
    let gateway =
        TestGateway::start_with(&ca, &[("api.openai.com", origin.addr)], slow_client_limits).await;
    let mut tls = intercepted_h2(&gateway).await;
    let mut start = H2_PREFACE.to_vec();
    start.extend(h2_frame(0x4, 0, 0, &[]));
    // A HEADERS frame (END_STREAM | END_HEADERS, stream 1) announcing a 16,000-byte header
    // block, whose bytes then come one every 100 ms.
    let mut headers = h2_frame(0x1, 0x1 | 0x4, 1, &[]);
    headers[..3].copy_from_slice(&16_000u32.to_be_bytes()[1..]);
    start.extend(headers);
    tls.write_all(&start).await.unwrap();
    let answer = drip_until_closed(tls, b"a").await;
    assert!(
        answer.is_some(),
        "a dripped h2 header block must be cut off by the head deadline"
    );
    assert!(origin.requests().is_empty());
}

#[tokio::test]
async fn h2_clients_are_told_the_header_list_and_stream_limits_and_held_to_them() {
    let ca = upstream_ca();
    let origin = Origin::start_tls(&ca, &["api.openai.com"]).await;
    let gateway = TestGateway::start_with(&ca, &[("api.openai.com", origin.addr)], |config| {
        config.proxy.h2_max_concurrent_streams = 7;
        config.upstream.http2 = false;
    })
    .await;
    let mut tls = intercepted_h2(&gateway).await;
    let mut start = H2_PREFACE.to_vec();
    start.extend(h2_frame(0x4, 0, 0, &[]));
    tls.write_all(&start).await.unwrap();
    // The server's first frame is its SETTINGS.
    let mut header = [0u8; 9];
    tls.read_exact(&mut header).await.unwrap();
    assert_eq!(header[3], 0x4, "SETTINGS first");
    let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
    let mut payload = vec![0u8; length];
    tls.read_exact(&mut payload).await.unwrap();
    let settings: std::collections::HashMap<u16, u32> = payload
        .chunks(6)
        .map(|s| {
            (
                u16::from_be_bytes([s[0], s[1]]),
                u32::from_be_bytes([s[2], s[3], s[4], s[5]]),
            )
        })
        .collect();
    assert_eq!(settings.get(&0x3), Some(&7), "MAX_CONCURRENT_STREAMS");
    assert_eq!(
        settings.get(&0x6),
        Some(&(32 * 1024)),
        "MAX_HEADER_LIST_SIZE"
    );

    // A 40 KiB header, accepted by pingora's own 64 KiB default, is refused.
    let (code, verbose) = curl_h2(
        &gateway,
        &["-H", &format!("X-Big: {}", "a".repeat(40 * 1024))],
        "https://api.openai.com/v1/models",
    )
    .await;
    assert_ne!(code, "200", "{verbose}");
    assert!(origin.requests().is_empty(), "{verbose}");
    let (code, verbose) = curl_h2(
        &gateway,
        &["-H", &format!("X-Big: {}", "a".repeat(30 * 1024))],
        "https://api.openai.com/v1/models",
    )
    .await;
    assert_eq!(
        code, "200",
        "a large header list within the limit: {verbose}"
    );
}

/// Runs curl over h2 through the gateway (at most 20 s): the status it got and its stderr.
async fn curl_h2(gateway: &TestGateway, args: &[&str], url: &str) -> (String, String) {
    let output = tokio::process::Command::new("curl")
        .args(["-v", "-sS", "--http2", "--max-time", "20"])
        .args(["-o", "/dev/null", "-w", "%{http_code}"])
        .args(["--proxy", &gateway.proxy_url(), "--cacert"])
        .arg(gateway.ca_pem_path())
        .args(args)
        .arg(url)
        .output()
        .await
        .expect("curl must be installed (apt-get install curl)");
    let verbose = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        verbose.contains("ALPN: server accepted h2"),
        "curl did not speak h2 to the gateway: {verbose}"
    );
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        verbose,
    )
}

#[tokio::test]
async fn an_h2_body_slower_than_the_minimum_rate_gets_408() {
    let ca = upstream_ca();
    let origin = Origin::start_tls(&ca, &["api.openai.com"]).await;
    let gateway =
        TestGateway::start_with(&ca, &[("api.openai.com", origin.addr)], slow_client_limits).await;
    // hyper's h2 client, its body fed at 100 B/s against a minimum of 1,024 B/s after a 1 s
    // grace. (curl's `--limit-rate` sends a whole buffer first, which buys its size in seconds
    // at the minimum rate; and curl 7.88 drops an early h2 answer to an upload.)
    let tls = intercepted_h2(&gateway).await;
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let (feed, chunks) = tokio::sync::mpsc::channel::<bytes::Bytes>(1);
    let body = http_body_util::StreamBody::new(Box::pin(futures::stream::unfold(
        chunks,
        |mut chunks| async move {
            let chunk = chunks.recv().await?;
            Some((
                Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(chunk)),
                chunks,
            ))
        },
    )));
    let request = http::Request::post("https://api.openai.com/v1/chat/completions")
        .header("content-type", "application/json")
        .body(body)
        .unwrap();
    let feeding = tokio::spawn(async move {
        let _ = feed
            .send(bytes::Bytes::from_static(b"{\"messages\":\""))
            .await;
        for _ in 0..150 {
            if feed
                .send(bytes::Bytes::from_static(b"aaaaaaaaaa"))
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Dripped for 15 s unanswered: the body stays open, so only the gateway can end it.
        std::future::pending::<()>().await;
    });
    let response = tokio::time::timeout(Duration::from_secs(20), sender.send_request(request))
        .await
        .expect("a 100 B/s h2 body must be answered once the grace is over")
        .unwrap();
    feeding.abort();
    assert_eq!(response.status(), 408);
    assert!(origin.requests().is_empty());
}

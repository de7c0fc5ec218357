//! Which CONNECTs are intercepted: catalog, extra hosts, bypass, `mode = "all"`, and the
//! connection limit (the learned bypass for certificate-pinning apps: `bypass.rs`).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{gateway_tls_config, upstream_ca, Http, Origin, TestGateway};

/// Does a client that trusts only the gateway CA get through (intercepted), and does one that
/// trusts only the origin CA get through (tunnelled)?
async fn routed(gateway: &TestGateway, origin_ca_pem: &str, url: &str) -> (bool, bool) {
    let intercepted = gateway
        .client(&gateway.ca_pem(), Http::One)
        .get(url)
        .send()
        .await
        .is_ok();
    let tunnelled = gateway
        .client(origin_ca_pem, Http::One)
        .get(url)
        .send()
        .await
        .is_ok();
    (intercepted, tunnelled)
}

#[tokio::test]
async fn extra_hosts_bypass_and_mode_all() {
    let ca = upstream_ca();
    let origin = Origin::start_tls(
        &ca,
        &["llm.internal.example", "api.openai.com", "docs.example.org"],
    )
    .await;
    let hosts = [
        ("llm.internal.example", origin.addr),
        ("api.openai.com", origin.addr),
        ("docs.example.org", origin.addr),
    ];
    let gateway = TestGateway::start_with(&ca, &hosts, |config| {
        config.intercept.extra_hosts = vec!["internal.example".into()];
        config.intercept.bypass = vec!["openai.com".into()];
    })
    .await;
    assert_eq!(
        routed(&gateway, ca.cert_pem(), "https://llm.internal.example/").await,
        (true, false)
    );
    assert_eq!(
        routed(&gateway, ca.cert_pem(), "https://api.openai.com/").await,
        (false, true)
    );
    assert_eq!(
        routed(&gateway, ca.cert_pem(), "https://docs.example.org/").await,
        (false, true)
    );

    let all = TestGateway::start_with(&ca, &hosts, |config| {
        config.intercept.mode = aigate::config::InterceptMode::All;
        config.intercept.bypass = vec!["openai.com".into()];
    })
    .await;
    assert_eq!(
        routed(&all, ca.cert_pem(), "https://docs.example.org/").await,
        (true, false)
    );
    assert_eq!(
        routed(&all, ca.cert_pem(), "https://api.openai.com/").await,
        (false, true)
    );
}

/// CONNECT to api.openai.com through the gateway, then a TLS handshake naming `server_name` by a
/// client that trusts the gateway CA and offers `provider`'s suites in their order.
async fn intercepted_handshake(
    gateway: &TestGateway,
    server_name: &str,
    provider: rustls::crypto::CryptoProvider,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut stream = TcpStream::connect(gateway.gateway.proxy_addr).await?;
    stream
        .write_all(b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n\r\n")
        .await?;
    let mut established = [0u8; 39];
    stream.read_exact(&mut established).await?;
    assert_eq!(&established, b"HTTP/1.1 200 Connection Established\r\n\r\n");

    let config = gateway_tls_config(&gateway.ca_pem(), provider);
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from(server_name.to_owned()).unwrap();
    connector.connect(name, stream).await
}

#[tokio::test]
async fn sni_that_differs_from_the_connect_target_is_refused() {
    let ca = upstream_ca();
    let origin = Origin::start_tls(&ca, &["api.openai.com"]).await;
    let gateway = TestGateway::start(&ca, &[("api.openai.com", origin.addr)]).await;
    let handshake = intercepted_handshake(
        &gateway,
        "claude.ai",
        rustls::crypto::ring::default_provider(),
    )
    .await;
    assert!(handshake.is_err(), "no leaf may be served for another name");
    assert!(origin.requests().is_empty());
}

/// The gateway picks AES-128-GCM (SHA-256 key schedule) over a client's AES-256-GCM-SHA384, but a
/// client that lists ChaCha20-Poly1305 first (no AES instructions) keeps it.
#[tokio::test]
async fn intercepted_clients_get_aes_128_gcm_unless_they_put_chacha20_first() {
    use rustls::CipherSuite as S;
    let ca = upstream_ca();
    let origin = Origin::start_tls(&ca, &["api.openai.com"]).await;
    let gateway = TestGateway::start(&ca, &[("api.openai.com", origin.addr)]).await;
    let offering = |first: &[S]| {
        let mut provider = rustls::crypto::ring::default_provider();
        provider
            .cipher_suites
            .sort_by_key(|suite| !first.contains(&suite.suite()));
        provider
    };
    for (first, expected) in [
        (
            vec![S::TLS13_AES_256_GCM_SHA384],
            S::TLS13_AES_128_GCM_SHA256,
        ),
        (
            vec![S::TLS13_CHACHA20_POLY1305_SHA256],
            S::TLS13_CHACHA20_POLY1305_SHA256,
        ),
    ] {
        let tls = intercepted_handshake(&gateway, "api.openai.com", offering(&first))
            .await
            .unwrap();
        let negotiated = tls.get_ref().1.negotiated_cipher_suite().unwrap().suite();
        assert_eq!(negotiated, expected, "client offering {first:?} first");
    }
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused_with_503() {
    let ca = upstream_ca();
    // Four serving threads accept on the listener: the cap must hold across them, not per
    // thread (three connections spread over four per-thread caps would all be served).
    let gateway = TestGateway::start_with(&ca, &[], |config| {
        config.proxy.max_connections = 2;
        config.proxy.threads = 4;
    })
    .await;
    let _first = TcpStream::connect(gateway.gateway.proxy_addr)
        .await
        .unwrap();
    let _second = TcpStream::connect(gateway.gateway.proxy_addr)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = TcpStream::connect(gateway.gateway.proxy_addr)
        .await
        .unwrap();
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(5), third.read_to_string(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
}

#[tokio::test]
async fn every_serving_thread_takes_its_share_of_new_connections() {
    let ca = upstream_ca();
    let origin = Origin::start_plain().await;
    // Each thread has its own socket on the address and the kernel hashes every new connection
    // to one of them: a thread whose socket nobody accepts on would leave about a quarter of
    // these connections hanging.
    let gateway = TestGateway::start_with(&ca, &[("plain.example", origin.addr)], |config| {
        config.proxy.threads = 4;
    })
    .await;
    for attempt in 0..48 {
        let mut client = TcpStream::connect(gateway.gateway.proxy_addr)
            .await
            .unwrap();
        client
            .write_all(
                b"GET http://plain.example:8080/ HTTP/1.1\r\nHost: plain.example:8080\r\nConnection: close\r\n\r\n",
            )
            .await
            .unwrap();
        let mut reply = String::new();
        tokio::time::timeout(Duration::from_secs(5), client.read_to_string(&mut reply))
            .await
            .unwrap_or_else(|_| panic!("connection {attempt} was never served"))
            .unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    }
    assert_eq!(origin.requests().len(), 48);
}

#[tokio::test]
async fn a_second_gateway_on_the_same_address_is_refused() {
    let ca = upstream_ca();
    let first = TestGateway::start_with(&ca, &[], |config| config.proxy.threads = 2).await;
    let taken = first.gateway.proxy_addr;

    // The same configuration again, as a second instance started by mistake would have it: its
    // sockets would join the first one's SO_REUSEPORT group and take half of its connections.
    let dir = tempfile::tempdir().unwrap();
    let mut config = TestGateway::config(dir.path(), &ca, &[]);
    config.proxy.listen = taken;
    config.proxy.threads = 2;
    config.validate().unwrap();
    let error = match aigate::server::start(config).await {
        Ok(_) => panic!("a second gateway started on {taken}"),
        Err(error) => error.to_string(),
    };
    assert!(error.starts_with("[proxy] listen: "), "{error}");
    assert!(error.contains(&taken.to_string()), "{error}");
    assert!(error.contains("in use"), "{error}");
}

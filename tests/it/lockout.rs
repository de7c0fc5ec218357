//! Proxy-password brute force through the real gateway: lockouts per client address and per
//! account, no argon2 where the result is unused, and a bound on concurrent checks.

use std::net::IpAddr;

use crate::identity::{basic, export, gateway_with, import_into, CHAT};
use crate::support::TestGateway;

const ANA: &str = "ana.lopez@corp.example";
const DEV: &str = "dev@corp.example";
const PASSWORD: &str = "correct horse battery";

/// A client of the explicit proxy from source address `from`, sending `user:password`.
fn client(gateway: &TestGateway, from: &str, user: &str, password: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .proxy(
            reqwest::Proxy::all(gateway.proxy_url())
                .unwrap()
                .basic_auth(user, password),
        )
        .local_address(from.parse::<IpAddr>().unwrap())
        .http1_only()
        .build()
        .unwrap()
}

/// A plain absolute-form request through the proxy: its status and `Retry-After`.
async fn plain(client: &reqwest::Client) -> (u16, Option<u64>) {
    let response = client
        .post("http://plain.example/v1/chat/completions")
        .body(CHAT)
        .send()
        .await
        .unwrap();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (response.status().as_u16(), retry)
}

/// Sends a raw CONNECT to `target` from `from` and returns the response head.
async fn raw_connect(
    gateway: &TestGateway,
    from: &str,
    target: &str,
    authorization: &str,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(gateway.gateway.proxy_addr).await.unwrap();
    stream
        .write_all(
            format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: {authorization}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut head = vec![0; 4096];
    let read = stream.read(&mut head).await.unwrap();
    String::from_utf8_lossy(&head[..read]).into_owned()
}

async fn with_passwords(gateway: &TestGateway) {
    let store = import_into(gateway, &export(false)).await;
    let hash = aigate::identity::hash_password(PASSWORD).unwrap();
    for user in [ANA, DEV] {
        assert!(store.set_proxy_credential(user, &hash).await.unwrap());
    }
}

#[tokio::test]
async fn repeated_wrong_passwords_lock_out_the_address_and_the_account_without_checking() {
    let (gateway, _tls, plain_origin, _) = gateway_with(|config| {
        config.identity.require_proxy_auth = true;
        config.identity.max_auth_failures = 3;
        // The store watcher would see the directory import below and drop the identity caches
        // mid-test (on a slow machine), forgetting Ana's verified credential.
        config.policy.reload_interval_secs = 3600;
    })
    .await;
    with_passwords(&gateway).await;
    let identity = &gateway.gateway.shared.identity;

    // Ana signs in from her laptop before the attack.
    assert_eq!(
        plain(&client(&gateway, "127.0.0.3", ANA, PASSWORD)).await.0,
        200
    );

    for n in 0..3 {
        let guess = client(&gateway, "127.0.0.1", ANA, &format!("guess {n}"));
        assert_eq!(plain(&guess).await.0, 407, "guess {n}");
    }
    let checked = identity.verifications();
    let (status, retry) = plain(&client(&gateway, "127.0.0.1", DEV, PASSWORD)).await;
    assert_eq!(
        status, 429,
        "the attacking address is locked out, whatever it sends"
    );
    assert!(
        retry.is_some_and(|secs| (1..=300).contains(&secs)),
        "{retry:?}"
    );
    let (status, _) = plain(&client(&gateway, "127.0.0.2", ANA, "guess 4")).await;
    assert_eq!(
        status, 429,
        "the attacked account is locked out from any address"
    );
    assert_eq!(
        identity.verifications(),
        checked,
        "a locked-out attempt costs no argon2 check"
    );
    let connect = raw_connect(
        &gateway,
        "127.0.0.1",
        "api.openai.com:443",
        &basic(DEV, PASSWORD),
    )
    .await;
    assert!(connect.starts_with("HTTP/1.1 429 "), "{connect}");
    assert!(connect.contains("Retry-After: "), "{connect}");

    // Valid users elsewhere still get in: another account, and Ana's verified credential.
    assert_eq!(
        plain(&client(&gateway, "127.0.0.2", DEV, PASSWORD)).await.0,
        200
    );
    assert_eq!(
        plain(&client(&gateway, "127.0.0.3", ANA, PASSWORD)).await.0,
        200
    );
    assert_eq!(plain_origin.requests().len(), 3);
    let metrics = aigate::metrics::render();
    assert!(
        metrics.contains("aigate_proxy_auth_failures_total{reason=\"locked\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn credentials_of_a_blind_tunnel_are_not_checked_unless_authentication_is_required() {
    let (gateway, _tls, plain_origin, _) = gateway_with(|_| {}).await;
    with_passwords(&gateway).await;
    let identity = &gateway.gateway.shared.identity;
    // plain.example is no AI service: its CONNECT is tunnelled blind and nobody is attributed.
    let target = format!("plain.example:{}", plain_origin.addr.port());
    let head = raw_connect(&gateway, "127.0.0.1", &target, &basic(ANA, "wrong")).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(
        identity.verifications(),
        0,
        "an unused credential was checked"
    );

    // An intercepted CONNECT attributes its user, so its credentials are checked.
    let head = raw_connect(
        &gateway,
        "127.0.0.1",
        "api.openai.com:443",
        &basic(ANA, PASSWORD),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(identity.verifications(), 1);
}

#[tokio::test]
async fn concurrent_password_checks_are_bounded_by_the_cpu_count() {
    let (gateway, _tls, _plain, _) = gateway_with(|config| {
        config.identity.require_proxy_auth = true;
        config.identity.max_auth_failures = 1000;
    })
    .await;
    with_passwords(&gateway).await;
    let cpus = std::thread::available_parallelism().unwrap().get();
    let attempts = 4 * cpus + 4;
    let guesses = (0..attempts).map(|n| {
        let client = client(
            &gateway,
            "127.0.0.1",
            &format!("nobody{n}@corp.example"),
            "x",
        );
        async move { plain(&client).await.0 }
    });
    let statuses = futures::future::join_all(guesses).await;
    assert!(statuses.iter().all(|s| *s == 407), "{statuses:?}");
    assert_eq!(
        gateway.gateway.shared.identity.verifications(),
        attempts as u64
    );
    let peak = aigate::metrics::PROXY_AUTH_VERIFYING_PEAK.get();
    assert!(
        (1..=cpus as i64).contains(&peak),
        "{peak} argon2 checks ran at once on {cpus} CPUs"
    );
}

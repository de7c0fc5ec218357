//! REVIEW coaching through the real gateway: the justification form's token, origin checks,
//! client scoping, rate limit, masking, redirect safety and the API clients' justification link.

use std::sync::Arc;

use crate::policy::{policy_gateway, test_service};
use crate::support::{Origin, TestGateway};

const HOST: &str = "new.example";
const PAGE: &str = "https://new.example/chat?x=1";
const JUSTIFY: &str = "https://new.example/.aigate/justify";
const REASON: &str = "Evaluating it for the Q3 vendor review";

/// The signed token a coaching page's form carries.
pub fn token_of(html: &str) -> String {
    let at = html
        .find("name=\"token\" value=\"")
        .unwrap_or_else(|| panic!("no token in {html}"));
    let rest = &html[at + "name=\"token\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

async fn review_gateway(adjust: impl FnOnce(&mut aigate::config::Config)) -> (TestGateway, Origin) {
    let catalog = test_service("newai", HOST, "review_required", &["text_generation"]);
    let (gateway, origin, _) = policy_gateway(&catalog, HOST, &[], adjust).await;
    (gateway, origin)
}

/// A browser through the gateway that does not follow redirects, sending `user_agent`.
fn browser(gateway: &TestGateway, user_agent: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(gateway.proxy_url()).unwrap())
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(gateway.ca_pem().as_bytes()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(user_agent)
        .http1_only()
        .build()
        .unwrap()
}

/// Opens the coaching page of `PAGE`: its status and its form's token.
async fn coaching_page(browser: &reqwest::Client) -> (u16, Option<String>) {
    let page = browser
        .get(PAGE)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    let status = page.status().as_u16();
    let html = page.text().await.unwrap();
    (
        status,
        html.contains("name=\"token\"").then(|| token_of(&html)),
    )
}

async fn post_justification(
    browser: &reqwest::Client,
    form: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = browser.post(JUSTIFY).form(form);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

async fn exception_count(gateway: &TestGateway) -> i64 {
    let rows: Vec<(i64,)> = gateway
        .rows_eventually("SELECT count(*) FROM exceptions", 1)
        .await;
    rows[0].0
}

#[tokio::test]
async fn a_justification_needs_the_pages_signed_token_once_and_a_same_site_origin() {
    let (gateway, origin) = review_gateway(|_| {}).await;
    let browser = browser(&gateway, "browser-a");
    let (status, token) = coaching_page(&browser).await;
    assert_eq!(status, 403);
    let token = token.unwrap();

    let form = |token: &'static str| {
        [
            ("justification", REASON),
            ("return_to", "/chat"),
            ("token", token),
        ]
    };
    let without = post_justification(&browser, &form("")[..2], &[]).await;
    assert_eq!(without.status(), 403, "no token");
    let forged = post_justification(&browser, &form("0.0.0.0.00"), &[]).await;
    assert_eq!(forged.status(), 403, "a forged token");
    let token: &'static str = Box::leak(token.into_boxed_str());
    for cross_site in [
        [("origin", "https://evil.example")],
        [("origin", "null")],
        [("sec-fetch-site", "cross-site")],
        [("sec-fetch-site", "same-site")],
    ] {
        let refused = post_justification(&browser, &form(token), &cross_site).await;
        assert_eq!(refused.status(), 403, "{cross_site:?}");
    }
    assert_eq!(
        exception_count(&gateway).await,
        0,
        "nothing refused was stored"
    );

    let same_site = [
        ("origin", "https://new.example"),
        ("sec-fetch-site", "same-origin"),
    ];
    let accepted = post_justification(&browser, &form(token), &same_site).await;
    assert_eq!(accepted.status(), 303);
    assert_eq!(accepted.headers()["location"], "/chat");
    let replayed = post_justification(&browser, &form(token), &same_site).await;
    assert_eq!(replayed.status(), 403, "a token is spent once");
    assert_eq!(exception_count(&gateway).await, 1);
    assert!(origin.requests().is_empty());
}

#[tokio::test]
async fn a_token_is_bound_to_the_host_it_was_issued_for() {
    let (gateway, _origin) = review_gateway(|config| {
        config.intercept.extra_hosts = vec!["other.example".into()];
    })
    .await;
    let browser = browser(&gateway, "browser-a");
    let token = coaching_page(&browser).await.1.unwrap();
    let elsewhere = browser
        .post("https://other.example/.aigate/justify")
        .form(&[("justification", REASON), ("token", &token)])
        .send()
        .await;
    // other.example resolves nowhere, but the gateway answers its reserved path itself.
    let elsewhere = elsewhere.unwrap();
    assert_eq!(elsewhere.status(), 403);
    assert!(elsewhere
        .text()
        .await
        .unwrap()
        .contains("invalid, expired or already used"));
}

#[tokio::test]
async fn an_anonymous_justification_covers_only_that_client_and_device() {
    let (gateway, _origin) = review_gateway(|_| {}).await;
    let mine = browser(&gateway, "browser-a");
    let token = coaching_page(&mine).await.1.unwrap();
    let justified = post_justification(
        &mine,
        &[
            ("justification", REASON),
            ("return_to", "/chat?x=1"),
            ("token", &token),
        ],
        &[],
    )
    .await;
    assert_eq!(justified.status(), 303);
    assert_eq!(
        coaching_page(&mine).await.0,
        200,
        "the review is lifted for me"
    );
    let other_device = browser(&gateway, "another-browser");
    assert_eq!(
        coaching_page(&other_device).await.0,
        403,
        "another anonymous device at the same address is still under review"
    );
    let rows: Vec<(String,)> = gateway
        .rows_eventually("SELECT conditions FROM exceptions", 1)
        .await;
    let conditions: serde_json::Value = serde_json::from_str(&rows[0].0).unwrap();
    assert_eq!(conditions["clients"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(conditions["devices"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn justifications_are_rate_limited_per_client() {
    let (gateway, _origin) = review_gateway(|config| {
        config.policy.max_justifications_per_hour = 2;
    })
    .await;
    for n in 0..3 {
        // Each from its own device: the first two lift only their own review.
        let browser = browser(&gateway, &format!("browser-{n}"));
        let token = coaching_page(&browser).await.1.unwrap();
        let reply = post_justification(
            &browser,
            &[("justification", REASON), ("token", &token)],
            &[],
        )
        .await;
        if n < 2 {
            assert_eq!(reply.status(), 303, "justification {n}");
        } else {
            assert_eq!(reply.status(), 429);
            let retry: u64 = reply.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=3600).contains(&retry));
        }
    }
    assert_eq!(exception_count(&gateway).await, 2);
}

#[tokio::test]
async fn a_justification_is_stored_with_secrets_masked() {
    let (gateway, _origin) = review_gateway(|_| {}).await;
    let browser = browser(&gateway, "browser-a");
    let token = coaching_page(&browser).await.1.unwrap();
    let text = "Testing the billing bot with card 4111 1111 1111 1111 and key AKIAIOSFODNN7EXAMPLE";
    let reply =
        post_justification(&browser, &[("justification", text), ("token", &token)], &[]).await;
    assert_eq!(reply.status(), 303);
    let rows: Vec<(String,)> = gateway
        .rows_eventually("SELECT justification FROM exceptions", 1)
        .await;
    let stored = &rows[0].0;
    assert!(stored.starts_with("Testing the billing bot"), "{stored}");
    assert!(
        !stored.contains("4111 1111 1111 1111") && !stored.contains("AKIAIOSFODNN7EXAMPLE"),
        "{stored}"
    );
}

#[tokio::test]
async fn return_to_is_only_ever_a_local_path() {
    let (gateway, _origin) = review_gateway(|_| {}).await;
    for hostile in [
        "/%09/evil.example/",
        "/\t/evil.example/",
        "//evil.example/",
        "/\\evil.example/",
        "https://evil.example/",
        "/%5c%5cevil.example/",
    ] {
        let browser = browser(&gateway, &format!("browser {hostile}"));
        let token = coaching_page(&browser).await.1.unwrap();
        let reply = post_justification(
            &browser,
            &[
                ("justification", REASON),
                ("return_to", hostile),
                ("token", &token),
            ],
            &[],
        )
        .await;
        assert_eq!(reply.status(), 303, "{hostile:?}");
        assert_eq!(reply.headers()["location"], "/", "{hostile:?}");
    }
}

#[tokio::test]
async fn a_justification_swaps_the_exceptions_without_recompiling_policies() {
    let (gateway, _origin) = review_gateway(|_| {}).await;
    let shared = &gateway.gateway.shared;
    let before = Arc::clone(&shared.snapshot.load().policies);
    let browser = browser(&gateway, "browser-a");
    let token = coaching_page(&browser).await.1.unwrap();
    let reply = post_justification(
        &browser,
        &[
            ("justification", REASON),
            ("return_to", "/chat?x=1"),
            ("token", &token),
        ],
        &[],
    )
    .await;
    assert_eq!(reply.status(), 303);
    assert_eq!(
        shared.snapshot.load().exceptions.len(),
        1,
        "applied at once"
    );
    // The store poller (every second here) sees the changed exception rows too.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let after = shared.snapshot.load();
    assert_eq!(after.exceptions.len(), 1);
    assert!(
        Arc::ptr_eq(&before, &after.policies),
        "the compiled policies were rebuilt for a new exception"
    );
    assert_eq!(coaching_page(&browser).await.0, 200);
}

#[tokio::test]
async fn an_api_client_gets_a_link_to_justify_in_a_browser() {
    let (gateway, origin) = review_gateway(|_| {}).await;
    let sdk = browser(&gateway, "openai-python/1.0");
    let call = || {
        sdk.post("https://new.example/v1/chat/completions")
            .header("content-type", "application/json")
            .body(r#"{"messages":[{"role":"user","content":"hi"}]}"#)
            .send()
    };
    let refused = call().await.unwrap();
    assert_eq!(refused.status(), 403);
    let error: serde_json::Value = refused.json().await.unwrap();
    let url = error["error"]["justify_url"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with("https://new.example/.aigate/justify?token="),
        "{url}"
    );
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&url),
        "SDKs show only the message: {message}"
    );

    // The user opens the link in their browser, through the same gateway.
    let browser = browser(&gateway, "Mozilla/5.0");
    let page = browser.get(&url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("frame-ancestors 'none'"));
    let token = token_of(&page.text().await.unwrap());
    let tampered = browser
        .get(url.replace("token=", "token=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(tampered.status(), 403);

    let done = post_justification(
        &browser,
        &[
            ("justification", REASON),
            ("return_to", "/v1/chat/completions"),
            ("token", &token),
        ],
        &[
            ("origin", "https://new.example"),
            ("sec-fetch-site", "same-origin"),
        ],
    )
    .await;
    assert_eq!(done.status(), 200);
    assert!(done.text().await.unwrap().contains("Retry the request"));

    let retried = call().await.unwrap();
    assert_eq!(retried.status(), 200, "the SDK's own review is lifted");
    assert_eq!(origin.requests().len(), 1);
    let browser_call = browser
        .post("https://new.example/v1/chat/completions")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(
        browser_call.status(),
        403,
        "the exception is the SDK's, not the browser's"
    );
}

/// Two gateway processes sharing one CA (as a fleet must) and one PostgreSQL store.
mod fleet {
    use std::path::Path;

    use sqlx::Connection;

    use crate::store::{drop_pg_database, fresh_pg_database};
    use crate::support::process::GatewayProcess;
    use crate::support::{repo_path, sha256_hex, upstream_ca, Origin};

    /// `certs`: a CA directory to copy in (the fleet's shared CA); None: the gateway makes one.
    async fn member(
        dir: &Path,
        store_url: &str,
        upstream_ca_pem: &str,
        origin: std::net::SocketAddr,
        certs: Option<&Path>,
    ) -> GatewayProcess {
        std::fs::create_dir_all(dir.join("certs")).unwrap();
        if let Some(certs) = certs {
            for file in ["ca.pem", "ca.key"] {
                std::fs::copy(certs.join(file), dir.join("certs").join(file)).unwrap();
            }
        }
        let roots = dir.join("upstream-ca.pem");
        std::fs::write(&roots, upstream_ca_pem).unwrap();
        let config = format!(
            "[proxy]\nlisten = \"127.0.0.1:0\"\n\
             [admin]\nlisten = \"127.0.0.1:0\"\ntoken_sha256 = [\"{token}\"]\n\
             [tls]\nca_dir = \"{dir}/certs\"\n\
             [store]\nurl = \"{store_url}\"\n\
             [audit]\njournal_dir = \"{dir}/journal\"\n\
             [catalog]\ndir = \"{catalog}\"\n\
             [policy]\ndir = \"{policies}\"\njustification_status = \"pending\"\n\
             [upstream]\nextra_roots = [\"{roots}\"]\n\
             [upstream.resolve]\n\"chatgpt.com\" = \"{origin}\"\n",
            token = sha256_hex("fleet-coach-admin"),
            dir = dir.display(),
            catalog = repo_path("config/catalog").display(),
            policies = repo_path("config/policies").display(),
            roots = roots.display(),
        );
        let path = dir.join("aigate.toml");
        std::fs::write(&path, config).unwrap();
        GatewayProcess::start(&path).await
    }

    fn browser(proxy: &str, ca_pem: &str) -> reqwest::Client {
        reqwest::Client::builder()
            .proxy(reqwest::Proxy::all(format!("http://{proxy}")).unwrap())
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
            .redirect(reqwest::redirect::Policy::none())
            .user_agent("fleet-browser")
            .build()
            .unwrap()
    }

    async fn justify(browser: &reqwest::Client, token: &str) -> (u16, String) {
        let response = browser
            .post("https://chatgpt.com/.aigate/justify")
            .form(&[
                ("justification", super::REASON),
                ("return_to", "/"),
                ("token", token),
            ])
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_token_minted_by_one_gateway_is_redeemed_once_across_the_fleet() {
        let pg_url = fresh_pg_database().await;
        let upstream = upstream_ca();
        let origin = Origin::start_tls(&upstream, &["chatgpt.com"]).await;
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = member(
            dir_a.path(),
            &pg_url,
            upstream.cert_pem(),
            origin.addr,
            None,
        )
        .await;
        let certs = dir_a.path().join("certs");
        let b = member(
            dir_b.path(),
            &pg_url,
            upstream.cert_pem(),
            origin.addr,
            Some(&certs),
        )
        .await;
        let ca_pem = std::fs::read_to_string(certs.join("ca.pem")).unwrap();
        let (via_a, via_b) = (browser(&a.proxy, &ca_pem), browser(&b.proxy, &ca_pem));

        // The shipped policies put unapproved ChatGPT under review: A shows the coaching page.
        let page = via_a
            .get("https://chatgpt.com/")
            .header("accept", "text/html")
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 403);
        let token = super::token_of(&page.text().await.unwrap());

        let (status, body) = justify(&via_b, &token).await;
        assert_eq!(status, 202, "B accepts the token A minted: {body}");
        let (status, body) = justify(&via_a, &token).await;
        assert_eq!(status, 403, "replayed on A: {body}");
        assert!(body.contains("already used"), "{body}");
        let (status, _) = justify(&via_b, &token).await;
        assert_eq!(status, 403, "replayed on B");

        let mut store = sqlx::PgConnection::connect(&pg_url).await.unwrap();
        let (exceptions,): (i64,) = sqlx::query_as("SELECT count(*) FROM exceptions")
            .fetch_one(&mut store)
            .await
            .unwrap();
        assert_eq!(exceptions, 1);
        drop(store);
        drop((a, b));
        drop_pg_database(&pg_url).await;
    }
}

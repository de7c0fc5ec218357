//! Shared test fixtures: a real gateway on port 0, a local TLS/plain HTTP upstream that records
//! what it receives, and clients configured to go through the proxy.

pub mod process;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use aigate::config::Config;
use aigate::server::RunningGateway;
use aigate::tls::CertificateAuthority;

pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub version: http::Version,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// A local origin server. TLS upstreams present a certificate for `hosts` signed by `ca`.
pub struct Origin {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Origin {
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub async fn start_tls(ca: &CertificateAuthority, hosts: &[&str]) -> Origin {
        let (chain, key) = ca.issue_server_cert(hosts).unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Self::start(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await
    }

    pub async fn start_plain() -> Origin {
        Self::start(None).await
    }

    async fn start(tls: Option<tokio_rustls::TlsAcceptor>) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let recorder = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let recorder = recorder.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |request| echo(request, recorder.clone()));
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(socket).await else {
                                return;
                            };
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(socket), service)
                                .await;
                        }
                    }
                });
            }
        });
        Origin { addr, seen }
    }
}

async fn echo(
    request: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let reply = serde_json::json!({
        "path": parts.uri.path(),
        "body_len": body.len(),
        "version": format!("{:?}", parts.version),
    });
    seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        version: parts.version,
        headers: parts.headers,
        body,
    });
    Ok(Response::builder()
        .header("content-type", "application/json")
        .header("alt-svc", "h3=\":443\"; ma=86400")
        .header("x-origin", "test-origin")
        .body(Full::new(Bytes::from(reply.to_string())))
        .unwrap())
}

/// A gateway running on loopback ports with its own CA directory, trusting `upstream_ca`, and
/// resolving the given hosts to local origins.
pub struct TestGateway {
    pub gateway: RunningGateway,
    pub dir: tempfile::TempDir,
}

impl TestGateway {
    pub async fn start(
        upstream_ca: &CertificateAuthority,
        resolve: &[(&str, SocketAddr)],
    ) -> TestGateway {
        Self::start_with(upstream_ca, resolve, |_| {}).await
    }

    pub async fn start_with(
        upstream_ca: &CertificateAuthority,
        resolve: &[(&str, SocketAddr)],
        adjust: impl FnOnce(&mut Config),
    ) -> TestGateway {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
        let dir = tempfile::tempdir().unwrap();
        let mut config = Self::config(dir.path(), upstream_ca, resolve);
        adjust(&mut config);
        config.validate().unwrap();
        let gateway = aigate::server::start(config).await.unwrap();
        TestGateway { gateway, dir }
    }

    /// The configuration `start_with` runs before its adjustments: loopback ports, the CA
    /// directory, policies and SQLite store under `dir`, trusting `upstream_ca`, and resolving the
    /// given hosts to local origins.
    pub fn config(
        dir: &Path,
        upstream_ca: &CertificateAuthority,
        resolve: &[(&str, SocketAddr)],
    ) -> Config {
        let roots = dir.join("upstream-ca.pem");
        std::fs::write(&roots, upstream_ca.cert_pem()).unwrap();
        let mut config = Config::default();
        config.proxy.listen = "127.0.0.1:0".parse().unwrap();
        config.admin.listen = "127.0.0.1:0".parse().unwrap();
        config.tls.ca_dir = dir.join("certs");
        config.catalog.dir = repo_path("config/catalog");
        // The shipped catalog approves nothing, so the shipped policies would put every request
        // under review; transport tests run with every shipped policy but the review one and
        // unapproved services allowed by default. Policy tests restore the shipped set.
        config.policy.dir = shipped_policies_without(dir, &["review-unapproved-ai"]);
        config.policy.defaults.review_required = aigate::policy::Decision::Allow;
        config.policy.defaults.unknown = aigate::policy::Decision::Allow;
        config.upstream.extra_roots = vec![roots];
        config.store.url = format!("sqlite://{}", dir.join("aigate.db").display());
        config.audit.journal_dir = dir.join("journal");
        config.audit.flush_interval_ms = 20;
        for (host, addr) in resolve {
            config.upstream.resolve.insert((*host).to_owned(), *addr);
        }
        config
    }

    /// Reinstates the shipped policy set and defaults (for policy tests).
    pub fn shipped_policies(config: &mut Config) {
        config.policy = aigate::config::PolicyConfig {
            dir: repo_path("config/policies"),
            ..Default::default()
        };
    }

    /// Runs one statement on the gateway's SQLite store, as an administrator with SQL would.
    pub async fn execute(&self, sql: &str) -> u64 {
        use sqlx::Connection;
        let url = format!("sqlite://{}", self.dir.path().join("aigate.db").display());
        let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query(sql)
            .execute(&mut db)
            .await
            .unwrap()
            .rows_affected()
    }

    pub fn proxy_url(&self) -> String {
        format!("http://{}", self.gateway.proxy_addr)
    }

    pub fn ca_pem_path(&self) -> PathBuf {
        self.dir.path().join("certs/ca.pem")
    }

    /// Rows of `sql` from the gateway's SQLite store, once there are at least `at_least` of
    /// them: the audit writer is asynchronous by design.
    pub async fn rows_eventually<T>(&self, sql: &str, at_least: usize) -> Vec<T>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + Send + Unpin,
    {
        use sqlx::Connection;
        let url = format!("sqlite://{}", self.dir.path().join("aigate.db").display());
        let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
        for _ in 0..100 {
            let rows: Vec<T> = sqlx::query_as(sql).fetch_all(&mut db).await.unwrap();
            if rows.len() >= at_least {
                return rows;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("fewer than {at_least} rows after 5 s: {sql}");
    }

    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.ca_pem_path()).unwrap()
    }

    /// A client that goes through the proxy and trusts only `root_pem`.
    pub fn client(&self, root_pem: &str, http: Http) -> reqwest::Client {
        let builder = reqwest::Client::builder()
            .proxy(reqwest::Proxy::all(self.proxy_url()).unwrap())
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(root_pem.as_bytes()).unwrap())
            .timeout(std::time::Duration::from_secs(20));
        let builder = match http {
            Http::One => builder.http1_only(),
            Http::Negotiate => builder,
        };
        builder.build().unwrap()
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Http {
    One,
    Negotiate,
}

/// A rustls client for the intercepted inside of a CONNECT tunnel: it trusts `ca_pem` (the gateway
/// CA) only and offers `provider`'s suites in their order.
pub fn gateway_tls_config(
    ca_pem: &str,
    provider: rustls::crypto::CryptoProvider,
) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// The CA that signs the local origins' certificates (the gateway is told to trust it).
pub fn upstream_ca() -> CertificateAuthority {
    CertificateAuthority::generate_in_memory("aigate test upstream CA").unwrap()
}

/// A copy of `config/policies` in `dir` without the named policies.
pub fn shipped_policies_without(dir: &Path, excluded: &[&str]) -> PathBuf {
    let target = dir.join("policies");
    std::fs::create_dir_all(&target).unwrap();
    for entry in std::fs::read_dir(repo_path("config/policies")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if excluded.iter().any(|e| name.starts_with(e)) {
            continue;
        }
        std::fs::copy(&path, target.join(name)).unwrap();
    }
    target
}

/// The `[admin] token_sha256` entry for `token`.
pub fn sha256_hex(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

//! Assembles a running gateway from a validated config: CA, catalog snapshot, pingora engine,
//! listeners. `main` calls `start` and waits; integration tests call it with port 0.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use pingora::server::configuration::ServerConf;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinHandle;
use tracing::info;

use crate::admin;
use crate::audit::{AuditHandle, AuditWriterConfig};
use crate::busy_poll;
use crate::catalog::{Catalog, CatalogError};
use crate::config::Config;
use crate::front::listen::{self, ListenGroup, ListenOptions};
use crate::front::route::Router;
use crate::front::{explicit, transparent, FrontContext};
use crate::inspect::Inspector;
use crate::metrics;
use crate::pipeline::Snapshot;
use crate::policy::{Exceptions, PolicySet};
use crate::proxy::AigateProxy;
use crate::store::{self, ChangeDomain, Store, StoreError};
use crate::tls::{CaError, CertificateAuthority, LeafMinter, MintError};
use crate::upstream::Upstream;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("certificate authority in {dir}: {source}")]
    Ca { dir: PathBuf, source: CaError },
    #[error("leaf minter: {0}")]
    Mint(#[from] MintError),
    #[error("catalog: {0}")]
    Catalog(#[from] CatalogError),
    #[error("[policy] dir: {0}")]
    PolicyLoad(#[from] crate::policy::PolicyLoadError),
    #[error("[policy]: {0}")]
    Policy(#[from] crate::policy::PolicyError),
    #[error("[inspect] dictionaries: {0}")]
    Dictionary(#[from] crate::inspect::DetectorError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("{key}: {source}")]
    Listen {
        key: &'static str,
        source: crate::front::listen::ListenError,
    },
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("[upstream] extra_roots: {path}: {message}")]
    ExtraRoot { path: PathBuf, message: String },
    #[error("preparing the upstream trust store: {0}")]
    RootsBundle(std::io::Error),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("[admin] tls: {0}")]
    AdminTls(String),
    #[error("TLS settings toward intercepted clients: {0}")]
    InterceptTls(String),
    #[error("starting the threads that serve client connections: {0}")]
    ServingThreads(std::io::Error),
    #[error("[audit] journal_dir {dir}: {source}")]
    Journal {
        dir: PathBuf,
        source: std::io::Error,
    },
}

impl Shared {
    /// The configuration in force. An owned `Arc`, so holding it across an `.await` pins no
    /// arc-swap slot; a reload never changes a configuration someone holds.
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }
}

/// State every connection and request shares.
pub struct Shared {
    /// The running configuration; SIGHUP swaps in a re-read file (`reload_config`).
    config: ArcSwap<Config>,
    pub snapshot: ArcSwap<Snapshot>,
    /// Who is behind each request (cached store lookups).
    pub identity: crate::identity::Resolver,
    pub router: Router,
    pub upstream: Upstream,
    /// Open connections per client address (`[proxy] max_connections_per_client`).
    pub client_connections: Arc<crate::front::guard::ClientConnections>,
    pub minter: LeafMinter,
    pub ca: Arc<CertificateAuthority>,
    pub audit: AuditHandle,
    pub store: Arc<dyn Store>,
    /// Where the explicit proxy actually listens (the PAC file's default gateway).
    pub proxy_addr: SocketAddr,
    /// Signs and spends the coaching pages' justification tokens.
    pub coach: crate::proxy::coach::Coach,
}

pub struct RunningGateway {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// Where the transparent listener accepts redirected connections, when configured.
    pub transparent_addr: Option<SocketAddr>,
    pub shared: Arc<Shared>,
    /// The threads that accept and serve client connections.
    serving: ServingThreads,
    /// Client connections still open, across every serving thread.
    connections: crate::front::drain::ConnectionTracker,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// Store maintenance and the policy reloader: aborted at shutdown.
    background: Vec<JoinHandle<()>>,
    /// Upstream trust bundle pingora reads by path; deleted when the gateway stops.
    _roots_bundle: Option<tempfile::NamedTempFile>,
}

impl RunningGateway {
    /// Graceful stop: the listeners close (new connections are refused), connections idle
    /// between requests are closed, requests and tunnels in flight get up to
    /// `[proxy] drain_timeout_secs` to finish, and only then is the audit queue flushed — so the
    /// decisions of the drained requests are stored too.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        self.serving.threads.all_ended().await;
        for task in self.tasks {
            let _ = task.await;
        }
        // Wakes keep-alive connections parked between requests (h1); h2 connections got a
        // GOAWAY from the shutdown watch and end when their open streams do.
        for front in &self.serving.fronts {
            pingora::apps::ServerApp::cleanup(front.app.as_ref()).await;
        }
        let open = self.connections.open();
        if open > 0 {
            let timeout = self.shared.config().proxy.drain_timeout();
            info!(
                open,
                timeout_secs = timeout.as_secs(),
                "Draining connections in flight."
            );
            let left = self.connections.wait_idle(timeout).await;
            if left > 0 {
                tracing::warn!(
                    left,
                    "Drain timeout reached; closing the connections still open."
                );
            } else {
                info!("All connections drained.");
            }
        }
        self.serving.threads.stop().await;
        for task in &self.background {
            task.abort();
        }
        flush_exception_uses(&self.shared).await;
        self.shared.audit.shutdown().await;
    }

    /// Resolves when a serving thread's accept loops end on their own (they should not).
    pub async fn wait(&mut self) {
        self.serving.threads.any_ended().await;
    }
}

pub async fn start(config: Config) -> Result<RunningGateway, StartError> {
    metrics::init();
    let (ca, generated) =
        CertificateAuthority::load_or_generate(&config.tls.ca_dir).map_err(|source| {
            StartError::Ca {
                dir: config.tls.ca_dir.clone(),
                source,
            }
        })?;
    if generated {
        info!(dir = %config.tls.ca_dir.display(), "Generated a new gateway CA; distribute ca.pem to clients.");
    }
    let ca = Arc::new(ca);
    let minter = LeafMinter::new(
        ca.clone(),
        config.tls.leaf_cache_capacity,
        config.tls.leaf_validity(),
    )?;
    let files = Catalog::load_dir(&config.catalog.dir)?;
    let store = prepare_store(&config, &files).await?;
    let catalog = match store_catalog(store.as_ref()).await {
        Ok(Some(catalog)) => {
            info!(
                services = catalog.services().len(),
                "Loaded the AI-service catalog from the store."
            );
            catalog
        }
        Ok(None) => {
            info!(services = files.services().len(), dir = %config.catalog.dir.display(), "The store has no AI services; serving the catalog files.");
            files
        }
        Err(error) => {
            tracing::warn!(%error, dir = %config.catalog.dir.display(), "Cannot load the catalog from the store; serving the catalog files until a reload succeeds.");
            files
        }
    };
    let audit = AuditHandle::start(
        store.clone(),
        AuditWriterConfig {
            queue_capacity: config.audit.queue_capacity,
            batch_size: config.audit.batch_size,
            flush_interval: std::time::Duration::from_millis(config.audit.flush_interval_ms),
            retry_interval: std::time::Duration::from_millis(config.audit.retry_interval_ms),
            journal_dir: config.audit.journal_dir.clone(),
            overflow_limit: match config.audit.when_full {
                crate::config::WhenFull::Spill => config.audit.overflow_limit,
                crate::config::WhenFull::Drop => 0,
            },
            writer_nice: config.audit.writer_nice,
            writer_priority: config.audit.writer_priority,
        },
    )
    .map_err(|source| StartError::Journal {
        dir: config.audit.journal_dir.clone(),
        source,
    })?;

    let threads = config.proxy.serving_threads();
    let proxy_options = ListenOptions {
        ip_transparent: false,
        backlog: explicit::BACKLOG,
    };
    let proxy_group =
        listen::bind_group(config.proxy.listen, threads, proxy_options).map_err(|source| {
            StartError::Listen {
                key: "[proxy] listen",
                source,
            }
        })?;
    let admin_listener = bind("[admin] listen", config.admin.listen).await?;
    let proxy_addr = proxy_group.addr;
    let admin_addr = local_addr("[admin] listen", &admin_listener, config.admin.listen)?;
    let transparent_group = config
        .transparent
        .listen
        .map(|addr| transparent::bind(addr, config.transparent.tproxy, threads))
        .transpose()
        .map_err(|source| StartError::Listen {
            key: "[transparent] listen",
            source,
        })?;
    let transparent_addr = transparent_group.as_ref().map(|group| group.addr);
    let own_listeners: Vec<SocketAddr> = [proxy_addr, admin_addr]
        .into_iter()
        .chain(transparent_addr)
        .collect();

    let admin_tls = admin_tls_acceptor(&config.admin, &ca)?;
    let roots_bundle = upstream_roots_bundle(&config.upstream.extra_roots)?;
    let server_conf = Arc::new(ServerConf {
        ca_file: roots_bundle
            .as_ref()
            .map(|file| file.path().to_string_lossy().into_owned()),
        ..ServerConf::default()
    });

    let inspector = Arc::new(Inspector::new(
        &config.inspect.load_dictionaries()?,
        config.inspect.min_confidence,
        config.proxy.body_buffer_bytes,
    )?);
    let (policies, exceptions) = load_policy_state(&config, store.as_ref(), &audit).await?;
    tracing::info!(
        active = policies.len(),
        exceptions = exceptions.len(),
        "Policies compiled."
    );
    let router = Router::new(&config.intercept);
    if let Err(error) = router.reload_permanent_bypass(store.as_ref()).await {
        tracing::warn!(%error, "Cannot load the permanent bypass; starting without it.")
    }
    let shared = Arc::new(Shared {
        upstream: Upstream::new(&config.upstream, own_listeners),
        client_connections: Arc::default(),
        identity: crate::identity::Resolver::new(store.clone(), &config.identity),
        coach: crate::proxy::coach::Coach::new(ca.derive_key(crate::proxy::coach::TOKEN_KEY_LABEL)),
        router,
        snapshot: ArcSwap::from_pointee(Snapshot::new(catalog, inspector, policies, exceptions)),
        minter,
        ca,
        audit,
        store: store.clone(),
        proxy_addr,
        config: ArcSwap::from_pointee(config),
    });

    let new_app = || {
        let mut app = pingora::proxy::http_proxy(&server_conf, AigateProxy::new(shared.clone()));
        let mut options = pingora::apps::HttpServerOptions::default();
        options.h2_idle_timeout = Some(std::time::Duration::from_secs(
            shared.config().proxy.client_idle_timeout_secs,
        ));
        app.server_options = Some(options);
        app.h2_options = Some(crate::front::h2_guard::h2_options(&shared.config().proxy));
        Arc::new(app)
    };

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let tls_template = Arc::new(
        crate::front::intercept::server_config_template()
            .map_err(|e| StartError::InterceptTls(e.to_string()))?,
    );
    let connections = crate::front::drain::ConnectionTracker::default();
    let fronts = (0..threads)
        .map(|_| {
            Arc::new(FrontContext {
                shared: shared.clone(),
                app: new_app(),
                tls_template: tls_template.clone(),
                shutdown: shutdown_rx.clone(),
                connections: connections.clone(),
            })
        })
        .collect();
    // Each listener has its own cap: a flood of redirected LAN traffic must not starve
    // explicitly configured clients, nor the other way round.
    let max_connections = shared.config().proxy.max_connections;
    let tproxy = shared.config().transparent.tproxy;
    let listeners = Listeners {
        explicit: Listener::new(proxy_group, max_connections),
        transparent: transparent_group.map(|group| Listener::new(group, max_connections)),
        tproxy,
    };
    let busy_poll = shared.config().proxy.busy_poll_window();
    let serving =
        ServingThreads::start(listeners, fronts, busy_poll).map_err(StartError::ServingThreads)?;
    if let Some(addr) = transparent_addr {
        info!(transparent = %addr, tproxy, "Transparent listener accepting redirected connections.");
    }

    let maintenance_every =
        std::time::Duration::from_secs(shared.config().store.maintenance_interval_secs);
    let tasks = vec![tokio::spawn(admin::serve(
        admin_listener,
        admin_tls,
        shared.clone(),
        shutdown_rx,
    ))];
    let background = vec![
        tokio::spawn(maintain_store(store, maintenance_every)),
        tokio::spawn(watch_store(shared.clone())),
    ];
    info!(
        proxy = %proxy_addr,
        admin = %admin_addr,
        threads = serving.fronts.len(),
        busy_poll_us = shared.config().proxy.busy_poll_us,
        "Gateway listening."
    );
    Ok(RunningGateway {
        proxy_addr,
        admin_addr,
        transparent_addr,
        shared,
        serving,
        connections,
        shutdown: shutdown_tx,
        tasks,
        background,
        _roots_bundle: roots_bundle,
    })
}

/// Opens the store, migrates it and imports the catalog, logging which time-series shape is in
/// use. A store that is down at start is not fatal: the audit writer spills until it is back.
async fn prepare_store(config: &Config, catalog: &Catalog) -> Result<Arc<dyn Store>, StartError> {
    let store = store::open(&config.store.url).await?;
    if config.store.migrate_on_start {
        match store.migrate().await {
            Ok(shape) => {
                info!(store = %store::redact_url(&config.store.url), shape = shape.describe(), "Store migrated.")
            }
            Err(error) if error.is_retriable() => {
                tracing::warn!(%error, "Store unavailable at start; decisions are journalled until it is back.");
                return Ok(store);
            }
            Err(error) => return Err(error.into()),
        }
    }
    if config.store.import_catalog {
        match store.import_catalog(catalog).await {
            Ok(0) => {}
            Ok(inserted) => info!(inserted, "Catalog files imported into the empty store."),
            Err(error) => {
                tracing::warn!(%error, "Catalog import failed; the file catalog still serves.")
            }
        }
    }
    Ok(store)
}

/// The catalog the store holds; `None` when it holds no services.
async fn store_catalog(store: &dyn Store) -> Result<Option<Catalog>, StartError> {
    let services = store.load_catalog().await?;
    if services.is_empty() {
        return Ok(None);
    }
    Ok(Some(Catalog::from_services(services)?))
}

async fn maintain_store(store: Arc<dyn Store>, every: std::time::Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        if let Err(error) = store.maintain().await {
            tracing::warn!(%error, "Store maintenance failed; retrying at the next interval.");
        }
    }
}

async fn bind(key: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { key, addr, source })
}

fn local_addr(
    key: &'static str,
    listener: &TcpListener,
    addr: SocketAddr,
) -> Result<SocketAddr, StartError> {
    listener
        .local_addr()
        .map_err(|source| StartError::Bind { key, addr, source })
}

/// The management listener's TLS acceptor when `[admin] tls` is on: the configured certificate,
/// or one the gateway CA issues for `tls_names`.
fn admin_tls_acceptor(
    config: &crate::config::AdminConfig,
    ca: &CertificateAuthority,
) -> Result<Option<tokio_rustls::TlsAcceptor>, StartError> {
    if !config.tls {
        return Ok(None);
    }
    let fail = |message: String| StartError::AdminTls(message);
    let (chain, key) = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            let read = |path: &PathBuf| {
                std::fs::read(path).map_err(|e| fail(format!("{}: {e}", path.display())))
            };
            let chain = rustls_pemfile::certs(&mut read(cert)?.as_slice())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| fail(format!("{}: {e}", cert.display())))?;
            let key = rustls_pemfile::private_key(&mut read(key)?.as_slice())
                .map_err(|e| fail(format!("{}: {e}", key.display())))?
                .ok_or_else(|| fail(format!("{}: no private key", key.display())))?;
            (chain, key)
        }
        _ => {
            let names: Vec<&str> = config.tls_names.iter().map(String::as_str).collect();
            ca.issue_server_cert(&names)
                .map_err(|e| fail(format!("issuing a certificate for {names:?}: {e}")))?
        }
    };
    let mut server =
        rustls::ServerConfig::builder_with_provider(crate::tls::server_crypto_provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| fail(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| fail(e.to_string()))?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(server))))
}

/// pingora takes upstream trust anchors from one file, and only the native store when none is
/// given. With extra roots configured, both go into one private bundle file.
fn upstream_roots_bundle(
    extra_roots: &[PathBuf],
) -> Result<Option<tempfile::NamedTempFile>, StartError> {
    if extra_roots.is_empty() {
        return Ok(None);
    }
    let mut bundle = String::new();
    for path in extra_roots {
        let text = std::fs::read(path).map_err(|error| StartError::ExtraRoot {
            path: path.clone(),
            message: error.to_string(),
        })?;
        let certs: Vec<_> = rustls_pemfile::certs(&mut text.as_slice())
            .collect::<Result<_, _>>()
            .map_err(|error| StartError::ExtraRoot {
                path: path.clone(),
                message: format!("not a PEM certificate file: {error}"),
            })?;
        if certs.is_empty() {
            return Err(StartError::ExtraRoot {
                path: path.clone(),
                message: "contains no PEM certificate".to_owned(),
            });
        }
        for cert in certs {
            bundle.push_str(&pem::encode(&pem::Pem::new("CERTIFICATE", cert.to_vec())));
        }
    }
    for cert in rustls_native_certs::load_native_certs().certs {
        bundle.push_str(&pem::encode(&pem::Pem::new("CERTIFICATE", cert.to_vec())));
    }
    let mut file = tempfile::Builder::new()
        .prefix("aigate-upstream-roots-")
        .suffix(".pem")
        .tempfile()
        .map_err(StartError::RootsBundle)?;
    file.write_all(bundle.as_bytes())
        .map_err(StartError::RootsBundle)?;
    file.flush().map_err(StartError::RootsBundle)?;
    Ok(Some(file))
}

/// The policies and approved exceptions of a new snapshot: the store's (after importing policy
/// files it lacks) when it answers, the policy files alone when it does not. A file whose Rego
/// does not compile is never imported, and no policy that does not compile (file or row) stops
/// the gateway: it is reported (log, metric, audit event, `/readyz`) and its scope is denied.
async fn load_policy_state(
    config: &Config,
    store: &dyn Store,
    audit: &AuditHandle,
) -> Result<(PolicySet, Exceptions), StartError> {
    let files = crate::policy::load_dir(&config.policy.dir)?;
    let (valid, rejected): (Vec<_>, Vec<_>) = files
        .iter()
        .cloned()
        .partition(|file| crate::policy::validate(file).is_ok());
    let from_store = async {
        if config.policy.import {
            let inserted = store.import_policies(&valid).await?;
            if inserted > 0 {
                info!(
                    inserted,
                    "Policy files imported into the store (existing rows untouched)."
                );
            }
        }
        Ok::<_, crate::store::StoreError>((
            store.load_policies().await?,
            store.load_exceptions().await?,
        ))
    };
    let (definitions, exceptions) = match from_store.await {
        Ok((mut stored, exceptions)) => {
            // A rejected file the store has no row for still governs its scope (denied).
            let rejected: Vec<_> = rejected
                .into_iter()
                .filter(|file| !stored.iter().any(|row| row.policy_id == file.policy_id))
                .collect();
            stored.extend(rejected);
            (stored, exceptions)
        }
        Err(error) => {
            tracing::warn!(%error, dir = %config.policy.dir.display(), "Cannot read policies from the store; serving the policy files without exceptions.");
            (files, Vec::new())
        }
    };
    let policies = PolicySet::compile_lenient(
        &definitions,
        config.policy.defaults.clone(),
        config.policy.fail_mode,
        config.policy.evaluator,
    );
    report_broken_policies(&policies, audit);
    let exceptions = Exceptions::new(exceptions.into_iter().map(Into::into).collect());
    Ok((policies, exceptions))
}

/// Says loudly which policies do not compile: an error log and an audit event each, and the
/// `aigate_policy_load_errors` gauge (0 once every policy compiles again).
fn report_broken_policies(policies: &PolicySet, audit: &AuditHandle) {
    let broken = policies.broken();
    crate::metrics::POLICY_LOAD_ERRORS.set(broken.len() as i64);
    for policy in broken {
        let definition = &policy.definition;
        tracing::error!(
            policy = %definition.name,
            policy_id = %definition.policy_id,
            error = %policy.error,
            "Policy does not compile; requests in its scope are denied until it is fixed."
        );
        audit.record(crate::audit::AuditRecord::Event(Box::new(
            crate::audit::AuditEventRecord {
                actor_type: Some("system".to_owned()),
                target_type: Some("policy".to_owned()),
                target_id: Some(definition.policy_id),
                target_name: Some(definition.name.clone()),
                result: Some("failure".to_owned()),
                event_data: Some(serde_json::json!({ "error": policy.error.to_string() })),
                ..crate::audit::AuditEventRecord::about_host(
                    "policy_load_failed",
                    "critical",
                    "load_policy",
                    &definition.name,
                )
            },
        )));
    }
}

/// What `aigate check-config` verified.
#[derive(Debug)]
pub struct CheckSummary {
    pub services: usize,
    pub policies: usize,
    pub active_policies: usize,
    pub dictionaries: usize,
}

/// Everything `start` would load from files, loaded and compiled without binding or touching
/// the store: a config that passes starts (store and listeners permitting).
pub fn check(config: &Config) -> Result<CheckSummary, StartError> {
    config.validate()?;
    let catalog = Catalog::load_dir(&config.catalog.dir)?;
    let definitions = crate::policy::load_dir(&config.policy.dir)?;
    let compiled = PolicySet::compile(
        &definitions,
        config.policy.defaults.clone(),
        config.policy.fail_mode,
        config.policy.evaluator,
    )?;
    let dictionaries = config.inspect.load_dictionaries()?;
    Inspector::new(
        &dictionaries,
        config.inspect.min_confidence,
        config.proxy.body_buffer_bytes,
    )?;
    Ok(CheckSummary {
        services: catalog.services().len(),
        policies: definitions.len(),
        active_policies: compiled.len(),
        dictionaries: dictionaries.len(),
    })
}

/// What a reload swapped in.
#[derive(Debug, serde::Serialize)]
pub struct Reloaded {
    pub services: usize,
    pub policies: usize,
    pub exceptions: usize,
    /// Active policies that do not compile (their scope is denied).
    pub broken_policies: Vec<String>,
}

/// Rebuilds catalog, policies and exceptions and swaps them in atomically. On any error the
/// running snapshot stays; requests in flight keep the snapshot they hold.
pub async fn reload(shared: &Shared) -> Result<Reloaded, StartError> {
    reload_with(shared, &shared.config(), None).await
}

async fn reload_with(
    shared: &Shared,
    config: &Config,
    inspector: Option<Arc<Inspector>>,
) -> Result<Reloaded, StartError> {
    flush_exception_uses(shared).await;
    let result = async {
        let catalog = match store_catalog(shared.store.as_ref()).await? {
            Some(catalog) => catalog,
            None => Catalog::load_dir(&config.catalog.dir)?,
        };
        let (policies, exceptions) =
            load_policy_state(config, shared.store.as_ref(), &shared.audit).await?;
        let reloaded = Reloaded {
            services: catalog.services().len(),
            policies: policies.len(),
            exceptions: exceptions.len(),
            broken_policies: policies
                .broken()
                .iter()
                .map(|p| p.definition.name.clone())
                .collect(),
        };
        let inspector = inspector.unwrap_or_else(|| Arc::clone(&shared.snapshot.load().inspector));
        shared.identity.invalidate();
        shared.snapshot.store(Arc::new(Snapshot::new(
            catalog, inspector, policies, exceptions,
        )));
        Ok(reloaded)
    }
    .await;
    let label = if result.is_ok() { "ok" } else { "rejected" };
    crate::metrics::POLICY_RELOADS
        .with_label_values(&[label])
        .inc();
    result
}

/// Swaps in the store's approved exceptions under the running catalog and compiled policies:
/// a new exception (a user's justification) costs one store query, not a policy rebuild.
pub async fn reload_exceptions(shared: &Shared) -> Result<usize, crate::store::StoreError> {
    flush_exception_uses(shared).await;
    // A full reload racing this one may have swapped in a snapshot built from older exception
    // rows; retry on the newer snapshot rather than overwrite it.
    loop {
        let current = shared.snapshot.load_full();
        let rows = shared.store.load_exceptions().await?;
        let exceptions = Exceptions::new(rows.into_iter().map(Into::into).collect());
        let count = exceptions.len();
        let next = Arc::new(current.with_exceptions(exceptions));
        let previous = shared.snapshot.compare_and_swap(&current, next);
        if Arc::ptr_eq(&previous, &current) {
            crate::metrics::POLICY_RELOADS
                .with_label_values(&["exceptions"])
                .inc();
            return Ok(count);
        }
    }
}

/// What a configuration reload did.
#[derive(Debug)]
pub struct ConfigReloaded {
    pub snapshot: Reloaded,
    /// Settings that changed in the file but keep their running values until a restart.
    pub needs_restart: Vec<&'static str>,
}

/// Applies a re-read configuration file (SIGHUP): policy, intercept, identity, inspect,
/// catalog, admin tokens and PAC, and proxy timeouts take effect at once, with the snapshot
/// rebuilt under them. Listeners, store, CA, upstream, audit, logging and cache sizes keep their
/// running values (named in `needs_restart` when the file changed them). Anything invalid
/// rejects the whole reload and the running configuration stays.
pub async fn reload_config(shared: &Shared, new: Config) -> Result<ConfigReloaded, StartError> {
    let old = shared.config();
    let mut effective = new;
    let mut needs_restart = Vec::new();
    macro_rules! keep {
        ($name:literal, $($field:tt)+) => {
            if format!("{:?}", effective.$($field)+) != format!("{:?}", old.$($field)+) {
                needs_restart.push($name);
                effective.$($field)+ = old.$($field)+.clone();
            }
        };
    }
    keep!("[proxy] listen", proxy.listen);
    keep!("[proxy] max_connections", proxy.max_connections);
    keep!("[proxy] threads", proxy.threads);
    keep!("[proxy] busy_poll_us", proxy.busy_poll_us);
    keep!("[admin] listen", admin.listen);
    keep!("[admin] tls", admin.tls);
    keep!("[admin] tls_cert", admin.tls_cert);
    keep!("[admin] tls_key", admin.tls_key);
    keep!("[admin] tls_names", admin.tls_names);
    keep!("[transparent]", transparent);
    keep!("[tls]", tls);
    keep!("[upstream]", upstream);
    keep!("[store]", store);
    keep!("[audit]", audit);
    keep!("[log]", log);
    keep!("[identity] cache_ttl_secs", identity.cache_ttl_secs);
    keep!("[identity] cache_capacity", identity.cache_capacity);
    keep!(
        "[intercept] pinning_window_secs",
        intercept.pinning_window_secs
    );
    keep!(
        "[intercept] learned_bypass_ttl_secs",
        intercept.learned_bypass_ttl_secs
    );
    effective.validate()?;
    let inspector = Arc::new(Inspector::new(
        &effective.inspect.load_dictionaries()?,
        effective.inspect.min_confidence,
        effective.proxy.body_buffer_bytes,
    )?);
    let snapshot = reload_with(shared, &effective, Some(inspector)).await?;
    shared.router.reconfigure(&effective.intercept);
    shared.identity.reconfigure(&effective.identity);
    shared.upstream.refresh_own_addresses();
    shared.config.store(Arc::new(effective));
    Ok(ConfigReloaded {
        snapshot,
        needs_restart,
    })
}

/// Writes exception uses counted in memory back to `usage_count`.
async fn flush_exception_uses(shared: &Shared) {
    let uses = shared.snapshot.load().exceptions.drain_uses();
    if uses.is_empty() {
        return;
    }
    if let Err(error) = shared.store.add_exception_uses(&uses).await {
        tracing::warn!(%error, exceptions = uses.len(), "Cannot record exception uses; the counts are lost.");
    }
}

/// Keeps this gateway in step with the store, whoever changed it (this gateway's admin API,
/// another gateway of the fleet, a provisioning job, plain SQL): a PostgreSQL notification names
/// the part that changed and is acted on at once; polling each part's revision is SQLite's only
/// way and PostgreSQL's safety net for notifications lost while the listener reconnected.
async fn watch_store(shared: Arc<Shared>) {
    let every = std::time::Duration::from_secs(shared.config().policy.reload_interval_secs);
    let mut notifications = shared.store.change_notifications().await;
    let mut seen = shared.store.revisions().await.ok();
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    loop {
        let mut notified: Vec<ChangeDomain> = Vec::new();
        match notifications.as_mut() {
            Some(rx) => tokio::select! {
                _ = ticker.tick() => {}
                message = rx.recv() => match message {
                    Some(domain) => {
                        notified.push(domain);
                        // A burst (a bulk import, several edits) is applied once.
                        while let Ok(domain) = rx.try_recv() {
                            notified.push(domain);
                        }
                    }
                    None => {
                        tracing::warn!("The store's change notifications ended; polling only.");
                        notifications = None;
                    }
                },
            },
            None => {
                ticker.tick().await;
            }
        }
        flush_exception_uses(&shared).await;
        let revisions = match shared.store.revisions().await {
            Ok(revisions) => revisions,
            Err(error) => {
                tracing::debug!(%error, "Cannot poll the store's revisions.");
                continue;
            }
        };
        let mut changed = match &seen {
            Some(seen) => revisions.changed_since(seen),
            None => ChangeDomain::ALL.to_vec(),
        };
        for domain in notified {
            if !changed.contains(&domain) {
                changed.push(domain);
            }
        }
        // A rebuilt snapshot reads the exceptions too.
        if changed.contains(&ChangeDomain::Snapshot) {
            changed.retain(|domain| *domain != ChangeDomain::Exceptions);
        }
        for domain in changed {
            apply_store_change(&shared, domain).await;
        }
        // A rejected revision is not retried until it changes again.
        seen = Some(revisions);
    }
}

/// Refreshes what this gateway keeps of one changed part of the store.
async fn apply_store_change(shared: &Shared, domain: ChangeDomain) {
    match domain {
        ChangeDomain::Snapshot => match reload(shared).await {
            Ok(reloaded) => info!(
                services = reloaded.services,
                policies = reloaded.policies,
                exceptions = reloaded.exceptions,
                "The catalog or policies changed in the store; snapshot reloaded."
            ),
            Err(error) => tracing::error!(
                %error,
                "A change in the store was rejected; the previous snapshot keeps serving."
            ),
        },
        // A new exception (a user's justification, an approval) costs one query, not a policy
        // rebuild.
        ChangeDomain::Exceptions => match reload_exceptions(shared).await {
            Ok(exceptions) => info!(
                exceptions,
                "Exceptions changed in the store; exception set reloaded."
            ),
            Err(error) => tracing::warn!(
                %error,
                "Cannot reload the exceptions; the previous set keeps serving."
            ),
        },
        ChangeDomain::Directory => {
            shared.identity.invalidate();
            info!("The directory changed in the store; identity caches dropped.");
        }
        ChangeDomain::Bypass => match shared
            .router
            .reload_permanent_bypass(shared.store.as_ref())
            .await
        {
            Ok(hosts) => info!(
                hosts,
                "The interception bypass changed in the store; reloaded."
            ),
            Err(error) => tracing::warn!(
                %error,
                "Cannot read the changed interception bypass; the previous one stays."
            ),
        },
    }
}

/// A client-facing address: a socket per serving thread (`listen::bind_group`) and the cap on
/// its open connections, which every thread shares: the cap is the listener's, not a thread's.
struct Listener {
    sockets: Vec<std::net::TcpListener>,
    limit: Arc<Semaphore>,
}

impl Listener {
    fn new(group: ListenGroup, max_connections: usize) -> Listener {
        Listener {
            sockets: group.sockets,
            limit: Arc::new(Semaphore::new(max_connections)),
        }
    }

    fn per_thread(self) -> impl Iterator<Item = ThreadSocket> {
        let limit = self.limit;
        self.sockets.into_iter().map(move |socket| ThreadSocket {
            socket,
            limit: limit.clone(),
        })
    }
}

/// One serving thread's socket of a listener, with the listener's cap.
struct ThreadSocket {
    socket: std::net::TcpListener,
    limit: Arc<Semaphore>,
}

impl ThreadSocket {
    /// Registers the socket with the runtime of the thread that calls it.
    fn register(self) -> std::io::Result<(TcpListener, Arc<Semaphore>)> {
        Ok((TcpListener::from_std(self.socket)?, self.limit))
    }
}

/// The client-facing listeners.
struct Listeners {
    explicit: Listener,
    transparent: Option<Listener>,
    /// `[transparent] tproxy`: how the transparent listener learns a connection's destination.
    tproxy: bool,
}

/// What one serving thread accepts on.
struct ThreadListeners {
    explicit: ThreadSocket,
    transparent: Option<ThreadSocket>,
    tproxy: bool,
}

impl Listeners {
    /// One entry per socket of the explicit listener; the transparent one has as many.
    fn per_thread(self) -> Vec<ThreadListeners> {
        let tproxy = self.tproxy;
        let mut transparent = self.transparent.map(Listener::per_thread);
        self.explicit
            .per_thread()
            .map(|explicit| ThreadListeners {
                explicit,
                transparent: transparent.as_mut().and_then(Iterator::next),
                tproxy,
            })
            .collect()
    }
}

/// Client connections are served by threads of their own, each a current-thread runtime with its
/// own pingora app (and so its own upstream connection pool) and its own sockets on the
/// listening addresses: a connection, its requests and their upstream connections stay on the
/// thread that accepted it, so serving a request wakes no other thread. On a VM where a wake-up across
/// vCPUs cost the waker 14 µs, one work-stealing runtime spent 48–51% more CPU per request than
/// these threads one at a time and served 12–23% fewer requests at 16–128 connections
/// (REPORT-2026-12-04).
struct ServingThreads {
    fronts: Vec<Arc<FrontContext>>,
    threads: ThreadGroup,
}

impl ServingThreads {
    /// Starts a thread per front, each accepting on its own sockets of `listeners` (which has
    /// a socket per front on each address), each busy polling for `busy_poll` when set.
    fn start(
        listeners: Listeners,
        fronts: Vec<Arc<FrontContext>>,
        busy_poll: Option<Duration>,
    ) -> std::io::Result<ServingThreads> {
        let work = fronts.iter().cloned().zip(listeners.per_thread()).collect();
        let threads = ThreadGroup::spawn(work, busy_poll, |(front, listeners)| {
            serve_listeners(listeners, front)
        })?;
        Ok(ServingThreads { fronts, threads })
    }
}

/// Threads that each run one piece of work on a current-thread runtime, then keep that runtime
/// (and the tasks the work spawned, such as connections still draining) alive until released.
struct ThreadGroup {
    /// A message per thread whose work ended; closed once every thread has exited.
    work_ended: mpsc::Receiver<()>,
    ended: usize,
    /// Set once the threads may end (for serving threads: every connection has drained); until
    /// then each keeps its runtime alive after its work ended.
    release: watch::Sender<bool>,
    /// One per thread, resolved when the thread has exited.
    finished: Vec<oneshot::Receiver<()>>,
}

/// Sent when a thread's work ends, returned or panicked: a panic unwinds through the runtime's
/// `block_on`, which drops the work's future and this with it. Without it a thread that died
/// would keep its sender alive in no one's hands and the gateway would never notice.
struct WorkEnded(mpsc::Sender<()>);

impl Drop for WorkEnded {
    fn drop(&mut self) {
        // Room for every thread's message: the channel holds one per thread.
        let _ = self.0.try_send(());
    }
}

impl ThreadGroup {
    /// `busy_poll`: each thread polls that long after its last work before it sleeps.
    fn spawn<W, F, Fut>(
        work: Vec<W>,
        busy_poll: Option<Duration>,
        run: F,
    ) -> std::io::Result<ThreadGroup>
    where
        W: Send + 'static,
        F: Fn(W) -> Fut + Clone + Send + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        let count = work.len();
        let (release, released) = watch::channel(false);
        let (ended, work_ended) = mpsc::channel(count.max(1));
        let mut finished = Vec::with_capacity(count);
        for (index, work) in work.into_iter().enumerate() {
            let run = run.clone();
            let ended = WorkEnded(ended.clone());
            let mut released = released.clone();
            let (done, done_rx) = oneshot::channel();
            let mut builder = tokio::runtime::Builder::new_current_thread();
            if busy_poll.is_some() {
                busy_poll::install(&mut builder);
            }
            let runtime = builder.enable_all().build()?;
            std::thread::Builder::new()
                .name(format!("aigate-serve-{index}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        if let Some(window) = busy_poll {
                            tokio::spawn(busy_poll::run(window));
                        }
                        run(work).await;
                        drop(ended);
                        let _ = released.wait_for(|released| *released).await;
                    });
                    let _ = done.send(());
                })?;
            finished.push(done_rx);
        }
        Ok(ThreadGroup {
            work_ended,
            ended: 0,
            release,
            finished,
        })
    }

    /// Resolves when a thread's work has ended, or every thread has exited. Cancel-safe: an end
    /// seen is counted, so `all_ended` does not wait for it again.
    async fn any_ended(&mut self) {
        if self.work_ended.recv().await.is_some() {
            self.ended += 1;
        }
    }

    /// Resolves when every thread's work has ended (or its thread exited).
    async fn all_ended(&mut self) {
        while self.ended < self.finished.len() && self.work_ended.recv().await.is_some() {
            self.ended += 1;
        }
    }

    /// Lets the threads end and waits for them.
    async fn stop(self) {
        let _ = self.release.send(true);
        for done in self.finished {
            let _ = done.await;
        }
    }
}

/// One serving thread's accept loops, until shutdown.
async fn serve_listeners(listeners: ThreadListeners, front: Arc<FrontContext>) {
    let explicit_loop = async {
        match listeners.explicit.register() {
            Ok((listener, limit)) => explicit::serve(listener, front.clone(), limit).await,
            Err(error) => {
                tracing::error!(%error, "A serving thread cannot accept on [proxy] listen.")
            }
        }
    };
    let transparent_loop = async {
        let Some(listener) = listeners.transparent else {
            return;
        };
        match listener.register() {
            Ok((listener, limit)) => {
                transparent::serve(listener, front.clone(), listeners.tproxy, limit).await
            }
            Err(error) => {
                tracing::error!(%error, "A serving thread cannot accept on [transparent] listen.")
            }
        }
    };
    tokio::join!(explicit_loop, transparent_loop);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::oneshot;

    use super::ThreadGroup;

    /// Work that panics when it has no end signal, and otherwise runs until signalled.
    async fn work(end: Option<oneshot::Receiver<()>>) {
        match end {
            Some(end) => {
                let _ = end.await;
            }
            None => std::panic::resume_unwind(Box::new("injected fault")),
        }
    }

    #[tokio::test]
    async fn a_thread_whose_work_panics_is_noticed_while_the_others_keep_running() {
        let (end_other, other) = oneshot::channel();
        let mut threads = ThreadGroup::spawn(vec![Some(other), None], None, work).unwrap();

        tokio::time::timeout(Duration::from_secs(10), threads.any_ended())
            .await
            .expect("the thread that panicked was not noticed");
        assert!(
            tokio::time::timeout(Duration::from_millis(200), threads.all_ended())
                .await
                .is_err(),
            "the thread still working was counted as ended"
        );

        end_other.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), threads.all_ended())
            .await
            .expect("the thread whose work returned was not noticed");
        tokio::time::timeout(Duration::from_secs(10), threads.stop())
            .await
            .expect("released threads did not exit");
    }
}

//! Assembles a running gateway from a config and stops it: CA, store, snapshot, shared state,
//! the reloader, the serving threads and the management listener. `main` calls `start` and
//! waits; integration tests call it with port 0. Nothing below this module imports it.

mod setup;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use pingora::server::configuration::ServerConf;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

use crate::admin;
use crate::audit::{AuditHandle, AuditWriterConfig};
use crate::catalog::Catalog;
use crate::config::Config;
use crate::front::drain::ConnectionTracker;
use crate::front::listen::{self, ListenGroup, ListenOptions};
use crate::front::route::Router;
use crate::front::{explicit, transparent, FrontContext};
use crate::metrics;
use crate::pipeline::Snapshot;
use crate::proxy::AigateProxy;
use crate::serving::{Listener, Listeners, ServingThreads};
use crate::state::load::{self, LoadError};
use crate::state::{reload, watch as store_watch, Parts, Shared};
use crate::store::{Store, StoreError};
use crate::tls::{CaError, CertificateAuthority, LeafMinter, MintError};
use crate::upstream::Upstream;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("certificate authority in {dir}: {source}")]
    Ca { dir: PathBuf, source: CaError },
    #[error("leaf minter: {0}")]
    Mint(#[from] MintError),
    #[error(transparent)]
    Load(#[from] LoadError),
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

pub struct RunningGateway {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// Where the transparent listener accepts redirected connections, when configured.
    pub transparent_addr: Option<SocketAddr>,
    pub shared: Arc<Shared>,
    /// The threads that accept and serve client connections.
    serving: ServingThreads,
    /// Client connections still open, across every serving thread.
    connections: ConnectionTracker,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// Store maintenance, the store watcher and the reloader: aborted at shutdown.
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
            front.app.cleanup().await;
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
        self.shared.flush_exception_uses().await;
        self.shared.audit.shutdown().await;
    }

    /// Resolves when a serving thread's accept loops end on their own (they should not).
    pub async fn wait(&mut self) {
        self.serving.threads.any_ended().await;
    }
}

/// Starts a gateway. The configuration is validated here (as by `state::check` and by every reload),
/// whoever built it.
pub async fn start(config: impl Into<Config>) -> Result<RunningGateway, StartError> {
    let config: Config = config.into();
    let config = config.validated()?;
    metrics::init();
    let ca = open_ca(&config)?;
    let files = Catalog::load_dir(&config.catalog.dir).map_err(LoadError::from)?;
    let store = setup::prepare_store(&config, &files).await?;
    let audit = start_audit(&config, store.clone())?;
    let bound = Bound::bind(&config).await?;
    let admin_tls = setup::admin_tls_acceptor(&config.admin, &ca)?;
    let roots_bundle = setup::upstream_roots_bundle(&config.upstream.extra_roots)?;
    let (reloader, reload_requests) = reload::channel();
    let parts = Parts {
        upstream: Upstream::new(&config.upstream, bound.own_addresses()),
        identity: crate::identity::Resolver::new(store.clone(), &config.identity),
        snapshot: first_snapshot(&config, store.as_ref(), &audit, files).await?,
        router: Router::new(&config.intercept),
        minter: LeafMinter::new(
            ca.clone(),
            config.tls.leaf_cache_capacity,
            config.tls.leaf_validity(),
        )?,
        reloader,
        ca,
        audit,
        store: store.clone(),
        proxy_addr: bound.proxy.addr,
        config,
    };
    if let Err(error) = parts.router.reload_permanent_bypass(store.as_ref()).await {
        tracing::warn!(%error, "Cannot load the permanent bypass; starting without it.")
    }
    let shared = Arc::new(Shared::new(parts));

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let connections = ConnectionTracker::default();
    let transparent_addr = bound.transparent.as_ref().map(|group| group.addr);
    let admin_addr = bound.admin_addr;
    let proxy_addr = bound.proxy.addr;
    let serving = start_serving(
        &shared,
        bound.proxy,
        bound.transparent,
        roots_bundle.as_ref(),
        &shutdown_rx,
        &connections,
    )?;

    let tasks = vec![tokio::spawn(admin::serve(
        bound.admin,
        admin_tls,
        shared.clone(),
        shutdown_rx,
    ))];
    let background = start_background(&shared, store, reload_requests);
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

/// The snapshot a starting gateway serves: catalog, compiled policies, exceptions, inspector.
async fn first_snapshot(
    config: &Config,
    store: &dyn Store,
    audit: &AuditHandle,
    catalog_files: Catalog,
) -> Result<Snapshot, StartError> {
    let catalog = load::initial_catalog(config, store, catalog_files).await;
    let inspector = Arc::new(load::inspector(config)?);
    let (policies, exceptions) = load::policy_state(config, store, audit).await?;
    info!(
        active = policies.len(),
        exceptions = exceptions.len(),
        "Policies compiled."
    );
    Ok(Snapshot::new(catalog, inspector, policies, exceptions))
}

fn open_ca(config: &Config) -> Result<Arc<CertificateAuthority>, StartError> {
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
    Ok(Arc::new(ca))
}

fn start_audit(config: &Config, store: Arc<dyn Store>) -> Result<AuditHandle, StartError> {
    let audit = &config.audit;
    AuditHandle::start(
        store,
        AuditWriterConfig {
            queue_capacity: audit.queue_capacity,
            batch_size: audit.batch_size,
            flush_interval: std::time::Duration::from_millis(audit.flush_interval_ms),
            retry_interval: std::time::Duration::from_millis(audit.retry_interval_ms),
            journal_dir: audit.journal_dir.clone(),
            overflow_limit: match audit.when_full {
                crate::config::WhenFull::Spill => audit.overflow_limit,
                crate::config::WhenFull::Drop => 0,
            },
            writer_nice: audit.writer_nice,
            writer_priority: audit.writer_priority,
        },
    )
    .map_err(|source| StartError::Journal {
        dir: audit.journal_dir.clone(),
        source,
    })
}

/// The listening sockets, bound before anything serves on them so a taken address fails the
/// start rather than a thread.
struct Bound {
    /// `[proxy] listen`: a socket per serving thread.
    proxy: ListenGroup,
    admin: TcpListener,
    admin_addr: SocketAddr,
    /// `[transparent] listen`, when set: a socket per serving thread.
    transparent: Option<ListenGroup>,
}

impl Bound {
    async fn bind(config: &Config) -> Result<Bound, StartError> {
        let threads = config.proxy.serving_threads();
        let proxy_options = ListenOptions {
            ip_transparent: false,
            backlog: explicit::BACKLOG,
        };
        let proxy =
            listen::bind_group(config.proxy.listen, threads, proxy_options).map_err(|source| {
                StartError::Listen {
                    key: "[proxy] listen",
                    source,
                }
            })?;
        let admin = setup::bind("[admin] listen", config.admin.listen).await?;
        let admin_addr = setup::local_addr("[admin] listen", &admin, config.admin.listen)?;
        let transparent = config
            .transparent
            .listen
            .map(|addr| transparent::bind(addr, config.transparent.tproxy, threads))
            .transpose()
            .map_err(|source| StartError::Listen {
                key: "[transparent] listen",
                source,
            })?;
        Ok(Bound {
            proxy,
            admin,
            admin_addr,
            transparent,
        })
    }

    /// The gateway's own listening addresses: upstream connections to them are refused (loops).
    fn own_addresses(&self) -> Vec<SocketAddr> {
        [self.proxy.addr, self.admin_addr]
            .into_iter()
            .chain(self.transparent.as_ref().map(|group| group.addr))
            .collect()
    }
}

/// A pingora app and a front per serving thread, and the threads serving the client-facing
/// listeners with them.
fn start_serving(
    shared: &Arc<Shared>,
    proxy: ListenGroup,
    transparent: Option<ListenGroup>,
    upstream_roots: Option<&tempfile::NamedTempFile>,
    shutdown: &watch::Receiver<bool>,
    connections: &ConnectionTracker,
) -> Result<ServingThreads, StartError> {
    let config = shared.config();
    let server_conf = Arc::new(ServerConf {
        ca_file: upstream_roots.map(|file| file.path().to_string_lossy().into_owned()),
        ..ServerConf::default()
    });
    let new_app = || {
        let mut app = pingora::proxy::http_proxy(&server_conf, AigateProxy::new(shared.clone()));
        let mut options = pingora::apps::HttpServerOptions::default();
        options.h2_idle_timeout = Some(config.proxy.client_idle_timeout());
        app.server_options = Some(options);
        app.h2_options = Some(crate::front::h2_guard::h2_options(&config.proxy));
        Arc::new(app)
    };
    let tls_template = Arc::new(
        crate::front::intercept::server_config_template()
            .map_err(|e| StartError::InterceptTls(e.to_string()))?,
    );
    let fronts = (0..config.proxy.serving_threads())
        .map(|_| {
            Arc::new(FrontContext {
                shared: shared.clone(),
                app: Box::new(new_app()),
                tls_template: tls_template.clone(),
                shutdown: shutdown.clone(),
                connections: connections.clone(),
            })
        })
        .collect();
    // Each listener has its own cap: a flood of redirected LAN traffic must not starve
    // explicitly configured clients, nor the other way round.
    let max_connections = config.proxy.max_connections;
    let tproxy = config.transparent.tproxy;
    let transparent_addr = transparent.as_ref().map(|group| group.addr);
    let listeners = Listeners {
        explicit: Listener::new(proxy, max_connections),
        transparent: transparent.map(|group| Listener::new(group, max_connections)),
        tproxy,
    };
    let serving = ServingThreads::start(listeners, fronts, config.proxy.busy_poll_window())
        .map_err(StartError::ServingThreads)?;
    if let Some(addr) = transparent_addr {
        info!(transparent = %addr, tproxy, "Transparent listener accepting redirected connections.");
    }
    Ok(serving)
}

/// The tasks that run beside serving until shutdown: store maintenance, the store watcher, and
/// the reloader every rebuild goes through.
fn start_background(
    shared: &Arc<Shared>,
    store: Arc<dyn Store>,
    reload_requests: reload::Requests,
) -> Vec<JoinHandle<()>> {
    let maintenance_every =
        std::time::Duration::from_secs(shared.config().store.maintenance_interval_secs);
    let store_for_export = store.clone();
    vec![
        tokio::spawn(setup::maintain_store(store, maintenance_every)),
        tokio::spawn(reload::run(shared.clone(), reload_requests)),
        tokio::spawn(store_watch::watch_store(shared.clone())),
        tokio::spawn(crate::export::run(
            shared.config().export.clone(),
            store_for_export,
        )),
    ]
}

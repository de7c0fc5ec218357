//! The one task that replaces the running snapshot and configuration.
//!
//! Whoever needs a rebuild (an admin write, a user's justification, the store watcher, SIGHUP)
//! sends a request and may await its outcome; none of them compiles a catalog or a policy
//! itself. Requests that queue up while a rebuild runs are answered together by the next one,
//! so a burst (a bulk import, many justifications at once) costs one or two rebuilds, not one
//! each, and two rebuilds never race to swap the snapshot.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::load::{self, LoadError};
use super::Shared;
use crate::catalog::Catalog;
use crate::config::Config;
use crate::inspect::Inspector;
use crate::pipeline::Snapshot;

/// What a reload swapped in.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Reloaded {
    pub services: usize,
    pub policies: usize,
    pub exceptions: usize,
    /// Active policies that do not compile (their scope is denied).
    pub broken_policies: Vec<String>,
}

/// What a configuration reload did.
#[derive(Debug, Clone)]
pub struct ConfigReloaded {
    pub snapshot: Reloaded,
    /// Settings that changed in the file but keep their running values until a restart.
    pub needs_restart: Vec<&'static str>,
}

/// Why a requested reload did not happen; the running snapshot and configuration stay. Every
/// request a rebuild answered gets the same error, hence the shared pointer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReloadFailed {
    #[error(transparent)]
    Load(Arc<LoadError>),
    #[error("the reloader has stopped (the gateway is shutting down)")]
    Stopped,
}

impl From<LoadError> for ReloadFailed {
    fn from(error: LoadError) -> Self {
        ReloadFailed::Load(Arc::new(error))
    }
}

type Reply<T> = oneshot::Sender<Result<T, ReloadFailed>>;

enum Request {
    /// Rebuild catalog, policies and exceptions.
    Snapshot(Reply<Reloaded>),
    /// Re-read the approved exceptions only, under the running catalog and policies.
    Exceptions(Reply<usize>),
    /// Apply a re-read configuration file, then rebuild the snapshot under it.
    Config(Box<Config>, Reply<ConfigReloaded>),
}

/// Asks the reloader for a rebuild. Cheap to clone; every clone feeds the same task.
#[derive(Clone)]
pub struct Reloader {
    requests: mpsc::UnboundedSender<Request>,
}

/// The reloader's end of the request queue: handed to [`run`].
pub struct Requests(mpsc::UnboundedReceiver<Request>);

/// A reloader handle and the queue its task serves.
pub fn channel() -> (Reloader, Requests) {
    let (requests, queue) = mpsc::unbounded_channel();
    (Reloader { requests }, Requests(queue))
}

impl Reloader {
    /// Rebuilds catalog, policies and exceptions (once for every request queued meanwhile) and
    /// says what was swapped in. On any error the running snapshot stays; requests in flight
    /// keep the snapshot they hold. The request is queued when this is called; awaiting only
    /// waits for its outcome.
    pub fn snapshot(&self) -> impl Future<Output = Result<Reloaded, ReloadFailed>> {
        self.ask(Request::Snapshot)
    }

    /// Swaps in the store's approved exceptions under the running catalog and compiled policies:
    /// a new exception (a user's justification) costs one store query, not a policy rebuild.
    pub fn exceptions(&self) -> impl Future<Output = Result<usize, ReloadFailed>> {
        self.ask(Request::Exceptions)
    }

    /// Applies a re-read configuration file (SIGHUP): policy, intercept, identity, inspect,
    /// catalog, admin tokens and PAC, and proxy timeouts take effect at once, with the snapshot
    /// rebuilt under them. Listeners, store, CA, upstream, audit, logging and cache sizes keep
    /// their running values (named in `needs_restart` when the file changed them). Anything
    /// invalid rejects the whole reload and the running configuration stays.
    pub fn config(
        &self,
        config: Config,
    ) -> impl Future<Output = Result<ConfigReloaded, ReloadFailed>> {
        self.ask(|reply| Request::Config(Box::new(config), reply))
    }

    fn ask<T>(
        &self,
        request: impl FnOnce(Reply<T>) -> Request,
    ) -> impl Future<Output = Result<T, ReloadFailed>> {
        let (reply, outcome) = oneshot::channel();
        let sent = self.requests.send(request(reply));
        async move {
            sent.map_err(|_| ReloadFailed::Stopped)?;
            outcome.await.map_err(|_| ReloadFailed::Stopped)?
        }
    }
}

/// The rebuilds the reloader runs; `Shared` in the gateway, a counter in tests.
pub trait Rebuild: Send + Sync {
    fn snapshot(&self) -> impl Future<Output = Result<Reloaded, LoadError>> + Send;
    fn exceptions(&self) -> impl Future<Output = Result<usize, LoadError>> + Send;
    fn apply_config(
        &self,
        config: Config,
    ) -> impl Future<Output = Result<ConfigReloaded, LoadError>> + Send;
}

/// The reloader task: serves requests until every `Reloader` is dropped.
pub async fn run(rebuild: impl Rebuild, mut requests: Requests) {
    while let Some(first) = requests.0.recv().await {
        let mut batch = Batch::default();
        batch.add(first);
        while let Ok(more) = requests.0.try_recv() {
            batch.add(more);
        }
        batch.run(&rebuild).await;
    }
}

/// The requests that were waiting when a rebuild began: every one of them was made before it,
/// so its outcome answers them all.
#[derive(Default)]
struct Batch {
    configs: Vec<(Config, Reply<ConfigReloaded>)>,
    snapshots: Vec<Reply<Reloaded>>,
    exceptions: Vec<Reply<usize>>,
}

impl Batch {
    fn add(&mut self, request: Request) {
        match request {
            Request::Snapshot(reply) => self.snapshots.push(reply),
            Request::Exceptions(reply) => self.exceptions.push(reply),
            Request::Config(config, reply) => self.configs.push((*config, reply)),
        }
    }

    async fn run(self, rebuild: &impl Rebuild) {
        // Each file re-read is applied in order: its outcome (what needs a restart) is its own.
        for (config, reply) in self.configs {
            let _ = reply.send(
                rebuild
                    .apply_config(config)
                    .await
                    .map_err(ReloadFailed::from),
            );
        }
        if !self.snapshots.is_empty() {
            // A rebuilt snapshot reads the exceptions too.
            let outcome = rebuild.snapshot().await.map_err(ReloadFailed::from);
            for reply in self.exceptions {
                let _ = reply.send(outcome.clone().map(|reloaded| reloaded.exceptions));
            }
            for reply in self.snapshots {
                let _ = reply.send(outcome.clone());
            }
        } else if !self.exceptions.is_empty() {
            let outcome = rebuild.exceptions().await.map_err(ReloadFailed::from);
            for reply in self.exceptions {
                let _ = reply.send(outcome.clone());
            }
        }
    }
}

impl Rebuild for Arc<Shared> {
    async fn snapshot(&self) -> Result<Reloaded, LoadError> {
        rebuild_snapshot(self, &self.config(), None).await
    }

    async fn exceptions(&self) -> Result<usize, LoadError> {
        self.flush_exception_uses().await;
        let exceptions = load::exceptions(self.store.as_ref()).await?;
        let count = exceptions.len();
        // Only this task swaps the snapshot, so nothing can slip in between load and store.
        let next = self.snapshot.load().with_exceptions(exceptions);
        self.snapshot.store(Arc::new(next));
        crate::metrics::POLICY_RELOADS
            .with_label_values(&["exceptions"])
            .inc();
        Ok(count)
    }

    async fn apply_config(&self, config: Config) -> Result<ConfigReloaded, LoadError> {
        apply_config_file(self, config).await
    }
}

/// Rebuilds catalog, policies and exceptions under `config` and swaps them in, with `inspector`
/// when the configuration brought a new one.
async fn rebuild_snapshot(
    shared: &Shared,
    config: &Config,
    inspector: Option<Arc<Inspector>>,
) -> Result<Reloaded, LoadError> {
    shared.flush_exception_uses().await;
    let result = async {
        let catalog = match load::store_catalog(shared.store.as_ref()).await? {
            Some(catalog) => catalog,
            None => Catalog::load_dir(&config.catalog.dir)?,
        };
        let (policies, exceptions) =
            load::policy_state(config, shared.store.as_ref(), &shared.audit).await?;
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

async fn apply_config_file(shared: &Shared, new: Config) -> Result<ConfigReloaded, LoadError> {
    let running = shared.config();
    let mut effective = new;
    let needs_restart = keep_restart_only(&mut effective, &running);
    let effective = effective.validated()?;
    let inspector = Arc::new(load::inspector(&effective)?);
    let snapshot = rebuild_snapshot(shared, &effective, Some(inspector)).await?;
    shared.router.reconfigure(&effective.intercept);
    shared.identity.reconfigure(&effective.identity);
    shared.upstream.refresh_own_addresses();
    shared.config.store(Arc::new(effective.into_inner()));
    Ok(ConfigReloaded {
        snapshot,
        needs_restart,
    })
}

/// Puts back the running value of every setting a running gateway cannot change (listeners,
/// store, CA, ...) and names the ones the file changed.
fn keep_restart_only(effective: &mut Config, running: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let (new, old) = (effective, running);
    keep(
        &mut changed,
        "[proxy] listen",
        &mut new.proxy.listen,
        &old.proxy.listen,
    );
    keep(
        &mut changed,
        "[proxy] max_connections",
        &mut new.proxy.max_connections,
        &old.proxy.max_connections,
    );
    keep(
        &mut changed,
        "[proxy] threads",
        &mut new.proxy.threads,
        &old.proxy.threads,
    );
    keep(
        &mut changed,
        "[proxy] busy_poll_us",
        &mut new.proxy.busy_poll_us,
        &old.proxy.busy_poll_us,
    );
    keep(
        &mut changed,
        "[admin] listen",
        &mut new.admin.listen,
        &old.admin.listen,
    );
    keep(
        &mut changed,
        "[admin] tls",
        &mut new.admin.tls,
        &old.admin.tls,
    );
    keep(
        &mut changed,
        "[admin] tls_cert",
        &mut new.admin.tls_cert,
        &old.admin.tls_cert,
    );
    keep(
        &mut changed,
        "[admin] tls_key",
        &mut new.admin.tls_key,
        &old.admin.tls_key,
    );
    keep(
        &mut changed,
        "[admin] tls_names",
        &mut new.admin.tls_names,
        &old.admin.tls_names,
    );
    keep(
        &mut changed,
        "[transparent]",
        &mut new.transparent,
        &old.transparent,
    );
    keep(&mut changed, "[tls]", &mut new.tls, &old.tls);
    keep(&mut changed, "[upstream]", &mut new.upstream, &old.upstream);
    keep(&mut changed, "[store]", &mut new.store, &old.store);
    keep(&mut changed, "[audit]", &mut new.audit, &old.audit);
    keep(&mut changed, "[log]", &mut new.log, &old.log);
    keep(
        &mut changed,
        "[identity] cache_ttl_secs",
        &mut new.identity.cache_ttl_secs,
        &old.identity.cache_ttl_secs,
    );
    keep(
        &mut changed,
        "[identity] cache_capacity",
        &mut new.identity.cache_capacity,
        &old.identity.cache_capacity,
    );
    keep(
        &mut changed,
        "[intercept] pinning_window_secs",
        &mut new.intercept.pinning_window_secs,
        &old.intercept.pinning_window_secs,
    );
    keep(
        &mut changed,
        "[intercept] learned_bypass_ttl_secs",
        &mut new.intercept.learned_bypass_ttl_secs,
        &old.intercept.learned_bypass_ttl_secs,
    );
    // The exporter reads its config-file entries at start (API integrations apply at once).
    keep(&mut changed, "[[export]]", &mut new.export, &old.export);
    changed
}

/// Puts `old` back when `new` differs from it, naming the setting.
fn keep<T: PartialEq + Clone>(
    changed: &mut Vec<&'static str>,
    name: &'static str,
    new: &mut T,
    old: &T,
) {
    if new != old {
        changed.push(name);
        new.clone_from(old);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use tokio::sync::watch;

    use super::*;

    /// Counts rebuilds; the first snapshot rebuild says it started and holds until released, so
    /// a test can queue requests while it runs.
    struct Counting {
        snapshots: AtomicUsize,
        exceptions: AtomicUsize,
        started: Mutex<Option<oneshot::Sender<()>>>,
        released: watch::Receiver<bool>,
        fail: bool,
    }

    impl Counting {
        fn new(fail: bool) -> (Arc<Counting>, oneshot::Receiver<()>, watch::Sender<bool>) {
            let (started, started_rx) = oneshot::channel();
            let (release, released) = watch::channel(false);
            let counting = Arc::new(Counting {
                snapshots: AtomicUsize::new(0),
                exceptions: AtomicUsize::new(0),
                started: Mutex::new(Some(started)),
                released,
                fail,
            });
            (counting, started_rx, release)
        }

        fn reloaded(&self) -> Reloaded {
            Reloaded {
                services: 1,
                policies: 2,
                exceptions: 3,
                broken_policies: Vec::new(),
            }
        }
    }

    impl Rebuild for Arc<Counting> {
        async fn snapshot(&self) -> Result<Reloaded, LoadError> {
            self.snapshots.fetch_add(1, Ordering::SeqCst);
            let started = self.started.lock().unwrap().take();
            if let Some(started) = started {
                let _ = started.send(());
                let mut released = self.released.clone();
                let _ = released.wait_for(|released| *released).await;
            }
            if self.fail {
                return Err(LoadError::Config(crate::config::ConfigError::Invalid {
                    key: "[policy] dir".into(),
                    message: "injected".into(),
                }));
            }
            Ok(self.reloaded())
        }

        async fn exceptions(&self) -> Result<usize, LoadError> {
            self.exceptions.fetch_add(1, Ordering::SeqCst);
            Ok(7)
        }

        async fn apply_config(&self, _config: Config) -> Result<ConfigReloaded, LoadError> {
            Ok(ConfigReloaded {
                snapshot: self.reloaded(),
                needs_restart: Vec::new(),
            })
        }
    }

    #[tokio::test]
    async fn a_burst_queued_during_a_rebuild_costs_one_more_rebuild() {
        let (counting, started, release) = Counting::new(false);
        let (reloader, requests) = channel();
        tokio::spawn(run(counting.clone(), requests));
        let first = reloader.snapshot();
        started.await.unwrap();

        let snapshots: Vec<_> = (0..50).map(|_| reloader.snapshot()).collect();
        let exceptions: Vec<_> = (0..50).map(|_| reloader.exceptions()).collect();
        release.send(true).unwrap();

        assert_eq!(first.await.unwrap().policies, 2);
        for outcome in futures::future::join_all(snapshots).await {
            assert_eq!(outcome.unwrap().services, 1);
        }
        // The snapshot rebuild read the exceptions too: their waiters get its count.
        for outcome in futures::future::join_all(exceptions).await {
            assert_eq!(outcome.unwrap(), 3);
        }
        assert_eq!(counting.snapshots.load(Ordering::SeqCst), 2);
        assert_eq!(counting.exceptions.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn queued_exception_requests_share_one_exception_reload() {
        let (counting, started, release) = Counting::new(false);
        let (reloader, requests) = channel();
        tokio::spawn(run(counting.clone(), requests));
        let first = reloader.snapshot();
        started.await.unwrap();

        let exceptions: Vec<_> = (0..20).map(|_| reloader.exceptions()).collect();
        release.send(true).unwrap();
        first.await.unwrap();
        for outcome in futures::future::join_all(exceptions).await {
            assert_eq!(outcome.unwrap(), 7);
        }
        assert_eq!(counting.snapshots.load(Ordering::SeqCst), 1);
        assert_eq!(counting.exceptions.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn every_request_a_failed_rebuild_answered_gets_its_error() {
        let (counting, _started, release) = Counting::new(true);
        release.send(true).unwrap();
        let (reloader, requests) = channel();
        let burst: Vec<_> = (0..10).map(|_| reloader.snapshot()).collect();
        tokio::spawn(run(counting.clone(), requests));
        for outcome in futures::future::join_all(burst).await {
            let error = outcome.unwrap_err().to_string();
            assert!(error.contains("[policy] dir: injected"), "{error}");
        }
        assert_eq!(counting.snapshots.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_request_after_the_reloader_stopped_fails_instead_of_hanging() {
        let (reloader, requests) = channel();
        drop(requests);
        assert!(matches!(
            reloader.snapshot().await,
            Err(ReloadFailed::Stopped)
        ));
    }

    #[test]
    fn settings_that_need_a_restart_keep_their_running_values_and_are_named() {
        let running = Config::default();
        let mut file = Config::default();
        file.proxy.listen = "127.0.0.1:3999".parse().unwrap();
        file.proxy.busy_poll_us = 50;
        file.store.url = "sqlite://elsewhere.db".into();
        file.identity.require_proxy_auth = true;
        let changed = keep_restart_only(&mut file, &running);
        assert_eq!(
            changed,
            ["[proxy] listen", "[proxy] busy_poll_us", "[store]"]
        );
        assert_eq!(file.proxy, running.proxy);
        assert_eq!(file.store, running.store);
        assert!(file.identity.require_proxy_auth, "applies at once");
    }
}

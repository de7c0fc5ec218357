//! Intercept or tunnel: the one routing decision made for every CONNECT.
//!
//! Interception is the exception, not the rule: only AI services (the catalog, plus configured
//! extra hosts) are decrypted, unless `mode = "all"` asks for shadow-AI discovery. The bypass list
//! always wins, and hosts whose clients keep rejecting our leaf (certificate pinning) are learned
//! into a temporary bypass so the app keeps working through a plain tunnel.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use moka::sync::Cache;
use tracing::warn;

use crate::catalog::Catalog;
use crate::config::{InterceptConfig, InterceptMode};
use crate::host::{is_ip_literal, normalize, DomainMap};
use crate::metrics;

/// A set of DNS names that also matches every subdomain of each name.
#[derive(Debug, Default, Clone)]
pub struct DomainSet {
    names: DomainMap<()>,
}

impl DomainSet {
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let mut set = Self::default();
        for name in names {
            set.names.insert(name, ());
        }
        set
    }

    pub fn contains(&self, host: &str) -> bool {
        self.names.find(host).is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Intercept,
    Tunnel,
}

/// What `[intercept]` says; replaced whole when the config is reloaded.
struct Rules {
    mode: InterceptMode,
    extra_hosts: DomainSet,
    bypass: DomainSet,
    pinning_threshold: u32,
}

impl Rules {
    fn new(config: &InterceptConfig) -> Self {
        Self {
            mode: config.mode,
            extra_hosts: DomainSet::new(config.extra_hosts.iter().map(String::as_str)),
            bypass: DomainSet::new(config.bypass.iter().map(String::as_str)),
            pinning_threshold: config.pinning_failure_threshold,
        }
    }
}

pub struct Router {
    rules: ArcSwap<Rules>,
    /// Promoted by an administrator and kept in the store; swapped whole on change.
    permanent_bypass: ArcSwap<DomainSet>,
    /// Handshake aborts per host within the pinning window (entries expire with the window).
    handshake_aborts: Cache<String, Arc<AtomicU32>>,
    /// Hosts tunnelled because their clients pin certificates.
    learned_bypass: Cache<String, ()>,
}

impl Router {
    pub fn new(config: &InterceptConfig) -> Self {
        Self {
            rules: ArcSwap::from_pointee(Rules::new(config)),
            permanent_bypass: ArcSwap::from_pointee(DomainSet::default()),
            handshake_aborts: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(config.pinning_window_secs.max(1)))
                .build(),
            learned_bypass: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(config.learned_bypass_ttl_secs.max(1)))
                .build(),
        }
    }

    /// Applies a reloaded `[intercept]` (the pinning window and learned-bypass lifetime keep
    /// their start-up values: they size caches).
    pub fn reconfigure(&self, config: &InterceptConfig) {
        self.rules.store(Arc::new(Rules::new(config)));
    }

    pub fn route(&self, catalog: &Catalog, host: &str) -> Route {
        let rules = self.rules.load();
        if rules.bypass.contains(host)
            || self.permanent_bypass.load().contains(host)
            || self.learned_bypass.contains_key(&normalize(host))
        {
            return Route::Tunnel;
        }
        let wanted = match rules.mode {
            InterceptMode::All => true,
            InterceptMode::Catalog => {
                catalog.service_for_host(host).is_some() || rules.extra_hosts.contains(host)
            }
        };
        if wanted && !is_ip_literal(host) {
            Route::Intercept
        } else {
            // An IP literal has no name to mint a leaf for or to verify upstream against.
            Route::Tunnel
        }
    }

    /// Counts a client that aborted the TLS handshake on our leaf for `host`; returns true when
    /// this abort moved the host to the learned bypass.
    pub fn record_handshake_abort(&self, host: &str) -> bool {
        let threshold = self.rules.load().pinning_threshold;
        if threshold == 0 {
            return false;
        }
        let host = normalize(host);
        let counter = self
            .handshake_aborts
            .get_with(host.clone(), || Arc::new(AtomicU32::new(0)));
        let aborts = counter.fetch_add(1, Ordering::Relaxed) + 1;
        if aborts < threshold || self.learned_bypass.contains_key(&host) {
            return false;
        }
        self.handshake_aborts.invalidate(&host);
        warn!(
            %host,
            aborts,
            "Client rejected the intercept certificate repeatedly; tunnelling this host (learned bypass)."
        );
        metrics::LEARNED_BYPASS_TOTAL.inc();
        self.learned_bypass.insert(host, ());
        true
    }

    /// Replaces the permanent bypass (loaded from the store).
    pub fn set_permanent_bypass(&self, hosts: &[String]) {
        self.permanent_bypass
            .store(Arc::new(DomainSet::new(hosts.iter().map(String::as_str))));
    }

    /// Hosts currently in the learned bypass.
    pub fn learned_bypass(&self) -> Vec<String> {
        let mut hosts: Vec<String> = self
            .learned_bypass
            .iter()
            .map(|(host, _)| (*host).clone())
            .collect();
        hosts.sort();
        hosts
    }

    /// Ends a learned bypass early: the host is intercepted again.
    pub fn forget_learned_bypass(&self, host: &str) -> bool {
        let host = normalize(host);
        let known = self.learned_bypass.contains_key(&host);
        self.learned_bypass.invalidate(&host);
        known
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_set_matches_subdomains_only_on_label_boundaries() {
        let set = DomainSet::new(["Example.com.", "api.other.org"]);
        assert!(set.contains("example.com"));
        assert!(set.contains("a.b.EXAMPLE.com."));
        assert!(set.contains("api.other.org"));
        assert!(!set.contains("other.org"));
        assert!(!set.contains("notexample.com"));
        assert!(!set.contains("com"));
    }

    fn router(threshold: u32) -> Router {
        Router::new(&InterceptConfig {
            extra_hosts: vec!["intranet-llm.corp".into()],
            bypass: vec!["pinned.example".into()],
            pinning_failure_threshold: threshold,
            ..InterceptConfig::default()
        })
    }

    fn empty_catalog() -> Catalog {
        Catalog::from_services(Vec::new()).unwrap()
    }

    #[test]
    fn extra_hosts_intercept_and_bypass_wins() {
        let router = router(3);
        let catalog = empty_catalog();
        assert_eq!(
            router.route(&catalog, "gpu.intranet-llm.corp"),
            Route::Intercept
        );
        assert_eq!(router.route(&catalog, "pinned.example"), Route::Tunnel);
        assert_eq!(router.route(&catalog, "10.0.0.1"), Route::Tunnel);
    }

    #[test]
    fn repeated_handshake_aborts_learn_a_bypass() {
        let router = router(3);
        let catalog = empty_catalog();
        assert!(!router.record_handshake_abort("app.intranet-llm.corp"));
        assert!(!router.record_handshake_abort("APP.intranet-llm.corp"));
        assert_eq!(
            router.route(&catalog, "app.intranet-llm.corp"),
            Route::Intercept
        );
        assert!(router.record_handshake_abort("app.intranet-llm.corp"));
        assert_eq!(
            router.route(&catalog, "app.intranet-llm.corp"),
            Route::Tunnel
        );
        assert_eq!(
            router.learned_bypass(),
            vec!["app.intranet-llm.corp".to_owned()]
        );
        assert!(router.forget_learned_bypass("app.intranet-llm.corp"));
        assert_eq!(
            router.route(&catalog, "app.intranet-llm.corp"),
            Route::Intercept
        );
    }

    #[test]
    fn threshold_zero_never_learns() {
        let router = router(0);
        for _ in 0..10 {
            assert!(!router.record_handshake_abort("x.intranet-llm.corp"));
        }
    }
}

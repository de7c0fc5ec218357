//! Intercept or tunnel: the one routing decision made for every CONNECT.
//!
//! Interception is the exception, not the rule: only AI services (the catalog, plus configured
//! extra hosts) are decrypted, unless `mode = "all"` asks for shadow-AI discovery. A bypass
//! (configured, permanent, or learned) tunnels such a host instead, but never blindly: the front
//! decides it at CONNECT without content and refuses it when the policy denies it anyway.
//!
//! A learned bypass is scoped to the client app that showed certificate pinning: the key is
//! (client address, JA4 of its ClientHello, host), so other machines and other apps on the same
//! machine stay intercepted. A missing gateway CA looks exactly like pinning on the wire (the
//! client answers our leaf with an `unknown_ca`/`bad_certificate` alert or just closes), so an
//! abort only counts toward learning when the same client address completed an intercepted
//! handshake (with any host) within `learned_bypass_ttl_secs`: that machine trusts the CA, so its
//! rejection of our leaf is the app pinning, not a missing CA.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use moka::sync::Cache;
use time::OffsetDateTime;
use tracing::{debug, warn};

use crate::catalog::Catalog;
use crate::config::{InterceptConfig, InterceptMode};
use crate::host::{is_ip_literal, normalize, DomainMap};
use crate::metrics;

/// How often a client's "completed an intercepted handshake" time is refreshed: once a minute is
/// plenty for evidence that lasts a day, and spares a cache write per handshake.
const CA_SEEN_REFRESH: Duration = Duration::from_secs(60);

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
    /// An AI host: decrypt it and decide every request.
    Intercept,
    /// Not an AI host (or an IP literal): relay the bytes, no decision.
    Tunnel,
    /// An AI host that a bypass tunnels: decided at CONNECT (without content) first.
    Bypass(BypassKind),
}

/// Why an AI host is tunnelled instead of intercepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BypassKind {
    /// `[intercept] bypass`.
    Configured,
    /// Promoted by an administrator, kept in the store.
    Permanent,
    /// Learned from this client app's certificate pinning.
    Learned,
}

impl BypassKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BypassKind::Configured => "configured bypass ([intercept] bypass)",
            BypassKind::Permanent => "permanent bypass",
            BypassKind::Learned => "learned bypass (certificate pinning by this client app)",
        }
    }
}

/// One client app (address and ClientHello fingerprint) talking to one host.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct AppKey {
    client: IpAddr,
    /// Empty when the hello yielded no JA4.
    ja4: String,
    host: String,
}

impl AppKey {
    fn new(client: IpAddr, ja4: Option<&str>, host: &str) -> Self {
        Self {
            client,
            ja4: ja4.unwrap_or_default().to_owned(),
            host: normalize(host),
        }
    }
}

/// A learned bypass entry, as the admin API lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LearnedBypass {
    pub host: String,
    pub client: IpAddr,
    pub ja4: String,
    #[serde(with = "time::serde::rfc3339")]
    pub learned_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// What made the aborts count as pinning rather than a missing CA.
    pub evidence: String,
}

/// What an aborted handshake did to the learned bypass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AbortOutcome {
    /// `pinning_failure_threshold = 0`.
    LearningOff,
    /// The client address never completed an intercepted handshake recently: most likely the
    /// gateway CA is not installed there, so the abort is not evidence of pinning.
    NoCaEvidence,
    /// Counted; the threshold is not reached yet (or the app is already tunnelled).
    Counted(u32),
    /// This abort moved the client app to the learned bypass.
    Learned(Box<LearnedBypass>),
}

/// What `[intercept]` says; replaced whole when the config is reloaded.
struct Rules {
    mode: InterceptMode,
    extra_hosts: DomainSet,
    bypass: DomainSet,
    pinning_threshold: u32,
    window_secs: u64,
}

impl Rules {
    fn new(config: &InterceptConfig) -> Self {
        Self {
            mode: config.mode,
            extra_hosts: DomainSet::new(config.extra_hosts.iter().map(String::as_str)),
            bypass: DomainSet::new(config.bypass.iter().map(String::as_str)),
            pinning_threshold: config.pinning_failure_threshold,
            window_secs: config.pinning_window_secs,
        }
    }
}

pub struct Router {
    rules: ArcSwap<Rules>,
    /// Promoted by an administrator and kept in the store; swapped whole on change.
    permanent_bypass: ArcSwap<DomainSet>,
    /// Handshake aborts per client app and host within the pinning window.
    handshake_aborts: Cache<AppKey, Arc<AtomicU32>>,
    /// Client apps tunnelled to a host because they pin certificates.
    learned: Cache<AppKey, Arc<LearnedBypass>>,
    /// (client, host) pairs with a learned entry for some app: lets a CONNECT, which comes before
    /// the ClientHello and its JA4, know whether the policy must be asked first.
    learned_pairs: Cache<(IpAddr, String), ()>,
    /// When each client address last completed an intercepted handshake (its CA is installed).
    ca_seen: Cache<IpAddr, OffsetDateTime>,
    learned_ttl: Duration,
}

impl Router {
    pub fn new(config: &InterceptConfig) -> Self {
        let learned_ttl = Duration::from_secs(config.learned_bypass_ttl_secs.max(1));
        Self {
            rules: ArcSwap::from_pointee(Rules::new(config)),
            permanent_bypass: ArcSwap::from_pointee(DomainSet::default()),
            handshake_aborts: cache(Duration::from_secs(config.pinning_window_secs.max(1))),
            learned: cache(learned_ttl),
            learned_pairs: cache(learned_ttl),
            ca_seen: cache(learned_ttl),
            learned_ttl,
        }
    }

    /// Applies a reloaded `[intercept]` (the pinning window and learned-bypass lifetime keep
    /// their start-up values: they size caches).
    pub fn reconfigure(&self, config: &InterceptConfig) {
        self.rules.store(Arc::new(Rules::new(config)));
    }

    /// The route of `host` before any ClientHello is seen (a learned bypass needs the hello's
    /// JA4: see [`Router::learned_bypass_for`]).
    pub fn route(&self, catalog: &Catalog, host: &str) -> Route {
        let rules = self.rules.load();
        if !Self::wanted(&rules, catalog, host) {
            return Route::Tunnel;
        }
        if rules.bypass.contains(host) {
            Route::Bypass(BypassKind::Configured)
        } else if self.permanent_bypass.load().contains(host) {
            Route::Bypass(BypassKind::Permanent)
        } else {
            Route::Intercept
        }
    }

    /// Whether `host` is one the gateway decides (an AI host, or any host with `mode = "all"`).
    pub fn intercepts(&self, catalog: &Catalog, host: &str) -> bool {
        Self::wanted(&self.rules.load(), catalog, host)
    }

    fn wanted(rules: &Rules, catalog: &Catalog, host: &str) -> bool {
        // An IP literal has no name to mint a leaf for or to verify upstream against.
        let named = !is_ip_literal(host);
        named
            && match rules.mode {
                InterceptMode::All => true,
                InterceptMode::Catalog => {
                    catalog.service_for_host(host).is_some() || rules.extra_hosts.contains(host)
                }
            }
    }

    /// Whether some app of `client` may hold a learned bypass for `host` (checked at CONNECT,
    /// before the JA4 is known, so the policy can be asked while a 403 is still possible).
    pub fn may_have_learned(&self, client: IpAddr, host: &str) -> bool {
        self.learning_on() && self.learned_pairs.contains_key(&(client, normalize(host)))
    }

    /// The learned bypass of this client app for `host`, if any. None while learning is off:
    /// turning it off (SIGHUP) stops every learned bypass at once.
    pub fn learned_bypass_for(
        &self,
        client: IpAddr,
        ja4: Option<&str>,
        host: &str,
    ) -> Option<Arc<LearnedBypass>> {
        if !self.learning_on() {
            return None;
        }
        self.learned.get(&AppKey::new(client, ja4, host))
    }

    fn learning_on(&self) -> bool {
        self.rules.load().pinning_threshold > 0
    }

    /// Notes that `client` completed an intercepted handshake: it trusts the gateway CA.
    pub fn note_completed_handshake(&self, client: IpAddr) {
        let now = OffsetDateTime::now_utc();
        let fresh = self
            .ca_seen
            .get(&client)
            .is_some_and(|seen| now - seen < CA_SEEN_REFRESH);
        if !fresh {
            self.ca_seen.insert(client, now);
        }
    }

    /// Counts a client app that aborted the TLS handshake on our leaf for `host`. `alert` names
    /// the TLS alert it sent, if any (for the evidence).
    pub fn record_handshake_abort(
        &self,
        client: IpAddr,
        ja4: Option<&str>,
        host: &str,
        alert: Option<&str>,
    ) -> AbortOutcome {
        let rules = self.rules.load();
        let threshold = rules.pinning_threshold;
        if threshold == 0 {
            return AbortOutcome::LearningOff;
        }
        let Some(ca_seen) = self.ca_seen.get(&client) else {
            return AbortOutcome::NoCaEvidence;
        };
        let key = AppKey::new(client, ja4, host);
        let counter = self
            .handshake_aborts
            .get_with(key.clone(), || Arc::new(AtomicU32::new(0)));
        let aborts = counter.fetch_add(1, Ordering::Relaxed) + 1;
        if aborts < threshold || self.learned.contains_key(&key) {
            return AbortOutcome::Counted(aborts);
        }
        self.handshake_aborts.invalidate(&key);
        let learned_at = OffsetDateTime::now_utc();
        let evidence = format!(
            "{aborts} handshakes aborted on the gateway's certificate within {}s ({}); this client \
             address completed an intercepted handshake at {} so the gateway CA is installed there: \
             the app pins certificates",
            rules.window_secs,
            alert.map_or_else(|| "closed without an alert".to_owned(), |a| format!("TLS alert {a}")),
            rfc3339(ca_seen),
        );
        let entry = LearnedBypass {
            host: key.host.clone(),
            client,
            ja4: key.ja4.clone(),
            learned_at,
            expires_at: learned_at + self.learned_ttl,
            evidence,
        };
        warn!(
            host = %entry.host,
            %client,
            ja4 = %entry.ja4,
            aborts,
            evidence = %entry.evidence,
            "Client app rejected the intercept certificate repeatedly; tunnelling this host for it (learned bypass)."
        );
        metrics::LEARNED_BYPASS_TOTAL.inc();
        self.learned_pairs.insert((client, key.host.clone()), ());
        self.learned.insert(key, Arc::new(entry.clone()));
        AbortOutcome::Learned(Box::new(entry))
    }

    /// Replaces the permanent bypass (loaded from the store).
    pub fn set_permanent_bypass(&self, hosts: &[String]) {
        self.permanent_bypass
            .store(Arc::new(DomainSet::new(hosts.iter().map(String::as_str))));
    }

    /// Re-reads the permanent bypass from the store; returns how many hosts it holds. On an
    /// error the running set stays.
    pub async fn reload_permanent_bypass(
        &self,
        store: &dyn crate::store::Store,
    ) -> Result<usize, crate::store::StoreError> {
        let hosts = store.bypass_hosts().await?;
        self.set_permanent_bypass(&hosts);
        Ok(hosts.len())
    }

    /// Every learned bypass entry, by host then client.
    pub fn learned_bypass(&self) -> Vec<LearnedBypass> {
        let mut entries: Vec<LearnedBypass> = self
            .learned
            .iter()
            .map(|(_, entry)| LearnedBypass::clone(&entry))
            .collect();
        entries.sort_by(|a, b| (&a.host, a.client, &a.ja4).cmp(&(&b.host, b.client, &b.ja4)));
        entries
    }

    /// Ends the learned bypass of `host` early, for every client (`client: None`) or one client
    /// address: they are intercepted again. Returns how many entries ended.
    pub fn forget_learned_bypass(&self, host: &str, client: Option<IpAddr>) -> usize {
        let host = normalize(host);
        let ended: Vec<Arc<AppKey>> = self
            .learned
            .iter()
            .filter(|(key, _)| key.host == host && client.is_none_or(|c| c == key.client))
            .map(|(key, _)| key)
            .collect();
        for key in &ended {
            self.learned.invalidate(key.as_ref());
            self.learned_pairs.invalidate(&(key.client, host.clone()));
        }
        if !ended.is_empty() {
            debug!(%host, ended = ended.len(), "Learned bypass entries forgotten.");
        }
        ended.len()
    }
}

fn cache<K, V>(ttl: Duration) -> Cache<K, V>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    Cache::builder()
        .max_capacity(100_000)
        .time_to_live(ttl)
        .build()
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
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
            extra_hosts: vec!["intranet-llm.corp".into(), "pinned.example".into()],
            bypass: vec!["pinned.example".into(), "bank.example".into()],
            pinning_failure_threshold: threshold,
            ..InterceptConfig::default()
        })
    }

    fn empty_catalog() -> Catalog {
        Catalog::from_services(Vec::new()).unwrap()
    }

    const LAPTOP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 7));
    const OTHER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 8));

    #[test]
    fn extra_hosts_intercept_and_bypass_wins_for_ai_hosts_only() {
        let router = router(3);
        let catalog = empty_catalog();
        assert_eq!(
            router.route(&catalog, "gpu.intranet-llm.corp"),
            Route::Intercept
        );
        assert_eq!(
            router.route(&catalog, "pinned.example"),
            Route::Bypass(BypassKind::Configured)
        );
        // Not an AI host: a plain tunnel, nothing to decide.
        assert_eq!(router.route(&catalog, "bank.example"), Route::Tunnel);
        assert_eq!(router.route(&catalog, "10.0.0.1"), Route::Tunnel);
        router.set_permanent_bypass(&["gpu.intranet-llm.corp".into()]);
        assert_eq!(
            router.route(&catalog, "gpu.intranet-llm.corp"),
            Route::Bypass(BypassKind::Permanent)
        );
    }

    #[test]
    fn aborts_without_a_completed_handshake_are_not_evidence() {
        let router = router(3);
        for _ in 0..5 {
            assert_eq!(
                router.record_handshake_abort(
                    LAPTOP,
                    Some("t13d_app"),
                    "app.intranet-llm.corp",
                    None
                ),
                AbortOutcome::NoCaEvidence
            );
        }
        assert!(router.learned_bypass().is_empty());
    }

    #[test]
    fn repeated_aborts_learn_a_bypass_for_that_client_app_only() {
        let router = router(3);
        let host = "app.intranet-llm.corp";
        router.note_completed_handshake(LAPTOP);
        router.note_completed_handshake(OTHER);
        let abort = |host| {
            router.record_handshake_abort(LAPTOP, Some("t13d_app"), host, Some("unknown_ca"))
        };
        assert_eq!(abort(host), AbortOutcome::Counted(1));
        assert_eq!(abort("APP.intranet-llm.corp"), AbortOutcome::Counted(2));
        assert!(router
            .learned_bypass_for(LAPTOP, Some("t13d_app"), host)
            .is_none());
        let AbortOutcome::Learned(entry) = abort(host) else {
            panic!("the third abort must learn");
        };
        assert!(entry.evidence.contains("unknown_ca"), "{}", entry.evidence);
        assert!(router
            .learned_bypass_for(LAPTOP, Some("t13d_app"), host)
            .is_some());
        assert!(router.may_have_learned(LAPTOP, host));
        // Another app on the laptop, and the same app elsewhere, stay intercepted.
        assert!(router
            .learned_bypass_for(LAPTOP, Some("t13d_browser"), host)
            .is_none());
        assert!(router
            .learned_bypass_for(OTHER, Some("t13d_app"), host)
            .is_none());
        assert!(!router.may_have_learned(OTHER, host));
        let listed = router.learned_bypass();
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].host.as_str(), listed[0].client), (host, LAPTOP));
        assert_eq!(router.forget_learned_bypass(host, Some(OTHER)), 0);
        assert_eq!(router.forget_learned_bypass(host, None), 1);
        assert!(router
            .learned_bypass_for(LAPTOP, Some("t13d_app"), host)
            .is_none());
        assert!(!router.may_have_learned(LAPTOP, host));
    }

    #[test]
    fn threshold_zero_never_learns_and_stops_learned_entries() {
        let router = router(3);
        router.note_completed_handshake(LAPTOP);
        for _ in 0..3 {
            router.record_handshake_abort(LAPTOP, None, "x.intranet-llm.corp", None);
        }
        assert!(router
            .learned_bypass_for(LAPTOP, None, "x.intranet-llm.corp")
            .is_some());
        router.reconfigure(&InterceptConfig {
            pinning_failure_threshold: 0,
            ..InterceptConfig::default()
        });
        assert!(router
            .learned_bypass_for(LAPTOP, None, "x.intranet-llm.corp")
            .is_none());
        assert_eq!(
            router.record_handshake_abort(LAPTOP, None, "y.intranet-llm.corp", None),
            AbortOutcome::LearningOff
        );
    }
}

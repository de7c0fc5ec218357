//! Where upstream connections go: split-horizon overrides, DNS, and the destination policy.
//!
//! Both the blind tunnel and the pingora proxy path resolve through here, so one rule decides what
//! the gateway may connect to, applied to the address actually connected to (after DNS, so a name
//! that resolves to 127.0.0.1 is refused like the literal). The gateway must never connect to its
//! own listeners: a request for its own address would loop forever or, for the management port,
//! turn the proxy into a way around the admin listener's loopback binding (SSRF). Nor may it relay
//! clients to services only this host can reach: loopback, link-local (cloud metadata), the
//! unspecified address, multicast and the host's own interface addresses, which a wildcard-bound
//! local service (Redis, PostgreSQL) answers on.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use ipnet::IpNet;
use moka::future::Cache;

use crate::config::UpstreamConfig;
use crate::host::normalize;

/// DNS answers are reused this long; short enough to follow upstream failovers.
const DNS_CACHE_TTL: Duration = Duration::from_secs(30);

/// Networks never connected to unless `[upstream] allow_networks` or a `resolve` override says
/// so, with the reason they are refused under (the metric label).
const ALWAYS_DENIED: &[(&str, &str)] = &[
    ("127.0.0.0/8", "loopback"),
    ("::1/128", "loopback"),
    ("169.254.0.0/16", "link_local"),
    ("fe80::/10", "link_local"),
    ("0.0.0.0/8", "unspecified"),
    ("::/128", "unspecified"),
    ("224.0.0.0/4", "multicast"),
    ("ff00::/8", "multicast"),
];

/// Denied as well with `[upstream] deny_private = true`: RFC 1918, shared address space and
/// unique-local IPv6.
const PRIVATE: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "fc00::/7",
];

#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: String,
        source: Arc<std::io::Error>,
    },
    #[error("{host} resolves to no address")]
    NoAddress { host: String },
    #[error("{target} is this gateway's own listener; refusing to loop")]
    SelfLoop { target: SocketAddr },
    #[error("{target} is in a network the proxy does not connect to ({reason})")]
    Denied {
        target: SocketAddr,
        /// `loopback`, `link_local`, `unspecified`, `multicast`, `own_address`, `private` or
        /// `denied_network`: the metric label.
        reason: &'static str,
    },
}

impl UpstreamError {
    /// The destination policy refused the address (as opposed to it not resolving): the client
    /// gets 403, not 502.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::SelfLoop { .. } | Self::Denied { .. })
    }

    /// The `aigate_upstream_refused_total` label of a refusal.
    pub fn refusal_reason(&self) -> Option<&'static str> {
        match self {
            Self::SelfLoop { .. } => Some("self"),
            Self::Denied { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

/// Which addresses may be connected to, after resolution.
#[derive(Debug, Clone)]
struct DestinationPolicy {
    allow: Vec<IpNet>,
    deny: Vec<(IpNet, &'static str)>,
}

impl DestinationPolicy {
    fn new(config: &UpstreamConfig) -> Self {
        let builtin = ALWAYS_DENIED
            .iter()
            .filter_map(|(net, reason)| Some((net.parse().ok()?, *reason)));
        let private = PRIVATE
            .iter()
            .filter(|_| config.deny_private)
            .filter_map(|net| Some((net.parse().ok()?, "private")));
        let configured = config
            .deny_networks
            .iter()
            .map(|net| (canonical_net(*net), "denied_network"));
        Self {
            allow: config
                .allow_networks
                .iter()
                .copied()
                .map(canonical_net)
                .collect(),
            deny: builtin.chain(private).chain(configured).collect(),
        }
    }

    /// Why `ip` (canonical) is refused, if it is.
    fn refusal(&self, ip: IpAddr, own_addresses: &[IpAddr]) -> Option<&'static str> {
        if self.allow.iter().any(|net| net.contains(&ip)) {
            return None;
        }
        let denied = self.deny.iter().find(|(net, _)| net.contains(&ip));
        match denied {
            Some((_, reason)) => Some(reason),
            None => own_addresses.contains(&ip).then_some("own_address"),
        }
    }
}

#[derive(Debug)]
pub struct Upstream {
    overrides: BTreeMap<String, SocketAddr>,
    own_listeners: Vec<SocketAddr>,
    policy: DestinationPolicy,
    /// The host's interface addresses, re-read on a configuration reload (`refresh_own_addresses`).
    own_addresses: ArcSwap<Vec<IpAddr>>,
    /// This gateway's `Via` entry: a request that already carries it has been here before.
    via: String,
    /// Resolved names: every intercepted request resolves its target, and a getaddrinfo round
    /// trip per request would dominate the decision path.
    dns: Cache<(String, u16), SocketAddr>,
}

impl Upstream {
    pub fn new(config: &UpstreamConfig, own_listeners: Vec<SocketAddr>) -> Self {
        let overrides = config
            .resolve
            .iter()
            .map(|(host, addr)| (normalize(host), *addr))
            .collect();
        let instance = uuid::Uuid::new_v4().simple().to_string();
        Self {
            overrides,
            own_listeners,
            policy: DestinationPolicy::new(config),
            own_addresses: ArcSwap::from_pointee(interface_addresses()),
            via: format!("1.1 aigate-{}", &instance[..16]),
            dns: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(DNS_CACHE_TTL)
                .build(),
        }
    }

    /// Re-reads the host's interface addresses (addresses come and go: DHCP, VPNs, containers).
    pub fn refresh_own_addresses(&self) {
        self.own_addresses.store(Arc::new(interface_addresses()));
    }

    /// The `Via` entry this gateway adds to forwarded requests (`1.1 aigate-<instance>`).
    pub fn via(&self) -> &str {
        &self.via
    }

    /// Whether a request's `Via` values show it already passed through this gateway: one of
    /// their entries names this instance as the receiving proxy.
    pub fn has_looped<'a>(&self, via_values: impl IntoIterator<Item = &'a str>) -> bool {
        let ours = self.via.split_whitespace().nth(1);
        via_values.into_iter().any(|value| {
            value
                .split(',')
                .any(|entry| entry.split_whitespace().nth(1) == ours)
        })
    }

    /// The address to connect to for `host:port`, after overrides and DNS, refused when it is one
    /// of the gateway's own listeners or the destination policy denies it. An explicit override
    /// is the operator's own choice and is not subject to the policy.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr, UpstreamError> {
        if let Some(addr) = self.overrides.get(normalize(host).as_str()) {
            self.check_not_self(*addr)?;
            return Ok(*addr);
        }
        let addr = match crate::host::unbracket(host).parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, port),
            Err(_) => self
                .dns
                .try_get_with((normalize(host), port), lookup(host, port))
                .await
                .map_err(Arc::unwrap_or_clone)?,
        };
        self.check_allowed(addr)
    }

    /// An address the client chose itself (a redirected connection's original destination),
    /// refused like any other resolved address.
    pub fn pinned(&self, addr: SocketAddr) -> Result<SocketAddr, UpstreamError> {
        self.check_allowed(addr)
    }

    fn check_allowed(&self, target: SocketAddr) -> Result<SocketAddr, UpstreamError> {
        self.check_not_self(target)?;
        let ip = canonical(target.ip());
        match self.policy.refusal(ip, &self.own_addresses.load()) {
            None => Ok(SocketAddr::new(ip, target.port())),
            Some(reason) => Err(UpstreamError::Denied { target, reason }),
        }
    }

    fn check_not_self(&self, target: SocketAddr) -> Result<(), UpstreamError> {
        let ip = canonical(target.ip());
        let own_addresses = self.own_addresses.load();
        let is_self = self.own_listeners.iter().any(|own| {
            let own_ip = canonical(own.ip());
            own.port() == target.port()
                && (own_ip == ip
                    // A wildcard listener answers on every local address; loopback and the
                    // unspecified address always reach this host.
                    || own_ip.is_unspecified()
                        && (ip.is_loopback() || ip.is_unspecified() || own_addresses.contains(&ip))
                    || own_ip.is_loopback() && (ip.is_loopback() || ip.is_unspecified()))
        });
        if is_self {
            Err(UpstreamError::SelfLoop { target })
        } else {
            Ok(())
        }
    }
}

/// The addresses of this host's interfaces, canonical. Unreadable interfaces leave only the
/// built-in networks to protect the host (logged: a wildcard-bound local service may then be
/// reachable through its LAN address).
fn interface_addresses() -> Vec<IpAddr> {
    match nix::ifaddrs::getifaddrs() {
        Ok(interfaces) => {
            let mut addresses: Vec<IpAddr> = interfaces
                .filter_map(|interface| {
                    let address = interface.address?;
                    if let Some(v4) = address.as_sockaddr_in() {
                        Some(IpAddr::V4(v4.ip()))
                    } else {
                        address
                            .as_sockaddr_in6()
                            .map(|v6| canonical(IpAddr::V6(v6.ip())))
                    }
                })
                .collect();
            addresses.sort();
            addresses.dedup();
            tracing::debug!(
                count = addresses.len(),
                "Read the host's interface addresses."
            );
            addresses
        }
        Err(error) => {
            tracing::warn!(%error, "Cannot read the host's interface addresses; only the built-in networks are refused.");
            Vec::new()
        }
    }
}

async fn lookup(host: &str, port: u16) -> Result<SocketAddr, UpstreamError> {
    tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| UpstreamError::Resolve {
            host: host.to_owned(),
            source: Arc::new(source),
        })?
        .next()
        .ok_or_else(|| UpstreamError::NoAddress {
            host: host.to_owned(),
        })
}

/// IPv4-mapped IPv6 addresses compare as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A configured `::ffff:a.b.c.d/n` network (n >= 96) as the IPv4 network it stands for.
fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, IpNet::V4),
            None => net,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(allow: &[&str]) -> UpstreamConfig {
        let mut config = UpstreamConfig::default();
        config.resolve.insert(
            "API.openai.com".to_owned(),
            "127.0.0.1:8443".parse().unwrap(),
        );
        config
            .resolve
            .insert("loop.example".to_owned(), "127.0.0.1:3128".parse().unwrap());
        config.allow_networks = allow.iter().map(|net| net.parse().unwrap()).collect();
        config
    }

    fn upstream_with(config: &UpstreamConfig) -> Upstream {
        Upstream::new(
            config,
            vec![
                "127.0.0.1:3128".parse().unwrap(),
                "0.0.0.0:9090".parse().unwrap(),
            ],
        )
    }

    fn upstream() -> Upstream {
        upstream_with(&config(&[]))
    }

    #[tokio::test]
    async fn overrides_win_and_ignore_case_and_trailing_dot() {
        let addr = upstream().resolve("api.OpenAI.com.", 443).await.unwrap();
        assert_eq!(addr.to_string(), "127.0.0.1:8443");
    }

    #[tokio::test]
    async fn own_listeners_are_refused_however_they_are_spelled() {
        // Even with loopback allowed, the gateway's own listeners stay refused.
        let upstream = upstream_with(&config(&["127.0.0.0/8", "::1/128", "0.0.0.0/8"]));
        for (host, port) in [
            ("127.0.0.1", 3128),
            ("127.0.0.2", 3128),
            ("localhost", 3128),
            ("[::1]", 9090),
            ("0.0.0.0", 9090),
            ("::ffff:127.0.0.1", 3128),
            ("loop.example", 80),
        ] {
            let error = upstream.resolve(host, port).await.unwrap_err();
            assert!(
                matches!(error, UpstreamError::SelfLoop { .. }),
                "{host}:{port} gave {error}"
            );
        }
    }

    #[tokio::test]
    async fn host_only_networks_are_denied_by_default_in_every_spelling() {
        let upstream = upstream();
        for (host, reason) in [
            ("127.0.0.1", "loopback"),
            ("127.9.9.9", "loopback"),
            ("localhost", "loopback"),
            ("[::1]", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("[::ffff:7f00:1]", "loopback"),
            ("169.254.169.254", "link_local"),
            ("fe80::1", "link_local"),
            ("0.0.0.0", "unspecified"),
            ("::", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("ff02::1", "multicast"),
        ] {
            let error = upstream.resolve(host, 6379).await.unwrap_err();
            assert_eq!(error.refusal_reason(), Some(reason), "{host}: {error}");
        }
        assert!(upstream.resolve("10.1.2.3", 80).await.is_ok());
        assert!(upstream.resolve("192.168.1.1", 80).await.is_ok());
    }

    #[tokio::test]
    async fn private_ranges_denied_when_configured_and_allow_list_wins() {
        let mut config = config(&["10.9.0.0/16", "::ffff:127.0.0.1/128"]);
        config.deny_private = true;
        config.deny_networks = vec!["203.0.113.0/24".parse().unwrap()];
        let upstream = upstream_with(&config);
        for (host, reason) in [
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("fd00::1", "private"),
            ("203.0.113.7", "denied_network"),
        ] {
            let error = upstream.resolve(host, 80).await.unwrap_err();
            assert_eq!(error.refusal_reason(), Some(reason), "{host}: {error}");
        }
        assert!(upstream.resolve("10.9.1.1", 80).await.is_ok());
        // An allow entry written IPv4-mapped allows the IPv4 address, in either spelling.
        assert!(upstream.resolve("127.0.0.1", 6379).await.is_ok());
        assert!(upstream.resolve("::ffff:127.0.0.1", 6379).await.is_ok());
        assert!(upstream.resolve("127.0.0.2", 6379).await.is_err());
    }

    #[tokio::test]
    async fn own_interface_addresses_are_denied_and_reached_wildcard_listeners() {
        let upstream = upstream();
        let own = interface_addresses();
        let lan = own
            .iter()
            .find(|ip| !ip.is_loopback())
            .copied()
            .unwrap_or("127.0.0.1".parse().unwrap());
        let error = upstream.resolve(&lan.to_string(), 6379).await.unwrap_err();
        assert!(error.is_refusal(), "{lan}: {error}");
        let allowed = upstream_with(&config(&[&IpNet::from(lan).to_string()]));
        let error = allowed.resolve(&lan.to_string(), 9090).await.unwrap_err();
        assert!(matches!(error, UpstreamError::SelfLoop { .. }), "{error}");
    }

    #[test]
    fn via_loops_are_recognised_by_instance() {
        let upstream = upstream();
        let other = upstream_with(&config(&[]));
        let ours = upstream.via().to_owned();
        assert!(ours.starts_with("1.1 aigate-"));
        let chained = format!("1.0 corp-proxy, {ours} (aigate)");
        assert!(upstream.has_looped([chained.as_str()]));
        assert!(!other.has_looped([chained.as_str()]));
        assert!(!upstream.has_looped(["1.1 aigate"]));
    }
}

//! Where upstream connections go: split-horizon overrides, DNS, and the self-loop guard.
//!
//! Both the blind tunnel and the pingora proxy path resolve through here, so one rule decides what
//! the gateway may connect to. It must never connect to its own listeners: a request for the
//! gateway's own address would loop forever or, for the management port, turn the proxy into a way
//! around the admin listener's loopback binding (SSRF).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;

use crate::host::normalize;

/// DNS answers are reused this long; short enough to follow upstream failovers.
const DNS_CACHE_TTL: Duration = Duration::from_secs(30);

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
}

#[derive(Debug, Clone)]
pub struct Upstream {
    overrides: BTreeMap<String, SocketAddr>,
    own_listeners: Vec<SocketAddr>,
    /// Resolved names: every intercepted request resolves its target, and a getaddrinfo round
    /// trip per request would dominate the decision path.
    dns: Cache<(String, u16), SocketAddr>,
}

impl Upstream {
    pub fn new(overrides: &BTreeMap<String, SocketAddr>, own_listeners: Vec<SocketAddr>) -> Self {
        let overrides = overrides
            .iter()
            .map(|(host, addr)| (normalize(host), *addr))
            .collect();
        Self {
            overrides,
            own_listeners,
            dns: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(DNS_CACHE_TTL)
                .build(),
        }
    }

    /// The address to connect to for `host:port`, after overrides and DNS, refused when it is one
    /// of the gateway's own listeners.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr, UpstreamError> {
        let addr = match self.overrides.get(normalize(host).as_str()) {
            Some(addr) => *addr,
            None => match crate::host::unbracket(host).parse::<IpAddr>() {
                Ok(ip) => SocketAddr::new(ip, port),
                Err(_) => self
                    .dns
                    .try_get_with((normalize(host), port), lookup(host, port))
                    .await
                    .map_err(Arc::unwrap_or_clone)?,
            },
        };
        self.check_not_self(addr)?;
        Ok(addr)
    }

    /// An address the client chose itself (a redirected connection's original destination),
    /// refused like any other when it is one of the gateway's own listeners.
    pub fn pinned(&self, addr: SocketAddr) -> Result<SocketAddr, UpstreamError> {
        self.check_not_self(addr)?;
        Ok(addr)
    }

    fn check_not_self(&self, target: SocketAddr) -> Result<(), UpstreamError> {
        let ip = canonical(target.ip());
        let is_self = self.own_listeners.iter().any(|own| {
            let own_ip = canonical(own.ip());
            own.port() == target.port()
                && (own_ip == ip
                    // A wildcard listener answers on every local address; loopback and the
                    // unspecified address always reach this host.
                    || own_ip.is_unspecified() && (ip.is_loopback() || ip.is_unspecified())
                    || own_ip.is_loopback() && (ip.is_loopback() || ip.is_unspecified()))
        });
        if is_self {
            Err(UpstreamError::SelfLoop { target })
        } else {
            Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream() -> Upstream {
        let mut overrides = BTreeMap::new();
        overrides.insert(
            "API.openai.com".to_owned(),
            "127.0.0.1:8443".parse().unwrap(),
        );
        overrides.insert("loop.example".to_owned(), "127.0.0.1:3128".parse().unwrap());
        Upstream::new(
            &overrides,
            vec![
                "127.0.0.1:3128".parse().unwrap(),
                "0.0.0.0:9090".parse().unwrap(),
            ],
        )
    }

    #[tokio::test]
    async fn overrides_win_and_ignore_case_and_trailing_dot() {
        let addr = upstream().resolve("api.OpenAI.com.", 443).await.unwrap();
        assert_eq!(addr.to_string(), "127.0.0.1:8443");
    }

    #[tokio::test]
    async fn own_listeners_are_refused_however_they_are_spelled() {
        let upstream = upstream();
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
    async fn other_ports_on_loopback_are_allowed() {
        let addr = upstream().resolve("127.0.0.1", 8080).await.unwrap();
        assert_eq!(addr.port(), 8080);
    }
}

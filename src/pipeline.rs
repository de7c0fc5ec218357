//! The request pipeline: the one place that knows the order of the decision stages.
//!
//! Every plain-HTTP and every intercepted request reaches `decide` once, with its head and the
//! buffered body prefix, before any byte goes upstream. Today the verdict is the built-in rule
//! (a service the catalog marks `prohibited` is denied); fingerprinting, inspection, identity and
//! Rego policy plug in here behind the same signature. `decide` is a plain function of its inputs
//! so it can be tested and benchmarked without sockets.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use uuid::Uuid;

use crate::catalog::{AiService, ApprovalStatus, Catalog};

/// Everything a request is judged against, swapped atomically on reload; a request holds one
/// snapshot for its whole life.
#[derive(Debug)]
pub struct Snapshot {
    pub catalog: Catalog,
}

/// How the request reached the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Absolute-form HTTP request to the explicit proxy.
    ProxyPlain,
    /// Request decrypted from an intercepted CONNECT tunnel.
    ProxyIntercepted,
}

/// The facts of one request, borrowed from the proxy session.
#[derive(Debug)]
pub struct RequestFacts<'a> {
    pub method: &'a str,
    pub scheme: &'a str,
    pub host: &'a str,
    pub port: u16,
    pub path: &'a str,
    pub headers: &'a http::HeaderMap,
    /// The buffered body prefix (at most the configured cap).
    pub body: &'a [u8],
    pub body_truncated: bool,
    pub client: Option<SocketAddr>,
    pub source: Source,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
    Review,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::Review => "review",
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct Verdict {
    pub decision_id: Uuid,
    pub decision: Decision,
    /// Shown to the user on a block page; never contains request content.
    pub reason: String,
    pub service: Option<Arc<AiService>>,
    pub body_truncated: bool,
}

pub fn decide(snapshot: &Snapshot, request: &RequestFacts<'_>) -> Verdict {
    let service = snapshot.catalog.service_for_host(request.host).cloned();
    let (decision, reason) = match &service {
        Some(service) if service.approval_status == ApprovalStatus::Prohibited => (
            Decision::Deny,
            format!(
                "{} is prohibited by your organization's AI usage policy.",
                service.name
            ),
        ),
        Some(service) => (
            Decision::Allow,
            format!("{} is not prohibited.", service.name),
        ),
        None => (
            Decision::Allow,
            "Not an AI service in the catalog.".to_owned(),
        ),
    };
    Verdict {
        decision_id: Uuid::now_v7(),
        decision,
        reason,
        service,
        body_truncated: request.body_truncated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn snapshot() -> Snapshot {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/catalog");
        Snapshot {
            catalog: Catalog::load_dir(&dir).unwrap(),
        }
    }

    fn facts<'a>(host: &'a str, headers: &'a http::HeaderMap) -> RequestFacts<'a> {
        RequestFacts {
            method: "POST",
            scheme: "https",
            host,
            port: 443,
            path: "/v1/chat/completions",
            headers,
            body: b"{}",
            body_truncated: false,
            client: None,
            source: Source::ProxyIntercepted,
        }
    }

    #[test]
    fn prohibited_service_is_denied_and_named() {
        let headers = http::HeaderMap::new();
        let verdict = decide(&snapshot(), &facts("api.deepseek.com", &headers));
        assert_eq!(verdict.decision, Decision::Deny);
        assert!(verdict.reason.contains("DeepSeek"), "{}", verdict.reason);
        assert!(verdict.service.is_some());
    }

    #[test]
    fn other_services_and_unknown_hosts_are_allowed() {
        let headers = http::HeaderMap::new();
        let snapshot = snapshot();
        assert_eq!(
            decide(&snapshot, &facts("api.openai.com", &headers)).decision,
            Decision::Allow
        );
        let unknown = decide(&snapshot, &facts("example.org", &headers));
        assert_eq!(unknown.decision, Decision::Allow);
        assert!(unknown.service.is_none());
    }

    #[test]
    fn decision_ids_are_unique() {
        let headers = http::HeaderMap::new();
        let snapshot = snapshot();
        let a = decide(&snapshot, &facts("api.openai.com", &headers));
        let b = decide(&snapshot, &facts("api.openai.com", &headers));
        assert_ne!(a.decision_id, b.decision_id);
    }
}

//! A bypassed AI host is tunnelled without inspection, but never undecided: the policy is asked
//! at CONNECT with what is known then (the user from tunnel authentication or the client address,
//! the service from the host name, the content unclassified). A DENY there holds whatever a
//! request would carry, so the bypass is not used and the host is blocked; anything else opens
//! the tunnel, recorded as an ALLOW whose reason names the bypass (`content_classified = false`).
//!
//! The decision is the request pipeline's own (`pipeline::decide`, `pipeline::decision_record`),
//! fed a request with no headers and no body.

use std::net::SocketAddr;
use std::time::Instant;

use tracing::{info, warn};

use super::route::BypassKind;
use super::FrontContext;
use crate::audit::{AuditRecord, DecisionRecord};
use crate::identity::{Claims, Identity, TunnelUser};
use crate::pipeline::{self, Decision, RequestFacts, Source};

/// The policy's answer for a host at CONNECT, and its decision row (not yet written).
pub struct ConnectVerdict {
    host: String,
    decision: Decision,
    reason: String,
    record: DecisionRecord,
}

/// Who and where, as known when the tunnel is asked for.
pub struct ConnectFacts<'a> {
    pub client: SocketAddr,
    pub tunnel_user: Option<TunnelUser>,
    pub host: &'a str,
    pub port: u16,
    pub ja4: Option<&'a str>,
    pub source: Source,
}

/// Decides `facts.host` without content (not recorded yet: see [`ConnectVerdict::record`]).
pub async fn decide(front: &FrontContext, facts: &ConnectFacts<'_>) -> ConnectVerdict {
    let shared = &front.shared;
    let headers = http::HeaderMap::new();
    let claims = Claims {
        client: Some(facts.client.ip()),
        headers: &headers,
        tunnel_user: facts.tunnel_user,
        proxy_auth_applies: false,
    };
    // Proxy authentication does not apply here, so this cannot refuse; stay anonymous if it did.
    let identity = Box::pin(shared.identity.identify(&claims))
        .await
        .unwrap_or_else(|_| Identity::anonymous());
    let request = RequestFacts {
        method: "CONNECT",
        scheme: "https",
        host: facts.host,
        port: facts.port,
        path: "/",
        query: None,
        headers: &headers,
        body: &[],
        body_truncated: false,
        client: Some(facts.client),
        source: facts.source,
        ja4: facts.ja4,
        identity: &identity,
    };
    let deciding = Instant::now();
    let snapshot = shared.snapshot.load();
    let verdict = pipeline::decide(&snapshot, &request);
    let record = pipeline::decision_record(&request, &verdict, deciding.elapsed());
    ConnectVerdict {
        host: facts.host.to_owned(),
        decision: verdict.decision,
        reason: verdict.reason.clone(),
        record,
    }
}

impl ConnectVerdict {
    /// The policy denies the host whatever a request would carry: the bypass must not be used.
    pub fn denies(&self) -> bool {
        self.decision == Decision::Deny
    }

    /// The policy's reason, shown to the refused client (never request content).
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Writes the decision row: a DENY as decided, anything else as the ALLOW of an uninspected
    /// tunnel through `bypass`. `evidence` says why a learned bypass exists.
    pub fn record(self, front: &FrontContext, bypass: BypassKind, evidence: Option<&str>) {
        let (host, mut record) = (self.host, self.record);
        if self.decision == Decision::Deny {
            warn!(
                %host,
                bypass = bypass.as_str(),
                decision_id = %record.decision_id,
                "Policy denies a bypassed host at CONNECT; blocked instead of tunnelled."
            );
            record.reason = format!(
                "{} (at CONNECT; {} not used)",
                record.reason,
                bypass.as_str()
            );
        } else {
            info!(
                %host,
                bypass = bypass.as_str(),
                policy = self.decision.as_str(),
                decision_id = %record.decision_id,
                "Bypassed host tunnelled without inspection."
            );
            record.reason = match evidence {
                Some(evidence) => format!(
                    "tunnelled without inspection: {}; evidence: {evidence}; policy at CONNECT without content: {}",
                    bypass.as_str(),
                    self.decision.as_column()
                ),
                None => format!(
                    "tunnelled without inspection: {}; policy at CONNECT without content: {}",
                    bypass.as_str(),
                    self.decision.as_column()
                ),
            };
            record.decision = Decision::Allow.as_column().to_owned();
            record.violation = None;
        }
        crate::metrics::REQUESTS_TOTAL
            .with_label_values(&[if self.decision == Decision::Deny {
                Decision::Deny.as_str()
            } else {
                Decision::Allow.as_str()
            }])
            .inc();
        front
            .shared
            .audit
            .record(AuditRecord::Decision(Box::new(record)));
    }
}

//! The request pipeline: the one place that knows the order of the decision stages.
//!
//! Every plain-HTTP and every intercepted request reaches `decide` once, with its head and the
//! buffered body prefix, before any byte goes upstream: fingerprint (which service), inspect
//! (what is sent), then the verdict. `decide` is a plain function of its inputs so it can be
//! tested and benchmarked without sockets.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;

use crate::audit::{
    severity_for_risk, DecisionRecord, ViolationRecord, ANONYMOUS_USER, BUILTIN_APPROVAL_POLICY,
    BUILTIN_APPROVAL_POLICY_NAME,
};
use crate::catalog::{AiService, ApprovalStatus, Catalog, Fingerprint, RequestSignals};
use crate::inspect::{Inspection, Inspector};

/// Everything a request is judged against, swapped atomically on reload; a request holds one
/// snapshot for its whole life.
#[derive(Debug)]
pub struct Snapshot {
    pub catalog: Catalog,
    pub inspector: Arc<Inspector>,
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
    /// JA4 of the client's ClientHello (intercepted requests).
    pub ja4: Option<&'a str>,
}

impl RequestFacts<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
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

    /// The spelling of the `decisions.decision` column.
    pub fn as_column(self) -> &'static str {
        match self {
            Decision::Allow => "ALLOW",
            Decision::Deny => "DENY",
            Decision::Review => "REVIEW",
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug)]
pub struct Verdict {
    pub decision_id: Uuid,
    pub decision: Decision,
    /// Shown to the user on a block page; never contains request content.
    pub reason: String,
    pub service: Option<Arc<AiService>>,
    pub fingerprint: Fingerprint,
    /// What the body holds; `None` when the request has no body. Holds prompt text in memory
    /// for the request's life only: never logged, only its redacted summary is recorded.
    pub inspection: Option<Box<Inspection>>,
    pub body_truncated: bool,
}

pub fn decide(snapshot: &Snapshot, request: &RequestFacts<'_>) -> Verdict {
    let fingerprint = snapshot.catalog.fingerprint(&RequestSignals {
        host: request.host,
        path: request.path,
        headers: request.headers,
        ja4: request.ja4,
    });
    let inspection = (!request.body.is_empty()).then(|| {
        Box::new(snapshot.inspector.inspect(
            request.header("content-type"),
            request.header("content-encoding"),
            request.body,
            request.body_truncated,
        ))
    });
    let service = fingerprint.service.clone();
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
        fingerprint,
        inspection,
        body_truncated: request.body_truncated,
    }
}

/// The audit record of one decided request. Holds the URL without its query string and never
/// any body content.
pub fn decision_record(
    request: &RequestFacts<'_>,
    verdict: &Verdict,
    evaluation: Duration,
) -> DecisionRecord {
    let service = verdict.service.as_deref();
    let inspection = verdict.inspection.as_deref();
    let action = inspection.map_or("access_ai_service", |i| i.extracted.action().as_str());
    let builtin_matched = verdict.decision != Decision::Allow;
    let violation = builtin_matched.then(|| ViolationRecord {
        violation_id: Uuid::now_v7(),
        violation_type: "unapproved_service".to_owned(),
        policy_id: BUILTIN_APPROVAL_POLICY,
        policy_name: Some(BUILTIN_APPROVAL_POLICY_NAME.to_owned()),
        severity: severity_for_risk(service.map_or(50, |s| s.risk_score)).to_owned(),
    });
    DecisionRecord {
        decision_id: verdict.decision_id,
        request_id: Uuid::now_v7(),
        timestamp: OffsetDateTime::now_utc(),
        user_id: ANONYMOUS_USER,
        user_email: None,
        user_department: None,
        action: action.to_owned(),
        resource_type: if service.is_some() {
            "ai_service"
        } else {
            "url"
        }
        .to_owned(),
        resource_id: service.map(|s| s.service_id),
        resource_name: Some(service.map_or_else(|| request.host.to_owned(), |s| s.name.clone())),
        resource_url: Some(format!(
            "{}://{}{}",
            request.scheme, request.host, request.path
        )),
        decision: verdict.decision.as_column().to_owned(),
        reason: verdict.reason.clone(),
        confidence: (verdict.fingerprint.confidence > 0.0)
            .then_some(f64::from(verdict.fingerprint.confidence)),
        risk_score: service.map(|s| i32::from(s.risk_score)),
        risk_factors: service.and_then(|s| s.risk_factors.clone()),
        policies_evaluated: serde_json::json!([{
            "policy_id": BUILTIN_APPROVAL_POLICY,
            "policy_name": BUILTIN_APPROVAL_POLICY_NAME,
            "matched": builtin_matched,
            "priority": 0,
        }]),
        primary_policy_id: builtin_matched.then_some(BUILTIN_APPROVAL_POLICY),
        source: Some(match request.source {
            Source::ProxyPlain | Source::ProxyIntercepted => "proxy".to_owned(),
        }),
        device_id: None,
        ip_address: request.client.map(|c| c.ip()),
        user_agent: request.header("user-agent").map(str::to_owned),
        content_classified: inspection.is_some(),
        detected_entities: inspection.map(Inspection::detected_entities),
        data_classification: inspection
            .map(|i| {
                i.data_classification()
                    .iter()
                    .map(|c| c.as_str().to_owned())
                    .collect()
            })
            .unwrap_or_default(),
        evaluation_duration_ms: Some(i32::try_from(evaluation.as_millis()).unwrap_or(i32::MAX)),
        explanation: Some(serde_json::json!({
            "rule": "catalog_approval_status",
            "service": service.map(|s| s.slug.as_str()),
            "approval_status": service.map(|s| s.approval_status.as_str()),
            "unknown_ai": verdict.fingerprint.unknown_ai,
            "signals": verdict.fingerprint.signals,
            "content": inspection.map(|i| serde_json::json!({
                "format": i.extracted.format,
                "prompt_chars": i.extracted.prompt_chars,
                "entities": i.counts(),
                "files": i.extracted.files,
                "problem": i.extracted.problem,
            })),
            "body_truncated": verdict.body_truncated,
        })),
        violation,
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
            inspector: Arc::new(Inspector::new(&[], 0.5, 1 << 20).unwrap()),
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
            ja4: None,
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
    fn a_denied_request_records_a_violation_and_no_query_string() {
        let headers = http::HeaderMap::new();
        let mut request = facts("api.deepseek.com", &headers);
        request.path = "/chat/completions";
        let verdict = decide(&snapshot(), &request);
        let record = decision_record(&request, &verdict, Duration::from_micros(5));
        assert_eq!(record.decision, "DENY");
        assert_eq!(
            record.resource_url.as_deref(),
            Some("https://api.deepseek.com/chat/completions")
        );
        let violation = record.violation.unwrap();
        assert_eq!(violation.violation_type, "unapproved_service");
        assert_eq!(violation.severity, "critical");
        assert_eq!(record.primary_policy_id, Some(BUILTIN_APPROVAL_POLICY));
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

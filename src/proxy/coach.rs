//! REVIEW coaching: the business justification a user gives on the coaching page becomes a
//! temporary exception for them and that service, then they are sent back where they were.
//!
//! The form posts to a path the gateway reserves on every intercepted host, so the browser
//! stays on the service's origin and no cross-site request is involved. The service is taken
//! from the host the request was made to, never from the form; a host outside the catalog
//! (shadow AI) is excused by name.

use std::net::SocketAddr;
use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;

use crate::audit::{AuditEventRecord, AuditRecord, ANONYMOUS_USER};
use crate::identity::Identity;
use crate::pipeline::{self, Decision, RequestFacts, Snapshot, Source};
use crate::policy::NewException;
use crate::server::Shared;

/// Where the coaching page's form posts; answered by the gateway, never forwarded.
pub const JUSTIFY_PATH: &str = "/.aigate/justify";

const MIN_JUSTIFICATION: usize = 10;
const MAX_JUSTIFICATION: usize = 2000;

/// What the gateway answers to a justification.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// 303 back to the page the user wanted.
    Redirect(String),
    /// A status and a plain-text explanation.
    Refused(u16, String),
}

pub async fn justify(
    shared: &Shared,
    snapshot: &Snapshot,
    host: &str,
    form: &[u8],
    client: Option<SocketAddr>,
    identity: &Identity,
) -> Reply {
    // A catalog service is excused by id (all its domains); an AI service outside the catalog
    // by its host name.
    let service = snapshot.catalog.service_for_host(host);
    let service_name = service.map_or(host, |s| s.name.as_str());
    let mut justification = String::new();
    let mut return_to = String::from("/");
    for (name, value) in form_urlencoded::parse(form) {
        match name.as_ref() {
            "justification" => justification = value.trim().to_owned(),
            // Only a local path: the redirect must not become an open redirector.
            "return_to"
                if value.starts_with('/') && !value.starts_with("//") && !value.contains('\\') =>
            {
                return_to = value.into_owned()
            }
            _ => {}
        }
    }
    let length = justification.chars().count();
    if !(MIN_JUSTIFICATION..=MAX_JUSTIFICATION).contains(&length) {
        return Reply::Refused(
            400,
            format!("A business justification of {MIN_JUSTIFICATION} to {MAX_JUSTIFICATION} characters is required.\n"),
        );
    }

    // Which policy put the page under review: judge the page the user wants to return to.
    let headers = http::HeaderMap::new();
    let path = return_to.split('?').next().unwrap_or("/");
    let facts = RequestFacts {
        method: "GET",
        scheme: "https",
        host,
        port: 443,
        path,
        query: None,
        headers: &headers,
        body: &[],
        body_truncated: false,
        client,
        source: Source::ProxyIntercepted,
        ja4: None,
        identity,
    };
    let verdict = pipeline::decide(snapshot, &facts);
    match verdict.decision {
        Decision::Allow => return Reply::Redirect(return_to),
        Decision::Deny => {
            return Reply::Refused(
                403,
                "This service is denied, not under review; a justification cannot lift a denial.\n"
                    .into(),
            )
        }
        Decision::Review => {}
    }

    let config = &shared.config().policy;
    let user_id = identity.user.as_ref().map_or(ANONYMOUS_USER, |u| u.id);
    let now = OffsetDateTime::now_utc();
    let lasts = Duration::from_secs(config.justification_exception_secs);
    let exception = NewException {
        exception_id: Uuid::now_v7(),
        exception_type: "temporary",
        reason: format!("Business justification given on the review page of {service_name}"),
        justification,
        user_id,
        ai_service_id: service.map(|s| s.service_id),
        policy_id: verdict.outcome.primary.as_ref().map(|(id, _)| *id),
        // A user's own justification lifts a review, never a denial.
        conditions: Some(match service {
            Some(_) => serde_json::json!({ "decisions": ["review"] }),
            None => serde_json::json!({ "decisions": ["review"], "hosts": [host] }),
        }),
        status: config.justification_status.as_str(),
        requested_by: user_id,
        effective_from: now,
        effective_until: Some(now + lasts),
    };
    if let Err(error) = shared.store.insert_exception(&exception).await {
        tracing::warn!(%error, service = service_name, "Cannot store a review justification.");
        return Reply::Refused(
            503,
            "The justification could not be recorded; try again shortly.\n".into(),
        );
    }
    shared.audit.record(AuditRecord::Event(Box::new(AuditEventRecord {
        actor_id: Some(user_id),
        actor_email: identity.user.as_ref().map(|u| u.email.clone()),
        actor_type: Some("user".to_owned()),
        source: Some("proxy".to_owned()),
        ip_address: client.map(|c| c.ip()),
        decision_id: Some(verdict.decision_id),
        event_data: Some(serde_json::json!({
            "exception_id": exception.exception_id,
            "service": service.map_or(host, |s| s.slug.as_str()),
            "policy_id": exception.policy_id,
            "status": exception.status,
            "effective_until": exception.effective_until.and_then(|u| u.format(&time::format_description::well_known::Rfc3339).ok()),
        })),
        ..AuditEventRecord::about_host("exception_requested", "info", "justify_review", host)
    })));
    tracing::info!(
        service = service_name,
        status = exception.status,
        "Review justified; temporary exception created."
    );
    if let Err(error) = crate::server::reload(shared).await {
        tracing::warn!(%error, "Reload after a justification failed; the exception applies at the next reload.");
    }
    if exception.status == "approved" {
        Reply::Redirect(return_to)
    } else {
        Reply::Refused(202, "Thank you. Your justification was sent for approval; you will be able to continue once it is approved.\n".into())
    }
}

//! The request pipeline: the one place that knows the order of the decision stages.
//!
//! Every plain-HTTP and every intercepted request reaches `decide` once, with its head and the
//! buffered body prefix, before any byte goes upstream: fingerprint (which service), inspect
//! (what is sent), then the verdict. `decide` is a plain function of its inputs so it can be
//! tested and benchmarked without sockets. The stages' own work lives in their modules: the
//! policy input is `policy`'s, the audit record of a decision `audit`'s.

use std::borrow::Cow;
use std::sync::Arc;

use time::OffsetDateTime;
use uuid::Uuid;

use crate::audit::ANONYMOUS_USER;
use crate::catalog::{Catalog, RequestSignals};
use crate::inspect::{Inspection, Inspector, Origin};
use crate::policy::{Exceptions, InputBuilder, Outcome, PolicySet, Subject};

pub use crate::audit::decision_record;
pub use crate::policy::facts::{RequestFacts, Source, Verdict};
pub use crate::policy::Decision;

/// Everything a request is judged against, swapped atomically on reload; a request holds one
/// snapshot for its whole life.
#[derive(Debug)]
pub struct Snapshot {
    /// Shared with the snapshots that only change the exceptions ([`Snapshot::with_exceptions`]).
    pub catalog: Arc<Catalog>,
    pub inspector: Arc<Inspector>,
    pub policies: Arc<PolicySet>,
    pub exceptions: Exceptions,
    /// The parts of the policy input that are the same for every request of the snapshot.
    input: Arc<InputBuilder>,
}

impl Snapshot {
    pub fn new(
        catalog: Catalog,
        inspector: Arc<Inspector>,
        policies: PolicySet,
        exceptions: Exceptions,
    ) -> Snapshot {
        let input = InputBuilder::new(&catalog, &policies);
        Snapshot {
            catalog: Arc::new(catalog),
            inspector,
            policies: Arc::new(policies),
            exceptions,
            input: Arc::new(input),
        }
    }

    /// This snapshot with another exception set: a new exception (a user's justification) must
    /// not pay for recompiling every policy. The policy set keeps its generation, so the
    /// serving threads keep their compiled workers too.
    pub fn with_exceptions(&self, exceptions: Exceptions) -> Snapshot {
        Snapshot {
            catalog: Arc::clone(&self.catalog),
            inspector: Arc::clone(&self.inspector),
            policies: Arc::clone(&self.policies),
            exceptions,
            input: Arc::clone(&self.input),
        }
    }
}

pub fn decide(snapshot: &Snapshot, request: &RequestFacts<'_>) -> Verdict {
    let fingerprint = snapshot.catalog.fingerprint(&RequestSignals {
        host: request.host,
        path: request.path,
        headers: request.headers,
        ja4: request.ja4,
    });
    let inspection = inspect(snapshot, request);
    let service = fingerprint.service.clone();
    let input = snapshot
        .input
        .build(request, &fingerprint, inspection.as_deref());
    let data_types: Vec<String> = inspection
        .as_deref()
        .map(|i| {
            let mut types: Vec<String> = i.counts().into_iter().map(|c| c.kind).collect();
            types.extend(
                i.data_classification()
                    .iter()
                    .map(|c| c.as_str().to_owned()),
            );
            types
        })
        .unwrap_or_default();
    let approval_status = match (&service, fingerprint.unknown_ai) {
        (Some(service), _) => Some(service.approval_status.as_str()),
        (None, true) => Some("unknown"),
        (None, false) => None,
    };
    let user = request.identity.user.as_deref();
    let subject = Subject {
        user_id: user.map_or(ANONYMOUS_USER, |u| u.id),
        user_email: user.map(|u| u.email.as_str()),
        department: user.and_then(|u| u.department.as_deref()),
        groups: user.map_or(&[], |u| u.groups.as_slice()),
        service_id: service.as_ref().map(|s| s.service_id),
        service_slug: service.as_ref().map(|s| s.slug.as_str()),
        approval_status,
        data_types,
        host: Some(request.host),
        client: Some(crate::policy::exception::ClientSignals {
            ip: request.client.map(|c| c.ip()),
            user_agent: request.header("user-agent"),
        }),
    };
    let mut outcome = snapshot.policies.evaluate_document(
        &subject,
        &input,
        &snapshot.exceptions,
        OffsetDateTime::now_utc(),
    );
    let ai = service.is_some() || fingerprint.unknown_ai || request.source.intercepted();
    if let Some(problem) = inspection
        .as_deref()
        .filter(|i| ai && i.extracted.unreadable)
        .and_then(|i| i.extracted.problem.as_deref())
    {
        refuse_unreadable(&mut outcome, problem);
    }
    Verdict {
        decision_id: Uuid::now_v7(),
        decision: outcome.decision,
        reason: outcome.reason.clone(),
        service,
        fingerprint,
        inspection,
        outcome: Arc::new(outcome),
        input,
        body_truncated: request.body_truncated,
    }
}

/// What the request carries: its body, and secrets in its query and header values. `None` for a
/// request without a body and without a secret elsewhere, as before there was anything to read.
fn inspect(snapshot: &Snapshot, request: &RequestFacts<'_>) -> Option<Box<Inspection>> {
    let outside = outside_body(request);
    if request.body.is_empty() && outside.is_empty() {
        return None;
    }
    let outside: Vec<(Origin, &str)> = outside
        .iter()
        .map(|(origin, value)| (origin.clone(), value.as_ref()))
        .collect();
    let inspection = snapshot.inspector.inspect_request(
        request.header("content-type"),
        request.header_list("content-encoding").as_deref(),
        request.body,
        request.body_truncated,
        &outside,
    );
    (!request.body.is_empty() || !inspection.entities.is_empty()).then(|| Box::new(inspection))
}

/// A body that could not be decoded as labelled is denied whatever the policies said: it was
/// not inspected, and the service may read it differently. Never an exception's business.
fn refuse_unreadable(outcome: &mut Outcome, problem: &str) {
    outcome.decision = Decision::Deny;
    outcome.reason = format!(
        "The request body could not be inspected ({problem}), so it is refused. Send it \
         uncompressed or with a supported Content-Encoding (gzip, deflate, br, zstd)."
    );
    outcome.primary = None;
    outcome.redact = false;
    outcome.inject_headers.clear();
    outcome.violation_type = Some("uninspectable_content".to_owned());
}

/// The strings a request carries outside its body, inspected for secrets: query
/// parameters and the values of headers that are not HTTP machinery or the service's own
/// credentials (an API key sent to its API is how the API is called, not a leak).
fn outside_body<'a>(request: &'a RequestFacts<'_>) -> Vec<(Origin, Cow<'a, str>)> {
    let mut strings = Vec::new();
    if let Some(query) = request.query {
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            let origin = Origin::Query(name.to_string());
            strings.push((origin.clone(), name));
            strings.push((origin, value));
        }
    }
    for (name, value) in request.headers {
        if !is_machinery_header(name.as_str()) {
            let value = String::from_utf8_lossy(value.as_bytes());
            strings.push((Origin::Header(name.clone()), value));
        }
    }
    strings
}

/// Headers whose values are protocol machinery, or the credentials a client sends to the
/// service it calls; every other header value is inspected for secrets.
fn is_machinery_header(name: &str) -> bool {
    matches!(
        name,
        "host"
            | "connection"
            | "keep-alive"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "expect"
            | "content-length"
            | "content-type"
            | "content-encoding"
            | "cache-control"
            | "pragma"
            | "priority"
            | "range"
            | "date"
            | "dnt"
            | "origin"
            | "via"
            | "forwarded"
            | "authorization"
            | "proxy-authorization"
            | "cookie"
            | "x-api-key"
            | "api-key"
            | "x-goog-api-key"
    ) || name.starts_with("accept")
        || name.starts_with("if-")
        || name.starts_with("sec-")
        || name.starts_with("x-forwarded-")
}

#[cfg(test)]
mod tests;

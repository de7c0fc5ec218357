//! The request pipeline: the one place that knows the order of the decision stages.
//!
//! Every plain-HTTP and every intercepted request reaches `decide` once, with its head and the
//! buffered body prefix, before any byte goes upstream: fingerprint (which service), inspect
//! (what is sent), then the verdict. `decide` is a plain function of its inputs so it can be
//! tested and benchmarked without sockets.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;

use serde_json::{json, Value};

use crate::audit::{
    severity_for_risk, DecisionRecord, JsonText, LateExplanation, PendingExplanation,
    ViolationRecord, ANONYMOUS_USER, BUILTIN_APPROVAL_POLICY, BUILTIN_APPROVAL_POLICY_NAME,
};
use crate::catalog::{AiService, Catalog, Fingerprint, RequestSignals};
use crate::identity::{DeviceContext, Identity, UserContext};
use crate::inspect::{DataClass, Inspection, Inspector, Origin};
use crate::policy::{Exceptions, Outcome, PolicySet, Subject};

/// Everything a request is judged against, swapped atomically on reload; a request holds one
/// snapshot for its whole life.
#[derive(Debug)]
pub struct Snapshot {
    /// Shared with the snapshots that only change the exceptions ([`Snapshot::with_exceptions`]).
    pub catalog: Arc<Catalog>,
    pub inspector: Arc<Inspector>,
    pub policies: Arc<PolicySet>,
    pub exceptions: Exceptions,
    /// Each service's `resource` document of the policy input, built once per snapshot: it is
    /// the largest part of the input and the same for every request to the service.
    resources: Arc<HashMap<Uuid, regorus::Value>>,
    /// Whether `input.request.headers` is worth building: no shipped policy reads it, and the
    /// map cost a tree node and two strings a header on every request.
    headers_read: bool,
}

impl Snapshot {
    pub fn new(
        catalog: Catalog,
        inspector: Arc<Inspector>,
        policies: PolicySet,
        exceptions: Exceptions,
    ) -> Snapshot {
        let resources = catalog
            .services()
            .iter()
            .map(|s| (s.service_id, regorus::Value::from(service_resource(s))))
            .collect();
        let headers_read = policies.may_read(&["request", "headers"]);
        Snapshot {
            catalog: Arc::new(catalog),
            inspector,
            policies: Arc::new(policies),
            exceptions,
            resources: Arc::new(resources),
            headers_read,
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
            resources: Arc::clone(&self.resources),
            headers_read: self.headers_read,
        }
    }
}

/// Documents of the policy input that never change, converted once.
static ANONYMOUS_USER_INPUT: LazyLock<regorus::Value> = LazyLock::new(|| {
    regorus::Value::from(json!({
        "id": ANONYMOUS_USER, "email": null, "department": null, "department_chain": [],
        "groups": [], "roles": [], "risk_score": 0, "clearance_level": null,
        "employee_type": null, "status": null, "suspended": false, "allowed_ai_services": [],
        "prohibited_ai_services": [], "authenticated": false, "method": "anonymous",
    }))
});
static METHOD_KEY: LazyLock<regorus::Value> = LazyLock::new(|| regorus::Value::from("method"));
static NO_DEVICE_INPUT: LazyLock<regorus::Value> = LazyLock::new(|| {
    regorus::Value::from(json!({"id": null, "hostname": null, "crown_jewel": false,
        "sensitivity": null, "compliance_status": null, "data_classification": []}))
});
static NO_HEADERS_INPUT: LazyLock<regorus::Value> = LazyLock::new(regorus::Value::new_object);
static UNCLASSIFIED_CONTENT_INPUT: LazyLock<regorus::Value> = LazyLock::new(|| {
    regorus::Value::from(
        json!({"classified": false, "entities": [], "data_classification": [],
        "prompt_chars": 0, "truncated": false, "files": []}),
    )
});

/// How the request reached the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Absolute-form HTTP request to the explicit proxy.
    ProxyPlain,
    /// Request decrypted from an intercepted CONNECT tunnel.
    ProxyIntercepted,
    /// Plain HTTP redirected to the transparent listener (origin-form, `Host` names the target).
    TransparentPlain,
    /// Request decrypted from a redirected TLS connection (SNI names the target).
    TransparentIntercepted,
}

impl Source {
    /// Decrypted from TLS the gateway chose to intercept (an AI host by configuration).
    pub fn intercepted(self) -> bool {
        matches!(
            self,
            Source::ProxyIntercepted | Source::TransparentIntercepted
        )
    }

    /// The decision's `source` column and the policy input's `context.mode`.
    pub fn mode(self) -> &'static str {
        match self {
            Source::ProxyPlain | Source::ProxyIntercepted => "proxy",
            Source::TransparentPlain | Source::TransparentIntercepted => "transparent",
        }
    }
}

/// The facts of one request, borrowed from the proxy session.
#[derive(Debug)]
pub struct RequestFacts<'a> {
    pub method: &'a str,
    pub scheme: &'a str,
    pub host: &'a str,
    pub port: u16,
    pub path: &'a str,
    /// The URL's query string, without the `?` (inspected for secrets, never recorded).
    pub query: Option<&'a str>,
    pub headers: &'a http::HeaderMap,
    /// The buffered body prefix (at most the configured cap).
    pub body: &'a [u8],
    pub body_truncated: bool,
    pub client: Option<SocketAddr>,
    pub source: Source,
    /// JA4 of the client's ClientHello (intercepted requests).
    pub ja4: Option<&'a str>,
    /// Who sent it.
    pub identity: &'a Identity,
}

impl RequestFacts<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every value of a list-valued header as the one comma-separated list HTTP says they are:
    /// an origin that reads the second `Content-Encoding` must not see a body inspected by the
    /// first. A value that is not text is kept (lossily) so that it fails to decode, not vanishes.
    fn header_list(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        let mut values = self.headers.get_all(name).iter();
        let first = values.next()?;
        let text = |v: &http::HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned();
        match (values.next(), first.to_str()) {
            (None, Ok(only)) => Some(std::borrow::Cow::Borrowed(only)),
            _ => {
                let all: Vec<String> = self.headers.get_all(name).iter().map(text).collect();
                Some(std::borrow::Cow::Owned(all.join(", ")))
            }
        }
    }

    /// The strings a request carries outside its body, inspected for secrets: query
    /// parameters and the values of headers that are not HTTP machinery or the service's own
    /// credentials (an API key sent to its API is how the API is called, not a leak).
    fn outside_body(&self) -> Vec<(Origin, std::borrow::Cow<'_, str>)> {
        let mut strings = Vec::new();
        if let Some(query) = self.query {
            for (name, value) in form_urlencoded::parse(query.as_bytes()) {
                let origin = Origin::Query(name.to_string());
                strings.push((origin.clone(), name));
                strings.push((origin, value));
            }
        }
        for (name, value) in self.headers {
            if !is_machinery_header(name.as_str()) {
                let value = String::from_utf8_lossy(value.as_bytes());
                strings.push((Origin::Header(name.clone()), value));
            }
        }
        strings
    }

    /// `scheme://host/path`, without `format!`'s machinery (twice per request).
    fn url(&self) -> String {
        let mut url =
            String::with_capacity(self.scheme.len() + 3 + self.host.len() + self.path.len());
        for part in [self.scheme, "://", self.host, self.path] {
            url.push_str(part);
        }
        url
    }
}

pub use crate::policy::Decision;

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
    /// Shared with a stop's explanation until the audit writer has rendered it.
    pub outcome: Arc<Outcome>,
    /// The policy input (content as counts and types only), for the explanation of a stop.
    pub input: regorus::Value,
    pub body_truncated: bool,
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
    let input = policy_input(snapshot, request, &fingerprint, inspection.as_deref());
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
    let outside = request.outside_body();
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

/// A policy-input object built as regorus values directly: converting a JSON tree afterwards
/// cost as much as building it. Each call site's keys are allocated once, in a template object
/// (sorted and frozen); a request clones the template and sets the values in place, so an object
/// costs one allocation instead of one per key plus a sort and a tree.
macro_rules! object {
    ($($key:literal => $value:expr),+ $(,)?) => {{
        const KEYS: usize = [$($key),+].len();
        static SHAPE: LazyLock<Shape<KEYS>> = LazyLock::new(|| Shape::new([$($key),+]));
        SHAPE.build([$($value),+])
    }};
}

struct Shape<const N: usize> {
    keys: [regorus::Value; N],
    template: regorus::Value,
}

impl<const N: usize> Shape<N> {
    fn new(names: [&'static str; N]) -> Shape<N> {
        let keys = names.map(regorus::Value::from);
        let template = keys
            .iter()
            .map(|key| (key.clone(), regorus::Value::Null))
            .collect::<BTreeMap<_, _>>()
            .into();
        Shape { keys, template }
    }

    fn build(&self, values: [regorus::Value; N]) -> regorus::Value {
        let mut built = self.template.clone();
        for (key, value) in self.keys.iter().zip(values) {
            set_member(&mut built, key, value);
        }
        built
    }
}

/// Writes the object's existing member `key` in place: the frozen storage stays, where an
/// `insert` takes it apart and puts it back. Only the first write to a shared template copies it.
fn set_member(object: &mut regorus::Value, key: &regorus::Value, value: regorus::Value) {
    if let Some(slot) = object
        .as_object_mut()
        .ok()
        .and_then(|fields| fields.get_mut(key))
    {
        *slot = value;
    }
}

/// The policy input document of DESIGN.md section 3. Content appears as counts and types only.
/// Built as regorus values: the parts that do not change per request are shared, not rebuilt.
fn policy_input(
    snapshot: &Snapshot,
    request: &RequestFacts<'_>,
    fingerprint: &Fingerprint,
    inspection: Option<&Inspection>,
) -> regorus::Value {
    let resource = match fingerprint.service.as_deref() {
        Some(s) => match snapshot.resources.get(&s.service_id) {
            Some(resource) => resource.clone(),
            // A service outside this snapshot's catalog cannot be fingerprinted; stay correct.
            None => regorus::Value::from(service_resource(s)),
        },
        None if fingerprint.unknown_ai => regorus::Value::from(json!({
            "type": "ai_service", "id": null, "name": request.host, "vendor": null, "service_type": null,
            "risk_tier": "high", "risk_score": 70, "approval_status": "unknown", "approved_for": [],
            "prohibited_for": [], "capabilities": [], "data_handling": null, "certifications": [], "data_regions": [],
        })),
        None => regorus::Value::from(json!({
            "type": "url", "id": null, "name": request.host, "approval_status": null, "approved_for": [],
            "prohibited_for": [], "capabilities": [], "certifications": [], "data_regions": [],
        })),
    };
    let headers = if snapshot.headers_read {
        request
            .headers
            .iter()
            .filter(|(name, _)| {
                !matches!(
                    name.as_str(),
                    "authorization" | "cookie" | "proxy-authorization" | "x-api-key"
                )
            })
            .filter_map(|(name, value)| {
                Some((
                    regorus::Value::from(name.as_str()),
                    regorus::Value::from(value.to_str().ok()?),
                ))
            })
            .collect::<BTreeMap<_, _>>()
            .into()
    } else {
        NO_HEADERS_INPUT.clone()
    };
    let content = match inspection {
        Some(i) => {
            let counts = i.counts();
            object! {
                "classified" => true.into(),
                "entities" => serialized(&counts),
                "data_classification" => array(i.data_classification().iter().map(|c| c.as_str())),
                "prompt_chars" => i.extracted.prompt_chars.into(),
                "truncated" => i.extracted.truncated.into(),
                "files" => serialized(&i.extracted.files),
            }
        }
        None => UNCLASSIFIED_CONTENT_INPUT.clone(),
    };
    let identity = request.identity;
    let user = match identity.user.as_deref() {
        Some(u) => {
            let (method, document) = u
                .policy_input
                .get_or_init(|| (identity.method, user_input(u, identity.method)));
            if *method == identity.method {
                document.clone()
            } else {
                user_input(u, identity.method)
            }
        }
        // The resolver's only method without a user: shared as it is, where setting the member
        // copied the whole document per request.
        None if identity.method == "anonymous" => ANONYMOUS_USER_INPUT.clone(),
        None => {
            let mut anonymous = ANONYMOUS_USER_INPUT.clone();
            set_member(&mut anonymous, &METHOD_KEY, identity.method.into());
            anonymous
        }
    };
    let device = match identity.device.as_deref() {
        Some(d) => d.policy_input.get_or_init(|| device_input(d)).clone(),
        None => NO_DEVICE_INPUT.clone(),
    };
    let action = inspection.map_or("access_ai_service", |i| i.extracted.action().as_str());
    let request_input = object! {
        "method" => request.method.into(),
        "scheme" => request.scheme.into(),
        "host" => request.host.into(),
        "port" => u64::from(request.port).into(),
        "path" => request.path.into(),
        "url" => request.url().into(),
        "headers" => headers,
        "content_type" => optional(request.header("content-type")),
        "body_bytes" => request.body.len().into(),
        "action" => action.into(),
    };
    let time = OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let source_ip = request
        .client
        .map_or(regorus::Value::Null, |c| c.ip().to_string().into());
    let context = object! {
        "time" => time.into(),
        "source_ip" => source_ip,
        "mode" => request.source.mode().into(),
        "location_type" => "corporate".into(),
    };
    object! {
        "user" => user,
        "device" => device,
        "resource" => resource,
        "request" => request_input,
        "content" => content,
        "context" => context,
    }
}

/// `input.user` of an attributed request. Built once per cached user context (and method).
fn user_input(u: &UserContext, method: &'static str) -> regorus::Value {
    object! {
        "id" => u.id.to_string().into(),
        "email" => u.email.as_str().into(),
        "department" => optional(u.department.as_deref()),
        "department_chain" => strings(&u.department_chain),
        "groups" => strings(&u.groups),
        "roles" => strings(&u.roles),
        "risk_score" => u.risk_score.into(),
        "clearance_level" => optional(u.clearance_level.as_deref()),
        "employee_type" => optional(u.employee_type.as_deref()),
        "status" => u.status.as_str().into(),
        "suspended" => (u.status == "suspended").into(),
        "allowed_ai_services" => strings(&u.allowed_ai_services),
        "prohibited_ai_services" => strings(&u.prohibited_ai_services),
        "authenticated" => true.into(),
        "method" => method.into(),
    }
}

/// `input.device` of a request from a known asset. Built once per cached device context.
fn device_input(d: &DeviceContext) -> regorus::Value {
    object! {
        "id" => d.id.to_string().into(),
        "hostname" => optional(d.hostname.as_deref()),
        "crown_jewel" => d.crown_jewel.into(),
        "sensitivity" => optional(d.sensitivity.as_deref()),
        "compliance_status" => optional(d.compliance_status.as_deref()),
        "data_classification" => strings(&d.data_classification),
    }
}

fn optional(value: Option<&str>) -> regorus::Value {
    value.map_or(regorus::Value::Null, regorus::Value::from)
}

fn array<'a>(values: impl Iterator<Item = &'a str>) -> regorus::Value {
    values.map(regorus::Value::from).collect::<Vec<_>>().into()
}

fn strings(values: &[String]) -> regorus::Value {
    array(values.iter().map(String::as_str))
}

/// A rarely non-empty list (entity counts, uploaded files) through its serde form.
fn serialized<T: serde::Serialize>(values: &[T]) -> regorus::Value {
    if values.is_empty() {
        return regorus::Value::new_array();
    }
    serde_json::to_value(values).map_or(regorus::Value::Null, regorus::Value::from)
}

/// A catalog service as the policy input's `resource`.
fn service_resource(s: &AiService) -> Value {
    json!({
        "type": "ai_service", "id": s.service_id, "name": s.name, "vendor": s.vendor,
        "service_type": s.service_type, "risk_tier": s.risk_tier.as_str(), "risk_score": s.risk_score,
        "approval_status": s.approval_status.as_str(), "approved_for": s.approved_for,
        "prohibited_for": s.prohibited_for, "capabilities": s.capabilities,
        "data_handling": s.data_handling, "certifications": s.certifications, "data_regions": s.data_regions,
        "slug": s.slug, "tenant_restriction_headers": s.tenant_restriction_headers,
    })
}

/// The explanation column of `verdict`. An allowed request (most of the traffic) is explained by
/// its service, signals and policy results, serialized now straight from the verdict (building
/// and dropping a JSON tree of every policy result cost more than the policies themselves). A
/// stop is explained by the whole policy input as well, over a quarter of a stopped request's
/// decision cost to serialize: the audit writer renders that one, off the request path.
fn explanation(verdict: &Verdict) -> (Option<JsonText>, PendingExplanation) {
    if verdict.decision == Decision::Allow {
        let parts = ExplanationParts {
            outcome: &verdict.outcome,
            service: verdict.service.as_deref().map(|s| s.slug.as_str()),
            unknown_ai: verdict.fingerprint.unknown_ai,
            signals: &verdict.fingerprint.signals,
            content: verdict.inspection.as_deref().map(|i| ContentFacts {
                format: i.extracted.format,
                problem: i.extracted.problem.as_deref(),
            }),
            body_truncated: verdict.body_truncated,
            input: None,
        };
        return (parts.render(), PendingExplanation::default());
    }
    let stop = StopExplanation {
        outcome: verdict.outcome.clone(),
        service: verdict.service.clone(),
        unknown_ai: verdict.fingerprint.unknown_ai,
        signals: verdict.fingerprint.signals.clone(),
        content: verdict
            .inspection
            .as_deref()
            .map(|i| (i.extracted.format, i.extracted.problem.clone())),
        body_truncated: verdict.body_truncated,
        input: verdict.input.clone(),
    };
    (None, PendingExplanation::new(stop))
}

/// What an explanation is written from, borrowed from a verdict or from a [`StopExplanation`].
struct ExplanationParts<'a> {
    outcome: &'a Outcome,
    service: Option<&'a str>,
    unknown_ai: bool,
    signals: &'a [crate::catalog::Signal],
    content: Option<ContentFacts<'a>>,
    body_truncated: bool,
    /// The policy input, for a stop.
    input: Option<&'a regorus::Value>,
}

#[derive(serde::Serialize)]
struct ContentFacts<'a> {
    format: &'static str,
    problem: Option<&'a str>,
}

impl ExplanationParts<'_> {
    fn render(self) -> Option<JsonText> {
        #[derive(serde::Serialize)]
        struct Facts<'a> {
            service: Option<&'a str>,
            unknown_ai: bool,
            signals: &'a [crate::catalog::Signal],
            content: Option<ContentFacts<'a>>,
            body_truncated: bool,
            #[serde(skip_serializing_if = "Option::is_none")]
            input: Option<Without<'a>>,
        }
        let facts = Facts {
            service: self.service,
            unknown_ai: self.unknown_ai,
            signals: self.signals,
            content: self.content,
            body_truncated: self.body_truncated,
            // The policy input minus the request headers (cookies, tokens).
            input: self.input.map(|value| Without {
                value,
                path: &["request", "headers"],
            }),
        };
        JsonText::of(&crate::policy::Explanation::stored(self.outcome, facts))
    }
}

/// A stop's explanation, owned (shared pointers, mostly) until the audit writer renders it.
struct StopExplanation {
    outcome: Arc<Outcome>,
    service: Option<Arc<AiService>>,
    unknown_ai: bool,
    signals: Vec<crate::catalog::Signal>,
    content: Option<(&'static str, Option<String>)>,
    body_truncated: bool,
    input: regorus::Value,
}

impl LateExplanation for StopExplanation {
    fn render(&self) -> Option<JsonText> {
        ExplanationParts {
            outcome: &self.outcome,
            service: self.service.as_deref().map(|s| s.slug.as_str()),
            unknown_ai: self.unknown_ai,
            signals: &self.signals,
            content: self.content.as_ref().map(|(format, problem)| ContentFacts {
                format,
                problem: problem.as_deref(),
            }),
            body_truncated: self.body_truncated,
            input: Some(&self.input),
        }
        .render()
    }
}

/// A policy input serialized straight to JSON without the member at `path`: no JSON tree is
/// built and pruned first (that was half the cost of a stopped request's record).
struct Without<'a> {
    value: &'a regorus::Value,
    path: &'a [&'a str],
}

impl serde::Serialize for Without<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let (Some((first, rest)), regorus::Value::Object(fields)) =
            (self.path.split_first(), self.value)
        else {
            return self.value.serialize(serializer);
        };
        let is_first = |key: &regorus::Value| key.as_string().is_ok_and(|k| k.as_ref() == *first);
        // No length hint: JSON needs none, and counting would walk the fields twice.
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in fields.iter() {
            if !is_first(key) {
                map.serialize_entry(key, value)?;
            } else if !rest.is_empty() {
                map.serialize_entry(key, &Without { value, path: rest })?;
            }
        }
        map.end()
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
    let outcome = &verdict.outcome;
    let classes: Vec<DataClass> = inspection
        .map(Inspection::data_classification)
        .unwrap_or_default();
    let class_names: Vec<&str> = classes.iter().map(|c| c.as_str()).collect();
    let risk = crate::policy::risk_score(service.map(|s| s.risk_score), &class_names, 0);
    let (explanation, pending_explanation) = explanation(verdict);
    let violation = (verdict.decision != Decision::Allow).then(|| ViolationRecord {
        violation_id: Uuid::now_v7(),
        violation_type: violation_type(outcome),
        // The column is NOT NULL: a default decision names the built-in approval rule.
        policy_id: outcome
            .primary
            .as_ref()
            .map_or(BUILTIN_APPROVAL_POLICY, |(id, _)| *id),
        policy_name: Some(outcome.primary.as_ref().map_or_else(
            || BUILTIN_APPROVAL_POLICY_NAME.to_owned(),
            |(_, name)| name.clone(),
        )),
        severity: severity_for_risk(u8::try_from(risk).unwrap_or(100)).to_owned(),
    });
    DecisionRecord {
        decision_id: verdict.decision_id,
        request_id: Uuid::now_v7(),
        timestamp: OffsetDateTime::now_utc(),
        user_id: request
            .identity
            .user
            .as_ref()
            .map_or(ANONYMOUS_USER, |u| u.id),
        user_email: request.identity.user.as_ref().map(|u| u.email.clone()),
        user_department: request
            .identity
            .user
            .as_ref()
            .and_then(|u| u.department.clone()),
        action: action.to_owned(),
        resource_type: if service.is_some() {
            "ai_service"
        } else {
            "url"
        }
        .to_owned(),
        resource_id: service.map(|s| s.service_id),
        resource_name: Some(service.map_or_else(|| request.host.to_owned(), |s| s.name.clone())),
        resource_url: Some(request.url()),
        decision: verdict.decision.as_column().to_owned(),
        reason: verdict.reason.clone(),
        confidence: (verdict.fingerprint.confidence > 0.0)
            .then_some(f64::from(verdict.fingerprint.confidence)),
        risk_score: Some(risk),
        risk_factors: service.and_then(|s| s.risk_factors.clone()),
        policies_evaluated: policies_evaluated(&outcome.evaluated),
        primary_policy_id: outcome.primary.as_ref().map(|(id, _)| *id),
        source: Some(request.source.mode().to_owned()),
        device_id: request.identity.device.as_ref().map(|d| d.id),
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
        explanation,
        pending_explanation,
        violation,
    }
}

/// The `policies_evaluated` column: `[{policy_id, policy_name, priority, matched, exception_id?}]`.
/// Written by hand: serde spent some 2,000 instructions a row on field keys, escaping and
/// buffer growth, and every request writes one row per policy. Checking the text with serde's
/// reader cost 11,000 more; `policies_evaluated_is_the_json_serde_would_write` checks the writer.
fn policies_evaluated(results: &[crate::policy::PolicyResult]) -> JsonText {
    let mut json = String::with_capacity(2 + results.len() * 128);
    json.push('[');
    for (i, r) in results.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push_str("{\"policy_id\":");
        push_json_uuid(&mut json, r.policy_id);
        json.push_str(",\"policy_name\":");
        push_json_string(&mut json, &r.policy_name);
        json.push_str(",\"priority\":");
        json.push_str(itoa::Buffer::new().format(r.priority));
        json.push_str(",\"matched\":");
        json.push_str(if r.deny || r.review || r.allow {
            "true"
        } else {
            "false"
        });
        if let Some(exception) = r.exception_id {
            json.push_str(",\"exception_id\":");
            push_json_uuid(&mut json, exception);
        }
        json.push('}');
    }
    json.push(']');
    JsonText::written(json)
}

/// `id` as a JSON string literal, hyphenated lower case as serde writes it.
fn push_json_uuid(json: &mut String, id: Uuid) {
    json.push('"');
    json.push_str(id.hyphenated().encode_lower(&mut Uuid::encode_buffer()));
    json.push('"');
}

/// `text` as a JSON string literal; plain printable ASCII (policy names, almost always) is copied
/// as is, anything else goes through serde_json's escaping.
fn push_json_string(json: &mut String, text: &str) {
    if text
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        json.push('"');
        json.push_str(text);
        json.push('"');
    } else {
        // serde_json cannot fail on a string; should it ever, the text stays JSON.
        json.push_str(serde_json::to_string(text).as_deref().unwrap_or("null"));
    }
}

/// The `violations.violation_type` of a stopped request: the deciding policy's own type, else
/// what the stop was about.
fn violation_type(outcome: &Outcome) -> String {
    if let Some(kind) = &outcome.violation_type {
        return kind.clone();
    }
    match (outcome.decision, outcome.primary.is_some()) {
        (Decision::Review, _) => "review_required",
        (_, true) => "policy_violation",
        (_, false) => "unapproved_service",
    }
    .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditRecord;
    use std::path::Path;

    static ANONYMOUS: Identity = Identity {
        user: None,
        device: None,
        method: "anonymous",
    };

    #[test]
    fn an_object_from_a_shared_template_equals_one_built_key_by_key() {
        // One call site, so one template: each build must get its own values.
        let build =
            |n: u64| object! { "b" => n.into(), "a" => "x".into(), "c" => regorus::Value::Null };
        let expected = |n: u64| regorus::Value::from(json!({"a": "x", "b": n, "c": null}));
        let (first, second) = (build(1), build(2));
        assert_eq!(first, expected(1));
        assert_eq!(second, expected(2));
        assert_eq!(build(3), expected(3));
    }

    #[test]
    fn an_unattributed_request_names_its_method_in_the_user_document() {
        let headers = http::HeaderMap::new();
        let snapshot = snapshot();
        let user_of = |method: &'static str| {
            let identity = Identity {
                method,
                ..Identity::default()
            };
            let request = RequestFacts {
                identity: &identity,
                ..facts("api.openai.com", &headers)
            };
            decide(&snapshot, &request).input["user"].clone()
        };
        let anonymous = user_of("anonymous");
        assert_eq!(anonymous["method"], regorus::Value::from("anonymous"));
        assert_eq!(anonymous["authenticated"], regorus::Value::from(false));
        assert_eq!(
            anonymous["id"],
            regorus::Value::from(ANONYMOUS_USER.to_string())
        );
        // Any other method without a user keeps its own name, and the shared document its own.
        assert_eq!(
            user_of("source_ip")["method"],
            regorus::Value::from("source_ip")
        );
        assert_eq!(user_of("anonymous"), anonymous);
    }

    fn snapshot() -> Snapshot {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/catalog");
        Snapshot::new(
            Catalog::load_dir(&dir).unwrap(),
            Arc::new(Inspector::new(&[], 0.5, 1 << 20).unwrap()),
            PolicySet::compile(
                &crate::policy::load_dir(
                    &Path::new(env!("CARGO_MANIFEST_DIR")).join("config/policies"),
                )
                .unwrap(),
                crate::policy::Defaults::default(),
                crate::policy::FailMode::Closed,
                crate::policy::Evaluator::Vm,
            )
            .unwrap(),
            Exceptions::default(),
        )
    }

    fn facts<'a>(host: &'a str, headers: &'a http::HeaderMap) -> RequestFacts<'a> {
        RequestFacts {
            method: "POST",
            scheme: "https",
            host,
            port: 443,
            path: "/v1/chat/completions",
            query: None,
            headers,
            body: b"{}",
            body_truncated: false,
            client: None,
            source: Source::ProxyIntercepted,
            ja4: None,
            identity: &ANONYMOUS,
        }
    }

    fn snapshot_with(rego: &str) -> Snapshot {
        let mut definition =
            crate::policy::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/policies"))
                .unwrap()
                .remove(0);
        definition.policy_id = Uuid::from_u128(0xfeed);
        definition.name = "Under test \"quoted\" — ü".into();
        definition.status = "active".into();
        definition.scope = crate::policy::Scope::default();
        definition.rule_content = rego.into();
        Snapshot::new(
            Catalog::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/catalog"))
                .unwrap(),
            Arc::new(Inspector::new(&[], 0.5, 1 << 20).unwrap()),
            PolicySet::compile(
                &[definition],
                crate::policy::Defaults::default(),
                crate::policy::FailMode::Closed,
                crate::policy::Evaluator::Vm,
            )
            .unwrap(),
            Exceptions::default(),
        )
    }

    #[test]
    fn request_headers_reach_the_input_only_when_a_policy_reads_them() {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-block", http::HeaderValue::from_static("1"));
        headers.insert("cookie", http::HeaderValue::from_static("session=secret"));
        let reader =
            snapshot_with("package h\ndeny if input.request.headers[\"x-block\"] == \"1\"");
        let verdict = decide(&reader, &facts("api.openai.com", &headers));
        assert_eq!(verdict.decision, Decision::Deny);
        let seen = &verdict.input["request"]["headers"];
        assert_eq!(seen["x-block"], regorus::Value::from("1"));
        assert_eq!(
            seen["cookie"],
            regorus::Value::Undefined,
            "credentials never"
        );
        let shipped = decide(&snapshot(), &facts("api.openai.com", &headers));
        assert_eq!(
            shipped.input["request"]["headers"],
            regorus::Value::new_object(),
            "no shipped policy reads them"
        );
    }

    #[test]
    fn a_users_input_document_is_made_once_and_names_each_requests_method() {
        let user = Arc::new(UserContext {
            id: Uuid::from_u128(1),
            email: "ana@example.com".into(),
            department: Some("Legal".into()),
            groups: vec!["counsel".into()],
            status: "active".into(),
            ..UserContext::default()
        });
        let device = Arc::new(DeviceContext {
            id: Uuid::from_u128(2),
            crown_jewel: true,
            ..DeviceContext::default()
        });
        let headers = http::HeaderMap::new();
        let snapshot = snapshot();
        let decided = |method: &'static str| {
            let identity = Identity {
                user: Some(user.clone()),
                device: Some(device.clone()),
                method,
            };
            let request = RequestFacts {
                identity: &identity,
                ..facts("api.openai.com", &headers)
            };
            decide(&snapshot, &request).input
        };
        let first = decided("trusted_header");
        let again = decided("trusted_header");
        let by_proxy_auth = decided("proxy_auth");
        let expected_user = |method: &str| {
            regorus::Value::from(json!({
                "id": Uuid::from_u128(1).to_string(), "email": "ana@example.com",
                "department": "Legal", "department_chain": [], "groups": ["counsel"], "roles": [],
                "risk_score": 0, "clearance_level": null, "employee_type": null,
                "status": "active", "suspended": false, "allowed_ai_services": [],
                "prohibited_ai_services": [], "authenticated": true, "method": method,
            }))
        };
        assert_eq!(first["user"], expected_user("trusted_header"));
        assert_eq!(again["user"], expected_user("trusted_header"));
        assert_eq!(by_proxy_auth["user"], expected_user("proxy_auth"));
        assert_eq!(first["device"]["crown_jewel"], regorus::Value::from(true));
        assert_eq!(again["device"], first["device"]);
        // The kept document is the first request's, shared by the later ones.
        let kept = &user
            .policy_input
            .get_or_init(|| unreachable!("made by the first request"))
            .1;
        assert_eq!(kept, &expected_user("trusted_header"));
        // A clone is a context that may be edited: it does not carry the document along.
        let edited = UserContext {
            department: Some("Sales".into()),
            ..(*user).clone()
        };
        assert_eq!(
            edited
                .policy_input
                .get_or_init(|| ("x", regorus::Value::Null))
                .0,
            "x"
        );
    }

    #[test]
    fn policies_evaluated_is_the_json_serde_would_write() {
        let snapshot = snapshot_with("package t\ndeny if input.request.method == \"POST\"");
        let headers = http::HeaderMap::new();
        let request = facts("api.openai.com", &headers);
        let mut verdict = decide(&snapshot, &request);
        let mut results = verdict.outcome.evaluated.clone();
        let mut unmatched = results[0].clone();
        unmatched.deny = false;
        unmatched.priority = -7;
        unmatched.exception_id = Some(Uuid::from_u128(0xe));
        results.push(unmatched);
        verdict.outcome = Arc::new(Outcome {
            evaluated: results.clone(),
            ..(*verdict.outcome).clone()
        });
        let record = decision_record(&request, &verdict, Duration::ZERO);
        let expected: Vec<Value> = results
            .iter()
            .map(|r| {
                let mut row = json!({
                    "policy_id": r.policy_id, "policy_name": r.policy_name,
                    "priority": r.priority, "matched": r.deny || r.review || r.allow,
                });
                if let Some(exception) = r.exception_id {
                    row["exception_id"] = json!(exception);
                }
                row
            })
            .collect();
        assert_eq!(results[0].policy_name, "Under test \"quoted\" — ü");
        assert_eq!(
            serde_json::from_str::<Value>(record.policies_evaluated.get()).unwrap(),
            Value::Array(expected)
        );
        assert_eq!(
            policies_evaluated(&[]).get(),
            "[]",
            "no policy in scope is an empty list"
        );
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
    fn unapproved_services_need_review_and_plain_hosts_pass() {
        let headers = http::HeaderMap::new();
        let snapshot = snapshot();
        let openai = decide(&snapshot, &facts("api.openai.com", &headers));
        assert_eq!(
            openai.decision,
            Decision::Review,
            "the shipped catalog approves nothing"
        );
        let mut shadow = facts("llm.internal.example", &headers);
        assert_eq!(
            decide(&snapshot, &shadow).decision,
            Decision::Review,
            "unknown AI API"
        );
        shadow.path = "/index.html";
        let plain = decide(&snapshot, &shadow);
        assert_eq!(plain.decision, Decision::Allow);
        assert!(plain.service.is_none());
    }

    #[test]
    fn a_secret_is_denied_by_the_credentials_policy() {
        let headers = http::HeaderMap::new();
        let mut request = facts("api.openai.com", &headers);
        request.body = br#"{"messages":[{"role":"user","content":"key AKIAIOSFODNN7EXAMPLE"}]}"#;
        let verdict = decide(&snapshot(), &request);
        assert_eq!(verdict.decision, Decision::Deny);
        assert_eq!(
            verdict.outcome.primary.as_ref().unwrap().1,
            "No credentials or secrets to AI services"
        );
        assert!(
            verdict.reason.contains("AWS_ACCESS_KEY"),
            "{}",
            verdict.reason
        );
        let mut record = decision_record(&request, &verdict, Duration::from_micros(5));
        record.settle();
        assert_eq!(
            record.violation.unwrap().violation_type,
            "credential_exposure"
        );
        let explanation = record.explanation.unwrap();
        assert!(
            explanation.get().contains("\"credentials\""),
            "{}",
            explanation.get()
        );
        assert!(!explanation.get().contains("AKIAIOSFODNN7EXAMPLE"));
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
        assert_eq!(
            violation.policy_name.as_deref(),
            Some("Block prohibited AI services")
        );
        assert_eq!(record.primary_policy_id, Some(violation.policy_id));
        let evaluated: Value = serde_json::from_str(record.policies_evaluated.get()).unwrap();
        assert!(evaluated.as_array().is_some_and(|p| !p.is_empty()));
    }

    #[test]
    fn a_stopped_decision_survives_the_spill_journal_format() {
        let headers = http::HeaderMap::new();
        let snapshot = snapshot();
        let request = facts("api.deepseek.com", &headers);
        let verdict = decide(&snapshot, &request);
        let mut record = decision_record(&request, &verdict, Duration::from_micros(5));
        // The writer renders a stop's explanation before the record is stored or spilled.
        assert!(record.explanation.is_none() && record.pending_explanation.is_pending());
        record.settle();
        assert!(record.explanation.is_some() && !record.pending_explanation.is_pending());
        let line = serde_json::to_string(&AuditRecord::Decision(Box::new(record.clone()))).unwrap();
        let Ok(AuditRecord::Decision(back)) = serde_json::from_str::<AuditRecord>(&line) else {
            panic!("the journal line does not read back: {line}");
        };
        let json = |r: &DecisionRecord| serde_json::to_value(r).unwrap();
        assert_eq!(json(&back), json(&record));
    }

    #[test]
    fn a_stop_is_explained_by_its_whole_input_except_the_request_headers() {
        let mut headers = http::HeaderMap::new();
        headers.insert("authorization", "Bearer sk-secret".parse().unwrap());
        headers.insert("cookie", "session=s3cr3t".parse().unwrap());
        let snapshot = snapshot();
        let request = facts("api.deepseek.com", &headers);
        let verdict = decide(&snapshot, &request);
        assert_eq!(verdict.decision, Decision::Deny);
        let mut record = decision_record(&request, &verdict, Duration::from_micros(5));
        record.settle();
        let explanation = record.explanation.expect("a stop is explained");
        assert!(!explanation.get().contains("s3cr3t") && !explanation.get().contains("sk-secret"));
        let stored: Value = serde_json::from_str(explanation.get()).unwrap();
        let mut expected = serde_json::to_value(&verdict.input).unwrap();
        let request_input = expected["request"].as_object_mut().unwrap();
        assert!(
            request_input.remove("headers").is_some(),
            "the input has headers"
        );
        assert_eq!(stored["facts"]["input"], expected);
        assert_eq!(
            stored["facts"]["input"]["request"]["host"],
            "api.deepseek.com"
        );

        // An allowed request is explained without its input.
        let mut plain = facts("example.com", &headers);
        plain.path = "/index.html";
        let verdict = decide(&snapshot, &plain);
        assert_eq!(verdict.decision, Decision::Allow);
        let allowed = decision_record(&plain, &verdict, Duration::ZERO);
        assert!(!allowed.pending_explanation.is_pending(), "written at once");
        let allowed: Value = serde_json::from_str(allowed.explanation.unwrap().get()).unwrap();
        assert!(allowed["facts"].get("input").is_none(), "{allowed}");
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

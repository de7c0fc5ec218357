//! REVIEW coaching: the business justification a user gives on the coaching page becomes a
//! temporary exception for them and that service, then they are sent back where they were.
//!
//! The form posts to a path the gateway reserves on every intercepted host, so the browser
//! stays on the service's origin. The service is taken from the host the request was made to,
//! never from the form; a host outside the catalog (shadow AI) is excused by name.
//!
//! A justification creates an exception, so the form must never be something a third-party page
//! can submit or replay: each coaching page (and each API client's justification link) carries a
//! token signed with a key that binds the decision, the host, the user, the client address and
//! device, and an expiry; it is accepted once. Every gateway of a fleet derives the same key from
//! the CA key they share, so a token minted by one is good on another; and the exception a token
//! creates has an id derived from the token, so the store's primary key refuses a second
//! redemption on any gateway (the in-process set of spent tokens only answers it sooner). The
//! tokens themselves are `crate::coaching`'s, which the shared state holds. A cross-site
//! `Origin` or `Sec-Fetch-Site` is refused, each client may justify a bounded number of times an
//! hour, an anonymous user's exception covers only their address and device, and the free text
//! is stored with the same detectors' findings masked.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use sha2::Digest as _;
use time::OffsetDateTime;
use uuid::Uuid;

use super::block::{justified_page, justify_page};
use crate::audit::{AuditEventRecord, AuditRecord};
use crate::catalog::AiService;
use crate::coaching::{Caller, Claims};
use crate::inspect::Inspector;
use crate::pipeline::{self, Decision, RequestFacts, Snapshot, Source, Verdict};
use crate::policy::NewException;
use crate::state::Shared;

const MIN_JUSTIFICATION: usize = 10;
const MAX_JUSTIFICATION: usize = 2000;

/// What the gateway answers on [`JUSTIFY_PATH`](crate::coaching::JUSTIFY_PATH).
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// 303 back to the page the user wanted.
    Redirect(String),
    /// A status and an HTML page.
    Page(u16, String),
    /// A status and a plain-text explanation.
    Refused(u16, String),
    /// 429: this client gave its justifications for the hour; retry after that many seconds.
    TooMany(u64),
}

/// A request to [`JUSTIFY_PATH`](crate::coaching::JUSTIFY_PATH).
#[derive(Debug)]
pub struct Request<'a> {
    pub method: &'a http::Method,
    pub query: Option<&'a str>,
    pub headers: &'a http::HeaderMap,
    /// The urlencoded form of a POST.
    pub form: &'a [u8],
    pub client: Option<SocketAddr>,
}

/// Answers [`JUSTIFY_PATH`](crate::coaching::JUSTIFY_PATH): `GET` shows the form an API client's link opens, `POST` takes the
/// justification.
pub async fn answer(
    shared: &Shared,
    snapshot: &Snapshot,
    caller: &Caller<'_>,
    request: &Request<'_>,
) -> Reply {
    match *request.method {
        http::Method::GET => form_page(shared, snapshot, caller, request.query.unwrap_or("")),
        http::Method::POST => justify(shared, snapshot, caller, request).await,
        _ => Reply::Refused(405, "Method not allowed.\n".into()),
    }
}

/// The coaching form for an API client's justification link, opened in a browser.
fn form_page(shared: &Shared, snapshot: &Snapshot, caller: &Caller<'_>, query: &str) -> Reply {
    let (mut token, mut return_to) = (String::new(), String::from("/"));
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        match name.as_ref() {
            "token" => token = value.into_owned(),
            "return_to" => return_to = local_path(&value).unwrap_or("/").to_owned(),
            _ => {}
        }
    }
    if shared.coach.verify(caller, &token).is_none() {
        return invalid_token();
    }
    let service = snapshot
        .catalog
        .service_for_host(caller.host)
        .map_or(caller.host, |s| s.name.as_str());
    Reply::Page(200, justify_page(service, &token, &return_to))
}

async fn justify(
    shared: &Shared,
    snapshot: &Snapshot,
    caller: &Caller<'_>,
    request: &Request<'_>,
) -> Reply {
    if let Err(why) = same_origin(caller, request.headers) {
        tracing::warn!(
            host = caller.host,
            why,
            "Refused a cross-site justification."
        );
        return Reply::Refused(
            403,
            "Forbidden: a justification must be sent from the coaching page itself.\n".into(),
        );
    }
    let form = JustificationForm::parse(request.form);
    let claims = match redeem(shared, caller, &form) {
        Ok(claims) => claims,
        Err(reply) => return reply,
    };
    let justification = masked(&snapshot.inspector, &form.justification);
    let done = if claims.api {
        Reply::Page(200, justified_page())
    } else {
        Reply::Redirect(form.return_to.clone())
    };
    except(
        shared,
        snapshot,
        caller,
        &claims,
        request.client,
        justification,
        &form.return_to,
    )
    .await
    .unwrap_or(done)
}

/// The coaching form as posted.
struct JustificationForm {
    justification: String,
    /// Only a local path: the redirect must not become an open redirector.
    return_to: String,
    token: String,
}

impl JustificationForm {
    fn parse(form: &[u8]) -> Self {
        let mut parsed = JustificationForm {
            justification: String::new(),
            return_to: String::from("/"),
            token: String::new(),
        };
        for (name, value) in form_urlencoded::parse(form) {
            match name.as_ref() {
                "justification" => parsed.justification = value.trim().to_owned(),
                "return_to" => parsed.return_to = local_path(&value).unwrap_or("/").to_owned(),
                "token" => parsed.token = value.into_owned(),
                _ => {}
            }
        }
        parsed
    }
}

/// The claims of the form's token once it is valid for `caller`, the justification long
/// enough, the client under its hourly cap and the token spent; otherwise the refusal.
fn redeem(shared: &Shared, caller: &Caller<'_>, form: &JustificationForm) -> Result<Claims, Reply> {
    let Some(claims) = shared.coach.verify(caller, &form.token) else {
        return Err(invalid_token());
    };
    let length = form.justification.chars().count();
    if !(MIN_JUSTIFICATION..=MAX_JUSTIFICATION).contains(&length) {
        return Err(Reply::Refused(
            400,
            format!("A business justification of {MIN_JUSTIFICATION} to {MAX_JUSTIFICATION} characters is required.\n"),
        ));
    }
    let max_per_hour = shared.config().policy.max_justifications_per_hour;
    if let Err(retry_after) = shared.coach.count(caller, max_per_hour) {
        tracing::warn!(host = caller.host, "Justification rate limit reached.");
        return Err(Reply::TooMany(retry_after));
    }
    if !shared.coach.spend(claims.decision_id) {
        return Err(invalid_token());
    }
    Ok(claims)
}

/// Creates the exception; `Some(reply)` when the request ends otherwise (allowed already,
/// denied, not stored, pending approval).
async fn except(
    shared: &Shared,
    snapshot: &Snapshot,
    caller: &Caller<'_>,
    claims: &Claims,
    client: Option<SocketAddr>,
    justification: String,
    return_to: &str,
) -> Option<Reply> {
    let host = caller.host;
    // A catalog service is excused by id (all its domains); an AI service outside the catalog
    // by its host name.
    let service = snapshot.catalog.service_for_host(host).map(AsRef::as_ref);
    let service_name = service.map_or(host, |s| s.name.as_str());
    let verdict = match review_verdict(snapshot, caller, claims, client, return_to) {
        Ok(verdict) => verdict,
        Err(reply) => return Some(reply),
    };
    let exception = new_exception(shared, caller, claims, service, &verdict, justification);
    if let Err(reply) = store_exception(shared, &exception, service_name).await {
        return Some(reply);
    }
    audit(
        shared,
        caller,
        client,
        claims,
        &exception,
        service.map_or(host, |s| s.slug.as_str()),
    );
    tracing::info!(
        service = service_name,
        status = exception.status,
        "Review justified; temporary exception created."
    );
    if exception.status != "approved" {
        return Some(Reply::Refused(202, "Thank you. Your justification was sent for approval; you will be able to continue once it is approved.\n".into()));
    }
    // Only the exception set changes: the compiled policies stay.
    if let Err(error) = shared.reloader.exceptions().await {
        tracing::warn!(%error, "Cannot load the new exception; it applies at the next reload.");
    }
    None
}

/// Which policy put the page under review: the verdict on the page the user wants to return
/// to; a refusal or a redirect when nothing is left to justify.
fn review_verdict(
    snapshot: &Snapshot,
    caller: &Caller<'_>,
    claims: &Claims,
    client: Option<SocketAddr>,
    return_to: &str,
) -> Result<Verdict, Reply> {
    let headers = http::HeaderMap::new();
    let facts = RequestFacts {
        method: "GET",
        scheme: if caller.tls { "https" } else { "http" },
        host: caller.host,
        port: caller.port,
        path: return_to.split('?').next().unwrap_or("/"),
        query: None,
        headers: &headers,
        body: &[],
        body_truncated: false,
        client,
        source: Source::ProxyIntercepted,
        ja4: None,
        identity: caller.identity,
    };
    let verdict = pipeline::decide(snapshot, &facts);
    match verdict.decision {
        Decision::Allow if !claims.api => Err(Reply::Redirect(return_to.to_owned())),
        Decision::Deny => Err(Reply::Refused(
            403,
            "This service is denied, not under review; a justification cannot lift a denial.\n"
                .into(),
        )),
        Decision::Allow | Decision::Review => Ok(verdict),
    }
}

/// The temporary exception a justification asks for: the user and service (or host) it was
/// given for, lifting reviews only, for `[policy] justification_exception_secs`.
fn new_exception(
    shared: &Shared,
    caller: &Caller<'_>,
    claims: &Claims,
    service: Option<&AiService>,
    verdict: &Verdict,
    justification: String,
) -> NewException {
    let config = &shared.config().policy;
    let host = caller.host;
    let service_name = service.map_or(host, |s| s.name.as_str());
    let user_id = caller.user_id();
    let now = OffsetDateTime::now_utc();
    let lasts = Duration::from_secs(config.justification_exception_secs);
    let mut conditions = serde_json::json!({ "decisions": ["review"] });
    if service.is_none() {
        conditions["hosts"] = serde_json::json!([host]);
    }
    // Every anonymous user is the same nil user: scope theirs to who gave it.
    if caller.identity.user.is_none() {
        let clients: Vec<String> = caller.signals.ip.iter().map(IpAddr::to_string).collect();
        conditions["clients"] = serde_json::json!(clients);
        conditions["devices"] = serde_json::json!([claims.device]);
    }
    NewException {
        exception_id: exception_id(claims.decision_id),
        exception_type: "temporary",
        reason: format!("Business justification given on the review page of {service_name}"),
        justification,
        user_id,
        ai_service_id: service.map(|s| s.service_id),
        policy_id: verdict.outcome.primary.as_ref().map(|(id, _)| *id),
        // A user's own justification lifts a review, never a denial.
        conditions: Some(conditions),
        status: config.justification_status.as_str(),
        requested_by: user_id,
        effective_from: now,
        effective_until: Some(now + lasts),
    }
}

/// Stores the exception; the refusal when its token was redeemed already (its id exists) or
/// the store failed.
async fn store_exception(
    shared: &Shared,
    exception: &NewException,
    service_name: &str,
) -> Result<(), Reply> {
    let Err(error) = shared.store.insert_exception(exception).await else {
        return Ok(());
    };
    if is_duplicate(&error) {
        tracing::warn!(
            service = service_name,
            "Refused a justification token already redeemed (on this or another gateway)."
        );
        return Err(invalid_token());
    }
    tracing::warn!(%error, service = service_name, "Cannot store a review justification.");
    Err(Reply::Refused(
        503,
        "The justification could not be recorded; try again shortly.\n".into(),
    ))
}

fn audit(
    shared: &Shared,
    caller: &Caller<'_>,
    client: Option<SocketAddr>,
    claims: &Claims,
    exception: &NewException,
    service: &str,
) {
    shared.audit.record(AuditRecord::Event(Box::new(AuditEventRecord {
        actor_id: Some(exception.user_id),
        actor_email: caller.identity.user.as_ref().map(|u| u.email.clone()),
        actor_type: Some("user".to_owned()),
        source: Some("proxy".to_owned()),
        ip_address: client.map(|c| c.ip()),
        decision_id: Some(claims.decision_id),
        event_data: Some(serde_json::json!({
            "exception_id": exception.exception_id,
            "service": service,
            "policy_id": exception.policy_id,
            "status": exception.status,
            "effective_until": exception.effective_until.and_then(|u| u.format(&time::format_description::well_known::Rfc3339).ok()),
        })),
        ..AuditEventRecord::about_host("exception_requested", "info", "justify_review", caller.host)
    })));
}

/// The id of the exception a token's redemption creates: the same on every gateway, so the
/// store's primary key makes the token single-use across a fleet.
fn exception_id(decision_id: Uuid) -> Uuid {
    let digest = sha2::Sha256::new()
        .chain_update(b"aigate justification exception\0")
        .chain_update(decision_id.as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// The store refused the exception because one with its id exists: the token was redeemed.
fn is_duplicate(error: &crate::store::StoreError) -> bool {
    match error {
        crate::store::StoreError::Rejected(sqlx::Error::Database(error)) => {
            error.is_unique_violation()
        }
        _ => false,
    }
}

fn invalid_token() -> Reply {
    Reply::Refused(
        403,
        "This justification link is invalid, expired or already used; reload the page you wanted and justify from there.\n".into(),
    )
}

/// Refuses a submission a browser marks as cross-site: another site's page cannot create an
/// exception in the user's name. Clients that send neither header are judged by the token.
fn same_origin(caller: &Caller<'_>, headers: &http::HeaderMap) -> Result<(), &'static str> {
    let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or("\u{0}"));
    if let Some(site) = header("sec-fetch-site") {
        if !site.eq_ignore_ascii_case("same-origin") {
            return Err("sec-fetch-site");
        }
    }
    if let Some(origin) = header("origin") {
        if !origin.eq_ignore_ascii_case(&caller.origin()) {
            return Err("origin");
        }
    }
    Ok(())
}

/// `value` if it is a path on this origin a browser cannot read as another origin: starts with
/// one `/`, and neither as sent nor percent-decoded holds a backslash, whitespace or control
/// character (browsers drop tabs and newlines, so `/\t/evil.example` is `//evil.example`), a
/// second leading slash or a scheme.
fn local_path(value: &str) -> Option<&str> {
    let decoded = percent_encoding::percent_decode_str(value)
        .decode_utf8()
        .ok()?;
    for candidate in [value, decoded.as_ref()] {
        let bad = |c: char| c == '\\' || c.is_whitespace() || c.is_control();
        if !candidate.starts_with('/') || candidate.starts_with("//") || candidate.contains(bad) {
            return None;
        }
        let before_query = candidate.split(['?', '#']).next().unwrap_or("");
        if before_query
            .split('/')
            .next()
            .is_some_and(|first| first.contains(':'))
        {
            return None;
        }
    }
    Some(value)
}

/// `text` with every finding of the prompt detectors masked, so a key or card typed into the
/// justification is not stored verbatim.
fn masked(inspector: &Inspector, text: &str) -> String {
    let mut entities = inspector.scan(text);
    entities.sort_by_key(|e| e.start);
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for entity in entities {
        let (Some(before), Some(value)) = (
            text.get(at..entity.start),
            text.get(entity.start..entity.end),
        ) else {
            continue;
        };
        out.push_str(before);
        out.push_str(&crate::inspect::redact::redacted_value(&entity.kind, value));
        at = entity.end;
    }
    out.push_str(text.get(at..).unwrap_or(""));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_to_accepts_only_local_paths() {
        for good in ["/", "/chat?x=1", "/a/b#c", "/v1/chat/completions?q=a:b"] {
            assert_eq!(local_path(good), Some(good), "{good:?}");
        }
        for bad in [
            "//evil.example/",
            "/%09/evil.example/",
            "/\t/evil.example/",
            "/\\evil.example",
            "/%5Cevil.example",
            "/%2F/evil.example",
            "https://evil.example/",
            "javascript:alert(1)",
            "evil",
            "",
            "/ /x",
            "/%0a/evil.example",
        ] {
            assert_eq!(local_path(bad), None, "{bad:?}");
        }
    }
}

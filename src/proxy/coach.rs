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
//! redemption on any gateway (the in-process set of spent tokens only answers it sooner). A
//! cross-site `Origin` or
//! `Sec-Fetch-Site` is refused, each client may justify a bounded number of times an hour, an
//! anonymous user's exception covers only their address and device, and the free text is stored
//! with the same detectors' findings masked.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Digest as _;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::audit::{AuditEventRecord, AuditRecord, ANONYMOUS_USER};
use crate::identity::Identity;
use crate::inspect::Inspector;
use crate::pipeline::{self, Decision, RequestFacts, Snapshot, Source};
use crate::policy::exception::ClientSignals;
use crate::policy::NewException;
use crate::state::Shared;

/// Where the coaching page's form posts, and where an API client's justification link points;
/// answered by the gateway, never forwarded.
pub const JUSTIFY_PATH: &str = "/.aigate/justify";

const MIN_JUSTIFICATION: usize = 10;
const MAX_JUSTIFICATION: usize = 2000;
/// What the coaching-token key is derived for from the CA key (HKDF-SHA256 info): no other use of
/// the CA key can yield the same bytes.
pub const TOKEN_KEY_LABEL: &str = "aigate coaching token v1";
/// How long a coaching page's token stays valid: long enough to write a justification.
const TOKEN_LIFETIME: Duration = Duration::from_secs(15 * 60);
const RATE_WINDOW: Duration = Duration::from_secs(3600);

type HmacSha256 = Hmac<sha2::Sha256>;

/// What the gateway answers on [`JUSTIFY_PATH`].
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

/// The token and the signing state of the coaching pages.
pub struct Coach {
    key: [u8; 32],
    /// Decision ids whose token was spent (kept as long as a token lives).
    spent: moka::sync::Cache<Uuid, ()>,
    /// Justifications per client in the current hour: when the window opened, and how many.
    given: moka::sync::Cache<String, Arc<(Instant, AtomicU32)>>,
}

impl std::fmt::Debug for Coach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coach")
            .field("spent", &self.spent.entry_count())
            .finish_non_exhaustive()
    }
}

/// Who is asking, as the gateway sees the request (never as the form claims).
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub host: &'a str,
    pub port: u16,
    pub tls: bool,
    pub identity: &'a Identity,
    pub signals: ClientSignals<'a>,
}

impl Caller<'_> {
    fn user_id(&self) -> Uuid {
        self.identity.user.as_ref().map_or(ANONYMOUS_USER, |u| u.id)
    }

    /// `scheme://host[:port]`, the only `Origin` a genuine form submission carries.
    fn origin(&self) -> String {
        let (scheme, default_port) = if self.tls {
            ("https", 443)
        } else {
            ("http", 80)
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.to_owned()
        };
        if self.port == default_port {
            format!("{scheme}://{host}")
        } else {
            format!("{scheme}://{host}:{}", self.port)
        }
    }

    /// Who the rate limit counts: the user, or an anonymous user's address.
    fn rate_key(&self) -> String {
        match (&self.identity.user, self.signals.ip) {
            (Some(user), _) => user.id.to_string(),
            (None, Some(ip)) => ip.to_string(),
            (None, None) => String::new(),
        }
    }
}

/// A verified token's claims.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Claims {
    decision_id: Uuid,
    expires: u64,
    /// The device that met the review ([`ClientSignals::device_key`]): an API client's
    /// justification is written in a browser, and the exception is for the client.
    device: String,
    /// Issued to an API client: the browser gets a thank-you page, not a redirect.
    api: bool,
}

/// How a coaching page or an API error offers the justification.
#[derive(Debug, Clone)]
pub struct Offer {
    pub token: String,
    /// The absolute link an API client's user opens in a browser.
    pub url: String,
}

impl Coach {
    /// Signs with `key`: [`TOKEN_KEY_LABEL`] derived from the CA key
    /// (`CertificateAuthority::derive_key`), the same on every gateway sharing the CA.
    pub fn new(key: [u8; 32]) -> Self {
        Coach {
            key,
            spent: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(TOKEN_LIFETIME)
                .build(),
            given: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(RATE_WINDOW)
                .build(),
        }
    }

    /// The justification offer for a REVIEW `decision_id` met by `caller`; `return_to` is the
    /// page to go back to (a local path).
    pub fn offer(
        &self,
        caller: &Caller<'_>,
        decision_id: Uuid,
        api: bool,
        return_to: &str,
    ) -> Offer {
        let expires = unix_now() + TOKEN_LIFETIME.as_secs();
        let claims = Claims {
            decision_id,
            expires,
            device: caller.signals.device_key(),
            api,
        };
        let token = format!(
            "{}.{}.{}.{}.{}",
            claims.decision_id.simple(),
            claims.expires,
            claims.device,
            u8::from(claims.api),
            hex::encode(self.mac(caller, &claims).finalize().into_bytes()),
        );
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("token", &token)
            .append_pair("return_to", return_to)
            .finish();
        Offer {
            url: format!("{}{JUSTIFY_PATH}?{query}", caller.origin()),
            token,
        }
    }

    fn mac(&self, caller: &Caller<'_>, claims: &Claims) -> HmacSha256 {
        // HMAC takes a key of any length: this cannot fail.
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable_mac());
        let ip = caller
            .signals
            .ip
            .map(|ip| ip.to_string())
            .unwrap_or_default();
        for part in [
            "aigate-justify-v1",
            &claims.decision_id.simple().to_string(),
            &claims.expires.to_string(),
            &claims.device,
            if claims.api { "api" } else { "page" },
            &caller.host.to_ascii_lowercase(),
            &caller.user_id().to_string(),
            &ip,
        ] {
            mac.update(part.as_bytes());
            mac.update(b"\0");
        }
        mac
    }

    /// The claims of `token` if this process signed it for `caller` (same host, user and
    /// address) and it has not expired.
    fn verify(&self, caller: &Caller<'_>, token: &str) -> Option<Claims> {
        let mut parts = token.split('.');
        let decision_id = Uuid::try_parse(parts.next()?).ok()?;
        let expires: u64 = parts.next()?.parse().ok()?;
        let device = parts.next()?.to_owned();
        let api = match parts.next()? {
            "1" => true,
            "0" => false,
            _ => return None,
        };
        let signature = hex::decode(parts.next()?).ok()?;
        if parts.next().is_some() || expires < unix_now() {
            return None;
        }
        let claims = Claims {
            decision_id,
            expires,
            device,
            api,
        };
        self.mac(caller, &claims)
            .verify_slice(&signature)
            .ok()
            .map(|()| claims)
    }

    /// Counts one justification for `caller`; `Err(retry_after_secs)` past the hourly cap.
    fn count(&self, caller: &Caller<'_>, max_per_hour: u32) -> Result<(), u64> {
        let slot = self.given.get_with(caller.rate_key(), || {
            Arc::new((Instant::now(), AtomicU32::new(0)))
        });
        let (opened, count) = &*slot;
        if count.fetch_add(1, Ordering::Relaxed) < max_per_hour {
            return Ok(());
        }
        count.fetch_sub(1, Ordering::Relaxed);
        Err(RATE_WINDOW
            .saturating_sub(opened.elapsed())
            .as_secs()
            .max(1))
    }
}

#[cold]
fn unreachable_mac() -> HmacSha256 {
    // `new_from_slice` only fails for fixed-size-key MACs; fall back to an all-zero key of the
    // right kind rather than panic (never reached for HMAC).
    <HmacSha256 as hmac::digest::KeyInit>::new(&Default::default())
}

fn unix_now() -> u64 {
    OffsetDateTime::now_utc()
        .unix_timestamp()
        .max(0)
        .unsigned_abs()
}

/// A request to [`JUSTIFY_PATH`].
#[derive(Debug)]
pub struct Request<'a> {
    pub method: &'a http::Method,
    pub query: Option<&'a str>,
    pub headers: &'a http::HeaderMap,
    /// The urlencoded form of a POST.
    pub form: &'a [u8],
    pub client: Option<SocketAddr>,
}

/// Answers [`JUSTIFY_PATH`]: `GET` shows the form an API client's link opens, `POST` takes the
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
    Reply::Page(200, super::block::justify_page(service, &token, &return_to))
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
    let mut justification = String::new();
    let mut return_to = String::from("/");
    let mut token = String::new();
    for (name, value) in form_urlencoded::parse(request.form) {
        match name.as_ref() {
            "justification" => justification = value.trim().to_owned(),
            // Only a local path: the redirect must not become an open redirector.
            "return_to" => return_to = local_path(&value).unwrap_or("/").to_owned(),
            "token" => token = value.into_owned(),
            _ => {}
        }
    }
    let Some(claims) = shared.coach.verify(caller, &token) else {
        return invalid_token();
    };
    let length = justification.chars().count();
    if !(MIN_JUSTIFICATION..=MAX_JUSTIFICATION).contains(&length) {
        return Reply::Refused(
            400,
            format!("A business justification of {MIN_JUSTIFICATION} to {MAX_JUSTIFICATION} characters is required.\n"),
        );
    }
    let config = shared.config();
    if let Err(retry_after) = shared
        .coach
        .count(caller, config.policy.max_justifications_per_hour)
    {
        tracing::warn!(host = caller.host, "Justification rate limit reached.");
        return Reply::TooMany(retry_after);
    }
    if !shared
        .coach
        .spent
        .entry(claims.decision_id)
        .or_insert(())
        .is_fresh()
    {
        return invalid_token();
    }
    let justification = masked(&snapshot.inspector, &justification);
    let done = if claims.api {
        Reply::Page(200, super::block::justified_page())
    } else {
        Reply::Redirect(return_to.clone())
    };
    except(
        shared,
        snapshot,
        caller,
        &claims,
        request.client,
        justification,
        &return_to,
    )
    .await
    .unwrap_or(done)
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
    let service = snapshot.catalog.service_for_host(host);
    let service_name = service.map_or(host, |s| s.name.as_str());
    // Which policy put the page under review: judge the page the user wants to return to.
    let headers = http::HeaderMap::new();
    let facts = RequestFacts {
        method: "GET",
        scheme: if caller.tls { "https" } else { "http" },
        host,
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
        Decision::Allow if !claims.api => return Some(Reply::Redirect(return_to.to_owned())),
        Decision::Deny => {
            return Some(Reply::Refused(
                403,
                "This service is denied, not under review; a justification cannot lift a denial.\n"
                    .into(),
            ))
        }
        Decision::Allow | Decision::Review => {}
    }

    let config = &shared.config().policy;
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
    let exception = NewException {
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
    };
    if let Err(error) = shared.store.insert_exception(&exception).await {
        if is_duplicate(&error) {
            tracing::warn!(
                service = service_name,
                "Refused a justification token already redeemed (on this or another gateway)."
            );
            return Some(invalid_token());
        }
        tracing::warn!(%error, service = service_name, "Cannot store a review justification.");
        return Some(Reply::Refused(
            503,
            "The justification could not be recorded; try again shortly.\n".into(),
        ));
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

/// The client and device a justification offer binds.
pub fn caller_signals(ip: Option<IpAddr>, headers: &http::HeaderMap) -> ClientSignals<'_> {
    ClientSignals {
        ip,
        user_agent: headers.get("user-agent").and_then(|v| v.to_str().ok()),
    }
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

    fn identity() -> Identity {
        Identity::anonymous()
    }

    #[test]
    fn tokens_bind_host_user_address_and_expire() {
        let coach = Coach::new([7; 32]);
        let identity = identity();
        let headers = http::HeaderMap::new();
        let caller = Caller {
            host: "new.example",
            port: 443,
            tls: true,
            identity: &identity,
            signals: caller_signals(Some("10.0.0.1".parse().unwrap()), &headers),
        };
        let decision = Uuid::now_v7();
        let offer = coach.offer(&caller, decision, false, "/x");
        assert!(offer
            .url
            .starts_with("https://new.example/.aigate/justify?token="));
        let claims = coach.verify(&caller, &offer.token).unwrap();
        assert_eq!(claims.decision_id, decision);
        let elsewhere = Caller {
            signals: caller_signals(Some("10.0.0.2".parse().unwrap()), &headers),
            ..caller
        };
        assert!(coach.verify(&elsewhere, &offer.token).is_none());
        let other_host = Caller {
            host: "other.example",
            ..caller
        };
        assert!(coach.verify(&other_host, &offer.token).is_none());
        assert!(Coach::new([8; 32]).verify(&caller, &offer.token).is_none());
        // Another gateway with the same key (the same CA) accepts it.
        assert_eq!(
            Coach::new([7; 32]).verify(&caller, &offer.token),
            Some(claims)
        );
        let tampered = offer.token.replacen(".0.", ".1.", 1);
        assert!(coach.verify(&caller, &tampered).is_none());
    }
}

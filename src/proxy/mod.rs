//! The pingora `ProxyHttp` implementation: every request phase is a few lines calling a module.
//!
//! Where the request goes is fixed before the request is read (`target`). `request_filter`
//! buffers the body, asks the pipeline for a verdict and carries out the plan `enforce` makes of
//! it: it answers a stop itself or lets pingora forward, so a denied request never opens an
//! upstream connection.

pub mod block;
pub mod coach;
mod enforce;
mod respond;
mod target;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::protocols::ALPN;
use pingora::proxy::subrequest::pipe::{pipe_subrequest, InputBody, InputBodyType};
use pingora::proxy::subrequest::{BodyMode, Ctx as SubrequestCtx};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};
use tracing::{debug, info, warn};

use crate::audit::{AuditRecord, DecisionRecord};
use crate::coaching;
use crate::front::guard::RequestLimits;
use crate::front::h2_guard::BodyPace;
use crate::front::{ConnectionMeta, Listener};
use crate::identity::{Claims, Identity};
use crate::metrics;
use crate::pipeline::{self, RequestFacts, Source, Verdict};
use crate::state::Shared;

use enforce::{Delivery, Plan};
use respond::{respond_text, respond_with};
use target::{normalize_to_origin_form, Target};

/// Streams multiplexed on one upstream h2 connection.
const UPSTREAM_H2_STREAMS: usize = 100;

pub struct AigateProxy {
    shared: Arc<Shared>,
}

impl AigateProxy {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

/// Carried into the nested pass of a large-body subrequest: the parent already decided.
#[derive(Debug)]
struct DecidedTarget {
    target: Target,
    /// Policy `inject_headers`: the subrequest re-reads the client's original head, so they
    /// are applied again in the nested pass.
    inject_headers: Vec<(String, String)>,
}

#[derive(Debug, Default)]
pub struct RequestCtx {
    target: Option<Target>,
    verdict: Option<Verdict>,
    /// Emitted exactly once, in `logging`, whatever happened after the decision.
    record: Option<DecisionRecord>,
    /// Body bytes already consumed from the client that pingora will not replay itself.
    unreplayed_body: Option<Bytes>,
    nested: bool,
    started: Option<Instant>,
}

enum Answer {
    /// The response has been written to the client.
    Done,
    Forward,
}

#[async_trait]
impl ProxyHttp for AigateProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> Self::CTX {
        RequestCtx::default()
    }

    fn allow_spawning_subrequest(&self, _session: &Session, _ctx: &Self::CTX) -> bool {
        true
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        ctx.started = Some(Instant::now());
        let decided = session
            .subrequest_ctx
            .as_ref()
            .and_then(|sub| sub.user_ctx())
            .and_then(|user| user.downcast_ref::<DecidedTarget>())
            .map(|d| (d.target.clone(), d.inject_headers.clone()));
        if let Some((target, headers)) = decided {
            ctx.target = Some(target);
            ctx.nested = true;
            inject_headers(session, headers);
            return Ok(false);
        }
        match self.admit(session, ctx).await? {
            Answer::Done => Ok(true),
            Answer::Forward => Ok(false),
        }
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let Some(prefix) = ctx.unreplayed_body.take() {
            *body = Some(match body.take() {
                Some(rest) if !rest.is_empty() => {
                    let mut joined = BytesMut::with_capacity(prefix.len() + rest.len());
                    joined.extend_from_slice(&prefix);
                    joined.extend_from_slice(&rest);
                    joined.freeze()
                }
                _ => prefix,
            });
        }
        Ok(())
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        let Some((target, addr)) = ctx.target.as_ref().and_then(|t| Some((t, t.addr?))) else {
            return Error::e_explain(ErrorType::InternalError, "no upstream target decided");
        };
        // The host name is always set: an empty SNI would make pingora skip certificate
        // verification, and the front never intercepts a name-less target.
        let mut peer = HttpPeer::new(addr, target.tls, target.host.clone());
        let upstream = &self.shared.config().upstream;
        let options = &mut peer.options;
        options.alpn = if target.tls && upstream.http2 {
            ALPN::H2H1
        } else {
            ALPN::H1
        };
        options.max_h2_streams = UPSTREAM_H2_STREAMS;
        options.connection_timeout = Some(upstream.connect_timeout());
        options.total_connection_timeout = Some(upstream.connect_timeout() * 2);
        options.read_timeout = Some(Duration::from_secs(upstream.read_timeout_secs));
        options.idle_timeout = Some(Duration::from_secs(upstream.idle_timeout_secs));
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        request: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        // Proxy credentials and proxy hop headers are for us, never for the origin.
        request.remove_header("proxy-authorization");
        request.remove_header("proxy-connection");
        // The gateway answered the expectation itself (`answer_expectation`); a subrequest
        // re-reads the client's original head, so the header is removed here, on every path.
        request.remove_header(&http::header::EXPECT);
        // Whoever set it, the identity header is the gateway's business only.
        let identity = self.shared.identity.config();
        request.remove_header(identity.trusted_header.as_str());
        if let Some(target) = ctx.target.as_ref() {
            normalize_to_origin_form(request, target)?;
        }
        // Chained gateways (or one reached again through an origin) recognise their own entry.
        request.append_header(http::header::VIA, self.shared.upstream.via())?;
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        _ctx: &mut Self::CTX,
    ) -> Result<()> {
        // Clients must stay on TCP where we can see them: an Alt-Svc h3 advertisement would move
        // them to QUIC, which this gateway does not intercept.
        response.remove_header("alt-svc");
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        error: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        let status = match (error.etype(), error.esource()) {
            (ErrorType::HTTPStatus(code), _) => *code,
            // pingora leaves the source of a body framing error unset, but only a client's body
            // is parsed before an upstream answers: a malformed chunk is the client's mistake.
            (kind, source) if *source != ErrorSource::Upstream && is_malformed_request(kind) => 400,
            (_, ErrorSource::Upstream) => match error.etype() {
                ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
                    504
                }
                _ => 502,
            },
            // The client went away: nobody to answer.
            (
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed,
                ErrorSource::Downstream,
            ) => 0,
            (_, ErrorSource::Downstream) => 400,
            _ => 500,
        };
        if status > 0 && session.response_written().is_none() {
            let host = ctx
                .target
                .as_ref()
                .map_or("the upstream", |t| t.host.as_str());
            let message = match status {
                502 | 504 => format!(
                    "Bad gateway: the connection to {host} failed ({}).\n",
                    upstream_failure(error.etype())
                ),
                400 => "Bad request.\n".to_owned(),
                408 => "Request timeout: the request body came too slowly.\n".to_owned(),
                _ => "The gateway could not handle this request.\n".to_owned(),
            };
            let _ = respond_text(session, status, message).await;
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, error: Option<&Error>, ctx: &mut Self::CTX) {
        if ctx.nested {
            return;
        }
        let Some(verdict) = ctx.verdict.as_ref() else {
            if let Some(error) = error {
                debug!(%error, "Request failed before a decision.");
            }
            return;
        };
        metrics::REQUESTS_TOTAL
            .with_label_values(&[verdict.decision.as_str()])
            .inc();
        if let Some(record) = ctx.record.take() {
            self.shared
                .audit
                .record(AuditRecord::Decision(Box::new(record)));
        }
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let elapsed_us = ctx.started.map_or(0, |s| s.elapsed().as_micros() as u64);
        let host = ctx.target.as_ref().map_or("", |t| t.host.as_str());
        let service = verdict.service.as_ref().map_or("", |s| s.slug.as_str());
        match error {
            Some(error) => {
                metrics::PROXY_ERRORS.with_label_values(&["upstream"]).inc();
                warn!(decision_id = %verdict.decision_id, %host, service, status, %error, "Request failed upstream.");
            }
            None => info!(
                decision_id = %verdict.decision_id,
                decision = %verdict.decision,
                %host,
                service,
                status,
                elapsed_us,
                truncated = verdict.body_truncated,
                "Request decided."
            ),
        }
    }
}

// === impl AigateProxy ===

/// A phase's result, or the answer it wrote itself (then the request is done with).
type Phase<T> = Result<std::result::Result<T, Answer>>;

/// The value of a phase; returns the answer from `admit` when the phase wrote one.
macro_rules! or_answered {
    ($phase:expr) => {
        match $phase {
            Ok(value) => value,
            Err(answer) => return Ok(answer),
        }
    };
}

/// The request body as buffered for the decision.
struct Body {
    bytes: Bytes,
    /// Nothing is left unread on the wire.
    complete: bool,
    /// The inspection cap (the last chunk read may take `bytes` past it).
    cap: usize,
}

impl Body {
    /// Reads the request body until it ends or `cap` bytes are buffered. An h2 body slower than
    /// `limits` allow is answered 408 (the HTTP/1 guard watches the connection's bytes instead).
    async fn read(session: &mut Session, cap: usize, limits: RequestLimits) -> Result<Body> {
        session.enable_retry_buffering();
        let mut pace = session.is_http2().then(|| BodyPace::new(limits));
        let mut body = BytesMut::new();
        while !session.is_body_done() {
            let read = match pace.as_ref().and_then(BodyPace::allowance) {
                Some(allowance) => {
                    let started = Instant::now();
                    let read = tokio::time::timeout(allowance, session.read_request_body()).await;
                    let Ok(read) = read else {
                        let why = pace.as_ref().map_or("", BodyPace::refuse);
                        return Error::e_explain(ErrorType::HTTPStatus(408), why);
                    };
                    let read = read?;
                    if let Some(pace) = pace.as_mut() {
                        pace.record(started.elapsed(), read.as_ref().map_or(0, Bytes::len));
                    }
                    read
                }
                None => session.read_request_body().await?,
            };
            match read {
                Some(chunk) => {
                    body.extend_from_slice(&chunk);
                    if body.len() >= cap {
                        break;
                    }
                }
                None => break,
            }
        }
        Ok(Body {
            bytes: body.freeze(),
            complete: session.is_body_done(),
            cap,
        })
    }

    fn inspected(&self) -> &[u8] {
        &self.bytes[..self.bytes.len().min(self.cap)]
    }
}

impl AigateProxy {
    /// Everything between the request head and the upstream: where the request goes, who sent
    /// it, its body, the decision, and what the decision requires.
    async fn admit(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<Answer> {
        let meta = connection_meta(session);
        let meta = meta.as_deref();
        let source = or_answered!(self.route(session, ctx, meta).await?);
        let identity = or_answered!(self.identify(session, meta).await?);
        if let Some(answer) = respond::answer_expectation(session).await? {
            return Ok(answer);
        }
        let config = self.shared.config();
        let limits = RequestLimits::from_config(&config.proxy);
        let body = Body::read(session, config.proxy.body_buffer_bytes, limits).await?;
        if session.req_header().uri.path() == coaching::JUSTIFY_PATH {
            return self.justify(session, ctx, meta, &identity, &body).await;
        }
        self.decide(session, ctx, meta, source, &identity, &body);
        let review_action = self.shared.config().policy.review_action;
        match enforce::plan(
            ctx.verdict.as_ref(),
            review_action,
            &body.bytes,
            body.complete,
        ) {
            Plan::Stop { coach } => {
                self.stop(session, ctx, meta, &identity, coach, body.complete)
                    .await
            }
            Plan::Allow(delivery) => self.deliver(session, ctx, meta, delivery, body.bytes).await,
        }
    }

    /// Fixes where the request goes (`ctx.target`), refusing a request that cannot be routed or
    /// that already passed through this gateway.
    async fn route(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        meta: Option<&ConnectionMeta>,
    ) -> Phase<Source> {
        let (target, source) = match target::route(session.req_header(), meta) {
            Ok(routed) => routed,
            Err(unroutable) => {
                return respond_text(session, unroutable.status, unroutable.message)
                    .await
                    .map(Err)
            }
        };
        ctx.target = Some(target);
        let via = session.req_header().headers.get_all(http::header::VIA);
        if self
            .shared
            .upstream
            .has_looped(via.iter().filter_map(|v| v.to_str().ok()))
        {
            metrics::UPSTREAM_REFUSED.with_label_values(&["loop"]).inc();
            warn!(host = ?ctx.target.as_ref().map(|t| t.host.as_str()), "Refused a request that already passed through this gateway.");
            return respond_text(
                session,
                508,
                "Loop detected: this request already passed through this gateway (Via).\n",
            )
            .await
            .map(Err);
        }
        Ok(Ok(source))
    }

    /// Who sent the request; a failed proxy authentication is answered with 407 (429 while the
    /// sign-in is locked).
    async fn identify(
        &self,
        session: &mut Session,
        meta: Option<&ConnectionMeta>,
    ) -> Phase<Identity> {
        let claims = Claims {
            client: meta.map(|m| m.client.ip()),
            headers: &session.req_header().headers,
            tunnel_user: meta.and_then(|m| m.tunnel_user),
            proxy_auth_applies: meta
                .is_none_or(|m| m.listener == Listener::Explicit && m.intercepted.is_none()),
        };
        let refusal = match self.shared.identity.identify(&claims).await {
            Ok(identity) => return Ok(Ok(identity)),
            Err(refusal) => refusal,
        };
        info!(%refusal, "Proxy authentication failed.");
        metrics::PROXY_AUTH_FAILURES
            .with_label_values(&[refusal.metric_label()])
            .inc();
        let answer = if let Some(secs) = refusal.retry_after() {
            let secs = secs.to_string();
            respond_with(
                session,
                429,
                &[("retry-after", secs.as_str())],
                "Too many failed sign-ins: proxy authentication is locked for a while.\n",
            )
            .await
        } else {
            let challenge = self.shared.identity.challenge();
            respond_with(
                session,
                407,
                &[("proxy-authenticate", challenge.as_str())],
                "Proxy authentication required: sign in with your corporate account.\n",
            )
            .await
        };
        answer.map(Err)
    }

    /// Answers the coaching form's own path: the justification a REVIEW offers.
    async fn justify(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        meta: Option<&ConnectionMeta>,
        identity: &Identity,
        body: &Body,
    ) -> Result<Answer> {
        let snapshot = self.shared.snapshot.load();
        let header = session.req_header();
        let client = meta.map(|m| m.client);
        let caller = caller(ctx.target.as_ref(), identity, client, &header.headers);
        let request = coach::Request {
            method: &header.method,
            query: header.uri.query(),
            headers: &header.headers,
            form: body.inspected(),
            client,
        };
        let reply = coach::answer(&self.shared, &snapshot, &caller, &request).await;
        respond::coach_reply(session, reply).await
    }

    /// Puts the verdict and its audit record in `ctx`. A plain request to a host that is no AI
    /// service is forwarded undecided, as a tunnel to such a host is: it is not AI usage, and
    /// recording it as such filled the dashboard.
    fn decide(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        meta: Option<&ConnectionMeta>,
        source: Source,
        identity: &Identity,
        body: &Body,
    ) {
        let snapshot = self.shared.snapshot.load();
        let (header, target) = (session.req_header(), ctx.target.as_ref());
        let facts = RequestFacts {
            method: header.method.as_str(),
            scheme: if target.is_some_and(|t| t.tls) {
                "https"
            } else {
                "http"
            },
            host: target.map_or("", |t| t.host.as_str()),
            port: target.map_or(0, |t| t.port),
            path: header.uri.path(),
            query: header.uri.query(),
            headers: &header.headers,
            body: body.inspected(),
            body_truncated: !body.complete,
            client: meta.map(|m| m.client),
            source,
            ja4: meta.and_then(|m| m.ja4.as_deref()),
            identity,
        };
        let plain = matches!(source, Source::ProxyPlain | Source::TransparentPlain);
        if plain && !self.is_ai_request(&snapshot, &facts) {
            return;
        }
        let deciding = Instant::now();
        let verdict = pipeline::decide(&snapshot, &facts);
        ctx.record = Some(pipeline::decision_record(
            &facts,
            &verdict,
            deciding.elapsed(),
        ));
        ctx.verdict = Some(verdict);
    }

    /// Answers a stopped request with the stop page, with the justification a REVIEW offers
    /// when `offer_justification`.
    async fn stop(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        meta: Option<&ConnectionMeta>,
        identity: &Identity,
        offer_justification: bool,
        complete: bool,
    ) -> Result<Answer> {
        if !complete {
            // The rest of the body is still on the wire; this connection cannot carry another request.
            session.set_keepalive(None);
        }
        let Some(verdict) = ctx.verdict.as_ref() else {
            return Ok(Answer::Forward);
        };
        let request = session.req_header();
        let html = block::wants_html(request.headers.get("accept"));
        // The coaching form sends the user back to the page they asked for.
        let return_to = if request.method == http::Method::GET {
            request.uri.path_and_query().map_or("/", |p| p.as_str())
        } else {
            "/"
        };
        let offer = offer_justification.then(|| {
            let client = meta.map(|m| m.client);
            let caller = caller(ctx.target.as_ref(), identity, client, &request.headers);
            self.shared
                .coach
                .offer(&caller, verdict.decision_id, !html, return_to)
        });
        let (header, body) = block::render(verdict, html, return_to, offer.as_ref())?;
        session
            .write_response_header(Box::new(header), false)
            .await?;
        session.write_response_body(Some(body), true).await?;
        Ok(Answer::Done)
    }

    /// Sends an allowed request on: resolves its destination, applies the obligations of the
    /// policies that allowed it, and delivers `body` as planned.
    async fn deliver(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        meta: Option<&ConnectionMeta>,
        delivery: Delivery,
        body: Bytes,
    ) -> Result<Answer> {
        or_answered!(self.resolve(session, ctx, meta).await?);
        // An undecided request (plain traffic to a host that is no AI service) has no
        // obligations, but its body is delivered all the same.
        if let Some(verdict) = ctx.verdict.as_ref() {
            inject_headers(session, verdict.outcome.inject_headers.clone());
        }
        match delivery {
            Delivery::Refuse { status, message } => respond_text(session, status, message).await,
            Delivery::Masked(masked) => {
                if let Some(record) = ctx.record.as_mut() {
                    record.note_body_redacted();
                }
                self.forward_as_subrequest(session, ctx, masked).await?;
                Ok(Answer::Done)
            }
            Delivery::Replay => Ok(Answer::Forward),
            Delivery::Subrequest => {
                self.forward_as_subrequest(session, ctx, body).await?;
                Ok(Answer::Done)
            }
            Delivery::PrefixThenRest => {
                ctx.unreplayed_body = Some(body);
                Ok(Answer::Forward)
            }
        }
    }

    /// The upstream address. Only an allowed request is resolved: a denied one must not depend
    /// on, or leak through, a DNS lookup of the service it was denied for.
    async fn resolve(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        meta: Option<&ConnectionMeta>,
    ) -> Phase<()> {
        let Some(target) = ctx.target.as_mut() else {
            return Ok(Err(Answer::Forward));
        };
        // A redirected client already chose the address; DNS is only asked for explicit clients.
        let resolved = match meta.and_then(|m| m.original_dst) {
            Some(original_dst) => self.shared.upstream.pinned(original_dst),
            None => {
                self.shared
                    .upstream
                    .resolve(&target.host, target.port)
                    .await
            }
        };
        match resolved {
            Ok(addr) => {
                target.addr = Some(addr);
                Ok(Ok(()))
            }
            Err(error) => respond::refuse_destination(session, target, &error)
                .await
                .map(Err),
        }
    }

    /// An AI host (catalog, `extra_hosts`, or any host with `mode = "all"`), or a request whose
    /// own signals (API path, headers) name an AI service or look like an unknown one.
    fn is_ai_request(&self, snapshot: &pipeline::Snapshot, facts: &RequestFacts<'_>) -> bool {
        if self.shared.router.intercepts(&snapshot.catalog, facts.host) {
            return true;
        }
        let fingerprint = snapshot
            .catalog
            .fingerprint(&crate::catalog::RequestSignals {
                host: facts.host,
                path: facts.path,
                headers: facts.headers,
                ja4: facts.ja4,
            });
        fingerprint.service.is_some() || fingerprint.unknown_ai
    }

    /// Re-issues a request whose complete body outgrew pingora's retry buffer, with the buffered
    /// body preset, and pipes the upstream response back to the client.
    async fn forward_as_subrequest(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        body: Bytes,
    ) -> Result<()> {
        let Some(target) = ctx.target.clone() else {
            return Error::e_explain(ErrorType::InternalError, "no upstream target decided");
        };
        // The subrequest re-parses the head as HTTP/1.1 text, whatever the client spoke.
        let header = session.req_header_mut();
        normalize_to_origin_form(header, &target)?;
        header.set_version(http::Version::HTTP_11);
        let Some(spawner) = session.subrequest_spawner.as_ref() else {
            return Error::e_explain(ErrorType::InternalError, "subrequests are not enabled");
        };
        let sub_ctx = SubrequestCtx::builder()
            .body_mode(BodyMode::ExpectBody)
            .user_ctx(Box::new(DecidedTarget {
                target,
                inject_headers: ctx
                    .verdict
                    .as_ref()
                    .map(|v| v.outcome.inject_headers.clone())
                    .unwrap_or_default(),
            }))
            .build();
        let (subrequest, handle) = spawner.create_subrequest(session.as_downstream(), sub_ctx);
        let state = pipe_subrequest(
            session,
            subrequest,
            handle,
            |task| Ok(Some(task)),
            InputBodyType::Preset(InputBody::Bytes(vec![body])),
        )
        .await
        .map_err(|failure| failure.error)?;
        if let Some(join) = state.join_handle {
            let _ = join.await;
        }
        Ok(())
    }
}

fn connection_meta(session: &Session) -> Option<Arc<ConnectionMeta>> {
    session
        .as_downstream()
        .digest()?
        .proxy_digest
        .as_ref()?
        .user_data
        .as_ref()?
        .downcast_ref::<Arc<ConnectionMeta>>()
        .cloned()
}

/// The client as the coaching tokens bind it.
fn caller<'a>(
    target: Option<&'a Target>,
    identity: &'a Identity,
    client: Option<SocketAddr>,
    headers: &'a http::HeaderMap,
) -> coaching::Caller<'a> {
    coaching::Caller {
        host: target.map_or("", |t| t.host.as_str()),
        port: target.map_or(0, |t| t.port),
        tls: target.is_some_and(|t| t.tls),
        identity,
        signals: coaching::caller_signals(client.map(|c| c.ip()), headers),
    }
}

/// A client-facing description of an upstream failure: the kind, never internal detail.
fn upstream_failure(kind: &ErrorType) -> &'static str {
    match kind {
        ErrorType::InvalidCert | ErrorType::TLSHandshakeFailure | ErrorType::HandshakeError => {
            "its TLS certificate could not be verified"
        }
        ErrorType::ConnectTimedout => "connect timed out",
        ErrorType::ConnectRefused => "connection refused",
        ErrorType::ConnectNoRoute => "no route to host",
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => "the upstream timed out",
        _ => "upstream error",
    }
}

fn inject_headers(session: &mut Session, headers: Vec<(String, String)>) {
    for (name, value) in headers {
        if let Err(error) = session.req_header_mut().insert_header(name.clone(), value) {
            warn!(header = %name, %error, "A policy's inject_headers entry is not a valid header; skipped.");
        }
    }
}

/// pingora's errors for request framing it cannot parse (chunk sizes that overflow, bad chunk
/// terminators, invalid heads).
fn is_malformed_request(kind: &ErrorType) -> bool {
    matches!(kind, ErrorType::InvalidHTTPHeader)
        || matches!(kind, ErrorType::Custom(name) if *name == "InvalidChunk")
}

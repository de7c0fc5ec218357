//! The pingora `ProxyHttp` implementation: every request phase is a few lines calling a module.
//!
//! Where the request goes is fixed before the request is read: for an intercepted tunnel, the
//! CONNECT target the front recorded on the connection (never the inner `Host`, which would allow
//! domain fronting); for a plain request, the absolute-form target. `request_filter` buffers the
//! body, asks the pipeline for a verdict and either answers the block itself or lets pingora
//! forward — so a denied request never opens an upstream connection.
//!
//! Body replay: pingora sends the request head upstream before `request_body_filter` runs, so the
//! body is read in `request_filter`. Up to 64 KiB pingora's retry buffer replays it; a complete
//! body beyond that is re-issued as a subrequest carrying the buffered bytes; a body beyond the
//! inspection cap is judged on its prefix and the prefix is put back in front of the rest in
//! `request_body_filter`.

pub mod block;
pub mod coach;

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

use crate::audit::{AuditRecord, DecisionRecord, JsonText};
use crate::config::ReviewAction;
use crate::front::guard::RequestLimits;
use crate::front::h2_guard::BodyPace;
use crate::front::{ConnectionMeta, Listener};
use crate::identity::Claims;
use crate::metrics;
use crate::pipeline::{self, Decision, RequestFacts, Source, Verdict};
use crate::server::Shared;
use crate::upstream::UpstreamError;

/// pingora's retry buffer holds at most this much request body (`BODY_BUF_LIMIT`).
const RETRY_BUFFER_LIMIT: usize = 64 * 1024;
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

/// Where a request goes upstream, fixed in `request_filter`.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    /// Resolved only once the request is allowed.
    pub addr: Option<SocketAddr>,
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

impl AigateProxy {
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

    async fn admit(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<Answer> {
        let meta = connection_meta(session);
        let transparent = meta
            .as_ref()
            .is_some_and(|m| m.listener == Listener::Transparent);
        let (host, port, tls, source) = match meta.as_ref().and_then(|m| m.intercepted.as_ref()) {
            Some(connect) => {
                if let Some(inner) = inner_host(session.req_header()) {
                    if !inner.eq_ignore_ascii_case(&connect.host) {
                        // Sending a request for one host inside a tunnel opened to another is
                        // domain fronting; the upstream is pinned to the CONNECT target (or the
                        // SNI of a redirected connection) anyway.
                        warn!(connect = %connect.host, inner, "Inner Host differs from the intercepted host.");
                        return respond_text(
                            session,
                            421,
                            "Misdirected request: the Host header must match the host the TLS connection was opened for.\n",
                        )
                        .await;
                    }
                }
                let source = if transparent {
                    Source::TransparentIntercepted
                } else {
                    Source::ProxyIntercepted
                };
                (connect.host.clone(), connect.port, true, source)
            }
            None if transparent => {
                let port = meta
                    .as_ref()
                    .and_then(|m| m.original_dst)
                    .map_or(80, |dst| dst.port());
                match redirected_target(session.req_header()) {
                    Ok(host) => (host, port, false, Source::TransparentPlain),
                    Err(message) => return respond_text(session, 400, message).await,
                }
            }
            None => match absolute_form_target(session.req_header()) {
                Ok((host, port)) => (host, port, false, Source::ProxyPlain),
                Err(message) => return respond_text(session, 400, message).await,
            },
        };

        ctx.target = Some(Target {
            host,
            port,
            tls,
            addr: None,
        });
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
            .await;
        }

        let client = meta.as_ref().map(|m| m.client);
        let claims = Claims {
            client: client.map(|c| c.ip()),
            headers: &session.req_header().headers,
            tunnel_user: meta.as_ref().and_then(|m| m.tunnel_user),
            proxy_auth_applies: meta
                .as_ref()
                .is_none_or(|m| m.listener == Listener::Explicit && m.intercepted.is_none()),
        };
        let identity = match self.shared.identity.identify(&claims).await {
            Ok(identity) => identity,
            Err(refusal) => {
                info!(%refusal, "Proxy authentication failed.");
                metrics::PROXY_AUTH_FAILURES
                    .with_label_values(&[refusal.metric_label()])
                    .inc();
                if let Some(secs) = refusal.retry_after() {
                    let secs = secs.to_string();
                    return respond_with(
                        session,
                        429,
                        &[("retry-after", secs.as_str())],
                        "Too many failed sign-ins: proxy authentication is locked for a while.\n",
                    )
                    .await;
                }
                let challenge = self.shared.identity.challenge();
                return respond_with(
                    session,
                    407,
                    &[("proxy-authenticate", challenge.as_str())],
                    "Proxy authentication required: sign in with your corporate account.\n",
                )
                .await;
            }
        };
        if let Some(answer) = answer_expectation(session).await? {
            return Ok(answer);
        }
        let cap = self.shared.config().proxy.body_buffer_bytes;
        let limits = RequestLimits::from_config(&self.shared.config().proxy);
        let (body, complete) = read_body_prefix(session, cap, limits).await?;
        let inspected = &body[..body.len().min(cap)];
        let snapshot = self.shared.snapshot.load();
        if session.req_header().uri.path() == coach::JUSTIFY_PATH {
            let header = session.req_header();
            let caller = coach::Caller {
                host: ctx.target.as_ref().map_or("", |t| t.host.as_str()),
                port,
                tls,
                identity: &identity,
                signals: coach::caller_signals(client.map(|c| c.ip()), &header.headers),
            };
            let request = coach::Request {
                method: &header.method,
                query: header.uri.query(),
                headers: &header.headers,
                form: inspected,
                client,
            };
            let reply = coach::answer(&self.shared, &snapshot, &caller, &request).await;
            return coach_reply(session, reply).await;
        }
        let (header, target) = (session.req_header(), ctx.target.as_ref());
        let facts = RequestFacts {
            method: header.method.as_str(),
            scheme: if tls { "https" } else { "http" },
            host: target.map_or("", |t| t.host.as_str()),
            port,
            path: header.uri.path(),
            query: header.uri.query(),
            headers: &header.headers,
            body: inspected,
            body_truncated: !complete,
            client,
            source,
            ja4: meta.as_ref().and_then(|m| m.ja4.as_deref()),
            identity: &identity,
        };
        // A plain request to a host that is no AI service is forwarded undecided, as a tunnel
        // to such a host is: it is not AI usage, and recording it as such filled the dashboard.
        let plain = matches!(source, Source::ProxyPlain | Source::TransparentPlain);
        let decision = if plain && !self.is_ai_request(&snapshot, &facts) {
            Decision::Allow
        } else {
            let deciding = Instant::now();
            let verdict = pipeline::decide(&snapshot, &facts);
            let record = pipeline::decision_record(&facts, &verdict, deciding.elapsed());
            let decision = verdict.decision;
            ctx.verdict = Some(verdict);
            ctx.record = Some(record);
            decision
        };

        let review_forwarded = decision == Decision::Review
            && self.shared.config().policy.review_action == ReviewAction::AllowAndFlag;
        if decision != Decision::Allow && !review_forwarded {
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
            let offer = (decision == Decision::Review).then(|| {
                let caller = coach::Caller {
                    signals: coach::caller_signals(client.map(|c| c.ip()), &request.headers),
                    host: ctx.target.as_ref().map_or("", |t| t.host.as_str()),
                    port,
                    tls,
                    identity: &identity,
                };
                self.shared
                    .coach
                    .offer(&caller, verdict.decision_id, !html, return_to)
            });
            let (header, body) = block::render(verdict, html, return_to, offer.as_ref())?;
            session
                .write_response_header(Box::new(header), false)
                .await?;
            session.write_response_body(Some(body), true).await?;
            return Ok(Answer::Done);
        }

        // Only an allowed request is resolved: a denied one must not depend on, or leak through,
        // a DNS lookup of the service it was denied for.
        let Some(target) = ctx.target.as_mut() else {
            return Ok(Answer::Forward);
        };
        // A redirected client already chose the address; DNS is only asked for explicit clients.
        let resolved = match meta.as_ref().and_then(|m| m.original_dst) {
            Some(original_dst) => self.shared.upstream.pinned(original_dst),
            None => {
                self.shared
                    .upstream
                    .resolve(&target.host, target.port)
                    .await
            }
        };
        match resolved {
            Ok(addr) => target.addr = Some(addr),
            Err(error) => return refuse_destination(session, target, &error).await,
        }

        // Obligations of the policies that allowed the request (an undecided request, plain
        // traffic to a host that is no AI service, has none, but its body is replayed all the same).
        if let Some(verdict) = ctx.verdict.as_ref() {
            inject_headers(session, verdict.outcome.inject_headers.clone());
            if verdict.outcome.redact && decision == Decision::Allow {
                if !complete {
                    // The unread rest of the body cannot be masked, so it must not be sent.
                    return respond_text(
                        session,
                        413,
                        "Payload too large: a policy requires sensitive data to be masked, and this body exceeds what the gateway can inspect.\n",
                    )
                    .await;
                }
                let findings = verdict
                    .inspection
                    .as_ref()
                    .is_some_and(|i| !i.entities.is_empty());
                // Masks keep the body's length: pingora replays the client's original head.
                let redacted = verdict
                    .inspection
                    .as_ref()
                    .and_then(|i| i.masked_in_place(&body));
                if findings && redacted.is_none() {
                    return respond_text(
                        session,
                        422,
                        "A policy requires sensitive data to be masked, and this body cannot be rewritten (compressed, or the data is escaped); remove the sensitive data and retry.\n",
                    )
                    .await;
                }
                if let Some(redacted) = redacted {
                    if let Some(record) = ctx.record.as_mut() {
                        record.explanation = record.explanation.take().map(with_body_redacted);
                    }
                    self.forward_as_subrequest(session, ctx, Bytes::from(redacted))
                        .await?;
                    return Ok(Answer::Done);
                }
            }
        }

        if !complete {
            ctx.unreplayed_body = Some(body);
        } else if body.len() > RETRY_BUFFER_LIMIT {
            self.forward_as_subrequest(session, ctx, body).await?;
            return Ok(Answer::Done);
        }
        Ok(Answer::Forward)
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

/// Reads the request body until it ends or `cap` bytes are buffered. Returns the bytes read (the
/// last chunk may take it past `cap`) and whether the body is complete. An h2 body slower than
/// `limits` allow is answered 408 (the HTTP/1 guard watches the connection's bytes instead).
async fn read_body_prefix(
    session: &mut Session,
    cap: usize,
    limits: RequestLimits,
) -> Result<(Bytes, bool)> {
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
    let complete = session.is_body_done();
    Ok((body.freeze(), complete))
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

/// The host the request itself names (`Host`, or the h2 `:authority`), without a port.
fn inner_host(header: &RequestHeader) -> Option<&str> {
    let authority = header
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| header.headers.get("host").and_then(|h| h.to_str().ok()))?;
    Some(strip_port(authority))
}

fn strip_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    authority
        .rsplit_once(':')
        .map_or(authority, |(host, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                host
            } else {
                authority
            }
        })
}

/// The target of an absolute-form request (`GET http://host:port/path`), the only form a forward
/// proxy can route.
fn absolute_form_target(header: &RequestHeader) -> std::result::Result<(String, u16), String> {
    let uri: http::Uri = std::str::from_utf8(header.raw_path())
        .ok()
        .and_then(|raw| raw.parse().ok())
        .ok_or_else(|| "Bad request: the request target is not a valid URI.\n".to_owned())?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => {
            return Err(format!(
                "Bad request: {other}:// targets must be tunnelled with CONNECT.\n"
            ))
        }
        None => {
            return Err("Bad request: this is a forward proxy; send absolute-form requests (http://host/path) or CONNECT.\n".to_owned())
        }
    }
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| "Bad request: the request target has no host.\n".to_owned())?;
    let host = crate::host::unbracket(host).to_ascii_lowercase();
    Ok((host, uri.port_u16().unwrap_or(80)))
}

/// The host a redirected plain-HTTP request is for: its `Host` header (or absolute-form
/// authority). It names the service for fingerprinting and policy; where the request goes is the
/// connection's original destination.
fn redirected_target(header: &RequestHeader) -> std::result::Result<String, String> {
    let host = inner_host(header)
        .map(|h| crate::host::unbracket(h).to_ascii_lowercase())
        .filter(|h| crate::host::is_dns_name(h) || crate::host::is_ip_literal(h))
        .ok_or_else(|| "Bad request: a Host header naming the server is required.\n".to_owned())?;
    Ok(crate::host::normalize(&host))
}

/// Upstream requests are sent origin-form with a `Host` header, whatever form the client used
/// (absolute-form to the proxy, or h2 `:authority`).
fn normalize_to_origin_form(request: &mut RequestHeader, target: &Target) -> Result<()> {
    // An absolute-form h1 target is kept verbatim in the raw target (the parsed uri then holds
    // only the path); h2 requests carry scheme and authority in the uri itself.
    let absolute = request.uri.scheme().is_some()
        || request.uri.authority().is_some()
        || !request.raw_path().starts_with(b"/");
    if absolute {
        let path = request
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse::<http::Uri>()
            .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "request path", e))?;
        request.set_uri(path);
    }
    if request.headers.get("host").is_none() {
        let default_port = if target.tls { 443 } else { 80 };
        let host = if target.port == default_port {
            target.host.clone()
        } else {
            format!("{}:{}", target.host, target.port)
        };
        request.insert_header("host", host)?;
    }
    Ok(())
}

/// A client-facing description of an upstream failure: the kind, never internal detail.
/// The explanation with `body_redacted: true` added. Only redacted forwards pay the re-parse.
fn with_body_redacted(explanation: JsonText) -> JsonText {
    let Ok(mut value) = serde_json::from_str::<serde_json::Value>(explanation.get()) else {
        return explanation;
    };
    if let Some(object) = value.as_object_mut() {
        object.insert("body_redacted".into(), serde_json::Value::Bool(true));
    }
    JsonText::of(&value).unwrap_or(explanation)
}

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

async fn coach_reply(session: &mut Session, reply: coach::Reply) -> Result<Answer> {
    match reply {
        coach::Reply::Redirect(location) => redirect(session, &location).await,
        coach::Reply::Page(status, page) => {
            let headers = [
                ("content-type", "text/html; charset=utf-8"),
                ("cache-control", "no-store"),
                ("content-security-policy", block::PAGE_CSP),
            ];
            respond_with(session, status, &headers, page).await
        }
        coach::Reply::Refused(status, message) => respond_text(session, status, message).await,
        coach::Reply::TooMany(retry_after) => {
            let retry_after = retry_after.to_string();
            respond_with(
                session,
                429,
                &[("retry-after", retry_after.as_str())],
                "Too many justifications from this client; try again later.\n",
            )
            .await
        }
    }
}

async fn redirect(session: &mut Session, location: &str) -> Result<Answer> {
    let mut header = ResponseHeader::build(303, Some(3))?;
    header.insert_header("location", location)?;
    header.insert_header("content-length", "0")?;
    header.insert_header("cache-control", "no-store")?;
    session
        .write_response_header(Box::new(header), true)
        .await?;
    Ok(Answer::Done)
}

/// The gateway needs the body to decide, so it answers `Expect: 100-continue` itself (a client
/// would otherwise wait about a second before sending the body); `upstream_request_filter` does
/// not pass the expectation on, since the upstream gets a body that is already there. Any other expectation is one
/// the gateway cannot meet (417).
async fn answer_expectation(session: &mut Session) -> Result<Option<Answer>> {
    let Some(expect) = session.req_header().headers.get(http::header::EXPECT) else {
        return Ok(None);
    };
    if !expect.as_bytes().eq_ignore_ascii_case(b"100-continue") {
        return respond_text(
            session,
            417,
            "Expectation failed: only 100-continue is supported.\n",
        )
        .await
        .map(Some);
    }
    session.downstream_session.write_continue_response().await?;
    Ok(None)
}

/// pingora's errors for request framing it cannot parse (chunk sizes that overflow, bad chunk
/// terminators, invalid heads).
fn is_malformed_request(kind: &ErrorType) -> bool {
    matches!(kind, ErrorType::InvalidHTTPHeader)
        || matches!(kind, ErrorType::Custom(name) if *name == "InvalidChunk")
}

/// Answers a request whose destination cannot be connected to: 403 when the destination policy
/// refuses it, 502 when it does not resolve, with the reason in `X-Aigate-Error` and the reason
/// phrase too (clients such as pip show only the status line).
async fn refuse_destination(
    session: &mut Session,
    target: &Target,
    error: &UpstreamError,
) -> Result<Answer> {
    let (status, message) = match error.refusal_reason() {
        Some(reason) => {
            metrics::UPSTREAM_REFUSED.with_label_values(&[reason]).inc();
            warn!(host = %target.host, port = target.port, reason, %error, "Refused a request by the destination policy.");
            (403, format!("Forbidden: {error}."))
        }
        None => {
            warn!(host = %target.host, port = target.port, %error, "Upstream host does not resolve.");
            (502, format!("Bad gateway: {error}."))
        }
    };
    let phrase = crate::front::explicit::header_safe(&message);
    let mut header = ResponseHeader::build(status, Some(4))?;
    header.set_reason_phrase(Some(&phrase))?;
    header.insert_header("content-type", "text/plain; charset=utf-8")?;
    header.insert_header("x-aigate-error", phrase.as_str())?;
    let body = format!("{message}\n");
    header.insert_header("content-length", body.len().to_string())?;
    session.set_keepalive(None);
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session
        .write_response_body(Some(Bytes::from(body)), true)
        .await?;
    Ok(Answer::Done)
}

async fn respond_text(
    session: &mut Session,
    status: u16,
    message: impl Into<String>,
) -> Result<Answer> {
    respond_with(session, status, &[], message).await
}

async fn respond_with(
    session: &mut Session,
    status: u16,
    extra_headers: &[(&'static str, &str)],
    message: impl Into<String>,
) -> Result<Answer> {
    let message = message.into();
    let mut header = ResponseHeader::build(status, Some(3 + extra_headers.len()))?;
    header.insert_header("content-type", "text/plain; charset=utf-8")?;
    for (name, value) in extra_headers {
        header.insert_header(*name, *value)?;
    }
    header.insert_header("content-length", message.len().to_string())?;
    // The body may still be unread; do not try to reuse this connection.
    session.set_keepalive(None);
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session
        .write_response_body(Some(Bytes::from(message)), true)
        .await?;
    Ok(Answer::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_port_handles_names_and_ipv6() {
        assert_eq!(strip_port("api.openai.com:443"), "api.openai.com");
        assert_eq!(strip_port("api.openai.com"), "api.openai.com");
        assert_eq!(strip_port("[::1]:8443"), "::1");
    }

    #[test]
    fn absolute_form_is_required_for_plain_requests() {
        let header = RequestHeader::build("GET", b"http://Example.com:8080/x?y=1", None).unwrap();
        assert_eq!(
            absolute_form_target(&header).unwrap(),
            ("example.com".to_owned(), 8080)
        );
        let header = RequestHeader::build("GET", b"/relative", None).unwrap();
        assert!(absolute_form_target(&header)
            .unwrap_err()
            .contains("absolute-form"));
        let header = RequestHeader::build("GET", b"https://example.com/", None).unwrap();
        assert!(absolute_form_target(&header)
            .unwrap_err()
            .contains("CONNECT"));
    }

    #[test]
    fn redirected_requests_are_named_by_their_host_header() {
        let mut header = RequestHeader::build("GET", b"/v1/models", None).unwrap();
        assert!(redirected_target(&header).is_err());
        header.insert_header("host", "API.OpenAI.com:80").unwrap();
        assert_eq!(redirected_target(&header).unwrap(), "api.openai.com");
        header.insert_header("host", "bad host").unwrap();
        assert!(redirected_target(&header).is_err());
    }

    #[test]
    fn origin_form_gets_a_host_header() {
        let target = Target {
            host: "api.openai.com".into(),
            port: 443,
            tls: true,
            addr: None,
        };
        let mut header =
            RequestHeader::build("POST", b"https://api.openai.com/v1/chat?x=1", None).unwrap();
        normalize_to_origin_form(&mut header, &target).unwrap();
        assert_eq!(header.uri.to_string(), "/v1/chat?x=1");
        assert_eq!(header.headers.get("host").unwrap(), "api.openai.com");
    }
}

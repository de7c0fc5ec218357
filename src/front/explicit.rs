//! The explicit forward-proxy listener: clients configured to use the proxy send either
//! `CONNECT host:port` or absolute-form requests (`GET http://host/path`).
//!
//! Only the first request head of a connection is read here. Nothing a client sends may panic
//! the gateway or hold resources unboundedly: heads are size- and time-limited, connections are
//! capped, and every refusal is a clear status line plus a log line.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, info, info_span, warn, Instrument};

use super::hello::{read_client_hello, HelloError};
use super::intercept::HelloFacts;
use super::route::{BypassKind, Route};
use super::{bypass, intercept, tunnel, ConnectTarget, ConnectionMeta, FrontContext};
use crate::metrics;
use crate::pipeline::Source;
use crate::upstream::UpstreamError;

const MAX_HEADERS: usize = 100;
/// Accept backlog of each serving thread's socket on `[proxy] listen` (tokio's default, which
/// the single shared socket had before).
pub const BACKLOG: i32 = 1024;

/// Accepts until shutdown. `limit` caps this listener's open connections across every serving
/// thread, so it is shared, not made per call.
pub async fn serve(listener: TcpListener, front: Arc<FrontContext>, limit: Arc<Semaphore>) {
    let mut shutdown = front.shutdown.clone();
    loop {
        let Some((socket, peer)) = super::accept(&listener, &mut shutdown).await else {
            return;
        };
        metrics::CONNECTIONS_TOTAL
            .with_label_values(&["explicit"])
            .inc();
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            metrics::CONNECTIONS_REJECTED
                .with_label_values(&["max_connections"])
                .inc();
            warn!(%peer, "Connection limit reached; refusing.");
            tokio::spawn(async move {
                let mut socket = socket;
                let _ = write_status(
                    &mut socket,
                    503,
                    "Service Unavailable",
                    "Too many connections.\n",
                )
                .await;
            });
            continue;
        };
        let per_client = front.shared.config().proxy.max_connections_per_client;
        let Some(slot) = front.shared.client_connections.admit(peer.ip(), per_client) else {
            metrics::CONNECTIONS_REJECTED
                .with_label_values(&["max_connections_per_client"])
                .inc();
            warn!(%peer, limit = per_client, "Per-client connection limit reached; refusing.");
            tokio::spawn(async move {
                let mut socket = socket;
                let message = "Too many connections from this client.\n";
                let _ = write_status(&mut socket, 503, "Service Unavailable", message).await;
            });
            continue;
        };
        let front = front.clone();
        let tracked = front.connections.track();
        tokio::spawn(
            async move {
                metrics::CONNECTIONS_ACTIVE.inc();
                handle(front, socket, peer).await;
                metrics::CONNECTIONS_ACTIVE.dec();
                drop((permit, slot));
                drop(tracked);
            }
            .instrument(info_span!("conn", %peer)),
        );
    }
}

/// The first request head of a connection, as far as routing needs it.
enum Head {
    Connect {
        target: ConnectTarget,
        head_len: usize,
        /// The CONNECT's own headers (credentials, trusted identity header).
        headers: http::HeaderMap,
    },
    Plain,
}

async fn handle(front: Arc<FrontContext>, mut client: TcpStream, peer: SocketAddr) {
    let _ = client.set_nodelay(true);
    let config = &front.shared.config().proxy;
    let mut buffer = Vec::with_capacity(4096);
    let head = match tokio::time::timeout(
        config.header_read_timeout(),
        Box::pin(read_head(&mut client, &mut buffer, config.max_header_bytes)),
    )
    .await
    {
        Ok(Ok(head)) => head,
        Ok(Err(refusal)) => {
            metrics::CONNECTIONS_REJECTED
                .with_label_values(&[refusal.metric])
                .inc();
            info!(
                status = refusal.status,
                reason = refusal.message,
                "Refused a malformed request head."
            );
            if refusal.status != 0 {
                let _ = write_status(&mut client, refusal.status, refusal.reason, refusal.message)
                    .await;
            }
            return;
        }
        Err(_) => {
            metrics::CONNECTIONS_REJECTED
                .with_label_values(&["header_timeout"])
                .inc();
            debug!("No request head in time; closing.");
            let _ = write_status(
                &mut client,
                408,
                "Request Timeout",
                "No request received in time.\n",
            )
            .await;
            return;
        }
    };

    match head {
        Head::Plain => {
            let meta = Arc::new(ConnectionMeta::explicit(peer, None, None));
            super::hand_to_proxy(&front, client, &buffer, meta).await
        }
        Head::Connect {
            target,
            head_len,
            headers,
        } => {
            let via = headers.get_all(http::header::VIA);
            if front
                .shared
                .upstream
                .has_looped(via.iter().filter_map(|v| v.to_str().ok()))
            {
                metrics::UPSTREAM_REFUSED.with_label_values(&["loop"]).inc();
                warn!(host = %target.host, "Refused a CONNECT that already passed through this gateway.");
                let message =
                    "Loop detected: this request already passed through this gateway (Via).\n";
                let _ = write_status(&mut client, 508, "Loop Detected", message).await;
                return;
            }
            let identity = &front.shared.identity;
            // A blind tunnel to a host that is no AI service never uses its user: without
            // required authentication its credentials are not worth an argon2 check. (An IP
            // literal may still name an AI service in its ClientHello.)
            let unused = !identity.config().require_proxy_auth
                && !crate::host::is_ip_literal(&target.host)
                && front
                    .shared
                    .router
                    .route(&front.shared.snapshot.load().catalog, &target.host)
                    == Route::Tunnel;
            let authenticated = if unused {
                Ok(None)
            } else {
                Box::pin(identity.authenticate_tunnel(Some(peer.ip()), &headers)).await
            };
            let tunnel_user = match authenticated {
                Ok(user) => user,
                Err(refusal) => {
                    metrics::PROXY_AUTH_FAILURES
                        .with_label_values(&[refusal.metric_label()])
                        .inc();
                    info!(host = %target.host, %refusal, "CONNECT refused: proxy authentication.");
                    let _ = match refusal.retry_after() {
                        Some(secs) => write_locked_out(&mut client, secs).await,
                        None => write_proxy_auth_required(&mut client, &identity.challenge()).await,
                    };
                    return;
                }
            };
            // Only the bytes after the head outlive this point: a long-lived tunnel must not
            // hold the head buffer, the CONNECT headers or a catalog snapshot.
            let pending = buffer[head_len..].to_vec();
            drop((buffer, headers));
            let connect = Connect {
                client,
                peer,
                pending,
                target,
                tunnel_user,
            };
            Box::pin(route_connect(&front, connect)).await;
        }
    }
}

/// A CONNECT that passed authentication, about to be routed.
struct Connect {
    client: TcpStream,
    peer: SocketAddr,
    /// Bytes the client sent after the head (and, once read, its ClientHello).
    pending: Vec<u8>,
    target: ConnectTarget,
    tunnel_user: Option<crate::identity::TunnelUser>,
}

impl Connect {
    /// What the policy can know at CONNECT (the JA4 only names the app, not the service).
    fn facts(&self) -> bypass::ConnectFacts<'_> {
        bypass::ConnectFacts {
            client: self.peer,
            tunnel_user: self.tunnel_user,
            host: &self.target.host,
            port: self.target.port,
            ja4: None,
            source: Source::ProxyIntercepted,
        }
    }
}

async fn route_connect(front: &FrontContext, mut connect: Connect) {
    if crate::host::is_ip_literal(&connect.target.host) {
        return Box::pin(ip_literal(front, connect)).await;
    }
    let route = front
        .shared
        .router
        .route(&front.shared.snapshot.load().catalog, &connect.target.host);
    match route {
        Route::Tunnel => open_tunnel(front, connect, false).await,
        Route::Bypass(kind) => {
            let verdict = bypass::decide(front, &connect.facts()).await;
            if verdict.denies() {
                return refuse_denied(front, connect, verdict, kind).await;
            }
            verdict.record(front, kind, None);
            open_tunnel(front, connect, false).await;
        }
        Route::Intercept => {
            // A learned bypass is per app (JA4), known only after the ClientHello, which comes
            // after our 200: if this client holds one for the host, ask the policy now, while
            // the CONNECT can still be refused.
            let early = if front
                .shared
                .router
                .may_have_learned(connect.peer.ip(), &connect.target.host)
            {
                let verdict = bypass::decide(front, &connect.facts()).await;
                if verdict.denies() {
                    return refuse_denied(front, connect, verdict, BypassKind::Learned).await;
                }
                Some(verdict)
            } else {
                None
            };
            if write_connect_established(&mut connect.client)
                .await
                .is_err()
            {
                return;
            }
            let host = connect.target.host.clone();
            let Some(hello) =
                intercept::read_hello(front, &mut connect.client, &mut connect.pending, &host)
                    .await
            else {
                return;
            };
            Box::pin(intercept_or_learned(front, connect, hello, early, None)).await;
        }
    }
}

/// After the ClientHello of an AI host: this client app's learned bypass tunnels it (decided
/// first), anything else is intercepted. `upstream` is where to connect instead of resolving
/// the host (a CONNECT to an IP literal).
async fn intercept_or_learned(
    front: &FrontContext,
    connect: Connect,
    hello: HelloFacts,
    early: Option<bypass::ConnectVerdict>,
    upstream: Option<SocketAddr>,
) {
    let router = &front.shared.router;
    let learned = router.learned_bypass_for(
        connect.peer.ip(),
        hello.ja4.as_deref(),
        &connect.target.host,
    );
    if let Some(learned) = learned {
        let verdict = match early {
            Some(verdict) => verdict,
            None => bypass::decide(front, &connect.facts()).await,
        };
        if verdict.denies() {
            // The 200 is out: closing is the refusal the client can still get.
            verdict.record(front, BypassKind::Learned, None);
            return;
        }
        verdict.record(front, BypassKind::Learned, Some(&learned.evidence));
        return open_tunnel_to(front, connect, upstream, true).await;
    }
    let meta = ConnectionMeta {
        original_dst: upstream,
        ..ConnectionMeta::explicit(
            connect.peer,
            Some(connect.target.clone()),
            connect.tunnel_user,
        )
    };
    intercept::accept(
        front,
        connect.client,
        connect.pending,
        connect.target,
        Arc::new(meta),
        hello,
    )
    .await;
}

/// A CONNECT to an IP literal names no host to route by, but the ClientHello inside does: an AI
/// service's SNI is routed as if the CONNECT had named it (intercepted, or decided and tunnelled
/// through a bypass), with the upstream connection still going to the address the client gave.
async fn ip_literal(front: &FrontContext, mut connect: Connect) {
    let Ok(address) = connect.target.host.parse::<std::net::IpAddr>() else {
        return;
    };
    let upstream = SocketAddr::new(address, connect.target.port);
    // The address needs no lookup: refuse a forbidden one while the CONNECT can still be answered.
    if let Err(error) = front.shared.upstream.pinned(upstream) {
        return refuse_tunnel(&mut connect.client, &connect.target, &error).await;
    }
    if write_connect_established(&mut connect.client)
        .await
        .is_err()
    {
        return;
    }
    let timeout = front.shared.config().proxy.header_read_timeout();
    if connect.pending.is_empty() {
        let mut first = [0u8; 1];
        match tokio::time::timeout(timeout, connect.client.peek(&mut first)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => {}
            // A protocol where the server speaks first (SSH, SMTP) sends nothing. Port 443 is
            // where AI services are, and TLS clients speak first there: fail closed.
            Err(_) if connect.target.port == 443 => {
                debug!(host = %connect.target.host, "Nothing sent through a CONNECT to an IP literal on 443 in time; closing.");
                return;
            }
            Err(_) => return open_tunnel(front, connect, true).await,
        }
    }
    let hello = match Box::pin(read_client_hello(
        &mut connect.client,
        &mut connect.pending,
        timeout,
    ))
    .await
    {
        Ok(hello) => HelloFacts::from(hello),
        // Not TLS: no name to route by; a plain tunnel as before.
        Err(HelloError::NotTls) => return open_tunnel(front, connect, true).await,
        Err(error) => {
            metrics::CONNECTIONS_REJECTED
                .with_label_values(&[error.metric_label()])
                .inc();
            info!(host = %connect.target.host, %error, "No usable ClientHello after a CONNECT to an IP literal; closing.");
            return;
        }
    };
    let sni = hello
        .sni
        .clone()
        .filter(|sni| crate::host::is_dns_name(sni) && !crate::host::is_ip_literal(sni));
    let Some(sni) = sni else {
        return open_tunnel(front, connect, true).await;
    };
    let route = front
        .shared
        .router
        .route(&front.shared.snapshot.load().catalog, &sni);
    if route == Route::Tunnel {
        return open_tunnel(front, connect, true).await;
    }
    info!(address = %upstream, %sni, "CONNECT to an IP literal names an AI service in its ClientHello; routing by the SNI.");
    connect.target.host = sni;
    match route {
        Route::Bypass(kind) => {
            let verdict = bypass::decide(front, &connect.facts()).await;
            if verdict.denies() {
                // The 200 is out: closing is the refusal the client can still get.
                return verdict.record(front, kind, None);
            }
            verdict.record(front, kind, None);
            open_tunnel_to(front, connect, Some(upstream), true).await;
        }
        _ => {
            Box::pin(intercept_or_learned(
                front,
                connect,
                hello,
                None,
                Some(upstream),
            ))
            .await
        }
    }
}

/// Refuses a CONNECT whose host the policy denies even without content, recording the DENY.
async fn refuse_denied(
    front: &FrontContext,
    mut connect: Connect,
    verdict: bypass::ConnectVerdict,
    kind: BypassKind,
) {
    let message = format!(
        "Blocked by policy: {} ({}). This host is not tunnelled uninspected.\n",
        verdict.reason(),
        connect.target.host
    );
    verdict.record(front, kind, None);
    let _ = write_status(&mut connect.client, 403, "Forbidden", &message).await;
}

async fn open_tunnel(front: &FrontContext, connect: Connect, answered: bool) {
    open_tunnel_to(front, connect, None, answered).await;
}

/// Relays `connect` to its target (or to `upstream` when given). `answered`: the 200 is already
/// out, so a failure can only close the connection.
async fn open_tunnel_to(
    front: &FrontContext,
    connect: Connect,
    upstream: Option<SocketAddr>,
    answered: bool,
) {
    let Connect {
        mut client,
        pending,
        target,
        ..
    } = connect;
    let shared = &front.shared;
    let resolved = match upstream {
        Some(addr) => shared.upstream.pinned(addr),
        None => shared.upstream.resolve(&target.host, target.port).await,
    };
    let addr = match resolved {
        Ok(addr) => addr,
        Err(error) if answered => {
            // The 200 is out (a CONNECT routed by its ClientHello): closing is the refusal the
            // client can still get.
            if let Some(label) = error.refusal_reason() {
                metrics::UPSTREAM_REFUSED.with_label_values(&[label]).inc();
            }
            info!(host = %target.host, %error, "Tunnel target refused or unresolvable; closing.");
            return;
        }
        Err(error) => {
            refuse_tunnel(&mut client, &target, &error).await;
            return;
        }
    };
    let origin = match tokio::time::timeout(
        shared.config().upstream.connect_timeout(),
        TcpStream::connect(addr),
    )
    .await
    {
        Ok(Ok(origin)) => origin,
        Ok(Err(error)) => {
            info!(host = %target.host, %addr, %error, "Tunnel target refused the connection.");
            if !answered {
                let _ = write_status(
                    &mut client,
                    502,
                    "Bad Gateway",
                    &format!("Cannot connect to {}: {error}.\n", target.host),
                )
                .await;
            }
            return;
        }
        Err(_) => {
            info!(host = %target.host, %addr, "Tunnel target did not answer in time.");
            if !answered {
                let _ = write_status(
                    &mut client,
                    504,
                    "Gateway Timeout",
                    &format!("{} did not answer in time.\n", target.host),
                )
                .await;
            }
            return;
        }
    };
    let _ = origin.set_nodelay(true);
    if !answered && write_connect_established(&mut client).await.is_err() {
        return;
    }
    metrics::TUNNELS_TOTAL.inc();
    match tunnel::relay(
        client,
        origin,
        &pending,
        shared.config().proxy.tunnel_idle_timeout(),
    )
    .await
    {
        Ok(stats) => debug!(
            host = %target.host,
            up = stats.upstream_bytes,
            down = stats.downstream_bytes,
            idle_timed_out = stats.idle_timed_out,
            "Tunnel closed."
        ),
        Err(error) => debug!(host = %target.host, %error, "Tunnel ended with an error."),
    }
}

/// Answers a CONNECT whose target cannot be connected to: 403 when the destination policy refuses
/// it, 502 when it does not resolve; the reason also goes in `X-Aigate-Error`.
async fn refuse_tunnel(client: &mut TcpStream, target: &ConnectTarget, error: &UpstreamError) {
    let (status, reason, message) = match error.refusal_reason() {
        Some(label) => {
            metrics::UPSTREAM_REFUSED.with_label_values(&[label]).inc();
            warn!(host = %target.host, port = target.port, reason = label, %error, "Refused a tunnel by the destination policy.");
            (403, "Forbidden", format!("Forbidden: {error}."))
        }
        None => {
            info!(host = %target.host, %error, "Tunnel target does not resolve.");
            (502, "Bad Gateway", format!("Bad gateway: {error}."))
        }
    };
    let header = header_safe(&message);
    let body = format!("{message}\n");
    let _ = write_response(
        client,
        status,
        reason,
        Some(("X-Aigate-Error", &header)),
        &body,
    )
    .await;
}

/// `text` as a header value: visible ASCII and spaces only, bounded.
pub(crate) fn header_safe(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .take(200)
        .collect()
}

struct Refusal {
    /// 0: close without answering (the client is gone).
    status: u16,
    reason: &'static str,
    message: &'static str,
    metric: &'static str,
}

const fn refusal(
    status: u16,
    reason: &'static str,
    message: &'static str,
    metric: &'static str,
) -> Refusal {
    Refusal {
        status,
        reason,
        message,
        metric,
    }
}

/// Reads until a complete request head is buffered and classifies it.
async fn read_head(
    client: &mut TcpStream,
    buffer: &mut Vec<u8>,
    max_bytes: usize,
) -> Result<Head, Refusal> {
    let mut chunk = [0u8; 4096];
    loop {
        let read = client
            .read(&mut chunk)
            .await
            .map_err(|_| refusal(0, "", "read error", "read_error"))?;
        if read == 0 {
            return Err(refusal(
                0,
                "",
                "client closed before sending a request",
                "closed",
            ));
        }
        buffer.extend_from_slice(&chunk[..read]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(buffer) {
            Ok(httparse::Status::Complete(head_len)) => {
                if head_len > max_bytes {
                    return Err(too_large());
                }
                if request.method != Some("CONNECT") {
                    return Ok(Head::Plain);
                }
                let target = parse_connect_target(request.path.unwrap_or("")).ok_or(refusal(
                    400,
                    "Bad Request",
                    "CONNECT needs a host:port target.\n",
                    "bad_connect",
                ))?;
                let mut map = http::HeaderMap::with_capacity(request.headers.len());
                for header in request.headers.iter() {
                    if let (Ok(name), Ok(value)) = (
                        http::HeaderName::from_bytes(header.name.as_bytes()),
                        http::HeaderValue::from_bytes(header.value),
                    ) {
                        map.append(name, value);
                    }
                }
                return Ok(Head::Connect {
                    target,
                    head_len,
                    headers: map,
                });
            }
            Ok(httparse::Status::Partial) if buffer.len() > max_bytes => return Err(too_large()),
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => return Err(too_large()),
            Err(_) => {
                return Err(refusal(
                    400,
                    "Bad Request",
                    "Malformed HTTP request.\n",
                    "bad_request",
                ))
            }
        }
    }
}

fn too_large() -> Refusal {
    refusal(
        431,
        "Request Header Fields Too Large",
        "Request head too large.\n",
        "header_too_large",
    )
}

/// `host:port` of a CONNECT request: a DNS name or IP literal and a non-zero port.
fn parse_connect_target(authority: &str) -> Option<ConnectTarget> {
    let authority: http::uri::Authority = authority.parse().ok()?;
    let port = authority.port_u16().filter(|port| *port != 0)?;
    let host = authority.host();
    let bare = crate::host::unbracket(host);
    let valid = crate::host::is_ip_literal(bare) || crate::host::is_dns_name(bare);
    valid.then(|| ConnectTarget {
        host: crate::host::normalize(bare),
        port,
    })
}

async fn write_connect_established(client: &mut TcpStream) -> std::io::Result<()> {
    client
        .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .await
}

async fn write_proxy_auth_required(client: &mut TcpStream, challenge: &str) -> std::io::Result<()> {
    let message = "Proxy authentication required: sign in with your corporate account.\n";
    let header = Some(("Proxy-Authenticate", challenge));
    write_response(
        client,
        407,
        "Proxy Authentication Required",
        header,
        message,
    )
    .await
}

async fn write_locked_out(client: &mut TcpStream, retry_after_secs: u64) -> std::io::Result<()> {
    let message = "Too many failed sign-ins: proxy authentication is locked for a while.\n";
    let retry_after = retry_after_secs.to_string();
    let header = Some(("Retry-After", retry_after.as_str()));
    write_response(client, 429, "Too Many Requests", header, message).await
}

async fn write_status(
    client: &mut TcpStream,
    status: u16,
    reason: &str,
    message: &str,
) -> std::io::Result<()> {
    write_response(client, status, reason, None, message).await
}

/// A plain-text answer that closes the connection, with one extra header when given.
async fn write_response(
    client: &mut TcpStream,
    status: u16,
    reason: &str,
    header: Option<(&str, &str)>,
    message: &str,
) -> std::io::Result<()> {
    let extra = header.map_or(String::new(), |(name, value)| {
        format!("{name}: {value}\r\n")
    });
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\n{extra}Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{message}",
        message.len()
    );
    client.write_all(response.as_bytes()).await?;
    client.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_targets_are_validated() {
        let target = parse_connect_target("API.OpenAI.com:443").unwrap();
        assert_eq!(
            target,
            ConnectTarget {
                host: "api.openai.com".into(),
                port: 443
            }
        );
        assert_eq!(parse_connect_target("[::1]:8443").unwrap().host, "::1");
        for bad in [
            "api.openai.com",
            "api.openai.com:0",
            "api.openai.com:99999",
            ":443",
            "a b:443",
            "exa$mple.com:443",
            "",
            "http://x:1/",
        ] {
            assert!(parse_connect_target(bad).is_none(), "{bad:?} accepted");
        }
    }
}

/// Property tests of the CONNECT head parser (helper D, issue 38): arbitrary bytes never panic
/// and never read past the head limit; every valid CONNECT head is read back as sent.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    /// `read_head` over a real loopback socket the client writes `bytes` to and then closes.
    fn read(bytes: Vec<u8>, max_bytes: usize) -> (Result<Head, Refusal>, Vec<u8>) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let writer = tokio::spawn(async move {
                let mut client = TcpStream::connect(addr).await.unwrap();
                let _ = client.write_all(&bytes).await;
                let _ = client.shutdown().await;
                // Held open until the reader is done, so a reset never races the last bytes.
                let mut sink = Vec::new();
                let _ = client.read_to_end(&mut sink).await;
            });
            let (mut server, _) = listener.accept().await.unwrap();
            let mut buffer = Vec::new();
            let head = read_head(&mut server, &mut buffer, max_bytes).await;
            drop(server);
            let _ = writer.await;
            (head, buffer)
        })
    }

    const NAME: &str = "[a-zA-Z][a-zA-Z0-9-]{0,15}[a-zA-Z0-9](\\.[a-zA-Z][a-zA-Z0-9]{0,8}){1,3}";

    proptest! {
        #![proptest_config(crate::proptest_config())]

        #[test]
        fn connect_targets_never_panic_and_are_valid_when_accepted(authority in "\\PC{0,60}|[a-zA-Z0-9.:\\[\\]@%-]{0,60}") {
            if let Some(target) = parse_connect_target(&authority) {
                prop_assert!(target.port != 0);
                prop_assert!(crate::host::is_dns_name(&target.host) || crate::host::is_ip_literal(&target.host));
                prop_assert_eq!(target.host.to_ascii_lowercase(), target.host.clone());
            }
        }

        #[test]
        fn any_head_bytes_are_refused_or_read_within_the_limit(
            bytes in proptest::collection::vec(any::<u8>(), 0..3000),
            prefix in prop_oneof![Just(&b""[..]), Just(&b"CONNECT "[..]), Just(&b"GET http://x/ HTTP/1.1\r\n"[..])],
            max_bytes in 16usize..2048,
        ) {
            let mut sent = prefix.to_vec();
            sent.extend(&bytes);
            let total = sent.len();
            let (head, buffer) = read(sent, max_bytes);
            prop_assert!(buffer.len() <= total);
            if let Ok(Head::Connect { head_len, target, .. }) = head {
                prop_assert!(head_len <= max_bytes && head_len <= buffer.len());
                prop_assert!(target.port != 0);
            }
        }

        #[test]
        fn a_valid_connect_head_is_read_back(
            host in NAME,
            port in 1u16..,
            headers in proptest::collection::vec(("[a-zA-Z][a-zA-Z0-9-]{0,12}", "[ -~]{0,40}"), 0..8),
            trailing in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut head = format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n");
            for (name, value) in &headers {
                head.push_str(&format!("{name}: {}\r\n", value.trim()));
            }
            head.push_str("\r\n");
            let mut sent = head.clone().into_bytes();
            sent.extend(&trailing);
            let (result, buffer) = read(sent, 32 * 1024);
            match result {
                Ok(Head::Connect { target, head_len, .. }) => {
                    prop_assert_eq!(target.host, host.to_ascii_lowercase());
                    prop_assert_eq!(target.port, port);
                    prop_assert_eq!(head_len, head.len());
                    prop_assert!(buffer.starts_with(head.as_bytes()));
                }
                Ok(Head::Plain) => prop_assert!(false, "read as a plain request"),
                Err(refusal) => prop_assert!(false, "refused: {}", refusal.message),
            }
        }

        #[test]
        fn a_head_over_the_limit_is_refused(
            host in NAME,
            padding in 64usize..4096,
        ) {
            let head = format!("CONNECT {host}:443 HTTP/1.1\r\nX-Pad: {}\r\n\r\n", "a".repeat(padding));
            let max_bytes = head.len() - 1;
            let (result, _) = read(head.into_bytes(), max_bytes);
            let refused = matches!(result, Err(Refusal { status: 431, .. }));
            prop_assert!(refused);
        }
    }
}

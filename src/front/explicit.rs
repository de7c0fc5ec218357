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

use super::route::Route;
use super::{intercept, tunnel, ConnectTarget, ConnectionMeta, FrontContext};
use crate::metrics;
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
        let front = front.clone();
        let tracked = front.connections.track();
        tokio::spawn(
            async move {
                metrics::CONNECTIONS_ACTIVE.inc();
                handle(front, socket, peer).await;
                metrics::CONNECTIONS_ACTIVE.dec();
                drop(permit);
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
            let identity = &front.shared.identity;
            let route = front
                .shared
                .router
                .route(&front.shared.snapshot.load().catalog, &target.host);
            // A blind tunnel's user is never used: without required authentication its
            // credentials are not worth an argon2 check.
            let unused = route == Route::Tunnel && !identity.config().require_proxy_auth;
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
            match route {
                Route::Tunnel => open_tunnel(&front, client, pending, target).await,
                Route::Intercept => {
                    if write_connect_established(&mut client).await.is_err() {
                        return;
                    }
                    let meta = Arc::new(ConnectionMeta::explicit(
                        peer,
                        Some(target.clone()),
                        tunnel_user,
                    ));
                    intercept::intercept(&front, client, pending, target, meta).await;
                }
            }
        }
    }
}

async fn open_tunnel(
    front: &FrontContext,
    mut client: TcpStream,
    pending: Vec<u8>,
    target: ConnectTarget,
) {
    let shared = &front.shared;
    let addr = match shared.upstream.resolve(&target.host, target.port).await {
        Ok(addr) => addr,
        Err(error @ UpstreamError::SelfLoop { .. }) => {
            warn!(host = %target.host, port = target.port, %error, "Refused a tunnel to the gateway itself.");
            let _ = write_status(
                &mut client,
                403,
                "Forbidden",
                "The proxy does not connect to itself.\n",
            )
            .await;
            return;
        }
        Err(error) => {
            info!(host = %target.host, %error, "Tunnel target does not resolve.");
            let _ = write_status(&mut client, 502, "Bad Gateway", &format!("{error}.\n")).await;
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
            let _ = write_status(
                &mut client,
                502,
                "Bad Gateway",
                &format!("Cannot connect to {}: {error}.\n", target.host),
            )
            .await;
            return;
        }
        Err(_) => {
            info!(host = %target.host, %addr, "Tunnel target did not answer in time.");
            let _ = write_status(
                &mut client,
                504,
                "Gateway Timeout",
                &format!("{} did not answer in time.\n", target.host),
            )
            .await;
            return;
        }
    };
    let _ = origin.set_nodelay(true);
    if write_connect_established(&mut client).await.is_err() {
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
    let response = format!(
        "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: {challenge}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{message}",
        message.len()
    );
    client.write_all(response.as_bytes()).await?;
    client.shutdown().await
}

async fn write_locked_out(client: &mut TcpStream, retry_after_secs: u64) -> std::io::Result<()> {
    let message = "Too many failed sign-ins: proxy authentication is locked for a while.\n";
    let response = format!(
        "HTTP/1.1 429 Too Many Requests\r\nRetry-After: {retry_after_secs}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{message}",
        message.len()
    );
    client.write_all(response.as_bytes()).await?;
    client.shutdown().await
}

async fn write_status(
    client: &mut TcpStream,
    status: u16,
    reason: &str,
    message: &str,
) -> std::io::Result<()> {
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{message}",
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

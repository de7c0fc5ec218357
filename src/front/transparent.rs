//! The transparent listener: connections the network redirected to the gateway (iptables or
//! nftables `REDIRECT`, or `TPROXY`) from clients that know nothing of a proxy.
//!
//! A redirected connection carries no CONNECT line and no absolute-form target; what it has is
//! its original destination (`SO_ORIGINAL_DST` after `REDIRECT`, the local address after `TPROXY`)
//! and, for TLS, the ClientHello's SNI. The SNI goes through the same `Router` as a CONNECT host:
//! AI services are intercepted, everything else is tunnelled byte for byte to the original
//! destination so the origin's own certificate reaches the client. Upstream connections always go
//! to the original destination the client chose (never to what the gateway's DNS says about the
//! SNI), and intercepted ones are still verified against the SNI name.
//!
//! Must never: connect to itself (a connection that was not redirected, or addressed to one of the
//! gateway's listeners, is refused), or let bytes it cannot classify reach an AI service
//! uninspected (anything that is not a TLS handshake is parsed as HTTP by pingora).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use socket2::SockRef;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, field, info, info_span, warn, Instrument, Span};

use super::hello::read_client_hello;
use super::intercept::HelloFacts;
use super::listen::{self, ListenError, ListenGroup, ListenOptions};
use super::route::{BypassKind, Route};
use super::{bypass, intercept, tunnel, ConnectTarget, ConnectionMeta, FrontContext, Listener};
use crate::metrics;
use crate::pipeline::Source;

const CONTENT_TYPE_HANDSHAKE: u8 = 0x16;
/// Accept backlog of the transparent listener: an appliance takes a whole LAN's connections.
const BACKLOG: i32 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum TransparentError {
    #[error("cannot read the original destination: {0}")]
    OriginalDst(io::Error),
}

/// Opens the listening sockets, one per serving thread (`listen::bind_group`). With `tproxy`,
/// `IP_TRANSPARENT` lets them accept connections addressed to any IP that a `TPROXY` rule steers
/// here; `REDIRECT` needs nothing special.
pub fn bind(addr: SocketAddr, tproxy: bool, sockets: usize) -> Result<ListenGroup, ListenError> {
    let options = ListenOptions {
        ip_transparent: tproxy,
        backlog: BACKLOG,
    };
    listen::bind_group(addr, sockets, options)
}

pub async fn serve(
    listener: TcpListener,
    front: Arc<FrontContext>,
    tproxy: bool,
    limit: Arc<Semaphore>,
) {
    let Ok(listen) = listener.local_addr() else {
        warn!("The transparent listener has no local address; not serving.");
        return;
    };
    let mut shutdown = front.shutdown.clone();
    loop {
        let Some((socket, peer)) = super::accept(&listener, &mut shutdown).await else {
            return;
        };
        metrics::CONNECTIONS_TOTAL
            .with_label_values(&[Listener::Transparent.as_str()])
            .inc();
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            metrics::CONNECTIONS_REJECTED
                .with_label_values(&["max_connections"])
                .inc();
            warn!(%peer, "Connection limit reached; refusing a redirected connection.");
            continue;
        };
        let per_client = front.shared.config().proxy.max_connections_per_client;
        let Some(slot) = front.shared.client_connections.admit(peer.ip(), per_client) else {
            metrics::CONNECTIONS_REJECTED
                .with_label_values(&["max_connections_per_client"])
                .inc();
            warn!(%peer, limit = per_client, "Per-client connection limit reached; refusing a redirected connection.");
            continue;
        };
        let front = front.clone();
        let tracked = front.connections.track();
        tokio::spawn(
            async move {
                metrics::CONNECTIONS_ACTIVE.inc();
                handle(&front, socket, peer, listen, tproxy).await;
                metrics::CONNECTIONS_ACTIVE.dec();
                drop((permit, slot));
                drop(tracked);
            }
            .instrument(info_span!("conn", %peer, listener = "transparent", dst = field::Empty)),
        );
    }
}

async fn handle(
    front: &FrontContext,
    client: TcpStream,
    peer: SocketAddr,
    listen: SocketAddr,
    tproxy: bool,
) {
    let _ = client.set_nodelay(true);
    let (dst, local) = match original_destination(&client, tproxy) {
        Ok(addresses) => addresses,
        Err(error) => {
            warn!(%error, "Cannot tell where a redirected connection was going; closing.");
            metrics::CONNECTIONS_REJECTED
                .with_label_values(&["original_dst"])
                .inc();
            return;
        }
    };
    Span::current().record("dst", field::display(dst));
    if is_loop(dst, local, listen) {
        // Either nothing redirected this connection (a client dialled the listener itself) or
        // the redirect points back at the gateway: proxying it would connect to ourselves.
        warn!(%dst, "Refused a connection addressed to the gateway itself (not redirected, or a redirect loop).");
        metrics::CONNECTIONS_REJECTED
            .with_label_values(&["loop"])
            .inc();
        return;
    }
    if let Err(error) = front.shared.upstream.pinned(dst) {
        let reason = error.refusal_reason().unwrap_or("self");
        warn!(%dst, reason, %error, "Refused a redirected connection by the destination policy.");
        metrics::UPSTREAM_REFUSED.with_label_values(&[reason]).inc();
        return;
    }

    let timeout = front.shared.config().proxy.header_read_timeout();
    let mut first = [0u8; 1];
    match tokio::time::timeout(timeout, client.peek(&mut first)).await {
        Ok(Ok(0)) => return,
        Ok(Ok(_)) => {}
        Ok(Err(error)) => {
            debug!(%error, "Redirected connection failed before its first byte.");
            return;
        }
        Err(_) => {
            metrics::CONNECTIONS_REJECTED
                .with_label_values(&["header_timeout"])
                .inc();
            debug!("Redirected client sent nothing in time; closing.");
            return;
        }
    }

    let meta = ConnectionMeta {
        client: peer,
        listener: Listener::Transparent,
        intercepted: None,
        ja4: None,
        tunnel_user: None,
        original_dst: Some(dst),
    };
    if first[0] != CONTENT_TYPE_HANDSHAKE {
        // Not TLS: plain HTTP, judged by its Host header and sent to the original destination.
        // Only peeked, so pingora reads the request from its first byte.
        super::hand_to_proxy(front, client, &[], Arc::new(meta)).await;
        return;
    }
    tls(front, client, dst, meta, timeout).await;
}

async fn tls(
    front: &FrontContext,
    mut client: TcpStream,
    dst: SocketAddr,
    meta: ConnectionMeta,
    timeout: std::time::Duration,
) {
    let mut pending = Vec::new();
    // Only what routing and the handshake need is kept: the rest of the parsed hello must not
    // live as long as the connection.
    let hello = match read_client_hello(&mut client, &mut pending, timeout).await {
        Ok(hello) => HelloFacts::from(hello),
        Err(error) => {
            metrics::CONNECTIONS_REJECTED
                .with_label_values(&[error.metric_label()])
                .inc();
            info!(%error, "No usable ClientHello on a redirected connection; closing.");
            return;
        }
    };
    // A name-less or non-DNS SNI has nothing to mint a leaf for or to verify the upstream
    // against: such a connection can only be passed through.
    let host = hello
        .sni
        .clone()
        .filter(|sni| crate::host::is_dns_name(sni) && !crate::host::is_ip_literal(sni));
    let Some(host) = host else {
        return pass_through(front, client, pending, dst, None).await;
    };
    let router = &front.shared.router;
    let route = router.route(&front.shared.snapshot.load().catalog, &host);
    let bypass = match route {
        Route::Tunnel => return pass_through(front, client, pending, dst, Some(&host)).await,
        Route::Bypass(kind) => Some((kind, None)),
        Route::Intercept => router
            .learned_bypass_for(meta.client.ip(), hello.ja4.as_deref(), &host)
            .map(|learned| (BypassKind::Learned, Some(learned))),
    };
    if let Some((kind, learned)) = bypass {
        let facts = bypass::ConnectFacts {
            client: meta.client,
            tunnel_user: None,
            host: &host,
            port: dst.port(),
            ja4: None,
            source: Source::TransparentIntercepted,
        };
        let verdict = bypass::decide(front, &facts).await;
        if verdict.denies() {
            // A redirected client cannot be told why: closing is the refusal.
            return verdict.record(front, kind, None);
        }
        verdict.record(front, kind, learned.as_deref().map(|l| l.evidence.as_str()));
        return pass_through(front, client, pending, dst, Some(&host)).await;
    }
    let target = ConnectTarget {
        host,
        port: dst.port(),
    };
    let meta = Arc::new(ConnectionMeta {
        intercepted: Some(target.clone()),
        ..meta
    });
    intercept::accept(front, client, pending, target, meta, hello).await;
}

/// Relays the connection, ClientHello included, to where the client was going.
async fn pass_through(
    front: &FrontContext,
    client: TcpStream,
    pending: Vec<u8>,
    dst: SocketAddr,
    sni: Option<&str>,
) {
    let sni = sni.unwrap_or("");
    let connect = front.shared.config().upstream.connect_timeout();
    let origin = match tokio::time::timeout(connect, TcpStream::connect(dst)).await {
        Ok(Ok(origin)) => origin,
        Ok(Err(error)) => {
            info!(sni, %error, "Original destination refused the connection.");
            return;
        }
        Err(_) => {
            info!(sni, "Original destination did not answer in time.");
            return;
        }
    };
    let _ = origin.set_nodelay(true);
    metrics::TUNNELS_TOTAL.inc();
    let idle = front.shared.config().proxy.tunnel_idle_timeout();
    match tunnel::relay(client, origin, &pending, idle).await {
        Ok(stats) => debug!(
            sni,
            up = stats.upstream_bytes,
            down = stats.downstream_bytes,
            idle_timed_out = stats.idle_timed_out,
            "Tunnel closed."
        ),
        Err(error) => debug!(sni, %error, "Tunnel ended with an error."),
    }
}

/// `(original destination, local address)` of an accepted connection.
fn original_destination(
    client: &TcpStream,
    tproxy: bool,
) -> Result<(SocketAddr, SocketAddr), TransparentError> {
    let local = client.local_addr().map_err(TransparentError::OriginalDst)?;
    if tproxy {
        // TPROXY does not rewrite the packet: the socket is bound to the original destination.
        return Ok((local, local));
    }
    let socket = SockRef::from(client);
    let ipv4 = match local.ip() {
        IpAddr::V4(_) => true,
        IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some(),
    };
    let queried = if ipv4 {
        socket.original_dst_v4()
    } else {
        socket.original_dst_v6()
    };
    match queried {
        Ok(addr) => addr.as_socket().map(|dst| (dst, local)).ok_or_else(|| {
            TransparentError::OriginalDst(io::Error::other("not an IP socket address"))
        }),
        // No NAT entry (ENOENT), or no conntrack at all (ENOPROTOOPT): nothing redirected this
        // connection, so it was addressed to the listener itself.
        Err(error)
            if matches!(
                error.raw_os_error(),
                Some(libc::ENOENT) | Some(libc::ENOPROTOOPT)
            ) =>
        {
            Ok((local, local))
        }
        Err(error) => Err(TransparentError::OriginalDst(error)),
    }
}

/// A connection whose original destination is the transparent listener itself.
fn is_loop(dst: SocketAddr, local: SocketAddr, listen: SocketAddr) -> bool {
    let dst_ip = canonical(dst.ip());
    // After REDIRECT an unredirected connection has its own local address as destination.
    // (Under TPROXY the two are always equal, so only the listener test below applies.)
    let not_redirected = dst_ip == canonical(local.ip()) && dst.port() == local.port();
    let listen_ip = canonical(listen.ip());
    let to_listener = dst.port() == listen.port()
        && (listen_ip.is_unspecified() || listen_ip == dst_ip || dst_ip.is_loopback());
    (not_redirected && local.port() == listen.port()) || to_listener
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn direct_connections_to_the_listener_are_loops() {
        let listen = addr("0.0.0.0:3129");
        // Not redirected: destination is the listener's own address.
        assert!(is_loop(
            addr("10.0.0.1:3129"),
            addr("10.0.0.1:3129"),
            listen
        ));
        assert!(is_loop(
            addr("[::ffff:10.0.0.1]:3129"),
            addr("10.0.0.1:3129"),
            listen
        ));
        // Redirected to an origin.
        assert!(!is_loop(
            addr("93.184.216.34:443"),
            addr("10.0.0.1:3129"),
            listen
        ));
        // TPROXY: local == destination == the origin's address.
        assert!(!is_loop(
            addr("93.184.216.34:443"),
            addr("93.184.216.34:443"),
            listen
        ));
        let specific = addr("10.0.0.1:3129");
        assert!(is_loop(
            addr("10.0.0.1:3129"),
            addr("10.0.0.1:3129"),
            specific
        ));
        assert!(is_loop(
            addr("127.0.0.1:3129"),
            addr("127.0.0.1:3129"),
            specific
        ));
    }

    #[tokio::test]
    async fn an_unredirected_connection_has_its_local_address_as_destination() {
        let listener = bind(addr("127.0.0.1:0"), false, 1)
            .unwrap()
            .sockets
            .remove(0);
        let listener = TcpListener::from_std(listener).unwrap();
        let listen = listener.local_addr().unwrap();
        let (_client, accepted) = tokio::join!(TcpStream::connect(listen), listener.accept());
        let (socket, _) = accepted.unwrap();
        let (dst, local) = original_destination(&socket, false).unwrap();
        assert_eq!(dst, listen);
        assert!(is_loop(dst, local, listen));
    }

    #[tokio::test]
    async fn tproxy_listener_binds_with_ip_transparent() {
        // The tests run as root (CI), which holds CAP_NET_ADMIN.
        for listener in bind(addr("127.0.0.1:0"), true, 2).unwrap().sockets {
            assert!(SockRef::from(&listener).ip_transparent_v4().unwrap());
        }
    }
}

//! Listeners and connection routing: the part of the gateway in front of pingora.
//!
//! The seam: pingora 0.9 answers CONNECT with 405 (or forwards it upstream) and its rustls
//! listener has no per-SNI certificate hook, so the front owns the client socket first. It reads
//! the first request head itself; a CONNECT is answered here and becomes either a blind tunnel
//! (`tunnel`) or an interception (`intercept`: ClientHello read, leaf minted, TLS accepted with
//! pingora's acceptor); anything else is replayed into pingora untouched. Both decrypted and plain
//! streams are handed to the same pingora `HttpProxy` through `ServerApp::process_new`, which then
//! owns keep-alive, h1/h2 and upstream pooling. Per-connection facts (client address, CONNECT
//! target, original destination) ride along as a `ProxyDigest` the proxy phases read back.
//!
//! The transparent listener (`transparent`) feeds the same two paths: the ClientHello's SNI takes
//! the place of the CONNECT target and the redirected connection's original destination is where
//! upstream connections go.

pub mod bypass;
pub mod client_tls;
pub mod drain;
pub mod explicit;
pub mod guard;
pub mod h2_guard;
pub mod hello;
pub mod intercept;
pub mod listen;
pub mod pac;
pub mod route;
pub mod socket;
pub mod transparent;
pub mod tunnel;

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::{HttpServerApp, ReusedHttpStream, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use tokio::net::TcpStream;

use crate::state::Shared;

/// Which listener accepted a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The explicit forward proxy: clients know they talk to a proxy.
    Explicit,
    /// Connections redirected to the gateway by the network (iptables REDIRECT/TPROXY).
    Transparent,
}

impl Listener {
    /// The metric label and the decisions' `source`.
    pub fn as_str(self) -> &'static str {
        match self {
            Listener::Explicit => "explicit",
            Listener::Transparent => "transparent",
        }
    }
}

/// What the front learned about a connection before pingora saw it.
#[derive(Debug, Clone)]
pub struct ConnectionMeta {
    pub client: SocketAddr,
    pub listener: Listener,
    /// Set when the stream is the decrypted inside of a CONNECT tunnel, or of a transparently
    /// intercepted TLS connection (host from the SNI, port from the original destination).
    pub intercepted: Option<ConnectTarget>,
    /// JA4 of the client's ClientHello, for intercepted connections.
    pub ja4: Option<String>,
    /// Who the CONNECT authenticated as (proxy credentials or trusted header).
    pub tunnel_user: Option<crate::identity::TunnelUser>,
    /// Where a redirected client was really connecting to. When set, upstream connections go
    /// there instead of to what DNS says about the host name: the client (and its resolver)
    /// already chose the address, and a TLS upstream is still verified against the host name.
    pub original_dst: Option<SocketAddr>,
}

impl ConnectionMeta {
    pub fn explicit(
        client: SocketAddr,
        intercepted: Option<ConnectTarget>,
        tunnel_user: Option<crate::identity::TunnelUser>,
    ) -> Self {
        Self {
            client,
            listener: Listener::Explicit,
            intercepted,
            ja4: None,
            tunnel_user,
            original_dst: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectTarget {
    /// Lowercased host name (IP literals are never intercepted).
    pub host: String,
    pub port: u16,
}

/// Everything a connection handler needs, shared by all connections of all listeners.
pub struct FrontContext {
    pub shared: Arc<Shared>,
    pub app: Box<dyn HttpApp>,
    /// Template for per-connection TLS server configs: ALPN, versions and the session cache are
    /// shared, only the certificate differs.
    pub tls_template: Arc<rustls::ServerConfig>,
    pub shutdown: ShutdownWatch,
    /// Client connections still open, awaited on shutdown.
    pub connections: drain::ConnectionTracker,
}

/// What the front hands client connections to: pingora's HTTP application, which `server`
/// assembles around the proxy. The front needs only these calls, so it never names the proxy;
/// the proxy reads what the front learned (`ConnectionMeta`, the request limits), never the
/// other way round.
#[async_trait]
pub trait HttpApp: Send + Sync {
    /// Serves a stream to its end: h2, or h1 with pingora's own keep-alive loop.
    async fn process_new(&self, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream>;
    /// Serves one HTTP/1 session; the stream comes back when it may carry another request.
    async fn process_new_http(
        &self,
        session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream>;
    /// Wakes the connections parked between requests, on shutdown.
    async fn cleanup(&self);
}

#[async_trait]
impl<App> HttpApp for Arc<App>
where
    App: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new(&self, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        ServerApp::process_new(self, stream, shutdown).await
    }

    async fn process_new_http(
        &self,
        session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        HttpServerApp::process_new_http(self, session, shutdown).await
    }

    async fn cleanup(&self) {
        ServerApp::cleanup(self.as_ref()).await;
    }
}

/// Hands a plain client connection to pingora, replaying the bytes read so far; pingora parses
/// and proxies the request and every keep-alive request after it.
pub(crate) async fn hand_to_proxy(
    front: &FrontContext,
    client: TcpStream,
    read: &[u8],
    meta: Arc<ConnectionMeta>,
) {
    let limits = guard::RequestLimits::from_config(&front.shared.config().proxy);
    let stream = socket::ClientSocket::new(client, read, meta).guarded(limits);
    front
        .app
        .process_new(Box::new(stream), &front.shutdown)
        .await;
}

/// The next connection on `listener`, or `None` once shutdown begins. Accept errors (EMFILE and
/// friends) back off briefly instead of spinning.
pub(crate) async fn accept(
    listener: &tokio::net::TcpListener,
    shutdown: &mut ShutdownWatch,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    crate::busy_poll::note_work();
                    return Some(accepted);
                }
                Err(error) => {
                    tracing::warn!(%error, "Accept failed.");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => return None,
        }
    }
}

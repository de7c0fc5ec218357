//! Listeners and connection routing: the part of the gateway in front of pingora.
//!
//! The seam: pingora 0.9 answers CONNECT with 405 (or forwards it upstream) and its rustls
//! listener has no per-SNI certificate hook, so the front owns the client socket first. It reads
//! the first request head itself; a CONNECT is answered here and becomes either a blind tunnel
//! (`tunnel`) or an interception (`intercept`: ClientHello read, leaf minted, TLS accepted with
//! pingora's acceptor); anything else is replayed into pingora untouched. Both decrypted and plain
//! streams are handed to the same pingora `HttpProxy` through `ServerApp::process_new`, which then
//! owns keep-alive, h1/h2 and upstream pooling. Per-connection facts (client address, CONNECT
//! target) ride along as a `ProxyDigest` the proxy phases read back.

pub mod explicit;
pub mod hello;
pub mod intercept;
pub mod pac;
pub mod route;
pub mod tunnel;

use std::net::SocketAddr;
use std::sync::Arc;

use pingora::proxy::HttpProxy;

use crate::proxy::AigateProxy;
use crate::server::Shared;

/// What the front learned about a connection before pingora saw it.
#[derive(Debug)]
pub struct ConnectionMeta {
    pub client: SocketAddr,
    /// Set when the stream is the decrypted inside of a CONNECT tunnel.
    pub intercepted: Option<ConnectTarget>,
    /// JA4 of the client's ClientHello, for intercepted connections.
    pub ja4: Option<String>,
    /// Who the CONNECT authenticated as (proxy credentials or trusted header).
    pub tunnel_user: Option<crate::identity::TunnelUser>,
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
    pub app: Arc<HttpProxy<AigateProxy>>,
    /// Template for per-connection TLS server configs: ALPN, versions and the session cache are
    /// shared, only the certificate differs.
    pub tls_template: Arc<rustls::ServerConfig>,
    pub shutdown: pingora::server::ShutdownWatch,
}

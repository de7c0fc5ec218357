//! The decrypted client side of an intercepted connection, as pingora sees it, and where it waits
//! for its first request.
//!
//! pingora sets up a whole session the moment it is handed a connection: the header buffer, the
//! digests and a future sized for a complete proxied request. For a connection that has not sent
//! anything yet that cost about 34 KiB of resident memory, and clients open such connections
//! ahead of need (browsers, connection pools). So the connection is parked until its socket turns
//! readable, holding only its TLS state: no pending read, so not even rustls' read buffer grows.
//! The TLS layer is tokio-rustls' own rather than pingora's wrapper, whose connection state is
//! private: parking must know that rustls holds no decrypted bytes already (a request that came
//! in the same segment as the client's Finished), or it would wait for a socket that stays quiet.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_rustls::server::TlsStream;

use super::guard::{GuardedIo, RequestGuard, RequestLimits};
use super::h2_guard::FrameGuard;
use super::socket::ClientSocket;

/// Why a parked connection ended without a request.
#[derive(Debug, thiserror::Error)]
pub enum Unparked {
    #[error("no request within the idle timeout")]
    Idle,
    #[error("the gateway is shutting down")]
    ShuttingDown,
    #[error("waiting for the first request: {0}")]
    Socket(#[from] io::Error),
}

/// The decrypted stream and the guard on what the client sends: request heads and bodies for
/// HTTP/1, frames and header blocks for h2.
#[derive(Debug)]
pub struct ClientTls(TlsStream<ClientSocket>, Option<Box<Guard>>);

#[derive(Debug)]
enum Guard {
    Http1(RequestGuard),
    H2(FrameGuard),
}

impl ClientTls {
    /// Terminates the client's TLS with `config` (the leaf minted for the CONNECT target).
    pub async fn accept(
        config: Arc<rustls::ServerConfig>,
        socket: ClientSocket,
    ) -> io::Result<ClientTls> {
        let stream = tokio_rustls::TlsAcceptor::from(config)
            .accept(socket)
            .await?;
        Ok(ClientTls(stream, None))
    }

    /// Returns once the client has sent something after the handshake (or closed): pingora
    /// takes it from there. Ends the wait on the idle timeout or a gateway shutdown.
    pub async fn wait_for_request(
        &mut self,
        idle_timeout: Duration,
        shutdown: &ShutdownWatch,
    ) -> Result<(), Unparked> {
        let mut shutdown = shutdown.clone();
        if *shutdown.borrow_and_update() {
            return Err(Unparked::ShuttingDown);
        }
        let (socket, connection) = self.0.get_mut();
        // Decrypted bytes already buffered, or a close seen: nothing more need arrive first.
        let buffered = match connection.process_new_packets() {
            Ok(state) => state.plaintext_bytes_to_read() > 0 || state.peer_has_closed(),
            Err(_) => true, // pingora's read reports the error
        };
        if buffered || socket.has_replay() {
            return Ok(());
        }
        tokio::select! {
            readable = tokio::time::timeout(idle_timeout, socket.readable()) => match readable {
                Ok(result) => Ok(result?),
                Err(_) => Err(Unparked::Idle),
            },
            _ = shutdown.changed() => Err(Unparked::ShuttingDown),
        }
    }

    /// Enforces `limits` on every request of the connection, in the protocol it negotiated.
    pub fn guard_requests(&mut self, limits: RequestLimits) {
        let h2 = self.0.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
        self.1 = Some(Box::new(if h2 {
            Guard::H2(FrameGuard::new(limits))
        } else {
            Guard::Http1(RequestGuard::new(limits))
        }));
    }

    fn socket(&self) -> &ClientSocket {
        self.0.get_ref().0
    }
}

impl AsyncRead for ClientTls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match this.1.as_deref_mut() {
            Some(Guard::Http1(guard)) => guard.poll_read(cx, buf, &mut this.0),
            Some(Guard::H2(guard)) => guard.poll_read(cx, buf, &mut this.0),
            None => Pin::new(&mut this.0).poll_read(cx, buf),
        }
    }
}

impl GuardedIo for TlsStream<ClientSocket> {
    fn poll_unguarded_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(self).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientTls {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[async_trait::async_trait]
impl Shutdown for ClientTls {
    /// Sends close_notify, then closes the socket's write side.
    async fn shutdown(&mut self) {
        if let Err(error) = AsyncWriteExt::shutdown(&mut self.0).await {
            tracing::debug!(%error, "Shutting down an intercepted client connection failed.");
        }
    }
}

impl UniqueID for ClientTls {
    fn id(&self) -> UniqueIDType {
        self.socket().id()
    }
}

/// No SSL digest (the trait's default): nothing downstream reads the client's TLS parameters,
/// and not building them saves a certificate parse per connection.
impl Ssl for ClientTls {
    /// What pingora chooses HTTP/1.1 or HTTP/2 by.
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        match self.0.get_ref().1.alpn_protocol()? {
            b"h2" => Some(ALPN::H2),
            b"http/1.1" => Some(ALPN::H1),
            _ => None,
        }
    }
}

impl GetTimingDigest for ClientTls {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.socket().get_timing_digest()
    }
}

impl GetProxyDigest for ClientTls {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.socket().get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.0.get_mut().0.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for ClientTls {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.socket().get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.0.get_mut().0.set_socket_digest(digest)
    }
}

/// pingora peeks only to detect a protocol on plain connections.
#[async_trait::async_trait]
impl Peek for ClientTls {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::front::ConnectionMeta;
    use rustls::pki_types::{PrivatePkcs8KeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    const HOST: &str = "parked.test";

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn configs() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
        let leaf = rcgen::generate_simple_self_signed(vec![HOST.to_owned()]).unwrap();
        let key = PrivatePkcs8KeyDer::from(leaf.signing_key.serialize_der());
        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.cert.der().clone()], key.into())
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(leaf.cert.der().clone()).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    }

    /// A handshaken pair: the client's TLS stream and the gateway's parked side, optionally with
    /// a request the client sent in the same flight as its Finished.
    async fn pair(
        request_with_finished: Option<&'static [u8]>,
    ) -> (tokio_rustls::client::TlsStream<TcpStream>, ClientTls) {
        let (server_config, client_config) = configs();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = ServerName::try_from(HOST).unwrap();
            // Plaintext written before the handshake goes out in the same write as Finished.
            tokio_rustls::TlsConnector::from(client_config)
                .connect_with(name, tcp, |connection| {
                    if let Some(request) = request_with_finished {
                        std::io::Write::write_all(&mut connection.writer(), request).unwrap();
                    }
                })
                .await
                .unwrap()
        };
        let server = async move {
            let (tcp, peer) = listener.accept().await.unwrap();
            let meta = Arc::new(ConnectionMeta::explicit(peer, None, None));
            ClientTls::accept(server_config, ClientSocket::new(tcp, &[], meta))
                .await
                .unwrap()
        };
        tokio::join!(client, server)
    }

    #[tokio::test]
    async fn a_request_sent_with_the_finished_message_is_not_waited_for() {
        let (_client, mut parked) = pair(Some(b"GET / HTTP/1.1\r\n\r\n")).await;
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        // The handshake read the request too: only rustls' buffer holds it, the socket is quiet.
        let buffered = parked.0.get_mut().1.process_new_packets().unwrap();
        assert_eq!(buffered.plaintext_bytes_to_read(), 18);
        parked
            .wait_for_request(Duration::from_secs(5), &shutdown)
            .await
            .unwrap();
        let mut head = [0u8; 18];
        parked.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"GET / HTTP/1.1\r\n\r\n");
    }

    #[tokio::test]
    async fn a_parked_connection_wakes_on_its_first_request() {
        let (mut client, mut parked) = pair(None).await;
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        let send = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            client.write_all(b"PING").await.unwrap();
            client.flush().await.unwrap();
        };
        let (waited, ()) = tokio::join!(
            parked.wait_for_request(Duration::from_secs(5), &shutdown),
            send
        );
        waited.unwrap();
        let mut body = [0u8; 4];
        parked.read_exact(&mut body).await.unwrap();
        assert_eq!(&body, b"PING");
        assert_eq!(parked.selected_alpn_proto(), None);
    }

    #[tokio::test]
    async fn idle_and_shutdown_end_the_wait() {
        let (_client, mut parked) = pair(None).await;
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let idle = parked
            .wait_for_request(Duration::from_millis(50), &shutdown)
            .await;
        assert!(matches!(idle, Err(Unparked::Idle)));

        let stopping = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            stop.send(true).unwrap();
        };
        let (stopped, ()) = tokio::join!(
            parked.wait_for_request(Duration::from_secs(60), &shutdown),
            stopping
        );
        assert!(matches!(stopped, Err(Unparked::ShuttingDown)));
    }
}

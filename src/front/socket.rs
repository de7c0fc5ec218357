//! The client connection as pingora sees it: the accepted socket, the bytes the front already
//! read (replayed first), and the connection's metadata as the proxy digest.
//!
//! pingora's own `l4::Stream` puts a 64 KiB read buffer in front of every socket and offers no
//! public way to size it for a stream it did not accept. An intercepted connection already
//! reads through rustls' buffer, and a plain one through pingora's header buffer, so the extra
//! layer bought nothing but about 40 KiB of resident memory per idle connection.
//!
//! Writes are held until the next flush: pingora writes a response head and its body
//! separately, and through TLS each would otherwise be a record, a syscall and a TCP segment of
//! its own. pingora flushes where its own buffered stream needs it (end of a body, informational
//! heads, h2 frames) and rustls flushes its handshake, so nothing waits on a flush that never
//! comes. The buffer is released once drained, so an idle connection holds none.

use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::SystemTime;

use bytes::{Buf, Bytes};
use pingora::http::ResponseHeader;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::guard::{GuardedIo, RequestGuard, RequestLimits};
use super::ConnectionMeta;
use crate::busy_poll;

#[derive(Debug)]
pub struct ClientSocket {
    stream: TcpStream,
    /// Read from the socket before pingora took over; served before the socket is read again.
    replay: Bytes,
    established: SystemTime,
    meta: Arc<ConnectionMeta>,
    /// Built from `meta` when pingora first asks: a connection still waiting for its first
    /// request holds no response head.
    proxy_digest: OnceLock<Option<Arc<ProxyDigest>>>,
    socket_digest: Option<Arc<SocketDigest>>,
    /// Written but not yet sent; `sent` bytes of it already are.
    unsent: Vec<u8>,
    sent: usize,
    /// Limits on each plain HTTP/1 request (not set under TLS, where `ClientTls` guards).
    guard: Option<Box<RequestGuard>>,
}

/// Beyond this many held bytes a write first sends what is held (a bulk response streams).
const HOLD_LIMIT: usize = 64 * 1024;

impl ClientSocket {
    pub fn new(stream: TcpStream, replay: &[u8], meta: Arc<ConnectionMeta>) -> ClientSocket {
        let socket_digest = Arc::new(SocketDigest::from_raw_fd(stream.as_raw_fd()));
        ClientSocket {
            stream,
            replay: Bytes::copy_from_slice(replay),
            established: SystemTime::now(),
            meta,
            proxy_digest: OnceLock::new(),
            socket_digest: Some(socket_digest),
            unsent: Vec::new(),
            sent: 0,
            guard: None,
        }
    }

    /// Enforces `limits` on every request pingora reads from this (plain) connection.
    pub fn guarded(mut self, limits: RequestLimits) -> ClientSocket {
        self.guard = Some(Box::new(RequestGuard::new(limits)));
        self
    }

    /// Bytes read before pingora took over that have not been served yet.
    pub fn has_replay(&self) -> bool {
        self.replay.has_remaining()
    }

    /// Waits until the socket has something to read (or has closed).
    pub async fn readable(&self) -> io::Result<()> {
        self.stream.readable().await
    }

    /// Sends the held bytes; ready once none are left.
    fn poll_send_held(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.unsent.len() {
            let n = ready!(Pin::new(&mut self.stream).poll_write(cx, &self.unsent[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.unsent = Vec::new();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Makes room for `len` more held bytes; a write at least as large as the limit bypasses
    /// the buffer once it is empty (returns false).
    fn poll_hold_room(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<bool>> {
        if self.unsent.len() + len > HOLD_LIMIT {
            ready!(self.poll_send_held(cx))?;
        }
        Poll::Ready(Ok(len < HOLD_LIMIT))
    }
}

impl AsyncRead for ClientSocket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match this.guard.take() {
            None => this.poll_unguarded_read(cx, buf),
            Some(mut guard) => {
                let read = guard.poll_read(cx, buf, this);
                this.guard = Some(guard);
                read
            }
        }
    }
}

impl GuardedIo for ClientSocket {
    fn poll_unguarded_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.replay.has_remaining() {
            let n = self.replay.len().min(buf.remaining());
            buf.put_slice(&self.replay[..n]);
            self.replay.advance(n);
            return Poll::Ready(Ok(()));
        }
        let read = Pin::new(&mut self.stream).poll_read(cx, buf);
        if read.is_ready() {
            busy_poll::note_work();
        }
        read
    }
}

impl AsyncWrite for ClientSocket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // A response on its way to the client: the upstream's answer was work on this thread
        // too, though its socket is pingora's.
        busy_poll::note_work();
        if ready!(self.poll_hold_room(cx, buf.len()))? {
            self.unsent.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        busy_poll::note_work();
        let len = bufs.iter().map(|b| b.len()).sum();
        if ready!(self.poll_hold_room(cx, len))? {
            self.unsent.reserve(len);
            for buf in bufs {
                self.unsent.extend_from_slice(buf);
            }
            return Poll::Ready(Ok(len));
        }
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send_held(cx))?;
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send_held(cx))?;
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[async_trait::async_trait]
impl Shutdown for ClientSocket {
    async fn shutdown(&mut self) {
        if let Err(error) = AsyncWriteExt::shutdown(&mut self.stream).await {
            tracing::debug!(%error, "Shutting down a client connection failed.");
        }
    }
}

impl UniqueID for ClientSocket {
    fn id(&self) -> UniqueIDType {
        self.stream.as_raw_fd() as UniqueIDType
    }
}

impl Ssl for ClientSocket {}

#[async_trait::async_trait]
impl Peek for ClientSocket {}

impl GetTimingDigest for ClientSocket {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        vec![Some(TimingDigest {
            established_ts: self.established,
            ..TimingDigest::default()
        })]
    }
}

impl GetProxyDigest for ClientSocket {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.proxy_digest
            .get_or_init(|| {
                // pingora reads the metadata back from the proxy digest; the head is unused.
                let head = ResponseHeader::build(200, None).ok()?;
                let meta = Box::new(self.meta.clone());
                Some(Arc::new(ProxyDigest::new(Box::new(head), Some(meta))))
            })
            .clone()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.proxy_digest = OnceLock::from(Some(Arc::new(digest)));
    }
}

impl GetSocketDigest for ClientSocket {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.socket_digest.clone()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.socket_digest = Some(Arc::new(digest));
    }
}

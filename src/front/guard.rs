//! Limits on how long and how much a client may make the gateway wait for, on every HTTP/1 request
//! of a connection pingora serves: plain keep-alive requests and, above all, requests inside an
//! intercepted TLS session, which the front never parses itself.
//!
//! pingora's read timeout restarts on every byte, so a client dripping one header byte a second,
//! or a body at a few bytes a second, holds a connection slot for as long as it likes; and its
//! header size limit is a fixed 1 MiB. The guard watches the bytes pingora reads, follows the
//! HTTP/1 framing (head, then a `Content-Length` or chunked body) and enforces, per request:
//! the whole head within `[proxy] header_read_timeout_secs` of its first byte, the head within
//! `[proxy] max_header_bytes` (431), and, after a grace period, a minimum body rate measured over
//! the time the gateway actually waits for the client (a slow upstream holding the body back is
//! not the client's fault). It only counts and scans: the head bytes it keeps are bounded by the
//! limit and released when the head ends.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::config::ProxyConfig;
use crate::metrics;

const MAX_HEADERS: usize = 100;

/// A stream a guard watches: its own read, and its write side for the refusal.
pub trait GuardedIo: AsyncWrite + Unpin {
    fn poll_unguarded_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>>;
}

/// The limits a guard enforces, from `[proxy]`.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    pub max_head_bytes: usize,
    pub head_timeout: Duration,
    /// 0: no minimum.
    pub min_body_rate: u64,
    pub body_grace: Duration,
}

impl RequestLimits {
    pub fn from_config(proxy: &ProxyConfig) -> Self {
        Self {
            max_head_bytes: proxy.max_header_bytes,
            head_timeout: proxy.header_read_timeout(),
            min_body_rate: proxy.min_body_rate_bytes_per_sec,
            body_grace: Duration::from_secs(proxy.body_rate_grace_secs),
        }
    }
}

/// Why a guard ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    HeadTooLarge,
    HeadTimeout,
    BodyTooSlow,
}

impl Violation {
    /// What the client is told before the connection closes. A slow body gets no answer: a
    /// response may already be on its way.
    fn response(self) -> &'static [u8] {
        match self {
            Self::HeadTooLarge => b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 24\r\nConnection: close\r\n\r\nRequest head too large.\n",
            Self::HeadTimeout => b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 24\r\nConnection: close\r\n\r\nRequest head timed out.\n",
            Self::BodyTooSlow => b"",
        }
    }

    /// Counts the refusal (`aigate_connections_rejected_total`) and logs it.
    pub(super) fn count(self) {
        metrics::CONNECTIONS_REJECTED
            .with_label_values(&[self.metric()])
            .inc();
        tracing::info!(
            reason = self.metric(),
            "Closing a connection whose request broke a limit."
        );
    }

    fn metric(self) -> &'static str {
        match self {
            Self::HeadTooLarge => "header_too_large",
            Self::HeadTimeout => "header_timeout",
            Self::BodyTooSlow => "body_too_slow",
        }
    }

    pub(super) fn error(self) -> io::Error {
        let message = match self {
            Self::HeadTooLarge => "request head larger than [proxy] max_header_bytes",
            Self::HeadTimeout => {
                "request head not complete within [proxy] header_read_timeout_secs"
            }
            Self::BodyTooSlow => "request body slower than [proxy] min_body_rate_bytes_per_sec",
        };
        io::Error::new(io::ErrorKind::TimedOut, message)
    }
}

/// Where in the HTTP/1 byte stream the client is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Head,
    Body {
        remaining: u64,
    },
    ChunkSize {
        size: u64,
        in_extension: bool,
    },
    ChunkData {
        remaining: u64,
    },
    ChunkEnd,
    Trailers {
        line: usize,
    },
    /// An upgrade, a CONNECT or framing the guard does not follow: pingora decides from here.
    Unguarded,
}

#[derive(Debug)]
pub struct RequestGuard {
    limits: RequestLimits,
    framing: Framing,
    head: Vec<u8>,
    head_deadline: Option<Instant>,
    /// Body bytes of the current request and the time spent waiting for them.
    body_bytes: u64,
    body_waited: Duration,
    waiting_since: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
    violation: Option<Violation>,
    /// Bytes of the violation's response already written.
    answered: usize,
}

impl RequestGuard {
    pub fn new(limits: RequestLimits) -> Self {
        Self {
            limits,
            framing: Framing::Head,
            head: Vec::new(),
            head_deadline: None,
            body_bytes: 0,
            body_waited: Duration::ZERO,
            waiting_since: None,
            timer: None,
            violation: None,
            answered: 0,
        }
    }

    /// Wraps one read of the guarded stream. A violation answers (for a head), then fails the
    /// read, so pingora closes the connection.
    pub fn poll_read<S: GuardedIo>(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
        io: &mut S,
    ) -> Poll<io::Result<()>> {
        if self.violation.is_some() {
            return self.poll_refuse(cx, io);
        }
        let before = buf.filled().len();
        let polled = io.poll_unguarded_read(cx, buf);
        let outcome = match &polled {
            Poll::Ready(Ok(())) => {
                let now = Instant::now();
                self.observe(&buf.filled()[before..], now)
            }
            Poll::Pending => self.poll_waiting(cx),
            Poll::Ready(Err(_)) => Ok(()),
        };
        match outcome {
            Ok(()) => polled,
            Err(violation) => {
                buf.set_filled(before);
                violation.count();
                self.violation = Some(violation);
                self.poll_refuse(cx, io)
            }
        }
    }

    fn poll_refuse<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        writer: &mut W,
    ) -> Poll<io::Result<()>> {
        let Some(violation) = self.violation else {
            return Poll::Ready(Ok(()));
        };
        let response = violation.response();
        while self.answered < response.len() {
            match Pin::new(&mut *writer).poll_write(cx, &response[self.answered..]) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                    return Poll::Ready(Err(violation.error()))
                }
                Poll::Ready(Ok(n)) => self.answered += n,
                Poll::Pending => return Poll::Pending,
            }
        }
        match Pin::new(&mut *writer).poll_flush(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => Poll::Ready(Err(violation.error())),
        }
    }

    /// The client sent nothing new: arms the timer of the limit that applies now.
    fn poll_waiting(&mut self, cx: &mut Context<'_>) -> Result<(), Violation> {
        let now = Instant::now();
        let (deadline, violation) = match self.framing {
            Framing::Head => match self.head_deadline {
                Some(deadline) => (deadline, Violation::HeadTimeout),
                // Idle between requests: pingora's keep-alive timeout applies.
                None => return Ok(()),
            },
            Framing::Unguarded => return Ok(()),
            _ if self.limits.min_body_rate == 0 => return Ok(()),
            _ => {
                let since = *self.waiting_since.get_or_insert(now);
                let allowed = self.limits.body_grace.max(Duration::from_secs_f64(
                    self.body_bytes as f64 / self.limits.min_body_rate as f64,
                ));
                (
                    since + allowed.saturating_sub(self.body_waited),
                    Violation::BodyTooSlow,
                )
            }
        };
        wait_for_deadline(&mut self.timer, deadline, violation, now, cx)
    }

    /// Follows the framing through bytes the client sent.
    fn observe(&mut self, mut bytes: &[u8], now: Instant) -> Result<(), Violation> {
        if let Some(since) = self.waiting_since.take() {
            self.body_waited += now.saturating_duration_since(since);
        }
        if self.head_deadline.is_some_and(|deadline| now >= deadline) {
            return Err(Violation::HeadTimeout);
        }
        while !bytes.is_empty() {
            let used = match self.framing {
                Framing::Head => self.head_bytes(bytes, now)?,
                Framing::Body { remaining } => {
                    let used = remaining.min(bytes.len() as u64);
                    self.body_bytes += used;
                    self.framing = match remaining - used {
                        0 => self.request_done(),
                        remaining => Framing::Body { remaining },
                    };
                    used as usize
                }
                Framing::ChunkData { remaining } => {
                    let used = remaining.min(bytes.len() as u64);
                    self.body_bytes += used;
                    self.framing = match remaining - used {
                        0 => Framing::ChunkEnd,
                        remaining => Framing::ChunkData { remaining },
                    };
                    used as usize
                }
                Framing::Unguarded => return Ok(()),
                _ => {
                    self.body_bytes += 1;
                    self.framing = match self.chunk_byte(bytes[0]) {
                        Framing::Head => self.request_done(),
                        next => next,
                    };
                    1
                }
            };
            bytes = &bytes[used..];
        }
        Ok(())
    }

    /// Takes head bytes up to the end of the head; returns how many were used.
    fn head_bytes(&mut self, bytes: &[u8], now: Instant) -> Result<usize, Violation> {
        let mut used = 0;
        for byte in bytes {
            used += 1;
            // Empty lines before a request line are tolerated (RFC 9112 section 2.2).
            if self.head.is_empty() && (*byte == b'\r' || *byte == b'\n') {
                continue;
            }
            if self.head.is_empty() {
                self.head_deadline = Some(now + self.limits.head_timeout);
            }
            if self.head.len() >= self.limits.max_head_bytes {
                return Err(Violation::HeadTooLarge);
            }
            self.head.push(*byte);
            if self.head.ends_with(b"\r\n\r\n") || self.head.ends_with(b"\n\n") {
                self.framing = self.body_framing();
                self.head = Vec::new();
                self.head_deadline = None;
                self.timer = None;
                if self.framing == Framing::Head {
                    self.framing = self.request_done();
                }
                break;
            }
        }
        Ok(used)
    }

    /// How the body of the complete head in `self.head` is framed.
    fn body_framing(&self) -> Framing {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        if !matches!(request.parse(&self.head), Ok(httparse::Status::Complete(_))) {
            return Framing::Unguarded;
        }
        if request.method == Some("CONNECT") {
            return Framing::Unguarded;
        }
        let named = |name: &'static str| {
            request
                .headers
                .iter()
                .filter(move |h| h.name.eq_ignore_ascii_case(name))
        };
        if named("upgrade").next().is_some() {
            return Framing::Unguarded;
        }
        if named("transfer-encoding").next().is_some() {
            let chunked = named("transfer-encoding").any(|h| {
                h.value
                    .split(|b| *b == b',')
                    .any(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"chunked"))
            });
            return if chunked {
                Framing::ChunkSize {
                    size: 0,
                    in_extension: false,
                }
            } else {
                Framing::Unguarded
            };
        }
        match named("content-length").next() {
            None => Framing::Head,
            Some(header) => match std::str::from_utf8(header.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
            {
                Some(0) => Framing::Head,
                Some(length) => Framing::Body { remaining: length },
                None => Framing::Unguarded,
            },
        }
    }

    /// The chunked-body state after one framing byte (sizes, extensions, CRLFs, trailers).
    fn chunk_byte(&self, byte: u8) -> Framing {
        match (self.framing, byte) {
            (Framing::ChunkSize { size, .. }, b'\n') => {
                if size == 0 {
                    Framing::Trailers { line: 0 }
                } else {
                    Framing::ChunkData { remaining: size }
                }
            }
            (framing @ Framing::ChunkSize { .. }, b'\r') => framing,
            (Framing::ChunkSize { size, .. }, _)
                if byte == b';' || byte == b' ' || byte == b'\t' =>
            {
                Framing::ChunkSize {
                    size,
                    in_extension: true,
                }
            }
            (
                framing @ Framing::ChunkSize {
                    in_extension: true, ..
                },
                _,
            ) => framing,
            (Framing::ChunkSize { size, .. }, _) => match (byte as char).to_digit(16) {
                Some(digit) => match size.checked_mul(16) {
                    Some(shifted) => Framing::ChunkSize {
                        size: shifted + u64::from(digit),
                        in_extension: false,
                    },
                    // pingora refuses the overflow itself (400).
                    None => Framing::Unguarded,
                },
                None => Framing::Unguarded,
            },
            (Framing::ChunkEnd, b'\r') => Framing::ChunkEnd,
            (Framing::ChunkEnd, b'\n') => Framing::ChunkSize {
                size: 0,
                in_extension: false,
            },
            (Framing::Trailers { line: 0 }, b'\n') => Framing::Head,
            (Framing::Trailers { .. }, b'\n') => Framing::Trailers { line: 0 },
            (Framing::Trailers { line }, b'\r') => Framing::Trailers { line },
            (Framing::Trailers { line }, _) => Framing::Trailers { line: line + 1 },
            _ => Framing::Unguarded,
        }
    }

    /// A request ended: the next byte starts a head, and the body accounting starts over.
    fn request_done(&mut self) -> Framing {
        self.body_bytes = 0;
        self.body_waited = Duration::ZERO;
        self.waiting_since = None;
        self.timer = None;
        Framing::Head
    }
}

/// Open connections per client address, across every serving thread of a gateway: one client
/// must not take all of `max_connections` from everyone else.
#[derive(Debug, Default)]
pub struct ClientConnections {
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted connection; gives its place back when dropped.
#[derive(Debug)]
pub struct ClientSlot {
    owner: Arc<ClientConnections>,
    client: IpAddr,
}

impl ClientConnections {
    /// A slot for one more connection from `client`, unless it already holds `cap` (0: no cap).
    pub fn admit(self: &Arc<Self>, client: IpAddr, cap: usize) -> Option<ClientSlot> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(client).or_insert(0);
        if cap > 0 && *count >= cap {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            owner: self.clone(),
            client,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut counts = self
            .owner
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.client) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.client);
            }
        }
    }
}

/// Arms (or re-arms) `timer` for `deadline`: `violation` once it has passed, else pending.
pub(super) fn wait_for_deadline(
    timer: &mut Option<Pin<Box<Sleep>>>,
    deadline: Instant,
    violation: Violation,
    now: Instant,
    cx: &mut Context<'_>,
) -> Result<(), Violation> {
    if now >= deadline {
        return Err(violation);
    }
    let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
    if timer.deadline() != deadline {
        timer.as_mut().reset(deadline);
    }
    match timer.as_mut().poll(cx) {
        Poll::Ready(()) => Err(violation),
        Poll::Pending => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> RequestGuard {
        RequestGuard::new(RequestLimits {
            max_head_bytes: 64,
            head_timeout: Duration::from_secs(1),
            min_body_rate: 10,
            body_grace: Duration::from_secs(1),
        })
    }

    #[test]
    fn follows_keep_alive_requests_with_length_and_chunked_bodies() {
        let mut guard = guard();
        let now = Instant::now();
        let stream = b"\r\nPOST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\n\r\n\
POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\nGET";
        for chunk in stream.chunks(5) {
            guard.observe(chunk, now).unwrap();
        }
        assert_eq!(guard.framing, Framing::Head);
        assert_eq!(guard.head, b"GET");
        assert!(guard.head_deadline.is_some());
    }

    #[test]
    fn a_long_head_is_refused_even_across_requests() {
        let mut guard = guard();
        let now = Instant::now();
        guard.observe(b"GET / HTTP/1.1\r\n\r\n", now).unwrap();
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(64));
        assert_eq!(
            guard.observe(long.as_bytes(), now),
            Err(Violation::HeadTooLarge)
        );
    }

    #[test]
    fn client_slots_are_capped_and_given_back() {
        let connections = Arc::new(ClientConnections::default());
        let client: IpAddr = "192.0.2.7".parse().unwrap();
        let first = connections.admit(client, 2).unwrap();
        let _second = connections.admit(client, 2).unwrap();
        assert!(connections.admit(client, 2).is_none());
        assert!(connections.admit("192.0.2.8".parse().unwrap(), 2).is_some());
        drop(first);
        assert!(connections.admit(client, 2).is_some());
    }

    #[test]
    fn upgrades_and_unknown_codings_are_left_to_pingora() {
        let mut guard = guard();
        let now = Instant::now();
        guard
            .observe(b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n", now)
            .unwrap();
        assert_eq!(guard.framing, Framing::Unguarded);
        let long = "x".repeat(1000);
        guard.observe(long.as_bytes(), now).unwrap();
    }
}

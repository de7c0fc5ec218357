//! The HTTP/2 counterpart of `guard`, for intercepted connections that negotiate h2: the same
//! `[proxy]` limits, applied where h2 lets them be.
//!
//! h2 only hands a stream to pingora once its whole header block has arrived, and a header block
//! (a HEADERS frame and the CONTINUATION frames that must follow it, nothing in between) stalls
//! the whole connection while it is incomplete; so does any frame whose bytes trickle in. The
//! guard follows the frame layer of what the client sends: the connection preface, every frame
//! other than DATA, and every header block must be complete within `header_read_timeout_secs` of
//! its first byte, and a DATA frame within what `min_body_rate_bytes_per_sec` allows for its
//! length (at least `body_rate_grace_secs`). Past that the connection is closed: no stream could
//! make progress on it anyway. The request body rate of a stream, which flow control paces, is
//! enforced where the proxy reads it ([`BodyPace`]); the header list size and concurrent streams
//! are h2 settings ([`h2_options`]).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pingora::protocols::http::v2::server::{default_h2_options, H2Options};
use tokio::io::ReadBuf;
use tokio::time::{Instant, Sleep};

use super::guard::{wait_for_deadline, GuardedIo, RequestLimits, Violation};
use crate::config::ProxyConfig;

const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;

/// The h2 settings toward intercepted clients: the decoded header list within `[proxy]
/// max_header_bytes` (h2 answers a larger one 431), and at most `h2_max_concurrent_streams`
/// streams open at once.
pub fn h2_options(proxy: &ProxyConfig) -> H2Options {
    let mut options = default_h2_options();
    options.max_header_list_size(u32::try_from(proxy.max_header_bytes).unwrap_or(u32::MAX));
    options.max_concurrent_streams(proxy.h2_max_concurrent_streams);
    options
}

/// Where in the client's frame stream the guard is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    Preface {
        seen: usize,
    },
    FrameHeader {
        bytes: [u8; FRAME_HEADER_LEN],
        seen: usize,
    },
    Payload {
        kind: u8,
        flags: u8,
        length: u32,
        remaining: u32,
    },
}

const NEXT_FRAME: Reading = Reading::FrameHeader {
    bytes: [0; FRAME_HEADER_LEN],
    seen: 0,
};

#[derive(Debug)]
pub struct FrameGuard {
    limits: RequestLimits,
    reading: Reading,
    /// A HEADERS frame without END_HEADERS was read: CONTINUATION frames must follow.
    header_block_open: bool,
    /// When the client began what is still incomplete (preface, frame or header block).
    started: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
    violation: Option<Violation>,
}

impl FrameGuard {
    pub fn new(limits: RequestLimits) -> Self {
        Self {
            limits,
            reading: Reading::Preface { seen: 0 },
            header_block_open: false,
            started: None,
            timer: None,
            violation: None,
        }
    }

    /// Wraps one read of the guarded stream; a violation fails it (and every read after it), so
    /// h2 ends the connection.
    pub fn poll_read<S: GuardedIo>(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
        io: &mut S,
    ) -> Poll<io::Result<()>> {
        if let Some(violation) = self.violation {
            return Poll::Ready(Err(violation.error()));
        }
        let before = buf.filled().len();
        let polled = io.poll_unguarded_read(cx, buf);
        let outcome = match &polled {
            Poll::Ready(Ok(())) => self.observe(&buf.filled()[before..], Instant::now()),
            Poll::Pending => self.poll_waiting(cx),
            Poll::Ready(Err(_)) => Ok(()),
        };
        match outcome {
            Ok(()) => polled,
            Err(violation) => {
                buf.set_filled(before);
                violation.count();
                self.violation = Some(violation);
                Poll::Ready(Err(violation.error()))
            }
        }
    }

    /// What must be complete by when, given what is incomplete now.
    fn deadline(&self) -> Option<(Instant, Violation)> {
        let started = self.started?;
        match self.reading {
            Reading::Payload {
                kind: DATA, length, ..
            } if !self.header_block_open => {
                if self.limits.min_body_rate == 0 {
                    return None;
                }
                let allowed = self.limits.body_grace.max(Duration::from_secs_f64(
                    f64::from(length) / self.limits.min_body_rate as f64,
                ));
                Some((started + allowed, Violation::BodyTooSlow))
            }
            _ => Some((started + self.limits.head_timeout, Violation::HeadTimeout)),
        }
    }

    /// The client sent nothing new: arms the timer of what it has left incomplete.
    fn poll_waiting(&mut self, cx: &mut Context<'_>) -> Result<(), Violation> {
        let Some((deadline, violation)) = self.deadline() else {
            // Between frames: pingora's idle timeout applies.
            self.timer = None;
            return Ok(());
        };
        wait_for_deadline(&mut self.timer, deadline, violation, Instant::now(), cx)
    }

    /// Follows the frame layer through bytes the client sent.
    fn observe(&mut self, mut bytes: &[u8], now: Instant) -> Result<(), Violation> {
        if let Some((deadline, violation)) = self.deadline() {
            if now >= deadline {
                return Err(violation);
            }
        }
        while !bytes.is_empty() {
            self.started.get_or_insert(now);
            let used = match &mut self.reading {
                Reading::Preface { seen } => {
                    let used = (PREFACE_LEN - *seen).min(bytes.len());
                    *seen += used;
                    if *seen == PREFACE_LEN {
                        self.reading = NEXT_FRAME;
                        self.started = None;
                    }
                    used
                }
                Reading::FrameHeader {
                    bytes: header,
                    seen,
                } => {
                    let used = (FRAME_HEADER_LEN - *seen).min(bytes.len());
                    header[*seen..*seen + used].copy_from_slice(&bytes[..used]);
                    *seen += used;
                    if *seen == FRAME_HEADER_LEN {
                        let header = *header;
                        let length = u32::from_be_bytes([0, header[0], header[1], header[2]]);
                        let (kind, flags) = (header[3], header[4]);
                        if length == 0 {
                            self.frame_done(kind, flags);
                        } else {
                            self.reading = Reading::Payload {
                                kind,
                                flags,
                                length,
                                remaining: length,
                            };
                        }
                    }
                    used
                }
                Reading::Payload {
                    kind,
                    flags,
                    remaining,
                    ..
                } => {
                    let used = (*remaining as usize).min(bytes.len());
                    // `used` is at most `remaining`, a u32.
                    *remaining -= used as u32;
                    if *remaining == 0 {
                        let (kind, flags) = (*kind, *flags);
                        self.frame_done(kind, flags);
                    }
                    used
                }
            };
            bytes = &bytes[used..];
        }
        Ok(())
    }

    /// A whole frame was read: the next one starts, and so does a new deadline unless a header
    /// block is still open.
    fn frame_done(&mut self, kind: u8, flags: u8) {
        match kind {
            HEADERS => self.header_block_open = flags & END_HEADERS == 0,
            CONTINUATION if flags & END_HEADERS != 0 => self.header_block_open = false,
            _ => {}
        }
        self.reading = NEXT_FRAME;
        if !self.header_block_open {
            self.started = None;
            self.timer = None;
        }
    }
}

/// The pace of one HTTP/2 request body while the proxy reads it. Flow control lets an h2 client
/// send only as fast as the gateway reads, so it is measured where the gateway reads: the time
/// spent waiting for the body, which must not exceed `body_rate_grace_secs` or what
/// `min_body_rate_bytes_per_sec` allows for the bytes received so far, whichever is longer
/// (the HTTP/1 guard's rule).
#[derive(Debug, Clone, Copy)]
pub struct BodyPace {
    limits: RequestLimits,
    waited: Duration,
    bytes: u64,
}

impl BodyPace {
    pub fn new(limits: RequestLimits) -> Self {
        Self {
            limits,
            waited: Duration::ZERO,
            bytes: 0,
        }
    }

    /// How much longer the next read may wait; None: no minimum rate.
    pub fn allowance(&self) -> Option<Duration> {
        if self.limits.min_body_rate == 0 {
            return None;
        }
        let allowed = self.limits.body_grace.max(Duration::from_secs_f64(
            self.bytes as f64 / self.limits.min_body_rate as f64,
        ));
        Some(allowed.saturating_sub(self.waited))
    }

    /// One read waited `waited` for `bytes`.
    pub fn record(&mut self, waited: Duration, bytes: usize) {
        self.waited += waited;
        self.bytes += bytes as u64;
    }

    /// Counts and logs a body refused for its pace, and says why for the answer.
    pub fn refuse(&self) -> &'static str {
        Violation::BodyTooSlow.count();
        "request body slower than [proxy] min_body_rate_bytes_per_sec"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> FrameGuard {
        FrameGuard::new(RequestLimits {
            max_head_bytes: 64,
            head_timeout: Duration::from_secs(1),
            min_body_rate: 10,
            body_grace: Duration::from_secs(1),
        })
    }

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let length = u32::try_from(payload.len()).unwrap().to_be_bytes();
        let mut frame = vec![length[1], length[2], length[3], kind, flags, 0, 0, 0, 1];
        frame.extend_from_slice(payload);
        frame
    }

    #[test]
    fn follows_frames_and_header_blocks_in_any_split() {
        let mut stream = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        stream.extend(frame(0x4, 0, &[]));
        stream.extend(frame(HEADERS, 0, b"abc"));
        stream.extend(frame(CONTINUATION, END_HEADERS, b"de"));
        stream.extend(frame(DATA, 1, b"body"));
        let now = Instant::now();
        for split in 1..stream.len() {
            let mut guard = guard();
            for chunk in stream.chunks(split) {
                guard.observe(chunk, now).unwrap();
            }
            assert_eq!(guard.reading, NEXT_FRAME);
            assert!(!guard.header_block_open);
            assert!(guard.deadline().is_none(), "split {split}");
        }
    }

    #[test]
    fn an_open_header_block_keeps_the_deadline_of_its_first_frame() {
        let mut guard = guard();
        let start = Instant::now();
        guard
            .observe(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", start)
            .unwrap();
        guard.observe(&frame(HEADERS, 0, b"abc"), start).unwrap();
        let later = start + Duration::from_millis(900);
        guard.observe(&frame(CONTINUATION, 0, b"d"), later).unwrap();
        assert_eq!(
            guard.deadline(),
            Some((start + Duration::from_secs(1), Violation::HeadTimeout))
        );
        assert_eq!(
            guard.observe(
                &frame(CONTINUATION, END_HEADERS, b"e"),
                start + Duration::from_secs(2)
            ),
            Err(Violation::HeadTimeout)
        );
    }

    #[test]
    fn a_data_frame_gets_the_body_rate_for_its_length() {
        let mut guard = guard();
        let start = Instant::now();
        guard
            .observe(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", start)
            .unwrap();
        let data = frame(DATA, 0, &[b'x'; 50]);
        guard.observe(&data[..20], start).unwrap();
        assert_eq!(
            guard.deadline(),
            Some((start + Duration::from_secs(5), Violation::BodyTooSlow))
        );
    }

    #[test]
    fn the_body_pace_allows_the_grace_then_the_rate() {
        let mut pace = BodyPace::new(RequestLimits {
            max_head_bytes: 64,
            head_timeout: Duration::from_secs(1),
            min_body_rate: 100,
            body_grace: Duration::from_secs(2),
        });
        assert_eq!(pace.allowance(), Some(Duration::from_secs(2)));
        pace.record(Duration::from_secs(1), 500);
        assert_eq!(pace.allowance(), Some(Duration::from_secs(4)));
        pace.record(Duration::from_secs(5), 0);
        assert_eq!(pace.allowance(), Some(Duration::ZERO));
    }
}

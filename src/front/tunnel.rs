//! Blind tunnel: bytes both ways between client and origin, nothing inspected.
//!
//! Each direction is its own pump so that a half-close (one side shuts down its write half) is
//! passed on as a shutdown while the other direction keeps flowing. A watchdog closes the tunnel
//! when neither direction moved a byte for the idle timeout.
//!
//! On Linux the bytes move with splice(2) through a pipe per direction, so they never enter
//! user space: the copy through a user buffer cost a third of loopback throughput. When a pipe
//! cannot be had (descriptor limit), that direction falls back to the buffer copy.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::metrics;

const PUMP_BUFFER_BYTES: usize = 32 * 1024;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TunnelStats {
    /// Client → origin.
    pub upstream_bytes: u64,
    /// Origin → client.
    pub downstream_bytes: u64,
    pub idle_timed_out: bool,
}

/// Relays until both directions have ended, an I/O error occurs, or the tunnel sits idle.
/// `client_prefix` holds bytes the client sent before the tunnel existed (pipelined after CONNECT).
pub async fn relay(
    client: TcpStream,
    origin: TcpStream,
    client_prefix: &[u8],
    idle_timeout: Duration,
) -> std::io::Result<TunnelStats> {
    let started = Instant::now();
    let last_activity = Arc::new(AtomicU64::new(0));
    let mut origin = origin;
    if !client_prefix.is_empty() {
        origin.write_all(client_prefix).await?;
    }
    let activity = Activity {
        last: &last_activity,
        started,
    };
    let up = pump(&client, &origin, activity, "upstream");
    let down = pump(&origin, &client, activity, "downstream");
    let both = async { tokio::try_join!(up, down) };
    tokio::pin!(both);

    loop {
        let idle_deadline = {
            let last = Duration::from_millis(last_activity.load(Ordering::Relaxed));
            started + last + idle_timeout
        };
        tokio::select! {
            result = &mut both => {
                let (up, down) = result?;
                return Ok(TunnelStats {
                    upstream_bytes: up + client_prefix.len() as u64,
                    downstream_bytes: down,
                    idle_timed_out: false,
                });
            }
            () = tokio::time::sleep_until(idle_deadline.into()) => {
                let last = Duration::from_millis(last_activity.load(Ordering::Relaxed));
                if started.elapsed() >= last + idle_timeout {
                    return Ok(TunnelStats { idle_timed_out: true, ..TunnelStats::default() });
                }
            }
        }
    }
}

/// When either direction last moved bytes, in milliseconds since the tunnel opened.
#[derive(Clone, Copy)]
struct Activity<'a> {
    last: &'a AtomicU64,
    started: Instant,
}

impl Activity<'_> {
    fn moved(&self, counter: &prometheus::IntCounter, bytes: usize) {
        counter.inc_by(bytes as u64);
        crate::busy_poll::note_work();
        self.last
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

/// One direction, until its reader ends; the end is passed on as a write shutdown.
async fn pump(
    from: &TcpStream,
    to: &TcpStream,
    activity: Activity<'_>,
    direction: &'static str,
) -> std::io::Result<u64> {
    let counter = metrics::TUNNEL_BYTES.with_label_values(&[direction]);
    #[cfg(target_os = "linux")]
    let total = match splice::Pipe::new() {
        Ok(pipe) => splice::pump(&pipe, from, to, &activity, &counter).await?,
        Err(error) => {
            tracing::debug!(%error, "No pipe for splice; copying through a buffer.");
            copy_pump(from, to, &activity, &counter).await?
        }
    };
    #[cfg(not(target_os = "linux"))]
    let total = copy_pump(from, to, &activity, &counter).await?;
    // Pass the half-close on; the other direction may still be sending.
    socket2::SockRef::from(to).shutdown(std::net::Shutdown::Write)?;
    Ok(total)
}

async fn copy_pump(
    from: &TcpStream,
    to: &TcpStream,
    activity: &Activity<'_>,
    counter: &prometheus::IntCounter,
) -> std::io::Result<u64> {
    let mut buffer = vec![0u8; PUMP_BUFFER_BYTES];
    let mut total = 0u64;
    loop {
        from.readable().await?;
        let read = match from.try_read(&mut buffer) {
            Ok(0) => return Ok(total),
            Ok(read) => read,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        let mut written = 0;
        while written < read {
            to.writable().await?;
            match to.try_write(&buffer[written..read]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        total += read as u64;
        activity.moved(counter, read);
    }
}

#[cfg(target_os = "linux")]
mod splice {
    use std::io;
    use std::os::fd::{AsFd, OwnedFd};

    use nix::fcntl::{fcntl, FcntlArg, OFlag, SpliceFFlags};
    use tokio::io::Interest;
    use tokio::net::TcpStream;

    use super::Activity;

    /// Bytes asked of one splice; the pipe is enlarged to hold them.
    const CHUNK_BYTES: usize = 256 * 1024;

    pub(super) struct Pipe {
        read: OwnedFd,
        write: OwnedFd,
    }

    impl Pipe {
        pub(super) fn new() -> io::Result<Pipe> {
            let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
            // Best effort: an unprivileged process may be capped below this
            // (/proc/sys/fs/pipe-max-size); the default 64 KiB pipe still works.
            let _ = fcntl(&write, FcntlArg::F_SETPIPE_SZ(CHUNK_BYTES as i32));
            Ok(Pipe { read, write })
        }
    }

    fn splice(from: impl AsFd, to: impl AsFd, len: usize) -> io::Result<usize> {
        let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
        Ok(nix::fcntl::splice(from, None, to, None, len, flags)?)
    }

    pub(super) async fn pump(
        pipe: &Pipe,
        from: &TcpStream,
        to: &TcpStream,
        activity: &Activity<'_>,
        counter: &prometheus::IntCounter,
    ) -> io::Result<u64> {
        let mut total = 0u64;
        loop {
            // The pipe is empty here: everything spliced in was spliced out below.
            let filled = from
                .async_io(Interest::READABLE, || {
                    splice(from, &pipe.write, CHUNK_BYTES)
                })
                .await?;
            if filled == 0 {
                return Ok(total);
            }
            let mut left = filled;
            while left > 0 {
                left -= to
                    .async_io(Interest::WRITABLE, || splice(&pipe.read, to, left))
                    .await?;
            }
            total += filled as u64;
            activity.moved(counter, filled);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (client.unwrap(), accepted.unwrap().0)
    }

    #[tokio::test]
    async fn relays_both_ways_and_passes_half_close() {
        let (mut client, client_side) = pair().await;
        let (origin_side, mut origin) = pair().await;
        let relay = tokio::spawn(relay(
            client_side,
            origin_side,
            b"early ",
            Duration::from_secs(5),
        ));

        client.write_all(b"hello").await.unwrap();
        client.shutdown().await.unwrap();
        let mut received = Vec::new();
        origin.read_to_end(&mut received).await.unwrap();
        assert_eq!(received, b"early hello");

        // The client's half-close must not stop the other direction.
        origin.write_all(b"world").await.unwrap();
        origin.shutdown().await.unwrap();
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, b"world");

        let stats = relay.await.unwrap().unwrap();
        assert_eq!(stats.upstream_bytes, 11);
        assert_eq!(stats.downstream_bytes, 5);
    }

    #[tokio::test]
    async fn idle_tunnel_is_closed() {
        let (_client, client_side) = pair().await;
        let (origin_side, _origin) = pair().await;
        let stats = relay(client_side, origin_side, b"", Duration::from_millis(100))
            .await
            .unwrap();
        assert!(stats.idle_timed_out);
    }
}

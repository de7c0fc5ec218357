//! Blind tunnel: bytes both ways between client and origin, nothing inspected.
//!
//! Each direction is its own pump so that a half-close (one side shuts down its write half) is
//! passed on as a shutdown while the other direction keeps flowing. A watchdog closes the tunnel
//! when neither direction moved a byte for the idle timeout.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
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
    let (mut client_read, mut client_write) = client.into_split();
    let (mut origin_read, mut origin_write) = origin.into_split();

    if !client_prefix.is_empty() {
        origin_write.write_all(client_prefix).await?;
    }
    let up = pump(
        &mut client_read,
        &mut origin_write,
        &last_activity,
        started,
        "upstream",
    );
    let down = pump(
        &mut origin_read,
        &mut client_write,
        &last_activity,
        started,
        "downstream",
    );
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

async fn pump<R, W>(
    reader: &mut R,
    writer: &mut W,
    last_activity: &AtomicU64,
    started: Instant,
    direction: &'static str,
) -> std::io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let counter = metrics::TUNNEL_BYTES.with_label_values(&[direction]);
    let mut buffer = vec![0u8; PUMP_BUFFER_BYTES];
    let mut total = 0u64;
    loop {
        let read = reader.read(&mut buffer).await?;
        if read == 0 {
            // Pass the half-close on; the other direction may still be sending.
            writer.shutdown().await?;
            return Ok(total);
        }
        writer.write_all(&buffer[..read]).await?;
        total += read as u64;
        counter.inc_by(read as u64);
        last_activity.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

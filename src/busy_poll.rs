//! Busy polling for a serving thread: after its last piece of work the thread keeps asking the
//! kernel for network events, without blocking, for a short window before it sleeps.
//!
//! Why: on a VM whose idle vCPU halts at once (KVM `haltpoll` with `guest_halt_poll_ns = 0`, as
//! on the Firecracker hosts of the load reports) every packet for a sleeping thread is an
//! interrupt through the hypervisor that the sender pays for (7–15 µs, docs/perf/RESULTS.md, 2026-12-04-b) and
//! a wake-up that comes 22–43 µs late. An intercepted request wakes the gateway twice (client
//! request, origin response) within tens of microseconds; a thread still polling when they
//! arrive is neither halted nor waited on, so the peers skip the interrupt and the gateway the
//! wake-up. The cost is the CPU burnt in the window after each burst of work, which a dedicated
//! appliance core would otherwise spend halted; `[proxy] busy_poll_us = 0` turns it off.
//!
//! How: a task on the thread yields in a loop. A yielding task makes tokio's current-thread
//! scheduler poll its I/O driver with a zero timeout (`epoll_wait(.., 0)`) instead of parking,
//! and run whatever that woke before the task comes round again. The window restarts whenever
//! the thread did work in between: client bytes read or sent, tunnel bytes moved, connections
//! accepted, each counted by [`note_work`]. Timing the rounds instead cannot tell work from
//! the VM's own hiccups (25–60 µs every few milliseconds on the report hosts). When the window
//! runs out the task waits for the thread's next unpark, which the runtime's unpark hook
//! signals.

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::sync::Notify;

thread_local! {
    /// Signalled each time this thread's runtime wakes from a blocking park.
    static UNPARKED: Arc<Notify> = Arc::new(Notify::new());
    /// Pieces of work this thread did, for the poller to see whether it stayed busy.
    static WORK: Cell<u64> = const { Cell::new(0) };
}

/// Counts a piece of the calling thread's network work. Cheap enough for every read and write:
/// a thread-local increment, whether or not busy polling is on.
pub fn note_work() {
    WORK.with(|work| work.set(work.get().wrapping_add(1)));
}

fn work_done() -> u64 {
    WORK.with(Cell::get)
}

/// Adds the unpark hook the poller waits on. Call on the builder of each serving thread's
/// current-thread runtime, and spawn [`run`] on that runtime.
pub fn install(builder: &mut tokio::runtime::Builder) -> &mut tokio::runtime::Builder {
    builder.on_thread_unpark(|| UNPARKED.with(|unparked| unparked.notify_one()))
}

/// Polls for `window` after each burst of the thread's work, for as long as the runtime runs.
/// Must run on the current-thread runtime it was installed on.
pub async fn run(window: Duration) {
    let unparked = UNPARKED.with(Arc::clone);
    loop {
        let mut quiet_since = Instant::now();
        let mut work_seen = work_done();
        loop {
            // The CPU first, to any other thread waiting for it (the audit writer shares the
            // gateway's cores): a poller that kept it for its whole time slice held up the
            // writer, and the requests behind the writer, by milliseconds.
            std::thread::yield_now();
            tokio::task::yield_now().await;
            let now = Instant::now();
            let work = work_done();
            if work != work_seen {
                work_seen = work;
                quiet_since = now;
            } else if now.duration_since(quiet_since) >= window {
                break;
            }
        }
        // A permit left by an unpark before polling began would restart it at once for nothing;
        // only an unpark after the thread really slept should.
        let _ = unparked.notified().now_or_never();
        unparked.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        let mut builder = tokio::runtime::Builder::new_current_thread();
        install(&mut builder).enable_all().build().unwrap()
    }

    /// CPU time of the calling thread so far.
    fn thread_cpu() -> Duration {
        let schedstat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
        let nanos = schedstat
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        Duration::from_nanos(nanos)
    }

    /// CPU the thread spends while its runtime has nothing to do but a timer.
    async fn idle_cpu(stretch: Duration) -> Duration {
        let before = thread_cpu();
        tokio::time::sleep(stretch).await;
        thread_cpu() - before
    }

    #[test]
    fn polling_stops_a_window_after_the_last_work_and_resumes_after_the_next_unpark() {
        runtime().block_on(async {
            tokio::spawn(run(Duration::from_millis(10)));
            // Each stretch starts with a window of polling, then the thread sleeps until the
            // timer; the second shows the timer's unpark started (and ended) a window again.
            // Bounds: an empty round costs about a microsecond, so a thread that never polled
            // spends far under 1 ms here, and one that never stopped nearly the whole 500 ms
            // (still over 150 ms if other tests take two thirds of the CPUs).
            for stretch in 0..2 {
                let spent = idle_cpu(Duration::from_millis(500)).await;
                assert!(
                    spent >= Duration::from_millis(1) && spent < Duration::from_millis(150),
                    "stretch {stretch}: {spent:?} of CPU in 500 ms, for a 10 ms window"
                );
            }
        });
    }

    #[test]
    fn noted_work_keeps_the_thread_polling_past_the_window() {
        runtime().block_on(async {
            tokio::spawn(run(Duration::from_millis(10)));
            // Work every 2 ms for 100 ms: never a 10 ms quiet stretch, so the thread polls
            // throughout (a thread that slept between would spend well under 1 ms).
            let before = thread_cpu();
            for _ in 0..50 {
                note_work();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let busy = thread_cpu() - before;
            assert!(
                busy >= Duration::from_millis(30),
                "{busy:?} of CPU over 100 ms of work every 2 ms"
            );
            // Then quiet: the window ends and the thread sleeps.
            let spent = idle_cpu(Duration::from_millis(500)).await;
            assert!(
                spent < Duration::from_millis(150),
                "{spent:?} of CPU in 500 ms"
            );
        });
    }

    #[test]
    fn socket_events_are_served_while_polling() {
        runtime().block_on(async {
            tokio::spawn(run(Duration::from_secs(10)));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            // A peer on another thread: its bytes reach this runtime only through the I/O
            // driver, which nothing but the poller's rounds drives while the poller spins.
            let peer = std::thread::spawn(move || {
                let mut stream = std::net::TcpStream::connect(addr).unwrap();
                let mut echo = [0u8; 1];
                for round in 0..200u8 {
                    stream.write_all(&[round]).unwrap();
                    stream.read_exact(&mut echo).unwrap();
                    assert_eq!(echo[0], round);
                }
            });
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut byte = [0u8; 1];
            let echoed = tokio::time::timeout(Duration::from_secs(10), async {
                for _ in 0..200 {
                    socket.read_exact(&mut byte).await.unwrap();
                    socket.write_all(&byte).await.unwrap();
                }
            })
            .await;
            assert!(echoed.is_ok(), "socket events stalled while polling");
            peer.join().unwrap();
        });
    }
}

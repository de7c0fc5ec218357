//! The threads that serve client connections: each a current-thread runtime with its own
//! sockets on every client-facing address and its own pingora app, optionally busy polling
//! between events (`busy_poll`). `server` starts them and stops them after the drain.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use crate::busy_poll;
use crate::front::listen::ListenGroup;
use crate::front::{explicit, transparent, FrontContext};

/// A client-facing address: a socket per serving thread (`listen::bind_group`) and the cap on
/// its open connections, which every thread shares: the cap is the listener's, not a thread's.
pub struct Listener {
    sockets: Vec<std::net::TcpListener>,
    limit: Arc<Semaphore>,
}

impl Listener {
    pub fn new(group: ListenGroup, max_connections: usize) -> Listener {
        Listener {
            sockets: group.sockets,
            limit: Arc::new(Semaphore::new(max_connections)),
        }
    }

    fn per_thread(self) -> impl Iterator<Item = ThreadSocket> {
        let limit = self.limit;
        self.sockets.into_iter().map(move |socket| ThreadSocket {
            socket,
            limit: limit.clone(),
        })
    }
}

/// One serving thread's socket of a listener, with the listener's cap.
struct ThreadSocket {
    socket: std::net::TcpListener,
    limit: Arc<Semaphore>,
}

impl ThreadSocket {
    /// Registers the socket with the runtime of the thread that calls it.
    fn register(self) -> std::io::Result<(TcpListener, Arc<Semaphore>)> {
        Ok((TcpListener::from_std(self.socket)?, self.limit))
    }
}

/// The client-facing listeners.
pub struct Listeners {
    pub explicit: Listener,
    pub transparent: Option<Listener>,
    /// `[transparent] tproxy`: how the transparent listener learns a connection's destination.
    pub tproxy: bool,
}

/// What one serving thread accepts on.
struct ThreadListeners {
    explicit: ThreadSocket,
    transparent: Option<ThreadSocket>,
    tproxy: bool,
}

impl Listeners {
    /// One entry per socket of the explicit listener; the transparent one has as many.
    fn per_thread(self) -> Vec<ThreadListeners> {
        let tproxy = self.tproxy;
        let mut transparent = self.transparent.map(Listener::per_thread);
        self.explicit
            .per_thread()
            .map(|explicit| ThreadListeners {
                explicit,
                transparent: transparent.as_mut().and_then(Iterator::next),
                tproxy,
            })
            .collect()
    }
}

/// Client connections are served by threads of their own, each a current-thread runtime with its
/// own pingora app (and so its own upstream connection pool) and its own sockets on the
/// listening addresses: a connection, its requests and their upstream connections stay on the
/// thread that accepted it, so serving a request wakes no other thread. On a VM where a wake-up across
/// vCPUs cost the waker 14 µs, one work-stealing runtime spent 48–51% more CPU per request than
/// these threads one at a time and served 12–23% fewer requests at 16–128 connections
/// (docs/perf/RESULTS.md, 2026-12-04).
pub struct ServingThreads {
    pub fronts: Vec<Arc<FrontContext>>,
    pub threads: ThreadGroup,
}

impl ServingThreads {
    /// Starts a thread per front, each accepting on its own sockets of `listeners` (which has
    /// a socket per front on each address), each busy polling for `busy_poll` when set.
    pub fn start(
        listeners: Listeners,
        fronts: Vec<Arc<FrontContext>>,
        busy_poll: Option<Duration>,
    ) -> std::io::Result<ServingThreads> {
        let work = fronts.iter().cloned().zip(listeners.per_thread()).collect();
        let threads = ThreadGroup::spawn(work, busy_poll, |(front, listeners)| {
            serve_listeners(listeners, front)
        })?;
        Ok(ServingThreads { fronts, threads })
    }
}

/// Threads that each run one piece of work on a current-thread runtime, then keep that runtime
/// (and the tasks the work spawned, such as connections still draining) alive until released.
pub struct ThreadGroup {
    /// A message per thread whose work ended; closed once every thread has exited.
    work_ended: mpsc::Receiver<()>,
    ended: usize,
    /// Set once the threads may end (for serving threads: every connection has drained); until
    /// then each keeps its runtime alive after its work ended.
    release: watch::Sender<bool>,
    /// One per thread, resolved when the thread has exited.
    finished: Vec<oneshot::Receiver<()>>,
}

/// Sent when a thread's work ends, returned or panicked: a panic unwinds through the runtime's
/// `block_on`, which drops the work's future and this with it. Without it a thread that died
/// would keep its sender alive in no one's hands and the gateway would never notice.
struct WorkEnded(mpsc::Sender<()>);

impl Drop for WorkEnded {
    fn drop(&mut self) {
        // Room for every thread's message: the channel holds one per thread.
        let _ = self.0.try_send(());
    }
}

impl ThreadGroup {
    /// `busy_poll`: each thread polls that long after its last work before it sleeps.
    fn spawn<W, F, Fut>(
        work: Vec<W>,
        busy_poll: Option<Duration>,
        run: F,
    ) -> std::io::Result<ThreadGroup>
    where
        W: Send + 'static,
        F: Fn(W) -> Fut + Clone + Send + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        let count = work.len();
        let (release, released) = watch::channel(false);
        let (ended, work_ended) = mpsc::channel(count.max(1));
        let mut finished = Vec::with_capacity(count);
        for (index, work) in work.into_iter().enumerate() {
            let run = run.clone();
            let ended = WorkEnded(ended.clone());
            let mut released = released.clone();
            let (done, done_rx) = oneshot::channel();
            let mut builder = tokio::runtime::Builder::new_current_thread();
            if busy_poll.is_some() {
                busy_poll::install(&mut builder);
            }
            let runtime = builder.enable_all().build()?;
            std::thread::Builder::new()
                .name(format!("aigate-serve-{index}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        if let Some(window) = busy_poll {
                            tokio::spawn(busy_poll::run(window));
                        }
                        run(work).await;
                        drop(ended);
                        let _ = released.wait_for(|released| *released).await;
                    });
                    let _ = done.send(());
                })?;
            finished.push(done_rx);
        }
        Ok(ThreadGroup {
            work_ended,
            ended: 0,
            release,
            finished,
        })
    }

    /// Resolves when a thread's work has ended, or every thread has exited. Cancel-safe: an end
    /// seen is counted, so `all_ended` does not wait for it again.
    pub async fn any_ended(&mut self) {
        if self.work_ended.recv().await.is_some() {
            self.ended += 1;
        }
    }

    /// Resolves when every thread's work has ended (or its thread exited).
    pub async fn all_ended(&mut self) {
        while self.ended < self.finished.len() && self.work_ended.recv().await.is_some() {
            self.ended += 1;
        }
    }

    /// Lets the threads end and waits for them.
    pub async fn stop(self) {
        let _ = self.release.send(true);
        for done in self.finished {
            let _ = done.await;
        }
    }
}

/// One serving thread's accept loops, until shutdown.
async fn serve_listeners(listeners: ThreadListeners, front: Arc<FrontContext>) {
    let explicit_loop = async {
        match listeners.explicit.register() {
            Ok((listener, limit)) => explicit::serve(listener, front.clone(), limit).await,
            Err(error) => {
                tracing::error!(%error, "A serving thread cannot accept on [proxy] listen.")
            }
        }
    };
    let transparent_loop = async {
        let Some(listener) = listeners.transparent else {
            return;
        };
        match listener.register() {
            Ok((listener, limit)) => {
                transparent::serve(listener, front.clone(), listeners.tproxy, limit).await
            }
            Err(error) => {
                tracing::error!(%error, "A serving thread cannot accept on [transparent] listen.")
            }
        }
    };
    tokio::join!(explicit_loop, transparent_loop);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::oneshot;

    use super::ThreadGroup;

    /// Work that panics when it has no end signal, and otherwise runs until signalled.
    async fn work(end: Option<oneshot::Receiver<()>>) {
        match end {
            Some(end) => {
                let _ = end.await;
            }
            None => std::panic::resume_unwind(Box::new("injected fault")),
        }
    }

    #[tokio::test]
    async fn a_thread_whose_work_panics_is_noticed_while_the_others_keep_running() {
        let (end_other, other) = oneshot::channel();
        let mut threads = ThreadGroup::spawn(vec![Some(other), None], None, work).unwrap();

        tokio::time::timeout(Duration::from_secs(10), threads.any_ended())
            .await
            .expect("the thread that panicked was not noticed");
        assert!(
            tokio::time::timeout(Duration::from_millis(200), threads.all_ended())
                .await
                .is_err(),
            "the thread still working was counted as ended"
        );

        end_other.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), threads.all_ended())
            .await
            .expect("the thread whose work returned was not noticed");
        tokio::time::timeout(Duration::from_secs(10), threads.stop())
            .await
            .expect("released threads did not exit");
    }
}

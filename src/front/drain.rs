//! Counts open client connections so a stopping gateway can let them finish.
//!
//! On SIGTERM the listeners close first (new connections are refused by the kernel), then the
//! gateway waits here until every connection it accepted has ended or the drain timeout passed.
//! Connection tasks are detached `tokio::spawn`s; without this count, returning from `main` would
//! cut every request and tunnel in flight and lose their decision records.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

#[derive(Debug, Clone, Default)]
pub struct ConnectionTracker {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    open: AtomicUsize,
    closed: Notify,
}

/// Held by a connection task for as long as the connection is open.
#[derive(Debug)]
pub struct Tracked(Arc<Inner>);

impl Drop for Tracked {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.closed.notify_waiters();
        }
    }
}

impl ConnectionTracker {
    pub fn track(&self) -> Tracked {
        self.inner.open.fetch_add(1, Ordering::AcqRel);
        Tracked(self.inner.clone())
    }

    pub fn open(&self) -> usize {
        self.inner.open.load(Ordering::Acquire)
    }

    /// Waits until no connection is open or `timeout` passed; returns the number still open.
    pub async fn wait_idle(&self, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before the count is read, so a close in between is not missed.
            let closed = self.inner.closed.notified();
            tokio::pin!(closed);
            closed.as_mut().enable();
            let open = self.open();
            if open == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, closed).await.is_err() {
                return self.open();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_for_the_last_connection() {
        let tracker = ConnectionTracker::default();
        assert_eq!(tracker.wait_idle(Duration::from_millis(10)).await, 0);
        let first = tracker.track();
        let second = tracker.track();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(first);
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(second);
        });
        let started = std::time::Instant::now();
        assert_eq!(tracker.wait_idle(Duration::from_secs(5)).await, 0);
        assert!(started.elapsed() >= Duration::from_millis(90));
    }

    #[tokio::test]
    async fn gives_up_after_the_timeout() {
        let tracker = ConnectionTracker::default();
        let _held = tracker.track();
        assert_eq!(tracker.wait_idle(Duration::from_millis(50)).await, 1);
    }
}

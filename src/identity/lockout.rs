//! Brute-force limits for proxy passwords: repeated wrong passwords from one client address, or
//! for one account, lock further attempts out for a while, and are refused before argon2 runs
//! (each check costs ~20 ms of CPU and argon2's memory, so checking a flood is the attack).
//!
//! Only fresh verifications that failed count: a client retrying one stale credential is served
//! from the result cache and cannot lock anyone out. A credential already verified keeps working
//! during an account's lockout, so users signed in are not locked out by an attacker.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Client(IpAddr),
    Account(String),
}

/// Failures since `opened`; the window, then the lockout, lasts `auth_lockout_secs`.
#[derive(Debug)]
struct Window {
    opened: Instant,
    failures: AtomicU32,
}

pub(super) struct Lockout {
    windows: moka::sync::Cache<Key, Arc<Window>>,
    window: Duration,
}

impl std::fmt::Debug for Lockout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lockout")
            .field("windows", &self.windows.entry_count())
            .finish_non_exhaustive()
    }
}

impl Lockout {
    pub(super) fn new(window_secs: u64, capacity: u64) -> Self {
        let window = Duration::from_secs(window_secs);
        Lockout {
            windows: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(window)
                .build(),
            window,
        }
    }

    fn keys(client: Option<IpAddr>, account: &str) -> impl Iterator<Item = Key> {
        client
            .map(Key::Client)
            .into_iter()
            .chain(std::iter::once(Key::Account(account.to_ascii_lowercase())))
    }

    /// Seconds until `client` or `account` may try again, when either is locked out.
    pub(super) fn locked(&self, client: Option<IpAddr>, account: &str, max: u32) -> Option<u64> {
        Self::keys(client, account)
            .filter_map(|key| self.windows.get(&key))
            .filter(|w| w.failures.load(Ordering::Relaxed) >= max)
            .map(|w| {
                self.window
                    .saturating_sub(w.opened.elapsed())
                    .as_secs()
                    .max(1)
            })
            .max()
    }

    /// Counts a wrong password from `client` for `account`.
    pub(super) fn failed(&self, client: Option<IpAddr>, account: &str) {
        for key in Self::keys(client, account) {
            let window = self.windows.get_with(key, || {
                Arc::new(Window {
                    opened: Instant::now(),
                    failures: AtomicU32::new(0),
                })
            });
            window.failures.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_lock_the_client_and_the_account_only() {
        let lockout = Lockout::new(60, 100);
        let attacker: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..2 {
            assert_eq!(lockout.locked(Some(attacker), "ana@corp", 3), None);
            lockout.failed(Some(attacker), "ana@corp");
        }
        lockout.failed(Some(attacker), "bob@corp");
        let retry = lockout.locked(Some(attacker), "carol@corp", 3).unwrap();
        assert!((1..=60).contains(&retry));
        assert_eq!(lockout.locked(Some(other), "bob@corp", 3), None);
        lockout.failed(Some(other), "ANA@corp");
        assert!(lockout.locked(Some(other), "ana@corp", 3).is_some());
    }
}

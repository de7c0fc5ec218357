//! Proxy credentials: `Proxy-Authorization: Basic` parsing and argon2id verification.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{LazyLock, OnceLock};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
use uuid::Uuid;

/// `(username, password)` from a `Basic` credential; `None` when malformed.
pub(super) fn parse_basic(value: &[u8]) -> Option<(String, String)> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (username, password) = decoded.split_once(':')?;
    (!username.is_empty()).then(|| (username.to_owned(), password.to_owned()))
}

/// The argon2id PHC string for `password`, with a fresh random salt.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// Argon2 checks allowed at once, process-wide: one per CPU. Each holds argon2's memory and a
/// blocking thread, so a flood of wrong passwords queues here instead of growing the process
/// and starving the proxy.
static VERIFYING: LazyLock<tokio::sync::Semaphore> = LazyLock::new(|| {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    tokio::sync::Semaphore::new(cpus)
});

/// Verifies `password` against the stored `(user, hash)`, off the async workers, at most one
/// check per CPU at a time. An unknown user is verified against a dummy hash so a wrong name
/// costs as long as a wrong password (no user enumeration by timing).
pub(super) async fn verify(stored: Option<(Uuid, String)>, password: String) -> Option<Uuid> {
    let _permit = VERIFYING.acquire().await.ok()?;
    crate::metrics::PROXY_AUTH_VERIFICATIONS.inc();
    let running = InFlight::start();
    let verified = tokio::task::spawn_blocking(move || {
        let (user, hash) = match stored {
            Some((user, hash)) => (Some(user), hash),
            None => (None, dummy_hash().to_owned()),
        };
        let parsed = PasswordHash::new(&hash).ok()?;
        let matches = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        user.filter(|_| matches)
    })
    .await
    .ok()
    .flatten();
    drop(running);
    verified
}

/// Keeps the in-flight gauge (and its peak) right even when the caller is cancelled.
struct InFlight;

impl InFlight {
    fn start() -> InFlight {
        static PEAK: AtomicI64 = AtomicI64::new(0);
        let gauge = &crate::metrics::PROXY_AUTH_VERIFYING;
        gauge.inc();
        PEAK.fetch_max(gauge.get(), Ordering::Relaxed);
        crate::metrics::PROXY_AUTH_VERIFYING_PEAK.set(PEAK.load(Ordering::Relaxed));
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        crate::metrics::PROXY_AUTH_VERIFYING.dec();
    }
}

fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        hash_password(&Uuid::new_v4().to_string()).unwrap_or_else(|_| {
            // Hashing a fresh random password cannot fail short of a broken RNG; an unparsable
            // hash then simply fails verification.
            String::new()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_parse() {
        let encoded = base64::engine::general_purpose::STANDARD.encode("ana@corp.example:pa:ss");
        assert_eq!(
            parse_basic(format!("Basic {encoded}").as_bytes()),
            Some(("ana@corp.example".to_owned(), "pa:ss".to_owned()))
        );
        assert_eq!(
            parse_basic(format!("basic  {encoded}").as_bytes()).map(|c| c.0),
            Some("ana@corp.example".to_owned())
        );
        for bad in ["Bearer abc", "Basic !!!", "Basic", "", "Basic OnBhc3M="] {
            assert_eq!(parse_basic(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn hashes_verify_only_the_right_password() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        let user = Uuid::new_v4();
        assert_eq!(
            verify(Some((user, hash.clone())), "correct horse".into()).await,
            Some(user)
        );
        assert_eq!(verify(Some((user, hash)), "wrong".into()).await, None);
        assert_eq!(verify(None, "correct horse".into()).await, None);
    }
}

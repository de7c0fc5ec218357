//! The coaching pages' justification tokens: signed, verified and spent here, with the
//! per-process state that goes with them (tokens already spent, justifications per client and
//! hour). A token binds the decision, the host, the user, the client address and device, and an
//! expiry, under a key every gateway of a fleet derives from the CA key they share.
//!
//! This module sits below the shared state that holds a [`Coach`] and the proxy that answers
//! the coaching routes: it knows neither.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::identity::Identity;
use crate::policy::exception::ClientSignals;
use crate::policy::facts::ANONYMOUS_USER;

/// Where the coaching page's form posts, and where an API client's justification link points;
/// answered by the gateway, never forwarded.
pub const JUSTIFY_PATH: &str = "/.aigate/justify";

/// What the coaching-token key is derived for from the CA key (HKDF-SHA256 info): no other use of
/// the CA key can yield the same bytes.
pub const TOKEN_KEY_LABEL: &str = "aigate coaching token v1";
/// How long a coaching page's token stays valid: long enough to write a justification.
const TOKEN_LIFETIME: Duration = Duration::from_secs(15 * 60);
const RATE_WINDOW: Duration = Duration::from_secs(3600);

type HmacSha256 = Hmac<sha2::Sha256>;

/// The token and the signing state of the coaching pages.
pub struct Coach {
    key: [u8; 32],
    /// Decision ids whose token was spent (kept as long as a token lives).
    spent: moka::sync::Cache<Uuid, ()>,
    /// Justifications per client in the current hour: when the window opened, and how many.
    given: moka::sync::Cache<String, Arc<(Instant, AtomicU32)>>,
}

impl std::fmt::Debug for Coach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coach")
            .field("spent", &self.spent.entry_count())
            .finish_non_exhaustive()
    }
}

/// Who is asking, as the gateway sees the request (never as the form claims).
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub host: &'a str,
    pub port: u16,
    pub tls: bool,
    pub identity: &'a Identity,
    pub signals: ClientSignals<'a>,
}

impl Caller<'_> {
    pub fn user_id(&self) -> Uuid {
        self.identity.user.as_ref().map_or(ANONYMOUS_USER, |u| u.id)
    }

    /// `scheme://host[:port]`, the only `Origin` a genuine form submission carries.
    pub fn origin(&self) -> String {
        let (scheme, default_port) = if self.tls {
            ("https", 443)
        } else {
            ("http", 80)
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.to_owned()
        };
        if self.port == default_port {
            format!("{scheme}://{host}")
        } else {
            format!("{scheme}://{host}:{}", self.port)
        }
    }

    /// Who the rate limit counts: the user, or an anonymous user's address.
    fn rate_key(&self) -> String {
        match (&self.identity.user, self.signals.ip) {
            (Some(user), _) => user.id.to_string(),
            (None, Some(ip)) => ip.to_string(),
            (None, None) => String::new(),
        }
    }
}

/// A verified token's claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub decision_id: Uuid,
    pub expires: u64,
    /// The device that met the review ([`ClientSignals::device_key`]): an API client's
    /// justification is written in a browser, and the exception is for the client.
    pub device: String,
    /// Issued to an API client: the browser gets a thank-you page, not a redirect.
    pub api: bool,
}

/// How a coaching page or an API error offers the justification.
#[derive(Debug, Clone)]
pub struct Offer {
    pub token: String,
    /// The absolute link an API client's user opens in a browser.
    pub url: String,
}

impl Coach {
    /// Signs with `key`: [`TOKEN_KEY_LABEL`] derived from the CA key
    /// (`CertificateAuthority::derive_key`), the same on every gateway sharing the CA.
    pub fn new(key: [u8; 32]) -> Self {
        Coach {
            key,
            spent: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(TOKEN_LIFETIME)
                .build(),
            given: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(RATE_WINDOW)
                .build(),
        }
    }

    /// The justification offer for a REVIEW `decision_id` met by `caller`; `return_to` is the
    /// page to go back to (a local path).
    pub fn offer(
        &self,
        caller: &Caller<'_>,
        decision_id: Uuid,
        api: bool,
        return_to: &str,
    ) -> Offer {
        let expires = unix_now() + TOKEN_LIFETIME.as_secs();
        let claims = Claims {
            decision_id,
            expires,
            device: caller.signals.device_key(),
            api,
        };
        let token = format!(
            "{}.{}.{}.{}.{}",
            claims.decision_id.simple(),
            claims.expires,
            claims.device,
            u8::from(claims.api),
            hex::encode(self.mac(caller, &claims).finalize().into_bytes()),
        );
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("token", &token)
            .append_pair("return_to", return_to)
            .finish();
        Offer {
            url: format!("{}{JUSTIFY_PATH}?{query}", caller.origin()),
            token,
        }
    }

    fn mac(&self, caller: &Caller<'_>, claims: &Claims) -> HmacSha256 {
        // HMAC takes a key of any length: this cannot fail.
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable_mac());
        let ip = caller
            .signals
            .ip
            .map(|ip| ip.to_string())
            .unwrap_or_default();
        for part in [
            "aigate-justify-v1",
            &claims.decision_id.simple().to_string(),
            &claims.expires.to_string(),
            &claims.device,
            if claims.api { "api" } else { "page" },
            &caller.host.to_ascii_lowercase(),
            &caller.user_id().to_string(),
            &ip,
        ] {
            mac.update(part.as_bytes());
            mac.update(b"\0");
        }
        mac
    }

    /// The claims of `token` if this process signed it for `caller` (same host, user and
    /// address) and it has not expired.
    pub fn verify(&self, caller: &Caller<'_>, token: &str) -> Option<Claims> {
        let mut parts = token.split('.');
        let decision_id = Uuid::try_parse(parts.next()?).ok()?;
        let expires: u64 = parts.next()?.parse().ok()?;
        let device = parts.next()?.to_owned();
        let api = match parts.next()? {
            "1" => true,
            "0" => false,
            _ => return None,
        };
        let signature = hex::decode(parts.next()?).ok()?;
        if parts.next().is_some() || expires < unix_now() {
            return None;
        }
        let claims = Claims {
            decision_id,
            expires,
            device,
            api,
        };
        self.mac(caller, &claims)
            .verify_slice(&signature)
            .ok()
            .map(|()| claims)
    }

    /// Counts one justification for `caller`; `Err(retry_after_secs)` past the hourly cap.
    pub fn count(&self, caller: &Caller<'_>, max_per_hour: u32) -> Result<(), u64> {
        let slot = self.given.get_with(caller.rate_key(), || {
            Arc::new((Instant::now(), AtomicU32::new(0)))
        });
        let (opened, count) = &*slot;
        if count.fetch_add(1, Ordering::Relaxed) < max_per_hour {
            return Ok(());
        }
        count.fetch_sub(1, Ordering::Relaxed);
        Err(RATE_WINDOW
            .saturating_sub(opened.elapsed())
            .as_secs()
            .max(1))
    }

    /// Marks the token of `decision_id` spent; false when it already was (in this process).
    pub fn spend(&self, decision_id: Uuid) -> bool {
        self.spent.entry(decision_id).or_insert(()).is_fresh()
    }
}

#[cold]
fn unreachable_mac() -> HmacSha256 {
    // `new_from_slice` only fails for fixed-size-key MACs; fall back to an all-zero key of the
    // right kind rather than panic (never reached for HMAC).
    <HmacSha256 as hmac::digest::KeyInit>::new(&Default::default())
}

fn unix_now() -> u64 {
    OffsetDateTime::now_utc()
        .unix_timestamp()
        .max(0)
        .unsigned_abs()
}

/// The client and device a justification offer binds.
pub fn caller_signals(ip: Option<IpAddr>, headers: &http::HeaderMap) -> ClientSignals<'_> {
    ClientSignals {
        ip,
        user_agent: headers.get("user-agent").and_then(|v| v.to_str().ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity::anonymous()
    }

    #[test]
    fn tokens_bind_host_user_address_and_expire() {
        let coach = Coach::new([7; 32]);
        let identity = identity();
        let headers = http::HeaderMap::new();
        let caller = Caller {
            host: "new.example",
            port: 443,
            tls: true,
            identity: &identity,
            signals: caller_signals(Some("10.0.0.1".parse().unwrap()), &headers),
        };
        let decision = Uuid::now_v7();
        let offer = coach.offer(&caller, decision, false, "/x");
        assert!(offer
            .url
            .starts_with("https://new.example/.aigate/justify?token="));
        let claims = coach.verify(&caller, &offer.token).unwrap();
        assert_eq!(claims.decision_id, decision);
        let elsewhere = Caller {
            signals: caller_signals(Some("10.0.0.2".parse().unwrap()), &headers),
            ..caller
        };
        assert!(coach.verify(&elsewhere, &offer.token).is_none());
        let other_host = Caller {
            host: "other.example",
            ..caller
        };
        assert!(coach.verify(&other_host, &offer.token).is_none());
        assert!(Coach::new([8; 32]).verify(&caller, &offer.token).is_none());
        // Another gateway with the same key (the same CA) accepts it.
        assert_eq!(
            Coach::new([7; 32]).verify(&caller, &offer.token),
            Some(claims)
        );
        let tampered = offer.token.replacen(".0.", ".1.", 1);
        assert!(coach.verify(&caller, &tampered).is_none());
    }
}

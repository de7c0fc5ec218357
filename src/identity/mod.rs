//! Identity and context: who is behind a request, and what the policies need to know about them
//! and their device.
//!
//! Attribution methods are tried in the configured order, first hit wins: a trusted header set
//! by an authenticating proxy (honoured only from trusted networks, always stripped before
//! forwarding), `Proxy-Authorization: Basic` checked against argon2 hashes (explicit mode), then
//! the client's source IP matched to an active asset and its owner. Nothing matching means
//! anonymous (the nil user, `authenticated = false`). Contexts come from the store through moka
//! caches: a burst of requests for one user is one store query.

mod credentials;
pub mod directory;
pub mod directory_rows;
mod lockout;
pub mod repository;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use uuid::Uuid;

use crate::config::{AttributionMethod, IdentityConfig};
use sha2::Digest;

pub use credentials::hash_password;
pub use repository::{DirectoryRepository, IdentityLookup, RepositoryError};

/// `input.user` of the policy contract.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct UserContext {
    pub id: Uuid,
    pub email: String,
    /// Department name; `department_chain` lists it and its parents, nearest first.
    pub department: Option<String>,
    pub department_id: Option<Uuid>,
    pub department_chain: Vec<String>,
    pub groups: Vec<String>,
    pub group_ids: Vec<Uuid>,
    /// Roles whose assignment has not expired.
    pub roles: Vec<String>,
    pub risk_score: i32,
    pub clearance_level: Option<String>,
    pub employee_type: Option<String>,
    pub status: String,
    /// The department's and the groups' service lists, merged.
    pub allowed_ai_services: Vec<String>,
    pub prohibited_ai_services: Vec<String>,
    /// The policy input's `user` document and the attribution method it names.
    #[serde(skip)]
    pub policy_input: Derived<(&'static str, regorus::Value)>,
}

/// `input.device` of the policy contract: the asset a request came from.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct DeviceContext {
    pub id: Uuid,
    pub hostname: Option<String>,
    pub crown_jewel: bool,
    pub sensitivity: Option<String>,
    pub compliance_status: Option<String>,
    pub data_classification: Vec<String>,
    #[serde(skip)]
    pub owner_id: Option<Uuid>,
    /// The policy input's `device` document.
    #[serde(skip)]
    pub policy_input: Derived<regorus::Value>,
}

/// What a later stage makes of a context (its policy-input document), made on the first request
/// that needs it and kept while the resolver caches the context: contexts are shared immutably,
/// and a changed user or device is a new context, so the form cannot go stale. A clone starts
/// empty, since a cloned context may be edited before use.
pub struct Derived<T>(std::sync::OnceLock<T>);

impl<T> Derived<T> {
    pub fn get_or_init(&self, make: impl FnOnce() -> T) -> &T {
        self.0.get_or_init(make)
    }
}

impl<T> Default for Derived<T> {
    fn default() -> Self {
        Derived(std::sync::OnceLock::new())
    }
}

impl<T> Clone for Derived<T> {
    fn clone(&self) -> Self {
        Derived::default()
    }
}

/// Not part of what a context is: two contexts with equal fields are equal.
impl<T> PartialEq for Derived<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<T> std::fmt::Debug for Derived<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Derived(made)"
        } else {
            "Derived(empty)"
        })
    }
}

/// What a request offers to be attributed by. `Debug` leaves the headers out: they may carry
/// proxy credentials.
#[derive(Clone, Copy)]
pub struct Claims<'a> {
    pub client: Option<IpAddr>,
    pub headers: &'a http::HeaderMap,
    /// Who authenticated the CONNECT the request arrived through.
    pub tunnel_user: Option<TunnelUser>,
    /// Proxy authentication applies: a plain request to the explicit listener (the CONNECT of an
    /// intercepted tunnel was already checked; a transparent client cannot answer a 407).
    pub proxy_auth_applies: bool,
}

impl std::fmt::Debug for Claims<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claims")
            .field("client", &self.client)
            .field("tunnel_user", &self.tunnel_user)
            .field("proxy_auth_applies", &self.proxy_auth_applies)
            .finish_non_exhaustive()
    }
}

/// The user a CONNECT authenticated as, carried for every request inside the tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelUser {
    pub user_id: Uuid,
    pub method: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyAuthError {
    #[error("proxy authentication required")]
    Required,
    #[error("proxy credentials rejected")]
    Rejected,
    /// Too many wrong passwords from this client or for this account: answered 429 with
    /// `Retry-After`, without checking the password.
    #[error("proxy authentication locked out for {retry_after_secs} s after repeated failures")]
    Locked { retry_after_secs: u64 },
}

impl ProxyAuthError {
    pub fn metric_label(self) -> &'static str {
        match self {
            ProxyAuthError::Required => "missing",
            ProxyAuthError::Rejected => "rejected",
            ProxyAuthError::Locked { .. } => "locked",
        }
    }

    /// The `Retry-After` of a lockout.
    pub fn retry_after(self) -> Option<u64> {
        match self {
            ProxyAuthError::Locked { retry_after_secs } => Some(retry_after_secs),
            _ => None,
        }
    }
}

enum ProxyCredentials {
    Absent,
    Valid(Uuid),
    Invalid,
    Locked(u64),
}

/// Who a request is attributed to.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub user: Option<Arc<UserContext>>,
    pub device: Option<Arc<DeviceContext>>,
    /// `trusted_header`, `source_ip` or `anonymous`.
    pub method: &'static str,
}

impl Identity {
    pub fn anonymous() -> Self {
        Identity {
            user: None,
            device: None,
            method: "anonymous",
        }
    }

    pub fn authenticated(&self) -> bool {
        self.user.is_some()
    }
}

fn bounded_cache<K, V>(config: &IdentityConfig) -> Cache<K, V>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    Cache::builder()
        .max_capacity(config.cache_capacity)
        .time_to_live(Duration::from_secs(config.cache_ttl_secs))
        .build()
}

/// Resolves identities with cached store lookups.
#[derive(Debug)]
pub struct Resolver {
    store: Arc<dyn IdentityLookup>,
    /// Swapped by a config reload (cache sizes keep their start-up values).
    config: arc_swap::ArcSwap<IdentityConfig>,
    users_by_email: Cache<String, Option<Arc<UserContext>>>,
    users_by_id: Cache<Uuid, Option<Arc<UserContext>>>,
    devices_by_ip: Cache<IpAddr, Option<Arc<DeviceContext>>>,
    /// SHA-256 of a `Proxy-Authorization` value → the user it proves, or `None` for wrong ones.
    credentials: Cache<[u8; 32], Option<Uuid>>,
    /// Wrong passwords per client address and per account.
    lockout: lockout::Lockout,
    /// Argon2 checks this resolver ran (the process-wide metric sums every resolver).
    verifications: std::sync::atomic::AtomicU64,
}

impl Resolver {
    pub fn new(store: Arc<dyn IdentityLookup>, config: &IdentityConfig) -> Self {
        Resolver {
            store,
            config: arc_swap::ArcSwap::from_pointee(config.clone()),
            users_by_email: bounded_cache(config),
            users_by_id: bounded_cache(config),
            devices_by_ip: bounded_cache(config),
            credentials: bounded_cache(config),
            lockout: lockout::Lockout::new(config.auth_lockout_secs, config.cache_capacity),
            verifications: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The header a trusted authenticating proxy sets; stripped before forwarding whoever sent it.
    pub fn config(&self) -> arc_swap::Guard<Arc<IdentityConfig>> {
        self.config.load()
    }

    /// Applies a reloaded `[identity]`.
    pub fn reconfigure(&self, config: &IdentityConfig) {
        self.config.store(Arc::new(config.clone()));
        self.invalidate();
    }

    /// Proxy passwords this resolver has checked with argon2.
    pub fn verifications(&self) -> u64 {
        self.verifications
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Drops every cached context (on reload, so directory changes apply).
    pub fn invalidate(&self) {
        self.credentials.invalidate_all();
        self.users_by_email.invalidate_all();
        self.users_by_id.invalidate_all();
        self.devices_by_ip.invalidate_all();
    }

    /// Attributes a request. `claims.tunnel_user` (who opened the CONNECT the request arrived
    /// through) wins: the CONNECT already went through the ordered methods. Fails only when proxy
    /// authentication applies and the credentials are wrong, or required and missing.
    pub async fn identify(&self, claims: &Claims<'_>) -> Result<Identity, ProxyAuthError> {
        let device = match claims.client {
            Some(ip) => self.device(ip).await,
            None => None,
        };
        if let Some(tunnel) = claims.tunnel_user {
            if let Some(user) = self.user_by_id(tunnel.user_id).await {
                return Ok(Identity {
                    user: Some(user),
                    device,
                    method: tunnel.method,
                });
            }
        }
        let config = self.config.load_full();
        for method in &config.order {
            let user = match method {
                AttributionMethod::TrustedHeader => self.trusted_header_user(claims).await,
                AttributionMethod::ProxyBasic if claims.proxy_auth_applies => {
                    self.proxy_basic_user(claims.client, claims.headers).await?
                }
                AttributionMethod::ProxyBasic => None,
                AttributionMethod::SourceIp => match device.as_ref().and_then(|d| d.owner_id) {
                    Some(owner) => self.user_by_id(owner).await,
                    None => None,
                },
            };
            if let Some(user) = user {
                let identity = Identity {
                    user: Some(user),
                    device,
                    method: method.as_str(),
                };
                return self.required(claims, identity);
            }
        }
        self.required(
            claims,
            Identity {
                device,
                ..Identity::anonymous()
            },
        )
    }

    /// Who a CONNECT authenticates as, by the credential-bearing methods only (the source IP is
    /// looked up per request). `Ok(None)`: nobody, and that is allowed.
    pub async fn authenticate_tunnel(
        &self,
        client: Option<IpAddr>,
        headers: &http::HeaderMap,
    ) -> Result<Option<TunnelUser>, ProxyAuthError> {
        let claims = Claims {
            client,
            headers,
            tunnel_user: None,
            proxy_auth_applies: true,
        };
        let config = self.config.load_full();
        for method in &config.order {
            let user = match method {
                AttributionMethod::TrustedHeader => self.trusted_header_user(&claims).await,
                AttributionMethod::ProxyBasic => self.proxy_basic_user(client, headers).await?,
                AttributionMethod::SourceIp => None,
            };
            if let Some(user) = user {
                return Ok(Some(TunnelUser {
                    user_id: user.id,
                    method: method.as_str(),
                }));
            }
        }
        if config.require_proxy_auth {
            return Err(ProxyAuthError::Required);
        }
        Ok(None)
    }

    /// `Proxy-Authenticate` challenge for a 407.
    pub fn challenge(&self) -> String {
        format!(
            "Basic realm=\"{}\", charset=\"UTF-8\"",
            self.config.load().proxy_auth_realm
        )
    }

    async fn proxy_basic_user(
        &self,
        client: Option<IpAddr>,
        headers: &http::HeaderMap,
    ) -> Result<Option<Arc<UserContext>>, ProxyAuthError> {
        match self.check_proxy_credentials(client, headers).await {
            ProxyCredentials::Valid(id) => Ok(self.user_by_id(id).await),
            ProxyCredentials::Invalid => self.rejected(ProxyAuthError::Rejected),
            ProxyCredentials::Locked(retry_after_secs) => {
                self.rejected(ProxyAuthError::Locked { retry_after_secs })
            }
            ProxyCredentials::Absent => Ok(None),
        }
    }

    /// Wrong (or locked-out) credentials: refused when authentication is required; otherwise
    /// the request is simply not attributed by them (a client still configured for another
    /// proxy keeps working).
    fn rejected(
        &self,
        refusal: ProxyAuthError,
    ) -> Result<Option<Arc<UserContext>>, ProxyAuthError> {
        if self.config.load().require_proxy_auth {
            Err(refusal)
        } else {
            tracing::debug!(
                "Ignoring proxy credentials that do not match (authentication not required)."
            );
            Ok(None)
        }
    }

    fn required(
        &self,
        claims: &Claims<'_>,
        identity: Identity,
    ) -> Result<Identity, ProxyAuthError> {
        let credentialed = matches!(identity.method, "trusted_header" | "proxy_basic");
        if self.config.load().require_proxy_auth && claims.proxy_auth_applies && !credentialed {
            return Err(ProxyAuthError::Required);
        }
        Ok(identity)
    }

    async fn trusted_header_user(&self, claims: &Claims<'_>) -> Option<Arc<UserContext>> {
        let trusted = claims.client.is_some_and(|ip| {
            self.config
                .load()
                .trusted_networks
                .iter()
                .any(|net| net.contains(&ip))
        });
        if !trusted {
            return None;
        }
        let email = claims
            .headers
            .get(self.config.load().trusted_header.as_str())
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_ascii_lowercase())
            .filter(|v| !v.is_empty())?;
        self.user_by_email(email).await
    }

    /// Checks `Proxy-Authorization: Basic`. Argon2 is deliberately slow, so outcomes are cached
    /// by a digest of the header (never the password itself), good and bad alike: a client
    /// retrying wrong credentials costs one verification per TTL, not one per request, and a
    /// signed-in user none. A credential not yet known is checked only while neither its client
    /// address nor its account is locked out ([`lockout`]).
    async fn check_proxy_credentials(
        &self,
        client: Option<IpAddr>,
        headers: &http::HeaderMap,
    ) -> ProxyCredentials {
        let Some(value) = headers.get(http::header::PROXY_AUTHORIZATION) else {
            return ProxyCredentials::Absent;
        };
        let Some((username, password)) = credentials::parse_basic(value.as_bytes()) else {
            return ProxyCredentials::Invalid;
        };
        let digest: [u8; 32] = sha2::Sha256::digest(value.as_bytes()).into();
        match self.credentials.get(&digest).await {
            Some(Some(user)) => return ProxyCredentials::Valid(user),
            Some(None) => return ProxyCredentials::Invalid,
            None => {}
        }
        let max = self.config.load().max_auth_failures;
        if let Some(retry_after) = self.lockout.locked(client, &username, max) {
            return ProxyCredentials::Locked(retry_after);
        }
        let store = Arc::clone(&self.store);
        let fresh = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let checked = Arc::clone(&fresh);
        let account = username.clone();
        let verified = self
            .credentials
            .try_get_with(digest, async move {
                checked.store(true, std::sync::atomic::Ordering::Relaxed);
                let stored = store.proxy_credential(&account).await?;
                Ok::<_, RepositoryError>(credentials::verify(stored, password).await)
            })
            .await;
        let fresh = fresh.load(std::sync::atomic::Ordering::Relaxed);
        if fresh {
            self.verifications
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        match verified {
            Ok(Some(user)) => ProxyCredentials::Valid(user),
            Ok(None) => {
                if fresh {
                    self.lockout.failed(client, &username);
                }
                ProxyCredentials::Invalid
            }
            Err(error) => {
                tracing::warn!(%error, "Proxy credential lookup failed; refusing the credentials.");
                ProxyCredentials::Invalid
            }
        }
    }

    // Lookups: `get_with` coalesces concurrent misses for one key into one store query; a
    // store error is not cached (the next request retries) and counts as "not found".

    async fn user_by_email(&self, email: String) -> Option<Arc<UserContext>> {
        let store = Arc::clone(&self.store);
        let key = email.clone();
        self.users_by_email
            .try_get_with(key, async move {
                store
                    .user_context_by_email(&email)
                    .await
                    .map(|u| u.map(Arc::new))
            })
            .await
            .unwrap_or_else(|error| {
                tracing::warn!(%error, "User lookup failed; treating the request as unattributed.");
                None
            })
    }

    async fn user_by_id(&self, id: Uuid) -> Option<Arc<UserContext>> {
        let store = Arc::clone(&self.store);
        self.users_by_id
            .try_get_with(id, async move {
                store.user_context_by_id(id).await.map(|u| u.map(Arc::new))
            })
            .await
            .unwrap_or_else(|error| {
                tracing::warn!(%error, "User lookup failed; treating the request as unattributed.");
                None
            })
    }

    async fn device(&self, ip: IpAddr) -> Option<Arc<DeviceContext>> {
        let store = Arc::clone(&self.store);
        self.devices_by_ip
            .try_get_with(ip, async move {
                store.device_by_ip(ip).await.map(|d| d.map(Arc::new))
            })
            .await
            .unwrap_or_else(|error| {
                tracing::warn!(%error, "Device lookup failed; no device context.");
                None
            })
    }
}

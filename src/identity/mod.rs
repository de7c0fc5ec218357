//! Identity and context: who is behind a request, and what the policies need to know about them
//! and their device.
//!
//! Attribution methods are tried in the configured order, first hit wins: a trusted header set
//! by an authenticating proxy (honoured only from trusted networks, always stripped before
//! forwarding), then the client's source IP matched to an active asset and its owner. Nothing
//! matching means anonymous (the nil user, `authenticated = false`). Contexts come from the
//! store through moka caches: a burst of requests for one user is one store query.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use uuid::Uuid;

use crate::config::{AttributionMethod, IdentityConfig};
use crate::store::Store;

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
    store: Arc<dyn Store>,
    config: IdentityConfig,
    trusted: Vec<ipnet::IpNet>,
    users_by_email: Cache<String, Option<Arc<UserContext>>>,
    users_by_id: Cache<Uuid, Option<Arc<UserContext>>>,
    devices_by_ip: Cache<IpAddr, Option<Arc<DeviceContext>>>,
}

impl Resolver {
    pub fn new(store: Arc<dyn Store>, config: &IdentityConfig) -> Self {
        Resolver {
            store,
            trusted: config.trusted_networks.clone(),
            config: config.clone(),
            users_by_email: bounded_cache(config),
            users_by_id: bounded_cache(config),
            devices_by_ip: bounded_cache(config),
        }
    }

    /// The header a trusted authenticating proxy sets; stripped before forwarding whoever sent it.
    pub fn trusted_header(&self) -> &str {
        &self.config.trusted_header
    }

    /// Drops every cached context (on reload, so directory changes apply).
    pub fn invalidate(&self) {
        self.users_by_email.invalidate_all();
        self.users_by_id.invalidate_all();
        self.devices_by_ip.invalidate_all();
    }

    pub async fn identify(&self, client: Option<IpAddr>, headers: &http::HeaderMap) -> Identity {
        let device = match client {
            Some(ip) => self.device(ip).await,
            None => None,
        };
        for method in &self.config.order {
            let user = match method {
                AttributionMethod::TrustedHeader => {
                    let trusted =
                        client.is_some_and(|ip| self.trusted.iter().any(|net| net.contains(&ip)));
                    let email = headers
                        .get(self.config.trusted_header.as_str())
                        .and_then(|v| v.to_str().ok())
                        .map(|v| v.trim().to_ascii_lowercase())
                        .filter(|v| !v.is_empty());
                    match (trusted, email) {
                        (true, Some(email)) => self.user_by_email(email).await,
                        _ => None,
                    }
                }
                AttributionMethod::SourceIp => match device.as_ref().and_then(|d| d.owner_id) {
                    Some(owner) => self.user_by_id(owner).await,
                    None => None,
                },
            };
            if let Some(user) = user {
                return Identity {
                    user: Some(user),
                    device,
                    method: method.as_str(),
                };
            }
        }
        Identity {
            device,
            ..Identity::anonymous()
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

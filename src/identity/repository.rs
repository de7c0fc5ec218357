//! What identity needs from persistence. Defined here and implemented by the store, so identity
//! depends on no storage module (the store depends on identity's types instead).

use std::net::IpAddr;

use async_trait::async_trait;
use uuid::Uuid;

use super::directory_rows::{DirectoryKeys, DirectoryPlan, DirectorySync};
use super::{DeviceContext, UserContext};

/// A failure of the backend behind a repository, kept whole (source chain and all) without
/// identity naming the backend's error type.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct RepositoryError(Box<dyn std::error::Error + Send + Sync>);

impl RepositoryError {
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        RepositoryError(Box::new(error))
    }

    /// The backend's own error, for callers that know which backend they hold.
    pub fn source_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }
}

/// The lookups behind attribution: users, devices and proxy credentials.
#[async_trait]
pub trait IdentityLookup: Send + Sync + std::fmt::Debug {
    /// The user with this email (case-insensitive), with department chain, groups, unexpired
    /// roles and service lists; `None` when unknown.
    async fn user_context_by_email(
        &self,
        email: &str,
    ) -> Result<Option<UserContext>, RepositoryError>;

    async fn user_context_by_id(&self, id: Uuid) -> Result<Option<UserContext>, RepositoryError>;

    /// The active asset holding `ip`, with its owner.
    async fn device_by_ip(&self, ip: IpAddr) -> Result<Option<DeviceContext>, RepositoryError>;

    /// The user id and argon2 PHC hash stored for a proxy user name (case-insensitive).
    async fn proxy_credential(
        &self,
        username: &str,
    ) -> Result<Option<(Uuid, String)>, RepositoryError>;
}

/// What a directory import reads and writes.
#[async_trait]
pub trait DirectoryRepository: Send + Sync {
    /// Keys of the directory rows already stored, for matching an import.
    async fn directory_keys(&self) -> Result<DirectoryKeys, RepositoryError>;

    /// Upserts a resolved directory import in one transaction: all or nothing.
    async fn apply_directory(&self, plan: &DirectoryPlan) -> Result<(), RepositoryError>;

    /// Records a directory import run in `integrations` / `integration_sync_logs`.
    async fn record_directory_sync(&self, sync: &DirectorySync) -> Result<(), RepositoryError>;
}

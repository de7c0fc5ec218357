//! The state every connection, request and admin call shares, and the one place that replaces
//! it. Modules that serve traffic or the management API read `Shared`; none of them rebuilds
//! the snapshot itself: they ask the reloader (`Shared::reloader`), which runs one reload at a
//! time and answers a burst of requests with one rebuild.
//!
//! This module sits below everything that serves: it knows the parts it holds, never the
//! listeners or the assembly (`server`) that creates it.

pub mod load;
pub mod reload;
pub mod watch;

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::audit::AuditHandle;
use crate::config::{Config, ValidConfig};
use crate::front::route::Router;
use crate::pipeline::Snapshot;
use crate::store::Store;
use crate::tls::{CertificateAuthority, LeafMinter};
use crate::upstream::Upstream;

pub use self::load::{check, CheckSummary, LoadError};
pub use self::reload::{ConfigReloaded, ReloadFailed, Reloaded, Reloader};

/// State every connection and request shares.
pub struct Shared {
    /// The running configuration; only the reloader swaps it (a re-read file on SIGHUP).
    config: ArcSwap<Config>,
    /// Catalog, compiled policies, exceptions and inspector; only the reloader swaps it.
    pub snapshot: ArcSwap<Snapshot>,
    /// Asks for a rebuild of the snapshot (or its exceptions, or the configuration).
    pub reloader: Reloader,
    /// Who is behind each request (cached store lookups).
    pub identity: crate::identity::Resolver,
    pub router: Router,
    pub upstream: Upstream,
    /// Open connections per client address (`[proxy] max_connections_per_client`).
    pub client_connections: Arc<crate::front::guard::ClientConnections>,
    pub minter: LeafMinter,
    pub ca: Arc<CertificateAuthority>,
    pub audit: AuditHandle,
    pub store: Arc<dyn Store>,
    /// Where the explicit proxy actually listens (the PAC file's default gateway).
    pub proxy_addr: SocketAddr,
    /// Signs and spends the coaching pages' justification tokens.
    pub coach: crate::coaching::Coach,
}

/// The parts `Shared` is made of, as the assembly prepared them.
pub struct Parts {
    pub config: ValidConfig,
    pub snapshot: Snapshot,
    pub reloader: Reloader,
    pub identity: crate::identity::Resolver,
    pub router: Router,
    pub upstream: Upstream,
    pub minter: LeafMinter,
    pub ca: Arc<CertificateAuthority>,
    pub audit: AuditHandle,
    pub store: Arc<dyn Store>,
    pub proxy_addr: SocketAddr,
}

impl Shared {
    pub fn new(parts: Parts) -> Shared {
        let token_key = parts.ca.derive_key(crate::coaching::TOKEN_KEY_LABEL);
        Shared {
            config: ArcSwap::from_pointee(parts.config.into_inner()),
            snapshot: ArcSwap::from_pointee(parts.snapshot),
            reloader: parts.reloader,
            identity: parts.identity,
            router: parts.router,
            upstream: parts.upstream,
            client_connections: Arc::default(),
            minter: parts.minter,
            ca: parts.ca,
            audit: parts.audit,
            store: parts.store,
            proxy_addr: parts.proxy_addr,
            coach: crate::coaching::Coach::new(token_key),
        }
    }

    /// The configuration in force. An owned `Arc`, so holding it across an `.await` pins no
    /// arc-swap slot; a reload never changes a configuration someone holds.
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// Writes exception uses counted in memory back to `usage_count`.
    pub async fn flush_exception_uses(&self) {
        let uses = self.snapshot.load().exceptions.drain_uses();
        if uses.is_empty() {
            return;
        }
        if let Err(error) = self.store.add_exception_uses(&uses).await {
            tracing::warn!(%error, exceptions = uses.len(), "Cannot record exception uses; the counts are lost.");
        }
    }
}

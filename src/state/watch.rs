//! Keeps this gateway in step with the store, whoever changed it (this gateway's admin API,
//! another gateway of the fleet, a provisioning job, plain SQL): a PostgreSQL notification names
//! the part that changed and is acted on at once; polling each part's revision is SQLite's only
//! way and PostgreSQL's safety net for notifications lost while the listener reconnected.

use std::sync::Arc;

use tracing::info;

use super::Shared;
use crate::store::ChangeDomain;

/// Watches the store until aborted; snapshot and exception changes go to the reloader.
pub async fn watch_store(shared: Arc<Shared>) {
    let every = std::time::Duration::from_secs(shared.config().policy.reload_interval_secs);
    let mut notifications = shared.store.change_notifications().await;
    let mut seen = shared.store.revisions().await.ok();
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    loop {
        let mut notified: Vec<ChangeDomain> = Vec::new();
        match notifications.as_mut() {
            Some(rx) => tokio::select! {
                _ = ticker.tick() => {}
                message = rx.recv() => match message {
                    Some(domain) => {
                        notified.push(domain);
                        // A burst (a bulk import, several edits) is applied once.
                        while let Ok(domain) = rx.try_recv() {
                            notified.push(domain);
                        }
                    }
                    None => {
                        tracing::warn!("The store's change notifications ended; polling only.");
                        notifications = None;
                    }
                },
            },
            None => {
                ticker.tick().await;
            }
        }
        shared.flush_exception_uses().await;
        let revisions = match shared.store.revisions().await {
            Ok(revisions) => revisions,
            Err(error) => {
                tracing::debug!(%error, "Cannot poll the store's revisions.");
                continue;
            }
        };
        let mut changed = match &seen {
            Some(seen) => revisions.changed_since(seen),
            None => ChangeDomain::ALL.to_vec(),
        };
        for domain in notified {
            if !changed.contains(&domain) {
                changed.push(domain);
            }
        }
        // A rebuilt snapshot reads the exceptions too.
        if changed.contains(&ChangeDomain::Snapshot) {
            changed.retain(|domain| *domain != ChangeDomain::Exceptions);
        }
        for domain in changed {
            apply_store_change(&shared, domain).await;
        }
        // A rejected revision is not retried until it changes again.
        seen = Some(revisions);
    }
}

/// Refreshes what this gateway keeps of one changed part of the store.
async fn apply_store_change(shared: &Shared, domain: ChangeDomain) {
    match domain {
        ChangeDomain::Snapshot => match shared.reloader.snapshot().await {
            Ok(reloaded) => info!(
                services = reloaded.services,
                policies = reloaded.policies,
                exceptions = reloaded.exceptions,
                "The catalog or policies changed in the store; snapshot reloaded."
            ),
            Err(error) => tracing::error!(
                %error,
                "A change in the store was rejected; the previous snapshot keeps serving."
            ),
        },
        // A new exception (a user's justification, an approval) costs one query, not a policy
        // rebuild.
        ChangeDomain::Exceptions => match shared.reloader.exceptions().await {
            Ok(exceptions) => info!(
                exceptions,
                "Exceptions changed in the store; exception set reloaded."
            ),
            Err(error) => tracing::warn!(
                %error,
                "Cannot reload the exceptions; the previous set keeps serving."
            ),
        },
        ChangeDomain::Directory => {
            shared.identity.invalidate();
            info!("The directory changed in the store; identity caches dropped.");
        }
        ChangeDomain::Bypass => match shared
            .router
            .reload_permanent_bypass(shared.store.as_ref())
            .await
        {
            Ok(hosts) => info!(
                hosts,
                "The interception bypass changed in the store; reloaded."
            ),
            Err(error) => tracing::warn!(
                %error,
                "Cannot read the changed interception bypass; the previous one stays."
            ),
        },
    }
}

//! Reading and compiling what a snapshot is made of (catalog, policies, exceptions, inspector),
//! from the store when it answers and from the configured files otherwise. Start, every reload
//! and `aigate check-config` go through these functions, so a configuration that checks is one
//! that loads.

use tracing::info;

use crate::audit::AuditHandle;
use crate::catalog::{Catalog, CatalogError};
use crate::config::{Config, ValidConfig};
use crate::inspect::Inspector;
use crate::policy::{Exceptions, PolicySet};
use crate::store::{Store, StoreError};

/// Why a snapshot (or a configuration) could not be loaded. The running one stays.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("catalog: {0}")]
    Catalog(#[from] CatalogError),
    #[error("[policy] dir: {0}")]
    PolicyLoad(#[from] crate::policy::PolicyLoadError),
    #[error("[policy]: {0}")]
    Policy(#[from] crate::policy::PolicyError),
    #[error("[inspect] dictionaries: {0}")]
    Dictionary(#[from] crate::inspect::DetectorError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// The catalog the store holds; `None` when it holds no services.
pub async fn store_catalog(store: &dyn Store) -> Result<Option<Catalog>, LoadError> {
    let services = store.load_catalog().await?;
    if services.is_empty() {
        return Ok(None);
    }
    Ok(Some(Catalog::from_services(services)?))
}

/// The catalog a starting gateway serves: the store's, or the files when the store has none or
/// cannot be read (a reload replaces it once the store answers).
pub async fn initial_catalog(config: &Config, store: &dyn Store, files: Catalog) -> Catalog {
    match store_catalog(store).await {
        Ok(Some(catalog)) => {
            info!(
                services = catalog.services().len(),
                "Loaded the AI-service catalog from the store."
            );
            catalog
        }
        Ok(None) => {
            info!(services = files.services().len(), dir = %config.catalog.dir.display(), "The store has no AI services; serving the catalog files.");
            files
        }
        Err(error) => {
            tracing::warn!(%error, dir = %config.catalog.dir.display(), "Cannot load the catalog from the store; serving the catalog files until a reload succeeds.");
            files
        }
    }
}

/// The inspector `[inspect]` and `[proxy] body_buffer_bytes` describe, dictionaries read.
pub fn inspector(config: &Config) -> Result<Inspector, LoadError> {
    Ok(Inspector::new(
        &config.inspect.load_dictionaries()?,
        config.inspect.min_confidence,
        config.proxy.body_buffer_bytes,
    )?)
}

/// The policies and approved exceptions of a new snapshot: the store's (after importing policy
/// files it lacks) when it answers, the policy files alone when it does not. A file whose Rego
/// does not compile is never imported, and no policy that does not compile (file or row) stops
/// the gateway: it is reported (log, metric, audit event, `/readyz`) and its scope is denied.
pub async fn policy_state(
    config: &Config,
    store: &dyn Store,
    audit: &AuditHandle,
) -> Result<(PolicySet, Exceptions), LoadError> {
    let files = crate::policy::load_dir(&config.policy.dir)?;
    let (valid, rejected): (Vec<_>, Vec<_>) = files
        .iter()
        .cloned()
        .partition(|file| crate::policy::validate(file).is_ok());
    let from_store = async {
        if config.policy.import {
            let inserted = store.import_policies(&valid).await?;
            if inserted > 0 {
                info!(
                    inserted,
                    "Policy files imported into the store (existing rows untouched)."
                );
            }
        }
        Ok::<_, StoreError>((store.load_policies().await?, store.load_exceptions().await?))
    };
    let (definitions, exceptions) = match from_store.await {
        Ok((mut stored, exceptions)) => {
            // A rejected file the store has no row for still governs its scope (denied).
            let rejected: Vec<_> = rejected
                .into_iter()
                .filter(|file| !stored.iter().any(|row| row.policy_id == file.policy_id))
                .collect();
            stored.extend(rejected);
            (stored, exceptions)
        }
        Err(error) => {
            tracing::warn!(%error, dir = %config.policy.dir.display(), "Cannot read policies from the store; serving the policy files without exceptions.");
            (files, Vec::new())
        }
    };
    let policies = PolicySet::compile_lenient(
        &definitions,
        config.policy.defaults.clone(),
        config.policy.fail_mode,
        config.policy.evaluator,
    );
    report_broken_policies(&policies, audit);
    let exceptions = Exceptions::new(exceptions.into_iter().map(Into::into).collect());
    Ok((policies, exceptions))
}

/// The store's approved exceptions.
pub async fn exceptions(store: &dyn Store) -> Result<Exceptions, LoadError> {
    let rows = store.load_exceptions().await?;
    Ok(Exceptions::new(rows.into_iter().map(Into::into).collect()))
}

/// Says loudly which policies do not compile: an error log and an audit event each, and the
/// `aigate_policy_load_errors` gauge (0 once every policy compiles again).
fn report_broken_policies(policies: &PolicySet, audit: &AuditHandle) {
    let broken = policies.broken();
    crate::metrics::POLICY_LOAD_ERRORS.set(broken.len() as i64);
    for policy in broken {
        let definition = &policy.definition;
        tracing::error!(
            policy = %definition.name,
            policy_id = %definition.policy_id,
            error = %policy.error,
            "Policy does not compile; requests in its scope are denied until it is fixed."
        );
        audit.record(crate::audit::AuditRecord::Event(Box::new(
            crate::audit::AuditEventRecord {
                actor_type: Some("system".to_owned()),
                target_type: Some("policy".to_owned()),
                target_id: Some(definition.policy_id),
                target_name: Some(definition.name.clone()),
                result: Some("failure".to_owned()),
                event_data: Some(serde_json::json!({ "error": policy.error.to_string() })),
                ..crate::audit::AuditEventRecord::about_host(
                    "policy_load_failed",
                    "critical",
                    "load_policy",
                    &definition.name,
                )
            },
        )));
    }
}

/// What `aigate check-config` verified.
#[derive(Debug)]
pub struct CheckSummary {
    pub services: usize,
    pub policies: usize,
    pub active_policies: usize,
    pub dictionaries: usize,
}

/// Everything `start` would load from files, loaded and compiled without binding or touching
/// the store: a config that passes starts (store and listeners permitting).
pub fn check(config: &ValidConfig) -> Result<CheckSummary, LoadError> {
    let catalog = Catalog::load_dir(&config.catalog.dir)?;
    let definitions = crate::policy::load_dir(&config.policy.dir)?;
    let compiled = PolicySet::compile(
        &definitions,
        config.policy.defaults.clone(),
        config.policy.fail_mode,
        config.policy.evaluator,
    )?;
    let dictionaries = config.inspect.load_dictionaries()?;
    Inspector::new(
        &dictionaries,
        config.inspect.min_confidence,
        config.proxy.body_buffer_bytes,
    )?;
    Ok(CheckSummary {
        services: catalog.services().len(),
        policies: definitions.len(),
        active_policies: compiled.len(),
        dictionaries: dictionaries.len(),
    })
}

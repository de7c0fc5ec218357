//! Persistence: role traits (`AuditSink`, `CatalogRepository`, `PolicyRepository`,
//! `AdminRepository`, and identity's `IdentityLookup` and `DirectoryRepository`) gathered in
//! `Store`, implemented for PostgreSQL and SQLite, and the embedded migrations. No SQL lives
//! outside this module. Statements both engines accept are written once (`common`, `directory`);
//! each engine's file holds only what the engines do differently. Rows are read into `rows`
//! structs, and the API's listings into the typed items of `listing`.
//!
//! The store is only ever called from background tasks (the audit writer, start-up import): the
//! request path never waits on it.

mod common;
mod directory;
mod pg_copy;
mod pg_timeseries;
mod postgres;
mod rows;
mod sqlite;

use std::sync::Arc;

pub mod admin;
pub mod export;
pub mod listing;

use async_trait::async_trait;

use uuid::Uuid;

use crate::identity::{DirectoryRepository, IdentityLookup, RepositoryError};
use crate::policy::{ExceptionRecord, NewException, PolicyDefinition};
use admin::{ExceptionChange, ListQuery, Listing, PolicyWrite, TokenGrant, ViolationPatch};

use crate::audit::{AuditEventRecord, DecisionRecord};
use crate::catalog::{AiService, Catalog};
pub use crate::config::TimeSeries;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid [store] url {url:?}: {message}")]
    Url { url: String, message: String },
    #[error("store unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("store rejected the write: {0}")]
    Rejected(#[source] sqlx::Error),
    #[error("migrating the store: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("[store] time_series: {0}")]
    TimeSeries(String),
    #[error("stored {table} row {id}: {message}")]
    Corrupt {
        table: &'static str,
        id: String,
        message: String,
    },
    #[error("preparing {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

impl StoreError {
    /// Whether retrying the same write later can succeed (the store was down, slow, out of disk
    /// or failing I/O), as opposed to the data itself being refused (a constraint), which no
    /// retry will fix. Decided by `failure_kind`, the one place that sorts errors.
    pub fn is_retriable(&self) -> bool {
        self.failure_kind().is_retriable()
    }

    /// What went wrong, for the retry decision and the operator's alarm.
    pub fn failure_kind(&self) -> FailureKind {
        match self {
            StoreError::Unavailable(error) | StoreError::Rejected(error) => failure_kind(error),
            StoreError::Io { source, .. } => io_failure_kind(source),
            StoreError::Url { .. }
            | StoreError::Migrate(_)
            | StoreError::TimeSeries(_)
            | StoreError::Corrupt { .. } => FailureKind::Rejected,
        }
    }
}

/// A part of the store that gateways keep in memory, refreshed as a whole when it changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeDomain {
    /// Catalog, signatures and policies: the decision snapshot is rebuilt.
    Snapshot,
    /// Exceptions (not their usage counts): only the exception set is swapped.
    Exceptions,
    /// Users, departments, groups, roles, assets, proxy credentials: identity caches are dropped.
    Directory,
    /// The permanent interception bypass.
    Bypass,
}

impl ChangeDomain {
    /// Every domain, in declaration order (a domain's index in `Revisions`).
    pub const ALL: [ChangeDomain; 4] = [
        ChangeDomain::Snapshot,
        ChangeDomain::Exceptions,
        ChangeDomain::Directory,
        ChangeDomain::Bypass,
    ];

    /// The name the store's triggers use (`store_changes.domain`, the notification payload).
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeDomain::Snapshot => "snapshot",
            ChangeDomain::Exceptions => "exceptions",
            ChangeDomain::Directory => "directory",
            ChangeDomain::Bypass => "bypass",
        }
    }

    pub fn from_name(name: &str) -> Option<ChangeDomain> {
        ChangeDomain::ALL
            .into_iter()
            .find(|domain| domain.as_str() == name)
    }
}

/// Each domain's revision (`store_changes`), in `ChangeDomain::ALL` order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Revisions([i64; ChangeDomain::ALL.len()]);

impl Revisions {
    /// From `(domain, revision)` rows; an unknown domain is ignored (a newer schema).
    pub(crate) fn from_rows(rows: impl IntoIterator<Item = (String, i64)>) -> Revisions {
        let mut revisions = Revisions::default();
        for (name, revision) in rows {
            if let Some(domain) = ChangeDomain::from_name(&name) {
                revisions.0[domain as usize] = revision;
            }
        }
        revisions
    }

    pub fn get(&self, domain: ChangeDomain) -> i64 {
        self.0[domain as usize]
    }

    /// The domains whose revision differs from `earlier`.
    pub fn changed_since(&self, earlier: &Revisions) -> Vec<ChangeDomain> {
        ChangeDomain::ALL
            .into_iter()
            .filter(|domain| self.get(*domain) != earlier.get(*domain))
            .collect()
    }
}

/// Why a store operation failed. Everything but `Rejected` is the store's condition, not the
/// data's: the write is kept (journal or memory) and retried; only `Rejected` data is set aside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// No space left (SQLITE_FULL, ENOSPC, PostgreSQL 53100 disk_full).
    DiskFull,
    /// The storage failed (SQLITE_IOERR and friends, PostgreSQL class 58 and XX).
    IoError,
    /// The server cannot be reached or went away (PostgreSQL 08, 57; sockets; pool).
    Connection,
    /// Contention that clears by itself (SQLITE_BUSY/LOCKED, PostgreSQL 40, 55P03).
    Busy,
    /// Memory or connection slots ran out (SQLITE_NOMEM, PostgreSQL 53 but disk_full).
    Resources,
    /// The store refused this data on its own merits (constraints, types): no retry helps.
    Rejected,
}

impl FailureKind {
    pub fn is_retriable(self) -> bool {
        self != FailureKind::Rejected
    }

    /// The `kind` label of `aigate_audit_store_errors_total`.
    pub fn label(self) -> &'static str {
        match self {
            FailureKind::DiskFull => "disk_full",
            FailureKind::IoError => "io_error",
            FailureKind::Connection => "connection",
            FailureKind::Busy => "busy",
            FailureKind::Resources => "resources",
            FailureKind::Rejected => "rejected",
        }
    }

    pub const ALL: [FailureKind; 6] = [
        FailureKind::DiskFull,
        FailureKind::IoError,
        FailureKind::Connection,
        FailureKind::Busy,
        FailureKind::Resources,
        FailureKind::Rejected,
    ];
}

/// Sorts a sqlx error: the single decision of what is retriable (after vector's
/// `is_retriable_error`). Unknown failures outside the database's answer count as the store's
/// condition, so a record is never set aside for something that was not its fault.
pub(crate) fn failure_kind(error: &sqlx::Error) -> FailureKind {
    match error {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                sqlite_failure_kind(&code)
            } else {
                postgres_failure_kind(&code)
            }
        }
        sqlx::Error::Io(source) => io_failure_kind(source),
        sqlx::Error::Encode(_)
        | sqlx::Error::TypeNotFound { .. }
        | sqlx::Error::ColumnDecode { .. } => FailureKind::Rejected,
        _ => FailureKind::Connection,
    }
}

/// SQLite reports extended result codes; the primary code is the low byte.
fn sqlite_failure_kind(code: &str) -> FailureKind {
    match code.parse::<i32>().map(|c| c & 0xff) {
        Ok(5 | 6) => FailureKind::Busy,
        Ok(7) => FailureKind::Resources,
        Ok(13) => FailureKind::DiskFull,
        // READONLY, IOERR, CORRUPT, CANTOPEN, PROTOCOL, NOTADB: the file or its disk.
        Ok(8 | 10 | 11 | 14 | 15 | 26) => FailureKind::IoError,
        _ => FailureKind::Rejected,
    }
}

/// PostgreSQL SQLSTATE: the class is the first two characters.
fn postgres_failure_kind(code: &str) -> FailureKind {
    match (code, code.get(..2).unwrap_or_default()) {
        ("53100", _) => FailureKind::DiskFull,
        ("55P03", _) | (_, "40") => FailureKind::Busy,
        (_, "53") => FailureKind::Resources,
        (_, "08" | "57") => FailureKind::Connection,
        (_, "58" | "XX") => FailureKind::IoError,
        _ => FailureKind::Rejected,
    }
}

fn io_failure_kind(error: &std::io::Error) -> FailureKind {
    match error.kind() {
        std::io::ErrorKind::StorageFull => FailureKind::DiskFull,
        std::io::ErrorKind::ConnectionRefused
        | std::io::ErrorKind::ConnectionReset
        | std::io::ErrorKind::ConnectionAborted
        | std::io::ErrorKind::BrokenPipe
        | std::io::ErrorKind::TimedOut
        | std::io::ErrorKind::UnexpectedEof => FailureKind::Connection,
        _ => FailureKind::IoError,
    }
}

/// Wraps a sqlx error as "the store is unavailable" or "the store refused this data".
pub(crate) fn classify(error: sqlx::Error) -> StoreError {
    if failure_kind(&error).is_retriable() {
        StoreError::Unavailable(error)
    } else {
        StoreError::Rejected(error)
    }
}

impl From<StoreError> for RepositoryError {
    fn from(error: StoreError) -> Self {
        RepositoryError::new(error)
    }
}

/// How decisions and audit events are stored, reported at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSeriesShape {
    /// TimescaleDB hypertables, retention policies and the continuous aggregate.
    Timescale,
    /// Native monthly range partitions kept by the gateway.
    NativePartitions,
    /// The embedded SQLite store.
    Embedded,
}

impl TimeSeriesShape {
    pub fn describe(self) -> &'static str {
        match self {
            TimeSeriesShape::Timescale => "TimescaleDB hypertables with retention policies and the decisions_hourly continuous aggregate",
            TimeSeriesShape::NativePartitions => "native monthly range partitions maintained by the gateway",
            TimeSeriesShape::Embedded => "embedded SQLite tables",
        }
    }
}

/// Everything the gateway keeps, by role. Each role is its own trait; `Store` is all of them plus
/// the store's own upkeep, and methods of every role are callable on `dyn Store`. The identity
/// roles are defined by the identity module (so it does not depend on the store).
#[async_trait]
pub trait Store:
    AuditSink
    + CatalogRepository
    + PolicyRepository
    + AdminRepository
    + IdentityLookup
    + DirectoryRepository
    + ExportRepository
    + Send
    + Sync
    + std::fmt::Debug
{
    /// Applies pending migrations (idempotent) and the time-series set-up that cannot run in a
    /// migration transaction.
    async fn migrate(&self) -> Result<TimeSeriesShape, StoreError>;

    /// The revision of each part of the store that gateways keep in memory, moved by triggers on
    /// any change whoever makes it (not by exception usage counts): what the reloader polls.
    async fn revisions(&self) -> Result<Revisions, StoreError>;

    /// A channel that receives the part of the store that changed, for stores that can push
    /// (PostgreSQL `LISTEN aigate_reload`); `None` where polling is the only way.
    async fn change_notifications(&self) -> Option<tokio::sync::mpsc::Receiver<ChangeDomain>> {
        None
    }

    /// Keeps the time-series tables healthy: partitions ahead, expired data dropped, rollup
    /// refreshed. Returns what it did, for the log.
    async fn maintain(&self) -> Result<Vec<String>, StoreError>;

    /// The same database through connections of its own, for the audit writer's thread: a
    /// pool's connections belong to the runtime (and inherit the priority of the thread) that
    /// opened them. `None` where a second pool would not reach the same data (in-memory SQLite).
    async fn dedicated_writer(&self) -> Option<Arc<dyn Store>> {
        None
    }
}

/// Where the audit writer puts decisions, violations and audit events.
#[async_trait]
pub trait AuditSink: Send + Sync {
    /// Writes decisions and their violations in one transaction: all or nothing.
    async fn write_decisions(&self, batch: &[DecisionRecord]) -> Result<(), StoreError>;

    async fn write_audit_events(&self, batch: &[AuditEventRecord]) -> Result<(), StoreError>;
}

/// The AI service catalog and the permanent interception bypass.
#[async_trait]
pub trait CatalogRepository: Send + Sync {
    /// Seeds a store that has no AI services yet with the catalog files (first start); a store
    /// with services is left alone, so an administrator's edits and deletions stand. Returns how
    /// many were inserted.
    async fn import_catalog(&self, catalog: &Catalog) -> Result<usize, StoreError>;

    /// Creates or replaces a service and its `ai_service_signatures` rows.
    async fn save_service(&self, service: &AiService) -> Result<(), StoreError>;

    /// Deletes a service; false when there was none.
    async fn delete_service(&self, id: Uuid) -> Result<bool, StoreError>;

    /// The catalog as the store holds it.
    async fn load_catalog(&self) -> Result<Vec<AiService>, StoreError>;

    /// Hosts in the administrator's permanent interception bypass.
    async fn bypass_hosts(&self) -> Result<Vec<String>, StoreError>;

    /// Adds a host to the permanent bypass (idempotent).
    async fn add_bypass_host(&self, host: &str, reason: &str) -> Result<(), StoreError>;

    /// Removes a host from the permanent bypass; false when it was not there.
    async fn remove_bypass_host(&self, host: &str) -> Result<bool, StoreError>;
}

/// Policies, their versions and conflicts, and exceptions.
#[async_trait]
pub trait PolicyRepository: Send + Sync {
    /// Inserts policies whose `policy_id` is not in the store yet; never overwrites a row an
    /// administrator changed. Returns how many were new.
    async fn import_policies(&self, policies: &[PolicyDefinition]) -> Result<usize, StoreError>;

    /// Every policy row (the engine keeps the active ones).
    async fn load_policies(&self) -> Result<Vec<PolicyDefinition>, StoreError>;

    /// Creates or replaces a policy row and records its content as a `policy_versions` row (once
    /// per version).
    async fn save_policy(&self, write: &PolicyWrite<'_>) -> Result<(), StoreError>;

    /// Replaces the unresolved `policy_conflicts` rows with the conflicts found now.
    async fn record_policy_conflicts(
        &self,
        conflicts: &[crate::policy::Conflict],
    ) -> Result<(), StoreError>;

    /// Exceptions with status `approved` (the only ones that can cancel a match).
    async fn load_exceptions(&self) -> Result<Vec<ExceptionRecord>, StoreError>;

    async fn insert_exception(&self, exception: &NewException) -> Result<(), StoreError>;

    /// Adds uses to `usage_count` and stamps `last_used`.
    async fn add_exception_uses(&self, uses: &[(Uuid, u64)]) -> Result<(), StoreError>;

    /// Decides a pending exception or revokes an approved one; false when no such exception.
    async fn change_exception(
        &self,
        id: Uuid,
        change: &ExceptionChange,
    ) -> Result<bool, StoreError>;
}

/// What the management API and the CLI ask beyond the other roles: tokens and roles, proxy
/// passwords, violation triage, listings and the dashboard's rollups.
#[async_trait]
pub trait AdminRepository: Send + Sync {
    /// The grant of an unrevoked, unexpired token with this SHA-256 (hex).
    async fn admin_token(&self, sha256: &str) -> Result<Option<TokenGrant>, StoreError>;

    /// Stores a token (its SHA-256 only) for a role; `None` when the role does not exist.
    async fn create_admin_token(
        &self,
        name: &str,
        role: &str,
        sha256: &str,
    ) -> Result<Option<Uuid>, StoreError>;

    /// A role's permissions, by name.
    async fn role_permissions(&self, role: &str) -> Result<Option<serde_json::Value>, StoreError>;

    /// Sets the proxy password hash of the user with this email (the email is the user name);
    /// false when there is no such user.
    async fn set_proxy_credential(
        &self,
        email: &str,
        password_hash: &str,
    ) -> Result<bool, StoreError>;

    /// Applies violation triage; false when no such violation.
    async fn update_violation(&self, id: Uuid, patch: &ViolationPatch) -> Result<bool, StoreError>;

    /// Rebuilds the gateway's `shadow_ai_detections` rows from the decisions since a time: per
    /// AI service outside the catalog or not approved, per user, the requests seen.
    async fn refresh_shadow_ai(&self, since: time::OffsetDateTime) -> Result<(), StoreError>;

    /// Rows of a table, newest first, as the API's typed items with their keyset positions.
    async fn list_rows(
        &self,
        listing: Listing,
        query: &ListQuery,
    ) -> Result<Vec<listing::ListedRow>, StoreError>;

    /// Rows of a table as the API's JSON items, newest first.
    async fn list(
        &self,
        listing: Listing,
        query: &ListQuery,
    ) -> Result<Vec<serde_json::Value>, StoreError> {
        Ok(self
            .list_rows(listing, query)
            .await?
            .into_iter()
            .map(|row| row.item)
            .collect())
    }

    /// `decisions_hourly` rows since a time, oldest first, summed over users and services.
    async fn decisions_per_hour(
        &self,
        since: time::OffsetDateTime,
    ) -> Result<Vec<serde_json::Value>, StoreError>;

    /// The most requested AI services since a time: `{name, decisions, denied}`.
    async fn top_services(
        &self,
        since: time::OffsetDateTime,
        limit: i64,
    ) -> Result<Vec<serde_json::Value>, StoreError>;
}

/// What the exporter keeps: the integrations it delivers to, where each stands in each event
/// source, and a log row per batch.
#[async_trait]
pub trait ExportRepository: Send + Sync {
    /// The `integrations` rows of the given types.
    async fn load_integrations(
        &self,
        types: &[&str],
    ) -> Result<Vec<export::Integration>, StoreError>;

    /// Creates or replaces an integration row (its sync and health columns are kept).
    async fn save_integration(&self, integration: &export::Integration) -> Result<(), StoreError>;

    /// Deletes an integration (its cursors and sync logs go with it); false when there was none.
    async fn delete_integration(&self, id: Uuid) -> Result<bool, StoreError>;

    /// The keyset position of the last event of `source` delivered to the integration.
    async fn export_cursor(
        &self,
        integration: Uuid,
        source: export::ExportSource,
    ) -> Result<Option<(String, String)>, StoreError>;

    async fn save_export_cursor(
        &self,
        integration: Uuid,
        source: export::ExportSource,
        cursor: &(String, String),
    ) -> Result<(), StoreError>;

    /// Writes the batch's `integration_sync_logs` row and the integration's `last_sync_*`,
    /// `health_status` and `health_check_at`.
    async fn record_sync(&self, log: &export::SyncLog) -> Result<(), StoreError>;
}

/// Opens the store a `[store] url` names (`sqlite:` or `postgres://`); a new PostgreSQL
/// database gets TimescaleDB when the server has it (`[store] time_series = "auto"`).
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    open_with(url, TimeSeries::Auto).await
}

/// Opens the store with the configured `[store] time_series` choice.
pub async fn open_with(url: &str, time_series: TimeSeries) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        if time_series != TimeSeries::Auto {
            return Err(StoreError::TimeSeries(format!(
                "\"{}\" applies to PostgreSQL only; the SQLite store has one shape (remove the key)",
                time_series.name()
            )));
        }
        Ok(Arc::new(sqlite::SqliteStore::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(
            postgres::PostgresStore::open(url, time_series).await?,
        ))
    } else {
        Err(StoreError::Url {
            url: url.to_owned(),
            message: "expected sqlite:PATH or postgres://...".to_owned(),
        })
    }
}

/// The catalog's signatures as `ai_service_signatures` rows: (type, pattern).
pub(crate) fn signature_rows(service: &crate::catalog::AiService) -> Vec<(&'static str, String)> {
    let signatures = &service.signatures;
    let mut rows = Vec::new();
    rows.extend(signatures.domains.iter().map(|d| ("domain", d.clone())));
    rows.extend(
        signatures
            .api_patterns
            .iter()
            .map(|p| ("api_pattern", p.clone())),
    );
    rows.extend(
        signatures
            .headers
            .iter()
            .map(|h| ("header", format!("{}: {}", h.name, h.pattern))),
    );
    rows.extend(
        signatures
            .ssl_fingerprints
            .iter()
            .map(|f| ("ssl_fingerprint", f.clone())),
    );
    rows
}

/// The URL without its password, for logs and error messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Reads a stored timestamp written either by the gateway (RFC 3339) or by SQL defaults and
/// administrators (`YYYY-MM-DD HH:MM:SS[.fff]`, UTC).
pub(crate) fn parse_timestamp(text: &str) -> Option<time::OffsetDateTime> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(at) = time::OffsetDateTime::parse(text, &Rfc3339) {
        return Some(at);
    }
    let format = time::macros::format_description!(
        version = 2,
        "[year]-[month]-[day][first [T] [ ]][hour]:[minute]:[second][optional [.[subsecond]]]"
    );
    time::PrimitiveDateTime::parse(text, format)
        .ok()
        .map(|at| at.assume_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_follow_each_domain() {
        for (index, domain) in ChangeDomain::ALL.into_iter().enumerate() {
            assert_eq!(domain as usize, index);
        }
        let earlier = Revisions::from_rows([("snapshot".to_owned(), 3), ("bypass".to_owned(), 1)]);
        let later = Revisions::from_rows([
            ("snapshot".to_owned(), 3),
            ("bypass".to_owned(), 2),
            ("future".to_owned(), 9),
        ]);
        assert_eq!(later.get(ChangeDomain::Bypass), 2);
        assert_eq!(later.changed_since(&earlier), vec![ChangeDomain::Bypass]);
    }

    #[test]
    fn storage_failures_are_retriable_and_constraints_are_not() {
        // SQLite primary and extended codes: FULL, IOERR_WRITE (778), BUSY_SNAPSHOT (517).
        assert_eq!(sqlite_failure_kind("13"), FailureKind::DiskFull);
        assert_eq!(sqlite_failure_kind("778"), FailureKind::IoError);
        assert_eq!(sqlite_failure_kind("517"), FailureKind::Busy);
        // CONSTRAINT_PRIMARYKEY (1555), CONSTRAINT_CHECK (275).
        assert_eq!(sqlite_failure_kind("1555"), FailureKind::Rejected);
        assert_eq!(sqlite_failure_kind("275"), FailureKind::Rejected);
        assert_eq!(postgres_failure_kind("53100"), FailureKind::DiskFull);
        assert_eq!(postgres_failure_kind("58030"), FailureKind::IoError);
        assert_eq!(postgres_failure_kind("08006"), FailureKind::Connection);
        assert_eq!(postgres_failure_kind("40P01"), FailureKind::Busy);
        assert_eq!(postgres_failure_kind("23505"), FailureKind::Rejected);
        assert_eq!(postgres_failure_kind("22P02"), FailureKind::Rejected);
        let enospc = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert_eq!(io_failure_kind(&enospc), FailureKind::DiskFull);
        assert!(FailureKind::ALL
            .iter()
            .all(|k| k.is_retriable() == (*k != FailureKind::Rejected)));
    }

    #[test]
    fn every_failure_kind_is_a_preregistered_metric_label() {
        assert_eq!(
            FailureKind::ALL.map(FailureKind::label),
            crate::metrics::AUDIT_STORE_ERROR_KINDS
        );
    }

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact_url("postgres://u:secret@db/x"),
            "postgres://u:***@db/x"
        );
        assert_eq!(redact_url("postgres://u@db/x"), "postgres://u@db/x");
        assert_eq!(
            redact_url("sqlite://data/aigate.db"),
            "sqlite://data/aigate.db"
        );
    }
}

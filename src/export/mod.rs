//! SIEM and webhook export: every violation, violation status change, exception request and
//! decision, and admin change is streamed to the security team's tools.
//!
//! The events are the rows of two ordered sources, `violations` (a decision with a violation)
//! and `audit_events` (everything the admin API changes, including violation triage and
//! exceptions), each read in `(timestamp, id)` keyset order from a cursor the store keeps per
//! integration (`export_cursors`). One task per enabled integration reads a batch, delivers it
//! through its sink (`sink`: webhook, Splunk HEC, syslog over TCP or TLS) with retries,
//! exponential backoff and jitter, and only then advances the cursor: delivery is at-least-once,
//! and a batch that was delivered but whose cursor was not saved (a crash, a shutdown mid-batch,
//! a store outage) is sent again. Every event carries a stable `id` (`violation:<uuid>`,
//! `audit:<uuid>`) for receivers to de-duplicate on. A batch that fails `max_attempts` times is
//! appended to a dead-letter file and passed over. Each attempt leaves an
//! `integration_sync_logs` row and sets the integration's `health_status`.
//!
//! Integrations come from `[[export]]` entries of the config file (kept as `integrations` rows
//! with `config = {"managed_by": "config_file"}` and no secrets, so cursors and sync logs have a
//! row to hang on) and from `integrations` rows of type `siem` or `communication` whose
//! `provider` is a sink kind, which the supervisor re-reads so API changes take effect.
//!
//! Nothing here runs on the request path: the exporter only reads what the audit writer stored.

mod event;
mod integration;
mod sink;
mod worker;

pub use crate::config::export::{
    validate_entries, ExportConfig, MessageFormat, Secret, SettingsError, SinkKind,
};
pub use event::{webhook_signature, Event};
pub use integration::from_integration;
pub use worker::{file_integration, run, MANAGED_BY_CONFIG_FILE};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("receiver unreachable: {0}")]
    Connect(String),
    #[error("receiver answered HTTP {0}")]
    Refused(u16),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("encoding the batch: {0}")]
    Encode(String),
    #[error("dead-letter file {path}: {source}")]
    DeadLetter {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

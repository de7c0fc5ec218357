//! What the exporter asks of the store: `integrations` rows, each integration's cursor in each
//! event source, and the `integration_sync_logs` row of each delivered batch.

use time::OffsetDateTime;
use uuid::Uuid;

/// An `integrations` row.
#[derive(Debug, Clone, PartialEq)]
pub struct Integration {
    pub integration_id: Uuid,
    pub name: String,
    /// `siem` or `communication` for the exporter's rows.
    pub integration_type: String,
    /// The sink: `webhook`, `splunk_hec` or `syslog`.
    pub provider: String,
    /// Provider settings (`url`, `token`, `address`, `format`, ...), secrets included.
    pub config: serde_json::Value,
    pub enabled: bool,
    pub webhook_url: Option<String>,
    pub webhook_secret: Option<String>,
    pub health_status: Option<String>,
    pub health_check_at: Option<OffsetDateTime>,
    pub last_sync_at: Option<OffsetDateTime>,
    pub last_sync_status: Option<String>,
    pub last_sync_error: Option<String>,
}

/// One delivered (or failed) batch: an `integration_sync_logs` row, and the integration's
/// `last_sync_*` and health columns.
#[derive(Debug, Clone)]
pub struct SyncLog {
    pub integration_id: Uuid,
    pub started_at: OffsetDateTime,
    pub completed_at: OffsetDateTime,
    /// `success`, `failure` or `partial`.
    pub status: &'static str,
    pub fetched: i32,
    pub delivered: i32,
    pub failed: i32,
    pub error: Option<String>,
    /// `healthy`, `degraded` or `unhealthy`.
    pub health: &'static str,
}

/// An event source the exporter reads in keyset order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportSource {
    Violations,
    AuditEvents,
}

impl ExportSource {
    pub const ALL: [ExportSource; 2] = [ExportSource::Violations, ExportSource::AuditEvents];

    pub fn as_str(self) -> &'static str {
        match self {
            ExportSource::Violations => "violations",
            ExportSource::AuditEvents => "audit_events",
        }
    }

    pub fn listing(self) -> super::admin::Listing {
        match self {
            ExportSource::Violations => super::admin::Listing::Violations,
            ExportSource::AuditEvents => super::admin::Listing::AuditEvents,
        }
    }
}

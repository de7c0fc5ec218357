//! What the management API asks of the store: token grants, policy and exception lifecycle
//! writes, violation triage, and keyset-paginated listings returned as JSON rows.

use time::OffsetDateTime;
use uuid::Uuid;

use crate::policy::PolicyDefinition;

/// A bearer token's role and whom it acts for.
#[derive(Debug, Clone)]
pub struct TokenGrant {
    pub token_id: Uuid,
    pub name: String,
    pub role: String,
    /// `{resource: [read, write]}` as in `roles.permissions`.
    pub permissions: serde_json::Value,
    /// The user the token acts for; the system user when `None`.
    pub user_id: Option<Uuid>,
}

/// The tables the API lists, each newest first by its time column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    Decisions,
    Violations,
    AuditEvents,
    Exceptions,
    Policies,
}

impl Listing {
    pub fn table(self) -> &'static str {
        match self {
            Listing::Decisions => "decisions",
            Listing::Violations => "violations",
            Listing::AuditEvents => "audit_events",
            Listing::Exceptions => "exceptions",
            Listing::Policies => "policies",
        }
    }

    pub fn id_column(self) -> &'static str {
        match self {
            Listing::Decisions => "decision_id",
            Listing::Violations => "violation_id",
            Listing::AuditEvents => "event_id",
            Listing::Exceptions => "exception_id",
            Listing::Policies => "policy_id",
        }
    }

    pub fn time_column(self) -> &'static str {
        match self {
            Listing::Decisions | Listing::Violations | Listing::AuditEvents => "timestamp",
            Listing::Exceptions => "requested_at",
            Listing::Policies => "updated_at",
        }
    }

    /// Whether the time column is `TIMESTAMPTZ` on PostgreSQL (else `TIMESTAMP`, UTC).
    pub fn time_has_zone(self) -> bool {
        matches!(
            self,
            Listing::Decisions | Listing::Violations | Listing::AuditEvents
        )
    }
}

/// Filters (column = value, columns from the API's whitelist only), a time window and a keyset
/// cursor: rows strictly after `(time, id)` in newest-first order.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub equals: Vec<(&'static str, String)>,
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    pub after: Option<(String, String)>,
    pub limit: i64,
}

/// A policy created or changed through the API.
#[derive(Debug, Clone)]
pub struct PolicyWrite<'a> {
    pub definition: &'a PolicyDefinition,
    pub actor: Uuid,
    pub change_summary: String,
    /// Stamp `approved_by`/`approved_at` (an activation).
    pub approve: bool,
}

/// An exception decision: `approved`, `denied` or `revoked`.
#[derive(Debug, Clone)]
pub struct ExceptionChange {
    pub status: &'static str,
    pub actor: Uuid,
    pub reason: Option<String>,
}

/// Violation triage; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ViolationPatch {
    pub status: Option<String>,
    pub assigned_to: Option<Uuid>,
    pub notes: Option<String>,
}

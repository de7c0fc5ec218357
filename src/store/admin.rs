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
    Services,
    PolicyConflicts,
    ShadowAi,
}

impl Listing {
    pub fn table(self) -> &'static str {
        match self {
            Listing::Decisions => "decisions",
            Listing::Violations => "violations",
            Listing::AuditEvents => "audit_events",
            Listing::Exceptions => "exceptions",
            Listing::Policies => "policies",
            Listing::Services => "ai_services",
            Listing::PolicyConflicts => "policy_conflicts",
            Listing::ShadowAi => "shadow_ai_detections",
        }
    }

    pub fn id_column(self) -> &'static str {
        match self {
            Listing::Decisions => "decision_id",
            Listing::Violations => "violation_id",
            Listing::AuditEvents => "event_id",
            Listing::Exceptions => "exception_id",
            Listing::Policies => "policy_id",
            Listing::Services => "service_id",
            Listing::PolicyConflicts => "conflict_id",
            Listing::ShadowAi => "detection_id",
        }
    }

    pub fn time_column(self) -> &'static str {
        match self {
            Listing::Decisions | Listing::Violations | Listing::AuditEvents => "timestamp",
            Listing::Exceptions => "requested_at",
            Listing::Policies | Listing::Services => "updated_at",
            Listing::PolicyConflicts => "detected_at",
            Listing::ShadowAi => "last_access",
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
/// cursor: rows strictly after `(time, id)` in newest-first order (or oldest-first).
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub equals: Vec<(&'static str, String)>,
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    pub after: Option<(String, String)>,
    pub limit: i64,
    /// Oldest first, `after` meaning later than (the exporter's reading order).
    pub oldest_first: bool,
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

/// An `ai_services` row (as JSON, either store) back into a catalog service. Rows stored before
/// slugs existed get one from their name.
pub fn service_from_row(
    row: serde_json::Value,
) -> Result<crate::catalog::AiService, super::StoreError> {
    let text = |key: &str| row[key].as_str().map(str::to_owned);
    let list = |key: &str| -> serde_json::Value {
        match &row[key] {
            serde_json::Value::Array(items) => serde_json::Value::Array(items.clone()),
            _ => serde_json::Value::Array(Vec::new()),
        }
    };
    let id = text("service_id").unwrap_or_default();
    let slug = text("slug").unwrap_or_else(|| {
        text("name")
            .unwrap_or_default()
            .to_lowercase()
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|part| !part.is_empty())
            .collect::<Vec<_>>()
            .join("-")
    });
    let service = serde_json::json!({
        "service_id": id,
        "slug": slug,
        "name": row["name"],
        "vendor": row["vendor"],
        "service_type": row["service_type"],
        "signatures": row["signatures"],
        "risk_tier": row["risk_tier"],
        "risk_score": row["risk_score"],
        "risk_factors": row["risk_factors"],
        "approval_status": row["approval_status"],
        "approved_for": list("approved_for"),
        "prohibited_for": list("prohibited_for"),
        "certifications": list("certifications"),
        "data_handling": row["data_handling"],
        "data_regions": list("data_regions"),
        "capabilities": list("capabilities"),
        "pricing_model": row["pricing_model"],
        "documentation_url": row["documentation_url"],
        "privacy_policy_url": row["privacy_policy_url"],
        "terms_of_service_url": row["terms_of_service_url"],
        "tenant_restriction_headers": list("tenant_restriction_headers"),
    });
    serde_json::from_value(service).map_err(|error| super::StoreError::Corrupt {
        table: "ai_services",
        id,
        message: error.to_string(),
    })
}

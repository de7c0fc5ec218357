//! What the gateway records: one `DecisionRecord` per request (with its violation when the
//! request was denied or sent to review) and `AuditEventRecord`s for everything else worth an
//! audit trail. Field names follow the data model's columns. Nothing here may hold prompt text
//! or an unredacted detected value.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// The user id recorded when a request could not be attributed to anyone (the policy input
/// names the same id).
pub use crate::policy::facts::ANONYMOUS_USER;

/// Stands in for `policy_id` on violations raised by the built-in catalog-approval rule, which
/// is not a row of `policies` (the column is NOT NULL).
pub const BUILTIN_APPROVAL_POLICY: Uuid =
    Uuid::from_u128(0x0000_0000_0000_4000_8000_a16a_7e00_0001);
pub const BUILTIN_APPROVAL_POLICY_NAME: &str = "Catalog approval status (built-in)";

/// A JSON column serialized once, when the decision is made: the stores and the journal write
/// it verbatim instead of walking a JSON tree again. Always JSON: it is serde's output, or that
/// of a writer in this crate tested against serde's (see [`JsonText::written`]).
#[derive(Debug, Clone)]
pub struct JsonText(Box<str>);

/// Only the spill journal serializes records: the text is read back into a raw JSON value there,
/// off the request path, so that a record's JSON embeds the column as JSON, not as a string.
impl Serialize for JsonText {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw: &serde_json::value::RawValue =
            serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

/// Read back through a JSON tree: a raw value cannot be taken from the buffered input serde
/// gives the fields of an internally tagged enum (`AuditRecord` in the spill journal).
impl<'de> Deserialize<'de> for JsonText {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        JsonText::of(&value).ok_or_else(|| serde::de::Error::custom("unserializable JSON value"))
    }
}

impl JsonText {
    /// `None` only when `value` cannot be serialized (a map with non-string keys).
    pub fn of<T: Serialize + ?Sized>(value: &T) -> Option<JsonText> {
        serde_json::to_string(value)
            .ok()
            .map(|json| JsonText(json.into_boxed_str()))
    }

    /// JSON text written by hand on the request path, where validating it again would cost more
    /// than writing it. The writer must have a test comparing its output with serde's.
    pub(crate) fn written(json: String) -> JsonText {
        debug_assert!(
            serde_json::from_str::<serde::de::IgnoredAny>(&json).is_ok(),
            "not JSON: {json}"
        );
        JsonText(json.into_boxed_str())
    }

    pub fn get(&self) -> &str {
        &self.0
    }
}

impl PartialEq for JsonText {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    pub decision_id: Uuid,
    pub request_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
    pub user_id: Uuid,
    pub user_email: Option<String>,
    pub user_department: Option<String>,
    pub action: String,
    pub resource_type: String,
    pub resource_id: Option<Uuid>,
    pub resource_name: Option<String>,
    /// Scheme, host and path only: query strings can carry secrets.
    pub resource_url: Option<String>,
    /// `ALLOW`, `DENY` or `REVIEW`.
    pub decision: String,
    pub reason: String,
    pub confidence: Option<f64>,
    pub risk_score: Option<i32>,
    pub risk_factors: Option<serde_json::Value>,
    /// `[{policy_id, policy_name, priority, matched, exception_id}]`.
    pub policies_evaluated: JsonText,
    pub primary_policy_id: Option<Uuid>,
    pub source: Option<String>,
    pub device_id: Option<Uuid>,
    pub ip_address: Option<IpAddr>,
    pub user_agent: Option<String>,
    pub content_classified: bool,
    pub detected_entities: Option<serde_json::Value>,
    pub data_classification: Vec<String>,
    pub evaluation_duration_ms: Option<i32>,
    pub explanation: Option<JsonText>,
    /// An explanation still to be rendered into `explanation` by the writer
    /// ([`DecisionRecord::settle`]); never stored or spilled itself.
    #[serde(skip)]
    pub pending_explanation: PendingExplanation,
    /// Written with the decision, in the same transaction.
    pub violation: Option<ViolationRecord>,
}

impl DecisionRecord {
    /// Renders a pending explanation into `explanation`. The writer settles every record before
    /// it is stored or spilled, so only the writer's thread pays for the rendering.
    pub fn settle(&mut self) {
        if let Some(late) = self.pending_explanation.0.take() {
            self.explanation = late.render();
        }
    }
}

/// An explanation whose JSON is written later, off the request path: a stop's explanation holds
/// the whole policy input, and serializing it was over a quarter of a stopped request's decision
/// cost.
pub trait LateExplanation: Send + Sync {
    fn render(&self) -> Option<JsonText>;
}

/// See [`DecisionRecord::pending_explanation`].
#[derive(Clone, Default)]
pub struct PendingExplanation(Option<Arc<dyn LateExplanation>>);

impl PendingExplanation {
    pub fn new(late: impl LateExplanation + 'static) -> Self {
        PendingExplanation(Some(Arc::new(late)))
    }

    pub fn is_pending(&self) -> bool {
        self.0.is_some()
    }
}

impl fmt::Debug for PendingExplanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_pending() { "pending" } else { "none" })
    }
}

/// Records compare by what they store: equal when both are pending on the same rendering, or
/// neither is pending.
impl PartialEq for PendingExplanation {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViolationRecord {
    pub violation_id: Uuid,
    pub violation_type: String,
    pub policy_id: Uuid,
    pub policy_name: Option<String>,
    /// `low`, `medium`, `high` or `critical`.
    pub severity: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEventRecord {
    pub event_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
    pub event_type: String,
    /// `info`, `warning`, `error` or `critical`.
    pub severity: String,
    pub actor_id: Option<Uuid>,
    pub actor_email: Option<String>,
    pub actor_type: Option<String>,
    pub target_type: Option<String>,
    pub target_id: Option<Uuid>,
    pub target_name: Option<String>,
    pub action: String,
    pub result: Option<String>,
    pub decision_id: Option<Uuid>,
    pub source: Option<String>,
    pub ip_address: Option<IpAddr>,
    pub event_data: Option<serde_json::Value>,
    pub changes: Option<serde_json::Value>,
}

impl AuditEventRecord {
    /// A successful event about an intercepted (or bypassed) host; callers fill in the actor,
    /// source and details.
    pub fn about_host(event_type: &str, severity: &str, action: &str, host: &str) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            timestamp: OffsetDateTime::now_utc(),
            event_type: event_type.to_owned(),
            severity: severity.to_owned(),
            actor_id: None,
            actor_email: None,
            actor_type: None,
            target_type: Some("host".to_owned()),
            target_id: None,
            target_name: Some(host.to_owned()),
            action: action.to_owned(),
            result: Some("success".to_owned()),
            decision_id: None,
            source: None,
            ip_address: None,
            event_data: None,
            changes: None,
        }
    }
}

/// One unit of work for the writer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AuditRecord {
    Decision(Box<DecisionRecord>),
    Event(Box<AuditEventRecord>),
}

impl AuditRecord {
    /// See [`DecisionRecord::settle`].
    pub fn settle(&mut self) {
        if let AuditRecord::Decision(decision) = self {
            decision.settle();
        }
    }

    /// When the decision was taken or the event happened.
    pub fn timestamp(&self) -> OffsetDateTime {
        match self {
            AuditRecord::Decision(decision) => decision.timestamp,
            AuditRecord::Event(event) => event.timestamp,
        }
    }
}

/// Maps a risk score (0-100) to the severity scale violations use.
pub fn severity_for_risk(risk_score: u8) -> &'static str {
    match risk_score {
        0..=29 => "low",
        30..=59 => "medium",
        60..=84 => "high",
        _ => "critical",
    }
}

//! Approved exceptions: a user, department or group excused from one policy or one service,
//! for a time, a number of uses and (optionally) only some data types.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::Digest;

use time::OffsetDateTime;
use uuid::Uuid;

use super::{Decision, Subject};

/// Who is on the other end of a request, for exceptions scoped to one client: an anonymous
/// user's justification must not lift the review for every other anonymous user.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientSignals<'a> {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<&'a str>,
}

impl ClientSignals<'_> {
    /// A short, stable name for the client's software (`conditions.devices`): a digest of its
    /// User-Agent, so another browser or tool behind the same address is another device. Not
    /// the JA4: a resumed TLS session adds extensions and changes it between two connections
    /// of one browser. Never the raw value, which is not the exception's business.
    pub fn device_key(&self) -> String {
        let digest = sha2::Sha256::digest(self.user_agent.unwrap_or("").as_bytes());
        hex::encode(&digest[..12])
    }
}

/// An `exceptions` row as the store returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExceptionRecord {
    pub exception_id: Uuid,
    pub status: String,
    pub user_id: Option<Uuid>,
    pub department_id: Option<Uuid>,
    pub group_id: Option<Uuid>,
    pub policy_id: Option<Uuid>,
    pub ai_service_id: Option<Uuid>,
    pub conditions: Option<serde_json::Value>,
    pub effective_from: Option<OffsetDateTime>,
    pub effective_until: Option<OffsetDateTime>,
    pub usage_count: i64,
}

/// A new exception: a REVIEW justification or an administrator's grant.
#[derive(Debug, Clone)]
pub struct NewException {
    pub exception_id: Uuid,
    pub exception_type: &'static str,
    pub reason: String,
    pub justification: String,
    pub user_id: Uuid,
    pub ai_service_id: Option<Uuid>,
    pub policy_id: Option<Uuid>,
    pub conditions: Option<serde_json::Value>,
    pub status: &'static str,
    pub requested_by: Uuid,
    pub effective_from: OffsetDateTime,
    pub effective_until: Option<OffsetDateTime>,
}

impl From<ExceptionRecord> for ExceptionRule {
    fn from(record: ExceptionRecord) -> Self {
        let conditions = record.conditions.unwrap_or_default();
        ExceptionRule {
            exception_id: record.exception_id,
            status: record.status,
            user_id: record.user_id,
            department_id: record.department_id.map(|d| d.to_string()),
            group_id: record.group_id.map(|g| g.to_string()),
            policy_id: record.policy_id,
            ai_service_id: record.ai_service_id,
            effective_from: record.effective_from,
            effective_until: record.effective_until,
            max_uses: conditions
                .get("max_uses")
                .and_then(serde_json::Value::as_u64),
            data_types: conditions
                .get("data_types")
                .and_then(serde_json::Value::as_array)
                .map(|types| {
                    types
                        .iter()
                        .filter_map(|t| t.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            hosts: conditions
                .get("hosts")
                .and_then(serde_json::Value::as_array)
                .map(|hosts| {
                    hosts
                        .iter()
                        .filter_map(|h| h.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            decisions: conditions
                .get("decisions")
                .and_then(|d| serde_json::from_value(d.clone()).ok())
                .unwrap_or_default(),
            clients: strings(&conditions, "clients")
                .iter()
                .filter_map(|c| c.parse().ok())
                .collect(),
            devices: strings(&conditions, "devices"),
            uses: AtomicU64::new(u64::try_from(record.usage_count).unwrap_or(0)),
            unflushed: AtomicU64::new(0),
        }
    }
}

fn strings(conditions: &serde_json::Value, key: &str) -> Vec<String> {
    conditions
        .get(key)
        .and_then(serde_json::Value::as_array)
        .map(|values| {
            values
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// One `exceptions` row, as the engine needs it.
#[derive(Debug)]
pub struct ExceptionRule {
    pub exception_id: Uuid,
    pub status: String,
    pub user_id: Option<Uuid>,
    pub department_id: Option<String>,
    pub group_id: Option<String>,
    pub policy_id: Option<Uuid>,
    pub ai_service_id: Option<Uuid>,
    pub effective_from: Option<OffsetDateTime>,
    pub effective_until: Option<OffsetDateTime>,
    /// `conditions.max_uses`.
    pub max_uses: Option<u64>,
    /// `conditions.data_types`: the entity types or classifications the exception allows;
    /// content with anything else is not covered. Empty: any content.
    pub data_types: Vec<String>,
    /// `conditions.hosts`: only requests to these hosts (how an AI service outside the catalog
    /// is named). Empty: any host.
    pub hosts: Vec<String>,
    /// `conditions.decisions`: the outcomes it may cancel (`["review"]` for a user's own
    /// justification, so it never lifts a DENY). Empty: any.
    pub decisions: Vec<Decision>,
    /// `conditions.clients`: only requests from these addresses. Empty: any.
    pub clients: Vec<IpAddr>,
    /// `conditions.devices`: only requests from these devices ([`ClientSignals::device_key`]).
    /// Empty: any.
    pub devices: Vec<String>,
    /// Uses so far: the stored count plus this process's uses since the last load.
    pub uses: AtomicU64,
    /// Uses not yet written back to the store.
    pub unflushed: AtomicU64,
}

impl ExceptionRule {
    fn covers(
        &self,
        subject: &Subject<'_>,
        policy_id: Option<Uuid>,
        decision: Decision,
        now: OffsetDateTime,
    ) -> bool {
        let who = self.user_id == Some(subject.user_id)
            || (self.department_id.is_some()
                && self.department_id.as_deref() == subject.department)
            || self
                .group_id
                .as_ref()
                .is_some_and(|g| subject.groups.iter().any(|s| s == g));
        let same_service = self.ai_service_id.is_some() && self.ai_service_id == subject.service_id;
        // Naming a policy excuses that policy only (on one service, if one is named too); naming
        // only a service excuses every policy on it and its default decision.
        let what = match (self.policy_id, policy_id) {
            (Some(mine), Some(matched)) => {
                mine == matched && (self.ai_service_id.is_none() || same_service)
            }
            (Some(_), None) => false,
            (None, _) => same_service,
        };
        let outcome = self.decisions.is_empty() || self.decisions.contains(&decision);
        let when = self.effective_from.is_none_or(|from| from <= now)
            && self.effective_until.is_none_or(|until| now < until);
        let data = self.data_types.is_empty()
            || subject.data_types.iter().all(|t| {
                self.data_types
                    .iter()
                    .any(|allowed| allowed.eq_ignore_ascii_case(t))
            });
        let host = self.hosts.is_empty()
            || subject.host.is_some_and(|h| {
                self.hosts
                    .iter()
                    .any(|allowed| allowed.eq_ignore_ascii_case(h))
            });
        self.status == "approved"
            && who
            && what
            && outcome
            && when
            && data
            && host
            && self.covers_client(subject.client.as_ref())
    }

    /// A client-scoped exception covers only requests that show the same address and device;
    /// a request without client signals is not covered (fail closed).
    fn covers_client(&self, client: Option<&ClientSignals<'_>>) -> bool {
        if self.clients.is_empty() && self.devices.is_empty() {
            return true;
        }
        let Some(client) = client else {
            return false;
        };
        let address =
            self.clients.is_empty() || client.ip.is_some_and(|ip| self.clients.contains(&ip));
        address && (self.devices.is_empty() || self.devices.contains(&client.device_key()))
    }

    /// Takes one use if any is left.
    fn take_use(&self) -> bool {
        let taken = match self.max_uses {
            None => {
                self.uses.fetch_add(1, Ordering::Relaxed);
                true
            }
            Some(max) => self
                .uses
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    (n < max).then_some(n + 1)
                })
                .is_ok(),
        };
        if taken {
            self.unflushed.fetch_add(1, Ordering::Relaxed);
        }
        taken
    }
}

/// The exceptions of a snapshot.
#[derive(Debug, Default)]
pub struct Exceptions {
    rules: Vec<ExceptionRule>,
}

impl Exceptions {
    pub fn new(rules: Vec<ExceptionRule>) -> Self {
        Exceptions { rules }
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The exception that cancels `policy_id` (or, with `None`, the service's default decision)
    /// for `subject` now, consuming one use.
    pub fn covering(
        &self,
        subject: &Subject<'_>,
        policy_id: Option<Uuid>,
        decision: Decision,
        now: OffsetDateTime,
    ) -> Option<Uuid> {
        self.rules
            .iter()
            .find(|rule| rule.covers(subject, policy_id, decision, now) && rule.take_use())
            .map(|rule| rule.exception_id)
    }
}

impl Exceptions {
    /// Uses taken since the last call, per exception, for the store's `usage_count`.
    pub fn drain_uses(&self) -> Vec<(Uuid, u64)> {
        self.rules
            .iter()
            .filter_map(|rule| {
                let n = rule.unflushed.swap(0, Ordering::Relaxed);
                (n > 0).then_some((rule.exception_id, n))
            })
            .collect()
    }
}

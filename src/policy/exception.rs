//! Approved exceptions: a user, department or group excused from one policy or one service,
//! for a time, a number of uses and (optionally) only some data types.

use std::sync::atomic::{AtomicU64, Ordering};

use time::OffsetDateTime;
use uuid::Uuid;

use super::Subject;

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
    /// Uses so far: the stored count plus this process's uses since the last load.
    pub uses: AtomicU64,
}

impl ExceptionRule {
    fn covers(&self, subject: &Subject<'_>, policy_id: Uuid, now: OffsetDateTime) -> bool {
        let who = self.user_id == Some(subject.user_id)
            || (self.department_id.is_some()
                && self.department_id.as_deref() == subject.department)
            || self
                .group_id
                .as_ref()
                .is_some_and(|g| subject.groups.iter().any(|s| s == g));
        let what = self.policy_id == Some(policy_id)
            || (self.ai_service_id.is_some() && self.ai_service_id == subject.service_id);
        let when = self.effective_from.is_none_or(|from| from <= now)
            && self.effective_until.is_none_or(|until| now < until);
        let data = self.data_types.is_empty()
            || subject.data_types.iter().all(|t| {
                self.data_types
                    .iter()
                    .any(|allowed| allowed.eq_ignore_ascii_case(t))
            });
        self.status == "approved" && who && what && when && data
    }

    /// Takes one use if any is left.
    fn take_use(&self) -> bool {
        match self.max_uses {
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
        }
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

    /// The exception that cancels `policy_id` for `subject` now, consuming one use.
    pub fn covering(
        &self,
        subject: &Subject<'_>,
        policy_id: Uuid,
        now: OffsetDateTime,
    ) -> Option<Uuid> {
        self.rules
            .iter()
            .find(|rule| rule.covers(subject, policy_id, now) && rule.take_use())
            .map(|rule| rule.exception_id)
    }
}

//! What the gateway does with a decided request: a plain function of the verdict, the review
//! setting and the buffered body, so every outcome can be tested without a session.
//!
//! Body replay: pingora sends the request head upstream before `request_body_filter` runs, so the
//! body is read in `request_filter`. Up to 64 KiB pingora's retry buffer replays it; a complete
//! body beyond that is re-issued as a subrequest carrying the buffered bytes; a body beyond the
//! inspection cap is judged on its prefix and the prefix is put back in front of the rest in
//! `request_body_filter`.

use bytes::Bytes;

use crate::config::ReviewAction;
use crate::pipeline::{Decision, Verdict};

/// pingora's retry buffer holds at most this much request body (`BODY_BUF_LIMIT`).
pub const RETRY_BUFFER_LIMIT: usize = 64 * 1024;

#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Stopped: the stop page, offering a justification when `coach` (a REVIEW).
    Stop { coach: bool },
    /// Allowed: resolved, the policies' headers injected, then delivered so.
    Allow(Delivery),
}

/// How an allowed request's body reaches the upstream.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Not at all: a policy requires masking and this body cannot be masked.
    Refuse { status: u16, message: &'static str },
    /// Masked in place (same length), re-issued as a subrequest carrying the masked bytes.
    Masked(Bytes),
    /// As received, replayed by pingora's retry buffer.
    Replay,
    /// As received, beyond the retry buffer: re-issued as a subrequest carrying it.
    Subrequest,
    /// Beyond the inspection cap: the judged prefix is put back in front of the unread rest.
    PrefixThenRest,
}

/// The plan for a request with `verdict` (`None`: forwarded undecided, plain traffic to a host
/// that is no AI service) whose buffered body is `body`, `complete` when nothing is left unread.
pub fn plan(
    verdict: Option<&Verdict>,
    review_action: ReviewAction,
    body: &Bytes,
    complete: bool,
) -> Plan {
    let decision = verdict.map_or(Decision::Allow, |v| v.decision);
    let review_forwarded =
        decision == Decision::Review && review_action == ReviewAction::AllowAndFlag;
    if decision != Decision::Allow && !review_forwarded {
        return Plan::Stop {
            coach: decision == Decision::Review,
        };
    }
    // A review forwarded with a flag carries no obligation to mask: only an allow does.
    let masking = verdict.filter(|v| v.outcome.redact && decision == Decision::Allow);
    if let Some(delivery) = masking.and_then(|v| masked(v, body, complete)) {
        return Plan::Allow(delivery);
    }
    Plan::Allow(if !complete {
        Delivery::PrefixThenRest
    } else if body.len() > RETRY_BUFFER_LIMIT {
        Delivery::Subrequest
    } else {
        Delivery::Replay
    })
}

/// The delivery a masking obligation imposes; `None` when the body holds nothing to mask.
fn masked(verdict: &Verdict, body: &Bytes, complete: bool) -> Option<Delivery> {
    if !complete {
        // The unread rest of the body cannot be masked, so it must not be sent.
        return Some(Delivery::Refuse {
            status: 413,
            message: "Payload too large: a policy requires sensitive data to be masked, and this body exceeds what the gateway can inspect.\n",
        });
    }
    let inspection = verdict.inspection.as_deref();
    let findings = inspection.is_some_and(|i| !i.entities.is_empty());
    // Masks keep the body's length: pingora replays the client's original head.
    match inspection.and_then(|i| i.masked_in_place(body)) {
        Some(masked) => Some(Delivery::Masked(Bytes::from(masked))),
        None if findings => Some(Delivery::Refuse {
            status: 422,
            message: "A policy requires sensitive data to be masked, and this body cannot be rewritten (compressed, or the data is escaped); remove the sensitive data and retry.\n",
        }),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use uuid::Uuid;

    use super::*;
    use crate::catalog::Fingerprint;
    use crate::inspect::Inspector;
    use crate::policy::Outcome;

    const PERSONAL: &[u8] =
        br#"{"messages":[{"role":"user","content":"Reply to jane.doe@example.com about 123-45-6789"}]}"#;

    /// A verdict on `body` as the pipeline makes it, with the deciding policy's `redact`.
    fn verdict(decision: Decision, redact: bool, body: &[u8]) -> Verdict {
        let inspector = Inspector::new(&[], 0.5, 1 << 20).unwrap();
        let inspection = (!body.is_empty())
            .then(|| Box::new(inspector.inspect(Some("application/json"), None, body, false)));
        let outcome = Outcome {
            decision,
            reason: String::new(),
            primary: None,
            evaluated: Vec::new(),
            redact,
            inject_headers: Vec::new(),
            exceptions_used: Vec::new(),
            policy_error: false,
            violation_type: None,
            default_for: None,
        };
        Verdict {
            decision_id: Uuid::now_v7(),
            decision,
            reason: String::new(),
            service: None,
            fingerprint: Fingerprint::default(),
            inspection,
            outcome: Arc::new(outcome),
            input: regorus::Value::Null,
            body_truncated: false,
        }
    }

    fn plan_of(verdict: &Verdict, action: ReviewAction, body: &[u8], complete: bool) -> Plan {
        plan(
            Some(verdict),
            action,
            &Bytes::copy_from_slice(body),
            complete,
        )
    }

    #[test]
    fn a_denial_is_stopped_without_a_justification_offer() {
        let denied = verdict(Decision::Deny, false, b"{}");
        for action in [ReviewAction::Coach, ReviewAction::AllowAndFlag] {
            assert_eq!(
                plan_of(&denied, action, b"{}", true),
                Plan::Stop { coach: false }
            );
        }
    }

    #[test]
    fn a_review_is_coached_or_forwarded_with_a_flag() {
        let review = verdict(Decision::Review, true, PERSONAL);
        assert_eq!(
            plan_of(&review, ReviewAction::Coach, PERSONAL, true),
            Plan::Stop { coach: true }
        );
        // Forwarded as it is: a flagged review carries no masking obligation.
        assert_eq!(
            plan_of(&review, ReviewAction::AllowAndFlag, PERSONAL, true),
            Plan::Allow(Delivery::Replay)
        );
    }

    #[test]
    fn an_allowed_body_is_delivered_by_its_size() {
        let small = Bytes::from_static(b"{}");
        let large = Bytes::from(vec![b' '; RETRY_BUFFER_LIMIT + 1]);
        let at_limit = Bytes::from(vec![b' '; RETRY_BUFFER_LIMIT]);
        let allowed = verdict(Decision::Allow, false, b"{}");
        for verdict in [None, Some(&allowed)] {
            let plan = |body: &Bytes, complete| plan(verdict, ReviewAction::Coach, body, complete);
            assert_eq!(plan(&small, true), Plan::Allow(Delivery::Replay));
            assert_eq!(plan(&at_limit, true), Plan::Allow(Delivery::Replay));
            assert_eq!(plan(&large, true), Plan::Allow(Delivery::Subrequest));
            assert_eq!(plan(&large, false), Plan::Allow(Delivery::PrefixThenRest));
        }
    }

    #[test]
    fn an_allowed_body_without_a_masking_obligation_goes_unmasked() {
        let allowed = verdict(Decision::Allow, false, PERSONAL);
        assert!(!allowed.inspection.as_ref().unwrap().entities.is_empty());
        assert_eq!(
            plan_of(&allowed, ReviewAction::Coach, PERSONAL, true),
            Plan::Allow(Delivery::Replay)
        );
    }

    #[test]
    fn a_masking_obligation_masks_the_findings_in_place() {
        let allowed = verdict(Decision::Allow, true, PERSONAL);
        let Plan::Allow(Delivery::Masked(masked)) =
            plan_of(&allowed, ReviewAction::Coach, PERSONAL, true)
        else {
            panic!("not masked");
        };
        assert_eq!(masked.len(), PERSONAL.len());
        let masked = String::from_utf8(masked.to_vec()).unwrap();
        assert!(!masked.contains("jane.doe@example.com"), "{masked}");
        assert!(!masked.contains("123-45-6789"), "{masked}");
        assert!(masked.starts_with(r#"{"messages":[{"role":"user","content":"Reply to "#));
    }

    #[test]
    fn a_body_that_cannot_be_masked_is_refused() {
        // Past the inspection cap: the unread rest cannot be masked.
        let allowed = verdict(Decision::Allow, true, PERSONAL);
        let Plan::Allow(Delivery::Refuse { status, .. }) =
            plan_of(&allowed, ReviewAction::Coach, PERSONAL, false)
        else {
            panic!("an incomplete body is not refused");
        };
        assert_eq!(status, 413);
        // A finding escaped in the JSON text is not found byte for byte in the body.
        let escaped =
            br#"{"messages":[{"role":"user","content":"Reply to jane.doe\u0040example.com"}]}"#;
        let allowed = verdict(Decision::Allow, true, escaped);
        assert!(!allowed.inspection.as_ref().unwrap().entities.is_empty());
        let Plan::Allow(Delivery::Refuse { status, .. }) =
            plan_of(&allowed, ReviewAction::Coach, escaped, true)
        else {
            panic!("an escaped finding is not refused");
        };
        assert_eq!(status, 422);
    }

    #[test]
    fn a_masking_obligation_without_a_body_delivers_as_usual() {
        let allowed = verdict(Decision::Allow, true, b"");
        assert_eq!(
            plan(Some(&allowed), ReviewAction::Coach, &Bytes::new(), true),
            Plan::Allow(Delivery::Replay)
        );
    }
}

//! The audit record of one decided request, and the explanation stored with it.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    severity_for_risk, DecisionRecord, JsonText, LateExplanation, PendingExplanation,
    ViolationRecord, ANONYMOUS_USER, BUILTIN_APPROVAL_POLICY, BUILTIN_APPROVAL_POLICY_NAME,
};
use crate::catalog::AiService;
use crate::inspect::{DataClass, Inspection};
use crate::policy::facts::{RequestFacts, Verdict};
use crate::policy::{Decision, Outcome};

/// The audit record of one decided request. Holds the URL without its query string and never
/// any body content.
pub fn decision_record(
    request: &RequestFacts<'_>,
    verdict: &Verdict,
    evaluation: Duration,
) -> DecisionRecord {
    let service = verdict.service.as_deref();
    let inspection = verdict.inspection.as_deref();
    let action = inspection.map_or("access_ai_service", |i| i.extracted.action().as_str());
    let outcome = &verdict.outcome;
    let classes: Vec<DataClass> = inspection
        .map(Inspection::data_classification)
        .unwrap_or_default();
    let class_names: Vec<&str> = classes.iter().map(|c| c.as_str()).collect();
    let risk = crate::policy::risk_score(service.map(|s| s.risk_score), &class_names, 0);
    let (explanation, pending_explanation) = explanation(verdict);
    let violation = (verdict.decision != Decision::Allow).then(|| ViolationRecord {
        violation_id: Uuid::now_v7(),
        violation_type: violation_type(outcome),
        // The column is NOT NULL: a default decision names the built-in approval rule.
        policy_id: outcome
            .primary
            .as_ref()
            .map_or(BUILTIN_APPROVAL_POLICY, |(id, _)| *id),
        policy_name: Some(outcome.primary.as_ref().map_or_else(
            || BUILTIN_APPROVAL_POLICY_NAME.to_owned(),
            |(_, name)| name.clone(),
        )),
        severity: severity_for_risk(u8::try_from(risk).unwrap_or(100)).to_owned(),
    });
    DecisionRecord {
        decision_id: verdict.decision_id,
        request_id: Uuid::now_v7(),
        timestamp: OffsetDateTime::now_utc(),
        user_id: request
            .identity
            .user
            .as_ref()
            .map_or(ANONYMOUS_USER, |u| u.id),
        user_email: request.identity.user.as_ref().map(|u| u.email.clone()),
        user_department: request
            .identity
            .user
            .as_ref()
            .and_then(|u| u.department.clone()),
        action: action.to_owned(),
        resource_type: if service.is_some() {
            "ai_service"
        } else {
            "url"
        }
        .to_owned(),
        resource_id: service.map(|s| s.service_id),
        resource_name: Some(service.map_or_else(|| request.host.to_owned(), |s| s.name.clone())),
        resource_url: Some(request.url()),
        decision: verdict.decision.as_column().to_owned(),
        reason: verdict.reason.clone(),
        confidence: (verdict.fingerprint.confidence > 0.0)
            .then_some(f64::from(verdict.fingerprint.confidence)),
        risk_score: Some(risk),
        risk_factors: service.and_then(|s| s.risk_factors.clone()),
        policies_evaluated: policies_evaluated(&outcome.evaluated),
        primary_policy_id: outcome.primary.as_ref().map(|(id, _)| *id),
        source: Some(request.source.mode().to_owned()),
        device_id: request.identity.device.as_ref().map(|d| d.id),
        ip_address: request.client.map(|c| c.ip()),
        user_agent: request.header("user-agent").map(str::to_owned),
        content_classified: inspection.is_some(),
        detected_entities: inspection.map(Inspection::detected_entities),
        data_classification: inspection
            .map(|i| {
                i.data_classification()
                    .iter()
                    .map(|c| c.as_str().to_owned())
                    .collect()
            })
            .unwrap_or_default(),
        evaluation_duration_ms: Some(i32::try_from(evaluation.as_millis()).unwrap_or(i32::MAX)),
        explanation,
        pending_explanation,
        violation,
    }
}

impl DecisionRecord {
    /// Notes in the explanation that the body went upstream masked. Only redacted forwards pay
    /// the re-parse.
    pub(crate) fn note_body_redacted(&mut self) {
        self.explanation = self.explanation.take().map(with_body_redacted);
    }
}

/// The explanation with `body_redacted: true` added.
fn with_body_redacted(explanation: JsonText) -> JsonText {
    let Ok(mut value) = serde_json::from_str::<serde_json::Value>(explanation.get()) else {
        return explanation;
    };
    if let Some(object) = value.as_object_mut() {
        object.insert("body_redacted".into(), serde_json::Value::Bool(true));
    }
    JsonText::of(&value).unwrap_or(explanation)
}

/// The explanation column of `verdict`. An allowed request (most of the traffic) is explained by
/// its service, signals and policy results, serialized now straight from the verdict (building
/// and dropping a JSON tree of every policy result cost more than the policies themselves). A
/// stop is explained by the whole policy input as well, over a quarter of a stopped request's
/// decision cost to serialize: the audit writer renders that one, off the request path.
fn explanation(verdict: &Verdict) -> (Option<JsonText>, PendingExplanation) {
    if verdict.decision == Decision::Allow {
        let parts = ExplanationParts {
            outcome: &verdict.outcome,
            service: verdict.service.as_deref().map(|s| s.slug.as_str()),
            unknown_ai: verdict.fingerprint.unknown_ai,
            signals: &verdict.fingerprint.signals,
            content: verdict.inspection.as_deref().map(|i| ContentFacts {
                format: i.extracted.format,
                problem: i.extracted.problem.as_deref(),
            }),
            body_truncated: verdict.body_truncated,
            input: None,
        };
        return (parts.render(), PendingExplanation::default());
    }
    let stop = StopExplanation {
        outcome: verdict.outcome.clone(),
        service: verdict.service.clone(),
        unknown_ai: verdict.fingerprint.unknown_ai,
        signals: verdict.fingerprint.signals.clone(),
        content: verdict
            .inspection
            .as_deref()
            .map(|i| (i.extracted.format, i.extracted.problem.clone())),
        body_truncated: verdict.body_truncated,
        input: verdict.input.clone(),
    };
    (None, PendingExplanation::new(stop))
}

/// What an explanation is written from, borrowed from a verdict or from a [`StopExplanation`].
struct ExplanationParts<'a> {
    outcome: &'a Outcome,
    service: Option<&'a str>,
    unknown_ai: bool,
    signals: &'a [crate::catalog::Signal],
    content: Option<ContentFacts<'a>>,
    body_truncated: bool,
    /// The policy input, for a stop.
    input: Option<&'a regorus::Value>,
}

#[derive(serde::Serialize)]
struct ContentFacts<'a> {
    format: &'static str,
    problem: Option<&'a str>,
}

impl ExplanationParts<'_> {
    fn render(self) -> Option<JsonText> {
        #[derive(serde::Serialize)]
        struct Facts<'a> {
            service: Option<&'a str>,
            unknown_ai: bool,
            signals: &'a [crate::catalog::Signal],
            content: Option<ContentFacts<'a>>,
            body_truncated: bool,
            #[serde(skip_serializing_if = "Option::is_none")]
            input: Option<Without<'a>>,
        }
        let facts = Facts {
            service: self.service,
            unknown_ai: self.unknown_ai,
            signals: self.signals,
            content: self.content,
            body_truncated: self.body_truncated,
            // The policy input minus the request headers (cookies, tokens).
            input: self.input.map(|value| Without {
                value,
                path: &["request", "headers"],
            }),
        };
        JsonText::of(&crate::policy::Explanation::stored(self.outcome, facts))
    }
}

/// A stop's explanation, owned (shared pointers, mostly) until the audit writer renders it.
struct StopExplanation {
    outcome: Arc<Outcome>,
    service: Option<Arc<AiService>>,
    unknown_ai: bool,
    signals: Vec<crate::catalog::Signal>,
    content: Option<(&'static str, Option<String>)>,
    body_truncated: bool,
    input: regorus::Value,
}

impl LateExplanation for StopExplanation {
    fn render(&self) -> Option<JsonText> {
        ExplanationParts {
            outcome: &self.outcome,
            service: self.service.as_deref().map(|s| s.slug.as_str()),
            unknown_ai: self.unknown_ai,
            signals: &self.signals,
            content: self.content.as_ref().map(|(format, problem)| ContentFacts {
                format,
                problem: problem.as_deref(),
            }),
            body_truncated: self.body_truncated,
            input: Some(&self.input),
        }
        .render()
    }
}

/// A policy input serialized straight to JSON without the member at `path`: no JSON tree is
/// built and pruned first (that was half the cost of a stopped request's record).
struct Without<'a> {
    value: &'a regorus::Value,
    path: &'a [&'a str],
}

impl serde::Serialize for Without<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let (Some((first, rest)), regorus::Value::Object(fields)) =
            (self.path.split_first(), self.value)
        else {
            return self.value.serialize(serializer);
        };
        let is_first = |key: &regorus::Value| key.as_string().is_ok_and(|k| k.as_ref() == *first);
        // No length hint: JSON needs none, and counting would walk the fields twice.
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in fields.iter() {
            if !is_first(key) {
                map.serialize_entry(key, value)?;
            } else if !rest.is_empty() {
                map.serialize_entry(key, &Without { value, path: rest })?;
            }
        }
        map.end()
    }
}

/// The `policies_evaluated` column: `[{policy_id, policy_name, priority, matched, exception_id?}]`.
/// Written by hand: serde spent some 2,000 instructions a row on field keys, escaping and
/// buffer growth, and every request writes one row per policy. Checking the text with serde's
/// reader cost 11,000 more; `policies_evaluated_is_the_json_serde_would_write` checks the writer.
fn policies_evaluated(results: &[crate::policy::PolicyResult]) -> JsonText {
    let mut json = String::with_capacity(2 + results.len() * 128);
    json.push('[');
    for (i, r) in results.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push_str("{\"policy_id\":");
        push_json_uuid(&mut json, r.policy_id);
        json.push_str(",\"policy_name\":");
        push_json_string(&mut json, &r.policy_name);
        json.push_str(",\"priority\":");
        json.push_str(itoa::Buffer::new().format(r.priority));
        json.push_str(",\"matched\":");
        json.push_str(if r.deny || r.review || r.allow {
            "true"
        } else {
            "false"
        });
        if let Some(exception) = r.exception_id {
            json.push_str(",\"exception_id\":");
            push_json_uuid(&mut json, exception);
        }
        json.push('}');
    }
    json.push(']');
    JsonText::written(json)
}

/// `id` as a JSON string literal, hyphenated lower case as serde writes it.
fn push_json_uuid(json: &mut String, id: Uuid) {
    json.push('"');
    json.push_str(id.hyphenated().encode_lower(&mut Uuid::encode_buffer()));
    json.push('"');
}

/// `text` as a JSON string literal; plain printable ASCII (policy names, almost always) is copied
/// as is, anything else goes through serde_json's escaping.
fn push_json_string(json: &mut String, text: &str) {
    if text
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        json.push('"');
        json.push_str(text);
        json.push('"');
    } else {
        // serde_json cannot fail on a string; should it ever, the text stays JSON.
        json.push_str(serde_json::to_string(text).as_deref().unwrap_or("null"));
    }
}

/// The `violations.violation_type` of a stopped request: the deciding policy's own type, else
/// what the stop was about.
fn violation_type(outcome: &Outcome) -> String {
    if let Some(kind) = &outcome.violation_type {
        return kind.clone();
    }
    match (outcome.decision, outcome.primary.is_some()) {
        (Decision::Review, _) => "review_required",
        (_, true) => "policy_violation",
        (_, false) => "unapproved_service",
    }
    .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_policy_in_scope_is_an_empty_list() {
        assert_eq!(
            policies_evaluated(&[]).get(),
            "[]",
            "no policy in scope is an empty list"
        );
    }
}

//! COPY (text format) encoding of decision and violation rows: the fast path for fresh batches.
//!
//! COPY has no `ON CONFLICT`, so it is only the first attempt: a batch that collides with rows
//! already stored (a replay after a lost commit acknowledgement) falls back to the idempotent
//! INSERT path.

use std::fmt::Write;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::audit::DecisionRecord;

pub const DECISION_COLUMNS: &str = "decision_id, request_id, timestamp, user_id, user_email, user_department, \
    action, resource_type, resource_id, resource_name, resource_url, decision, reason, confidence, \
    risk_score, risk_factors, policies_evaluated, primary_policy_id, source, device_id, ip_address, \
    user_agent, content_classified, detected_entities, data_classification, evaluation_duration_ms, \
    explanation";

pub const VIOLATION_COLUMNS: &str = "violation_id, decision_id, timestamp, user_id, user_email, \
    user_department, violation_type, policy_id, policy_name, severity, resource_type, resource_id, \
    resource_name";

/// One COPY text row per decision.
pub fn decision_rows(batch: &[DecisionRecord], out: &mut String) {
    for d in batch {
        let mut row = Row::new(out);
        row.display(d.decision_id)
            .display(d.request_id)
            .text(&timestamp(d.timestamp))
            .display(d.user_id)
            .opt_text(d.user_email.as_deref())
            .opt_text(d.user_department.as_deref())
            .text(&d.action)
            .text(&d.resource_type)
            .opt_display(d.resource_id)
            .opt_text(d.resource_name.as_deref())
            .opt_text(d.resource_url.as_deref())
            .text(&d.decision)
            .text(&d.reason)
            .opt_display(d.confidence)
            .opt_display(d.risk_score)
            .opt_json(d.risk_factors.as_ref())
            .text(d.policies_evaluated.get())
            .opt_display(d.primary_policy_id)
            .opt_text(d.source.as_deref())
            .opt_display(d.device_id)
            .opt_display(d.ip_address)
            .opt_text(d.user_agent.as_deref())
            .text(if d.content_classified { "t" } else { "f" })
            .opt_json(d.detected_entities.as_ref())
            .array(&d.data_classification)
            .opt_display(d.evaluation_duration_ms)
            .opt_text(d.explanation.as_ref().map(|e| e.get()))
            .end();
    }
}

/// One COPY text row per violation of the batch.
pub fn violation_rows(batch: &[DecisionRecord], out: &mut String) -> usize {
    let mut count = 0;
    for d in batch {
        let Some(v) = d.violation.as_ref() else {
            continue;
        };
        count += 1;
        Row::new(out)
            .display(v.violation_id)
            .display(d.decision_id)
            .text(&timestamp(d.timestamp))
            .display(d.user_id)
            .opt_text(d.user_email.as_deref())
            .opt_text(d.user_department.as_deref())
            .text(&v.violation_type)
            .display(v.policy_id)
            .opt_text(v.policy_name.as_deref())
            .text(&v.severity)
            .text(&d.resource_type)
            .opt_display(d.resource_id)
            .opt_text(d.resource_name.as_deref())
            .end();
    }
    count
}

/// PostgreSQL keeps microseconds. COPY would round the nanoseconds while a bound parameter is
/// truncated, and a replay through the INSERT path must hit the very same primary key.
fn timestamp(at: OffsetDateTime) -> String {
    let truncated = at
        .replace_nanosecond(at.nanosecond() / 1000 * 1000)
        .unwrap_or(at);
    truncated.format(&Rfc3339).unwrap_or_default()
}

struct Row<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Row<'a> {
    fn new(out: &'a mut String) -> Self {
        Self { out, first: true }
    }

    fn separator(&mut self) {
        if !self.first {
            self.out.push('\t');
        }
        self.first = false;
    }

    fn text(&mut self, value: &str) -> &mut Self {
        self.separator();
        escape_into(value, self.out);
        self
    }

    fn opt_text(&mut self, value: Option<&str>) -> &mut Self {
        match value {
            Some(value) => self.text(value),
            None => self.null(),
        }
    }

    fn display(&mut self, value: impl std::fmt::Display) -> &mut Self {
        self.separator();
        // Uuids, numbers and IP addresses never contain characters COPY escapes.
        let _ = write!(self.out, "{value}");
        self
    }

    fn opt_display(&mut self, value: Option<impl std::fmt::Display>) -> &mut Self {
        match value {
            Some(value) => self.display(value),
            None => self.null(),
        }
    }

    fn json(&mut self, value: &serde_json::Value) -> &mut Self {
        self.text(&value.to_string())
    }

    fn opt_json(&mut self, value: Option<&serde_json::Value>) -> &mut Self {
        match value {
            Some(value) => self.json(value),
            None => self.null(),
        }
    }

    /// A `TEXT[]` literal: `{"a","b"}` with `"` and `\` escaped inside the quotes.
    fn array(&mut self, values: &[String]) -> &mut Self {
        let mut literal = String::from("{");
        for (index, value) in values.iter().enumerate() {
            if index > 0 {
                literal.push(',');
            }
            literal.push('"');
            for c in value.chars() {
                if c == '"' || c == '\\' {
                    literal.push('\\');
                }
                literal.push(c);
            }
            literal.push('"');
        }
        literal.push('}');
        self.text(&literal)
    }

    fn null(&mut self) -> &mut Self {
        self.separator();
        self.out.push_str("\\N");
        self
    }

    fn end(&mut self) {
        self.out.push('\n');
    }
}

/// COPY text-format escaping: backslash, and the characters that would end a field or a row.
fn escape_into(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_that_would_break_a_row_are_escaped() {
        let mut out = String::new();
        escape_into("a\tb\nc\\d\re", &mut out);
        assert_eq!(out, "a\\tb\\nc\\\\d\\re");
        let mut out = String::new();
        Row::new(&mut out)
            .array(&["x\"y".into(), "back\\slash".into()])
            .null()
            .end();
        assert_eq!(out, "{\"x\\\\\"y\",\"back\\\\\\\\slash\"}\t\\N\n");
    }
}

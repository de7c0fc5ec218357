//! Inspection: the prompt out of a request body, the PII and secrets in it, and their redacted
//! forms.
//!
//! `extract` reads the body (provider-aware, decoded), `detect` finds validated entities in the
//! extracted text, `redact` produces the forms that may be stored or forwarded. Raw values never
//! leave this module: an [`Inspection`] hands out redacted values, counts and spans only.

pub mod detect;
pub mod extract;
pub mod redact;
mod validate;

use std::collections::BTreeMap;

use serde_json::json;

pub use detect::{DataClass, Detector, DetectorError, Dictionary, Entity, EntityType};
pub use extract::{Action, Extracted, FileUpload, Origin};

/// Detection settings shared by every request of a snapshot.
#[derive(Debug)]
pub struct Inspector {
    detector: Detector,
    /// Findings below this confidence are not reported.
    min_confidence: f32,
    /// Largest decoded body inspected.
    limit: usize,
}

/// The result of inspecting one request body.
#[derive(Debug)]
pub struct Inspection {
    pub extracted: Extracted,
    /// Spans of `extracted.text`, ordered and non-overlapping.
    pub entities: Vec<Entity>,
}

/// Per-type totals, the shape of `input.content.entities` in the policy contract.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EntityCount {
    #[serde(rename = "type")]
    pub kind: String,
    pub count: usize,
    pub confidence: f64,
}

impl Inspector {
    pub fn new(
        dictionaries: &[Dictionary],
        min_confidence: f32,
        limit: usize,
    ) -> Result<Self, DetectorError> {
        Ok(Inspector {
            detector: Detector::new(dictionaries)?,
            min_confidence,
            limit,
        })
    }

    pub fn inspect(
        &self,
        content_type: Option<&str>,
        content_encoding: Option<&str>,
        body: &[u8],
        truncated: bool,
    ) -> Inspection {
        let extracted =
            extract::extract(content_type, content_encoding, body, self.limit, truncated);
        let entities = self.scan(&extracted.text);
        Inspection {
            extracted,
            entities,
        }
    }

    /// Findings in free text (the `aigate classify` command, tests).
    pub fn scan(&self, text: &str) -> Vec<Entity> {
        let mut entities = self.detector.scan(text);
        entities.retain(|e| e.confidence >= self.min_confidence);
        entities
    }
}

impl Inspection {
    /// The `decisions.detected_entities` value: type, redacted value, confidence and span.
    pub fn detected_entities(&self) -> serde_json::Value {
        let text = &self.extracted.text;
        self.entities
            .iter()
            .map(|e| {
                json!({
                    "type": e.kind.as_str(),
                    "value": redact::redacted_value(&e.kind, text.get(e.start..e.end).unwrap_or_default()),
                    "confidence": round2(e.confidence),
                    "start": e.start,
                    "end": e.end,
                })
            })
            .collect()
    }

    pub fn counts(&self) -> Vec<EntityCount> {
        let mut by_type: BTreeMap<&str, EntityCount> = BTreeMap::new();
        for entity in &self.entities {
            let entry = by_type
                .entry(entity.kind.as_str())
                .or_insert_with(|| EntityCount {
                    kind: entity.kind.as_str().to_owned(),
                    count: 0,
                    confidence: 0.0,
                });
            entry.count += 1;
            entry.confidence = entry.confidence.max(round2(entity.confidence));
        }
        by_type.into_values().collect()
    }

    /// The distinct classifications of the findings, in a stable order.
    pub fn data_classification(&self) -> Vec<DataClass> {
        let mut classes: Vec<DataClass> = self
            .entities
            .iter()
            .map(|e| e.kind.classification())
            .collect();
        classes.sort();
        classes.dedup();
        classes
    }

    /// The body with every finding masked, still a valid body of its content type; `None` when
    /// there is nothing to mask or the shape cannot be rewritten (multipart).
    pub fn redacted_body(&self, original: &[u8]) -> Option<Vec<u8>> {
        if self.entities.is_empty() {
            return None;
        }
        let body = self.extracted.decoded.as_deref().unwrap_or(original);
        let extracted = &self.extracted;
        let masked = |range: &std::ops::Range<usize>| -> String {
            let local: Vec<Entity> = self
                .entities
                .iter()
                .filter(|e| e.start >= range.start && e.end <= range.end)
                .map(|e| Entity {
                    start: e.start - range.start,
                    end: e.end - range.start,
                    ..e.clone()
                })
                .collect();
            redact::redact_text(&extracted.text[range.clone()], &local)
        };
        match extracted.segments.first().map(|s| &s.origin) {
            Some(Origin::Json(_)) => {
                let mut value: serde_json::Value = serde_json::from_slice(body).ok()?;
                for segment in &extracted.segments {
                    if let Origin::Json(pointer) = &segment.origin {
                        if let Some(slot) = value.pointer_mut(pointer) {
                            *slot = serde_json::Value::String(masked(&segment.range));
                        }
                    }
                }
                serde_json::to_vec(&value).ok()
            }
            Some(Origin::Body(_)) => extracted
                .segments
                .first()
                .map(|s| masked(&s.range).into_bytes()),
            Some(Origin::Form(_)) => {
                let mut form = form_urlencoded::Serializer::new(String::new());
                let pairs = form_urlencoded::parse(body).filter(|(_, v)| !v.is_empty());
                for ((name, _), segment) in pairs.zip(&extracted.segments) {
                    form.append_pair(&name, &masked(&segment.range));
                }
                Some(form.finish().into_bytes())
            }
            Some(Origin::Part(_)) | None => None,
        }
    }
}

/// Two decimals, as f64: an f32 printed through JSON would read 0.9900000095367432.
fn round2(value: f32) -> f64 {
    (f64::from(value) * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inspector() -> Inspector {
        Inspector::new(&[], 0.5, 1 << 20).unwrap()
    }

    #[test]
    fn stored_entities_carry_only_redacted_values() {
        let body = br#"{"messages":[{"role":"user","content":"charge 4111 1111 1111 1111 for jane@example.com"}]}"#;
        let inspection = inspector().inspect(Some("application/json"), None, body, false);
        let stored = inspection.detected_entities().to_string();
        assert!(
            stored.contains("****1111") && stored.contains("j***@example.com"),
            "{stored}"
        );
        assert!(
            !stored.contains("4111 1111") && !stored.contains("jane@"),
            "{stored}"
        );
        let classes = inspection.data_classification();
        assert_eq!(classes, vec![DataClass::Pii, DataClass::Financial]);
        assert_eq!(inspection.counts().len(), 2);
    }

    #[test]
    fn redacted_json_body_stays_valid_and_masks_every_leaf() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":"SSN: 123-45-6789"},{"role":"user","content":"mail \"jane@example.com\""}]}"#;
        let inspection = inspector().inspect(Some("application/json"), None, body, false);
        let redacted = inspection.redacted_body(body).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&redacted).unwrap();
        assert_eq!(value["messages"][0]["content"], "SSN: ***-**-6789");
        assert_eq!(value["messages"][1]["content"], "mail \"j***@example.com\"");
        assert_eq!(value["model"], "m");
    }

    #[test]
    fn redacted_form_and_text_bodies() {
        let form = b"q=card+4111111111111111&lang=en";
        let inspection =
            inspector().inspect(Some("application/x-www-form-urlencoded"), None, form, false);
        let redacted = String::from_utf8(inspection.redacted_body(form).unwrap()).unwrap();
        assert_eq!(redacted, "q=card+****1111&lang=en");
        let text = b"key AKIAIOSFODNN7EXAMPLE";
        let inspection = inspector().inspect(Some("text/plain"), None, text, false);
        assert_eq!(inspection.redacted_body(text).unwrap(), b"key AKIA****");
        let clean = inspector().inspect(Some("text/plain"), None, b"nothing here", false);
        assert!(clean.redacted_body(b"nothing here").is_none());
    }
}

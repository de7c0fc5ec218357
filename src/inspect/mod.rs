//! Inspection: the prompt out of a request body, the PII and secrets in it, and their redacted
//! forms.
//!
//! `extract` reads the body (provider-aware, decoded), `detect` finds validated entities in the
//! extracted text, `redact` produces the forms that may be stored or forwarded. Raw values never
//! leave this module: an [`Inspection`] hands out redacted values, counts and spans only.

mod decode;
pub mod detect;
pub mod extract;
pub mod national;
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
        self.inspect_request(content_type, content_encoding, body, truncated, &[])
    }

    /// [`Inspector::inspect`], plus strings from outside the body (the URL query, header
    /// values), where only secrets are findings.
    pub fn inspect_request(
        &self,
        content_type: Option<&str>,
        content_encoding: Option<&str>,
        body: &[u8],
        truncated: bool,
        outside_body: &[(Origin, &str)],
    ) -> Inspection {
        let extracted = extract::extract_request(
            content_type,
            content_encoding,
            body,
            self.limit,
            truncated,
            outside_body,
        );
        let split = extracted.secrets_only_from;
        let mut entities = self.scan(&extracted.text[..split]);
        let secrets = self.scan(&extracted.text[split..]);
        entities.extend(
            secrets
                .into_iter()
                .filter(|e| e.kind.is_secret())
                .map(|e| Entity {
                    start: e.start + split,
                    end: e.end + split,
                    ..e
                }),
        );
        drop_decoded_repeats(&extracted, &mut entities);
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

    /// `raw` (the body as received) with every finding masked in place by a mask of the same
    /// length, so the body stays valid (JSON strings stay strings) and keeps its length.
    /// `None` when a finding cannot be located byte for byte (escaped in JSON, or the body is
    /// compressed): the caller must not forward such a body unmasked.
    pub fn masked_in_place(&self, raw: &[u8]) -> Option<Vec<u8>> {
        if self.extracted.decoded.is_some() {
            return None;
        }
        let mut body = raw.to_vec();
        for entity in &self.entities {
            let value = self.extracted.text.get(entity.start..entity.end)?;
            let mask = redact::mask_same_length(&entity.kind, value);
            let mut found = false;
            let mut from = 0;
            while let Some(at) = memchr::memmem::find(&body[from..], value.as_bytes()) {
                let at = from + at;
                body[at..at + value.len()].copy_from_slice(mask.as_bytes());
                from = at + value.len();
                found = true;
            }
            if !found {
                return None;
            }
        }
        Some(body)
    }
}

/// A finding in a decoded copy (percent-escapes undone, invisible characters dropped) that
/// repeats one already found is the same finding, not a second one.
fn drop_decoded_repeats(extracted: &Extracted, entities: &mut Vec<Entity>) {
    let text = &extracted.text;
    let value = |e: &Entity| text.get(e.start..e.end).unwrap_or_default();
    let decoded = |e: &Entity| {
        let at = extracted
            .segments
            .partition_point(|s| s.range.end <= e.start);
        extracted
            .segments
            .get(at)
            .is_some_and(|s| matches!(s.origin, Origin::Decoded(_)))
    };
    let mut kept: Vec<Entity> = Vec::with_capacity(entities.len());
    for entity in entities.drain(..) {
        let repeat = decoded(&entity)
            && kept
                .iter()
                .any(|k| k.kind == entity.kind && value(k) == value(&entity));
        if !repeat {
            kept.push(entity);
        }
    }
    *entities = kept;
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
    fn in_place_masks_keep_length_and_validity() {
        let body = br#"{"messages":[{"role":"user","content":"card 4111 1111 1111 1111, mail jane@example.com"}]}"#;
        let inspection = inspector().inspect(Some("application/json"), None, body, false);
        let masked = inspection.masked_in_place(body).unwrap();
        assert_eq!(masked.len(), body.len());
        let value: serde_json::Value = serde_json::from_slice(&masked).unwrap();
        assert_eq!(
            value["messages"][0]["content"],
            "card **** **** **** 1111, mail j***@example.com"
        );
        let escaped = br#"{"content":"mail \u006aane@example.com"}"#;
        let inspection = inspector().inspect(Some("application/json"), None, escaped, false);
        assert_eq!(inspection.entities.len(), 1, "{:?}", inspection.entities);
        let e = &inspection.entities[0];
        assert_eq!(
            &inspection.extracted.text[e.start..e.end],
            "jane@example.com"
        );
        assert!(
            inspection.masked_in_place(escaped).is_none(),
            "an escaped finding cannot be located"
        );
    }
}

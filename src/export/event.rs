//! Exported events and their wire forms: the JSON document, CEF, the RFC 5424 syslog line with
//! RFC 6587 octet counting, the Splunk HEC envelope and the webhook signature.

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use time::OffsetDateTime;

use crate::store::export::ExportSource;

/// One event as every sink sends it. `id` is stable across re-deliveries: receivers de-duplicate
/// on it (delivery is at-least-once).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub id: String,
    /// `violation`, or the audit event's `event_type` (`violation_updated`, `exception_requested`,
    /// `policy_updated`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub severity: String,
    /// The stored row, as the admin API lists it.
    pub data: serde_json::Value,
}

impl Event {
    /// The event of a listed `violations` or `audit_events` row.
    pub fn from_row(source: ExportSource, row: serde_json::Value) -> Event {
        let text = |key: &str| row.get(key).and_then(|v| v.as_str()).map(str::to_owned);
        let (prefix, id_key) = match source {
            ExportSource::Violations => ("violation", "violation_id"),
            ExportSource::AuditEvents => ("audit", "event_id"),
        };
        let kind = match source {
            ExportSource::Violations => "violation".to_owned(),
            ExportSource::AuditEvents => text("event_type").unwrap_or_else(|| "audit".to_owned()),
        };
        let time = text("timestamp")
            .and_then(|t| crate::store::parse_timestamp(&t))
            .unwrap_or_else(OffsetDateTime::now_utc);
        Event {
            id: format!("{prefix}:{}", text(id_key).unwrap_or_default()),
            kind,
            time,
            severity: text("severity").unwrap_or_else(|| "info".to_owned()),
            data: row,
        }
    }

    /// Syslog severity (RFC 5424 §6.2.1) of the event's severity.
    fn syslog_severity(&self) -> u8 {
        match self.severity.as_str() {
            "critical" => 2,
            "high" | "error" => 3,
            "medium" | "warning" => 4,
            "low" => 5,
            _ => 6,
        }
    }

    /// CEF severity, 0..=10.
    fn cef_severity(&self) -> u8 {
        match self.severity.as_str() {
            "critical" => 10,
            "high" | "error" => 8,
            "medium" | "warning" => 5,
            "low" => 3,
            _ => 1,
        }
    }

    fn field(&self, key: &str) -> Option<String> {
        match self.data.get(key)? {
            serde_json::Value::Null => None,
            serde_json::Value::String(text) => Some(text.clone()),
            other => Some(other.to_string()),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// `CEF:0|Vendor|Product|Version|SignatureID|Name|Severity|Extension`.
    pub fn to_cef(&self) -> String {
        let name = self
            .field("violation_type")
            .or_else(|| self.field("action"))
            .unwrap_or_else(|| self.kind.clone());
        let mut extension = vec![
            (
                "rt",
                (self.time.unix_timestamp_nanos() / 1_000_000).to_string(),
            ),
            ("externalId", self.id.clone()),
        ];
        let optional = [
            (
                "suser",
                self.field("user_email").or(self.field("actor_email")),
            ),
            ("suid", self.field("user_id").or(self.field("actor_id"))),
            ("act", self.field("status").or(self.field("action"))),
            ("outcome", self.field("result")),
            ("cs1Label", Some("policy".to_owned())),
            (
                "cs1",
                self.field("policy_name").or(self.field("target_name")),
            ),
            ("cs2Label", Some("target".to_owned())),
            (
                "cs2",
                self.field("resource_name").or(self.field("target_type")),
            ),
            ("src", self.field("ip_address")),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                extension.push((key, value));
            }
        }
        let extension: Vec<String> = extension
            .into_iter()
            .map(|(key, value)| format!("{key}={}", cef_value(&value)))
            .collect();
        format!(
            "CEF:0|aigate|aigate|{}|{}|{}|{}|{}",
            cef_header(env!("CARGO_PKG_VERSION")),
            cef_header(&self.kind),
            cef_header(&name),
            self.cef_severity(),
            extension.join(" ")
        )
    }

    /// An RFC 5424 message framed by octet counting (RFC 6587 §3.4.1): `LEN SP MSG`.
    pub fn to_syslog_frame(&self, facility: u8, hostname: &str, body: &str) -> Vec<u8> {
        let priority = u16::from(facility) * 8 + u16::from(self.syslog_severity());
        let timestamp = self
            .time
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| "-".to_owned());
        let msgid: String = self
            .kind
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(32)
            .collect();
        // The id also goes into structured data so a collector can key on it without parsing
        // the body; `"`, `\` and `]` are escaped as §6.3.3 requires.
        let id = self
            .id
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace(']', "\\]");
        let message = format!(
            "<{priority}>1 {timestamp} {hostname} aigate {} {} [aigate@32473 id=\"{id}\"] {body}",
            std::process::id(),
            if msgid.is_empty() { "-" } else { &msgid },
        );
        let mut frame = format!("{} ", message.len()).into_bytes();
        frame.extend_from_slice(message.as_bytes());
        frame
    }

    /// The HEC event envelope (one JSON object; a batch is several back to back).
    pub fn to_hec(&self, index: Option<&str>, host: &str) -> String {
        let mut envelope = serde_json::json!({
            "time": self.time.unix_timestamp_nanos() as f64 / 1e9,
            "host": host,
            "source": "aigate",
            "sourcetype": "aigate:event",
            "event": self,
        });
        if let (Some(index), Some(object)) = (index, envelope.as_object_mut()) {
            object.insert("index".to_owned(), index.into());
        }
        envelope.to_string()
    }
}

fn cef_header(text: &str) -> String {
    text.replace('\\', "\\\\").replace('|', "\\|")
}

fn cef_value(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('=', "\\=")
        .replace('\r', "\\r")
        .replace('\n', "\\n")
}

/// `sha256=<hex>` of HMAC-SHA256 over `"<timestamp>.<body>"`: the timestamp is signed with the
/// body, so a captured delivery cannot be replayed later with a fresh timestamp.
pub fn webhook_signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        // HMAC takes keys of any length; this arm is unreachable.
        Err(_) => return String::new(),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn violation() -> Event {
        Event::from_row(
            ExportSource::Violations,
            serde_json::json!({
                "violation_id": "0b7c",
                "timestamp": "2026-12-06T10:00:00Z",
                "severity": "high",
                "violation_type": "pii|detected",
                "user_email": "a=b@example.com",
                "policy_name": "line\nbreak",
            }),
        )
    }

    #[test]
    fn cef_escapes_headers_and_extension_values() {
        let cef = violation().to_cef();
        assert!(cef.starts_with("CEF:0|aigate|aigate|"), "{cef}");
        assert!(cef.contains("|violation|pii\\|detected|8|"), "{cef}");
        assert!(cef.contains("suser=a\\=b@example.com"), "{cef}");
        assert!(cef.contains("cs1=line\\nbreak"), "{cef}");
        assert!(cef.contains("externalId=violation:0b7c"), "{cef}");
    }

    #[test]
    fn syslog_frames_count_octets_of_an_rfc5424_message() {
        let event = violation();
        let frame = event.to_syslog_frame(16, "gw1", "{\"é\":1}");
        let text = String::from_utf8(frame).unwrap();
        let (length, message) = text.split_once(' ').unwrap();
        assert_eq!(length.parse::<usize>().unwrap(), message.len());
        // local0 (16) * 8 + error (3).
        assert!(
            message.starts_with("<131>1 2026-12-06T10:00:00Z gw1 aigate "),
            "{message}"
        );
        assert!(message.contains(" violation [aigate@32473 id=\"violation:0b7c\"] {"));
    }

    #[test]
    fn signatures_cover_timestamp_and_body() {
        let signature = webhook_signature(b"key", 1700000000, b"{}");
        assert!(signature.starts_with("sha256=") && signature.len() == 7 + 64);
        assert_ne!(signature, webhook_signature(b"key", 1700000001, b"{}"));
        assert_ne!(signature, webhook_signature(b"other", 1700000000, b"{}"));
    }
}

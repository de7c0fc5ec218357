//! An integration's export settings, read from a `[[export]]` entry of the config file or from an
//! `integrations` row (`provider` the sink, `config` the same keys as JSON, `webhook_url` and
//! `webhook_secret` the webhook's), and checked the same way for both.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A secret from the configuration: never printed by `Debug`, never returned by the API.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

/// Where the events go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    /// JSON POST signed with HMAC-SHA256 (`X-Aigate-Signature`).
    Webhook,
    /// Splunk HTTP Event Collector.
    SplunkHec,
    /// RFC 5424 over TCP (RFC 6587 octet counting), or TLS when `tls = true`.
    Syslog,
}

impl SinkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::Webhook => "webhook",
            SinkKind::SplunkHec => "splunk_hec",
            SinkKind::Syslog => "syslog",
        }
    }

    pub fn from_name(name: &str) -> Option<SinkKind> {
        [SinkKind::Webhook, SinkKind::SplunkHec, SinkKind::Syslog]
            .into_iter()
            .find(|kind| kind.as_str() == name)
    }
}

/// The syslog message body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageFormat {
    #[default]
    Json,
    /// ArcSight Common Event Format.
    Cef,
}

/// One exporter's settings. Durations are milliseconds.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExportConfig {
    pub name: String,
    pub kind: SinkKind,
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Webhook or HEC endpoint.
    #[serde(default)]
    pub url: Option<String>,
    /// The webhook's HMAC key.
    #[serde(default, skip_serializing)]
    pub secret: Option<Secret>,
    /// The HEC token.
    #[serde(default, skip_serializing)]
    pub token: Option<Secret>,
    /// HEC `index`, optional.
    #[serde(default)]
    pub index: Option<String>,
    /// Syslog `host:port`.
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub tls: bool,
    /// The name the syslog server's certificate is checked against (default: the host).
    #[serde(default)]
    pub server_name: Option<String>,
    /// PEM roots trusted for TLS (syslog, HTTPS), instead of the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub format: MessageFormat,
    /// Syslog facility number (16 = local0).
    #[serde(default = "default_facility")]
    pub facility: u8,
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Attempts per batch before it goes to the dead-letter file.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_retry_initial_ms")]
    pub retry_initial_ms: u64,
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Events younger than this are left for the next poll: the audit writer stores in batches,
    /// so a row can land slightly after a later-stamped one; reading only settled rows keeps the
    /// keyset cursor from passing over it.
    #[serde(default = "default_settle_ms")]
    pub settle_ms: u64,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Batches that failed `max_attempts` times are appended here as JSON lines.
    #[serde(default = "default_dead_letter_dir")]
    pub dead_letter_dir: PathBuf,
}

fn default_true() -> bool {
    true
}
fn default_facility() -> u8 {
    16
}
fn default_batch_size() -> usize {
    100
}
fn default_max_attempts() -> u32 {
    10
}
fn default_retry_initial_ms() -> u64 {
    500
}
fn default_retry_max_ms() -> u64 {
    60_000
}
fn default_poll_interval_ms() -> u64 {
    1_000
}
fn default_settle_ms() -> u64 {
    2_000
}
fn default_timeout_ms() -> u64 {
    10_000
}
fn default_dead_letter_dir() -> PathBuf {
    PathBuf::from("data/export-dead-letter")
}

/// A setting that cannot work, named by its key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct SettingsError {
    pub key: String,
    pub message: String,
}

impl ExportConfig {
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }
    pub fn settle(&self) -> Duration {
        Duration::from_millis(self.settle_ms)
    }
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// The `integrations` id of a config-file entry: derived from its name, so it keeps its
    /// cursor across restarts.
    pub fn file_integration_id(&self) -> Uuid {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(format!("aigate-export:{}", self.name));
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }

    /// Checks the entry; `prefix` names it in errors (`[[export]] "siem"`).
    pub fn validate(&self, prefix: &str) -> Result<(), SettingsError> {
        let fail = |key: &str, message: &str| SettingsError {
            key: format!("{prefix} {key}"),
            message: message.to_owned(),
        };
        if self.name.trim().is_empty() {
            return Err(fail("name", "must not be empty"));
        }
        match self.kind {
            SinkKind::Webhook | SinkKind::SplunkHec => {
                let url = self
                    .url
                    .as_deref()
                    .ok_or_else(|| fail("url", "is required for this kind"))?;
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(fail("url", "must start with http:// or https://"));
                }
                if self.kind == SinkKind::Webhook
                    && self.secret.as_ref().is_none_or(|s| s.0.is_empty())
                {
                    return Err(fail(
                        "secret",
                        "is required: receivers verify the X-Aigate-Signature HMAC with it",
                    ));
                }
                if self.kind == SinkKind::SplunkHec
                    && self.token.as_ref().is_none_or(|s| s.0.is_empty())
                {
                    return Err(fail("token", "is required (the HEC token)"));
                }
            }
            SinkKind::Syslog => {
                let address = self
                    .address
                    .as_deref()
                    .ok_or_else(|| fail("address", "is required for syslog (host:port)"))?;
                let port_ok = address
                    .rsplit_once(':')
                    .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
                if !port_ok {
                    return Err(fail("address", "must be host:port"));
                }
                if self.facility > 23 {
                    return Err(fail("facility", "must be 0..=23"));
                }
            }
        }
        for (key, value) in [
            ("batch_size", self.batch_size as u64),
            ("max_attempts", u64::from(self.max_attempts)),
            ("retry_initial_ms", self.retry_initial_ms),
            ("poll_interval_ms", self.poll_interval_ms),
            ("timeout_ms", self.timeout_ms),
        ] {
            if value == 0 {
                return Err(fail(key, "must be at least 1"));
            }
        }
        if self.retry_max_ms < self.retry_initial_ms {
            return Err(fail("retry_max_ms", "must be at least retry_initial_ms"));
        }
        Ok(())
    }
}

/// Checks `[[export]]` entries: each valid, names unique.
pub fn validate_entries(entries: &[ExportConfig]) -> Result<(), SettingsError> {
    let mut names = std::collections::HashSet::new();
    for entry in entries {
        let prefix = format!("[[export]] {:?}", entry.name);
        entry.validate(&prefix)?;
        if !names.insert(entry.name.as_str()) {
            return Err(SettingsError {
                key: format!("{prefix} name"),
                message: "is used by another [[export]] entry".to_owned(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ExportConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn errors_name_the_entry_and_key_and_secrets_stay_out_of_debug() {
        let webhook = parse("name = \"soc\"\nkind = \"webhook\"\nurl = \"https://x\"\n");
        let error = validate_entries(&[webhook]).unwrap_err();
        assert_eq!(error.key, "[[export]] \"soc\" secret");
        let syslog = parse("name = \"s\"\nkind = \"syslog\"\naddress = \"nohost\"\n");
        assert_eq!(
            validate_entries(&[syslog]).unwrap_err().key,
            "[[export]] \"s\" address"
        );
        let hec = parse(
            "name = \"h\"\nkind = \"splunk_hec\"\nurl = \"https://s:8088/services/collector/event\"\ntoken = \"tok-123\"\n",
        );
        assert!(validate_entries(&[hec.clone(), hec.clone()]).is_err());
        assert!(validate_entries(std::slice::from_ref(&hec)).is_ok());
        assert!(!format!("{hec:?}").contains("tok-123"));
        assert_eq!(hec.file_integration_id(), hec.clone().file_integration_id());
    }

    #[test]
    fn the_config_file_names_the_bad_export_key() {
        let text =
            "[[export]]\nname = \"soc\"\nkind = \"webhook\"\nurl = \"ftp://x\"\nsecret = \"s\"\n";
        let error = crate::config::Config::parse(text).unwrap_err().to_string();
        assert!(error.contains("[[export]] \"soc\" url"), "{error}");
        let unknown = "[[export]]\nname = \"soc\"\nkind = \"webhook\"\nurll = \"x\"\n";
        let error = crate::config::Config::parse(unknown)
            .unwrap_err()
            .to_string();
        assert!(error.contains("urll"), "{error}");
        let good = "[[export]]\nname = \"soc\"\nkind = \"syslog\"\naddress = \"siem:6514\"\ntls = true\nformat = \"cef\"\n";
        let config = crate::config::Config::parse(good).unwrap();
        assert_eq!(config.export[0].format, MessageFormat::Cef);
    }
}

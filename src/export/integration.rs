//! An `integrations` row (type `siem` or `communication`, managed over the admin API) read as
//! the same settings as an `[[export]]` entry of the config file.

use crate::config::export::{ExportConfig, SettingsError, SinkKind};
use crate::store::export::Integration;

/// Settings of an `integrations` row (type `siem` or `communication`).
pub fn from_integration(row: &Integration) -> Result<ExportConfig, SettingsError> {
    let prefix = format!("integrations {:?}", row.name);
    let fail = |key: &str, message: String| SettingsError {
        key: format!("{prefix} {key}"),
        message,
    };
    let kind = SinkKind::from_name(&row.provider).ok_or_else(|| {
        fail(
            "provider",
            format!(
                "{:?} is not an exporter (webhook, splunk_hec, syslog)",
                row.provider
            ),
        )
    })?;
    let mut object = match &row.config {
        serde_json::Value::Object(object) => object.clone(),
        serde_json::Value::Null => serde_json::Map::new(),
        _ => return Err(fail("config", "must be a JSON object".to_owned())),
    };
    object.insert("name".to_owned(), row.name.clone().into());
    object.insert("kind".to_owned(), kind.as_str().into());
    object.insert("enabled".to_owned(), row.enabled.into());
    if let Some(url) = &row.webhook_url {
        object.entry("url").or_insert_with(|| url.clone().into());
    }
    if let Some(secret) = &row.webhook_secret {
        object.insert("secret".to_owned(), secret.clone().into());
    }
    let config: ExportConfig = serde_json::from_value(serde_json::Value::Object(object))
        .map_err(|error| fail("config", error.to_string()))?;
    config.validate(&prefix)?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::export::Secret;
    use uuid::Uuid;

    #[test]
    fn integration_rows_read_like_config_entries() {
        let row = Integration {
            integration_id: Uuid::nil(),
            name: "hook".into(),
            integration_type: "communication".into(),
            provider: "webhook".into(),
            config: serde_json::json!({"batch_size": 5}),
            enabled: true,
            webhook_url: Some("http://127.0.0.1:9/h".into()),
            webhook_secret: Some("k".into()),
            health_status: None,
            health_check_at: None,
            last_sync_at: None,
            last_sync_status: None,
            last_sync_error: None,
        };
        let config = from_integration(&row).unwrap();
        assert_eq!(config.batch_size, 5);
        assert_eq!(config.secret, Some(Secret("k".into())));
        let bad = Integration {
            config: serde_json::json!({"batch_size": 0}),
            ..row
        };
        assert_eq!(
            from_integration(&bad).unwrap_err().key,
            "integrations \"hook\" batch_size"
        );
    }
}

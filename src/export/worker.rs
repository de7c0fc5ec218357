//! The supervisor that keeps one task per enabled integration, and that task's loop: read a
//! batch after the cursor, deliver it with retries, dead-letter it after `max_attempts`, log the
//! attempt, advance the cursor.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;
use tracing::{info, warn};
use uuid::Uuid;

use super::event::Event;
use super::sink::Sink;
use super::ExportError;
use crate::config::export::ExportConfig;
use crate::metrics;
use crate::store::admin::ListQuery;
use crate::store::export::{ExportSource, Integration, SyncLog};
use crate::store::Store;

/// The `config` of an `integrations` row that mirrors a `[[export]]` entry.
pub const MANAGED_BY_CONFIG_FILE: &str = "config_file";
/// How often the supervisor re-reads the `integrations` rows.
const RESCAN_EVERY: Duration = Duration::from_secs(5);

/// The `integrations` row of a config-file entry: no secrets (they stay in the file).
pub fn file_integration(entry: &ExportConfig) -> Integration {
    Integration {
        integration_id: entry.file_integration_id(),
        name: entry.name.clone(),
        integration_type: "siem".to_owned(),
        provider: entry.kind.as_str().to_owned(),
        config: serde_json::json!({ "managed_by": MANAGED_BY_CONFIG_FILE }),
        enabled: entry.enabled,
        webhook_url: None,
        webhook_secret: None,
        health_status: None,
        health_check_at: None,
        last_sync_at: None,
        last_sync_status: None,
        last_sync_error: None,
    }
}

/// The integration tasks, aborted with the supervisor (at shutdown, or when a test stops it):
/// a detached task would go on exporting beside its successor.
#[derive(Default)]
struct Running(HashMap<Uuid, (ExportConfig, JoinHandle<()>)>);

impl Drop for Running {
    fn drop(&mut self) {
        for (_, task) in self.0.values() {
            task.abort();
        }
    }
}

fn is_file_managed(row: &Integration) -> bool {
    row.config.get("managed_by").and_then(|v| v.as_str()) == Some(MANAGED_BY_CONFIG_FILE)
}

/// Runs until aborted: the config-file entries, and the store's exporter rows as they come, go
/// and change.
pub async fn run(entries: Vec<ExportConfig>, store: Arc<dyn Store>) {
    let mut running = Running::default();
    let running = &mut running.0;
    for entry in entries.into_iter().filter(|entry| entry.enabled) {
        let id = entry.file_integration_id();
        let task = tokio::spawn(run_file_entry(entry.clone(), store.clone()));
        running.insert(id, (entry, task));
    }
    let file_ids: Vec<Uuid> = running.keys().copied().collect();
    loop {
        match store.load_integrations(&["siem", "communication"]).await {
            Ok(rows) => {
                let wanted: HashMap<Uuid, ExportConfig> = rows
                    .iter()
                    .filter(|row| row.enabled && !is_file_managed(row))
                    .filter(|row| super::SinkKind::from_name(&row.provider).is_some())
                    .filter_map(|row| match crate::export::from_integration(row) {
                        Ok(config) => Some((row.integration_id, config)),
                        Err(error) => {
                            warn!(%error, "Not exporting to an integration whose settings are invalid.");
                            None
                        }
                    })
                    .collect();
                running.retain(|id, (config, task)| {
                    let keep = file_ids.contains(id) || wanted.get(id) == Some(config);
                    if !keep {
                        task.abort();
                    }
                    keep
                });
                for (id, config) in wanted {
                    if let std::collections::hash_map::Entry::Vacant(slot) = running.entry(id) {
                        info!(integration = %config.name, kind = config.kind.as_str(), "Exporting events.");
                        let task = tokio::spawn(export_loop(id, config.clone(), store.clone()));
                        slot.insert((config, task));
                    }
                }
            }
            Err(error) => warn!(%error, "Reading the export integrations failed; retrying."),
        }
        tokio::time::sleep(RESCAN_EVERY).await;
    }
}

/// Records the entry's `integrations` row (retrying while the store is down), then exports.
async fn run_file_entry(entry: ExportConfig, store: Arc<dyn Store>) {
    let row = file_integration(&entry);
    while let Err(error) = store.save_integration(&row).await {
        warn!(%error, integration = %entry.name, "Recording the export integration failed; retrying.");
        tokio::time::sleep(entry.poll_interval()).await;
    }
    info!(integration = %entry.name, kind = entry.kind.as_str(), "Exporting events.");
    export_loop(row.integration_id, entry, store).await;
}

async fn export_loop(id: Uuid, config: ExportConfig, store: Arc<dyn Store>) {
    let mut sink = loop {
        match Sink::new(config.clone()).await {
            Ok(sink) => break sink,
            Err(error) => {
                warn!(%error, integration = %config.name, "Preparing the export sink failed; retrying.");
                tokio::time::sleep(Duration::from_millis(config.retry_max_ms)).await;
            }
        }
    };
    let mut exporter = Exporter { id, config, store };
    loop {
        let mut caught_up = true;
        for source in ExportSource::ALL {
            match exporter.export_batch(source, &mut sink).await {
                Ok(count) => caught_up &= count < exporter.config.batch_size,
                Err(error) => {
                    warn!(%error, integration = %exporter.config.name, source = source.as_str(), "Export batch failed; retrying.");
                }
            }
        }
        if caught_up {
            tokio::time::sleep(exporter.config.poll_interval()).await;
        }
    }
}

struct Exporter {
    id: Uuid,
    config: ExportConfig,
    store: Arc<dyn Store>,
}

impl Exporter {
    /// Delivers the next batch of `source`; returns how many events it held.
    async fn export_batch(
        &mut self,
        source: ExportSource,
        sink: &mut Sink,
    ) -> Result<usize, ExportError> {
        let after = self.store.export_cursor(self.id, source).await?;
        let settled = OffsetDateTime::now_utc() - self.config.settle();
        let query = ListQuery {
            after,
            until: Some(settled),
            limit: i64::try_from(self.config.batch_size).unwrap_or(i64::MAX),
            oldest_first: true,
            ..ListQuery::default()
        };
        let rows = self.store.list_rows(source.listing(), &query).await?;
        let Some(last) = rows.last().map(|row| row.cursor.clone()) else {
            return Ok(0);
        };
        let events: Vec<Event> = rows
            .into_iter()
            .map(|row| Event::from_row(source, row.item))
            .collect();
        self.deliver(&events, sink).await?;
        self.store
            .save_export_cursor(self.id, source, &last)
            .await?;
        Ok(events.len())
    }

    /// Delivers with retries; after `max_attempts` the batch goes to the dead-letter file. `Ok`
    /// means the cursor may pass the batch.
    async fn deliver(&self, events: &[Event], sink: &mut Sink) -> Result<(), ExportError> {
        let name = self.config.name.as_str();
        let count = i32::try_from(events.len()).unwrap_or(i32::MAX);
        let mut last_error = String::new();
        for attempt in 1..=self.config.max_attempts {
            let started = OffsetDateTime::now_utc();
            match sink.deliver(events).await {
                Ok(()) => {
                    metrics::EXPORT_ATTEMPTS
                        .with_label_values(&[name, "success"])
                        .inc();
                    metrics::EXPORT_EVENTS
                        .with_label_values(&[name, "delivered"])
                        .inc_by(events.len() as u64);
                    if let Some(newest) = events.iter().map(|e| e.time).max() {
                        metrics::EXPORT_LAG_SECONDS
                            .with_label_values(&[name])
                            .set((OffsetDateTime::now_utc() - newest).whole_seconds());
                    }
                    self.log(started, "success", count, count, 0, None, "healthy")
                        .await;
                    return Ok(());
                }
                Err(error) => {
                    metrics::EXPORT_ATTEMPTS
                        .with_label_values(&[name, "failure"])
                        .inc();
                    last_error = error.to_string();
                    warn!(integration = name, attempt, error = %last_error, "Export delivery failed.");
                    self.log(
                        started,
                        "failure",
                        count,
                        0,
                        count,
                        Some(last_error.clone()),
                        "degraded",
                    )
                    .await;
                    if attempt < self.config.max_attempts {
                        tokio::time::sleep(self.backoff(attempt)).await;
                    }
                }
            }
        }
        self.dead_letter(events, &last_error).await?;
        metrics::EXPORT_EVENTS
            .with_label_values(&[name, "dead_lettered"])
            .inc_by(events.len() as u64);
        warn!(
            integration = name,
            events = events.len(),
            "Export batch dead-lettered after its last attempt."
        );
        self.log(
            OffsetDateTime::now_utc(),
            "failure",
            count,
            0,
            count,
            Some(format!(
                "dead-lettered after {} attempts: {last_error}",
                self.config.max_attempts
            )),
            "unhealthy",
        )
        .await;
        Ok(())
    }

    /// `retry_initial_ms` doubled per attempt up to `retry_max_ms`, times a random factor in
    /// [0.5, 1): gateways that lost the same receiver do not retry in step.
    fn backoff(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(30);
        let base = self
            .config
            .retry_initial_ms
            .saturating_mul(1u64 << exponent)
            .min(self.config.retry_max_ms);
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let factor = 0.5 + (random % 1000) as f64 / 2000.0;
        Duration::from_millis((base as f64 * factor) as u64)
    }

    async fn dead_letter(&self, events: &[Event], error: &str) -> Result<(), ExportError> {
        let dir = &self.config.dead_letter_dir;
        let file_name: String = self
            .config
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = dir.join(format!("{file_name}.jsonl"));
        let failed = |source| ExportError::DeadLetter {
            path: path.clone(),
            source,
        };
        tokio::fs::create_dir_all(dir).await.map_err(failed)?;
        let mut lines = Vec::new();
        for event in events {
            let line = serde_json::json!({
                "integration": self.config.name,
                "attempts": self.config.max_attempts,
                "error": error,
                "event": event,
            });
            lines.extend(line.to_string().into_bytes());
            lines.push(b'\n');
        }
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await
            .map_err(failed)?;
        file.write_all(&lines).await.map_err(failed)?;
        file.sync_data().await.map_err(failed)?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn log(
        &self,
        started: OffsetDateTime,
        status: &'static str,
        fetched: i32,
        delivered: i32,
        failed: i32,
        error: Option<String>,
        health: &'static str,
    ) {
        let log = SyncLog {
            integration_id: self.id,
            started_at: started,
            completed_at: OffsetDateTime::now_utc(),
            status,
            fetched,
            delivered,
            failed,
            error,
            health,
        };
        if let Err(error) = self.store.record_sync(&log).await {
            warn!(%error, integration = %self.config.name, "Recording the export sync log failed.");
        }
    }
}

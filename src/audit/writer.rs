//! The batched writer behind the audit queue.
//!
//! `AuditHandle::record` never waits: it tries the bounded queue and, when that is full, parks the
//! record in an overflow list the writer drains first. The writer flushes a batch when it reaches
//! `batch_size` or `flush_interval` has passed. It is woken for the first case only, once a batch
//! is waiting, never per record: a wake-up per request was an eventfd write and a context switch
//! on the request's core for every request. A batch the store cannot take (down, timing out)
//! is appended to a spill journal — one checksummed JSON line per record, fsync'd per batch — and
//! the journal is replayed in order before any newer batch once the store answers again. Writes
//! are idempotent (primary keys, `ON CONFLICT DO NOTHING`), so a replay after a partial failure
//! stores every record exactly once. A record the store refuses outright (a constraint) goes to
//! the dead-letter file with the error instead of blocking the rest; a store that fails (down,
//! disk full, I/O errors: `StoreError::is_retriable`) never sends a record there.
//!
//! The journal may sit on the same full disk. A batch it cannot take is held in memory and
//! retried every `retry_interval`; while records are held the writer takes nothing new, so the
//! queue and then the overflow fill up, and beyond `overflow_limit` new records are dropped and
//! counted (`aigate_audit_dropped_total`): memory stays bounded by queue + overflow + one batch.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch, Notify};
use tracing::{error, info, warn};

use super::priority::{Scheduling, WriterPriority, WRITER_THREAD_PREFIX};
use super::record::{AuditEventRecord, AuditRecord, DecisionRecord};
use crate::metrics;
use crate::store::{Store, StoreError};

const JOURNAL_FILE: &str = "audit-spill.jsonl";
const DEAD_LETTER_FILE: &str = "audit-dead-letter.jsonl";
/// A batch whose first record waited this many flush intervals was starved of CPU.
const LATE_FLUSH_INTERVALS: u32 = 5;

#[derive(Debug, Clone)]
pub struct AuditWriterConfig {
    pub queue_capacity: usize,
    pub batch_size: usize,
    pub flush_interval: Duration,
    /// How often a non-empty journal is retried while the store is down.
    pub retry_interval: Duration,
    /// Where the spill journal and the dead-letter file live.
    pub journal_dir: PathBuf,
    /// Records parked beyond the full queue (0: drop instead of parking).
    pub overflow_limit: usize,
    /// Niceness of the writer's threads in the normal scheduling class.
    pub writer_nice: u8,
    pub writer_priority: WriterPriority,
}

/// The request path's side of the pipeline. Cheap to clone.
#[derive(Clone)]
pub struct AuditHandle {
    queue: mpsc::Sender<AuditRecord>,
    /// Queue length at which the writer is woken: a batch is waiting.
    wake_at: usize,
    /// Set once a batch is waiting (or records are parked); the writer otherwise sleeps until
    /// its flush deadline.
    batch_waiting: Arc<Notify>,
    /// The writer's scheduling class, raised from here when the queue outgrows an idle writer.
    scheduling: Arc<Scheduling>,
    overflow: Arc<Mutex<Vec<AuditRecord>>>,
    overflow_limit: usize,
    stop: watch::Sender<bool>,
    /// Resolves when the writer thread has written (or spilled) everything and stopped.
    finished: Arc<Mutex<Option<oneshot::Receiver<()>>>>,
}

impl std::fmt::Debug for AuditHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditHandle").finish_non_exhaustive()
    }
}

impl AuditHandle {
    /// Starts the writer on a thread of its own, with its own runtime and store connections,
    /// so a flush (serializing, SQLite's b-tree work) never occupies a worker that requests are
    /// queued on; it yields the CPU to requests while its backlog is short (see `priority`).
    /// Fails only when the journal directory, the runtime or the thread cannot be created.
    pub fn start(store: Arc<dyn Store>, config: AuditWriterConfig) -> std::io::Result<AuditHandle> {
        std::fs::create_dir_all(&config.journal_dir)?;
        // Its blocking threads (journal I/O) are switched with the writer, so the name prefix.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .thread_name(format!("{WRITER_THREAD_PREFIX}-io"))
            .enable_all()
            .build()?;
        let (queue, receiver) = mpsc::channel(config.queue_capacity.max(1));
        let overflow = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = watch::channel(false);
        let (finish, finished) = oneshot::channel();
        let overflow_limit = config.overflow_limit;
        let parked = overflow.clone();
        let scheduling = Arc::new(Scheduling::new(
            WRITER_THREAD_PREFIX,
            config.writer_priority,
            config.writer_nice,
            config.batch_size,
            config.flush_interval,
        ));
        let writer_scheduling = scheduling.clone();
        let batch_waiting = Arc::new(Notify::new());
        let writer_wakeup = batch_waiting.clone();
        // A queue smaller than a batch could never hold one: wake the writer when it is full.
        let wake_at = config.batch_size.clamp(1, config.queue_capacity.max(1));
        std::thread::Builder::new()
            .name(WRITER_THREAD_PREFIX.to_owned())
            .spawn(move || {
                writer_scheduling.begin();
                runtime.block_on(async move {
                    let store = store.dedicated_writer().await.unwrap_or(store);
                    let writer = Writer {
                        store,
                        journal: Journal::new(&config.journal_dir),
                        config,
                        overflow: parked,
                        held: Vec::new(),
                    };
                    writer
                        .run(receiver, stopped, writer_wakeup, writer_scheduling)
                        .await;
                });
                let _ = finish.send(());
            })?;
        Ok(AuditHandle {
            queue,
            wake_at,
            batch_waiting,
            scheduling,
            overflow,
            overflow_limit,
            stop,
            finished: Arc::new(Mutex::new(Some(finished))),
        })
    }

    /// Hands a record to the writer without waiting.
    pub fn record(&self, record: AuditRecord) {
        let result = self.queue.try_send(record);
        let queued = self.queue.max_capacity() - self.queue.capacity();
        self.scheduling.queue_grew(queued);
        if queued >= self.wake_at {
            // Stores a permit when the writer is busy: it collects the batch when it is done.
            self.batch_waiting.notify_one();
        }
        match result {
            Ok(()) => metrics::AUDIT_QUEUE_DEPTH.inc(),
            Err(
                mpsc::error::TrySendError::Full(record) | mpsc::error::TrySendError::Closed(record),
            ) => {
                // The writer is behind (or stopping): park the record; the writer spills it.
                let parked = self.overflow.lock().is_ok_and(|mut overflow| {
                    let room = overflow.len() < self.overflow_limit;
                    if room {
                        overflow.push(record);
                    }
                    room
                });
                if parked {
                    metrics::AUDIT_OVERFLOW_TOTAL.inc();
                } else {
                    metrics::AUDIT_DROPPED_TOTAL.inc();
                }
            }
        }
    }

    /// Stops the writer after it has written (or spilled) everything queued.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let finished = self.finished.lock().ok().and_then(|mut f| f.take());
        if let Some(finished) = finished {
            let _ = finished.await;
        }
    }
}

struct Writer {
    store: Arc<dyn Store>,
    journal: Journal,
    config: AuditWriterConfig,
    overflow: Arc<Mutex<Vec<AuditRecord>>>,
    /// Records neither the store nor the journal took, oldest first, retried before anything new.
    held: Vec<AuditRecord>,
}

impl Writer {
    async fn run(
        mut self,
        mut receiver: mpsc::Receiver<AuditRecord>,
        mut stopped: watch::Receiver<bool>,
        batch_waiting: Arc<Notify>,
        scheduling: Arc<Scheduling>,
    ) {
        let batch_size = self.config.batch_size.max(1);
        let mut batch = Vec::with_capacity(batch_size);
        let mut journal_pending = self.journal.has_records().await;
        loop {
            let deadline = tokio::time::Instant::now() + self.config.flush_interval;
            // The queue is not awaited record by record (each record would wake this thread):
            // it is drained when a batch is waiting or the deadline has come.
            let holding = !self.held.is_empty();
            let stopping = loop {
                // Held records go first: nothing new is taken until they are placed.
                if holding {
                    break *stopped.borrow_and_update();
                }
                // The flag, not only the change notification: a notification consumed while
                // waiting to retry the journal must still stop the writer.
                if *stopped.borrow_and_update() {
                    break true;
                }
                if take_queued(&mut receiver, &mut batch, batch_size) == Queue::Closed {
                    break true;
                }
                if batch.len() >= batch_size {
                    break false;
                }
                tokio::select! {
                    () = batch_waiting.notified() => {}
                    () = tokio::time::sleep_until(deadline) => {
                        if take_queued(&mut receiver, &mut batch, batch_size) == Queue::Closed {
                            break true;
                        }
                        break false;
                    }
                    _ = stopped.changed() => break true,
                }
            };
            if stopping {
                receiver.close();
                take_queued(&mut receiver, &mut batch, usize::MAX);
            }
            if stopping || !holding {
                self.take_overflow(&mut batch);
            }
            batch.iter_mut().for_each(AuditRecord::settle);
            // A journal to replay is a backlog of unknown size: catch up at normal priority.
            let backlog = if journal_pending {
                usize::MAX
            } else {
                batch.len() + receiver.len()
            };
            // Wall-clock age of the oldest record: a starved writer finds its queue full of
            // records that waited there, not in the batch.
            let late = batch.first().is_some_and(|first| {
                time::OffsetDateTime::now_utc() - first.timestamp()
                    > self.config.flush_interval * LATE_FLUSH_INTERVALS
            });
            scheduling.observe(backlog, late);

            scheduling.flush_begins();
            if journal_pending {
                journal_pending = !self.replay().await;
            }
            let mut records = std::mem::take(&mut self.held);
            records.append(&mut batch);
            if !records.is_empty() {
                if journal_pending {
                    // Older records are still waiting in the journal: keep the order.
                    self.spill(records).await;
                } else {
                    journal_pending = self.flush(records).await;
                }
            }
            scheduling.flush_ended();
            metrics::AUDIT_HELD_RECORDS.set(self.held.len() as i64);
            if stopping {
                if journal_pending {
                    warn!("Audit records remain in the spill journal; they are replayed at next start.");
                }
                if !self.held.is_empty() {
                    metrics::AUDIT_DROPPED_TOTAL.inc_by(self.held.len() as u64);
                    error!(
                        records = self.held.len(),
                        "Stopping with audit records neither the store nor the journal took; they are lost."
                    );
                }
                return;
            }
            if journal_pending || !self.held.is_empty() {
                tokio::select! {
                    () = tokio::time::sleep(self.config.retry_interval) => {}
                    _ = stopped.changed() => {}
                }
            }
        }
    }

    fn take_overflow(&self, batch: &mut Vec<AuditRecord>) {
        if let Ok(mut overflow) = self.overflow.lock() {
            batch.append(&mut overflow);
        }
    }

    /// Writes a batch; returns true when (part of) it had to be spilled or held.
    async fn flush(&mut self, records: Vec<AuditRecord>) -> bool {
        let started = Instant::now();
        let count = records.len() as u64;
        // Moved apart rather than cloned: copying every record's JSON was the writer's largest
        // cost. A failed batch is put back together for the journal or the isolation pass.
        let (decisions, events) = split(records);
        let written = match self.store.write_decisions(&decisions).await {
            Ok(()) => self.store.write_audit_events(&events).await,
            Err(error) => Err(error),
        };
        let error = match written {
            Ok(()) => {
                metrics::AUDIT_WRITTEN_TOTAL.inc_by(count);
                metrics::AUDIT_FLUSH_SECONDS.observe(started.elapsed().as_secs_f64());
                store_recovered();
                return false;
            }
            Err(error) => error,
        };
        let records = join(decisions, events);
        if error.is_retriable() {
            store_failed(&error, records.len());
            self.spill(records).await;
            true
        } else {
            warn!(%error, records = records.len(), "Store refused a batch; isolating the bad records.");
            self.isolate(records).await
        }
    }

    /// Writes records one at a time to find the ones the store refuses.
    async fn isolate(&mut self, records: Vec<AuditRecord>) -> bool {
        let mut retry_later = Vec::new();
        for record in records {
            match write(self.store.as_ref(), std::slice::from_ref(&record)).await {
                Ok(()) => metrics::AUDIT_WRITTEN_TOTAL.inc(),
                Err(error) if error.is_retriable() => {
                    store_failed(&error, 1);
                    retry_later.push(record);
                }
                Err(error) => {
                    metrics::AUDIT_STORE_ERRORS
                        .with_label_values(&[error.failure_kind().label()])
                        .inc();
                    self.dead_letter(record, &error).await;
                }
            }
        }
        let spilled = !retry_later.is_empty();
        if spilled {
            self.spill(retry_later).await;
        }
        spilled
    }

    /// Appends to the journal; what it cannot take stays in memory, ahead of newer records.
    async fn spill(&mut self, records: Vec<AuditRecord>) {
        let count = records.len() as u64;
        match self.journal.append(&records).await {
            Ok(()) => metrics::AUDIT_SPILLED_TOTAL.inc_by(count),
            Err(error) => {
                metrics::AUDIT_JOURNAL_ERRORS.inc();
                error!(
                    %error,
                    records = count,
                    held = self.held.len() as u64 + count,
                    "Cannot write the spill journal; holding the audit records in memory and retrying."
                );
                self.held.extend(records);
            }
        }
    }

    async fn dead_letter(&self, record: AuditRecord, error: &StoreError) {
        metrics::AUDIT_DEAD_LETTER_TOTAL.inc();
        let line = serde_json::json!({ "error": error.to_string(), "record": record }).to_string();
        let path = self.journal.dir.join(DEAD_LETTER_FILE);
        let result = tokio::task::spawn_blocking(move || append_lines(&path, &[line])).await;
        if !matches!(result, Ok(Ok(()))) {
            error!("Cannot write the dead-letter file; a refused audit record is lost.");
        }
    }

    /// Replays the journal in order; returns true when it is empty afterwards.
    async fn replay(&self) -> bool {
        let (records, corrupt) = match self.journal.read().await {
            Ok(read) => read,
            Err(error) => {
                error!(%error, "Cannot read the spill journal.");
                return false;
            }
        };
        for line in corrupt {
            metrics::AUDIT_DEAD_LETTER_TOTAL.inc();
            warn!(
                bytes = line.len(),
                "Spill journal line is corrupt (checksum or format); moved to the dead-letter file."
            );
            let path = self.journal.dir.join(DEAD_LETTER_FILE);
            let entry =
                serde_json::json!({ "error": "corrupt journal line", "line": line }).to_string();
            let _ = tokio::task::spawn_blocking(move || append_lines(&path, &[entry])).await;
        }
        for chunk in records.chunks(self.config.batch_size.max(1)) {
            match write(self.store.as_ref(), chunk).await {
                Ok(()) => {
                    metrics::AUDIT_REPLAYED_TOTAL.inc_by(chunk.len() as u64);
                    store_recovered();
                }
                Err(error) if error.is_retriable() => {
                    store_failed(&error, chunk.len());
                    return false;
                }
                Err(_) => {
                    for record in chunk {
                        match write(self.store.as_ref(), std::slice::from_ref(record)).await {
                            Ok(()) => metrics::AUDIT_REPLAYED_TOTAL.inc(),
                            Err(error) if error.is_retriable() => {
                                store_failed(&error, 1);
                                return false;
                            }
                            Err(error) => self.dead_letter(record.clone(), &error).await,
                        }
                    }
                }
            }
        }
        if let Err(error) = self.journal.clear().await {
            error!(%error, "Cannot truncate the replayed spill journal; it will be replayed again (idempotently).");
            return false;
        }
        info!(
            records = records.len(),
            "Spill journal replayed into the store."
        );
        true
    }
}

/// Raises the alarm for a store that failed a write it should have taken: counted by kind, the
/// gauge set, and an error logged when the store starts failing (not on every retry).
fn store_failed(error: &StoreError, records: usize) {
    let kind = error.failure_kind().label();
    metrics::AUDIT_STORE_ERRORS.with_label_values(&[kind]).inc();
    if metrics::AUDIT_STORE_FAILING.get() == 0 {
        error!(%error, kind, records, "Store failing audit writes; spilling to the journal and retrying.");
    } else {
        warn!(%error, kind, records, "Store still failing audit writes.");
    }
    metrics::AUDIT_STORE_FAILING.set(1);
}

fn store_recovered() {
    if metrics::AUDIT_STORE_FAILING.get() != 0 {
        metrics::AUDIT_STORE_FAILING.set(0);
        info!("Store accepts audit writes again.");
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Queue {
    Open,
    /// Every handle is gone: nothing more can arrive.
    Closed,
}

/// Moves queued records into `batch` until it holds `limit` or the queue is empty.
fn take_queued(
    receiver: &mut mpsc::Receiver<AuditRecord>,
    batch: &mut Vec<AuditRecord>,
    limit: usize,
) -> Queue {
    while batch.len() < limit {
        match receiver.try_recv() {
            Ok(record) => {
                metrics::AUDIT_QUEUE_DEPTH.dec();
                batch.push(record);
            }
            Err(mpsc::error::TryRecvError::Empty) => return Queue::Open,
            Err(mpsc::error::TryRecvError::Disconnected) => return Queue::Closed,
        }
    }
    Queue::Open
}

fn split(records: Vec<AuditRecord>) -> (Vec<DecisionRecord>, Vec<AuditEventRecord>) {
    let mut decisions = Vec::with_capacity(records.len());
    let mut events = Vec::new();
    for record in records {
        match record {
            AuditRecord::Decision(decision) => decisions.push(*decision),
            AuditRecord::Event(event) => events.push(*event),
        }
    }
    (decisions, events)
}

fn join(decisions: Vec<DecisionRecord>, events: Vec<AuditEventRecord>) -> Vec<AuditRecord> {
    decisions
        .into_iter()
        .map(|d| AuditRecord::Decision(Box::new(d)))
        .chain(events.into_iter().map(|e| AuditRecord::Event(Box::new(e))))
        .collect()
}

async fn write(store: &dyn Store, records: &[AuditRecord]) -> Result<(), StoreError> {
    let mut decisions = Vec::new();
    let mut events = Vec::new();
    for record in records {
        match record {
            AuditRecord::Decision(decision) => decisions.push(decision.as_ref().clone()),
            AuditRecord::Event(event) => events.push(event.as_ref().clone()),
        }
    }
    store.write_decisions(&decisions).await?;
    store.write_audit_events(&events).await
}

/// The on-disk spill journal: `crc32-hex SP json LF` per record.
struct Journal {
    dir: PathBuf,
    path: PathBuf,
}

impl Journal {
    fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            path: dir.join(JOURNAL_FILE),
        }
    }

    async fn has_records(&self) -> bool {
        tokio::fs::metadata(&self.path)
            .await
            .is_ok_and(|m| m.len() > 0)
    }

    async fn append(&self, records: &[AuditRecord]) -> std::io::Result<()> {
        let lines: Vec<String> = records
            .iter()
            .filter_map(|record| serde_json::to_string(record).ok())
            .map(|json| format!("{:08x} {json}", crc32fast::hash(json.as_bytes())))
            .collect();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || append_lines(&path, &lines))
            .await
            .map_err(std::io::Error::other)?
    }

    /// Every intact record in order, and the raw lines that failed their checksum.
    async fn read(&self) -> std::io::Result<(Vec<AuditRecord>, Vec<String>)> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let file = match std::fs::File::open(&path) {
                Ok(file) => file,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    return Ok((Vec::new(), Vec::new()))
                }
                Err(error) => return Err(error),
            };
            let mut records = Vec::new();
            let mut corrupt = Vec::new();
            for line in BufReader::new(file).lines() {
                let line = line?;
                if line.is_empty() {
                    continue;
                }
                match parse_line(&line) {
                    Some(record) => records.push(record),
                    None => corrupt.push(line),
                }
            }
            Ok((records, corrupt))
        })
        .await
        .map_err(std::io::Error::other)?
    }

    async fn clear(&self) -> std::io::Result<()> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            match OpenOptions::new().write(true).truncate(true).open(&path) {
                Ok(file) => file.sync_all(),
                // Never created (its first append failed): nothing to clear.
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(error) => Err(error),
            }
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

fn parse_line(line: &str) -> Option<AuditRecord> {
    let (checksum, json) = line.split_once(' ')?;
    let expected = u32::from_str_radix(checksum, 16).ok()?;
    if crc32fast::hash(json.as_bytes()) != expected {
        return None;
    }
    serde_json::from_str(json).ok()
}

/// Appends lines and fsyncs: a spilled batch survives a crash right after. All or nothing: a
/// failed append (a full disk) is cut back off, since a torn line would swallow the next good
/// one at replay, and the caller keeps the records.
fn append_lines(path: &Path, lines: &[String]) -> std::io::Result<()> {
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    let length = file.metadata()?.len();
    let mut buffer = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for line in lines {
        buffer.push_str(line);
        buffer.push('\n');
    }
    let written = file
        .write_all(buffer.as_bytes())
        .and_then(|()| file.sync_data());
    if written.is_err() {
        // Shrinking needs no space; should it fail too, the checksum still catches the torn line.
        let _ = file.set_len(length);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_lines_detect_corruption() {
        let record = AuditRecord::Event(Box::new(crate::audit::AuditEventRecord {
            event_id: uuid::Uuid::now_v7(),
            timestamp: time::OffsetDateTime::now_utc(),
            event_type: "test".into(),
            severity: "info".into(),
            actor_id: None,
            actor_email: None,
            actor_type: Some("system".into()),
            target_type: None,
            target_id: None,
            target_name: None,
            action: "test".into(),
            result: None,
            decision_id: None,
            source: None,
            ip_address: None,
            event_data: None,
            changes: None,
        }));
        let json = serde_json::to_string(&record).unwrap();
        let line = format!("{:08x} {json}", crc32fast::hash(json.as_bytes()));
        assert_eq!(parse_line(&line), Some(record));
        let tampered = line.replace("test", "tset");
        assert_eq!(parse_line(&tampered), None);
        assert_eq!(parse_line("garbage"), None);
    }
}

//! Storage faults through the real gateway binary: the store's disk (and the spill journal's)
//! fills up mid-traffic and frees again. Every decision must land exactly once, and the
//! gateway's own metrics must count only what was committed and raise the alarm meanwhile.
//!
//! Needs root (it mounts small tmpfs file systems) and, for the PostgreSQL variant, the local
//! cluster running as the `postgres` user on this machine (a tablespace lives on the tmpfs).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sqlx::Connection;

use crate::support::process::GatewayProcess;
use crate::support::{repo_path, Origin};

/// A tmpfs mounted on a temporary directory, unmounted when dropped (even by a failing test).
struct Tmpfs {
    dir: tempfile::TempDir,
    mounted: bool,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=1777"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(
            status.success(),
            "mounting a tmpfs needs root (the fault tests run as root in CI)"
        );
        Tmpfs { dir, mounted: true }
    }

    /// Stands in for a tmpfs that must stay mounted (see `PgOnTmpfs`).
    fn leaked() -> Tmpfs {
        Tmpfs {
            dir: tempfile::tempdir().unwrap(),
            mounted: false,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a filler file until the file system has no space left.
    fn fill(&self) {
        let mut file = std::fs::File::create(self.filler()).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        loop {
            match file.write(&chunk) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        // Whatever the page cache still holds must be on the tmpfs now.
        let _ = file.sync_all();
    }

    fn free(&self) {
        std::fs::remove_file(self.filler()).unwrap();
    }

    fn filler(&self) -> PathBuf {
        self.path().join("filler")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if !self.mounted {
            return;
        }
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// The gateway binary under test.
struct Gateway {
    process: GatewayProcess,
}

impl Gateway {
    async fn start(config: &str, dir: &Path) -> Gateway {
        let path = dir.join("aigate.toml");
        std::fs::write(&path, config).unwrap();
        Gateway {
            process: GatewayProcess::start(&path).await,
        }
    }

    async fn metric(&self, name: &str) -> f64 {
        let text = reqwest::get(format!("http://{}/metrics", self.process.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|line| {
                let (key, value) = line.rsplit_once(' ')?;
                (key == name).then(|| value.parse().unwrap())
            })
            .unwrap_or_else(|| panic!("no metric {name}"))
    }

    /// Sends decisions through the proxy: each request to the AI host is one decision row.
    async fn send(&self, client: &reqwest::Client, from: usize, count: usize) {
        for i in from..from + count {
            let response = client
                .post(format!("http://api.openai.com/v1/fault/{i}"))
                .header("content-type", "application/json")
                .body(r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hello"}]}"#)
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                200,
                "the audit trail must never block traffic"
            );
        }
    }

    fn stop(mut self) {
        let pid = self.process.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let status = self.process.child.wait().unwrap();
        assert!(status.success(), "{status}");
    }
}

/// Where the test reads what actually landed.
enum Rows {
    Sqlite(String),
    Postgres(String),
}

impl Rows {
    /// (decision rows, distinct decision ids, audit event rows)
    async fn count(&self) -> (i64, i64, i64) {
        const DECISIONS: &str =
            "SELECT count(*), count(DISTINCT decision_id) FROM decisions WHERE resource_url LIKE '%/v1/fault/%'";
        const EVENTS: &str = "SELECT count(*) FROM audit_events";
        match self {
            Rows::Sqlite(url) => {
                let mut db = sqlx::SqliteConnection::connect(url).await.unwrap();
                let (all, distinct): (i64, i64) =
                    sqlx::query_as(DECISIONS).fetch_one(&mut db).await.unwrap();
                let events: i64 = sqlx::query_scalar(EVENTS).fetch_one(&mut db).await.unwrap();
                (all, distinct, events)
            }
            Rows::Postgres(url) => {
                let mut db = sqlx::PgConnection::connect(url).await.unwrap();
                let (all, distinct): (i64, i64) =
                    sqlx::query_as(DECISIONS).fetch_one(&mut db).await.unwrap();
                let events: i64 = sqlx::query_scalar(EVENTS).fetch_one(&mut db).await.unwrap();
                (all, distinct, events)
            }
        }
    }
}

fn config(dir: &Path, store_url: &str, journal_dir: &Path, origin: std::net::SocketAddr) -> String {
    let policies = crate::support::shipped_policies_without(dir, &["review-unapproved-ai"]);
    format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [tls]\nca_dir = \"{dir}/certs\"\n[store]\nurl = \"{store_url}\"\n\
         [audit]\njournal_dir = \"{journal}\"\nbatch_size = 10\nflush_interval_ms = 20\nretry_interval_ms = 100\n\
         [catalog]\ndir = \"{catalog}\"\n\
         [upstream.resolve]\n\"api.openai.com\" = \"{origin}\"\n\
         [policy]\ndir = \"{policies}\"\n[policy.defaults]\nreview_required = \"allow\"\nunknown = \"allow\"\n",
        dir = dir.display(),
        journal = journal_dir.display(),
        catalog = repo_path("config/catalog").display(),
        policies = policies.display(),
    )
}

/// Fills the store's disk mid-traffic, then frees it, and checks every decision and the metrics.
async fn disk_full_loses_nothing(
    store: &Tmpfs,
    store_url: &str,
    rows: Rows,
    journal_on_store_disk: bool,
) {
    const BEFORE: usize = 20;
    const DURING: usize = 100;
    const AFTER: usize = 40;
    let origin = Origin::start_plain().await;
    let dir = tempfile::tempdir().unwrap();
    let journal = if journal_on_store_disk {
        store.path().join("journal")
    } else {
        dir.path().join("journal")
    };
    let gateway = Gateway::start(
        &config(dir.path(), store_url, &journal, origin.addr),
        dir.path(),
    )
    .await;
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(format!("http://{}", gateway.process.proxy)).unwrap())
        .build()
        .unwrap();

    gateway.send(&client, 0, BEFORE).await;
    wait_for(&rows, BEFORE).await;

    store.fill();
    gateway.send(&client, BEFORE, DURING).await;
    // Several flushes and retries against the full disk.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        gateway.metric("aigate_audit_store_failing").await,
        1.0,
        "the alarm gauge"
    );
    assert!(
        gateway
            .metric("aigate_audit_store_errors_total{kind=\"disk_full\"}")
            .await
            > 0.0,
        "disk-full errors must be counted as such"
    );
    assert_eq!(gateway.metric("aigate_audit_dead_letter_total").await, 0.0);
    if journal_on_store_disk {
        assert!(gateway.metric("aigate_audit_journal_errors_total").await > 0.0);
        assert!(gateway.metric("aigate_audit_held_records").await > 0.0);
    }
    assert_counts_only_committed(&gateway, &rows).await;

    store.free();
    gateway.send(&client, BEFORE + DURING, AFTER).await;
    let total = BEFORE + DURING + AFTER;
    wait_for(&rows, total).await;
    let (all, distinct, _) = rows.count().await;
    assert_eq!(
        (all, distinct),
        (total as i64, total as i64),
        "every decision exactly once"
    );
    // The writer may still be replaying; wait for it to settle before comparing the counters.
    let deadline = Instant::now() + Duration::from_secs(10);
    while gateway.metric("aigate_audit_store_failing").await != 0.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(gateway.metric("aigate_audit_store_failing").await, 0.0);
    assert_eq!(gateway.metric("aigate_audit_held_records").await, 0.0);
    assert_eq!(gateway.metric("aigate_audit_dropped_total").await, 0.0);
    assert_eq!(gateway.metric("aigate_audit_dead_letter_total").await, 0.0);
    assert_counts_only_committed(&gateway, &rows).await;
    let errors = gateway.process.log.lock().unwrap().join("\n");
    assert!(
        errors.contains("Store failing audit writes"),
        "the failure must be logged as an error"
    );
    gateway.stop();
    let (all, distinct, _) = rows.count().await;
    assert_eq!(
        (all, distinct),
        (total as i64, total as i64),
        "nothing more after the stop"
    );
}

/// Records counted as written or replayed must all be rows in the store.
async fn assert_counts_only_committed(gateway: &Gateway, rows: &Rows) {
    let counted = gateway.metric("aigate_audit_written_total").await
        + gateway.metric("aigate_audit_replayed_total").await;
    let (decisions, _, events) = rows.count().await;
    assert_eq!(
        counted as i64,
        decisions + events,
        "the written/replayed counters must match committed rows"
    );
}

async fn wait_for(rows: &Rows, expected: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (all, _, _) = rows.count().await;
        if all as usize >= expected || Instant::now() > deadline {
            assert_eq!(all as usize, expected, "decision rows in the store");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_disk_full_loses_no_decision_and_counts_only_commits() {
    let disk = Tmpfs::mount("16m");
    let url = format!("sqlite://{}/aigate.db", disk.path().display());
    let rows = Rows::Sqlite(url.clone());
    disk_full_loses_nothing(&disk, &url, rows, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_and_journal_on_one_full_disk_hold_records_in_memory_until_space_returns() {
    let disk = Tmpfs::mount("16m");
    let url = format!("sqlite://{}/aigate.db", disk.path().display());
    let rows = Rows::Sqlite(url.clone());
    disk_full_loses_nothing(&disk, &url, rows, true).await;
}

/// A PostgreSQL database whose tablespace lives on a tmpfs the test can fill. Dropped in this
/// order even when the test fails: space freed, database and tablespace dropped, then the tmpfs
/// unmounted. A tablespace whose files vanish under a live cluster fails every checkpoint of that
/// cluster (and so every other test's DROP DATABASE), so the unmount must come last.
struct PgOnTmpfs {
    disk: Tmpfs,
    server: String,
    tablespace: String,
    database: String,
}

impl PgOnTmpfs {
    async fn create(size: &str) -> PgOnTmpfs {
        let disk = Tmpfs::mount(size);
        let location = disk.path().join("pg");
        std::fs::create_dir(&location).unwrap();
        let postgres = user_id("postgres");
        std::os::unix::fs::chown(&location, Some(postgres), Some(postgres)).unwrap();
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let guard = PgOnTmpfs {
            disk,
            server: "postgres://postgres@127.0.0.1:5432".to_owned(),
            tablespace: format!("aigate_ts_{suffix}"),
            database: format!("aigate_test_{suffix}"),
        };
        let mut admin = guard.admin().await;
        for sql in [
            format!(
                "CREATE TABLESPACE {} LOCATION '{}'",
                guard.tablespace,
                location.display()
            ),
            format!(
                "CREATE DATABASE {} TABLESPACE {}",
                guard.database, guard.tablespace
            ),
        ] {
            sqlx::query(&sql).execute(&mut admin).await.unwrap();
        }
        guard
    }

    async fn admin(&self) -> sqlx::PgConnection {
        sqlx::PgConnection::connect(&format!("{}/postgres", self.server))
            .await
            .unwrap()
    }

    fn url(&self) -> String {
        format!("{}/{}", self.server, self.database)
    }
}

impl Drop for PgOnTmpfs {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.disk.filler());
        let statements = [
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.database),
            format!("DROP TABLESPACE IF EXISTS {}", self.tablespace),
        ];
        let server = self.server.clone();
        // A runtime of its own: this may run while the test's runtime unwinds.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres")).await?;
                for sql in &statements {
                    sqlx::query(sql).execute(&mut admin).await?;
                }
                Ok::<_, sqlx::Error>(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            // Unmounting now would strand the tablespace: leave the tmpfs for an operator.
            eprintln!(
                "could not drop {} / {}: the tmpfs at {} stays mounted",
                self.database,
                self.tablespace,
                self.disk.path().display()
            );
            std::mem::forget(std::mem::replace(&mut self.disk, Tmpfs::leaked()));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tablespace_full_loses_no_decision_and_counts_only_commits() {
    let pg = PgOnTmpfs::create("64m").await;
    let url = pg.url();
    disk_full_loses_nothing(&pg.disk, &url, Rows::Postgres(url.clone()), false).await;
}

fn user_id(name: &str) -> u32 {
    let output = Command::new("id").args(["-u", name]).output().unwrap();
    String::from_utf8(output.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

//! The gateway binary as a process of its own (signals, a fleet, a full disk): started from a
//! config file, its stderr collected, killed when dropped.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct GatewayProcess {
    pub child: Child,
    pub log: Arc<Mutex<Vec<String>>>,
    /// `host:port` of the explicit proxy and of the management listener.
    pub proxy: String,
    pub admin: String,
}

impl GatewayProcess {
    /// Runs `aigate run --config CONFIG` and waits until it listens.
    pub async fn start(config: &Path) -> GatewayProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_aigate"))
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = collect_log(&mut child);
        let listening = log_line(&log, "Gateway listening").await;
        let field = |name: &str| {
            listening
                .split_whitespace()
                .find_map(|f| f.strip_prefix(name))
                .unwrap()
                .to_owned()
        };
        GatewayProcess {
            proxy: field("proxy="),
            admin: field("admin="),
            child,
            log,
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary's stderr, collected line by line for assertions.
pub fn collect_log(child: &mut Child) -> Arc<Mutex<Vec<String>>> {
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let stderr = child.stderr.take().unwrap();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            sink.lock().unwrap().push(line);
        }
    });
    log
}

/// The first log line containing `needle`, waiting up to 20 s for it.
pub async fn log_line(log: &Mutex<Vec<String>>, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(line) = log.lock().unwrap().iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "no log line containing {needle:?}:\n{}",
        log.lock().unwrap().join("\n")
    );
}

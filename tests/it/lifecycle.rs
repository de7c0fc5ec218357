//! The `aigate` binary as an operator runs it: check-config, SIGHUP reload, SIGTERM drain.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::repo_path;

fn write_config(dir: &std::path::Path) -> std::path::PathBuf {
    let config = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[tls]\nca_dir = \"{dir}/certs\"\n\
         [store]\nurl = \"sqlite://{dir}/aigate.db\"\n[audit]\njournal_dir = \"{dir}/journal\"\n\
         [catalog]\ndir = \"{catalog}\"\n[policy]\ndir = \"{policies}\"\n",
        dir = dir.display(),
        catalog = repo_path("config/catalog").display(),
        policies = repo_path("config/policies").display(),
    );
    let path = dir.join("aigate.toml");
    std::fs::write(&path, config).unwrap();
    path
}

#[test]
fn check_config_accepts_the_shipped_config_and_names_what_is_wrong() {
    let bin = env!("CARGO_BIN_EXE_aigate");
    let ok = Command::new(bin)
        .args(["check-config", "--config"])
        .arg(repo_path("config/aigate.toml"))
        .current_dir(repo_path(""))
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("35 services"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[policy]\ndir = \"/nonexistent/policies\"\n").unwrap();
    let failed = Command::new(bin)
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!failed.status.success());
    assert!(
        String::from_utf8_lossy(&failed.stderr).contains("[policy] dir"),
        "{}",
        String::from_utf8_lossy(&failed.stderr)
    );
}

#[test]
fn sighup_reloads_and_sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_aigate"))
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let wait_for = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(line) = lines_rx.recv_timeout(Duration::from_millis(200)) {
                if line.contains(needle) {
                    return line;
                }
            }
        }
        panic!("no log line containing {needle:?}");
    };
    wait_for("Gateway listening");
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    wait_for("SIGHUP: snapshot reloaded");
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    wait_for("SIGTERM received");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}

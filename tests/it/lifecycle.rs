//! The `aigate` binary as an operator runs it: check-config, SIGHUP reload, SIGTERM drain.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::process::{collect_log, log_line};
use crate::support::{
    gateway_tls_config, repo_path, shipped_policies_without, upstream_ca, Origin,
};

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
    let listening = wait_for("Gateway listening");
    let proxy = listening
        .split("proxy=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_owned();
    let pid = child.id().to_string();
    let hangup = || {
        assert!(Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success())
    };
    // A plain request through the proxy, answered without any upstream (the target does not
    // resolve): its status line.
    let status_line = || {
        use std::io::{Read, Write};
        let mut socket = std::net::TcpStream::connect(&proxy).unwrap();
        socket
            .write_all(b"GET http://nowhere.invalid/ HTTP/1.1\r\nHost: nowhere.invalid\r\n\r\n")
            .unwrap();
        let mut answer = [0u8; 256];
        let read = socket.read(&mut answer).unwrap();
        String::from_utf8_lossy(&answer[..read])
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    hangup();
    wait_for("SIGHUP: configuration and snapshot reloaded");
    assert!(!status_line().contains(" 407 "));

    // The file now requires proxy authentication (applies at once), moves the listener and
    // turns on busy polling (both need a restart, and it says so).
    let text = std::fs::read_to_string(&config).unwrap();
    let changed = text.replacen(
        "[proxy]\nlisten = \"127.0.0.1:0\"",
        "[proxy]\nlisten = \"127.0.0.1:3999\"\nbusy_poll_us = 50",
        1,
    ) + "[identity]\nrequire_proxy_auth = true\n";
    std::fs::write(&config, &changed).unwrap();
    hangup();
    let restart = wait_for("apply only after a restart");
    assert!(restart.contains("[proxy] listen"), "{restart}");
    assert!(restart.contains("[proxy] busy_poll_us"), "{restart}");
    assert!(
        status_line().contains(" 407 "),
        "require_proxy_auth applied"
    );

    // A broken file changes nothing.
    std::fs::write(&config, changed.clone() + "[identity]\nbogus = 1\n").unwrap();
    hangup();
    wait_for("SIGHUP: reload rejected");
    assert!(status_line().contains(" 407 "));
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    wait_for("SIGTERM received");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}

/// A TLS client for the intercepted inside of a CONNECT tunnel, trusting the gateway CA only.
fn gateway_tls_client(ca_pem: &str) -> tokio_rustls::TlsConnector {
    let mut config = gateway_tls_config(ca_pem, rustls::crypto::ring::default_provider());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[test]
fn sigterm_drains_an_upload_in_flight_and_refuses_new_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let upstream_ca = upstream_ca();
    let origin = runtime.block_on(Origin::start_tls(&upstream_ca, &["api.openai.com"]));
    let dir = tempfile::tempdir().unwrap();
    let roots = dir.path().join("upstream-ca.pem");
    std::fs::write(&roots, upstream_ca.cert_pem()).unwrap();
    let policies = shipped_policies_without(dir.path(), &["review-unapproved-ai"]);
    let config = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\ndrain_timeout_secs = 20\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [tls]\nca_dir = \"{dir}/certs\"\n[store]\nurl = \"sqlite://{dir}/aigate.db\"\n\
         [audit]\njournal_dir = \"{dir}/journal\"\n[catalog]\ndir = \"{catalog}\"\n\
         [upstream]\nextra_roots = [\"{roots}\"]\n[upstream.resolve]\n\"api.openai.com\" = \"{origin}\"\n\
         [policy]\ndir = \"{policies}\"\n[policy.defaults]\nreview_required = \"allow\"\nunknown = \"allow\"\n",
        dir = dir.path().display(),
        catalog = repo_path("config/catalog").display(),
        roots = roots.display(),
        origin = origin.addr,
        policies = policies.display(),
    );
    let config_path = dir.path().join("aigate.toml");
    std::fs::write(&config_path, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_aigate"))
        .args(["run", "--config"])
        .arg(&config_path)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = collect_log(&mut child);
    let pid = child.id().to_string();

    const CHUNKS: usize = 10;
    const CHUNK_BYTES: usize = 1000;
    let uploaded = runtime.block_on(async {
        let listening = log_line(&log, "Gateway listening").await;
        let proxy: std::net::SocketAddr = listening
            .split_whitespace()
            .find_map(|field| field.strip_prefix("proxy="))
            .unwrap()
            .parse()
            .unwrap();

        let mut tcp = tokio::net::TcpStream::connect(proxy).await.unwrap();
        tcp.write_all(b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n\r\n")
            .await
            .unwrap();
        let mut established = [0u8; 39];
        tcp.read_exact(&mut established).await.unwrap();
        assert!(established.starts_with(b"HTTP/1.1 200"));
        let ca_pem = std::fs::read_to_string(dir.path().join("certs/ca.pem")).unwrap();
        let server_name = rustls::pki_types::ServerName::try_from("api.openai.com").unwrap();
        let mut tls = gateway_tls_client(&ca_pem)
            .connect(server_name, tcp)
            .await
            .unwrap();

        // A prompt of CHUNKS * CHUNK_BYTES bytes, sent over about two seconds.
        let prefix = br#"{"model":"gpt-4o","messages":[{"role":"user","content":""#;
        let suffix = br#""}]}"#;
        let text_len = CHUNKS * CHUNK_BYTES - prefix.len() - suffix.len();
        let mut body = prefix.to_vec();
        body.extend(std::iter::repeat_n(b'a', text_len));
        body.extend_from_slice(suffix);
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        tls.write_all(head.as_bytes()).await.unwrap();
        for (index, chunk) in body.chunks(CHUNK_BYTES).enumerate() {
            tls.write_all(chunk).await.unwrap();
            tls.flush().await.unwrap();
            if index == 2 {
                assert!(Command::new("kill")
                    .args(["-TERM", &pid])
                    .status()
                    .unwrap()
                    .success());
                // Logged once the listeners have closed.
                log_line(&log, "Draining connections in flight").await;
                let refused = tokio::net::TcpStream::connect(proxy).await;
                assert!(
                    refused.is_err(),
                    "a new connection was accepted after SIGTERM"
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut response = Vec::new();
        // The response is framed by Content-Length; the connection then closes with or without
        // a TLS close_notify (pingora drops a non-reusable stream), which is not at issue here.
        let read = tls.read_to_end(&mut response).await;
        assert!(
            read.as_ref()
                .map_or_else(|e| e.kind() == std::io::ErrorKind::UnexpectedEof, |_| true),
            "{read:?}"
        );
        let response = String::from_utf8_lossy(&response).into_owned();
        assert!(response.starts_with("HTTP/1.1 200"), "{response} ({read:?})\n{}", log.lock().unwrap().join("\n"));
        body.len()
    });

    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "{status}\n{}",
        log.lock().unwrap().join("\n")
    );
    let seen = origin.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].body.len(),
        uploaded,
        "the whole upload reached the origin"
    );
    assert!(log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("All connections drained")));

    // The process is gone; its decision must already be in the store.
    let rows: Vec<(String, Option<String>)> = runtime.block_on(async {
        use sqlx::Connection;
        let url = format!("sqlite://{}", dir.path().join("aigate.db").display());
        let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query_as("SELECT decision, resource_url FROM decisions")
            .fetch_all(&mut db)
            .await
            .unwrap()
    });
    assert_eq!(
        rows,
        vec![(
            "ALLOW".to_owned(),
            Some("https://api.openai.com/v1/chat/completions".to_owned())
        )]
    );
}

#[test]
fn the_shipped_appliance_config_passes_check_config() {
    // Installed paths (/etc/aigate, /var/lib/aigate) pointed at the repository and a scratch
    // directory, as .ci/run does.
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo_path("config/aigate-transparent.toml"))
        .unwrap()
        .replace(
            "/etc/aigate/",
            &format!("{}/", repo_path("config").display()),
        )
        .replace("/var/lib/aigate", &dir.path().display().to_string());
    let path = dir.path().join("aigate-transparent.toml");
    std::fs::write(&path, text).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_aigate"))
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

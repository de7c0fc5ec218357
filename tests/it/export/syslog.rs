//! rsyslog (from apt) as the syslog receiver: RFC 5424 with octet counting over TCP and TLS
//! (gtls driver), written to a file the tests read.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use super::{admin_changes, count_eventually, entry, open_store};

/// A private rsyslogd: imtcp on loopback ports (one plain, one TLS with the gtls driver), every
/// message written as "<msgid> <structured data> <msg>" to `out.log`.
struct Rsyslog {
    child: std::process::Child,
    out: std::path::PathBuf,
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_rsyslog(dir: &Path, tcp_port: u16, tls_port: u16) -> Rsyslog {
    let ca = aigate::tls::CertificateAuthority::generate_in_memory("export test CA").unwrap();
    let (chain, key) = ca.issue_server_cert(&["localhost"]).unwrap();
    let cert_pem = pem::encode(&pem::Pem::new("CERTIFICATE", chain[0].to_vec()));
    let key_pem = pem::encode(&pem::Pem::new("PRIVATE KEY", key.secret_der().to_vec()));
    std::fs::write(dir.join("ca.pem"), ca.cert_pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), key_pem).unwrap();
    let out = dir.join("out.log");
    let d = dir.display();
    let config = format!(
        r#"global(workDirectory="{d}")
module(load="imtcp")
template(name="line" type="string" string="%msgid% %structured-data% %msg%\n")
ruleset(name="export") {{
    action(type="omfile" file="{out}" template="line")
}}
input(type="imtcp" address="127.0.0.1" port="{tcp_port}" ruleset="export")
input(type="imtcp" address="127.0.0.1" port="{tls_port}" ruleset="export"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon"
      streamDriver.CAFile="{d}/ca.pem" streamDriver.CertFile="{d}/cert.pem"
      streamDriver.KeyFile="{d}/key.pem")
"#,
        out = out.display()
    );
    let config_path = dir.join("rsyslog.conf");
    std::fs::write(&config_path, config).unwrap();
    let child = spawn_rsyslogd(dir);
    Rsyslog { child, out }
}

fn spawn_rsyslogd(dir: &Path) -> std::process::Child {
    std::process::Command::new("rsyslogd")
        .arg("-n")
        .arg("-f")
        .arg(dir.join("rsyslog.conf"))
        .arg("-i")
        .arg(dir.join("rsyslogd.pid"))
        .spawn()
        .expect("rsyslogd (apt-get install -y rsyslog rsyslog-gnutls)")
}

impl Rsyslog {
    /// Kills rsyslogd (its connections drop) and starts it again on the same ports once the
    /// exporter has seen the outage.
    async fn restart_after(&mut self, outage_seen: impl std::future::Future<Output = ()>) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        outage_seen.await;
        let dir = self.out.parent().unwrap().to_owned();
        let _ = std::fs::remove_file(dir.join("rsyslogd.pid"));
        self.child = spawn_rsyslogd(&dir);
    }
}

/// Lines of rsyslog's file once it holds `at_least` lines.
async fn syslog_lines(rsyslog: &Rsyslog, at_least: usize) -> Vec<String> {
    for _ in 0..600 {
        if let Ok(text) = std::fs::read_to_string(&rsyslog.out) {
            let lines: Vec<String> = text.lines().map(str::to_owned).collect();
            if lines.len() >= at_least {
                return lines;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "rsyslog wrote fewer than {at_least} lines in 30 s: {:?}",
        std::fs::read_to_string(&rsyslog.out)
    );
}

async fn wait_listening(port: u16) {
    for _ in 0..600 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("rsyslogd did not listen on {port}");
}

#[tokio::test]
async fn rsyslog_receives_json_over_tcp_and_cef_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path()).await;
    let (tcp_port, tls_port) = (free_port(), free_port());
    let rsyslog = start_rsyslog(dir.path(), tcp_port, tls_port);
    wait_listening(tcp_port).await;
    wait_listening(tls_port).await;
    let expected = admin_changes(store.as_ref(), 6).await;
    let tcp = entry(&format!(
        "name = \"syslog-json\"\nkind = \"syslog\"\naddress = \"127.0.0.1:{tcp_port}\"\n\
         batch_size = 4\npoll_interval_ms = 50\nsettle_ms = 0\n"
    ));
    let tls = entry(&format!(
        "name = \"syslog-cef\"\nkind = \"syslog\"\naddress = \"127.0.0.1:{tls_port}\"\ntls = true\n\
         server_name = \"localhost\"\nca_file = \"{}\"\nformat = \"cef\"\n\
         batch_size = 4\npoll_interval_ms = 50\nsettle_ms = 0\n",
        dir.path().join("ca.pem").display()
    ));
    let exporter = tokio::spawn(aigate::export::run(vec![tcp, tls], store.clone()));
    let lines = syslog_lines(&rsyslog, 2 * expected.len()).await;
    exporter.abort();

    let mut by_format: HashMap<&str, BTreeSet<String>> = HashMap::new();
    for line in &lines {
        let (msgid, rest) = line.split_once(' ').unwrap();
        assert_eq!(msgid, "policy_updated", "{line}");
        let (data, message) = rest.split_once("] ").unwrap();
        let id = data
            .strip_prefix("[aigate@32473 id=\"")
            .and_then(|d| d.strip_suffix('"'))
            .unwrap_or_else(|| panic!("structured data: {line}"))
            .to_owned();
        let message = message.trim();
        if let Some(cef) = message.strip_prefix("CEF:0|aigate|aigate|") {
            assert!(cef.contains(&format!("externalId={id}")), "{line}");
            assert!(cef.contains("|policy_updated|update|1|"), "{line}");
            by_format.entry("cef").or_default().insert(id);
        } else {
            let event: serde_json::Value = serde_json::from_str(message).unwrap();
            assert_eq!(event["id"], id.as_str());
            assert_eq!(event["data"]["target_type"], "policy");
            by_format.entry("json").or_default().insert(id);
        }
    }
    assert_eq!(by_format["json"], expected);
    assert_eq!(by_format["cef"], expected);
    assert_eq!(lines.len(), 2 * expected.len(), "no duplicates");
}

#[tokio::test]
async fn rsyslog_killed_mid_stream_and_restarted_receives_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path()).await;
    let (tcp_port, tls_port) = (free_port(), free_port());
    let mut rsyslog = start_rsyslog(dir.path(), tcp_port, tls_port);
    wait_listening(tcp_port).await;
    let mut expected = admin_changes(store.as_ref(), 8).await;
    let tcp = entry(&format!(
        "name = \"syslog\"\nkind = \"syslog\"\naddress = \"127.0.0.1:{tcp_port}\"\n\
         batch_size = 4\nmax_attempts = 1000\nretry_initial_ms = 20\nretry_max_ms = 200\n\
         poll_interval_ms = 50\nsettle_ms = 0\n"
    ));
    let exporter = tokio::spawn(aigate::export::run(vec![tcp], store.clone()));
    syslog_lines(&rsyslog, expected.len()).await;

    let failures =
        "SELECT CAST(count(*) AS TEXT) FROM integration_sync_logs WHERE status = 'failure'";
    let path = dir.path().to_owned();
    let more = {
        let store = store.clone();
        async move {
            // Stored while rsyslogd is down: the exporter finds its connection closed,
            // reconnects, is refused and retries.
            let more = admin_changes(store.as_ref(), 8).await;
            count_eventually(&path, failures, 1).await;
            more
        }
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    rsyslog
        .restart_after(async {
            let _ = tx.send(more.await);
        })
        .await;
    expected.extend(rx.await.unwrap());
    wait_listening(tcp_port).await;
    let ids_in = |lines: &[String]| -> Vec<String> {
        lines
            .iter()
            .map(|line| {
                let event: serde_json::Value =
                    serde_json::from_str(line.split_once("] ").unwrap().1.trim()).unwrap();
                event["id"].as_str().unwrap().to_owned()
            })
            .collect()
    };
    let mut ids = ids_in(&syslog_lines(&rsyslog, expected.len()).await);
    for _ in 0..600 {
        if expected.iter().all(|id| ids.contains(id)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        ids = ids_in(&syslog_lines(&rsyslog, 0).await);
    }
    exporter.abort();
    let unique: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(unique, expected);
    assert!(
        ids.len() - unique.len() <= 4,
        "{} duplicates",
        ids.len() - unique.len()
    );
}

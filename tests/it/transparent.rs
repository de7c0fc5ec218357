//! Transparent mode as an appliance runs it: three network namespaces (client, gateway, origin)
//! joined by veth pairs, the gateway namespace routing between them with the shipped
//! `systemd/appliance-iptables.sh` diverting TCP 80/443 to the transparent listener (`REDIRECT`,
//! or `TPROXY` with its policy routing), the real `aigate` binary running inside it, and curl in
//! the client namespace talking to origin addresses as if no gateway existed.
//!
//! These tests need root, `ip` (iproute2), `iptables`, `curl` and `python3`; a missing tool is a
//! failure naming the package, never a skip (`.ci/run` installs them).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aigate::tls::CertificateAuthority;

use crate::support::{repo_path, shipped_policies_without};

const TRANSPARENT_PORT: u16 = 3129;
const GATEWAY_CA_NAME: &str = "aigate Root CA";
const ORIGIN_CA_NAME: &str = "aigate netns origin CA";

fn require_tools() {
    for (tool, probe, package) in [
        ("ip", "-V", "iproute2"),
        ("iptables", "--version", "iptables"),
        ("curl", "--version", "curl"),
        ("python3", "--version", "python3"),
    ] {
        let found = Command::new(tool)
            .arg(probe)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            found,
            "the transparent-mode tests need `{tool}` (apt-get install {package}; .ci/run installs it) and root"
        );
    }
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {program} {args:?}: {error}"))
}

fn must(program: &str, args: &[&str]) {
    let output = run(program, args);
    assert!(
        output.status.success(),
        "{program} {} failed (these tests need root): {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Redirect,
    Tproxy,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Redirect => "redirect",
            Mode::Tproxy => "tproxy",
        }
    }
}

/// Client, gateway and origin namespaces for one test, removed (with every process started in
/// them) when dropped, whether the test passed or not. The iptables rules live in the gateway
/// namespace and go with it.
struct Appliance {
    client: String,
    gateway: String,
    origin: String,
    /// `10.{net}.1.0/24` is the client LAN, `10.{net}.2.0/24` the origin side.
    net: u8,
    mode: Mode,
    processes: Vec<Child>,
    gateway_log: Arc<Mutex<Vec<String>>>,
    dir: tempfile::TempDir,
}

impl Drop for Appliance {
    fn drop(&mut self) {
        for child in &mut self.processes {
            let _ = child.kill();
            let _ = child.wait();
        }
        for namespace in [&self.client, &self.gateway, &self.origin] {
            let _ = Command::new("ip")
                .args(["netns", "del", namespace])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Appliance {
    /// Builds the topology; `index` keeps concurrent tests apart (names and address plan).
    fn new(index: u8, mode: Mode) -> Appliance {
        require_tools();
        let pid = std::process::id();
        let name = |role: &str| format!("aigate-{role}-{pid}-{index}");
        let appliance = Appliance {
            client: name("client"),
            gateway: name("gw"),
            origin: name("origin"),
            net: 213 + index,
            mode,
            processes: Vec::new(),
            gateway_log: Arc::default(),
            dir: tempfile::tempdir().unwrap(),
        };
        for namespace in [&appliance.client, &appliance.gateway, &appliance.origin] {
            must("ip", &["netns", "add", namespace]);
            must("ip", &["-n", namespace, "link", "set", "lo", "up"]);
        }
        let net = appliance.net;
        // Interface names are per namespace, but are created before moving: keep them unique
        // and within IFNAMSIZ.
        let veth = |side: &str| format!("a{index}{side}{}", pid % 1_000_000);
        let (client_if, gw_lan_if) = (veth("c"), veth("l"));
        let (gw_wan_if, origin_if) = (veth("w"), veth("o"));
        must(
            "ip",
            &[
                "link",
                "add",
                &client_if,
                "netns",
                &appliance.client,
                "type",
                "veth",
                "peer",
                "name",
                &gw_lan_if,
                "netns",
                &appliance.gateway,
            ],
        );
        must(
            "ip",
            &[
                "link",
                "add",
                &gw_wan_if,
                "netns",
                &appliance.gateway,
                "type",
                "veth",
                "peer",
                "name",
                &origin_if,
                "netns",
                &appliance.origin,
            ],
        );
        let address = |ns: &str, dev: &str, cidr: String| {
            must("ip", &["-n", ns, "addr", "add", &cidr, "dev", dev]);
            must("ip", &["-n", ns, "link", "set", dev, "up"]);
        };
        address(&appliance.client, &client_if, format!("10.{net}.1.2/24"));
        address(&appliance.gateway, &gw_lan_if, format!("10.{net}.1.1/24"));
        address(&appliance.gateway, &gw_wan_if, format!("10.{net}.2.1/24"));
        address(&appliance.origin, &origin_if, format!("10.{net}.2.2/24"));
        must(
            "ip",
            &[
                "-n",
                &appliance.client,
                "route",
                "add",
                "default",
                "via",
                &format!("10.{net}.1.1"),
            ],
        );
        must(
            "ip",
            &[
                "-n",
                &appliance.origin,
                "route",
                "add",
                "default",
                "via",
                &format!("10.{net}.2.1"),
            ],
        );
        // The appliance rules are the shipped script's, run in the gateway namespace: REDIRECT
        // (or TPROXY with its policy routing) of web traffic arriving from the LAN.
        let script = repo_path("systemd/appliance-iptables.sh");
        let output = Command::new("ip")
            .args(["netns", "exec", &appliance.gateway])
            .arg(&script)
            .arg("up")
            .env("LAN_IF", &gw_lan_if)
            .env("AIGATE_PORT", TRANSPARENT_PORT.to_string())
            .env("MODE", mode.as_str())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{} up failed: {}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        appliance
    }

    fn origin_ip(&self) -> String {
        format!("10.{}.2.2", self.net)
    }

    fn gateway_lan_ip(&self) -> String {
        format!("10.{}.1.1", self.net)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Origins for `api.openai.com` (a catalog host), `www.example.org` (not in the catalog) and
    /// `chat.deepseek.com` (a prohibited one), all on the origin address, certificates from the
    /// returned CA.
    fn start_origins(&mut self) -> CertificateAuthority {
        let ca = CertificateAuthority::generate_in_memory(ORIGIN_CA_NAME).unwrap();
        std::fs::write(self.path("origin-ca.pem"), ca.cert_pem()).unwrap();
        let mut specs = Vec::new();
        for host in ["api.openai.com", "www.example.org", "chat.deepseek.com"] {
            let (chain, key) = ca.issue_server_cert(&[host]).unwrap();
            let cert = self.path(&format!("{host}.pem"));
            let key_path = self.path(&format!("{host}.key"));
            std::fs::write(
                &cert,
                pem::encode(&pem::Pem::new("CERTIFICATE", chain[0].to_vec())),
            )
            .unwrap();
            std::fs::write(
                &key_path,
                pem::encode(&pem::Pem::new("PRIVATE KEY", key.secret_der().to_vec())),
            )
            .unwrap();
            specs.push((host, cert, key_path));
        }
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.origin, "python3", "-u"])
            .arg(repo_path("tests/fixtures/netns_origin.py"))
            .arg(self.origin_ip())
            .arg(&specs[1].1)
            .arg(&specs[1].2);
        for (host, cert, key) in &specs {
            command.arg(format!("{host}={}:{}", cert.display(), key.display()));
        }
        let mut child = command.stdout(Stdio::piped()).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        self.processes.push(child);
        let mut first = String::new();
        BufReader::new(stdout).read_line(&mut first).unwrap();
        assert_eq!(first.trim(), "ready", "the origin servers did not start");
        ca
    }

    /// Runs `aigate run` inside the gateway namespace; returns once it listens.
    fn start_gateway(&mut self) {
        self.start_gateway_with("");
    }

    /// `start_gateway` with `extra` sections appended to its config.
    fn start_gateway_with(&mut self, extra: &str) {
        let dir = self.dir.path();
        let policies = shipped_policies_without(dir, &["review-unapproved-ai"]);
        // Trust the origin CA upstream when there are origins (the loop test has none).
        let extra_roots = if self.path("origin-ca.pem").exists() {
            format!("[\"{}/origin-ca.pem\"]", dir.display())
        } else {
            "[]".to_owned()
        };
        let config = format!(
            "[proxy]\nlisten = \"127.0.0.1:3128\"\ndrain_timeout_secs = 1\n\
             [transparent]\nlisten = \"0.0.0.0:{TRANSPARENT_PORT}\"\ntproxy = {tproxy}\n\
             [admin]\nlisten = \"127.0.0.1:9090\"\n\
             [tls]\nca_dir = \"{dir}/certs\"\n\
             [upstream]\nextra_roots = {extra_roots}\nconnect_timeout_secs = 3\n\
             [store]\nurl = \"sqlite://{dir}/aigate.db\"\n\
             [audit]\njournal_dir = \"{dir}/journal\"\nflush_interval_ms = 20\n\
             [catalog]\ndir = \"{catalog}\"\n\
             [policy]\ndir = \"{policies}\"\n\
             [policy.defaults]\nreview_required = \"allow\"\nunknown = \"allow\"\n{extra}",
            dir = dir.display(),
            catalog = repo_path("config/catalog").display(),
            policies = policies.display(),
            tproxy = self.mode == Mode::Tproxy,
        );
        let config_path = self.path("aigate.toml");
        std::fs::write(&config_path, config).unwrap();
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.gateway, env!("CARGO_BIN_EXE_aigate")])
            .args(["run", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        self.processes.push(child);
        let log = self.gateway_log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                log.lock().unwrap().push(line);
            }
        });
        self.wait_for_log("Gateway listening");
    }

    fn wait_for_log(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let exited = self
                .processes
                .iter_mut()
                .any(|p| !matches!(p.try_wait(), Ok(None)));
            if exited {
                // Let the log reader catch the last lines before reporting.
                std::thread::sleep(Duration::from_millis(200));
                panic!(
                    "a process of the appliance exited early; gateway log:\n{}",
                    self.gateway_log.lock().unwrap().join("\n")
                );
            }
            if let Some(line) = self
                .gateway_log
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return line.clone();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "no gateway log line containing {needle:?}; log:\n{}",
            self.gateway_log.lock().unwrap().join("\n")
        );
    }

    /// curl in the client namespace; returns (HTTP status, body, curl's verbose stderr).
    fn curl(&self, args: &[&str]) -> (u16, String, String) {
        let output = Command::new("ip")
            .args(["netns", "exec", &self.client, "curl", "-sS", "-v"])
            .args(["--max-time", "15", "-w", "\n%{http_code}"])
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let (body, status) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
        (
            status.trim().parse().unwrap_or(0),
            body.to_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    fn resolve_to_origin(&self, host_port: &str) -> String {
        format!("{host_port}:{}", self.origin_ip())
    }

    /// Decision rows `(decision, source, resource_url)` once there are at least `at_least`.
    fn decisions(&self, at_least: usize) -> Vec<(String, Option<String>, Option<String>)> {
        self.rows(
            "SELECT decision, source, resource_url FROM decisions ORDER BY timestamp",
            at_least,
        )
    }

    /// The rows `sql` selects from the gateway's store once there are at least `at_least`.
    fn rows<T>(&self, sql: &str, at_least: usize) -> Vec<T>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + Send + Unpin,
    {
        let url = format!("sqlite://{}", self.path("aigate.db").display());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            use sqlx::Connection;
            let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
            for _ in 0..100 {
                let rows: Vec<T> = sqlx::query_as(sql).fetch_all(&mut db).await.unwrap();
                if rows.len() >= at_least {
                    return rows;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("fewer than {at_least} rows after 5 s: {sql}");
        })
    }
}

fn issuer(verbose: &str) -> &str {
    verbose
        .lines()
        .find(|line| line.contains("issuer:"))
        .unwrap_or_else(|| panic!("curl printed no certificate issuer:\n{verbose}"))
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn transparent_intercepts_catalog_hosts_and_tunnels_the_rest() {
    let mut appliance = Appliance::new(0, Mode::Redirect);
    appliance.start_origins();
    appliance.start_gateway();
    let gateway_ca = appliance.path("certs/ca.pem");
    let origin_ca = appliance.path("origin-ca.pem");
    let api = appliance.resolve_to_origin("api.openai.com:443");

    // A catalog host: the client reaches the origin's address, but meets a leaf from the gateway
    // CA, and the clean request is forwarded to the original destination.
    let clean =
        r#"{"model":"gpt-4o","messages":[{"role":"user","content":"summarize the meeting"}]}"#;
    let (status, body, verbose) = appliance.curl(&[
        "--resolve",
        &api,
        "--cacert",
        path_str(&gateway_ca),
        "-H",
        "content-type: application/json",
        "-d",
        clean,
        "https://api.openai.com/v1/chat/completions",
    ]);
    assert_eq!(status, 200, "{body}\n{verbose}");
    assert!(issuer(&verbose).contains(GATEWAY_CA_NAME), "{verbose}");
    let echoed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echoed["origin"], "netns");
    assert_eq!(echoed["tls"], true);
    assert_eq!(echoed["body_len"], clean.len());

    // A credential in the prompt is denied by the shipped policy before any upstream contact.
    let (status, body, _) = appliance.curl(&[
        "--resolve",
        &api,
        "--cacert",
        path_str(&gateway_ca),
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"model":"gpt-4o","messages":[{"role":"user","content":"why does AKIAIOSFODNN7EXAMPLE fail?"}]}"#,
        "https://api.openai.com/v1/chat/completions",
    ]);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("No credentials or secrets"), "{body}");
    assert!(!body.contains("AKIAIOSFODNN7EXAMPLE"));

    // Not in the catalog: tunnelled untouched, so the origin's own certificate verifies against
    // the origin CA and the gateway CA appears nowhere.
    let (status, body, verbose) = appliance.curl(&[
        "--resolve",
        &appliance.resolve_to_origin("www.example.org:443"),
        "--cacert",
        path_str(&origin_ca),
        "https://www.example.org/index.html",
    ]);
    assert_eq!(status, 200, "{body}\n{verbose}");
    let origin_issuer = issuer(&verbose);
    assert!(origin_issuer.contains(ORIGIN_CA_NAME), "{origin_issuer}");
    assert!(!verbose.contains(GATEWAY_CA_NAME), "{verbose}");

    // Plain HTTP to a catalog host: judged by its Host header, sent to the original destination.
    let (status, body, _) = appliance.curl(&[
        "--resolve",
        &appliance.resolve_to_origin("api.openai.com:80"),
        "http://api.openai.com/v1/models",
    ]);
    assert_eq!(status, 200, "{body}");
    let echoed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echoed["tls"], false);
    assert_eq!(echoed["host"], "api.openai.com");

    let rows = appliance.decisions(3);
    assert_eq!(
        rows.len(),
        3,
        "one decision per HTTP request, none for the tunnel: {rows:?}"
    );
    assert!(
        rows.iter()
            .all(|(_, source, _)| source.as_deref() == Some("transparent")),
        "{rows:?}"
    );
    let url = |decision: &str| {
        rows.iter()
            .filter(|(d, _, _)| d == decision)
            .map(|(_, _, url)| url.clone().unwrap_or_default())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        url("DENY"),
        vec!["https://api.openai.com/v1/chat/completions".to_owned()]
    );
    assert_eq!(
        url("ALLOW"),
        vec![
            "https://api.openai.com/v1/chat/completions".to_owned(),
            "http://api.openai.com/v1/models".to_owned()
        ]
    );
}

#[test]
fn transparent_refuses_connections_addressed_to_itself() {
    let mut appliance = Appliance::new(1, Mode::Redirect);
    appliance.start_gateway();
    // Straight at the listener, not redirected: the original destination is the gateway itself.
    let target = format!(
        "http://{}:{TRANSPARENT_PORT}/v1/models",
        appliance.gateway_lan_ip()
    );
    let (status, body, verbose) = appliance.curl(&["-H", "host: api.openai.com", &target]);
    assert_eq!(status, 0, "the gateway answered a loop: {body}\n{verbose}");
    let line = appliance.wait_for_log("Refused a connection addressed to the gateway itself");
    assert!(
        line.contains(&format!(
            "{}:{TRANSPARENT_PORT}",
            appliance.gateway_lan_ip()
        )),
        "{line}"
    );
}

#[test]
fn tproxy_intercepts_catalog_hosts_and_tunnels_the_rest() {
    let mut appliance = Appliance::new(2, Mode::Tproxy);
    appliance.start_origins();
    appliance.start_gateway();
    let gateway_ca = appliance.path("certs/ca.pem");
    let origin_ca = appliance.path("origin-ca.pem");

    // TPROXY: no NAT, the gateway's socket is bound to the origin's own address.
    let (status, body, verbose) = appliance.curl(&[
        "--resolve",
        &appliance.resolve_to_origin("api.openai.com:443"),
        "--cacert",
        path_str(&gateway_ca),
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hello"}]}"#,
        "https://api.openai.com/v1/chat/completions",
    ]);
    assert_eq!(status, 200, "{body}\n{verbose}");
    assert!(issuer(&verbose).contains(GATEWAY_CA_NAME), "{verbose}");

    let (status, body, verbose) = appliance.curl(&[
        "--resolve",
        &appliance.resolve_to_origin("www.example.org:443"),
        "--cacert",
        path_str(&origin_ca),
        "https://www.example.org/",
    ]);
    assert_eq!(status, 200, "{body}\n{verbose}");
    assert!(issuer(&verbose).contains(ORIGIN_CA_NAME), "{verbose}");

    let rows = appliance.decisions(1);
    assert_eq!(
        rows,
        vec![(
            "ALLOW".to_owned(),
            Some("transparent".to_owned()),
            Some("https://api.openai.com/v1/chat/completions".to_owned())
        )]
    );
}

#[test]
fn transparent_bypass_is_decided_before_the_tunnel() {
    let mut appliance = Appliance::new(3, Mode::Redirect);
    appliance.start_origins();
    appliance
        .start_gateway_with("[intercept]\nbypass = [\"chat.deepseek.com\", \"api.openai.com\"]\n");
    let origin_ca = appliance.path("origin-ca.pem");

    // A prohibited service in the bypass: the policy denies it whatever a request would carry,
    // so there is no tunnel (a redirected client cannot be told why; the connection closes).
    let (status, body, verbose) = appliance.curl(&[
        "--resolve",
        &appliance.resolve_to_origin("chat.deepseek.com:443"),
        "--cacert",
        path_str(&origin_ca),
        "https://chat.deepseek.com/",
    ]);
    assert_eq!(
        status, 0,
        "a denied bypass host was tunnelled: {body}\n{verbose}"
    );

    // An allowed service in the bypass: tunnelled untouched (the origin's own certificate).
    let (status, body, verbose) = appliance.curl(&[
        "--resolve",
        &appliance.resolve_to_origin("api.openai.com:443"),
        "--cacert",
        path_str(&origin_ca),
        "https://api.openai.com/v1/models",
    ]);
    assert_eq!(status, 200, "{body}\n{verbose}");
    assert!(issuer(&verbose).contains(ORIGIN_CA_NAME), "{verbose}");

    let mut rows: Vec<(String, bool, String, Option<String>, String)> = appliance.rows(
        "SELECT decision, content_classified, resource_url, source, reason FROM decisions",
        2,
    );
    rows.sort();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let (decision, classified, url, source, reason) = &rows[0];
    assert_eq!(decision, "ALLOW");
    assert!(!classified);
    assert!(url.contains("api.openai.com"), "{url}");
    assert_eq!(source.as_deref(), Some("transparent"));
    assert!(reason.contains("configured bypass"), "{reason}");
    let (decision, classified, url, source, _) = &rows[1];
    assert_eq!(decision, "DENY");
    assert!(!classified);
    assert!(url.contains("chat.deepseek.com"), "{url}");
    assert_eq!(source.as_deref(), Some("transparent"));
}

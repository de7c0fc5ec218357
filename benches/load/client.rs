//! Load client for `benches/load/run.sh`: the local HTTPS origin, a TCP sink, the load generator
//! and the report renderer in one binary, so the harness needs nothing but this repository.
//!
//! It talks to every target the same way a real API client does: TCP to the proxy, `CONNECT
//! host:port`, TLS (SNI = host) trusting only the CA the target presents, then HTTP/1.1 POSTs of
//! a 2 KiB chat-completion body. Without a proxy it connects straight to the origin (the floor).
//! Proxy CPU and memory are read from `/proc` around the measured window only, so start-up,
//! warm-up handshakes and leaf minting are not billed to the steady state.
//!
//! This is a measuring tool, not library code: a failed run ends with an error naming what went
//! wrong, and the harness reports it; it never retries silently.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;

#[derive(Parser)]
#[command(about = "aigate load harness client (driven by benches/load/run.sh)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// HTTPS origin answering every request with a small chat-completion JSON (h2 and http/1.1).
    Serve {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        cert: PathBuf,
        #[arg(long)]
        key: PathBuf,
    },
    /// Plain TCP sink: reads to EOF, then answers the byte count (8 bytes, little endian).
    Sink {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// One measured run against one target; appends a JSON line to `--out`.
    Run(Box<RunArgs>),
    /// The host's price of a cross-CPU wake-up, printed as one line for the report header: what
    /// a thread pays to wake one that sleeps on another, idle CPU, and how late that one runs.
    /// On some hypervisors this is several times a request's own CPU cost (docs/perf/RESULTS.md, 2026-12-04).
    WakeCost {
        #[arg(long, default_value_t = 0)]
        waker_cpu: usize,
        #[arg(long, default_value_t = 1)]
        sleeper_cpu: usize,
        #[arg(long, default_value_t = 2_000)]
        samples: usize,
        /// Time the sleeper's CPU is left idle before each wake-up (long enough to halt).
        #[arg(long, default_value_t = 500)]
        idle_us: u64,
    },
    /// Renders the JSON lines of a harness run as the markdown report.
    Report {
        #[arg(long)]
        results: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Markdown put above the tables (machine, affinity, versions).
        #[arg(long)]
        header: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Closed loop: `concurrency` keep-alive connections, each sending back to back.
    Keepalive,
    /// Closed loop: a new TCP (+ CONNECT) + TLS connection for every request.
    Churn,
    /// Open loop: requests released at `rate` per second over `concurrency` connections; latency
    /// counts from the release, so queueing behind a slow request is included.
    Paced,
    /// Upload `bytes` through one connection to the sink and wait for its count.
    Bulk,
    /// Open `connections` intercepted connections (CONNECT + TLS), hold them idle, sample RSS.
    Idle,
}

#[derive(clap::Args, Clone)]
struct RunArgs {
    /// Target label in the report (direct, aigate-intercept, ...).
    #[arg(long)]
    target: String,
    /// Scenario label in the report (c1, c16, churn, ...).
    #[arg(long)]
    scenario: String,
    #[arg(long, value_enum)]
    mode: Mode,
    /// Explicit proxy to CONNECT through; absent: connect to `--addr` directly.
    #[arg(long)]
    proxy: Option<SocketAddr>,
    /// `host:port` named in CONNECT; its host is the TLS SNI and the `Host` header.
    #[arg(long)]
    authority: String,
    /// Where to connect without a proxy.
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// PEM root the client trusts (the target's interception CA, or the origin's CA).
    #[arg(long)]
    ca: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Requests per second (paced mode).
    #[arg(long)]
    rate: Option<f64>,
    /// Bytes to upload (bulk mode).
    #[arg(long, default_value_t = 1 << 30)]
    bytes: u64,
    /// Connections to hold (idle mode).
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    #[arg(long, default_value_t = 2048)]
    body_bytes: usize,
    #[arg(long, default_value = "/v1/chat/completions")]
    path: String,
    /// Proxy process(es) to account CPU and memory for; their descendants are included
    /// (squid's certificate helpers).
    #[arg(long)]
    pid: Vec<u32>,
    /// JSON-lines file the result is appended to.
    #[arg(long)]
    out: PathBuf,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // The multi-threaded runtime sizes itself from the CPU affinity mask, so `taskset` in the
    // harness decides how many cores the client (and the origin) get.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    match cli.command {
        Command::Serve { listen, cert, key } => runtime.block_on(serve(listen, &cert, &key)),
        Command::Sink { listen } => runtime.block_on(sink(listen)),
        Command::Run(args) => {
            let outcome = runtime.block_on(run(&args));
            // A run that cannot even start still gets its row, with the reason, so the report
            // shows which target failed and why instead of silently missing a line.
            let result = match &outcome {
                Ok(result) => result.clone(),
                Err(error) => json!({
                    "target": args.target,
                    "scenario": args.scenario,
                    "mode": format!("{:?}", args.mode).to_lowercase(),
                    "errors": 1,
                    "first_error": format!("run failed: {error:#}"),
                }),
            };
            let mut line = serde_json::to_string(&result)?;
            line.push('\n');
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&args.out)
                .with_context(|| format!("open {}", args.out.display()))?;
            std::io::Write::write_all(&mut file, line.as_bytes())?;
            eprintln!("{}", summary(&result));
            outcome.map(drop)
        }
        Command::WakeCost {
            waker_cpu,
            sleeper_cpu,
            samples,
            idle_us,
        } => {
            let idle = Duration::from_micros(idle_us);
            let line = wake_cost(waker_cpu, sleeper_cpu, samples.max(1), idle)?;
            // The harness reads this line from stdout into the report header.
            writeln!(std::io::stdout().lock(), "{line}").context("stdout")
        }
        Command::Report {
            results,
            out,
            header,
        } => report(&results, &out, header.as_deref()),
    }
}

// === host wake-up cost ===

fn pin_to(cpu: usize) -> Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).with_context(|| format!("CPU {cpu}"))?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .with_context(|| format!("pin to CPU {cpu}"))
}

fn wake_cost(
    waker_cpu: usize,
    sleeper_cpu: usize,
    samples: usize,
    idle: Duration,
) -> Result<String> {
    let epoch = Instant::now();
    // Nanoseconds since `epoch` at which the sleeper last ran after a wake-up; 0 = not yet.
    let woke_at = Arc::new(AtomicU64::new(0));
    let wanted = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    pin_to(sleeper_cpu)?;
    let sleeper = {
        let (woke_at, wanted, done) = (woke_at.clone(), wanted.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Acquire) {
                // park() may return spuriously: only a set flag counts as the wake-up.
                if wanted.swap(false, Ordering::AcqRel) {
                    woke_at.store(epoch.elapsed().as_nanos().max(1) as u64, Ordering::Release);
                } else {
                    std::thread::park();
                }
            }
        })
    };
    pin_to(waker_cpu)?;
    let mut cost = Vec::with_capacity(samples);
    let mut latency = Vec::with_capacity(samples);
    for _ in 0..samples {
        // Busy here, idle there: the sleeper's CPU halts as it would between requests.
        let until = Instant::now() + idle;
        while Instant::now() < until {
            std::hint::spin_loop();
        }
        woke_at.store(0, Ordering::Release);
        wanted.store(true, Ordering::Release);
        let before = epoch.elapsed().as_nanos() as u64;
        sleeper.thread().unpark();
        let after = epoch.elapsed().as_nanos() as u64;
        let woke = loop {
            match woke_at.load(Ordering::Acquire) {
                0 => std::hint::spin_loop(),
                at => break at,
            }
        };
        cost.push(after - before);
        latency.push(woke.saturating_sub(before));
    }
    done.store(true, Ordering::Release);
    sleeper.thread().unpark();
    sleeper
        .join()
        .map_err(|_| anyhow!("the sleeper thread panicked"))?;
    cost.sort_unstable();
    latency.sort_unstable();
    let at = |sorted: &[u64], p: f64| percentile_us(sorted, p).unwrap_or(0.0);
    Ok(format!(
        "waking a thread asleep on CPU {sleeper_cpu} costs CPU {waker_cpu} p50 {:.1} µs / p99 {:.1} µs; \
         it runs after p50 {:.1} µs / p99 {:.1} µs ({samples} wake-ups, {} µs idle before each)",
        at(&cost, 50.0),
        at(&cost, 99.0),
        at(&latency, 50.0),
        at(&latency, 99.0),
        idle.as_micros(),
    ))
}

// === origin and sink ===

const REPLY: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Sure, here is a short summary."},"finish_reason":"stop"}],"usage":{"prompt_tokens":480,"completion_tokens":8,"total_tokens":488}}"#;

async fn serve(listen: SocketAddr, cert: &Path, key: &Path) -> Result<()> {
    let chain = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(cert).with_context(|| format!("open {}", cert.display()))?,
    ))
    .collect::<Result<Vec<_>, _>>()
    .context("origin certificate")?;
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(key).with_context(|| format!("open {}", key.display()))?,
    ))
    .context("origin key")?
    .ok_or_else(|| anyhow!("no private key in {}", key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("bind {listen}"))?;
    let reply = Bytes::from_static(REPLY.as_bytes());
    loop {
        let (socket, _) = listener.accept().await?;
        let _ = socket.set_nodelay(true);
        let acceptor = acceptor.clone();
        let reply = reply.clone();
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(socket).await else {
                return;
            };
            let service = hyper::service::service_fn(
                move |request: hyper::Request<hyper::body::Incoming>| {
                    let reply = reply.clone();
                    async move {
                        // Read the whole body like a real API would before answering.
                        let _ = request.into_body().collect().await;
                        hyper::Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(reply))
                    }
                },
            );
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn sink(listen: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("bind {listen}"))?;
    loop {
        let (mut socket, _) = listener.accept().await?;
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 256 * 1024];
            let mut total = 0u64;
            loop {
                match socket.read(&mut buffer).await {
                    Ok(0) => break,
                    Ok(n) => total += n as u64,
                    Err(_) => return,
                }
            }
            let _ = socket.write_all(&total.to_le_bytes()).await;
            let _ = socket.shutdown().await;
        });
    }
}

// === connecting ===

struct Connector {
    proxy: Option<SocketAddr>,
    addr: Option<SocketAddr>,
    authority: String,
    server_name: rustls::pki_types::ServerName<'static>,
    host: String,
    tls: tokio_rustls::TlsConnector,
}

impl Connector {
    fn new(args: &RunArgs) -> Result<Connector> {
        let host = args
            .authority
            .rsplit_once(':')
            .map(|(host, _)| host)
            .ok_or_else(|| anyhow!("--authority must be host:port, got {}", args.authority))?
            .to_owned();
        if args.proxy.is_none() && args.addr.is_none() {
            bail!("either --proxy or --addr is needed");
        }
        let mut roots = rustls::RootCertStore::empty();
        if let Some(ca) = &args.ca {
            let file = std::fs::File::open(ca).with_context(|| format!("open {}", ca.display()))?;
            for cert in rustls_pemfile::certs(&mut std::io::BufReader::new(file)) {
                roots.add(cert.with_context(|| format!("certificate in {}", ca.display()))?)?;
            }
        }
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        // Every new connection pays a full handshake: the churn row is the worst case, and no
        // target gets an advantage from a resumption cache the others lack.
        config.resumption = rustls::client::Resumption::disabled();
        Ok(Connector {
            proxy: args.proxy,
            addr: args.addr,
            authority: args.authority.clone(),
            server_name: rustls::pki_types::ServerName::try_from(host.clone())
                .with_context(|| format!("TLS server name {host}"))?,
            host,
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    /// TCP to the proxy with the tunnel established, or TCP to the origin.
    async fn tcp(&self) -> Result<TcpStream> {
        let Some(proxy) = self.proxy else {
            let addr = self.addr.ok_or_else(|| anyhow!("no --addr"))?;
            let stream = TcpStream::connect(addr)
                .await
                .with_context(|| format!("connect {addr}"))?;
            stream.set_nodelay(true)?;
            return Ok(stream);
        };
        let mut stream = TcpStream::connect(proxy)
            .await
            .with_context(|| format!("connect proxy {proxy}"))?;
        stream.set_nodelay(true)?;
        let request = format!(
            "CONNECT {0} HTTP/1.1\r\nHost: {0}\r\nUser-Agent: aigate-load/1\r\n\r\n",
            self.authority
        );
        stream.write_all(request.as_bytes()).await?;
        // Byte-wise up to the blank line: nothing after it may be consumed (it is the tunnel).
        let mut head = Vec::with_capacity(128);
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() > 8192 {
                bail!("CONNECT response head longer than 8 KiB");
            }
            if stream.read(&mut byte).await? == 0 {
                bail!(
                    "proxy closed the connection during CONNECT: {:?}",
                    String::from_utf8_lossy(&head)
                );
            }
            head.push(byte[0]);
        }
        let status = head.split(|b| *b == b' ').nth(1).unwrap_or_default();
        if status != b"200" {
            bail!(
                "CONNECT {} refused: {}",
                self.authority,
                String::from_utf8_lossy(&head).lines().next().unwrap_or("")
            );
        }
        Ok(stream)
    }

    async fn tls(&self) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = self.tcp().await?;
        self.tls
            .connect(self.server_name.clone(), tcp)
            .await
            .with_context(|| format!("TLS handshake with {}", self.host))
    }

    async fn http(&self) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
        let tls = self.tls().await?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .context("HTTP/1.1 handshake")?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }
}

/// An OpenAI chat-completion request of exactly `size` bytes of benign prose (no entity any
/// scanner should report, so every target forwards it and nobody takes a redaction path).
fn chat_body(size: usize) -> Bytes {
    const PROSE: &str =
        "Please summarise the following meeting notes in three short bullet points \
and suggest a friendly subject line for the follow-up email. The team agreed to move the design \
review to next week, to collect feedback from the pilot users, and to prepare a short demo of \
the new onboarding flow. ";
    let envelope = |content: &str| {
        json!({
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": content},
            ],
            "temperature": 0.2,
        })
        .to_string()
    };
    let overhead = envelope("").len();
    let mut content = String::new();
    while content.len() + overhead < size {
        content.push_str(PROSE);
    }
    content.truncate(size.saturating_sub(overhead));
    Bytes::from(envelope(&content))
}

fn request(args: &RunArgs, body: &Bytes, close: bool) -> Result<hyper::Request<Full<Bytes>>> {
    // Host carries the port unless it is the default, as every HTTP client writes it: squid and
    // mitmproxy build the upstream URL from it.
    let host = args
        .authority
        .strip_suffix(":443")
        .unwrap_or(&args.authority);
    let mut builder = hyper::Request::post(args.path.as_str())
        .header("host", host)
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .header("user-agent", "aigate-load/1");
    if close {
        builder = builder.header("connection", "close");
    }
    Ok(builder.body(Full::new(body.clone()))?)
}

async fn exchange(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    request: hyper::Request<Full<Bytes>>,
) -> Result<()> {
    sender.ready().await.context("connection not ready")?;
    let response = sender.send_request(request).await.context("request")?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .context("response body")?;
    if !status.is_success() {
        // The first line of a JSON error or the <title> of an HTML error page says enough.
        let text = String::from_utf8_lossy(&body.to_bytes()).into_owned();
        let title = text
            .split_once("<title>")
            .and_then(|(_, rest)| rest.split_once("</title>"))
            .map_or_else(
                || text.lines().next().unwrap_or_default(),
                |(title, _)| title,
            );
        bail!(
            "status {status}: {}",
            title.chars().take(200).collect::<String>()
        );
    }
    Ok(())
}

// === measuring ===

/// Linux reports utime/stime in USER_HZ, which the kernel ABI fixes at 100 on every
/// architecture this runs on.
const USER_HZ: f64 = 100.0;

/// `pids` and all their descendants.
fn process_tree(roots: &[u32]) -> Vec<u32> {
    let mut parent_of = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if let Some(fields) = stat_fields(pid) {
                if let Some(ppid) = fields.get(1).and_then(|f| f.parse::<u32>().ok()) {
                    parent_of.insert(pid, ppid);
                }
            }
        }
    }
    let mut tree: Vec<u32> = roots.to_vec();
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parent_of
                .iter()
                .filter(|(_, ppid)| **ppid == parent)
                .map(|(pid, _)| *pid),
        );
        i += 1;
    }
    tree
}

/// Fields of /proc/PID/stat after the command name (which may hold spaces): state is [0].
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

fn cpu_seconds(pids: &[u32]) -> f64 {
    process_tree(pids)
        .iter()
        .filter_map(|pid| stat_fields(*pid))
        // utime and stime are fields 14 and 15 of stat, [11] and [12] after the name.
        .map(|f| {
            let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            (field(11) + field(12)) as f64 / USER_HZ
        })
        .sum()
}

/// Sum of a `/proc/PID/status` field (kB) over the tree.
fn status_kb(pids: &[u32], field: &str) -> u64 {
    process_tree(pids)
        .iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .sum()
}

/// Resets the peak-RSS mark so VmHWM describes this run only (needs the same user or root;
/// when refused, the peak covers the process's life, which the report header says).
fn reset_peak_rss(pids: &[u32]) {
    for pid in process_tree(pids) {
        let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    }
}

#[derive(Default)]
struct Samples {
    latencies_ns: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
    /// Paced releases still queued at the deadline: more than a handful means the target (or
    /// the connection pool) could not keep up with the rate.
    unsent: u64,
}

impl Samples {
    fn merge(&mut self, other: Samples) {
        self.latencies_ns.extend(other.latencies_ns);
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
    fn error(&mut self, error: anyhow::Error) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(format!("{error:#}"));
        }
    }
}

fn percentile_us(sorted: &[u64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0)
}

async fn run(args: &RunArgs) -> Result<Value> {
    let connector = Arc::new(Connector::new(args)?);
    let duration = Duration::from_secs_f64(args.duration);
    let mut result = json!({
        "target": args.target,
        "scenario": args.scenario,
        "mode": format!("{:?}", args.mode).to_lowercase(),
        "concurrency": args.concurrency,
    });
    match args.mode {
        Mode::Keepalive | Mode::Churn | Mode::Paced => {
            let body = chat_body(args.body_bytes);
            let (samples, elapsed, cpu, peak_rss_kb) =
                requests(args, &connector, &body, duration).await?;
            let mut sorted = samples.latencies_ns;
            sorted.sort_unstable();
            let count = sorted.len() as f64;
            let fields = json!({
                "requests": sorted.len(),
                "errors": samples.errors,
                "unsent": samples.unsent,
                "first_error": samples.first_error,
                "seconds": elapsed,
                "rps": count / elapsed,
                "rate": args.rate,
                "p50_us": percentile_us(&sorted, 50.0),
                "p90_us": percentile_us(&sorted, 90.0),
                "p99_us": percentile_us(&sorted, 99.0),
                "p999_us": percentile_us(&sorted, 99.9),
                "max_us": percentile_us(&sorted, 100.0),
                "cpu_s": cpu,
                "cpu_s_per_1k": cpu.map(|c| if count > 0.0 { c * 1000.0 / count } else { 0.0 }),
                "peak_rss_kb": peak_rss_kb,
                "body_bytes": body.len(),
            });
            merge(&mut result, fields);
        }
        Mode::Bulk => merge(&mut result, bulk(args, &connector).await?),
        Mode::Idle => merge(&mut result, idle(args, &connector).await?),
    }
    Ok(result)
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(into), Value::Object(from)) = (into, from) {
        into.extend(from);
    }
}

type Measured = (Samples, f64, Option<f64>, Option<u64>);

async fn requests(
    args: &RunArgs,
    connector: &Arc<Connector>,
    body: &Bytes,
    duration: Duration,
) -> Result<Measured> {
    let concurrency = args.concurrency.max(1);
    // Keep-alive and paced workers open their connection and send one request before the clock
    // starts: handshakes and the gateway's first leaf mint are not part of the steady state.
    let mut senders = Vec::new();
    if args.mode != Mode::Churn {
        let mut opening = tokio::task::JoinSet::new();
        for _ in 0..concurrency {
            let connector = connector.clone();
            let warm = request(args, body, false)?;
            opening.spawn(async move {
                let mut sender = connector.http().await?;
                exchange(&mut sender, warm)
                    .await
                    .context("warm-up request")?;
                Ok::<_, anyhow::Error>(sender)
            });
        }
        while let Some(opened) = opening.join_next().await {
            senders.push(opened??);
        }
    } else {
        // One warm-up connection so the gateway has minted the leaf before the clock starts.
        let mut sender = connector.http().await?;
        exchange(&mut sender, request(args, body, true)?)
            .await
            .context("warm-up request")?;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let pids = args.pid.clone();
    reset_peak_rss(&pids);
    let cpu_before = (!pids.is_empty()).then(|| cpu_seconds(&pids));
    let started = Instant::now();
    let deadline = started + duration;

    let pacer = match (args.mode, args.rate) {
        (Mode::Paced, Some(rate)) if rate > 0.0 => Some(spawn_pacer(rate, deadline)),
        (Mode::Paced, _) => bail!("paced mode needs --rate > 0"),
        _ => None,
    };
    let tokens = pacer.map(|(receiver, _)| Arc::new(tokio::sync::Mutex::new(receiver)));

    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let connector = connector.clone();
        let stop = stop.clone();
        let body = body.clone();
        let args = args.clone();
        let tokens = tokens.clone();
        let mut sender = senders.pop();
        workers.spawn(async move {
            let mut samples = Samples::default();
            while !stop.load(Ordering::Relaxed) {
                if args.mode != Mode::Churn && sender.as_ref().is_none_or(|s| s.is_closed()) {
                    // The connection died (error or server close): open another one. Closed
                    // loop: outside the latency of the next request; open loop: the pending
                    // release waits for it, as a real client's would.
                    match connector.http().await {
                        Ok(fresh) => sender = Some(fresh),
                        Err(error) => {
                            samples.error(error);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    }
                }
                let release = match &tokens {
                    Some(tokens) => match tokens.lock().await.recv().await {
                        Some(release) => release,
                        None => break,
                    },
                    None => Instant::now(),
                };
                let outcome = match (args.mode, sender.as_mut()) {
                    (Mode::Churn, _) => churn_once(&args, &connector, &body).await,
                    (_, Some(current)) => match request(&args, &body, false) {
                        Ok(request) => exchange(current, request).await,
                        Err(error) => Err(error),
                    },
                    (_, None) => Err(anyhow!("no connection")),
                };
                let done = Instant::now();
                match outcome {
                    // Only requests that completed inside the window count: the throughput
                    // and the CPU sample describe the same interval.
                    Ok(()) if done <= deadline => samples
                        .latencies_ns
                        .push((done - release).as_nanos() as u64),
                    Ok(()) => {}
                    Err(error) => {
                        sender = None;
                        samples.error(error);
                    }
                }
            }
            samples
        });
    }

    tokio::time::sleep_until(deadline.into()).await;
    let cpu_after = (!pids.is_empty()).then(|| cpu_seconds(&pids));
    let peak_rss_kb = (!pids.is_empty()).then(|| status_kb(&pids, "VmHWM:"));
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64().min(duration.as_secs_f64());

    let mut samples = Samples::default();
    // A worker stuck on a dead target must not hang the harness.
    let collect = async {
        while let Some(worker) = workers.join_next().await {
            if let Ok(worker) = worker {
                samples.merge(worker);
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(10), collect)
        .await
        .is_err()
    {
        workers.abort_all();
        eprintln!("warning: some workers did not finish within 10 s of the deadline");
    }
    if let Some(tokens) = &tokens {
        // Releases never served: the target could not keep up with the rate.
        let mut receiver = tokens.lock().await;
        let mut unserved = 0u64;
        while receiver.try_recv().is_ok() {
            unserved += 1;
        }
        samples.unsent = unserved;
    }
    let cpu = cpu_before
        .zip(cpu_after)
        .map(|(before, after)| after - before);
    Ok((samples, elapsed, cpu, peak_rss_kb))
}

/// Releases request tokens at `rate` per second until `deadline` from an OS thread: its sleep
/// is precise to tens of microseconds, where tokio's timer wheel rounds to a millisecond and
/// would release requests in bursts.
fn spawn_pacer(
    rate: f64,
    deadline: Instant,
) -> (
    tokio::sync::mpsc::UnboundedReceiver<Instant>,
    std::thread::JoinHandle<()>,
) {
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let thread = std::thread::spawn(move || {
        let start = Instant::now();
        let mut next = start;
        while next < deadline {
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
            // Each token carries its intended release time, so a late wake-up is charged to
            // the latency rather than hidden.
            if sender.send(next).is_err() {
                return;
            }
            next += interval;
        }
    });
    (receiver, thread)
}

async fn churn_once(args: &RunArgs, connector: &Connector, body: &Bytes) -> Result<()> {
    let tls = connector.tls().await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .context("HTTP/1.1 handshake")?;
    let driver = tokio::spawn(connection);
    exchange(&mut sender, request(args, body, true)?).await?;
    drop(sender);
    // `Connection: close`: the target closes; wait for it so the close is part of the cost.
    let _ = tokio::time::timeout(Duration::from_secs(5), driver).await;
    Ok(())
}

async fn bulk(args: &RunArgs, connector: &Connector) -> Result<Value> {
    let pids = args.pid.clone();
    reset_peak_rss(&pids);
    let chunk = vec![0x5a_u8; 256 * 1024];
    let mut stream = connector.tcp().await?;
    let cpu_before = (!pids.is_empty()).then(|| cpu_seconds(&pids));
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < args.bytes {
        let n = (args.bytes - sent).min(chunk.len() as u64) as usize;
        stream.write_all(&chunk[..n]).await.context("upload")?;
        sent += n as u64;
    }
    stream.shutdown().await.context("half-close")?;
    let mut count = [0u8; 8];
    stream
        .read_exact(&mut count)
        .await
        .context("sink's byte count (the tunnel must pass the half-close on)")?;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_after = (!pids.is_empty()).then(|| cpu_seconds(&pids));
    let received = u64::from_le_bytes(count);
    if received != args.bytes {
        bail!("sink received {received} of {} bytes", args.bytes);
    }
    let cpu = cpu_before.zip(cpu_after).map(|(b, a)| a - b);
    Ok(json!({
        "bytes": args.bytes,
        "seconds": elapsed,
        "mib_per_s": args.bytes as f64 / (1024.0 * 1024.0) / elapsed,
        "cpu_s": cpu,
        "cpu_s_per_gib": cpu.map(|c| c / (args.bytes as f64 / f64::from(1u32 << 30))),
        "peak_rss_kb": (!pids.is_empty()).then(|| status_kb(&pids, "VmHWM:")),
        "errors": 0,
    }))
}

async fn idle(args: &RunArgs, connector: &Arc<Connector>) -> Result<Value> {
    let pids = args.pid.clone();
    if pids.is_empty() {
        bail!("idle mode measures the proxy: --pid is required");
    }
    let rss_before = status_kb(&pids, "VmRSS:");
    let opened = Arc::new(AtomicU64::new(0));
    let mut streams = Vec::with_capacity(args.connections);
    let mut first_error = None;
    let mut errors = 0u64;
    let started = Instant::now();
    // Handshakes in flight at once: enough to open 10,000 in seconds without a SYN flood.
    let parallel = args.concurrency.max(1);
    let mut opening = tokio::task::JoinSet::new();
    let mut launched = 0usize;
    while launched < args.connections || !opening.is_empty() {
        while launched < args.connections && opening.len() < parallel {
            let connector = connector.clone();
            let opened = opened.clone();
            opening.spawn(async move {
                let stream = connector.tls().await?;
                opened.fetch_add(1, Ordering::Relaxed);
                Ok::<_, anyhow::Error>(stream)
            });
            launched += 1;
        }
        match opening.join_next().await {
            Some(Ok(Ok(stream))) => streams.push(stream),
            Some(Ok(Err(error))) => {
                errors += 1;
                first_error.get_or_insert_with(|| format!("{error:#}"));
            }
            Some(Err(error)) => {
                errors += 1;
                first_error.get_or_insert_with(|| error.to_string());
            }
            None => break,
        }
    }
    let open_seconds = started.elapsed().as_secs_f64();
    // Let the gateway settle (allocator, deferred frees) before sampling.
    tokio::time::sleep(Duration::from_secs_f64(args.duration.max(1.0))).await;
    let rss_after = status_kb(&pids, "VmRSS:");
    let held = streams.len();
    // Still open? A connection the gateway timed out reads EOF at once.
    let mut alive = 0usize;
    for stream in streams.iter_mut().take(100) {
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(5), stream.get_mut().0.peek(&mut byte))
            .await
        {
            Err(_) => alive += 1,
            Ok(Ok(n)) if n > 0 => alive += 1,
            _ => {}
        }
    }
    drop(streams);
    Ok(json!({
        "connections": held,
        "errors": errors,
        "first_error": first_error,
        "open_seconds": open_seconds,
        "rss_before_kb": rss_before,
        "rss_after_kb": rss_after,
        "kib_per_connection": if held > 0 { (rss_after.saturating_sub(rss_before)) as f64 / held as f64 } else { 0.0 },
        "alive_of_first_100": alive,
        "peak_rss_kb": status_kb(&pids, "VmHWM:"),
    }))
}

fn summary(result: &Value) -> String {
    let text = |key: &str| result.get(key).map_or_else(String::new, Value::to_string);
    format!(
        "{} {}: rps {} p50 {} p99 {} errors {} {}",
        text("target"),
        text("scenario"),
        text("rps"),
        text("p50_us"),
        text("p99_us"),
        text("errors"),
        result
            .get("first_error")
            .and_then(Value::as_str)
            .unwrap_or_default()
    )
}

// === report ===

fn report(results: &Path, out: &Path, header: Option<&Path>) -> Result<()> {
    let text =
        std::fs::read_to_string(results).with_context(|| format!("read {}", results.display()))?;
    let rows: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .context("results file")?;
    let mut md = String::new();
    if let Some(header) = header {
        md.push_str(
            &std::fs::read_to_string(header)
                .with_context(|| format!("read {}", header.display()))?,
        );
        md.push('\n');
    }
    let num = |row: &Value, key: &str| row.get(key).and_then(Value::as_f64);
    let fmt = |value: Option<f64>, decimals: usize| {
        value.map_or_else(|| "–".to_owned(), |v| format!("{v:.decimals$}"))
    };
    let signed = |value: Option<f64>| value.map_or_else(|| "–".to_owned(), |v| format!("{v:+.0}"));
    // The floor each proxied row is compared with: the direct row of the same scenario.
    let direct: BTreeMap<String, &Value> = rows
        .iter()
        .filter(|r| r["target"] == "direct")
        .filter_map(|r| Some((r["scenario"].as_str()?.to_owned(), r)))
        .collect();

    let request_rows: Vec<&Value> = rows
        .iter()
        .filter(|r| matches!(r["mode"].as_str(), Some("keepalive" | "churn")))
        .collect();
    md.push_str("## Requests: 2 KiB chat-completion POST over HTTPS through CONNECT\n\n");
    md.push_str("| target | scenario | req/s | p50 µs | p99 µs | +p50 µs vs direct | +p99 µs vs direct | errors | proxy CPU s / 1k req | proxy peak RSS MiB |\n");
    md.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    // Grouped by scenario in the order the harness ran them, so each block reads against its
    // direct row.
    let mut scenarios: Vec<&str> = Vec::new();
    for scenario in request_rows.iter().filter_map(|r| r["scenario"].as_str()) {
        if !scenarios.contains(&scenario) {
            scenarios.push(scenario);
        }
    }
    let ordered = scenarios
        .iter()
        .flat_map(|s| request_rows.iter().filter(move |r| r["scenario"] == *s));
    for row in ordered {
        let base = row["scenario"].as_str().and_then(|s| direct.get(s));
        let added = |key: &str| {
            if row["target"] == "direct" {
                return None;
            }
            Some(num(row, key)? - num(base?, key)?)
        };
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            row["target"].as_str().unwrap_or("?"),
            row["scenario"].as_str().unwrap_or("?"),
            fmt(num(row, "rps"), 0),
            fmt(num(row, "p50_us"), 0),
            fmt(num(row, "p99_us"), 0),
            signed(added("p50_us")),
            signed(added("p99_us")),
            num(row, "errors").unwrap_or(0.0),
            fmt(num(row, "cpu_s_per_1k"), 3),
            fmt(num(row, "peak_rss_kb").map(|kb| kb / 1024.0), 1),
        ));
    }

    let paced: Vec<&Value> = rows.iter().filter(|r| r["mode"] == "paced").collect();
    if !paced.is_empty() {
        md.push_str("\n## aigate intercept open loop, at half of its peak and below\n\n");
        md.push_str(
            "Target, at half of the peak: added latency p50 ≤ 100 µs, p99 ≤ 400 µs. Each rate has \
             its own direct row. `core busy` is the proxy's CPU time per second of the row: open \
             loop a request costs more CPU than closed loop, so half the peak rate can keep the \
             core nearly saturated.\n\n",
        );
        md.push_str("| target | share of peak | rate req/s | achieved req/s | p50 µs | p99 µs | p99.9 µs | +p50 µs vs direct | +p99 µs vs direct | meets target | errors | unsent | proxy CPU s / 1k req | core busy |\n");
        md.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|\n");
        for row in &paced {
            let floor = paced
                .iter()
                .find(|r| r["target"] == "direct" && r["scenario"] == row["scenario"]);
            let added = |key: &str| {
                if row["target"] == "direct" {
                    return None;
                }
                Some(num(row, key)? - num(floor?, key)?)
            };
            let is_target_load = row["scenario"] == "paced-50%";
            let verdict = match (added("p50_us"), added("p99_us")) {
                (Some(p50), Some(p99)) if is_target_load && p50 <= 100.0 && p99 <= 400.0 => "yes",
                (Some(_), Some(_)) if is_target_load => "no",
                _ => "–",
            };
            let busy = num(row, "rps")
                .zip(num(row, "cpu_s_per_1k"))
                .map(|(rps, cpu)| format!("{:.0}%", rps * cpu / 10.0));
            let share = row["scenario"].as_str().unwrap_or("?");
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                row["target"].as_str().unwrap_or("?"),
                share.strip_prefix("paced-").unwrap_or(share),
                fmt(num(row, "rate"), 0),
                fmt(num(row, "rps"), 0),
                fmt(num(row, "p50_us"), 0),
                fmt(num(row, "p99_us"), 0),
                fmt(num(row, "p999_us"), 0),
                signed(added("p50_us")),
                signed(added("p99_us")),
                verdict,
                num(row, "errors").unwrap_or(0.0),
                num(row, "unsent").unwrap_or(0.0),
                fmt(num(row, "cpu_s_per_1k"), 3),
                busy.as_deref().unwrap_or("–"),
            ));
        }
    }

    let bulk: Vec<&Value> = rows.iter().filter(|r| r["mode"] == "bulk").collect();
    if !bulk.is_empty() {
        md.push_str(
            "\n## Tunnel throughput (one TCP stream uploading to a sink through CONNECT)\n\n",
        );
        md.push_str(
            "| target | bytes | seconds | MiB/s | proxy CPU s / GiB | proxy peak RSS MiB |\n",
        );
        md.push_str("|---|---:|---:|---:|---:|---:|\n");
        for row in bulk {
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                row["target"].as_str().unwrap_or("?"),
                fmt(num(row, "bytes"), 0),
                fmt(num(row, "seconds"), 2),
                fmt(num(row, "mib_per_s"), 0),
                fmt(num(row, "cpu_s_per_gib"), 2),
                fmt(num(row, "peak_rss_kb").map(|kb| kb / 1024.0), 1),
            ));
        }
    }

    let idle: Vec<&Value> = rows.iter().filter(|r| r["mode"] == "idle").collect();
    if !idle.is_empty() {
        md.push_str(
            "\n## Idle intercepted connections (CONNECT + TLS handshake, then silence)\n\n",
        );
        md.push_str("| target | connections held | errors | open s | RSS before MiB | RSS with connections MiB | KiB / connection | alive (of first 100) |\n");
        md.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
        for row in idle {
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                row["target"].as_str().unwrap_or("?"),
                fmt(num(row, "connections"), 0),
                num(row, "errors").unwrap_or(0.0),
                fmt(num(row, "open_seconds"), 1),
                fmt(num(row, "rss_before_kb").map(|kb| kb / 1024.0), 1),
                fmt(num(row, "rss_after_kb").map(|kb| kb / 1024.0), 1),
                fmt(num(row, "kib_per_connection"), 1),
                fmt(num(row, "alive_of_first_100"), 0),
            ));
        }
    }

    let failures: Vec<String> = rows
        .iter()
        .filter_map(|r| {
            Some(format!(
                "- {} {}: {}",
                r["target"].as_str()?,
                r["scenario"].as_str()?,
                r.get("first_error")?.as_str()?
            ))
        })
        .collect();
    if !failures.is_empty() {
        md.push_str("\n## First error per run\n\n");
        md.push_str(&failures.join("\n"));
        md.push('\n');
    }
    std::fs::write(out, md).with_context(|| format!("write {}", out.display()))?;
    Ok(())
}

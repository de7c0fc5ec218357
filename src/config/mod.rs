//! Typed gateway configuration.
//!
//! The TOML file is parsed into `Config` with serde (`deny_unknown_fields` everywhere, so a typo is
//! an error naming the key rather than a silently ignored setting). Each section then checks the
//! values serde cannot (ranges, host syntax) in its own `validate`, and `Config::validate` adds
//! what spans sections (listener clashes); every error names the section and key an operator has
//! to fix. `Config::validated` is the one way to a `ValidConfig`, the form start, reload and
//! `aigate check-config` accept. Sections compare by value (`PartialEq`), so a reload can tell
//! what changed. A new key is a field, its default, and (when it has a range) a check in its
//! section's `validate`. Relative paths are kept as written and resolve against the working
//! directory, like every other path the operator types.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub mod export;

use crate::decision::{Defaults, FailMode};

pub use crate::audit::WriterPriority;

/// More serving threads than this is a typo, not a machine.
const MAX_PROXY_THREADS: usize = 1024;
/// Events a few milliseconds apart gain nothing from a thread kept awake between them.
const MAX_BUSY_POLL_US: u64 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config: {key}: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub proxy: ProxyConfig,
    pub transparent: TransparentConfig,
    pub admin: AdminConfig,
    pub tls: TlsConfig,
    pub upstream: UpstreamConfig,
    pub store: StoreConfig,
    pub intercept: InterceptConfig,
    pub catalog: CatalogConfig,
    pub inspect: InspectConfig,
    pub policy: PolicyConfig,
    pub identity: IdentityConfig,
    pub audit: AuditConfig,
    pub log: LogConfig,
    /// `[[export]]`: SIEM and webhook integrations (see `export`).
    pub export: Vec<export::ExportConfig>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// Attribution methods, first hit wins; nothing matching means anonymous.
    pub order: Vec<AttributionMethod>,
    /// Header an authenticating proxy or SSO agent sets to the user's email.
    pub trusted_header: String,
    /// Source networks whose `trusted_header` is believed. Empty: the header is never trusted
    /// (it is still stripped before forwarding).
    pub trusted_networks: Vec<ipnet::IpNet>,
    /// Explicit-mode requests must carry valid `Proxy-Authorization: Basic` credentials (or be
    /// attributed by the trusted header); otherwise the proxy answers 407.
    pub require_proxy_auth: bool,
    /// Realm named in the `Proxy-Authenticate` challenge.
    pub proxy_auth_realm: String,
    pub cache_ttl_secs: u64,
    pub cache_capacity: u64,
    /// Wrong proxy passwords a client address, or an account, may send within
    /// `auth_lockout_secs` before further attempts are refused (429) without being checked.
    pub max_auth_failures: u32,
    /// The failure window and the lockout that follows it.
    pub auth_lockout_secs: u64,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            order: vec![
                AttributionMethod::TrustedHeader,
                AttributionMethod::ProxyBasic,
                AttributionMethod::SourceIp,
            ],
            trusted_header: "x-authenticated-user".to_owned(),
            trusted_networks: Vec::new(),
            require_proxy_auth: false,
            proxy_auth_realm: "aigate".to_owned(),
            cache_ttl_secs: 300,
            cache_capacity: 100_000,
            max_auth_failures: 10,
            auth_lockout_secs: 300,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttributionMethod {
    TrustedHeader,
    ProxyBasic,
    SourceIp,
}

impl AttributionMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AttributionMethod::TrustedHeader => "trusted_header",
            AttributionMethod::ProxyBasic => "proxy_basic",
            AttributionMethod::SourceIp => "source_ip",
        }
    }
}

/// What runs the Rego.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Evaluator {
    /// regorus' bytecode VM, about 2.4x faster. A builtin that fails inside a rule (say
    /// `to_number("high")`) makes that rule undefined, as in OPA's default mode; the fail mode
    /// applies to evaluation limits and to rules the VM cannot run.
    #[default]
    Vm,
    /// regorus' interpreter with strict builtin errors: any failing builtin is an evaluation
    /// error and applies the fail mode.
    Interpreter,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Policies (`NAME.yaml` + `NAME.rego`) loaded at start and on `POST /admin/reload`.
    pub dir: PathBuf,
    /// What an evaluation error does: "closed" (DENY, reason `policy_error`) or "open".
    pub fail_mode: FailMode,
    /// What runs the Rego: "vm" (regorus' bytecode VM, the default) or "interpreter" (strict
    /// builtin errors: a failing builtin applies the fail mode instead of leaving its rule
    /// undefined).
    pub evaluator: Evaluator,
    /// Decision when no policy matches, per approval status of the service.
    pub defaults: Defaults,
    /// Insert policy files the store lacks at start and on reload (never overwrites).
    pub import: bool,
    /// How often the store is polled for changed policies and exceptions.
    pub reload_interval_secs: u64,
    /// A REVIEW: "coach" (coaching page / 403 JSON) or "allow_and_flag" (forward, open a
    /// violation for later review).
    pub review_action: ReviewAction,
    /// How long the exception a user's business justification creates lasts.
    pub justification_exception_secs: u64,
    /// Status of that exception: "approved" (effective at once) or "pending" (an administrator
    /// approves it).
    pub justification_status: JustificationStatus,
    /// Justifications one client (a user, or an anonymous address) may give per hour; more are
    /// refused with 429.
    pub max_justifications_per_hour: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewAction {
    Coach,
    AllowAndFlag,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JustificationStatus {
    Approved,
    Pending,
}

impl JustificationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JustificationStatus::Approved => "approved",
            JustificationStatus::Pending => "pending",
        }
    }
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("config/policies"),
            fail_mode: FailMode::Closed,
            evaluator: Evaluator::Vm,
            defaults: Defaults::default(),
            import: true,
            reload_interval_secs: 5,
            review_action: ReviewAction::Coach,
            justification_exception_secs: 3600,
            justification_status: JustificationStatus::Approved,
            max_justifications_per_hour: 10,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InspectConfig {
    /// Findings below this confidence (0.0-1.0) are not reported.
    pub min_confidence: f32,
    /// Custom term lists reported as their own entity type (crown-jewel projects, customers).
    pub dictionaries: Vec<DictionaryConfig>,
}

impl Default for InspectConfig {
    fn default() -> Self {
        Self {
            min_confidence: 0.5,
            dictionaries: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DictionaryConfig {
    /// The entity type reported, UPPER_SNAKE_CASE (`CROWN_JEWEL`).
    pub name: String,
    #[serde(default = "default_dictionary_class")]
    pub classification: crate::inspect::DataClass,
    #[serde(default)]
    pub terms: Vec<String>,
    /// A file with one term per line (`#` comments), read at start.
    #[serde(default)]
    pub terms_file: Option<PathBuf>,
}

fn default_dictionary_class() -> crate::inspect::DataClass {
    crate::inspect::DataClass::TradeSecret
}

impl InspectConfig {
    /// The dictionaries with their term files read.
    pub fn load_dictionaries(&self) -> Result<Vec<crate::inspect::Dictionary>, ConfigError> {
        self.dictionaries
            .iter()
            .map(|d| {
                let mut terms = d.terms.clone();
                if let Some(path) = &d.terms_file {
                    let text =
                        std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                            path: path.clone(),
                            source,
                        })?;
                    terms.extend(
                        text.lines()
                            .map(str::trim)
                            .filter(|l| !l.is_empty() && !l.starts_with('#'))
                            .map(str::to_owned),
                    );
                }
                Ok(crate::inspect::Dictionary {
                    name: d.name.clone(),
                    classification: d.classification,
                    terms,
                })
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Explicit forward-proxy listener (CONNECT and absolute-form requests).
    pub listen: SocketAddr,
    /// Open client connections beyond this are refused at accept.
    pub max_connections: usize,
    /// Largest request head (request line + headers) accepted from a client.
    pub max_header_bytes: usize,
    /// Time a client has to send a whole request head, from its first byte: the first head of a
    /// connection and every keep-alive head after it, inside TLS too.
    pub header_read_timeout_secs: u64,
    /// Slowest request body accepted, over the time the gateway waits for it, once
    /// `body_rate_grace_secs` of waiting have passed. 0: no minimum.
    pub min_body_rate_bytes_per_sec: u64,
    /// Waiting for a body this long is always allowed, however few bytes came.
    pub body_rate_grace_secs: u64,
    /// Streams an intercepted HTTP/2 client may have open at once on one connection (the h2
    /// SETTINGS_MAX_CONCURRENT_STREAMS the gateway announces).
    pub h2_max_concurrent_streams: u32,
    /// Open connections one client address may hold on each listener; beyond it new ones
    /// are refused (503). 0: only `max_connections` applies.
    pub max_connections_per_client: usize,
    /// Request bodies are buffered for inspection up to this size; beyond it the decision is
    /// made on the prefix and flagged `truncated`.
    pub body_buffer_bytes: usize,
    /// A blind tunnel with no traffic in either direction for this long is closed.
    pub tunnel_idle_timeout_secs: u64,
    /// An intercepted client connection idle before or between requests for this long is closed.
    pub client_idle_timeout_secs: u64,
    /// On SIGTERM, how long requests and tunnels already in flight may take to finish before the
    /// gateway exits anyway (the audit queue is flushed after them). 0: do not wait.
    pub drain_timeout_secs: u64,
    /// Threads that accept and serve client connections (explicit and transparent), each with
    /// its own async runtime and upstream pool. 0: one per CPU the process may run on.
    pub threads: usize,
    /// How long a serving thread keeps polling for network events after its last work before
    /// it sleeps (`src/busy_poll.rs`). Spares peers the interrupt of waking a halted vCPU and
    /// the gateway the wake-up, for CPU burnt in the window. 0: off.
    pub busy_poll_us: u64,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 3128)),
            max_connections: 10_000,
            max_header_bytes: 32 * 1024,
            header_read_timeout_secs: 10,
            min_body_rate_bytes_per_sec: 1024,
            body_rate_grace_secs: 10,
            h2_max_concurrent_streams: 100,
            max_connections_per_client: 256,
            body_buffer_bytes: 10 * 1024 * 1024,
            tunnel_idle_timeout_secs: 300,
            client_idle_timeout_secs: 120,
            drain_timeout_secs: 30,
            threads: 0,
            busy_poll_us: 0,
        }
    }
}

impl ProxyConfig {
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_secs)
    }
    /// `threads`, with 0 resolved to the CPUs this process may use (affinity and cgroup quota).
    pub fn serving_threads(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            threads => threads,
        }
    }
    pub fn client_idle_timeout(&self) -> Duration {
        Duration::from_secs(self.client_idle_timeout_secs)
    }
    pub fn tunnel_idle_timeout(&self) -> Duration {
        Duration::from_secs(self.tunnel_idle_timeout_secs)
    }
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_secs)
    }
    /// `busy_poll_us`, or `None` when off.
    pub fn busy_poll_window(&self) -> Option<Duration> {
        (self.busy_poll_us > 0).then(|| Duration::from_micros(self.busy_poll_us))
    }
}

/// The transparent listener: connections an appliance redirected (iptables `REDIRECT` or
/// `TPROXY`) to the gateway without the client knowing. Off unless `listen` is set.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransparentConfig {
    /// Where redirected connections arrive (`0.0.0.0:3129` on an appliance). Absent: disabled.
    pub listen: Option<SocketAddr>,
    /// The listening socket is opened with `IP_TRANSPARENT` for iptables `TPROXY` (needs
    /// CAP_NET_ADMIN); the original destination is then the connection's local address instead
    /// of the `SO_ORIGINAL_DST` that `REDIRECT` leaves behind.
    pub tproxy: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// SHA-256 digests (hex) of the bearer tokens accepted on `/admin/*`; the tokens themselves
    /// are never stored. Empty: every `/admin/*` request is refused.
    pub token_sha256: Vec<String>,
    /// Gateways (`host:port`) the PAC file sends AI traffic to, in failover order. Empty: this
    /// gateway's `[proxy] listen`.
    pub pac_proxies: Vec<String>,
    /// End the PAC's gateway list with `DIRECT`, so browsers reach AI services unpoliced when
    /// every gateway is down. Off by default: the PAC routes only AI hosts to the gateway, so
    /// failing closed costs nothing but AI access during an outage.
    pub pac_direct_fallback: bool,
    /// Serve the listener over HTTPS (rustls, TLS 1.2/1.3).
    pub tls: bool,
    /// PEM certificate chain and key for HTTPS; when absent, a certificate for `tls_names` is
    /// issued by the gateway CA at each start (clients already trust that CA).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_names: Vec<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            token_sha256: Vec::new(),
            pac_proxies: Vec::new(),
            pac_direct_fallback: false,
            tls: false,
            tls_cert: None,
            tls_key: None,
            tls_names: vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Directory holding `ca.pem` and `ca.key` (generated on first run).
    pub ca_dir: PathBuf,
    /// Lifetime of minted leaf certificates.
    pub leaf_validity_hours: u64,
    /// Most leaf certificates kept in the cache.
    pub leaf_cache_capacity: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            ca_dir: PathBuf::from("certs"),
            leaf_validity_hours: 24,
            leaf_cache_capacity: 10_000,
        }
    }
}

impl TlsConfig {
    pub fn leaf_validity(&self) -> Duration {
        Duration::from_secs(self.leaf_validity_hours * 3600)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// PEM files of extra trust anchors for upstream TLS, on top of the system roots (private
    /// CAs, test upstreams).
    pub extra_roots: Vec<PathBuf>,
    /// Split-horizon overrides: host name → `ip:port` used instead of DNS.
    pub resolve: BTreeMap<String, SocketAddr>,
    pub connect_timeout_secs: u64,
    pub read_timeout_secs: u64,
    pub idle_timeout_secs: u64,
    /// Offer HTTP/2 to TLS upstreams (ALPN h2, http/1.1). Off: every upstream connection is
    /// HTTP/1.1, one per in-flight request, pooled for keep-alive.
    pub http2: bool,
    /// Networks never connected to, on top of the built-in ones (loopback, link-local,
    /// unspecified, multicast and the host's own interface addresses, always denied).
    pub deny_networks: Vec<ipnet::IpNet>,
    /// Also deny the private ranges (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7).
    pub deny_private: bool,
    /// Networks connected to even when denied above (an internal LLM on a LAN address). The
    /// `resolve` overrides are the operator's own choice and never checked.
    pub allow_networks: Vec<ipnet::IpNet>,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            extra_roots: Vec::new(),
            resolve: BTreeMap::new(),
            connect_timeout_secs: 10,
            read_timeout_secs: 120,
            idle_timeout_secs: 90,
            http2: true,
            deny_networks: Vec::new(),
            deny_private: false,
            allow_networks: Vec::new(),
        }
    }
}

impl UpstreamConfig {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite://path` (embedded default) or `postgres://...`.
    pub url: String,
    /// Apply pending migrations when the gateway starts (`aigate migrate` does it on demand).
    pub migrate_on_start: bool,
    /// Insert catalog services missing from the store at start (never overwrites a row).
    pub import_catalog: bool,
    /// Interval of the partition/retention/rollup job.
    pub maintenance_interval_secs: u64,
    /// How a new PostgreSQL database stores decisions and audit events.
    pub time_series: TimeSeries,
}

/// `[store] time_series`: the shape migration 0002 gives a new PostgreSQL database. A database
/// keeps the shape it was created with; an explicit choice that contradicts it fails the
/// migration instead of converting tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeSeries {
    /// TimescaleDB when the server has the extension installed and preloaded, else partitions.
    #[default]
    Auto,
    /// Hypertables, retention jobs and a continuous aggregate; refuses to migrate without the
    /// extension installed and in `shared_preload_libraries`.
    Timescaledb,
    /// Native monthly range partitions kept by the gateway, even when TimescaleDB is there.
    Partitions,
}

impl TimeSeries {
    /// The value as written in the config file.
    pub fn name(self) -> &'static str {
        match self {
            TimeSeries::Auto => "auto",
            TimeSeries::Timescaledb => "timescaledb",
            TimeSeries::Partitions => "partitions",
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://data/aigate.db".to_owned(),
            migrate_on_start: true,
            import_catalog: true,
            maintenance_interval_secs: 3600,
            time_series: TimeSeries::Auto,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Records waiting for the writer; beyond it records are parked and spilled, never dropped.
    pub queue_capacity: usize,
    /// Records per store write.
    pub batch_size: usize,
    /// A partial batch is written after this long.
    pub flush_interval_ms: u64,
    /// How often the spill journal is retried while the store is down.
    pub retry_interval_ms: u64,
    /// Spill journal and dead-letter file.
    pub journal_dir: PathBuf,
    /// What a full queue does: park the record for the writer to spill (default), or drop it.
    pub when_full: WhenFull,
    /// Records parked beyond the queue before new ones are dropped: a memory bound for when the
    /// disk cannot keep up either.
    pub overflow_limit: usize,
    /// Niceness (0-19) of the writer's threads when they run in the normal scheduling class.
    pub writer_nice: u8,
    /// "adaptive": the writer runs in the idle class (only on CPU requests leave unused) while
    /// its backlog is short and returns to normal priority when it grows; "normal": always
    /// normal priority.
    pub writer_priority: WriterPriority,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    #[default]
    Spill,
    Drop,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 65_536,
            batch_size: 1000,
            flush_interval_ms: 100,
            retry_interval_ms: 1000,
            journal_dir: PathBuf::from("data/journal"),
            when_full: WhenFull::Spill,
            overflow_limit: 1_000_000,
            writer_nice: 0,
            writer_priority: WriterPriority::Adaptive,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InterceptMode {
    /// Intercept the catalog's AI domains (plus `extra_hosts`), tunnel everything else.
    #[default]
    Catalog,
    /// Intercept every TLS host except the bypass list (shadow-AI discovery).
    All,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InterceptConfig {
    pub mode: InterceptMode,
    /// Hosts intercepted in addition to the catalog (subdomains included).
    pub extra_hosts: Vec<String>,
    /// Hosts never intercepted, whatever the catalog says (subdomains included).
    pub bypass: Vec<String>,
    /// Client handshake aborts on a minted leaf, within `pinning_window_secs`, that move a host
    /// to the learned bypass list (certificate-pinning apps). 0 disables learning.
    pub pinning_failure_threshold: u32,
    pub pinning_window_secs: u64,
    /// How long a learned bypass lasts before the host is intercepted again.
    pub learned_bypass_ttl_secs: u64,
}

impl Default for InterceptConfig {
    fn default() -> Self {
        Self {
            mode: InterceptMode::Catalog,
            extra_hosts: Vec::new(),
            bypass: Vec::new(),
            pinning_failure_threshold: 3,
            pinning_window_secs: 300,
            learned_bypass_ttl_secs: 24 * 3600,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogConfig {
    /// Directory of `*.yaml` AI-service definitions.
    pub dir: PathBuf,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("config/catalog"),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing `EnvFilter` directive; `RUST_LOG` overrides it.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<ValidConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|error| match error {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates config text (the path in a parse error is left empty).
    pub fn parse(text: &str) -> Result<ValidConfig, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|error| ConfigError::Parse {
            path: PathBuf::new(),
            message: error.to_string(),
        })?;
        config.validated()
    }

    /// Checks every section, then what spans sections (listeners that clash).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.proxy.validate()?;
        self.transparent.validate()?;
        self.admin.validate()?;
        self.tls.validate()?;
        self.upstream.validate()?;
        self.store.validate()?;
        self.intercept.validate()?;
        self.inspect.validate()?;
        self.policy.validate()?;
        self.identity.validate()?;
        self.audit.validate()?;
        self.log.validate()?;
        export::validate_entries(&self.export)
            .map_err(|error| invalid(&error.key, error.message))?;
        self.validate_listeners()
    }

    /// Validates and marks the configuration valid: the one way to a [`ValidConfig`], which
    /// start, every reload and `aigate check-config` go through.
    pub fn validated(self) -> Result<ValidConfig, ConfigError> {
        self.validate()?;
        Ok(ValidConfig(self))
    }

    /// Two listeners on one address (port 0 excepted: the kernel picks distinct ports).
    fn validate_listeners(&self) -> Result<(), ConfigError> {
        let proxy = self.proxy.listen;
        if proxy == self.admin.listen && proxy.port() != 0 {
            return Err(invalid(
                "[admin] listen",
                format!("{} is also [proxy] listen", self.admin.listen),
            ));
        }
        if let Some(listen) = self.transparent.listen {
            for (other_key, other) in [
                ("[proxy] listen", proxy),
                ("[admin] listen", self.admin.listen),
            ] {
                if listen == other && listen.port() != 0 {
                    return Err(invalid(
                        "[transparent] listen",
                        format!("{listen} is also {other_key}"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A configuration that passed [`Config::validated`]. Reads as a `Config`; only validation
/// makes one.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidConfig(Config);

impl ValidConfig {
    pub fn into_inner(self) -> Config {
        self.0
    }
}

impl std::ops::Deref for ValidConfig {
    type Target = Config;
    fn deref(&self) -> &Config {
        &self.0
    }
}

impl From<ValidConfig> for Config {
    fn from(config: ValidConfig) -> Config {
        config.0
    }
}

/// `value` must not be 0.
fn positive(key: &str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(invalid(key, "must be greater than 0"));
    }
    Ok(())
}

impl ProxyConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_connections == 0 {
            return Err(invalid("[proxy] max_connections", "must be at least 1"));
        }
        if !(1024..=1024 * 1024).contains(&self.max_header_bytes) {
            return Err(invalid(
                "[proxy] max_header_bytes",
                "must be between 1024 and 1048576",
            ));
        }
        if self.body_rate_grace_secs == 0 && self.min_body_rate_bytes_per_sec > 0 {
            return Err(invalid(
                "[proxy] body_rate_grace_secs",
                "must be at least 1 when min_body_rate_bytes_per_sec is set",
            ));
        }
        if !(1..=1000).contains(&self.h2_max_concurrent_streams) {
            return Err(invalid(
                "[proxy] h2_max_concurrent_streams",
                "must be between 1 and 1000",
            ));
        }
        if self.body_buffer_bytes < 1024 {
            return Err(invalid(
                "[proxy] body_buffer_bytes",
                "must be at least 1024",
            ));
        }
        positive(
            "[proxy] header_read_timeout_secs",
            self.header_read_timeout_secs,
        )?;
        positive(
            "[proxy] tunnel_idle_timeout_secs",
            self.tunnel_idle_timeout_secs,
        )?;
        positive(
            "[proxy] client_idle_timeout_secs",
            self.client_idle_timeout_secs,
        )?;
        if self.threads > MAX_PROXY_THREADS {
            return Err(invalid(
                "[proxy] threads",
                format!("must be at most {MAX_PROXY_THREADS} (0: one per CPU)"),
            ));
        }
        if self.busy_poll_us > MAX_BUSY_POLL_US {
            return Err(invalid(
                "[proxy] busy_poll_us",
                format!("must be at most {MAX_BUSY_POLL_US} µs (0: off); a longer window only burns CPU"),
            ));
        }
        if self.drain_timeout_secs > 3600 {
            return Err(invalid(
                "[proxy] drain_timeout_secs",
                "must be at most 3600; a stop should not hang for longer than an hour",
            ));
        }
        Ok(())
    }
}

impl TransparentConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.is_none() && self.tproxy {
            return Err(invalid(
                "[transparent] tproxy",
                "needs [transparent] listen (the listener it applies to)",
            ));
        }
        Ok(())
    }
}

impl AdminConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(invalid(
                "[admin] tls_cert / tls_key",
                "give both or neither (neither: a certificate from the gateway CA)",
            ));
        }
        if self.tls && self.tls_cert.is_none() && self.tls_names.is_empty() {
            return Err(invalid(
                "[admin] tls_names",
                "needs at least one name for the CA-issued certificate",
            ));
        }
        for (index, digest) in self.token_sha256.iter().enumerate() {
            let is_hex_digest = digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit());
            if !is_hex_digest {
                return Err(invalid(
                    &format!("[admin] token_sha256[{index}]"),
                    "must be the 64-hex-digit SHA-256 of a token (printf %s \"$TOKEN\" | sha256sum)",
                ));
            }
        }
        for (index, proxy) in self.pac_proxies.iter().enumerate() {
            let key = format!("[admin] pac_proxies[{index}]");
            let (host, port) = proxy
                .rsplit_once(':')
                .ok_or_else(|| invalid(&key, format!("{proxy:?} must be host:port")))?;
            let host_ok =
                crate::host::is_dns_name(host) || host.parse::<std::net::IpAddr>().is_ok();
            if !host_ok || port.parse::<u16>().map_or(true, |p| p == 0) {
                return Err(invalid(&key, format!("{proxy:?} must be host:port")));
            }
        }
        Ok(())
    }
}

impl TlsConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        positive("[tls] leaf_validity_hours", self.leaf_validity_hours)?;
        if self.leaf_validity_hours > 24 * 90 {
            return Err(invalid(
                "[tls] leaf_validity_hours",
                "must be at most 2160 (90 days); leaves are short-lived by design",
            ));
        }
        if self.leaf_cache_capacity == 0 {
            return Err(invalid("[tls] leaf_cache_capacity", "must be at least 1"));
        }
        Ok(())
    }
}

impl UpstreamConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        positive("[upstream] connect_timeout_secs", self.connect_timeout_secs)?;
        positive("[upstream] read_timeout_secs", self.read_timeout_secs)?;
        positive("[upstream] idle_timeout_secs", self.idle_timeout_secs)?;
        for host in self.resolve.keys() {
            check_host(&format!("[upstream] resolve.\"{host}\""), host)?;
        }
        Ok(())
    }
}

impl StoreConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        positive(
            "[store] maintenance_interval_secs",
            self.maintenance_interval_secs,
        )?;
        let url = &self.url;
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "[store] url",
                format!("{url:?} is neither a sqlite: nor a postgres:// URL"),
            ));
        }
        Ok(())
    }
}

impl InterceptConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (index, host) in self.extra_hosts.iter().enumerate() {
            check_host(&format!("[intercept] extra_hosts[{index}]"), host)?;
        }
        for (index, host) in self.bypass.iter().enumerate() {
            check_host(&format!("[intercept] bypass[{index}]"), host)?;
        }
        Ok(())
    }
}

impl InspectConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.min_confidence) {
            return Err(invalid(
                "[inspect] min_confidence",
                "must be between 0.0 and 1.0",
            ));
        }
        for dictionary in &self.dictionaries {
            if dictionary.terms.is_empty() && dictionary.terms_file.is_none() {
                return Err(invalid(
                    "[inspect] dictionaries",
                    format!(
                        "dictionary {:?} has neither terms nor terms_file",
                        dictionary.name
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl PolicyConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=1000).contains(&self.max_justifications_per_hour) {
            return Err(invalid(
                "[policy] max_justifications_per_hour",
                "must be between 1 and 1000",
            ));
        }
        if self.reload_interval_secs == 0 {
            return Err(invalid(
                "[policy] reload_interval_secs",
                "must be at least 1",
            ));
        }
        if !(60..=30 * 86_400).contains(&self.justification_exception_secs) {
            return Err(invalid(
                "[policy] justification_exception_secs",
                "must be between 60 and 2592000 (30 days)",
            ));
        }
        Ok(())
    }
}

impl IdentityConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if http::HeaderName::from_bytes(self.trusted_header.as_bytes()).is_err() {
            return Err(invalid(
                "[identity] trusted_header",
                "is not a valid header name",
            ));
        }
        if self.require_proxy_auth && !self.order.contains(&AttributionMethod::ProxyBasic) {
            return Err(invalid(
                "[identity] require_proxy_auth",
                "needs \"proxy_basic\" in [identity] order",
            ));
        }
        if self.proxy_auth_realm.is_empty()
            || self
                .proxy_auth_realm
                .chars()
                .any(|c| c == '"' || c == '\\' || c.is_control())
        {
            return Err(invalid(
                "[identity] proxy_auth_realm",
                "must be non-empty, without quotes, backslashes or control characters",
            ));
        }
        if self.cache_ttl_secs == 0 || self.cache_capacity == 0 {
            return Err(invalid(
                "[identity] cache_ttl_secs / cache_capacity",
                "must be at least 1",
            ));
        }
        if self.max_auth_failures == 0 || self.auth_lockout_secs == 0 {
            return Err(invalid(
                "[identity] max_auth_failures / auth_lockout_secs",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

impl AuditConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        positive("[audit] queue_capacity", self.queue_capacity as u64)?;
        positive("[audit] batch_size", self.batch_size as u64)?;
        positive("[audit] flush_interval_ms", self.flush_interval_ms)?;
        positive("[audit] retry_interval_ms", self.retry_interval_ms)?;
        if self.batch_size > 5000 {
            return Err(invalid(
                "[audit] batch_size",
                "must be at most 5000 (bind-parameter limits)",
            ));
        }
        if self.writer_nice > 19 {
            return Err(invalid(
                "[audit] writer_nice",
                "must be a niceness from 0 (normal) to 19 (lowest)",
            ));
        }
        Ok(())
    }
}

impl LogConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if tracing_subscriber::EnvFilter::try_new(&self.level).is_err() {
            return Err(invalid(
                "[log] level",
                format!(
                    "{:?} is not a valid filter (e.g. \"info\" or \"aigate=debug,info\")",
                    self.level
                ),
            ));
        }
        Ok(())
    }
}

/// A host pattern in the config: a DNS name whose subdomains are matched too. Wildcards are
/// rejected with a hint rather than silently never matching.
fn check_host(key: &str, host: &str) -> Result<(), ConfigError> {
    if host.contains('*') {
        return Err(invalid(
            key,
            format!("{host:?}: wildcards are not needed, a name matches its subdomains too"),
        ));
    }
    let valid = crate::host::is_dns_name(host);
    if valid {
        Ok(())
    } else {
        Err(invalid(key, format!("{host:?} is not a valid host name")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_documented_defaults() {
        let config = Config::parse("").unwrap();
        assert_eq!(config.proxy.listen.to_string(), "127.0.0.1:3128");
        assert_eq!(config.admin.listen.to_string(), "127.0.0.1:9090");
        assert_eq!(config.tls.ca_dir, PathBuf::from("certs"));
        assert_eq!(config.intercept.mode, InterceptMode::Catalog);
        assert_eq!(config.proxy.body_buffer_bytes, 10 * 1024 * 1024);
        assert_eq!(config.proxy.drain_timeout_secs, 30);
        assert!(config.transparent.listen.is_none());
    }

    #[test]
    fn shipped_transparent_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/aigate-transparent.toml");
        let config = Config::load(&path).unwrap();
        assert_eq!(
            config.transparent.listen,
            Some(SocketAddr::from(([0, 0, 0, 0], 3129)))
        );
    }

    #[test]
    fn unknown_key_is_rejected_by_name() {
        let error = Config::parse("[proxy]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n").unwrap_err();
        let message = error.to_string();
        assert!(message.contains("lisen"), "{message}");
    }

    #[test]
    fn unknown_section_is_rejected_by_name() {
        let message = Config::parse("[proxxy]\n").unwrap_err().to_string();
        assert!(message.contains("proxxy"), "{message}");
    }

    #[test]
    fn invalid_values_name_their_key() {
        let cases = [
            ("[proxy]\nlisten = \"nonsense\"\n", "listen"),
            ("[proxy]\nmax_connections = 0\n", "[proxy] max_connections"),
            ("[intercept]\nmode = \"some\"\n", "mode"),
            (
                "[intercept]\nbypass = [\"*.example.com\"]\n",
                "[intercept] bypass[0]",
            ),
            (
                "[intercept]\nextra_hosts = [\"bad host\"]\n",
                "[intercept] extra_hosts[0]",
            ),
            (
                "[upstream]\nresolve = { \"api.openai.com\" = \"nope\" }\n",
                "resolve",
            ),
            ("[store]\nurl = \"mysql://x\"\n", "[store] url"),
            ("[audit]\nwriter_nice = 20\n", "[audit] writer_nice"),
            ("[audit]\nwriter_priority = \"high\"\n", "writer_priority"),
            ("[admin]\nlisten = \"127.0.0.1:3128\"\n", "[admin] listen"),
            ("[log]\nlevel = \"===\"\n", "[log] level"),
            (
                "[transparent]\nlisten = \"127.0.0.1:3128\"\n",
                "[transparent] listen",
            ),
            ("[transparent]\ntproxy = true\n", "[transparent] tproxy"),
            ("[transparent]\nlisten = \"nowhere\"\n", "listen"),
            (
                "[proxy]\ndrain_timeout_secs = 86400\n",
                "[proxy] drain_timeout_secs",
            ),
            ("[proxy]\nthreads = 100000\n", "[proxy] threads"),
            ("[proxy]\nbusy_poll_us = 50000\n", "[proxy] busy_poll_us"),
            (
                "[admin]\ntoken_sha256 = [\"secret\"]\n",
                "[admin] token_sha256[0]",
            ),
            (
                "[admin]\npac_proxies = [\"gw.example\"]\n",
                "[admin] pac_proxies[0]",
            ),
            (
                "[admin]\npac_proxies = [\"gw.example:0\"]\n",
                "[admin] pac_proxies[0]",
            ),
        ];
        for (text, key) in cases {
            let message = Config::parse(text).unwrap_err().to_string();
            assert!(message.contains(key), "{text:?} gave {message:?}");
        }
    }

    #[test]
    fn shipped_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/aigate.toml");
        let config = Config::load(&path).unwrap();
        assert_eq!(config.store.url, "sqlite://data/aigate.db");
    }
    /// The message a section's validation gives, in full.
    fn rejection(result: Result<(), ConfigError>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn every_default_section_is_valid() {
        let config = Config::default();
        config.proxy.validate().unwrap();
        config.transparent.validate().unwrap();
        config.admin.validate().unwrap();
        config.tls.validate().unwrap();
        config.upstream.validate().unwrap();
        config.store.validate().unwrap();
        config.intercept.validate().unwrap();
        config.inspect.validate().unwrap();
        config.policy.validate().unwrap();
        config.identity.validate().unwrap();
        config.audit.validate().unwrap();
        config.log.validate().unwrap();
        config.validated().unwrap();
    }

    #[test]
    fn each_section_rejects_its_own_bad_values_naming_the_key() {
        let cases = [
            (
                rejection(
                    ProxyConfig {
                        max_header_bytes: 100,
                        ..Default::default()
                    }
                    .validate(),
                ),
                "invalid config: [proxy] max_header_bytes: must be between 1024 and 1048576",
            ),
            (
                rejection(
                    ProxyConfig {
                        client_idle_timeout_secs: 0,
                        ..Default::default()
                    }
                    .validate(),
                ),
                "invalid config: [proxy] client_idle_timeout_secs: must be greater than 0",
            ),
            (
                rejection(
                    UpstreamConfig {
                        read_timeout_secs: 0,
                        ..Default::default()
                    }
                    .validate(),
                ),
                "invalid config: [upstream] read_timeout_secs: must be greater than 0",
            ),
            (
                rejection(
                    TlsConfig {
                        leaf_validity_hours: 3000,
                        ..Default::default()
                    }
                    .validate(),
                ),
                "invalid config: [tls] leaf_validity_hours: must be at most 2160 (90 days); leaves are short-lived by design",
            ),
            (
                rejection(
                    AuditConfig {
                        batch_size: 0,
                        ..Default::default()
                    }
                    .validate(),
                ),
                "invalid config: [audit] batch_size: must be greater than 0",
            ),
            (
                rejection(
                    StoreConfig {
                        maintenance_interval_secs: 0,
                        ..Default::default()
                    }
                    .validate(),
                ),
                "invalid config: [store] maintenance_interval_secs: must be greater than 0",
            ),
            (
                rejection(
                    PolicyConfig {
                        justification_exception_secs: 10,
                        ..Default::default()
                    }
                    .validate(),
                ),
                "invalid config: [policy] justification_exception_secs: must be between 60 and 2592000 (30 days)",
            ),
            (
                rejection(
                    IdentityConfig {
                        require_proxy_auth: true,
                        order: vec![AttributionMethod::SourceIp],
                        ..Default::default()
                    }
                    .validate(),
                ),
                "invalid config: [identity] require_proxy_auth: needs \"proxy_basic\" in [identity] order",
            ),
            (
                rejection(
                    InspectConfig {
                        min_confidence: 1.5,
                        ..Default::default()
                    }
                    .validate(),
                ),
                "invalid config: [inspect] min_confidence: must be between 0.0 and 1.0",
            ),
            (
                rejection(
                    AdminConfig {
                        tls_key: Some("key.pem".into()),
                        ..Default::default()
                    }
                    .validate(),
                ),
                "invalid config: [admin] tls_cert / tls_key: give both or neither (neither: a certificate from the gateway CA)",
            ),
            (
                rejection(
                    TransparentConfig {
                        tproxy: true,
                        listen: None,
                    }
                    .validate(),
                ),
                "invalid config: [transparent] tproxy: needs [transparent] listen (the listener it applies to)",
            ),
            (
                rejection(
                    InterceptConfig {
                        bypass: vec!["ok.example".into(), "*.example.com".into()],
                        ..Default::default()
                    }
                    .validate(),
                ),
                "invalid config: [intercept] bypass[1]: \"*.example.com\": wildcards are not needed, a name matches its subdomains too",
            ),
            (
                rejection(
                    LogConfig {
                        level: "===".into(),
                        ..Default::default()
                    }
                    .validate(),
                ),
                "invalid config: [log] level: \"===\" is not a valid filter (e.g. \"info\" or \"aigate=debug,info\")",
            ),
        ];
        for (message, expected) in cases {
            assert_eq!(message, expected);
        }
    }

    #[test]
    fn listeners_that_clash_across_sections_are_rejected() {
        let mut config = Config::default();
        config.transparent.listen = Some(config.admin.listen);
        config.transparent.validate().unwrap();
        let message = config.validated().unwrap_err().to_string();
        assert_eq!(
            message,
            "invalid config: [transparent] listen: 127.0.0.1:9090 is also [admin] listen"
        );
    }

    #[test]
    fn sections_compare_by_value() {
        let text =
            "[proxy]\nthreads = 2\n[upstream]\nresolve = { \"a.example\" = \"127.0.0.1:1\" }\n";
        let (first, second) = (Config::parse(text).unwrap(), Config::parse(text).unwrap());
        assert_eq!(first, second);
        let mut changed = second.into_inner();
        changed
            .upstream
            .resolve
            .insert("b.example".into(), "127.0.0.1:2".parse().unwrap());
        assert_ne!(first.upstream, changed.upstream);
        assert_eq!(first.proxy, changed.proxy);
    }
}

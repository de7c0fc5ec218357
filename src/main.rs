//! The `aigate` command line: parse arguments, load config, run. Nothing else lives here.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use aigate::config::{Config, LogFormat, ValidConfig};
use aigate::tls::CertificateAuthority;

/// Every request builds and drops many small objects (JSON documents, headers, TLS records);
/// glibc's allocator spent a sixth of the proxy's CPU on them under load. jemalloc hands a thread
/// back the blocks it freed last, still in cache; mimalloc's sharded free lists reused them cold
/// (its fast path's load of the next free block was 6% of the request thread): jemalloc served
/// 15% more requests per core and held 10,000 idle connections in less memory
/// (docs/perf/RESULTS.md, 2026-12-02-b).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(name = "aigate", version, about = "AI-usage enforcement gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        #[arg(long, short, default_value = "config/aigate.toml")]
        config: PathBuf,
    },
    /// Validate a config and everything it names (catalog, policies, dictionaries) without
    /// starting; exits non-zero with the problem named.
    CheckConfig {
        #[arg(long, short, default_value = "config/aigate.toml")]
        config: PathBuf,
    },
    /// Apply the store migrations (`[store] url`) and report the time-series shape.
    Migrate {
        #[arg(long, short, default_value = "config/aigate.toml")]
        config: PathBuf,
    },
    /// Print the PII and secrets found in text or a request body read from stdin (values are
    /// shown redacted, with their byte offsets).
    Classify {
        /// Print the `detected_entities` JSON a decision would store.
        #[arg(long)]
        json: bool,
        /// Treat stdin as a body of this content type (default: JSON if it parses, else text).
        #[arg(long)]
        content_type: Option<String>,
        /// Config whose `[inspect]` dictionaries and threshold apply; defaults when absent.
        #[arg(long, short, default_value = "config/aigate.toml")]
        config: PathBuf,
    },
    /// Work on Rego policies without the proxy.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Manage the interception CA.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Administration of the management API.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Users, departments, groups, roles and assets.
    Directory {
        #[command(subcommand)]
        command: DirectoryCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Management API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Issue a token for a role (admin, policy_author, auditor, readonly); printed once on
    /// stdout, only its SHA-256 is stored.
    Create {
        #[arg(long)]
        role: String,
        /// Who the token is for (recorded as the actor of its changes).
        #[arg(long, default_value = "cli")]
        name: String,
        #[arg(long, short, default_value = "config/aigate.toml")]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum DirectoryCommand {
    /// Upsert users, departments, groups, roles and assets from a JSON or CSV export (README
    /// "Directory import"), all or nothing; the run is recorded in integration_sync_logs.
    Import {
        file: PathBuf,
        #[arg(long, short, default_value = "config/aigate.toml")]
        config: PathBuf,
    },
    /// Set a user's proxy password (`Proxy-Authorization: Basic`, user name = email), read from
    /// the first line of stdin; only an argon2id hash is stored.
    SetPassword {
        email: String,
        #[arg(long, short, default_value = "config/aigate.toml")]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Run the `test_*` rules of the `*_test.rego` files in DIR (default: `[policy] dir`).
    Test {
        dir: Option<PathBuf>,
        #[arg(long, short, default_value = "config/aigate.toml")]
        config: PathBuf,
    },
    /// Print the decision and explanation the policies reach on an input document (JSON).
    Eval {
        #[arg(long)]
        input: PathBuf,
        /// Policy directory (default: `[policy] dir`).
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long, short, default_value = "config/aigate.toml")]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum CaCommand {
    /// Generate the CA in `[tls] ca_dir` unless it already exists.
    Init {
        #[arg(long, short, default_value = "config/aigate.toml")]
        config: PathBuf,
    },
    /// Print the CA certificate (PEM) for distribution to clients.
    Export {
        #[arg(long, short, default_value = "config/aigate.toml")]
        config: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => run(&config),
        Command::Migrate { config } => {
            let config = load(&config)?;
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let shape = runtime.block_on(async {
                let store =
                    aigate::store::open_with(&config.store.url, config.store.time_series).await?;
                store.migrate().await
            })?;
            eprintln!(
                "Migrated {}: {}.",
                aigate::store::redact_url(&config.store.url),
                shape.describe()
            );
            Ok(())
        }
        Command::CheckConfig { config: path } => {
            let config = load(&path)?;
            let summary = aigate::state::check(&config)?;
            print_stdout(&format!(
                "{}: ok ({} services, {} policies of which {} active, {} dictionaries)\n",
                path.display(),
                summary.services,
                summary.policies,
                summary.active_policies,
                summary.dictionaries
            ));
            Ok(())
        }
        Command::Policy {
            command: PolicyCommand::Test { dir, config },
        } => {
            let dir = dir.unwrap_or(load_or_default(&config)?.policy.dir.clone());
            let results = aigate::policy::testing::run(&dir)?;
            let mut report = String::new();
            for case in &results {
                match &case.failure {
                    None => report.push_str(&format!("PASS {}\n", case.name)),
                    Some(why) => report.push_str(&format!("FAIL {}: {why}\n", case.name)),
                }
            }
            let failed = results.iter().filter(|c| c.failure.is_some()).count();
            report.push_str(&format!(
                "{} passed, {failed} failed\n",
                results.len() - failed
            ));
            print_stdout(&report);
            if failed > 0 {
                anyhow::bail!("{failed} policy test(s) failed");
            }
            Ok(())
        }
        Command::Policy {
            command: PolicyCommand::Eval { input, dir, config },
        } => {
            let config = load_or_default(&config)?.into_inner();
            let dir = dir.unwrap_or(config.policy.dir);
            let definitions = aigate::policy::load_dir(&dir)?;
            let set = aigate::policy::PolicySet::compile(
                &definitions,
                config.policy.defaults,
                config.policy.fail_mode,
                config.policy.evaluator,
            )?;
            let text = std::fs::read_to_string(&input)
                .with_context(|| format!("reading {}", input.display()))?;
            let document: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a JSON input document", input.display()))?;
            let outcome =
                aigate::policy::eval_input(&set, &document, time::OffsetDateTime::now_utc());
            let report = serde_json::json!({
                "decision": outcome.decision.as_column(),
                "reason": outcome.reason,
                "policy": outcome.primary.as_ref().map(|(_, name)| name),
                "explanation": aigate::policy::explanation(&outcome, serde_json::Value::Null),
            });
            print_stdout(&format!("{report:#}\n"));
            Ok(())
        }
        Command::Classify {
            json,
            content_type,
            config,
        } => classify(&config, json, content_type.as_deref()),
        Command::Admin {
            command:
                AdminCommand::Token {
                    command: TokenCommand::Create { role, name, config },
                },
        } => {
            let store = open_migrated_store(&load(&config)?)?;
            let token = aigate::admin::auth::generate_token();
            let digest = aigate::admin::auth::token_sha256(&token);
            if store
                .runtime
                .block_on(store.store.create_admin_token(&name, &role, &digest))?
                .is_none()
            {
                anyhow::bail!(
                    "no role named {role:?} (built in: admin, policy_author, auditor, readonly)"
                );
            }
            print_stdout(&format!("{token}\n"));
            eprintln!("Token for {name} with role {role} created; it is not shown again.");
            Ok(())
        }
        Command::Directory {
            command: DirectoryCommand::Import { file, config },
        } => {
            let store = open_migrated_store(&load(&config)?)?;
            let report = store
                .runtime
                .block_on(aigate::identity::directory::import(&*store.store, &file))?;
            eprintln!(
                "Imported {}: {} records, {} created, {} updated.",
                file.display(),
                report.fetched,
                report.created,
                report.updated
            );
            Ok(())
        }
        Command::Directory {
            command: DirectoryCommand::SetPassword { email, config },
        } => {
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .context("reading the password from stdin")?;
            let password = password.trim_end_matches(['\r', '\n']);
            if password.len() < 8 {
                anyhow::bail!("the password must be at least 8 characters");
            }
            let hash = aigate::identity::hash_password(password)
                .map_err(|error| anyhow::anyhow!("hashing the password: {error}"))?;
            let store = open_migrated_store(&load(&config)?)?;
            if !store
                .runtime
                .block_on(store.store.set_proxy_credential(&email, &hash))?
            {
                anyhow::bail!("no user with email {email}; import the directory first");
            }
            eprintln!("Proxy password set for {email}.");
            Ok(())
        }
        Command::Ca {
            command: CaCommand::Init { config },
        } => {
            let config = load(&config)?;
            let (_, generated) = CertificateAuthority::load_or_generate(&config.tls.ca_dir)
                .with_context(|| format!("CA in {}", config.tls.ca_dir.display()))?;
            let dir = config.tls.ca_dir.display();
            if generated {
                eprintln!("Generated {dir}/ca.pem and {dir}/ca.key (mode 0600).");
            } else {
                eprintln!("A CA already exists in {dir}; left unchanged.");
            }
            Ok(())
        }
        Command::Ca {
            command: CaCommand::Export { config },
        } => {
            let config = load(&config)?;
            let (ca, _) = CertificateAuthority::load_or_generate(&config.tls.ca_dir)
                .with_context(|| format!("CA in {}", config.tls.ca_dir.display()))?;
            print_stdout(ca.cert_pem());
            Ok(())
        }
    }
}

struct OpenStore {
    runtime: tokio::runtime::Runtime,
    store: std::sync::Arc<dyn aigate::store::Store>,
}

/// The configured store, migrated, for the administrative subcommands.
fn open_migrated_store(config: &ValidConfig) -> anyhow::Result<OpenStore> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let store = runtime.block_on(async {
        let store = aigate::store::open_with(&config.store.url, config.store.time_series).await?;
        store.migrate().await?;
        Ok::<_, aigate::store::StoreError>(store)
    })?;
    Ok(OpenStore { runtime, store })
}

fn load(path: &std::path::Path) -> anyhow::Result<ValidConfig> {
    Ok(Config::load(path)?)
}

/// jemalloc gives freed pages back to the system only from a thread that allocates: after a burst
/// of connections an idle gateway kept its peak RSS for good (0% of 65 MiB back 32 s after 1,000
/// keep-alive connections closed). A background thread purges them on jemalloc's decay timers.
fn release_freed_memory_in_background() {
    if let Err(error) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!(%error, "Cannot start jemalloc's background purging; freed memory stays resident.");
    }
}

fn run(path: &std::path::Path) -> anyhow::Result<()> {
    let config = load(path)?;
    init_logging(&config);
    release_freed_memory_in_background();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("aigate")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        // Handlers first: a signal that arrives while the gateway starts (it logs "listening"
        // before `start` returns) must not hit the default action, which for SIGHUP is to die.
        let mut terminate = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
        let mut gateway = aigate::server::start(config).await?;
        // Under systemd (Type=notify): ready once listening, and a watchdog ping while the
        // runtime is alive. Outside systemd these are no-ops.
        notify_systemd(&[sd_notify::NotifyState::Ready]);
        if let Some(interval) = sd_notify::watchdog_enabled() {
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval(interval / 2);
                loop {
                    ticker.tick().await;
                    notify_systemd(&[sd_notify::NotifyState::Watchdog]);
                }
            });
        }
        loop {
            tokio::select! {
                _ = gateway.wait() => anyhow::bail!("a listener stopped unexpectedly"),
                signal = tokio::signal::ctrl_c() => {
                    signal.context("waiting for SIGINT")?;
                    tracing::info!("SIGINT received; shutting down.");
                    break;
                }
                _ = terminate.recv() => {
                    tracing::info!("SIGTERM received; shutting down.");
                    break;
                }
                _ = hangup.recv() => {
                    notify_systemd(&[sd_notify::NotifyState::Reloading]);
                    // The file is re-read; what can change in place does, the rest (listeners,
                    // store, CA, ...) is named and waits for a restart.
                    let reloaded = match Config::load(path) {
                        Ok(config) => gateway.shared.reloader.config(config.into_inner()).await.map_err(anyhow::Error::from),
                        Err(error) => Err(anyhow::Error::from(error)),
                    };
                    match reloaded {
                        Ok(done) => {
                            tracing::info!(services = done.snapshot.services, policies = done.snapshot.policies, exceptions = done.snapshot.exceptions, "SIGHUP: configuration and snapshot reloaded.");
                            if !done.needs_restart.is_empty() {
                                tracing::warn!(settings = ?done.needs_restart, "SIGHUP: these settings changed but apply only after a restart.");
                            }
                        }
                        Err(error) => tracing::error!(error = format!("{error:#}"), "SIGHUP: reload rejected; the running configuration and snapshot stay."),
                    }
                    notify_systemd(&[sd_notify::NotifyState::Ready]);
                }
            }
        }
        notify_systemd(&[sd_notify::NotifyState::Stopping]);
        gateway.shutdown().await;
        Ok(())
    })
}

fn notify_systemd(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(state) {
        tracing::warn!(%error, "Cannot notify systemd.");
    }
}

/// The config at `path`, or the defaults when the (default) path does not exist: the offline
/// tools work in any directory.
fn load_or_default(path: &std::path::Path) -> anyhow::Result<ValidConfig> {
    if path.exists() {
        load(path)
    } else {
        Ok(Config::default().validated()?)
    }
}

fn classify(
    config: &std::path::Path,
    json: bool,
    content_type: Option<&str>,
) -> anyhow::Result<()> {
    use std::io::Read;
    let config = load_or_default(config)?;
    let inspector = aigate::inspect::Inspector::new(
        &config.inspect.load_dictionaries()?,
        config.inspect.min_confidence,
        config.proxy.body_buffer_bytes,
    )?;
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .context("reading stdin")?;
    let looks_json = serde_json::from_slice::<serde_json::Value>(&input).is_ok();
    let content_type = content_type.unwrap_or(if looks_json {
        "application/json"
    } else {
        "text/plain"
    });
    let inspection = inspector.inspect(Some(content_type), None, &input, false);
    let entities = inspection.detected_entities();
    if json {
        let report = serde_json::json!({
            "format": inspection.extracted.format,
            "action": inspection.extracted.action().as_str(),
            "data_classification": inspection.data_classification().iter().map(|c| c.as_str()).collect::<Vec<_>>(),
            "detected_entities": entities,
        });
        print_stdout(&format!("{report:#}\n"));
        return Ok(());
    }
    let mut out = String::new();
    for entity in entities.as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<16} {:>5.2}  {:>6}..{:<6} {}\n",
            entity["type"].as_str().unwrap_or_default(),
            entity["confidence"].as_f64().unwrap_or_default(),
            entity["start"],
            entity["end"],
            entity["value"].as_str().unwrap_or_default(),
        ));
    }
    if out.is_empty() {
        out.push_str("No entities found.\n");
    }
    print_stdout(&out);
    Ok(())
}

fn init_logging(config: &Config) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[expect(clippy::print_stdout, reason = "the CLI's output is the report itself")]
fn print_stdout(text: &str) {
    print!("{text}");
}

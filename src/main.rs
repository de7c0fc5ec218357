//! The `aigate` command line: parse arguments, load config, run. Nothing else lives here.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use aigate::config::{Config, LogFormat};
use aigate::tls::CertificateAuthority;

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
    /// Manage the interception CA.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
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
                let store = aigate::store::open(&config.store.url).await?;
                store.migrate().await
            })?;
            eprintln!(
                "Migrated {}: {}.",
                aigate::store::redact_url(&config.store.url),
                shape.describe()
            );
            Ok(())
        }
        Command::Classify {
            json,
            content_type,
            config,
        } => classify(&config, json, content_type.as_deref()),
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

fn load(path: &std::path::Path) -> anyhow::Result<Config> {
    Ok(Config::load(path)?)
}

fn run(path: &std::path::Path) -> anyhow::Result<()> {
    let config = load(path)?;
    init_logging(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("aigate")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let mut gateway = aigate::server::start(config).await?;
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("installing the SIGTERM handler")?;
        tokio::select! {
            _ = gateway.wait() => anyhow::bail!("a listener stopped unexpectedly"),
            signal = tokio::signal::ctrl_c() => {
                signal.context("waiting for SIGINT")?;
                tracing::info!("SIGINT received; shutting down.");
            }
            _ = terminate.recv() => tracing::info!("SIGTERM received; shutting down."),
        }
        gateway.shutdown().await;
        Ok(())
    })
}

fn classify(
    config: &std::path::Path,
    json: bool,
    content_type: Option<&str>,
) -> anyhow::Result<()> {
    use std::io::Read;
    let config = if config.exists() {
        load(config)?
    } else {
        Config::default()
    };
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

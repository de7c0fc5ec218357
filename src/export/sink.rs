//! The transports: HTTP POST (webhook, Splunk HEC) and syslog over TCP or TLS. A sink delivers a
//! whole batch or fails it; the worker retries.

use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::event::{webhook_signature, Event};
use super::ExportError;
use crate::config::export::{ExportConfig, MessageFormat, SinkKind};

/// A connected (or connectable) destination for one integration.
pub struct Sink {
    config: ExportConfig,
    hostname: String,
    http: Option<reqwest::Client>,
    tls: Option<tokio_rustls::TlsConnector>,
    syslog: Option<SyslogStream>,
}

enum SyslogStream {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl SyslogStream {
    /// Whether the receiver closed the connection since the last write: TCP only reports a dead
    /// peer on a later write, so a batch written into a half-closed socket would be lost.
    /// Receivers never send application data on a syslog connection, so anything readable now
    /// (EOF, an error, a TLS close_notify) means it is going away; TLS handshake messages (session
    /// tickets) are consumed by rustls and read as nothing.
    fn peer_closed(&mut self) -> bool {
        use futures::FutureExt;
        use tokio::io::AsyncReadExt;
        let mut probe = [0u8; 64];
        let ready = match self {
            SyslogStream::Tcp(tcp) => tcp.read(&mut probe).now_or_never(),
            SyslogStream::Tls(tls) => tls.read(&mut probe).now_or_never(),
        };
        ready.is_some()
    }

    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            SyslogStream::Tcp(tcp) => {
                tcp.write_all(bytes).await?;
                tcp.flush().await
            }
            SyslogStream::Tls(tls) => {
                tls.write_all(bytes).await?;
                tls.flush().await
            }
        }
    }
}

impl Sink {
    /// Prepares the sink: the HTTP client or TLS connector with its roots (read from disk, so
    /// this runs in the exporter task, never on the request path).
    pub async fn new(config: ExportConfig) -> Result<Sink, ExportError> {
        let roots = load_roots(&config).await?;
        let hostname = tokio::fs::read_to_string("/proc/sys/kernel/hostname")
            .await
            .map(|name| name.trim().to_owned())
            .ok()
            .filter(|name| !name.is_empty() && name.is_ascii())
            .unwrap_or_else(|| "-".to_owned());
        let (http, tls) = match config.kind {
            SinkKind::Webhook | SinkKind::SplunkHec => {
                let mut builder = reqwest::Client::builder()
                    .timeout(config.timeout())
                    .user_agent(concat!("aigate-export/", env!("CARGO_PKG_VERSION")));
                for root in roots {
                    let certificate = reqwest::Certificate::from_der(root.as_ref())
                        .map_err(|error| ExportError::Tls(error.to_string()))?;
                    builder = builder.add_root_certificate(certificate);
                }
                let client = builder
                    .build()
                    .map_err(|error| ExportError::Tls(error.to_string()))?;
                (Some(client), None)
            }
            SinkKind::Syslog if config.tls => {
                let mut store = rustls::RootCertStore::empty();
                for root in roots {
                    store
                        .add(root)
                        .map_err(|error| ExportError::Tls(error.to_string()))?;
                }
                let client = rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .map_err(|error| ExportError::Tls(error.to_string()))?
                .with_root_certificates(store)
                .with_no_client_auth();
                (
                    None,
                    Some(tokio_rustls::TlsConnector::from(Arc::new(client))),
                )
            }
            SinkKind::Syslog => (None, None),
        };
        Ok(Sink {
            config,
            hostname,
            http,
            tls,
            syslog: None,
        })
    }

    /// Sends the batch; `Ok` only when the receiver took all of it (HTTP 2xx; for syslog, the
    /// bytes written and flushed on a connection the receiver had not closed).
    pub async fn deliver(&mut self, events: &[Event]) -> Result<(), ExportError> {
        match self.config.kind {
            SinkKind::Webhook => self.post_webhook(events).await,
            SinkKind::SplunkHec => self.post_hec(events).await,
            SinkKind::Syslog => self.send_syslog(events).await,
        }
    }

    async fn post_webhook(&self, events: &[Event]) -> Result<(), ExportError> {
        let body = serde_json::to_vec(&serde_json::json!({ "events": events }))
            .map_err(|error| ExportError::Encode(error.to_string()))?;
        let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
        let secret = self
            .config
            .secret
            .as_ref()
            .map(|s| s.0.as_bytes())
            .unwrap_or_default();
        let request = self
            .client()?
            .post(self.url()?)
            .header("content-type", "application/json")
            .header("x-aigate-timestamp", timestamp.to_string())
            .header(
                "x-aigate-signature",
                webhook_signature(secret, timestamp, &body),
            )
            .body(body);
        check(request.send().await).await
    }

    async fn post_hec(&self, events: &[Event]) -> Result<(), ExportError> {
        let body: String = events
            .iter()
            .map(|event| event.to_hec(self.config.index.as_deref(), &self.hostname))
            .collect::<Vec<_>>()
            .join("\n");
        let token = self
            .config
            .token
            .as_ref()
            .map(|s| s.0.as_str())
            .unwrap_or_default();
        let request = self
            .client()?
            .post(self.url()?)
            .header("authorization", format!("Splunk {token}"))
            .header("content-type", "application/json")
            .body(body);
        check(request.send().await).await
    }

    fn client(&self) -> Result<&reqwest::Client, ExportError> {
        self.http
            .as_ref()
            .ok_or_else(|| ExportError::Encode("no HTTP client for this sink".to_owned()))
    }

    fn url(&self) -> Result<&str, ExportError> {
        self.config
            .url
            .as_deref()
            .ok_or_else(|| ExportError::Encode("no url".to_owned()))
    }

    async fn send_syslog(&mut self, events: &[Event]) -> Result<(), ExportError> {
        let mut frames = Vec::new();
        for event in events {
            let body = match self.config.format {
                MessageFormat::Json => event.to_json(),
                MessageFormat::Cef => event.to_cef(),
            };
            frames.extend(event.to_syslog_frame(self.config.facility, &self.hostname, &body));
        }
        if self.syslog.as_mut().is_some_and(SyslogStream::peer_closed) {
            self.syslog = None;
        }
        let mut stream = match self.syslog.take() {
            Some(stream) => stream,
            None => self.connect().await?,
        };
        match tokio::time::timeout(self.config.timeout(), stream.write_all(&frames)).await {
            Ok(Ok(())) => {
                self.syslog = Some(stream);
                Ok(())
            }
            Ok(Err(error)) => Err(ExportError::Connect(error.to_string())),
            Err(_) => Err(ExportError::Connect("write timed out".to_owned())),
        }
    }

    async fn connect(&self) -> Result<SyslogStream, ExportError> {
        let address = self.config.address.as_deref().unwrap_or_default();
        let tcp = tokio::time::timeout(self.config.timeout(), TcpStream::connect(address))
            .await
            .map_err(|_| ExportError::Connect(format!("connecting to {address} timed out")))?
            .map_err(|error| ExportError::Connect(format!("{address}: {error}")))?;
        let Some(connector) = &self.tls else {
            return Ok(SyslogStream::Tcp(tcp));
        };
        let host = self.config.server_name.clone().unwrap_or_else(|| {
            address
                .rsplit_once(':')
                .map(|(host, _)| host.trim_matches(['[', ']']).to_owned())
                .unwrap_or_default()
        });
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|error| ExportError::Tls(format!("server name {host:?}: {error}")))?;
        let tls = tokio::time::timeout(self.config.timeout(), connector.connect(name, tcp))
            .await
            .map_err(|_| ExportError::Connect(format!("TLS handshake with {address} timed out")))?
            .map_err(|error| ExportError::Tls(format!("{address}: {error}")))?;
        Ok(SyslogStream::Tls(Box::new(tls)))
    }
}

async fn check(response: Result<reqwest::Response, reqwest::Error>) -> Result<(), ExportError> {
    // Without the URL: a webhook URL can itself be the credential (Slack, Teams).
    let response =
        response.map_err(|error| ExportError::Connect(error.without_url().to_string()))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(ExportError::Refused(status.as_u16()))
    }
}

/// The trust roots: `ca_file` when set, else the system's.
async fn load_roots(
    config: &ExportConfig,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, ExportError> {
    let needs_roots = config.tls
        || config
            .url
            .as_deref()
            .is_some_and(|url| url.starts_with("https://"));
    if !needs_roots {
        return Ok(Vec::new());
    }
    if let Some(path) = &config.ca_file {
        let pem = tokio::fs::read(path)
            .await
            .map_err(|error| ExportError::Tls(format!("ca_file {}: {error}", path.display())))?;
        return rustls_pemfile::certs(&mut pem.as_slice())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| ExportError::Tls(format!("ca_file {}: {error}", path.display())));
    }
    let loaded = tokio::task::spawn_blocking(rustls_native_certs::load_native_certs)
        .await
        .map_err(|error| ExportError::Tls(error.to_string()))?;
    Ok(loaded.certs)
}

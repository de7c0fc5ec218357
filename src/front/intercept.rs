//! TLS interception of one CONNECT tunnel: terminate the client's TLS with a leaf minted for the
//! requested name and hand the decrypted stream to pingora.
//!
//! Must never: serve a certificate for a name other than the CONNECT target (the SNI has to agree
//! with it), or let a client app that refuses our leaf keep failing — repeated aborts from a
//! client that otherwise trusts the gateway CA feed that app's learned bypass (`route`), so
//! pinning apps get a tunnel instead.

use std::sync::Arc;

use pingora::apps::HttpPersistentSettings;
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Ssl, ALPN};
use rustls::server::{ClientHello as RustlsClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use super::client_tls::ClientTls;
use super::hello::{read_client_hello, ClientHello};
use super::route::{AbortOutcome, LearnedBypass};
use super::socket::ClientSocket;
use super::{ConnectTarget, ConnectionMeta, FrontContext};
use crate::audit::{AuditEventRecord, AuditRecord};
use crate::metrics;
use crate::tls;

/// Serves the one leaf minted for this connection.
#[derive(Debug)]
struct MintedLeaf(Arc<CertifiedKey>);

impl ResolvesServerCert for MintedLeaf {
    fn resolve(&self, _client_hello: RustlsClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Resolves nothing: the template's resolver is always replaced per connection.
#[derive(Debug)]
struct NoCertificate;

impl ResolvesServerCert for NoCertificate {
    fn resolve(&self, _client_hello: RustlsClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        None
    }
}

/// The TLS settings toward intercepted clients: TLS 1.2/1.3, ALPN h2 then http/1.1, the
/// gateway's server crypto (`tls::server_crypto_provider`). Each connection clones it and sets
/// its own leaf and whose suite order wins; the session cache and ticketer stay shared so
/// resumption works across connections.
pub fn server_config_template() -> Result<rustls::ServerConfig, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(tls::server_crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(NoCertificate));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// What outlives the ClientHello: the rest of the parsed hello goes as soon as it is read.
#[derive(Debug, Clone, Default)]
pub struct HelloFacts {
    pub sni: Option<String>,
    pub ja4: Option<String>,
    pub prefers_chacha20: bool,
}

impl From<ClientHello> for HelloFacts {
    fn from(hello: ClientHello) -> Self {
        Self {
            sni: hello.sni,
            ja4: hello.ja4,
            prefers_chacha20: hello.prefers_chacha20,
        }
    }
}

/// Reads the ClientHello after a CONNECT to `host` (into `pending`, which keeps every byte for
/// the handshake or a tunnel). None, logged, when there is none or its SNI names another host.
pub async fn read_hello(
    front: &FrontContext,
    client: &mut TcpStream,
    pending: &mut Vec<u8>,
    host: &str,
) -> Option<HelloFacts> {
    let timeout = front.shared.config().proxy.header_read_timeout();
    let hello = match Box::pin(read_client_hello(client, pending, timeout)).await {
        Ok(hello) => HelloFacts::from(hello),
        Err(error) => {
            metrics::CONNECTIONS_REJECTED
                .with_label_values(&[error.metric_label()])
                .inc();
            info!(%host, %error, "No usable ClientHello after CONNECT; closing.");
            return None;
        }
    };
    if let Some(sni) = hello.sni.as_deref() {
        if sni != host {
            metrics::CONNECTIONS_REJECTED
                .with_label_values(&["sni_mismatch"])
                .inc();
            warn!(%host, sni, "SNI differs from the CONNECT target; closing.");
            return None;
        }
    }
    Some(hello)
}

/// Terminates the client's TLS (its ClientHello already read into `pending`) with a leaf minted
/// for `target` and hands the decrypted stream to pingora.
pub async fn accept(
    front: &FrontContext,
    client: TcpStream,
    pending: Vec<u8>,
    target: ConnectTarget,
    meta: Arc<ConnectionMeta>,
    hello: HelloFacts,
) {
    let timeout = front.shared.config().proxy.header_read_timeout();
    // Replaced, not kept beside the new one for the connection's life.
    let meta = Arc::new(ConnectionMeta {
        ja4: hello.ja4,
        ..Arc::unwrap_or_clone(meta)
    });

    let leaf = match Box::pin(front.shared.minter.certified_key(&target.host)).await {
        Ok(leaf) => leaf,
        Err(error) => {
            warn!(host = %target.host, %error, "Cannot mint a leaf certificate; closing.");
            return;
        }
    };
    let mut config = rustls::ServerConfig::clone(&front.tls_template);
    config.cert_resolver = Arc::new(MintedLeaf(leaf));
    // The server's order (AES first), unless the client says it would rather not do AES: the
    // choice Go's and BoringSSL's servers make.
    config.ignore_client_order = !hello.prefers_chacha20;

    let client_ip = meta.client.ip();
    let ja4 = meta.ja4.clone();
    // The connection lives on inside pingora; what only the handshake needed goes now.
    let stream = ClientSocket::new(client, &pending, meta);
    drop(pending);

    let handshake = tokio::time::timeout(timeout, ClientTls::accept(Arc::new(config), stream));
    let mut tls = match Box::pin(handshake).await {
        Ok(Ok(tls)) => tls,
        Err(_) => {
            metrics::TLS_HANDSHAKE_FAILURES
                .with_label_values(&["timeout"])
                .inc();
            debug!(host = %target.host, "Client did not finish the TLS handshake in time.");
            return;
        }
        Ok(Err(error)) => {
            metrics::TLS_HANDSHAKE_FAILURES
                .with_label_values(&["client_abort"])
                .inc();
            let alert = certificate_alert(&error);
            debug!(host = %target.host, %error, "Client aborted the TLS handshake on our leaf.");
            let router = &front.shared.router;
            match router.record_handshake_abort(client_ip, ja4.as_deref(), &target.host, alert) {
                AbortOutcome::Learned(entry) => {
                    front.shared.audit.record(learned_bypass_event(&entry));
                }
                AbortOutcome::NoCaEvidence => info!(
                    host = %target.host,
                    client = %client_ip,
                    alert,
                    "Client rejected the intercept certificate but never completed an intercepted handshake: most likely the gateway CA is not installed there; not counted as certificate pinning."
                ),
                AbortOutcome::Counted(_) | AbortOutcome::LearningOff => {}
            }
            return;
        }
    };
    front.shared.router.note_completed_handshake(client_ip);
    metrics::INTERCEPTS_TOTAL.inc();
    tls.guard_requests(super::guard::RequestLimits::from_config(
        &front.shared.config().proxy,
    ));
    let idle_timeout = front.shared.config().proxy.client_idle_timeout();
    if let Err(reason) = tls.wait_for_request(idle_timeout, &front.shutdown).await {
        debug!(host = %target.host, %reason, "Intercepted connection ended before a request.");
        return;
    }
    if matches!(tls.selected_alpn_proto(), Some(ALPN::H2)) {
        front.app.process_new(Box::new(tls), &front.shutdown).await;
    } else {
        serve_http1(front, tls, idle_timeout).await;
    }
}

/// HTTP/1.1 keep-alive, parked between requests. pingora's own loop makes the next session at
/// once and waits for the next request inside a future sized for a whole proxied request, so
/// an idle keep-alive connection held a session, its buffers and that future (64.7 KiB per
/// connection in a debug build, `benches/load/keepalive_rss.py`); here only the TLS stream
/// waits, and a session is made when the next request's bytes arrive.
async fn serve_http1(front: &FrontContext, mut tls: ClientTls, idle_timeout: std::time::Duration) {
    let mut settings = None;
    loop {
        let mut session = ServerSession::new_http1(Box::new(tls));
        match settings.take() {
            Some(settings) => HttpPersistentSettings::apply_to_session(settings, &mut session),
            // What pingora's loop gives a first request.
            None => session.set_keepalive((!*front.shutdown.borrow()).then_some(60)),
        }
        let Some(reused) = front.app.process_new_http(session, &front.shutdown).await else {
            return;
        };
        let (stream, persistent) = reused.consume();
        settings = persistent;
        // Our own stream comes back: it went in as a `ClientTls`.
        let Ok(stream) = stream.into_any().downcast::<ClientTls>() else {
            return;
        };
        tls = *stream;
        if let Err(reason) = tls.wait_for_request(idle_timeout, &front.shutdown).await {
            debug!(%reason, "Intercepted keep-alive connection ended between requests.");
            return;
        }
    }
}

/// The TLS alert a client answered our leaf with, when it sent one.
fn certificate_alert(error: &std::io::Error) -> Option<&'static str> {
    use rustls::AlertDescription as A;
    let alert = match error.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::AlertReceived(alert) => *alert,
        _ => return None,
    };
    Some(match alert {
        A::UnknownCA => "unknown_ca",
        A::BadCertificate => "bad_certificate",
        A::CertificateUnknown => "certificate_unknown",
        A::CertificateExpired => "certificate_expired",
        A::UnsupportedCertificate => "unsupported_certificate",
        A::AccessDenied => "access_denied",
        A::HandshakeFailure => "handshake_failure",
        _ => "other",
    })
}

/// The audit trail of a client app moved to the learned bypass: an administrator should know
/// that its traffic to the host is no longer inspected, and on what evidence.
fn learned_bypass_event(entry: &LearnedBypass) -> AuditRecord {
    AuditRecord::Event(Box::new(AuditEventRecord {
        actor_type: Some("system".to_owned()),
        source: Some("proxy".to_owned()),
        ip_address: Some(entry.client),
        event_data: Some(serde_json::json!({
            "reason": "repeated client TLS handshake aborts (certificate pinning)",
            "client": entry.client,
            "ja4": entry.ja4,
            "evidence": entry.evidence,
            "expires_at": entry.expires_at.unix_timestamp(),
        })),
        ..AuditEventRecord::about_host(
            "intercept_bypass_learned",
            "warning",
            "bypass_interception",
            &entry.host,
        )
    }))
}

//! TLS interception of one CONNECT tunnel: terminate the client's TLS with a leaf minted for the
//! requested name and hand the decrypted stream to pingora.
//!
//! Must never: serve a certificate for a name other than the CONNECT target (the SNI has to agree
//! with it), or let a client that refuses our leaf keep failing — repeated aborts feed the
//! learned bypass so pinning apps get a tunnel instead.

use std::sync::Arc;

use pingora::apps::ServerApp;
use rustls::server::{ClientHello as RustlsClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use super::client_tls::ClientTls;
use super::hello::read_client_hello;
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

pub async fn intercept(
    front: &FrontContext,
    mut client: TcpStream,
    mut pending: Vec<u8>,
    target: ConnectTarget,
    meta: Arc<ConnectionMeta>,
) {
    let timeout = front.shared.config().proxy.header_read_timeout();
    // Only the JA4 and the suite preference outlive the handshake; the rest of the parsed hello
    // goes with this block.
    let (ja4, prefers_chacha20) = {
        let hello = match Box::pin(read_client_hello(&mut client, &mut pending, timeout)).await {
            Ok(hello) => hello,
            Err(error) => {
                metrics::CONNECTIONS_REJECTED
                    .with_label_values(&[error.metric_label()])
                    .inc();
                info!(host = %target.host, %error, "No usable ClientHello after CONNECT; closing.");
                return;
            }
        };
        if let Some(sni) = hello.sni.as_deref() {
            if sni != target.host {
                metrics::CONNECTIONS_REJECTED
                    .with_label_values(&["sni_mismatch"])
                    .inc();
                warn!(host = %target.host, sni, "SNI differs from the CONNECT target; closing.");
                return;
            }
        }
        (hello.ja4, hello.prefers_chacha20)
    };

    // Replaced, not kept beside the new one for the connection's life.
    let meta = Arc::new(ConnectionMeta {
        ja4,
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
    config.ignore_client_order = !prefers_chacha20;

    let client_ip = meta.client.ip();
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
            debug!(host = %target.host, %error, "Client aborted the TLS handshake on our leaf.");
            if front.shared.router.record_handshake_abort(&target.host) {
                front
                    .shared
                    .audit
                    .record(learned_bypass_event(&target.host, client_ip));
            }
            return;
        }
    };
    metrics::INTERCEPTS_TOTAL.inc();
    tls.guard_requests(super::guard::RequestLimits::from_config(
        &front.shared.config().proxy,
    ));
    let idle_timeout = front.shared.config().proxy.client_idle_timeout();
    if let Err(reason) = tls.wait_for_request(idle_timeout, &front.shutdown).await {
        debug!(host = %target.host, %reason, "Intercepted connection ended before a request.");
        return;
    }
    front.app.process_new(Box::new(tls), &front.shutdown).await;
}

/// The audit trail of a host moved to the learned bypass: an administrator should know that
/// traffic to it is no longer inspected.
fn learned_bypass_event(host: &str, client: std::net::IpAddr) -> AuditRecord {
    AuditRecord::Event(Box::new(AuditEventRecord {
        actor_type: Some("system".to_owned()),
        source: Some("proxy".to_owned()),
        ip_address: Some(client),
        event_data: Some(serde_json::json!({
            "reason": "repeated client TLS handshake aborts (certificate pinning)",
        })),
        ..AuditEventRecord::about_host(
            "intercept_bypass_learned",
            "warning",
            "bypass_interception",
            host,
        )
    }))
}

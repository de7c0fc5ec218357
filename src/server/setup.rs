//! The steps of a start that need more than a line: the store made ready, the trust files
//! the listeners use, and the store's maintenance loop.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::info;

use super::StartError;
use crate::catalog::Catalog;
use crate::config::Config;
use crate::store::{self, Store};
use crate::tls::CertificateAuthority;

/// Opens the store, migrates it and imports the catalog, logging which time-series shape is in
/// use. A store that is down at start is not fatal: the audit writer spills until it is back.
pub async fn prepare_store(
    config: &Config,
    catalog: &Catalog,
) -> Result<Arc<dyn Store>, StartError> {
    let store = store::open_with(&config.store.url, config.store.time_series).await?;
    if config.store.migrate_on_start {
        match store.migrate().await {
            Ok(shape) => {
                info!(store = %store::redact_url(&config.store.url), shape = shape.describe(), "Store migrated.")
            }
            Err(error) if error.is_retriable() => {
                tracing::warn!(%error, "Store unavailable at start; decisions are journalled until it is back.");
                return Ok(store);
            }
            Err(error) => return Err(error.into()),
        }
    }
    if config.store.import_catalog {
        match store.import_catalog(catalog).await {
            Ok(0) => {}
            Ok(inserted) => info!(inserted, "Catalog files imported into the empty store."),
            Err(error) => {
                tracing::warn!(%error, "Catalog import failed; the file catalog still serves.")
            }
        }
    }
    Ok(store)
}

pub async fn maintain_store(store: Arc<dyn Store>, every: std::time::Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        if let Err(error) = store.maintain().await {
            tracing::warn!(%error, "Store maintenance failed; retrying at the next interval.");
        }
    }
}

pub async fn bind(key: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { key, addr, source })
}

pub fn local_addr(
    key: &'static str,
    listener: &TcpListener,
    addr: SocketAddr,
) -> Result<SocketAddr, StartError> {
    listener
        .local_addr()
        .map_err(|source| StartError::Bind { key, addr, source })
}

/// The management listener's TLS acceptor when `[admin] tls` is on: the configured certificate,
/// or one the gateway CA issues for `tls_names`.
pub fn admin_tls_acceptor(
    config: &crate::config::AdminConfig,
    ca: &CertificateAuthority,
) -> Result<Option<tokio_rustls::TlsAcceptor>, StartError> {
    if !config.tls {
        return Ok(None);
    }
    let fail = |message: String| StartError::AdminTls(message);
    let (chain, key) = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            let read = |path: &PathBuf| {
                std::fs::read(path).map_err(|e| fail(format!("{}: {e}", path.display())))
            };
            let chain = rustls_pemfile::certs(&mut read(cert)?.as_slice())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| fail(format!("{}: {e}", cert.display())))?;
            let key = rustls_pemfile::private_key(&mut read(key)?.as_slice())
                .map_err(|e| fail(format!("{}: {e}", key.display())))?
                .ok_or_else(|| fail(format!("{}: no private key", key.display())))?;
            (chain, key)
        }
        _ => {
            let names: Vec<&str> = config.tls_names.iter().map(String::as_str).collect();
            ca.issue_server_cert(&names)
                .map_err(|e| fail(format!("issuing a certificate for {names:?}: {e}")))?
        }
    };
    let mut server =
        rustls::ServerConfig::builder_with_provider(crate::tls::server_crypto_provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| fail(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| fail(e.to_string()))?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(server))))
}

/// pingora takes upstream trust anchors from one file, and only the native store when none is
/// given. With extra roots configured, both go into one private bundle file.
pub fn upstream_roots_bundle(
    extra_roots: &[PathBuf],
) -> Result<Option<tempfile::NamedTempFile>, StartError> {
    if extra_roots.is_empty() {
        return Ok(None);
    }
    let mut bundle = String::new();
    for path in extra_roots {
        let text = std::fs::read(path).map_err(|error| StartError::ExtraRoot {
            path: path.clone(),
            message: error.to_string(),
        })?;
        let certs: Vec<_> = rustls_pemfile::certs(&mut text.as_slice())
            .collect::<Result<_, _>>()
            .map_err(|error| StartError::ExtraRoot {
                path: path.clone(),
                message: format!("not a PEM certificate file: {error}"),
            })?;
        if certs.is_empty() {
            return Err(StartError::ExtraRoot {
                path: path.clone(),
                message: "contains no PEM certificate".to_owned(),
            });
        }
        for cert in certs {
            bundle.push_str(&pem::encode(&pem::Pem::new("CERTIFICATE", cert.to_vec())));
        }
    }
    for cert in rustls_native_certs::load_native_certs().certs {
        bundle.push_str(&pem::encode(&pem::Pem::new("CERTIFICATE", cert.to_vec())));
    }
    let mut file = tempfile::Builder::new()
        .prefix("aigate-upstream-roots-")
        .suffix(".pem")
        .tempfile()
        .map_err(StartError::RootsBundle)?;
    file.write_all(bundle.as_bytes())
        .map_err(StartError::RootsBundle)?;
    file.flush().map_err(StartError::RootsBundle)?;
    Ok(Some(file))
}

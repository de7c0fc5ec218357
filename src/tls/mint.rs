//! Leaf certificates for intercepted hosts, minted on demand and cached.
//!
//! One ECDSA P-256 key is generated at start and reused for every leaf, so a cache miss costs one
//! signature, not a key generation. The cache is bounded and its entries expire before the
//! certificates do; concurrent first requests for one host wait on a single mint.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::future::Cache;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::{CertifiedKey, SigningKey};
use time::{Duration as TimeDuration, OffsetDateTime};

use super::CertificateAuthority;
use crate::metrics;

/// Leaves are valid from this long before minting, for clients with a slow clock.
const CLOCK_SKEW: TimeDuration = TimeDuration::hours(1);

#[derive(Debug, Clone, thiserror::Error)]
pub enum MintError {
    #[error("{0:?} is not a host name or IP address a certificate can be issued for")]
    InvalidHost(String),
    #[error("signing the certificate: {0}")]
    Sign(rcgen::Error),
    #[error("loading the leaf key into rustls: {0}")]
    Key(String),
}

pub struct LeafMinter {
    ca: Arc<CertificateAuthority>,
    leaf_key: KeyPair,
    signing_key: Arc<dyn SigningKey>,
    validity: Duration,
    cache: Cache<String, Arc<CertifiedKey>>,
}

impl fmt::Debug for LeafMinter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeafMinter")
            .field("validity", &self.validity)
            .field("cached", &self.cache.entry_count())
            .field("leaf_key", &"<redacted>")
            .finish()
    }
}

impl LeafMinter {
    pub fn new(
        ca: Arc<CertificateAuthority>,
        cache_capacity: u64,
        validity: Duration,
    ) -> Result<LeafMinter, MintError> {
        let leaf_key =
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(MintError::Sign)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        // Signs every intercepted handshake: aws-lc-rs, as the rest of the server side
        // (`server_crypto_provider`), signs P-256 in 15.1 µs against ring's 16.8 (p50, AMD EPYC).
        let signing_key = rustls::crypto::aws_lc_rs::sign::any_ecdsa_type(&key_der)
            .map_err(|error| MintError::Key(error.to_string()))?;
        // A cached leaf must never be served after it expires: drop it a tenth of its lifetime
        // (at least a minute) before.
        let margin = (validity / 10).max(Duration::from_secs(60));
        let time_to_live = validity.saturating_sub(margin).max(Duration::from_secs(1));
        Ok(LeafMinter {
            ca,
            leaf_key,
            signing_key,
            validity,
            cache: Cache::builder()
                .max_capacity(cache_capacity)
                .time_to_live(time_to_live)
                .build(),
        })
    }

    /// The certificate chain `[leaf, CA]` and key for `host`, from the cache or freshly minted.
    pub async fn certified_key(&self, host: &str) -> Result<Arc<CertifiedKey>, MintError> {
        let host = normalize(host)?;
        if let Some(hit) = self.cache.get(&host).await {
            metrics::CERT_CACHE_HITS.inc();
            return Ok(hit);
        }
        let entry = self
            .cache
            .entry_by_ref(&host)
            .or_try_insert_with(async { self.mint(&host) })
            .await
            .map_err(|error| MintError::clone(&error))?;
        if entry.is_fresh() {
            metrics::CERT_CACHE_MISSES.inc();
        } else {
            metrics::CERT_CACHE_HITS.inc();
        }
        Ok(entry.into_value())
    }

    /// Leaves currently cached.
    pub fn cache_len(&self) -> u64 {
        self.cache.entry_count()
    }

    fn mint(&self, host: &str) -> Result<Arc<CertifiedKey>, MintError> {
        let started = Instant::now();
        let validity =
            TimeDuration::seconds(i64::try_from(self.validity.as_secs()).unwrap_or(i64::MAX / 2));
        let leaf = leaf_params(&[host], validity)?
            .signed_by(&self.leaf_key, &self.ca.issuer)
            .map_err(MintError::Sign)?;
        let chain = vec![leaf.der().clone(), self.ca.cert_der().clone()];
        metrics::CERT_MINT_SECONDS.observe(started.elapsed().as_secs_f64());
        Ok(Arc::new(CertifiedKey::new(chain, self.signing_key.clone())))
    }
}

/// Parameters of a server leaf for `hosts`: SANs, a DN distinct from the CA's (curl otherwise
/// calls the leaf self-signed), serverAuth, not a CA, with the authority key identifier.
pub(super) fn leaf_params(
    hosts: &[&str],
    validity: TimeDuration,
) -> Result<CertificateParams, MintError> {
    let mut params = CertificateParams::default();
    let mut names = Vec::with_capacity(hosts.len());
    for host in hosts {
        let host = normalize(host)?;
        names.push(match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                host.clone()
                    .try_into()
                    .map_err(|_| MintError::InvalidHost(host.clone()))?,
            ),
        });
    }
    let mut name = DistinguishedName::new();
    if let Some(first) = hosts.first() {
        name.push(DnType::CommonName, *first);
    }
    name.push(DnType::OrganizationName, "aigate intercept");
    params.distinguished_name = name;
    params.subject_alt_names = names;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
    let now = OffsetDateTime::now_utc();
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + validity;
    Ok(params)
}

/// 16 random bytes with the top bit cleared (serials are positive integers).
pub(super) fn random_serial() -> [u8; 16] {
    let mut serial = *uuid::Uuid::new_v4().as_bytes();
    serial[0] &= 0x7f;
    serial
}

fn normalize(host: &str) -> Result<String, MintError> {
    let host = host.trim_end_matches('.');
    let bare = crate::host::unbracket(host);
    if bare.parse::<IpAddr>().is_ok() {
        return Ok(bare.to_owned());
    }
    let valid = crate::host::is_dns_name(host);
    if valid {
        Ok(host.to_ascii_lowercase())
    } else {
        Err(MintError::InvalidHost(host.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{ServerName, UnixTime};

    fn minter() -> (Arc<CertificateAuthority>, LeafMinter) {
        let ca = Arc::new(CertificateAuthority::generate_in_memory("test CA").unwrap());
        let minter = LeafMinter::new(ca.clone(), 1000, Duration::from_secs(86_400)).unwrap();
        (ca, minter)
    }

    fn verifies(ca: &CertificateAuthority, leaf: &CertifiedKey, name: &str) -> bool {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert_der().clone()).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let name = ServerName::try_from(name.to_owned()).unwrap();
        verifier
            .verify_server_cert(&leaf.cert[0], &leaf.cert[1..], &name, &[], UnixTime::now())
            .is_ok()
    }

    #[tokio::test]
    async fn leaves_chain_to_the_ca_for_their_name_only() {
        let (ca, minter) = minter();
        let leaf = minter.certified_key("API.OpenAI.com.").await.unwrap();
        assert_eq!(leaf.cert.len(), 2);
        assert!(verifies(&ca, &leaf, "api.openai.com"));
        assert!(!verifies(&ca, &leaf, "claude.ai"));
        let other_ca = CertificateAuthority::generate_in_memory("other").unwrap();
        assert!(!verifies(&other_ca, &leaf, "api.openai.com"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_first_requests_mint_once() {
        let (_, minter) = minter();
        let minter = Arc::new(minter);
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let minter = minter.clone();
                tokio::spawn(async move { minter.certified_key("claude.ai").await.unwrap() })
            })
            .collect();
        let mut leaves = Vec::new();
        for task in tasks {
            leaves.push(task.await.unwrap());
        }
        assert!(leaves.iter().all(|leaf| Arc::ptr_eq(leaf, &leaves[0])));
    }

    #[tokio::test]
    async fn invalid_hosts_are_refused() {
        let (_, minter) = minter();
        for host in ["", "a b", "exa$mple.com", &"a".repeat(300), "-bad.example"] {
            assert!(
                matches!(
                    minter.certified_key(host).await,
                    Err(MintError::InvalidHost(_))
                ),
                "{host:?}"
            );
        }
        assert!(minter.certified_key("10.1.2.3").await.is_ok());
    }

    #[test]
    fn debug_never_shows_the_key() {
        let (_, minter) = minter();
        assert!(!format!("{minter:?}").contains("PRIVATE"));
    }

    #[tokio::test]
    async fn mint_latency_report() {
        let (_, minter) = minter();
        let mut samples = Vec::new();
        for i in 0..200 {
            let started = Instant::now();
            minter
                .certified_key(&format!("host{i}.example.com"))
                .await
                .unwrap();
            samples.push(started.elapsed());
        }
        samples.sort();
        eprintln!("mint p50 {:?} p99 {:?}", samples[100], samples[198]);
        minter.cache.run_pending_tasks().await;
        assert_eq!(minter.cache_len(), 200);
    }
}

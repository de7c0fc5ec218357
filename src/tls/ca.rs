//! Load or generate the interception CA (`ca.pem` + `ca.key` in `[tls] ca_dir`).
//!
//! The key file is created with mode 0600 from the first byte (never chmod-ed after the fact) and
//! written to a temporary name then renamed, so a crash never leaves a half-written key behind.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use time::{Duration as TimeDuration, OffsetDateTime};

use super::mint::MintError;

const CA_VALIDITY_DAYS: i64 = 3650;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{present} exists but {missing} does not; refusing to overwrite half a CA (restore the missing file or remove both)")]
    Incomplete { present: PathBuf, missing: PathBuf },
    #[error("{path}: not a usable PEM {what}")]
    BadPem { path: PathBuf, what: &'static str },
    #[error("{key} does not belong to the certificate in {cert}, or that certificate is not a CA")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("generating the CA: {0}")]
    Generate(rcgen::Error),
}

/// The CA: its public certificate and the issuer (private key) that signs leaves.
pub struct CertificateAuthority {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    pub(super) issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("cert_der_len", &self.cert_der.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

impl CertificateAuthority {
    /// Loads `dir/ca.pem` + `dir/ca.key`, or generates both when neither exists. The flag tells
    /// whether a new CA was generated (clients must be given the new `ca.pem`).
    pub fn load_or_generate(dir: &Path) -> Result<(CertificateAuthority, bool), CaError> {
        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca.key");
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => Ok((Self::load(&cert_path, &key_path)?, false)),
            (false, false) => {
                let ca = Self::generate_in_memory("aigate Root CA")?;
                ca.write(dir, &cert_path, &key_path)?;
                Ok((ca, true))
            }
            (true, false) => Err(CaError::Incomplete {
                present: cert_path,
                missing: key_path,
            }),
            (false, true) => Err(CaError::Incomplete {
                present: key_path,
                missing: cert_path,
            }),
        }
    }

    /// A fresh CA that lives only in memory (tests, benchmarks).
    pub fn generate_in_memory(common_name: &str) -> Result<CertificateAuthority, CaError> {
        let key =
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(CaError::Generate)?;
        let params = ca_params(common_name);
        let cert = params.self_signed(&key).map_err(CaError::Generate)?;
        Ok(CertificateAuthority {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A 32-byte secret for `label` (HKDF-SHA256 info), derived from the CA private key. Every
    /// gateway of a fleet must share the CA, so each derives the same secret without one more
    /// to distribute; the label keeps uses apart, and nothing derived reveals the CA key.
    pub fn derive_key(&self, label: &str) -> [u8; 32] {
        let mut secret = self.issuer.key().serialize_der();
        let hkdf = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"aigate CA-derived key"), &secret);
        secret.fill(0);
        let mut key = [0u8; 32];
        // 32 bytes is far below HKDF's limit of 255 hash lengths: expanding cannot fail.
        let _ = hkdf.expand(label.as_bytes(), &mut key);
        key
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// A server certificate for `hosts` with its own fresh key, chain `[leaf]`. Test upstreams use
    /// it; the interception path uses `LeafMinter`, which reuses one key.
    pub fn issue_server_cert(
        &self,
        hosts: &[&str],
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), MintError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(MintError::Sign)?;
        let leaf = super::mint::leaf_params(hosts, TimeDuration::days(30))?
            .signed_by(&key, &self.issuer)
            .map_err(MintError::Sign)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((vec![leaf.der().clone()], key_der))
    }

    fn load(cert_path: &Path, key_path: &Path) -> Result<CertificateAuthority, CaError> {
        let cert_pem = read(cert_path)?;
        let key_pem = read(key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|_| CaError::BadPem {
            path: key_path.to_owned(),
            what: "private key (PKCS#8 expected)",
        })?;
        let cert_der = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .next()
            .and_then(Result::ok)
            .ok_or_else(|| CaError::BadPem {
                path: cert_path.to_owned(),
                what: "certificate",
            })?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|_| CaError::BadPem {
            path: cert_path.to_owned(),
            what: "certificate",
        })?;
        let ca = CertificateAuthority {
            cert_pem,
            cert_der,
            issuer,
        };
        if !ca.signs_verifiable_leaves() {
            return Err(CaError::Mismatch {
                cert: cert_path.to_owned(),
                key: key_path.to_owned(),
            });
        }
        Ok(ca)
    }

    /// Proves the key matches the certificate and that the certificate can act as a CA: a leaf
    /// signed with the key must verify against the certificate as a trust anchor.
    fn signs_verifiable_leaves(&self) -> bool {
        const PROBE: &str = "ca-self-check.aigate.invalid";
        let Ok((chain, _)) = self.issue_server_cert(&[PROBE]) else {
            return false;
        };
        let mut roots = rustls::RootCertStore::empty();
        if roots.add(self.cert_der.clone()).is_err() {
            return false;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let Ok(verifier) =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
        else {
            return false;
        };
        let Ok(name) = ServerName::try_from(PROBE) else {
            return false;
        };
        use rustls::client::danger::ServerCertVerifier;
        verifier
            .verify_server_cert(&chain[0], &[], &name, &[], UnixTime::now())
            .is_ok()
    }

    fn write(&self, dir: &Path, cert_path: &Path, key_path: &Path) -> Result<(), CaError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(io(dir))?;
        let key_pem = self.issuer.key().serialize_pem();
        write_atomically(key_path, key_pem.as_bytes(), 0o600).map_err(io(key_path))?;
        write_atomically(cert_path, self.cert_pem.as_bytes(), 0o644).map_err(io(cert_path))?;
        Ok(())
    }
}

fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name.push(DnType::OrganizationName, "aigate");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - TimeDuration::days(1);
    params.not_after = now + TimeDuration::days(CA_VALIDITY_DAYS);
    params.serial_number = Some(SerialNumber::from_slice(&super::mint::random_serial()));
    params
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.to_owned(),
        source,
    }
}

fn read(path: &Path) -> Result<String, CaError> {
    fs::read_to_string(path).map_err(|source| CaError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Writes `bytes` to a temporary sibling created with `mode`, fsyncs, then renames over `path`.
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let _ = fs::remove_file(&temporary);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn derived_keys_depend_on_the_ca_key_and_the_label() {
        let dir = tempfile::tempdir().unwrap();
        let (first, _) = CertificateAuthority::load_or_generate(dir.path()).unwrap();
        let (again, _) = CertificateAuthority::load_or_generate(dir.path()).unwrap();
        let other = CertificateAuthority::generate_in_memory("other").unwrap();
        let key = first.derive_key("aigate coaching token v1");
        assert_eq!(key, again.derive_key("aigate coaching token v1"));
        assert_ne!(key, first.derive_key("another use"));
        assert_ne!(key, other.derive_key("aigate coaching token v1"));
        assert_ne!(key, [0; 32]);
    }

    #[test]
    fn generates_once_with_a_private_key_file_then_loads() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("certs");
        let (first, generated) = CertificateAuthority::load_or_generate(&ca_dir).unwrap();
        assert!(generated);
        let key_mode = fs::metadata(ca_dir.join("ca.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(key_mode, 0o600);
        let cert_mode = fs::metadata(ca_dir.join("ca.pem"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(cert_mode, 0o644);

        let (second, generated) = CertificateAuthority::load_or_generate(&ca_dir).unwrap();
        assert!(!generated);
        assert_eq!(first.cert_pem(), second.cert_pem());
    }

    #[test]
    fn half_a_ca_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        CertificateAuthority::load_or_generate(dir.path()).unwrap();
        fs::remove_file(dir.path().join("ca.key")).unwrap();
        let error = CertificateAuthority::load_or_generate(dir.path()).unwrap_err();
        assert!(matches!(error, CaError::Incomplete { .. }), "{error}");
        assert!(
            !dir.path().join("ca.key").exists(),
            "nothing may be regenerated"
        );
    }

    #[test]
    fn a_key_from_another_ca_is_a_mismatch() {
        let one = tempfile::tempdir().unwrap();
        let two = tempfile::tempdir().unwrap();
        CertificateAuthority::load_or_generate(one.path()).unwrap();
        CertificateAuthority::load_or_generate(two.path()).unwrap();
        fs::copy(two.path().join("ca.key"), one.path().join("ca.key")).unwrap();
        let error = CertificateAuthority::load_or_generate(one.path()).unwrap_err();
        assert!(matches!(error, CaError::Mismatch { .. }), "{error}");
        assert!(error.to_string().contains("ca.key"));
    }

    #[test]
    fn garbage_pem_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("ca.pem"), "not pem").unwrap();
        fs::write(dir.path().join("ca.key"), "not pem either").unwrap();
        let error = CertificateAuthority::load_or_generate(dir.path()).unwrap_err();
        assert!(
            error.to_string().contains("ca.key") || error.to_string().contains("ca.pem"),
            "{error}"
        );
    }

    #[test]
    fn debug_never_shows_the_key() {
        let ca = CertificateAuthority::generate_in_memory("test").unwrap();
        let debug = format!("{ca:?}");
        assert!(!debug.contains("PRIVATE KEY"));
        assert!(debug.contains("redacted"));
    }
}

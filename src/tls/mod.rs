//! The gateway's certificate authority, the leaf certificates it mints for intercepted hosts, and
//! the crypto its TLS servers run on.
//!
//! Must never: write the CA key readable by anyone but the gateway's user, put key material in a
//! log line, error or `Debug` output, or mint a certificate for a name that is not a valid host.

mod ca;
mod mint;

pub use ca::{CaError, CertificateAuthority};
pub use mint::{LeafMinter, MintError};

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

/// The crypto of every TLS server the gateway runs (intercepted clients, the management
/// listener): aws-lc-rs, with AES-128-GCM first in the server's suite order. That order decides
/// only where a config sets `ignore_client_order`: per intercepted connection (see
/// `front::intercept`); the management listener, with few handshakes, follows its clients.
///
/// A new intercepted connection is mostly handshake, and these two choices halved its two
/// largest crypto costs under connection churn (`perf`, load harness): the X25519 key exchange
/// (ring's fiat code, 110 µs per key pair and agreement on the bench VM, against aws-lc's
/// 60 µs: 18.6% of the gateway's CPU to 9.6%), and the SHA-384 key schedule of AES-256-GCM-
/// SHA384, which ring's and many clients' order put first and which has no CPU instructions of
/// its own (6.7%, to 1.4% for SHA-256 on the SHA extensions). All the suites kept are strong.
/// Upstream connections stay on pingora's ring provider: they are pooled.
pub fn server_crypto_provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites.sort_by_key(server_suite_rank);
    Arc::new(provider)
}

/// TLS 1.3 first, then AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305.
fn server_suite_rank(suite: &rustls::SupportedCipherSuite) -> (bool, u8) {
    use rustls::CipherSuite as S;
    let bulk = match suite.suite() {
        S::TLS13_AES_128_GCM_SHA256
        | S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 0,
        S::TLS13_AES_256_GCM_SHA384
        | S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        | S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => 1,
        _ => 2,
    };
    (suite.tls13().is_none(), bulk)
}

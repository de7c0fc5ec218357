//! The gateway's certificate authority and the leaf certificates it mints for intercepted hosts.
//!
//! Must never: write the CA key readable by anyone but the gateway's user, put key material in a
//! log line, error or `Debug` output, or mint a certificate for a name that is not a valid host.

mod ca;
mod mint;

pub use ca::{CaError, CertificateAuthority};
pub use mint::{LeafMinter, MintError};

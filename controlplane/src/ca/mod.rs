//! The built-in certificate authority that identifies session agents.
//!
//! One CA per data directory (`ca/ca.key`, mode 0600, and `ca/ca.crt`). It signs the agent
//! listener's server certificate and short-lived client certificates for enrolled agents.
//! An agent's identity is the URI SAN `spiffe://kortix/session/<id>` of its certificate; the
//! CA decides that name, never the CSR.

mod identity;
mod issue;
mod store;

pub use identity::{SPIFFE_PREFIX, SessionIdentity, identity_from_cert};
pub use issue::{IssuedCert, ServerCert};

use rcgen::{Issuer, KeyPair};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("CA file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("CA file {path} is readable by group or others (mode {mode:o}); expected 0600")]
    InsecureKeyFile { path: PathBuf, mode: u32 },
    #[error("CA material in {dir} is unusable: {reason}")]
    Corrupt { dir: PathBuf, reason: String },
    #[error("invalid certificate signing request: {0}")]
    BadCsr(String),
    #[error("invalid client certificate: {0}")]
    BadCert(String),
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
}

/// The loaded CA: its certificate and signing key.
pub struct Ca {
    cert_pem: String,
    cert_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
    dir: PathBuf,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Loads the CA from `dir`, creating it on first use.
    pub fn load_or_create(dir: &Path) -> Result<Self, CaError> {
        store::load_or_create(dir)
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// SHA-256 of the CA certificate (DER), lower-case hex: what `KORTIX_CA_FINGERPRINT` pins.
    pub fn fingerprint(&self) -> String {
        hex::encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            &self.cert_der,
        ))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

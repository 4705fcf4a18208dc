//! The QUIC server certificate: the configured one, or a self-signed one
//! generated on first start into the data directory and reused afterwards.
//!
//! Clients trust a self-signed certificate by pinning it: copy
//! `<data_dir>/quic-cert.pem` to the client and add it as a root, or compare
//! the SHA-256 fingerprint the broker logs at start.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Default file names inside the data directory.
pub const CERT_FILE: &str = "quic-cert.pem";
pub const KEY_FILE: &str = "quic-key.pem";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read PEM from {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path} holds no certificate")]
    Empty { path: PathBuf },
}

/// A certificate chain and its key, with where they came from.
#[derive(Debug)]
pub struct ServerIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub cert_path: PathBuf,
    /// SHA-256 of the leaf certificate, colon-separated hex.
    pub fingerprint: String,
    pub generated: bool,
}

/// Loads `cert`/`key`, or the data-dir pair, generating the latter when absent.
pub fn load_or_generate(
    data_dir: &Path,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<ServerIdentity, TlsError> {
    let cert_path = cert.map_or_else(|| data_dir.join(CERT_FILE), Path::to_path_buf);
    let key_path = key.map_or_else(|| data_dir.join(KEY_FILE), Path::to_path_buf);
    let mut generated = false;
    if cert.is_none() && !cert_path.exists() {
        let names = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ];
        let certified = rcgen::generate_simple_self_signed(names)?;
        let write = |path: &Path, text: String| {
            crate::topics::write_file_atomically(path, text.as_bytes()).map_err(|source| {
                TlsError::Write {
                    path: path.to_path_buf(),
                    source,
                }
            })
        };
        write(&key_path, certified.signing_key.serialize_pem())?;
        write(&cert_path, certified.cert.pem())?;
        generated = true;
    }
    let read_error = |path: &Path, e: rustls::pki_types::pem::Error| TlsError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let chain = CertificateDer::pem_file_iter(&cert_path)
        .map_err(|e| read_error(&cert_path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_error(&cert_path, e))?;
    let leaf = chain.first().ok_or_else(|| TlsError::Empty {
        path: cert_path.clone(),
    })?;
    let fingerprint = sha256_hex(leaf);
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| read_error(&key_path, e))?;
    Ok(ServerIdentity {
        chain,
        key,
        cert_path,
        fingerprint,
        generated,
    })
}

/// SHA-256 through rustls's own crypto provider (no extra hashing crate).
fn sha256_hex(data: &[u8]) -> String {
    let provider = rustls::crypto::ring::default_provider();
    for suite in &provider.cipher_suites {
        if let rustls::SupportedCipherSuite::Tls13(suite) = suite {
            let hash = suite.common.hash_provider;
            if hash.algorithm() == rustls::crypto::hash::HashAlgorithm::SHA256 {
                let digest = hash.hash(data);
                return digest
                    .as_ref()
                    .iter()
                    .map(|b| format!("{b:02X}"))
                    .collect::<Vec<_>>()
                    .join(":");
            }
        }
    }
    "unavailable".to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The first start generates a certificate; the second reuses it (same fingerprint).
    #[test]
    fn generated_once_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_generate(dir.path(), None, None).unwrap();
        assert!(first.generated);
        assert_eq!(first.fingerprint.len(), 32 * 3 - 1);
        let second = load_or_generate(dir.path(), None, None).unwrap();
        assert!(!second.generated);
        assert_eq!(first.fingerprint, second.fingerprint);
    }
}

//! TLS towards clients: loading the configured certificate, and making a self-signed one
//! for the demo.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::PgError;

/// A rustls server configuration from PEM files.
pub fn load_server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, PgError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| PgError::Config(format!("tls.cert {}: {e}", cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| PgError::Config(format!("tls.cert {}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(PgError::Config(format!(
            "tls.cert {}: no certificate in the file",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| PgError::Config(format!("tls.key {}: {e}", key.display())))?;
    let config = ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| PgError::Config(format!("tls: {e}")))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| PgError::Config(format!("tls: certificate and key do not fit together: {e}")))?;
    Ok(Arc::new(config))
}

/// Writes a self-signed certificate for `localhost`/127.0.0.1 into `dir` unless one is
/// there already; returns the certificate and key paths (the key is mode 0600).
pub fn ensure_self_signed(dir: &Path) -> Result<(PathBuf, PathBuf), PgError> {
    let cert_path = dir.join("demo-tls.crt");
    let key_path = dir.join("demo-tls.key");
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let certified = rcgen::generate_simple_self_signed(names)
        .map_err(|e| PgError::Config(format!("generating a demo certificate: {e}")))?;
    std::fs::write(&cert_path, certified.cert.pem())?;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut key_file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&key_path)?;
    key_file.write_all(certified.signing_key.serialize_pem().as_bytes())?;
    Ok((cert_path, key_path))
}

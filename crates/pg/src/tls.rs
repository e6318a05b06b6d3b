//! TLS configuration: towards clients (the configured certificate, or a self-signed one
//! for the demo) and towards targets (the authorities and name that verify them).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

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

/// A verifying rustls client configuration trusting the authorities in the PEM file `ca`,
/// for a target whose certificate carries `name`. Errors start with the offending key
/// (`ca ...`, `server_name ...`) so the caller can prefix the resource.
pub fn load_client_config(ca: &Path, name: &str) -> Result<crate::TargetTls, String> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .map_err(|e| format!("ca {}: {e}", ca.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("ca {}: {e}", ca.display()))?;
    if certs.is_empty() {
        return Err(format!("ca {}: no certificate in the file", ca.display()));
    }
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("ca {}: {e}", ca.display()))?;
    }
    let server_name =
        ServerName::try_from(name.to_string()).map_err(|e| format!("server_name {name:?}: {e}"))?;
    let config = ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("ca: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(crate::TargetTls {
        config: Arc::new(config),
        server_name,
    })
}

/// The host part of `host:port` (`[v6]:port` too), which a target certificate must name
/// unless `server_name` says otherwise.
pub fn host_of(target: &str) -> &str {
    let host = target.rsplit_once(':').map_or(target, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_strips_the_port_and_brackets() {
        assert_eq!(host_of("db.internal:5432"), "db.internal");
        assert_eq!(host_of("127.0.0.1:6543"), "127.0.0.1");
        assert_eq!(host_of("[::1]:5432"), "::1");
    }

    #[test]
    fn a_ca_file_without_certificates_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "nothing here").unwrap();
        let err = load_client_config(&ca, "localhost").unwrap_err();
        assert!(
            err.starts_with("ca ") && err.contains("no certificate"),
            "{err}"
        );
        let err = load_client_config(&dir.path().join("missing.pem"), "localhost").unwrap_err();
        assert!(err.starts_with("ca "), "{err}");
    }
}

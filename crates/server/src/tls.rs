//! The admin API's TLS: the `[admin] tls` certificate chain and key as a rustls server
//! configuration.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::ServerError;

/// A server configuration from the PEM files `cert` (the chain, the server's certificate
/// first) and `key`. TLS 1.2 and 1.3 only (rustls' safe defaults); ALPN offers only
/// HTTP/1.1, the one protocol the accept loop speaks ([`crate::serve`]).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, ServerError> {
    let unreadable = |e: rustls::pki_types::pem::Error| ServerError::CertificateUnreadable {
        path: cert.to_path_buf(),
        reason: e.to_string(),
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(unreadable)?
        .collect::<Result<_, _>>()
        .map_err(unreadable)?;
    if chain.is_empty() {
        return Err(ServerError::CertificateMissing {
            path: cert.to_path_buf(),
        });
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| ServerError::KeyUnreadable {
        path: key.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mismatch = |e: rustls::Error| ServerError::KeyMismatch {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        reason: e.to_string(),
    };
    let mut config = ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(mismatch)?
    .with_no_client_auth()
    .with_single_cert(chain, private)
    .map_err(mismatch)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_name_the_key_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("admin.crt"), dir.path().join("admin.key"));
        let err = server_config(&cert, &key).unwrap_err().to_string();
        assert!(
            err.starts_with("admin.tls.cert: cannot read certificates from ")
                && err.contains("admin.crt"),
            "{err}"
        );

        std::fs::write(&cert, "no PEM here").unwrap();
        let err = server_config(&cert, &key).unwrap_err().to_string();
        assert!(err.starts_with("admin.tls.cert: ") && err.contains("holds no PEM certificate"));

        let one = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(&cert, one.cert.pem()).unwrap();
        let err = server_config(&cert, &key).unwrap_err().to_string();
        assert!(
            err.starts_with("admin.tls.key: ") && err.contains("admin.key"),
            "{err}"
        );

        std::fs::write(&key, other.signing_key.serialize_pem()).unwrap();
        let err = server_config(&cert, &key).unwrap_err().to_string();
        assert!(err.starts_with("admin.tls: the certificate in "), "{err}");

        std::fs::write(&key, one.signing_key.serialize_pem()).unwrap();
        let config = server_config(&cert, &key).unwrap();
        assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]);
    }
}

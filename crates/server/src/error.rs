//! `ServerError`: what keeps the admin API from starting. Each message starts with the
//! configuration key it is about, so the operator knows what to fix.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("admin.tls.cert: cannot read certificates from {}: {reason}", path.display())]
    CertificateUnreadable { path: PathBuf, reason: String },
    #[error("admin.tls.cert: {} holds no PEM certificate", path.display())]
    CertificateMissing { path: PathBuf },
    #[error("admin.tls.key: cannot read a PEM private key from {}: {reason}", path.display())]
    KeyUnreadable { path: PathBuf, reason: String },
    #[error(
        "admin.tls: the certificate in {} and the key in {} do not belong together: {reason}",
        cert.display(),
        key.display()
    )]
    KeyMismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

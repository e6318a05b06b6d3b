//! The PostgreSQL driver's error type; each variant says whose fault it was.

use gatehouse_wire_pg::DecodeError;

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The client broke the protocol or went away.
    #[error("client: {0}")]
    Client(String),
    /// The target refused, failed or broke the protocol.
    #[error("target: {0}")]
    Target(String),
    /// The gateway's own configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl PgError {
    pub(crate) fn client_protocol(e: DecodeError) -> Self {
        PgError::Client(format!("protocol violation: {e}"))
    }
}

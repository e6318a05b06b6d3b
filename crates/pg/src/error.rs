//! The PostgreSQL driver's error type; each variant says whose fault it was.

use gatehouse_wire_pg::DecodeError;

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The client went away, or did something the session cannot go on from.
    #[error("client: {0}")]
    Client(String),
    /// The client sent bytes that are not the protocol.
    #[error("client: protocol violation: {0}")]
    ClientProtocol(DecodeError),
    /// Before signing in, the client sent a message larger than it may.
    #[error("client: sent {what} over {limit} bytes before signing in")]
    TooLarge { what: &'static str, limit: usize },
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
        PgError::ClientProtocol(e)
    }

    /// The reason recorded for a connection that broke off during startup this way, if it
    /// is worth an entry (a client that just went away is not).
    pub(crate) fn startup_failure(&self) -> Option<&'static str> {
        match self {
            PgError::ClientProtocol(_) => Some("protocol_violation"),
            PgError::TooLarge { .. } => Some("oversized_message"),
            _ => None,
        }
    }
}

//! The ledger's one error type, saying what failed and where.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while opening, writing or reading a ledger.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },

    #[error("another process holds the ledger lock {}; is a gateway already running on this data directory?", path.display())]
    Locked { path: PathBuf },

    #[error("entry of {size} bytes exceeds the {limit}-byte limit; store large payloads as chunks")]
    EntryTooLarge { size: usize, limit: usize },

    #[error("signing key {}: {reason}", path.display())]
    Key { path: PathBuf, reason: String },

    /// The data on disk contradicts itself or its signed checkpoints.
    #[error("{0}")]
    Corrupt(String),

    /// The signer was asked to sign a tree that does not extend its last signed tree.
    #[error("refusing to sign: {0}")]
    Inconsistent(String),

    /// A write or fsync failed; appends are refused until the ledger recovers.
    #[error("ledger unavailable: {0}")]
    Unavailable(String),

    #[error("ledger is shut down")]
    Closed,
}

impl LedgerError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        LedgerError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Attaches a path to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T, LedgerError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T, LedgerError> {
        self.map_err(|e| LedgerError::io(path, e))
    }
}

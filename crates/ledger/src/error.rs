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

    /// Checkpoints were signed but the signer state that records the last signed tree is
    /// gone. It is never re-created: without it, a log and entries cut back together to an
    /// older checkpoint would look like an intact ledger.
    #[error(
        "signer state {} is missing but checkpoints.log holds {checkpoints} signed checkpoint(s); \
         it is not re-created, because the ledger relies on it to notice a rollback \
         (restore it from a backup of this data directory and run `gatehouse ledger verify`)",
        path.display()
    )]
    SignerStateMissing { path: PathBuf, checkpoints: usize },

    /// The signer state cannot be read or parsed.
    #[error("signer state {} is unreadable: {reason}", path.display())]
    SignerStateUnreadable { path: PathBuf, reason: String },

    /// The signer state does not carry a checkpoint signed by this ledger's key that its
    /// compact range hashes to (edited, forged, or an unsigned old state that matches no
    /// signed checkpoint).
    #[error("signer state {} does not verify: {reason}", path.display())]
    SignerStateUnverified { path: PathBuf, reason: String },

    /// `checkpoints.log` holds a checkpoint newer than the signer's last signed tree, which
    /// the signer never allows: the signer state was replaced by an older copy.
    #[error(
        "signer state {} records a signed tree of {signer_size} entries but checkpoints.log \
         holds a checkpoint of {log_size} entries: the signer state was rolled back \
         (restore the newest copy and run `gatehouse ledger verify`)",
        path.display()
    )]
    SignerStateBehindLog {
        path: PathBuf,
        signer_size: u64,
        log_size: u64,
    },

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

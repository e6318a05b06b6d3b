//! What an auditor reads out of the ledger: [`replay`], a session told again from its
//! entries and recorded result data; [`export`], the entries of a window as JSON lines or
//! CSV; [`bundle`], an export whose completeness can be proven offline; [`ocsf`] events;
//! and the HTML [`report`]. Pure: the caller reads the entries and chunks.

pub mod bundle;
pub mod export;
pub mod ocsf;
pub mod replay;
pub mod report;

pub use replay::{Replay, Step, replay};

/// What can go wrong reading, building or checking audit evidence.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A bundle fails verification; the text names what is wrong.
    #[error("{0}")]
    Bundle(String),
    /// The ledger could not be read as the export needs.
    #[error("{0}")]
    Ledger(String),
    #[error("writing the export: {0}")]
    Io(String),
}

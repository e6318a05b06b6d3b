//! Gatehouse's tamper-evident audit ledger.
//!
//! Events become canonical JSON lines in append-only segment files, hashed into an
//! RFC 6962 Merkle tree, made durable by group commit (one leader writes and syncs for all
//! concurrent appends), and vouched for by Ed25519-signed checkpoints in the C2SP
//! tlog-checkpoint format. [`verify`] checks all of it offline.

// Without the writer, what only it uses (tightening modes at rest, repairing the signer's
// log after a crash) is compiled but never called.
#![cfg_attr(not(feature = "writer"), allow(dead_code))]

pub mod checkpoint;
pub mod chunks;
mod error;
mod fsutil;
pub mod layout;
#[cfg(feature = "writer")]
mod ledger;
pub mod merkle;
mod outputs;
pub mod proof;
pub mod prune;
mod pruned;
pub mod segment;
pub mod verify;

pub use checkpoint::{Checkpoint, DEFAULT_ORIGIN, SignedCheckpoint, verify_note};
pub use error::LedgerError;
pub use layout::Layout;
#[cfg(feature = "writer")]
pub use ledger::{Ledger, LedgerOptions, LedgerStatus, OpenReport, Receipt};
pub use proof::{InclusionProof, check_inclusion, prove_inclusion};
pub use verify::{EarlierCheckpoint, TrustedKey, VerifySummary, verify};

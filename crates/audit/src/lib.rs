//! What an auditor reads out of the ledger: [`replay`], a session told again from its
//! entries and recorded result data, and [`export`], the entries of a window as JSON lines
//! or CSV. Pure: the caller reads the entries and chunks.

pub mod export;
pub mod ocsf;
pub mod replay;
pub mod report;

pub use replay::{Replay, Step, replay};

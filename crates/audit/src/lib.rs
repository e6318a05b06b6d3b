//! What an auditor reads out of the ledger. Today: [`replay`], a session told again from
//! its entries and recorded result data. Pure: the caller reads the entries and chunks.

pub mod replay;

pub use replay::{Replay, Step, replay};

//! The file a pruned segment leaves: `NNN.pruned`, one JSON header line saying which
//! entries it held and when, then each entry's 32-byte leaf hash. Only the format: reading
//! a ledger needs it, so it stands apart from the pruning that writes it ([`crate::prune`]).

use std::fs;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{IoContext, LedgerError};
use crate::merkle::Hash;

/// The header line of a `.pruned` file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrunedHeader {
    /// Always `1`; a later layout would change it.
    pub pruned: u32,
    pub first: u64,
    pub count: u64,
    /// Times of the first and last entry it held (unix microseconds).
    pub first_ts: u64,
    pub last_ts: u64,
    /// When it was pruned.
    pub pruned_at: u64,
}

/// A pruned segment as read back: its header and its entries' leaf hashes, in order.
#[derive(Debug, Clone)]
pub struct PrunedSegment {
    pub header: PrunedHeader,
    pub leaves: Vec<Hash>,
}

/// Reads a `.pruned` file, checking that it holds as many hashes as it says.
pub fn read_pruned(path: &Path) -> Result<PrunedSegment, LedgerError> {
    let mut bytes = Vec::new();
    fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .at(path)?;
    let corrupt = |why: String| LedgerError::Corrupt(format!("{}: {why}", path.display()));
    let newline = memchr::memchr(b'\n', &bytes).ok_or_else(|| corrupt("no header line".into()))?;
    let header: PrunedHeader = serde_json::from_slice(&bytes[..newline])
        .map_err(|e| corrupt(format!("not a pruned-segment header: {e}")))?;
    let body = &bytes[newline + 1..];
    if header.pruned != 1 || body.len() as u64 != header.count * 32 {
        return Err(corrupt(format!(
            "holds {} bytes of hashes where {} entries need {}",
            body.len(),
            header.count,
            header.count * 32
        )));
    }
    let leaves = body
        .chunks_exact(32)
        .map(|c| Hash::try_from(c).expect("32-byte chunks"))
        .collect();
    Ok(PrunedSegment { header, leaves })
}

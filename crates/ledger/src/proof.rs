//! Inclusion proofs as self-contained documents an auditor can check offline.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::checkpoint::{Checkpoint, SignedCheckpoint, newest_checkpoint, verify_note};
use crate::error::LedgerError;
use crate::layout::Layout;
use crate::merkle::{self, Hash, leaf_hash};
use crate::segment;

/// "Entry `index` is in the log signed by `checkpoint`", with everything needed to check it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InclusionProof {
    pub index: u64,
    /// The size of the tree the proof is against (the checkpoint's size).
    pub size: u64,
    /// The entry line exactly as stored.
    pub entry: String,
    pub leaf_hash: String,
    /// Audit path, leaf to root, lower-case hex.
    pub proof: Vec<String>,
    /// The signed checkpoint note.
    pub checkpoint: String,
}

/// Builds the inclusion proof of entry `index` against the newest checkpoint.
pub fn prove_inclusion(data_dir: &Path, index: u64) -> Result<InclusionProof, LedgerError> {
    let layout = Layout::new(data_dir);
    let SignedCheckpoint {
        checkpoint: cp,
        note,
    } = newest_checkpoint(&layout)?;
    if index >= cp.size {
        return Err(LedgerError::Corrupt(format!(
            "entry {index} is not covered by the newest checkpoint (size {}); wait for the next checkpoint",
            cp.size
        )));
    }
    let mut leaves: Vec<Hash> = Vec::with_capacity(cp.size as usize);
    let mut entry = None;
    segment::scan_with(&layout, |visit| {
        let (i, leaf) = match visit {
            segment::Visit::Entry(e) => {
                if e.index == index {
                    entry = Some(String::from_utf8_lossy(e.line).into_owned());
                }
                (e.index, leaf_hash(e.line))
            }
            segment::Visit::Pruned(i, leaf) => (i, leaf),
        };
        if i < cp.size {
            leaves.push(leaf);
        }
        Ok(())
    })?;
    let Some(entry) = entry else {
        return Err(LedgerError::Corrupt(format!(
            "entry {index} was pruned by retention: its leaf hash {} is still in the tree, its content is gone",
            leaves
                .get(index as usize)
                .map(hex::encode)
                .unwrap_or_default()
        )));
    };
    if (leaves.len() as u64) < cp.size {
        return Err(LedgerError::Corrupt(format!(
            "the newest checkpoint covers {} entries but only {} are readable",
            cp.size,
            leaves.len()
        )));
    }
    let path = merkle::inclusion_proof(&leaves, index)
        .map_err(|e| LedgerError::Corrupt(format!("building the proof: {e}")))?;
    Ok(InclusionProof {
        index,
        size: cp.size,
        entry,
        leaf_hash: hex::encode(leaves[index as usize]),
        proof: path.iter().map(hex::encode).collect(),
        checkpoint: note,
    })
}

/// Checks an inclusion proof against a trusted verifier key; returns the checkpoint.
pub fn check_inclusion(doc: &InclusionProof, vkey: &str) -> Result<Checkpoint, String> {
    let cp = verify_note(&doc.checkpoint, vkey).map_err(|e| format!("checkpoint: {e}"))?;
    if cp.size != doc.size {
        return Err(format!(
            "the proof is for size {} but the checkpoint has size {}",
            doc.size, cp.size
        ));
    }
    let leaf = leaf_hash(doc.entry.as_bytes());
    if hex::encode(leaf) != doc.leaf_hash {
        return Err("the entry does not hash to the stated leaf hash".into());
    }
    let header: gatehouse_core::EntryHeader = serde_json::from_str(&doc.entry)
        .map_err(|e| format!("the entry is not an entry line: {e}"))?;
    if header.i != doc.index {
        return Err(format!(
            "the entry says index {} but the proof is for index {}",
            header.i, doc.index
        ));
    }
    let path = doc
        .proof
        .iter()
        .map(|h| hex::decode(h).ok().and_then(|b| Hash::try_from(b).ok()))
        .collect::<Option<Vec<Hash>>>()
        .ok_or("the proof contains a malformed hash")?;
    merkle::verify_inclusion(&leaf, doc.index, doc.size, &path, &cp.root)
        .map_err(|e| format!("inclusion proof: {e}"))?;
    Ok(cp)
}

//! Where each file of a ledger lives inside the gateway's data directory.
//!
//! ```text
//! <data_dir>/ledger/
//!   LOCK                 held (flock) by the one process writing the ledger
//!   signing.key          Ed25519 signer key, signed-note text form
//!   signing.pub          verifier key (also printed by `gatehouse ledger pubkey`)
//!   segments/<first-index:020>.seg   entry lines, preallocated with zeros
//!   checkpoints.log      one JSON line per signed checkpoint: {"note": "..."}
//!   signer.json          the signer's last signed checkpoint note and its tree's
//!                        compact range: {"version": 2, "note": "...", "range": [...]}
//!   state.json           whether the last run shut down cleanly
//!   chunks/<ab>/<sha256> content-addressed payloads referenced by entries
//! ```
//!
//! Every file is mode 0600 and every directory (the ledger directory, `segments/`,
//! `chunks/` and its fan-out directories) 0700.

use std::path::{Path, PathBuf};

/// Paths of one ledger directory.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The ledger inside the gateway data directory `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        Layout {
            root: data_dir.join("ledger"),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn lock(&self) -> PathBuf {
        self.root.join("LOCK")
    }
    pub fn signing_key(&self) -> PathBuf {
        self.root.join("signing.key")
    }
    pub fn verifier_key(&self) -> PathBuf {
        self.root.join("signing.pub")
    }
    pub fn segments(&self) -> PathBuf {
        self.root.join("segments")
    }
    pub fn segment(&self, first_index: u64) -> PathBuf {
        self.segments().join(format!("{first_index:020}.seg"))
    }
    /// What is left of segment `first_index` after retention pruned it: its leaf hashes.
    pub fn pruned(&self, first_index: u64) -> PathBuf {
        self.segments().join(format!("{first_index:020}.pruned"))
    }
    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints.log")
    }
    pub fn signer_state(&self) -> PathBuf {
        self.root.join("signer.json")
    }
    pub fn run_state(&self) -> PathBuf {
        self.root.join("state.json")
    }
    pub fn chunks(&self) -> PathBuf {
        self.root.join("chunks")
    }
    pub fn chunk(&self, sha256_hex: &str) -> PathBuf {
        let prefix = sha256_hex.get(..2).unwrap_or("__");
        self.chunks().join(prefix).join(sha256_hex)
    }
}

/// Parses a segment file name (`00000000000000000042.seg`) into its first index.
pub fn segment_first_index(path: &Path) -> Option<u64> {
    first_index_with(path, ".seg")
}

/// Parses a pruned segment's file name (`00000000000000000042.pruned`).
pub fn pruned_first_index(path: &Path) -> Option<u64> {
    first_index_with(path, ".pruned")
}

fn first_index_with(path: &Path, suffix: &str) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let digits = name.strip_suffix(suffix)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip() {
        let layout = Layout::new(Path::new("/d"));
        let path = layout.segment(42);
        assert_eq!(
            path,
            Path::new("/d/ledger/segments/00000000000000000042.seg")
        );
        assert_eq!(segment_first_index(&path), Some(42));
        assert_eq!(pruned_first_index(&layout.pruned(42)), Some(42));
        assert_eq!(segment_first_index(&layout.pruned(42)), None);
        assert_eq!(segment_first_index(Path::new("42.seg")), None);
        assert_eq!(segment_first_index(Path::new(".prep.tmp")), None);
    }
}

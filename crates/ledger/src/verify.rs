//! The offline verifier: recomputes the tree from the entries and checks every
//! checkpoint signature, checkpoint consistency, entry order and chunk hash.
//!
//! It reads only files, needs no running gateway, and names the first thing that is wrong.

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::checkpoint::{
    Checkpoint, StoredSignerState, read_checkpoint_log, read_signer_state, verify_note,
    verify_signer_state,
};
use crate::chunks::read_chunk;
use crate::error::LedgerError;
use crate::layout::Layout;
use crate::merkle::{CompactRange, leaf_hash};
use crate::outputs::OutputCheck;
use crate::segment;

/// Where the verifier gets the public key from.
#[derive(Debug, Clone)]
pub enum TrustedKey {
    /// Given by the auditor (`--pubkey`): an independent check.
    Given(String),
    /// Read from `signing.pub` in the data directory: only detects changes made without
    /// the private key.
    FromDataDir,
}

/// What an intact ledger looks like, printed as the final JSON line.
#[derive(Debug, Clone, Serialize)]
pub struct VerifySummary {
    pub ok: bool,
    pub entries: u64,
    pub checkpoints: u64,
    /// Checkpoints kept by the auditor from earlier that also matched.
    pub earlier_checkpoints: u64,
    /// Entries covered by the newest checkpoint.
    pub signed_entries: u64,
    /// Entries after the newest checkpoint (written after the last signature).
    pub unsigned_entries: u64,
    pub chunks: u64,
    /// Entries whose bodies retention pruned: their leaf hashes still lead to the roots.
    pub pruned_entries: u64,
    /// Results whose recorded data was found and matched the hash their entry committed to.
    pub outputs_matched: u64,
    /// Results whose data the gateway recorded as lost (its chunk could not be written).
    pub outputs_lost: u64,
    /// Results whose data is not (all) in the ledger: the gateway stopped before writing
    /// the session's last chunk. Not an alteration, but not evidence either.
    pub outputs_incomplete: u64,
    /// Stored data whose result entry never came (the gateway stopped first).
    pub outputs_unclaimed: u64,
    pub root: String,
    pub verifier_key: String,
    pub key_source: &'static str,
    pub seconds: f64,
    pub entries_per_s: f64,
}

/// A checkpoint note the auditor kept from earlier (for example fetched from
/// `/api/ledger/checkpoint` last quarter), with a label for messages.
#[derive(Debug, Clone)]
pub struct EarlierCheckpoint {
    pub label: String,
    pub note: String,
}

/// Verifies the ledger in `data_dir`. `earlier` checkpoints, signed by the same key, must
/// match the entries too: that catches a history rewritten and re-signed by someone holding
/// the key. `progress` is called with the number of entries checked, every 65,536 entries.
pub fn verify(
    data_dir: &Path,
    key: &TrustedKey,
    earlier: &[EarlierCheckpoint],
    mut progress: impl FnMut(u64),
) -> Result<VerifySummary, LedgerError> {
    let started = Instant::now();
    let layout = Layout::new(data_dir);
    if !layout.root().is_dir() {
        return Err(LedgerError::Corrupt(format!(
            "{}: no ledger here (expected the gateway's data directory)",
            layout.root().display()
        )));
    }
    let (vkey, key_source) = match key {
        TrustedKey::Given(k) => (k.trim().to_string(), "given"),
        TrustedKey::FromDataDir => {
            let path = layout.verifier_key();
            let text = std::fs::read_to_string(&path).map_err(|e| LedgerError::io(&path, e))?;
            (text.trim().to_string(), "data directory")
        }
    };
    signed_note::StandardVerifier::new(&vkey)
        .map_err(|e| LedgerError::Corrupt(format!("verifier key {vkey:?}: {e}")))?;

    let logged = load_checkpoints(&layout, &vkey)?;
    check_signer_state(&layout, &logged, &vkey)?;
    let signed = logged.last().map_or(0, |(_, cp)| cp.size);
    let logged_count = logged.len() as u64;
    // Every checkpoint to compare against the entries, by size, with where it came from.
    let mut checkpoints: Vec<(String, Checkpoint)> = logged
        .into_iter()
        .map(|(line, cp)| (format!("checkpoints.log line {line}"), cp))
        .collect();
    for e in earlier {
        let cp = verify_note(&e.note, &vkey)
            .map_err(|why| LedgerError::Corrupt(format!("{}: {why}", e.label)))?;
        checkpoints.push((e.label.clone(), cp));
    }
    checkpoints.sort_by_key(|(_, cp)| cp.size);

    // Stream the entries, comparing the root at every checkpointed size.
    let mut tree = CompactRange::new();
    let mut next_cp = 0usize;
    let mut chunks = 0u64;
    let mut prev_size = 0u64;
    let check_at = |tree: &CompactRange, next_cp: &mut usize, prev_size: &mut u64| {
        while let Some((line, cp)) = checkpoints.get(*next_cp) {
            if cp.size != tree.size() {
                break;
            }
            if cp.root != tree.root() {
                return Err(LedgerError::Corrupt(format!(
                    "{line}: the entries do not match the signed root of size {}; \
                     an entry with index in [{}, {}) was modified, inserted or removed",
                    cp.size, *prev_size, cp.size
                )));
            }
            *prev_size = cp.size;
            *next_cp += 1;
        }
        Ok(())
    };
    check_at(&tree, &mut next_cp, &mut prev_size)?;
    let mut outputs = OutputCheck::default();
    let mut pruned = 0u64;
    let end = segment::scan_with(&layout, |visit| {
        let entry = match visit {
            segment::Visit::Entry(entry) => entry,
            segment::Visit::Pruned(_, leaf) => {
                pruned += 1;
                tree.push(leaf);
                return check_at(&tree, &mut next_cp, &mut prev_size);
            }
        };
        let kind = entry.header.kind.as_str();
        let mut recording_chunk = None;
        for chunk in &entry.header.chunks {
            let bytes = read_chunk(&layout, chunk)
                .map_err(|why| LedgerError::Corrupt(format!("entry {}: {why}", entry.index)))?;
            chunks += 1;
            if kind == "recording" {
                recording_chunk = Some(bytes);
            }
        }
        match kind {
            "result" => outputs.result(entry.index, entry.line)?,
            "recording" => {
                outputs.recording(entry.index, entry.line, recording_chunk.as_deref())?
            }
            _ => {}
        }
        tree.push(leaf_hash(entry.line));
        check_at(&tree, &mut next_cp, &mut prev_size)?;
        if tree.size().is_multiple_of(65_536) {
            progress(tree.size());
        }
        Ok(())
    })?;
    if let Some(defect) = end.defect {
        let hint = if defect.is_crash_tail() {
            " (if the gateway crashed, starting it or `gatehouse ledger recover` cuts this tail and records the cut)"
        } else {
            ""
        };
        return Err(LedgerError::Corrupt(format!("{defect}{hint}")));
    }
    if let Some((line, cp)) = checkpoints.get(next_cp) {
        return Err(LedgerError::Corrupt(format!(
            "{line}: signed a log of {} entries but only {} entries are on disk \
             (entries deleted or a segment truncated)",
            cp.size,
            tree.size()
        )));
    }
    let seconds = started.elapsed().as_secs_f64();
    let unsettled = outputs.finish();
    Ok(VerifySummary {
        ok: true,
        entries: tree.size(),
        checkpoints: logged_count,
        earlier_checkpoints: earlier.len() as u64,
        signed_entries: signed,
        unsigned_entries: tree.size() - signed,
        chunks,
        pruned_entries: pruned,
        outputs_matched: outputs.matched,
        outputs_lost: outputs.lost,
        outputs_incomplete: unsettled.incomplete,
        outputs_unclaimed: unsettled.unclaimed,
        root: hex::encode(tree.root()),
        verifier_key: vkey,
        key_source,
        seconds,
        entries_per_s: if seconds > 0.0 {
            tree.size() as f64 / seconds
        } else {
            0.0
        },
    })
}

/// Reads and checks every checkpoint: signature by the trusted key, origin, and that each
/// one extends its predecessor (no size going back, no two roots for one size).
fn load_checkpoints(layout: &Layout, vkey: &str) -> Result<Vec<(usize, Checkpoint)>, LedgerError> {
    let (notes, torn) = read_checkpoint_log(&layout.checkpoints())?;
    if torn.is_some() {
        return Err(LedgerError::Corrupt(
            "checkpoints.log: the last line is incomplete (truncated file or crash tail)".into(),
        ));
    }
    let key_name = vkey.split('+').next().unwrap_or_default();
    let mut out: Vec<(usize, Checkpoint)> = Vec::with_capacity(notes.len());
    for (line, note) in notes {
        let cp = verify_note(&note, vkey)
            .map_err(|e| LedgerError::Corrupt(format!("checkpoints.log line {line}: {e}")))?;
        if cp.origin != key_name {
            return Err(LedgerError::Corrupt(format!(
                "checkpoints.log line {line}: origin {:?} is not this log's {key_name:?}",
                cp.origin
            )));
        }
        if let Some((prev_line, prev)) = out.last() {
            if cp.size < prev.size {
                return Err(LedgerError::Corrupt(format!(
                    "checkpoints.log line {line}: size {} is smaller than {} at line {prev_line} (rollback)",
                    cp.size, prev.size
                )));
            }
            if cp.size == prev.size && cp.root != prev.root {
                return Err(LedgerError::Corrupt(format!(
                    "checkpoints.log line {line}: a second, different root for size {} (fork)",
                    cp.size
                )));
            }
        }
        out.push((line, cp));
    }
    Ok(out)
}

/// The signer state must agree with the checkpoint log. It is written before each note is
/// appended and never removed, so once the log holds checkpoints it must exist, carry a
/// checkpoint signed by the trusted key (version 2; a version-1 state is unsigned and only
/// compared), and name exactly the newest checkpoint: ahead of the log means checkpoints
/// (and likely entries) were removed, behind it means the state was replaced by an older
/// copy.
fn check_signer_state(
    layout: &Layout,
    checkpoints: &[(usize, Checkpoint)],
    vkey: &str,
) -> Result<(), LedgerError> {
    let path = layout.signer_state();
    let (size, root) = match read_signer_state(&path)? {
        None if checkpoints.is_empty() => return Ok(()),
        None => {
            return Err(LedgerError::SignerStateMissing {
                path,
                checkpoints: checkpoints.len(),
            });
        }
        Some(StoredSignerState::Signed { note, range }) => {
            let (signed, _) = verify_signer_state(&path, &note, range, vkey)?;
            (signed.checkpoint.size, signed.checkpoint.root)
        }
        Some(StoredSignerState::Unsigned { size, root, .. }) => (size, root),
    };
    let last = checkpoints.last().map(|(_, cp)| cp);
    match last {
        Some(cp) if cp.size == size && cp.root != root => Err(LedgerError::Corrupt(format!(
            "{}: the signer signed a different root for size {size} than the newest checkpoint",
            path.display()
        ))),
        Some(cp) if cp.size > size => Err(LedgerError::SignerStateBehindLog {
            path,
            signer_size: size,
            log_size: cp.size,
        }),
        Some(cp) if cp.size == size => Ok(()),
        _ if size == 0 => Ok(()),
        _ => Err(LedgerError::Corrupt(format!(
            "checkpoints.log ends at size {} but the signer has signed size {size} (checkpoints removed: rollback)",
            last.map_or(0, |cp| cp.size)
        ))),
    }
}

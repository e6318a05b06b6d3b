//! Signed checkpoints: the C2SP tlog-checkpoint body, Ed25519 signed notes, the signing
//! key on disk, and the signer that refuses to sign a tree inconsistent with its last one.
//!
//! The signer's state (`signer.json`) is the last note it signed plus that tree's compact
//! range, checked with the ledger's key on load: without the private key it can be
//! deleted or replaced by an older copy, both of which opening detects once checkpoints
//! exist, but not forged or moved forward.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use signed_note::{Note, NoteError, StandardSigner, StandardVerifier, VerifierList};

use crate::error::{IoContext, LedgerError};
use crate::fsutil::{FILE_MODE, create_private, create_private_dirs, sync_dir, write_atomic};
use crate::layout::Layout;
use crate::merkle::{CompactRange, Hash};

/// Origin line (and key name) used when none is configured.
pub const DEFAULT_ORIGIN: &str = "gatehouse.local/ledger";

/// The signed statement "the log `origin` has `size` entries with Merkle root `root`".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

impl Checkpoint {
    /// The note text: origin, size and base64 root, one per line.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        )
    }

    /// Parses a note text produced by [`Checkpoint::body`] (extension lines are ignored).
    pub fn parse_body(text: &str) -> Result<Self, String> {
        let mut lines = text.split('\n');
        let origin = lines
            .next()
            .filter(|l| !l.is_empty())
            .ok_or("missing origin line")?;
        let size = lines
            .next()
            .ok_or("missing size line")?
            .parse::<u64>()
            .map_err(|e| format!("bad size line: {e}"))?;
        let root_b64 = lines.next().ok_or("missing root line")?;
        let root: Hash = B64
            .decode(root_b64)
            .map_err(|e| format!("bad root line: {e}"))?
            .try_into()
            .map_err(|_| "root is not 32 bytes".to_string())?;
        Ok(Checkpoint {
            origin: origin.to_string(),
            size,
            root,
        })
    }
}

/// A checkpoint with its signed note text as stored and served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    pub checkpoint: Checkpoint,
    pub note: String,
}

/// The ledger's Ed25519 key pair in signed-note text form.
pub struct LedgerKey {
    signer: StandardSigner,
    name: String,
    vkey: String,
}

impl std::fmt::Debug for LedgerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerKey")
            .field("vkey", &self.vkey)
            .finish_non_exhaustive()
    }
}

impl LedgerKey {
    /// Loads the key of this ledger, creating it (mode 0600) on first start.
    ///
    /// `origin` names a new key; an existing key must carry the same name, because the
    /// name is the origin line of every checkpoint already signed.
    pub fn load_or_create(layout: &Layout, origin: Option<&str>) -> Result<Self, LedgerError> {
        let path = layout.signing_key();
        if path.exists() {
            let key = Self::load(&path)?;
            if let Some(origin) = origin
                && origin != key.name
            {
                return Err(LedgerError::Key {
                    path,
                    reason: format!(
                        "the key is for origin {:?} but the configuration asks for {origin:?}; \
                         the origin of an existing ledger cannot change",
                        key.name
                    ),
                });
            }
            return Ok(key);
        }
        let name = origin.unwrap_or(DEFAULT_ORIGIN);
        if !signed_note::is_key_name_valid(name) {
            return Err(LedgerError::Key {
                path,
                reason: format!("{name:?} is not a valid key name (no spaces or '+')"),
            });
        }
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| LedgerError::Key {
            path: path.clone(),
            reason: format!("no randomness for a new key: {e}"),
        })?;
        let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
        let vkey = signed_note::new_ed25519_verifier_key(name, &signing.verifying_key());
        let key_id = vkey.split('+').nth(1).unwrap_or_default();
        let mut private = vec![1u8];
        private.extend_from_slice(&seed);
        let skey = format!("PRIVATE+KEY+{name}+{key_id}+{}\n", B64.encode(&private));
        create_private_dirs(layout.root(), layout.root())?;
        create_private(&path, skey.as_bytes())?;
        write_atomic(&layout.verifier_key(), format!("{vkey}\n").as_bytes())?;
        tracing::info!(vkey = %vkey, "generated a new ledger signing key");
        Self::load(&path)
    }

    fn load(path: &Path) -> Result<Self, LedgerError> {
        let bad = |reason: String| LedgerError::Key {
            path: path.to_path_buf(),
            reason,
        };
        let mode = fs::metadata(path).at(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(bad(format!(
                "mode is {:o}; the key must be readable by its owner only (chmod 600)",
                mode & 0o777
            )));
        }
        let text = fs::read_to_string(path).at(path)?;
        let skey = text.trim();
        let signer =
            StandardSigner::new(skey).map_err(|e| bad(format!("not a signer key: {e}")))?;
        // Derive the verifier key from the private half rather than trusting signing.pub.
        let fields: Vec<&str> = skey.splitn(5, '+').collect();
        let (name, raw) = match fields.as_slice() {
            ["PRIVATE", "KEY", name, _id, b64] => (*name, B64.decode(b64).ok()),
            _ => return Err(bad("not a signer key".into())),
        };
        let seed: [u8; 32] = raw
            .and_then(|r| r.get(1..).and_then(|s| s.try_into().ok()))
            .ok_or_else(|| bad("not an Ed25519 key".into()))?;
        let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
        let vkey = signed_note::new_ed25519_verifier_key(name, &signing.verifying_key());
        Ok(LedgerKey {
            signer,
            name: name.to_string(),
            vkey,
        })
    }

    /// The key name, which is also the checkpoint origin.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The public verifier key, `<name>+<id>+<base64 key>`.
    pub fn verifier_key(&self) -> &str {
        &self.vkey
    }

    /// Signs a checkpoint into a note.
    pub fn sign(&self, checkpoint: &Checkpoint) -> Result<SignedCheckpoint, LedgerError> {
        let body = checkpoint.body();
        let mut note = Note::new(body.as_bytes(), &[])
            .map_err(|e| LedgerError::Inconsistent(format!("checkpoint note: {e}")))?;
        note.add_sigs(&[&self.signer])
            .map_err(|e| LedgerError::Inconsistent(format!("signing the checkpoint: {e}")))?;
        let note = String::from_utf8(note.to_bytes())
            .map_err(|e| LedgerError::Inconsistent(format!("checkpoint note: {e}")))?;
        Ok(SignedCheckpoint {
            checkpoint: checkpoint.clone(),
            note,
        })
    }
}

/// Why a stored checkpoint note cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteProblem {
    #[error(
        "{0:?} is not a verifier key (expected name+id+key, as `gatehouse ledger pubkey` prints)"
    )]
    BadKey(String),
    #[error("malformed signed note")]
    Malformed,
    #[error("the note carries no signature")]
    Unsigned,
    #[error("signed by {found}, not by the expected key {expected}")]
    WrongKey { found: String, expected: String },
    #[error("invalid signature by {0} (the note text was changed or the signature forged)")]
    BadSignature(String),
    #[error("bad checkpoint body: {0}")]
    BadBody(String),
}

/// Checks a checkpoint note against a verifier key and returns what it says.
pub fn verify_note(note: &str, vkey: &str) -> Result<Checkpoint, NoteProblem> {
    let verifier = StandardVerifier::new(vkey).map_err(|_| NoteProblem::BadKey(vkey.into()))?;
    // `name+id`; the base64 key after the second '+' may itself contain '+'.
    let expected = vkey.splitn(3, '+').take(2).collect::<Vec<_>>().join("+");
    let sig_block = note.rsplit_once("\n\n").map(|(_, sigs)| sigs).unwrap_or("");
    let signers: Vec<String> = sig_block
        .lines()
        .filter_map(|l| l.strip_prefix("— "))
        .filter_map(|l| {
            let (name, b64) = l.split_once(' ')?;
            let raw = B64.decode(b64).ok()?;
            let id = raw.get(..4)?;
            Some(format!("{name}+{}", hex::encode(id)))
        })
        .collect();
    if signers.is_empty() {
        return Err(if note.contains("\n\n") || note.ends_with('\n') {
            NoteProblem::Unsigned
        } else {
            NoteProblem::Malformed
        });
    }
    let parsed = Note::from_bytes(note.as_bytes()).map_err(|_| NoteProblem::Malformed)?;
    let list = VerifierList::new(vec![Box::new(verifier)]);
    match parsed.verify(&list) {
        Ok(_) => {}
        Err(NoteError::UnverifiedNote) => {
            return Err(NoteProblem::WrongKey {
                found: signers.join(", "),
                expected,
            });
        }
        Err(NoteError::InvalidSignature { .. }) => {
            return Err(NoteProblem::BadSignature(expected));
        }
        Err(_) => return Err(NoteProblem::Malformed),
    }
    let text = std::str::from_utf8(parsed.text()).map_err(|_| NoteProblem::Malformed)?;
    Checkpoint::parse_body(text).map_err(NoteProblem::BadBody)
}

/// One line of `checkpoints.log`.
#[derive(Debug, Serialize, Deserialize)]
pub struct CheckpointRecord {
    pub note: String,
}

/// The notes of `checkpoints.log` with their line numbers, and the byte length of the
/// valid part when the last line is torn (no newline).
pub type CheckpointLog = (Vec<(usize, String)>, Option<usize>);

/// Reads every checkpoint note in `checkpoints.log`, in order, with its line number.
///
/// A final line without a newline is a torn write and is returned separately.
pub fn read_checkpoint_log(path: &Path) -> Result<CheckpointLog, LedgerError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), None)),
        Err(e) => return Err(LedgerError::io(path, e)),
    };
    let mut out = Vec::new();
    let mut torn = None;
    let mut rest = text.as_str();
    let mut line_no = 0;
    while !rest.is_empty() {
        line_no += 1;
        let Some((line, after)) = rest.split_once('\n') else {
            torn = Some(text.len() - rest.len());
            break;
        };
        let record: CheckpointRecord = serde_json::from_str(line).map_err(|e| {
            LedgerError::Corrupt(format!(
                "{} line {line_no}: not a checkpoint record: {e}",
                path.display()
            ))
        })?;
        out.push((line_no, record.note));
        rest = after;
    }
    Ok((out, torn))
}

/// The newest checkpoint in `checkpoints.log`: its signed note as stored and what it says
/// (read, not verified: proofs and exports carry the note for their reader to verify).
pub fn newest_checkpoint(layout: &Layout) -> Result<SignedCheckpoint, LedgerError> {
    let (mut notes, _) = read_checkpoint_log(&layout.checkpoints())?;
    let Some((_, note)) = notes.pop() else {
        return Err(LedgerError::Corrupt(
            "the ledger has no signed checkpoint yet: a running gateway signs one within a \
             second of new entries, and one when it stops"
                .into(),
        ));
    };
    let body = note.split("\n\n").next().unwrap_or_default();
    let checkpoint = Checkpoint::parse_body(&format!("{body}\n"))
        .map_err(|e| LedgerError::Corrupt(format!("the newest checkpoint is unreadable: {e}")))?;
    Ok(SignedCheckpoint { checkpoint, note })
}

/// Version of the signer state this code writes.
///
/// Version 1 (no `version` field) held the last signed tree as plain `origin`, `size`,
/// `root` and `range`: anyone able to write the directory could set it back together with
/// the log. Version 2 holds the signed checkpoint note itself, so only the private key
/// can produce one that loads.
pub(crate) const SIGNER_STATE_VERSION: u32 = 2;

/// `signer.json` as written: the signer's last signed checkpoint, as the note it signed,
/// and the compact range of that tree.
#[derive(Debug, Serialize)]
struct SignerFile<'a> {
    version: u32,
    /// Verified with the ledger's key on load.
    note: &'a str,
    /// Not signed itself, but bound to the signed root: it must hash to it. It lets the
    /// next signature be checked to extend this tree without rereading the entries.
    range: Vec<String>,
}

/// `signer.json` of any version, as parsed before anything in it is trusted.
#[derive(Debug, Deserialize)]
struct AnySignerFile {
    #[serde(default)]
    version: Option<u32>,
    #[serde(default)]
    note: Option<String>,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    root: Option<String>,
    range: Vec<String>,
}

/// The signer state as stored, not yet checked against any key or checkpoint.
#[derive(Debug, Clone)]
pub(crate) enum StoredSignerState {
    /// Version 2: the signed note of the last signed tree and the tree's compact range.
    Signed { note: String, range: Vec<Hash> },
    /// Version 1: the last signed tree, unsigned.
    Unsigned {
        size: u64,
        root: Hash,
        range: Vec<Hash>,
    },
}

/// Reads and parses the signer state; `None` when the file does not exist.
pub(crate) fn read_signer_state(path: &Path) -> Result<Option<StoredSignerState>, LedgerError> {
    let unreadable = |reason: String| LedgerError::SignerStateUnreadable {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(unreadable(e.to_string())),
    };
    let file: AnySignerFile =
        serde_json::from_slice(&bytes).map_err(|e| unreadable(format!("not JSON: {e}")))?;
    let range = file
        .range
        .iter()
        .map(|h| decode_hash(h))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| unreadable("a hash of the compact range is not 32 bytes of hex".into()))?;
    match file.version.unwrap_or(1) {
        1 => {
            let (Some(size), Some(root)) = (file.size, file.root.as_deref()) else {
                return Err(unreadable("version 1 state without size or root".into()));
            };
            let root = decode_hash(root)
                .ok_or_else(|| unreadable("the root is not 32 bytes of hex".into()))?;
            Ok(Some(StoredSignerState::Unsigned { size, root, range }))
        }
        SIGNER_STATE_VERSION => {
            let note = file
                .note
                .ok_or_else(|| unreadable("version 2 state without a checkpoint note".into()))?;
            Ok(Some(StoredSignerState::Signed { note, range }))
        }
        other => Err(unreadable(format!(
            "format version {other} is not known here (this gatehouse writes version \
             {SIGNER_STATE_VERSION})"
        ))),
    }
}

/// Checks a version-2 signer state: its note must be a checkpoint of this log signed by
/// `vkey`, and its compact range must hash to the signed root.
pub(crate) fn verify_signer_state(
    path: &Path,
    note: &str,
    range: Vec<Hash>,
    vkey: &str,
) -> Result<(SignedCheckpoint, CompactRange), LedgerError> {
    let unverified = |reason: String| LedgerError::SignerStateUnverified {
        path: path.to_path_buf(),
        reason,
    };
    let checkpoint = verify_note(note, vkey).map_err(|e| unverified(e.to_string()))?;
    let key_name = vkey.split('+').next().unwrap_or_default();
    if checkpoint.origin != key_name {
        return Err(unverified(format!(
            "its checkpoint is for origin {:?}, not this log's {key_name:?}",
            checkpoint.origin
        )));
    }
    let range = CompactRange::from_parts(checkpoint.size, range)
        .map_err(|e| unverified(format!("bad compact range: {e}")))?;
    if range.root() != checkpoint.root {
        return Err(unverified(
            "its compact range does not hash to the signed root".into(),
        ));
    }
    Ok((
        SignedCheckpoint {
            checkpoint,
            note: note.to_string(),
        },
        range,
    ))
}

/// Writes the signer state (version 2) atomically, mode 0600.
fn write_signer_state(
    layout: &Layout,
    signed: &SignedCheckpoint,
    range: &CompactRange,
) -> Result<(), LedgerError> {
    let file = SignerFile {
        version: SIGNER_STATE_VERSION,
        note: &signed.note,
        range: range.hashes().iter().map(hex::encode).collect(),
    };
    let bytes = serde_json::to_vec_pretty(&file).expect("signer state serialises");
    write_atomic(&layout.signer_state(), &bytes)
}

/// Signs checkpoints and guarantees that each one extends the previous one.
pub struct Signer {
    layout: Layout,
    key: LedgerKey,
    range: CompactRange,
    /// The last signed checkpoint, as recorded in the signer state.
    signed: Option<SignedCheckpoint>,
    /// The newest checkpoint known to be in `checkpoints.log`.
    last: Option<SignedCheckpoint>,
    /// What [`Signer::reconcile_log`] has to do: the length of the log without a torn last
    /// line, and whether the log lacks the signer's last checkpoint.
    log_torn_at: Option<usize>,
    log_behind: bool,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("signed_size", &self.range.size())
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// Loads the signer's last signed state (an empty tree when it has never signed) and
    /// checks it against `checkpoints.log`.
    ///
    /// The state must carry a checkpoint signed with `key` whose compact range hashes to
    /// the signed root, and no checkpoint in the log may be newer. Once the log holds a
    /// checkpoint, a missing, unreadable or unverifiable state is an error, never a reason
    /// to start over: starting over would accept a log and entries cut back together. A
    /// version-1 state is migrated only when it names exactly the newest checkpoint in the
    /// log, whose signature verifies.
    pub fn load(layout: &Layout, key: LedgerKey) -> Result<Self, LedgerError> {
        let path = layout.signer_state();
        let log_path = layout.checkpoints();
        let (notes, torn) = read_checkpoint_log(&log_path)?;
        let newest = match notes.last() {
            Some((line, note)) => {
                let checkpoint = verify_note(note, key.verifier_key()).map_err(|e| {
                    LedgerError::Corrupt(format!("{} line {line}: {e}", log_path.display()))
                })?;
                Some(SignedCheckpoint {
                    checkpoint,
                    note: note.clone(),
                })
            }
            None => None,
        };
        let (signed, range) = match read_signer_state(&path)? {
            None if notes.is_empty() => (None, CompactRange::new()),
            None => {
                return Err(LedgerError::SignerStateMissing {
                    path,
                    checkpoints: notes.len(),
                });
            }
            Some(StoredSignerState::Signed { note, range }) => {
                let (signed, range) = verify_signer_state(&path, &note, range, key.verifier_key())?;
                (Some(signed), range)
            }
            Some(StoredSignerState::Unsigned { size, root, range }) => {
                let (signed, range) = migrate(layout, size, root, range, newest.as_ref())?;
                (Some(signed), range)
            }
        };

        let mut last = None;
        let mut log_behind = false;
        match (newest, &signed) {
            (Some(newest), _) if newest.checkpoint.size > range.size() => {
                return Err(LedgerError::SignerStateBehindLog {
                    path,
                    signer_size: range.size(),
                    log_size: newest.checkpoint.size,
                });
            }
            (Some(newest), Some(signed)) if newest.checkpoint.size == range.size() => {
                if newest.checkpoint.root != signed.checkpoint.root {
                    // Two roots for one size, both signed: a fork made with the key.
                    return Err(LedgerError::Corrupt(format!(
                        "{}: the newest checkpoint has a different root than the signer state \
                         {} for the same size {}",
                        log_path.display(),
                        path.display(),
                        range.size()
                    )));
                }
                last = Some(newest);
            }
            // The signer committed to a tree whose note did not reach the log (a crash
            // between the two writes, or lines cut from the log): the note goes back in.
            (_, Some(_)) => log_behind = true,
            (_, None) => {}
        }
        Ok(Signer {
            layout: layout.clone(),
            key,
            range,
            signed,
            last,
            log_torn_at: torn,
            log_behind,
        })
    }

    pub fn key(&self) -> &LedgerKey {
        &self.key
    }

    /// Size of the last signed tree.
    pub fn signed_size(&self) -> u64 {
        self.range.size()
    }

    /// Compact range of the last signed tree.
    pub fn signed_range(&self) -> &CompactRange {
        &self.range
    }

    /// The newest checkpoint in `checkpoints.log` once it agrees with the signer (after
    /// opening the ledger has repaired the log, or after a signature in this run).
    pub fn last(&self) -> Option<&SignedCheckpoint> {
        self.last.as_ref()
    }

    /// Signs the tree made of the last signed tree plus `new_leaves`, provided it has
    /// `expected_size` leaves and root `expected_root`; persists the new state, then
    /// appends the note to `checkpoints.log`.
    ///
    /// Refuses, without signing, when the caller's tree is not that extension: a signer
    /// never vouches for two trees that disagree.
    pub fn sign(
        &mut self,
        new_leaves: &[Hash],
        expected_size: u64,
        expected_root: Hash,
    ) -> Result<SignedCheckpoint, LedgerError> {
        let mut next = self.range.clone();
        for leaf in new_leaves {
            next.push(*leaf);
        }
        if next.size() != expected_size || next.root() != expected_root {
            return Err(LedgerError::Inconsistent(format!(
                "the tree of size {expected_size} does not extend the last signed tree of size {}",
                self.range.size()
            )));
        }
        let checkpoint = Checkpoint {
            origin: self.key.name().to_string(),
            size: expected_size,
            root: expected_root,
        };
        let signed = self.key.sign(&checkpoint)?;
        // The state first: once it is durable the signer is committed to the tree, and a
        // crash before the log append only means the note is appended at next start.
        write_signer_state(&self.layout, &signed, &next)?;
        self.append_log(&signed)?;
        self.range = next;
        self.signed = Some(signed.clone());
        self.last = Some(signed.clone());
        Ok(signed)
    }

    fn append_log(&self, signed: &SignedCheckpoint) -> Result<(), LedgerError> {
        let path = self.layout.checkpoints();
        let mut line = serde_json::to_vec(&CheckpointRecord {
            note: signed.note.clone(),
        })
        .expect("checkpoint record serialises");
        line.push(b'\n');
        let created = !path.exists();
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(FILE_MODE)
            .open(&path)
            .at(&path)?;
        file.write_all(&line).at(&path)?;
        file.sync_data().at(&path)?;
        if created {
            // A new log's directory entry must be durable too, or a crash could lose
            // the whole file after its first note was reported written.
            sync_dir(self.layout.root())?;
        }
        Ok(())
    }

    /// Makes `checkpoints.log` agree with the signer state after a crash: cuts a torn last
    /// line, and appends the signer's last note if it never reached the log (a crash between
    /// persisting the state and appending the note). The note appended is the one the state
    /// holds, exactly as it was signed.
    pub(crate) fn reconcile_log(&mut self) -> Result<(), LedgerError> {
        let path = self.layout.checkpoints();
        if let Some(valid_len) = self.log_torn_at.take() {
            tracing::warn!(file = %path.display(), "cutting a torn checkpoint line left by a crash");
            let file = OpenOptions::new().write(true).open(&path).at(&path)?;
            file.set_len(valid_len as u64).at(&path)?;
            file.sync_all().at(&path)?;
        }
        if self.log_behind
            && let Some(signed) = self.signed.clone()
        {
            tracing::warn!(file = %path.display(), size = signed.checkpoint.size,
                "appending the signer's last checkpoint, which the log lacks");
            self.append_log(&signed)?;
            self.last = Some(signed);
        }
        self.log_behind = false;
        Ok(())
    }
}

/// Turns a version-1 (unsigned) signer state into version 2, provided it names exactly the
/// newest checkpoint in the log, whose signature was verified: then the signed note in the
/// log vouches for it. Anything else could be a forgery and is refused.
fn migrate(
    layout: &Layout,
    size: u64,
    root: Hash,
    range: Vec<Hash>,
    newest: Option<&SignedCheckpoint>,
) -> Result<(SignedCheckpoint, CompactRange), LedgerError> {
    let path = layout.signer_state();
    let unverified = |reason: String| LedgerError::SignerStateUnverified {
        path: path.clone(),
        reason,
    };
    let Some(newest) = newest.filter(|n| n.checkpoint.size == size && n.checkpoint.root == root)
    else {
        let log = match newest {
            Some(n) => format!("the newest checkpoint is of {} entries", n.checkpoint.size),
            None => "checkpoints.log holds no checkpoint".to_string(),
        };
        return Err(unverified(format!(
            "it is in the old unsigned format (version 1) and its tree of {size} entries is not \
             the newest signed checkpoint ({log}); an unsigned state is migrated only when a \
             signed checkpoint vouches for it (if an older gatehouse stopped between the two \
             writes of a signature, open the ledger once with that version first)"
        )));
    };
    let range = CompactRange::from_parts(size, range)
        .map_err(|e| unverified(format!("bad compact range: {e}")))?;
    if range.root() != root {
        return Err(unverified(
            "its compact range does not hash to its root".into(),
        ));
    }
    write_signer_state(layout, newest, &range)?;
    tracing::info!(file = %path.display(), size,
        "migrated the signer state to version {SIGNER_STATE_VERSION} (signed checkpoint note)");
    Ok((newest.clone(), range))
}

pub(crate) fn decode_hash(text: &str) -> Option<Hash> {
    hex::decode(text).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::leaf_hash;

    #[test]
    fn key_is_private_and_notes_verify_only_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let key = LedgerKey::load_or_create(&layout, Some("example.com/log")).unwrap();
        let mode = fs::metadata(layout.signing_key())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = LedgerKey::load_or_create(&layout, None).unwrap();
        assert_eq!(key.verifier_key(), again.verifier_key());

        let cp = Checkpoint {
            origin: "example.com/log".into(),
            size: 3,
            root: [7; 32],
        };
        let signed = key.sign(&cp).unwrap();
        assert!(signed.note.starts_with("example.com/log\n3\n"));
        assert_eq!(verify_note(&signed.note, key.verifier_key()).unwrap(), cp);

        let tampered = signed.note.replacen("\n3\n", "\n4\n", 1);
        assert!(matches!(
            verify_note(&tampered, key.verifier_key()),
            Err(NoteProblem::BadSignature(_))
        ));
        let other_dir = tempfile::tempdir().unwrap();
        let other =
            LedgerKey::load_or_create(&Layout::new(other_dir.path()), Some("example.com/log"))
                .unwrap();
        assert!(matches!(
            verify_note(&signed.note, other.verifier_key()),
            Err(NoteProblem::WrongKey { .. })
        ));
        let unsigned = cp.body() + "\n";
        assert_eq!(
            verify_note(&unsigned, key.verifier_key()),
            Err(NoteProblem::Unsigned)
        );

        let err = LedgerKey::load_or_create(&layout, Some("other")).unwrap_err();
        assert!(err.to_string().contains("cannot change"), "{err}");
    }

    #[test]
    fn signer_refuses_a_tree_that_does_not_extend_the_last_one() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let key = LedgerKey::load_or_create(&layout, None).unwrap();
        let mut signer = Signer::load(&layout, key).unwrap();
        let leaves: Vec<Hash> = (0..5u8).map(|i| leaf_hash(&[i])).collect();
        let mut tree = CompactRange::new();
        for l in &leaves[..3] {
            tree.push(*l);
        }
        signer.sign(&leaves[..3], 3, tree.root()).unwrap();

        // A forked tree of size 5 whose first three leaves differ.
        let mut fork = CompactRange::new();
        for i in 10..15u8 {
            fork.push(leaf_hash(&[i]));
        }
        let err = signer.sign(&leaves[3..], 5, fork.root()).unwrap_err();
        assert!(matches!(err, LedgerError::Inconsistent(_)), "{err}");

        for l in &leaves[3..] {
            tree.push(*l);
        }
        signer.sign(&leaves[3..], 5, tree.root()).unwrap();

        // The state survives a restart.
        let key = LedgerKey::load_or_create(&layout, None).unwrap();
        let reloaded = Signer::load(&layout, key).unwrap();
        assert_eq!(reloaded.signed_size(), 5);
        assert_eq!(reloaded.signed_range().root(), tree.root());
        let (notes, torn) = read_checkpoint_log(&layout.checkpoints()).unwrap();
        assert_eq!((notes.len(), torn), (2, None));
    }
}

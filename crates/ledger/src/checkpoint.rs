//! Signed checkpoints: the C2SP tlog-checkpoint body, Ed25519 signed notes, the signing
//! key on disk, and the signer that refuses to sign a tree inconsistent with its last one.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use signed_note::{Note, NoteError, StandardSigner, StandardVerifier, VerifierList};

use crate::error::{IoContext, LedgerError};
use crate::fsutil::{create_private, write_atomic};
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
        fs::create_dir_all(layout.root()).at(layout.root())?;
        create_private(&path, skey.as_bytes())?;
        write_atomic(
            &layout.verifier_key(),
            format!("{vkey}\n").as_bytes(),
            0o644,
        )?;
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

/// What the signer last signed, persisted in `signer.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SignerFile {
    origin: String,
    size: u64,
    root: String,
    /// The compact range of the signed tree, so the next signature can be checked to
    /// extend it without rereading the log.
    range: Vec<String>,
}

/// Signs checkpoints and guarantees that each one extends the previous one.
pub struct Signer {
    layout: Layout,
    key: LedgerKey,
    range: CompactRange,
    last: Option<SignedCheckpoint>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("signed_size", &self.range.size())
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// Loads the signer's last signed state (an empty tree when it has never signed).
    pub fn load(layout: &Layout, key: LedgerKey) -> Result<Self, LedgerError> {
        let path = layout.signer_state();
        let range = match fs::read(&path) {
            Ok(bytes) => {
                let file: SignerFile = serde_json::from_slice(&bytes).map_err(|e| {
                    LedgerError::Corrupt(format!(
                        "{}: unreadable signer state: {e}",
                        path.display()
                    ))
                })?;
                let hashes = file
                    .range
                    .iter()
                    .map(|h| decode_hash(h))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| LedgerError::Corrupt(format!("{}: bad hash", path.display())))?;
                let range = CompactRange::from_parts(file.size, hashes).map_err(|e| {
                    LedgerError::Corrupt(format!("{}: bad compact range: {e}", path.display()))
                })?;
                if Some(range.root()) != decode_hash(&file.root) {
                    return Err(LedgerError::Corrupt(format!(
                        "{}: the stored range does not hash to the stored root",
                        path.display()
                    )));
                }
                range
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => CompactRange::new(),
            Err(e) => return Err(LedgerError::io(path, e)),
        };
        Ok(Signer {
            layout: layout.clone(),
            key,
            range,
            last: None,
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

    /// The last checkpoint signed in this run, if any.
    pub fn last(&self) -> Option<&SignedCheckpoint> {
        self.last.as_ref()
    }

    pub(crate) fn set_last(&mut self, last: SignedCheckpoint) {
        self.last = Some(last);
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
        self.persist(&next)?;
        self.append_log(&signed)?;
        self.range = next;
        self.last = Some(signed.clone());
        Ok(signed)
    }

    /// Writes `signer.json` first: once it is durable the signer is committed to the tree,
    /// and a crash before the log append only means the note is re-signed at next start.
    fn persist(&self, range: &CompactRange) -> Result<(), LedgerError> {
        let file = SignerFile {
            origin: self.key.name().to_string(),
            size: range.size(),
            root: hex::encode(range.root()),
            range: range.hashes().iter().map(hex::encode).collect(),
        };
        let bytes = serde_json::to_vec_pretty(&file).expect("signer state serialises");
        write_atomic(&self.layout.signer_state(), &bytes, 0o644)
    }

    fn append_log(&self, signed: &SignedCheckpoint) -> Result<(), LedgerError> {
        let path = self.layout.checkpoints();
        let mut line = serde_json::to_vec(&CheckpointRecord {
            note: signed.note.clone(),
        })
        .expect("checkpoint record serialises");
        line.push(b'\n');
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .at(&path)?;
        file.write_all(&line).at(&path)?;
        file.sync_data().at(&path)
    }

    /// Re-signs the last signed tree and appends it to the log (after a crash between
    /// persisting the signer state and appending the note).
    pub(crate) fn rewrite_last(&mut self) -> Result<SignedCheckpoint, LedgerError> {
        let checkpoint = Checkpoint {
            origin: self.key.name().to_string(),
            size: self.range.size(),
            root: self.range.root(),
        };
        let signed = self.key.sign(&checkpoint)?;
        self.append_log(&signed)?;
        self.last = Some(signed.clone());
        Ok(signed)
    }
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

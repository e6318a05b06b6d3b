//! The ledger at rest, on real files: every file is 0600 and every directory 0700 (and an
//! older, looser ledger is tightened on open), and the signer state that rollback
//! detection relies on cannot be deleted, rolled back, forged or edited unnoticed.
#![allow(clippy::unwrap_used)] // a test (or bench) that cannot go on fails by panicking

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gatehouse_core::{Durability, Event, EventKind};
use gatehouse_ledger::checkpoint::{LedgerKey, read_checkpoint_log};
use gatehouse_ledger::merkle::CompactRange;
use gatehouse_ledger::{
    Checkpoint, Layout, Ledger, LedgerError, LedgerOptions, TrustedKey, verify, verify_note,
};
use serde_json::{Value, json};

/// Checkpoints only when asked (on close), so each test knows exactly what is signed.
fn opts() -> LedgerOptions {
    LedgerOptions {
        segment_size: 64 << 10,
        max_entry_size: 16 << 10,
        heartbeat_interval: None,
        checkpoint_interval: Duration::from_secs(3600),
        ..LedgerOptions::default()
    }
}

fn event(n: u64) -> Event {
    Event::system(EventKind::Bench, json!({"n": n, "pad": "p".repeat(200)}))
}

/// Opens the ledger, appends `n` entries and closes it (which signs a checkpoint).
fn run_once(dir: &Path, n: u64) {
    let (ledger, _) = Ledger::open(dir, opts()).unwrap();
    for i in 0..n {
        ledger.append_blocking(&event(i), Durability::Sync).unwrap();
    }
    ledger.close().unwrap();
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Every file and directory under `root`, `root` included, with whether it is a directory.
fn tree(root: &Path) -> Vec<(PathBuf, bool)> {
    let mut out = vec![(root.to_path_buf(), true)];
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for item in fs::read_dir(&dir).unwrap() {
            let path = item.unwrap().path();
            let is_dir = path.is_dir();
            if is_dir {
                dirs.push(path.clone());
            }
            out.push((path, is_dir));
        }
    }
    out
}

/// Asserts that every file under the ledger is 0600 and every directory 0700.
fn assert_private(layout: &Layout) {
    for (path, is_dir) in tree(layout.root()) {
        let expected = if is_dir { 0o700 } else { 0o600 };
        assert_eq!(
            mode(&path),
            expected,
            "{} is {:o}",
            path.display(),
            mode(&path)
        );
    }
}

fn signer_state(layout: &Layout) -> Value {
    serde_json::from_slice(&fs::read(layout.signer_state()).unwrap()).unwrap()
}

fn checkpoint_count(layout: &Layout) -> usize {
    read_checkpoint_log(&layout.checkpoints()).unwrap().0.len()
}

fn open_err(dir: &Path) -> LedgerError {
    Ledger::open(dir, opts()).unwrap_err()
}

fn verify_err(dir: &Path) -> LedgerError {
    verify(dir, &TrustedKey::FromDataDir, &[], |_| {}).unwrap_err()
}

#[test]
fn every_file_is_private_and_an_older_ledger_is_tightened_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path());
    let (ledger, _) = Ledger::open(dir.path(), opts()).unwrap();
    let chunk = gatehouse_ledger::chunks::put_chunk(&layout, b"recorded rows").unwrap();
    let mut e = event(1);
    e.chunks.push(chunk.clone());
    ledger.append_blocking(&e, Durability::Sync).unwrap();
    ledger.close().unwrap();

    let chunk_path = layout.chunk(&chunk.sha256);
    let segment = layout.segment(0);
    for path in [
        layout.lock(),
        layout.signing_key(),
        layout.verifier_key(),
        layout.checkpoints(),
        layout.signer_state(),
        layout.run_state(),
        segment.clone(),
        chunk_path.clone(),
    ] {
        assert!(path.is_file(), "{} was created", path.display());
    }
    assert_private(&layout);

    // What an older version left: world-readable files and directories.
    for path in [
        layout.root().to_path_buf(),
        layout.segments(),
        layout.chunks(),
        chunk_path.parent().unwrap().to_path_buf(),
    ] {
        set_mode(&path, 0o755);
    }
    for path in [
        layout.checkpoints(),
        layout.signer_state(),
        layout.run_state(),
        layout.verifier_key(),
        layout.lock(),
        segment.clone(),
        chunk_path.clone(),
    ] {
        set_mode(&path, 0o644);
    }
    let (ledger, _) = Ledger::open(dir.path(), opts()).unwrap();
    ledger.close().unwrap();
    assert_private(&layout);

    // The key is the exception: one others could read is refused, not quietly fixed.
    set_mode(&layout.signing_key(), 0o644);
    let err = open_err(dir.path());
    assert!(
        matches!(&err, LedgerError::Key { path, .. } if *path == layout.signing_key()),
        "{err}"
    );
    assert_eq!(mode(&layout.signing_key()), 0o644);
}

#[test]
fn a_fresh_ledger_writes_a_signed_signer_state_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path());
    let (ledger, report) = Ledger::open(dir.path(), opts()).unwrap();
    assert_eq!((report.entries, report.signed_size), (0, 0));
    assert!(
        !layout.signer_state().exists(),
        "nothing is signed before the first checkpoint"
    );
    ledger.append_blocking(&event(1), Durability::Sync).unwrap();
    let closing = ledger.close().unwrap().expect("a checkpoint");

    // The state is the signed note itself, which verifies with the ledger's key.
    let state = signer_state(&layout);
    assert_eq!(state["version"], 2);
    assert_eq!(state["note"], closing.note.as_str());
    let vkey = fs::read_to_string(layout.verifier_key()).unwrap();
    assert_eq!(
        verify_note(state["note"].as_str().unwrap(), vkey.trim()).unwrap(),
        closing.checkpoint
    );

    let (ledger, report) = Ledger::open(dir.path(), opts()).unwrap();
    assert_eq!(report.signed_size, 2);
    assert_eq!(
        ledger.status().checkpoint.map(|c| c.note),
        Some(closing.note)
    );
    ledger.append_blocking(&event(2), Durability::Sync).unwrap();
    ledger.close().unwrap();
    let summary = verify(dir.path(), &TrustedKey::FromDataDir, &[], |_| {}).unwrap();
    assert_eq!((summary.entries, summary.checkpoints), (4, 2));
}

#[test]
fn a_deleted_signer_state_is_refused_not_recreated() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path());
    run_once(dir.path(), 5);
    fs::remove_file(layout.signer_state()).unwrap();

    let err = open_err(dir.path());
    match &err {
        LedgerError::SignerStateMissing { path, checkpoints } => {
            assert_eq!(*path, layout.signer_state());
            assert_eq!(*checkpoints, 1);
        }
        other => panic!("expected SignerStateMissing, got {other}"),
    }
    assert!(err.to_string().contains("signer.json"), "{err}");
    assert!(
        !layout.signer_state().exists(),
        "a failed open must not re-create the signer state"
    );
    assert!(matches!(
        verify_err(dir.path()),
        LedgerError::SignerStateMissing { .. }
    ));
}

#[test]
fn a_rolled_back_signer_state_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path());
    run_once(dir.path(), 5);
    let older = fs::read(layout.signer_state()).unwrap();
    run_once(dir.path(), 5);
    assert_eq!(checkpoint_count(&layout), 2);

    // An older copy, validly signed: only the log shows it is not the newest.
    fs::write(layout.signer_state(), &older).unwrap();
    let err = open_err(dir.path());
    match &err {
        LedgerError::SignerStateBehindLog {
            path,
            signer_size,
            log_size,
        } => {
            assert_eq!(*path, layout.signer_state());
            assert_eq!((*signer_size, *log_size), (6, 12));
        }
        other => panic!("expected SignerStateBehindLog, got {other}"),
    }
    assert!(err.to_string().contains("rolled back"), "{err}");
    assert_eq!(
        fs::read(layout.signer_state()).unwrap(),
        older,
        "left as found"
    );
    assert!(matches!(
        verify_err(dir.path()),
        LedgerError::SignerStateBehindLog { .. }
    ));
}

/// Rewrites the signer state with `edit` applied to its JSON.
fn edit_signer_state(layout: &Layout, edit: impl FnOnce(&mut Value)) {
    let mut state = signer_state(layout);
    edit(&mut state);
    fs::write(layout.signer_state(), serde_json::to_vec(&state).unwrap()).unwrap();
}

fn assert_unverified(dir: &Path, why: &str) {
    let err = open_err(dir);
    match &err {
        LedgerError::SignerStateUnverified { path, reason } => {
            assert_eq!(*path, Layout::new(dir).signer_state());
            assert!(reason.contains(why), "{err}");
        }
        other => panic!("expected SignerStateUnverified ({why}), got {other}"),
    }
}

#[test]
fn a_forged_or_edited_signer_state_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path());
    run_once(dir.path(), 5);
    let good = fs::read(layout.signer_state()).unwrap();

    // The size in the note raised, as if more had been signed: the signature breaks.
    edit_signer_state(&layout, |s| {
        let note = s["note"].as_str().unwrap().replacen("\n6\n", "\n7\n", 1);
        s["note"] = note.into();
    });
    assert_unverified(dir.path(), "invalid signature");
    assert!(matches!(
        verify_err(dir.path()),
        LedgerError::SignerStateUnverified { .. }
    ));

    // The signature lines removed.
    fs::write(layout.signer_state(), &good).unwrap();
    edit_signer_state(&layout, |s| {
        let note = s["note"].as_str().unwrap();
        let body = note.split("\n\n").next().unwrap();
        s["note"] = format!("{body}\n\n").into();
    });
    assert_unverified(dir.path(), "no signature");

    // A note signed by another key with the same name, claiming a larger tree.
    let other_dir = tempfile::tempdir().unwrap();
    let other = LedgerKey::load_or_create(&Layout::new(other_dir.path()), None).unwrap();
    let mut range = CompactRange::new();
    for i in 0..9u8 {
        range.push(gatehouse_ledger::merkle::leaf_hash(&[i]));
    }
    let forged = other
        .sign(&Checkpoint {
            origin: other.name().to_string(),
            size: 9,
            root: range.root(),
        })
        .unwrap();
    edit_signer_state(&layout, |s| {
        s["note"] = forged.note.clone().into();
        s["range"] = range.hashes().iter().map(hex::encode).collect();
    });
    assert_unverified(dir.path(), "not by the expected key");

    // The note intact but the compact range edited.
    fs::write(layout.signer_state(), &good).unwrap();
    edit_signer_state(&layout, |s| {
        s["range"][0] = hex::encode([7u8; 32]).into();
    });
    assert_unverified(dir.path(), "does not hash to the signed root");

    // Not JSON at all, or a format this version does not know.
    fs::write(layout.signer_state(), b"{\"version\":2,").unwrap();
    assert!(matches!(
        open_err(dir.path()),
        LedgerError::SignerStateUnreadable { .. }
    ));
    fs::write(layout.signer_state(), &good).unwrap();
    edit_signer_state(&layout, |s| s["version"] = 3.into());
    let err = open_err(dir.path());
    assert!(
        matches!(&err, LedgerError::SignerStateUnreadable { reason, .. } if reason.contains("version 3")),
        "{err}"
    );

    // The genuine state still opens, and nothing above changed the log or the entries.
    fs::write(layout.signer_state(), &good).unwrap();
    let (ledger, report) = Ledger::open(dir.path(), opts()).unwrap();
    assert_eq!(report.signed_size, 6);
    ledger.close().unwrap();
    verify(dir.path(), &TrustedKey::FromDataDir, &[], |_| {}).unwrap();
}

/// The version-1 state an older gatehouse wrote for the same tree: unsigned.
fn as_version_1(state: &Value) -> Value {
    let note = state["note"].as_str().unwrap();
    let body = note.split("\n\n").next().unwrap();
    let cp = Checkpoint::parse_body(&format!("{body}\n")).unwrap();
    json!({
        "origin": cp.origin,
        "size": cp.size,
        "root": hex::encode(cp.root),
        "range": state["range"],
    })
}

#[test]
fn an_unsigned_old_signer_state_migrates_only_when_a_signed_checkpoint_vouches_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path());
    run_once(dir.path(), 5);
    let older = as_version_1(&signer_state(&layout));
    run_once(dir.path(), 5);
    let newest = signer_state(&layout);

    // An old state for an older tree than the newest checkpoint: refused, left as is.
    fs::write(layout.signer_state(), serde_json::to_vec(&older).unwrap()).unwrap();
    assert_unverified(dir.path(), "old unsigned format");
    assert_eq!(signer_state(&layout), older);

    // An old state naming a tree beyond every checkpoint: refused (nothing vouches for it).
    let mut ahead = as_version_1(&newest);
    ahead["size"] = 13.into();
    fs::write(layout.signer_state(), serde_json::to_vec(&ahead).unwrap()).unwrap();
    assert_unverified(dir.path(), "old unsigned format");

    // The old state of the newest checkpoint: migrated to the signed form on open.
    let current = as_version_1(&newest);
    fs::write(layout.signer_state(), serde_json::to_vec(&current).unwrap()).unwrap();
    verify(dir.path(), &TrustedKey::FromDataDir, &[], |_| {}).unwrap();
    let (ledger, report) = Ledger::open(dir.path(), opts()).unwrap();
    assert_eq!(report.signed_size, 12);
    let migrated = signer_state(&layout);
    assert_eq!(migrated, newest, "the same tree, now as its signed note");
    ledger.close().unwrap();
    assert_eq!(signer_state(&layout)["version"], 2);
    assert_eq!(mode(&layout.signer_state()), 0o600);
    verify(dir.path(), &TrustedKey::FromDataDir, &[], |_| {}).unwrap();
}

#[test]
fn a_note_that_never_reached_the_log_is_appended_from_the_signer_state() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path());
    run_once(dir.path(), 5);
    run_once(dir.path(), 5);
    // A crash after the state was written but before its note was appended (a torn line).
    let log = fs::read_to_string(layout.checkpoints()).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    let torn = &lines[1][..lines[1].len() / 2];
    fs::write(layout.checkpoints(), format!("{}\n{torn}", lines[0])).unwrap();

    let (ledger, report) = Ledger::open(dir.path(), opts()).unwrap();
    assert_eq!(report.signed_size, 12);
    let appended = read_checkpoint_log(&layout.checkpoints())
        .unwrap()
        .0
        .pop()
        .unwrap()
        .1;
    assert_eq!(appended, signer_state(&layout)["note"].as_str().unwrap());
    assert_eq!(ledger.status().checkpoint.map(|c| c.note), Some(appended));
    ledger.close().unwrap();
    let summary = verify(dir.path(), &TrustedKey::FromDataDir, &[], |_| {}).unwrap();
    assert_eq!(summary.checkpoints, 3);
}

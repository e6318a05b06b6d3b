//! The tamper suite: each way of altering a real ledger directory is caught by
//! `gatehouse ledger verify`, which names what is wrong and where.
#![allow(clippy::unwrap_used)] // a test (or bench) that cannot go on fails by panicking

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;

/// A ledger written in three runs (so several checkpoints exist) with several segments.
fn ledger() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..3 {
        fill(dir.path(), 200);
    }
    let key = pubkey(dir.path());
    let out = verify(dir.path(), &key);
    assert!(
        out.status.success(),
        "fresh ledger must verify: {}",
        stderr(&out)
    );
    let summary = last_json(&out);
    assert_eq!(summary["ok"], true);
    assert_eq!(summary["entries"], summary["signed_entries"]);
    (dir, key)
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir.join("ledger/segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    out.sort();
    out
}

/// The data lines of a segment (without zero padding).
fn read_lines(path: &Path) -> Vec<Vec<u8>> {
    let bytes = fs::read(path).unwrap();
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    bytes[..end]
        .split_inclusive(|&b| b == b'\n')
        .map(|l| l.to_vec())
        .collect()
}

fn write_lines(path: &Path, lines: &[Vec<u8>]) {
    fs::write(path, lines.concat()).unwrap();
}

fn checkpoint_lines(dir: &Path) -> Vec<String> {
    fs::read_to_string(dir.join("ledger/checkpoints.log"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_checkpoint_lines(dir: &Path, lines: &[String]) {
    fs::write(dir.join("ledger/checkpoints.log"), lines.join("\n") + "\n").unwrap();
}

/// Runs verify and returns its error message, asserting it failed.
fn fails(dir: &Path, key: &str) -> String {
    let out = verify(dir, key);
    assert_eq!(
        out.status.code(),
        Some(1),
        "verify must fail; stdout: {}",
        stdout(&out)
    );
    let summary = last_json(&out);
    assert_eq!(summary["ok"], false);
    let message = summary["error"].as_str().unwrap().to_string();
    assert!(stderr(&out).contains(&message));
    message
}

#[test]
fn intact_ledger_reports_counts() {
    let (dir, key) = ledger();
    let summary = last_json(&verify(dir.path(), &key));
    // Three runs of 200 events plus a ledger.open entry each.
    assert_eq!(summary["entries"], 603);
    assert!(summary["checkpoints"].as_u64().unwrap() >= 3);
    assert_eq!(summary["key_source"], "given");
}

#[test]
fn a_modified_byte_is_caught() {
    let (dir, key) = ledger();
    let seg = &segments(dir.path())[1];
    let mut lines = read_lines(seg);
    let text = String::from_utf8(lines[3].clone()).unwrap();
    lines[3] = text.replacen("\"pad\":\"x", "\"pad\":\"y", 1).into_bytes();
    assert_ne!(lines[3], text.as_bytes());
    write_lines(seg, &lines);
    let message = fails(dir.path(), &key);
    assert!(
        message.contains("do not match the signed root"),
        "{message}"
    );
    assert!(message.contains("was modified"), "{message}");
}

#[test]
fn a_byte_that_breaks_the_json_is_located_exactly() {
    let (dir, key) = ledger();
    let seg = &segments(dir.path())[1];
    let mut lines = read_lines(seg);
    lines[2][0] = b'X';
    write_lines(seg, &lines);
    let message = fails(dir.path(), &key);
    assert!(message.contains("not a valid entry line"), "{message}");
    assert!(
        message.contains(&seg.file_name().unwrap().to_string_lossy().to_string()),
        "{message}"
    );
}

#[test]
fn a_deleted_entry_is_caught() {
    let (dir, key) = ledger();
    let seg = &segments(dir.path())[0];
    let mut lines = read_lines(seg);
    let removed = lines.remove(5);
    write_lines(seg, &lines);
    let message = fails(dir.path(), &key);
    assert!(String::from_utf8_lossy(&removed).contains("\"i\":5,"));
    assert!(
        message.contains("found entry index 6 where index 5 belongs"),
        "{message}"
    );
}

#[test]
fn reordered_entries_are_caught() {
    let (dir, key) = ledger();
    let seg = &segments(dir.path())[0];
    let mut lines = read_lines(seg);
    lines.swap(7, 8);
    write_lines(seg, &lines);
    let message = fails(dir.path(), &key);
    assert!(
        message.contains("found entry index 8 where index 7 belongs"),
        "{message}"
    );
}

#[test]
fn a_truncated_segment_is_caught() {
    let (dir, key) = ledger();
    let segs = segments(dir.path());
    let last = segs.last().unwrap();
    let lines = read_lines(last);
    // Cut in the middle of a line.
    let keep: usize = lines[..lines.len() - 3].iter().map(Vec::len).sum::<usize>() + 10;
    let bytes = fs::read(last).unwrap();
    fs::write(last, &bytes[..keep]).unwrap();
    let message = fails(dir.path(), &key);
    assert!(message.contains("partial entry"), "{message}");

    // Cut at a line boundary: the checkpoint still names the missing entries.
    let keep: usize = lines[..lines.len() - 3].iter().map(Vec::len).sum();
    fs::write(last, &bytes[..keep]).unwrap();
    let message = fails(dir.path(), &key);
    assert!(
        message.contains("signed a log of 603 entries but only 600"),
        "{message}"
    );
}

#[test]
fn a_deleted_segment_is_caught() {
    let (dir, key) = ledger();
    let segs = segments(dir.path());
    assert!(
        segs.len() >= 3,
        "need several segments, have {}",
        segs.len()
    );
    fs::remove_file(&segs[1]).unwrap();
    let message = fails(dir.path(), &key);
    assert!(message.contains("segment starts at index"), "{message}");
}

#[test]
fn a_forged_checkpoint_signature_is_caught() {
    let (dir, key) = ledger();
    let mut lines = checkpoint_lines(dir.path());
    let last = lines.len() - 1;
    // Claim a larger log under the old signature.
    lines[last] = lines[last].replacen("\\n603\\n", "\\n604\\n", 1);
    write_checkpoint_lines(dir.path(), &lines);
    let message = fails(dir.path(), &key);
    assert!(
        message.contains(&format!("checkpoints.log line {}", last + 1)),
        "{message}"
    );
    assert!(message.contains("invalid signature"), "{message}");
}

#[test]
fn a_missing_signature_is_caught() {
    let (dir, key) = ledger();
    let mut lines = checkpoint_lines(dir.path());
    let record: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    let note = record["note"].as_str().unwrap();
    let body = note.split("\n\n").next().unwrap();
    lines[0] = serde_json::json!({"note": format!("{body}\n\n")}).to_string();
    write_checkpoint_lines(dir.path(), &lines);
    let message = fails(dir.path(), &key);
    assert!(message.contains("checkpoints.log line 1"), "{message}");
    assert!(message.contains("no signature"), "{message}");
}

#[test]
fn a_checkpoint_from_another_key_is_caught() {
    let (dir, key) = ledger();
    let other = tempfile::tempdir().unwrap();
    fill(other.path(), 10);
    let foreign = checkpoint_lines(other.path()).pop().unwrap();
    let mut lines = checkpoint_lines(dir.path());
    lines.push(foreign);
    write_checkpoint_lines(dir.path(), &lines);
    let message = fails(dir.path(), &key);
    assert!(message.contains("not by the expected key"), "{message}");

    // Verifying against the wrong ledger's key fails at the first checkpoint.
    let (dir2, _) = ledger();
    let message = fails(dir2.path(), &pubkey(other.path()));
    assert!(message.contains("checkpoints.log line 1"), "{message}");
    assert!(message.contains("not by the expected key"), "{message}");
}

#[test]
fn a_rollback_is_caught() {
    let (dir, key) = ledger();
    // Reordered checkpoints: a smaller size after a larger one.
    let lines = checkpoint_lines(dir.path());
    let mut swapped = lines.clone();
    let n = swapped.len();
    swapped.swap(n - 1, n - 2);
    write_checkpoint_lines(dir.path(), &swapped);
    let message = fails(dir.path(), &key);
    assert!(message.contains("(rollback)"), "{message}");

    // Dropping the newest checkpoint together with the entries it alone covered: the
    // signer's own record still remembers how far it signed.
    let mut shorter = lines.clone();
    shorter.pop();
    write_checkpoint_lines(dir.path(), &shorter);
    let segs = segments(dir.path());
    let last = segs.last().unwrap();
    let mut seg_lines = read_lines(last);
    seg_lines.pop();
    write_lines(last, &seg_lines);
    let message = fails(dir.path(), &key);
    assert!(message.contains("rollback"), "{message}");
}

#[test]
fn verify_without_a_ledger_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&[
        "ledger",
        "verify",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no ledger here"), "{}", stderr(&out));
}

#[test]
fn a_history_rewritten_with_the_key_is_caught_by_an_earlier_checkpoint() {
    let (dir, key) = ledger();
    let record: serde_json::Value = serde_json::from_str(&checkpoint_lines(dir.path())[0]).unwrap();
    let kept = dir.path().join("kept-checkpoint.txt");
    fs::write(&kept, record["note"].as_str().unwrap()).unwrap();

    // An insider with the signing key throws the history away and writes a new one.
    for item in fs::read_dir(dir.path().join("ledger")).unwrap() {
        let path = item.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name == "signing.key" || name == "signing.pub" {
            continue;
        }
        if path.is_dir() {
            fs::remove_dir_all(&path).unwrap();
        } else {
            fs::remove_file(&path).unwrap();
        }
    }
    fill(dir.path(), 700);
    assert!(
        verify(dir.path(), &key).status.success(),
        "the rewritten ledger is self-consistent and genuinely signed"
    );

    let out = run(&[
        "ledger",
        "verify",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--pubkey",
        &key,
        "--checkpoint",
        kept.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let message = last_json(&out)["error"].as_str().unwrap().to_string();
    assert!(message.contains("checkpoint file"), "{message}");
    assert!(
        message.contains("do not match the signed root"),
        "{message}"
    );
}

#[test]
fn an_earlier_checkpoint_that_still_matches_is_counted() {
    let (dir, key) = ledger();
    let record: serde_json::Value = serde_json::from_str(&checkpoint_lines(dir.path())[0]).unwrap();
    let kept = dir.path().join("kept-checkpoint.txt");
    fs::write(&kept, record["note"].as_str().unwrap()).unwrap();
    fill(dir.path(), 50);
    let out = run(&[
        "ledger",
        "verify",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--pubkey",
        &key,
        "--checkpoint",
        kept.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(last_json(&out)["earlier_checkpoints"], 1);
}

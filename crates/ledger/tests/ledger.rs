//! The ledger end to end on real files: appends, group commit, rollover, checkpoints,
//! recovery of crash tails, and refusal to open damaged data.
#![allow(clippy::unwrap_used)] // a test (or bench) that cannot go on fails by panicking

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use gatehouse_core::{Durability, Event, EventKind};
use gatehouse_ledger::merkle::leaf_hash;
use gatehouse_ledger::segment::{list_segments, scan};
use gatehouse_ledger::{Layout, Ledger, LedgerError, LedgerOptions, TrustedKey, verify};
use serde_json::json;

fn opts() -> LedgerOptions {
    LedgerOptions {
        segment_size: 64 << 10,
        max_entry_size: 16 << 10,
        heartbeat_interval: None,
        ..LedgerOptions::default()
    }
}

fn event(n: u64) -> Event {
    Event::system(EventKind::Bench, json!({"n": n, "pad": "p".repeat(200)}))
}

/// Every entry line on disk, in order.
fn lines(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    scan(&Layout::new(dir), |e| {
        out.push(String::from_utf8(e.line.to_vec()).unwrap());
        Ok(())
    })
    .unwrap();
    out
}

fn kinds(dir: &Path) -> Vec<String> {
    lines(dir)
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn verify_ok(dir: &Path) -> gatehouse_ledger::VerifySummary {
    verify(dir, &TrustedKey::FromDataDir, &[], |_| {}).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_get_unique_receipts_that_match_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, report) = Ledger::open(dir.path(), opts()).unwrap();
    assert_eq!(report.entries, 0);
    let mut tasks = Vec::new();
    for w in 0..16u64 {
        let ledger = ledger.clone();
        tasks.push(tokio::spawn(async move {
            let mut receipts = Vec::new();
            for i in 0..50u64 {
                let durability = if i % 2 == 0 {
                    Durability::Sync
                } else {
                    Durability::Batched
                };
                receipts.push(
                    ledger
                        .append(&event(w * 1000 + i), durability)
                        .await
                        .unwrap(),
                );
            }
            receipts
        }));
    }
    let mut receipts = Vec::new();
    for t in tasks {
        receipts.extend(t.await.unwrap());
    }
    let closing = ledger.clone();
    tokio::task::spawn_blocking(move || closing.close())
        .await
        .unwrap()
        .unwrap();

    let on_disk = lines(dir.path());
    // ledger.open + 800 appends
    assert_eq!(on_disk.len(), 801);
    receipts.sort_by_key(|r| r.index);
    for (k, r) in receipts.iter().enumerate() {
        if k > 0 {
            assert!(
                r.index > receipts[k - 1].index,
                "duplicate index {}",
                r.index
            );
        }
        assert_eq!(leaf_hash(on_disk[r.index as usize].as_bytes()), r.leaf_hash);
    }
    // Small segments force several rollovers; the verifier still sees one log.
    assert!(list_segments(&Layout::new(dir.path())).unwrap().len() > 2);
    let summary = verify_ok(dir.path());
    assert_eq!(summary.entries, 801);
    assert_eq!(
        summary.signed_entries, 801,
        "the final checkpoint covers everything"
    );
    // Appending after close fails closed.
    assert!(matches!(
        ledger.append(&event(0), Durability::Sync).await,
        Err(LedgerError::Closed)
    ));
}

#[test]
fn reopen_continues_the_log_and_timestamps_never_go_back() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..3 {
        let (ledger, report) = Ledger::open(dir.path(), opts()).unwrap();
        assert!(!report.unclean_shutdown);
        for i in 0..20 {
            ledger
                .append_blocking(&event(round * 100 + i), Durability::Sync)
                .unwrap();
        }
        ledger.close().unwrap();
    }
    let all = lines(dir.path());
    assert_eq!(all.len(), 63);
    let mut last = 0;
    for (i, line) in all.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["i"], i as u64);
        let ts = v["ts"].as_u64().unwrap();
        assert!(ts >= last);
        last = ts;
    }
    assert_eq!(verify_ok(dir.path()).checkpoints, 3);
}

#[test]
fn a_second_writer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, _) = Ledger::open(dir.path(), opts()).unwrap();
    let err = Ledger::open(dir.path(), opts()).unwrap_err();
    assert!(matches!(err, LedgerError::Locked { .. }), "{err}");
    ledger.close().unwrap();
    let (again, _) = Ledger::open(dir.path(), opts()).unwrap();
    again.close().unwrap();
}

#[test]
fn oversized_entries_are_refused_before_sequencing() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, _) = Ledger::open(dir.path(), opts()).unwrap();
    let big = Event::system(EventKind::Bench, json!({"pad": "x".repeat(20 << 10)}));
    let err = ledger.append_blocking(&big, Durability::Sync).unwrap_err();
    assert!(matches!(err, LedgerError::EntryTooLarge { .. }), "{err}");
    ledger.append_blocking(&event(1), Durability::Sync).unwrap();
    ledger.close().unwrap();
    assert_eq!(verify_ok(dir.path()).entries, 2);
}

#[test]
fn checkpoints_and_heartbeats_come_on_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let options = LedgerOptions {
        checkpoint_interval: Duration::from_millis(50),
        heartbeat_interval: Some(Duration::from_millis(100)),
        ..opts()
    };
    let (ledger, _) = Ledger::open(dir.path(), options).unwrap();
    for i in 0..5 {
        ledger
            .append_blocking(&event(i), Durability::Batched)
            .unwrap();
        std::thread::sleep(Duration::from_millis(80));
    }
    // Without any close or explicit request, checkpoints were signed while the log grew.
    let status = ledger.status();
    let cp = status
        .checkpoint
        .expect("a checkpoint was signed by the timer");
    assert!(cp.checkpoint.size >= 3, "size {}", cp.checkpoint.size);
    // The batched window flushes everything by itself. The timer's own heartbeats keep
    // arriving, so one may be sequenced but not yet flushed at any given look: wait for a
    // moment when nothing is pending, which comes within a window or two.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        let status = ledger.status();
        if status.durable_size == status.size {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the batched window did not flush: {} of {} durable",
            status.durable_size,
            status.size
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(250));
    ledger.close().unwrap();
    let kinds = kinds(dir.path());
    assert!(
        kinds.iter().filter(|k| *k == "heartbeat").count() >= 3,
        "{kinds:?}"
    );
    assert!(verify_ok(dir.path()).checkpoints >= 3);
}

#[test]
fn chunks_are_verified_with_their_entries() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, _) = Ledger::open(dir.path(), opts()).unwrap();
    let chunk = gatehouse_ledger::chunks::put_chunk(ledger.layout(), b"masked rows").unwrap();
    let mut e = event(1);
    e.chunks.push(chunk.clone());
    ledger.append_blocking(&e, Durability::Sync).unwrap();
    ledger.close().unwrap();
    assert_eq!(verify_ok(dir.path()).chunks, 1);

    let path = Layout::new(dir.path()).chunk(&chunk.sha256);
    fs::write(&path, b"masked rowz").unwrap();
    let err = verify(dir.path(), &TrustedKey::FromDataDir, &[], |_| {}).unwrap_err();
    assert!(err.to_string().contains("entry 1: chunk"), "{err}");
    fs::remove_file(&path).unwrap();
    let err = verify(dir.path(), &TrustedKey::FromDataDir, &[], |_| {}).unwrap_err();
    assert!(err.to_string().contains("entry 1: chunk"), "{err}");
}

/// Appends the bytes a crash can leave behind to the end of the last segment's data.
fn tear_tail(dir: &Path, garbage: &[u8]) {
    let layout = Layout::new(dir);
    let end = scan(&layout, |_| Ok(())).unwrap();
    let (seg, offset, _) = end.last_segment.unwrap();
    let mut file = fs::OpenOptions::new().write(true).open(&seg.path).unwrap();
    use std::io::Seek;
    file.seek(std::io::SeekFrom::Start(offset)).unwrap();
    file.write_all(garbage).unwrap();
}

/// Marks the last run as not cleanly shut down, as a kill -9 would leave it.
fn mark_unclean(dir: &Path) {
    let path = Layout::new(dir).run_state();
    fs::write(path, br#"{"clean":false,"pid":1,"at_us":1}"#).unwrap();
}

#[test]
fn a_torn_tail_is_cut_and_the_cut_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, _) = Ledger::open(dir.path(), opts()).unwrap();
    for i in 0..10 {
        ledger.append_blocking(&event(i), Durability::Sync).unwrap();
    }
    ledger.close().unwrap();
    tear_tail(dir.path(), br#"{"v":1,"i":11,"ts":17000000000000"#);
    mark_unclean(dir.path());
    let err = verify(dir.path(), &TrustedKey::FromDataDir, &[], |_| {}).unwrap_err();
    assert!(err.to_string().contains("partial entry"), "{err}");

    let (ledger, report) = Ledger::open(dir.path(), opts()).unwrap();
    assert!(report.unclean_shutdown);
    let (_, _, bytes) = report.truncated.clone().expect("the tail was cut");
    assert_eq!(bytes as usize, r#"{"v":1,"i":11,"ts":17000000000000"#.len());
    ledger.close().unwrap();
    let all = lines(dir.path());
    let recovery: serde_json::Value = serde_json::from_str(&all[11]).unwrap();
    assert_eq!(recovery["kind"], "ledger.recovery");
    assert_eq!(recovery["data"]["truncated"]["bytes"], bytes);
    assert_eq!(recovery["data"]["unclean_shutdown"], true);
    assert_eq!(verify_ok(dir.path()).entries, 13);
}

#[test]
fn damage_in_the_middle_is_never_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, _) = Ledger::open(dir.path(), opts()).unwrap();
    for i in 0..10 {
        ledger.append_blocking(&event(i), Durability::Sync).unwrap();
    }
    ledger.close().unwrap();
    let layout = Layout::new(dir.path());
    let seg = &list_segments(&layout).unwrap()[0];
    let mut bytes = fs::read(&seg.path).unwrap();
    // Break the JSON of entry 3 (not the last one).
    let third = bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(2)
        .unwrap()
        .0
        + 1;
    bytes[third] = b'[';
    fs::write(&seg.path, &bytes).unwrap();
    let before = fs::read(&seg.path).unwrap();
    let err = Ledger::open(dir.path(), opts()).unwrap_err();
    assert!(err.to_string().contains("not a crash tail"), "{err}");
    assert_eq!(fs::read(&seg.path).unwrap(), before, "nothing was cut");
}

#[test]
fn entries_changed_under_the_signer_stop_the_ledger_from_opening() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, _) = Ledger::open(dir.path(), opts()).unwrap();
    for i in 0..5 {
        ledger.append_blocking(&event(i), Durability::Sync).unwrap();
    }
    ledger.close().unwrap();
    let layout = Layout::new(dir.path());
    let seg = &list_segments(&layout).unwrap()[0];
    let text = fs::read(&seg.path).unwrap();
    let changed = String::from_utf8_lossy(&text).replacen("\"n\":3", "\"n\":4", 1);
    fs::write(&seg.path, changed.as_bytes()).unwrap();
    let err = Ledger::open(dir.path(), opts()).unwrap_err();
    assert!(
        err.to_string().contains("no longer hash to the root"),
        "{err}"
    );
}

/// Retention: old segments keep only their leaf hashes; the pruning is an entry of its
/// own; every checkpoint and proof made before still verifies, the ledger reopens, and the
/// recorded data only the pruned entries used is gone.
#[test]
fn pruning_keeps_the_tree_and_every_checkpoint_verifiable() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path());
    let (ledger, _) = Ledger::open(dir.path(), opts()).unwrap();
    let chunk = |text: &str| gatehouse_ledger::chunks::put_chunk(&layout, text.as_bytes()).unwrap();
    // Old entries, two of them with recorded data: one only they use, one shared with a
    // later entry.
    let (old_only, shared) = (chunk("old rows"), chunk("shared rows"));
    for n in 0..600 {
        let mut e = event(n);
        if n == 10 {
            e.chunks = vec![old_only.clone(), shared.clone()];
        }
        ledger.append_blocking(&e, Durability::Batched).unwrap();
    }
    let early = ledger.close().unwrap().expect("a checkpoint").note;
    let (ledger, _) = Ledger::open(dir.path(), opts()).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    let cutoff = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let mut later = event(1000);
    later.chunks = vec![shared.clone()];
    ledger.append_blocking(&later, Durability::Sync).unwrap();
    for n in 0..300 {
        ledger
            .append_blocking(&event(2000 + n), Durability::Batched)
            .unwrap();
    }
    let before = lines(dir.path());

    let plan = ledger
        .prune(cutoff, "test")
        .unwrap()
        .expect("segments old enough");
    assert_eq!(plan.first, 0);
    assert!(plan.end > 100 && plan.end <= 602, "{plan:?}");
    assert_eq!(
        plan.chunks,
        vec![old_only.sha256.clone()],
        "the shared chunk stays"
    );
    assert!(!layout.chunk(&old_only.sha256).exists());
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(layout.pruned(0)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "a pruned segment is private too");
    }
    assert!(layout.chunk(&shared.sha256).exists());
    // Nothing more is old enough: a second pruning does nothing.
    assert!(ledger.prune(cutoff, "test").unwrap().is_none());
    ledger.close().unwrap();

    // The pruned entries are gone from reads, their place is not; the pruning is recorded.
    let after = lines(dir.path());
    let kept = before.len() - plan.end as usize;
    assert_eq!(after[..kept], before[plan.end as usize..]);
    let prune_entry = after
        .iter()
        .find(|l| l.contains("\"kind\":\"ledger.prune\""))
        .expect("a ledger.prune entry");
    assert!(
        prune_entry.contains(&format!("\"end\":{}", plan.end)),
        "{prune_entry}"
    );
    let summary = verify(
        dir.path(),
        &TrustedKey::FromDataDir,
        &[gatehouse_ledger::EarlierCheckpoint {
            label: "the checkpoint from before".into(),
            note: early,
        }],
        |_| {},
    )
    .unwrap();
    assert_eq!(summary.pruned_entries, plan.end);
    assert_eq!(summary.entries, plan.end + after.len() as u64);

    // Proofs: a kept entry's still works, a pruned one's says so.
    let proof = gatehouse_ledger::prove_inclusion(dir.path(), plan.end + 5).unwrap();
    let vkey = fs::read_to_string(layout.verifier_key()).unwrap();
    gatehouse_ledger::check_inclusion(&proof, vkey.trim()).unwrap();
    let err = gatehouse_ledger::prove_inclusion(dir.path(), 3)
        .unwrap_err()
        .to_string();
    assert!(err.contains("pruned by retention"), "{err}");

    // The ledger reopens on the pruned tree and goes on.
    let (ledger, report) = Ledger::open(dir.path(), opts()).unwrap();
    assert_eq!(report.entries, summary.entries);
    ledger.append_blocking(&event(9), Durability::Sync).unwrap();
    ledger.close().unwrap();
    assert_eq!(verify_ok(dir.path()).pruned_entries, plan.end);

    // A pruned file with a changed hash fails verification.
    let pruned = layout.pruned(0);
    let mut bytes = fs::read(&pruned).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&pruned, bytes).unwrap();
    assert!(verify(dir.path(), &TrustedKey::FromDataDir, &[], |_| {}).is_err());
}

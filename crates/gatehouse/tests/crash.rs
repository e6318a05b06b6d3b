//! Crash safety: kill -9 the writer at random moments; after each, a restart recovers,
//! `verify` passes, and every acknowledged entry is on disk with the acknowledged hash.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::thread::sleep;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use gatehouse_ledger::Layout;
use gatehouse_ledger::merkle::leaf_hash;
use gatehouse_ledger::segment::scan;

/// A small deterministic generator, seeded from the clock and printed, so a failing
/// schedule can be replayed with `GATEHOUSE_CRASH_SEED`.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

/// Leaf hashes of every entry on disk, by index.
fn leaves(dir: &Path) -> Vec<[u8; 32]> {
    let mut out = Vec::new();
    scan(&Layout::new(dir), |e| {
        out.push(leaf_hash(e.line));
        Ok(())
    })
    .unwrap();
    out
}

/// `index leaf` pairs from the ack log; a torn last line (killed mid-write) is skipped.
fn acknowledged(path: &Path) -> HashMap<u64, String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => "",
    };
    complete
        .lines()
        .map(|l| {
            let (i, h) = l.split_once(' ').unwrap();
            (i.parse().unwrap(), h.to_string())
        })
        .collect()
}

fn crash_rounds(durability: &str, rounds: u64, rng: &mut Lcg) {
    let dir = tempfile::tempdir().unwrap();
    let acks = dir.path().join("acks.log");
    let data = dir.path().join("data");
    let mut started_rounds = 0;
    for round in 0..rounds {
        let mut child = gatehouse()
            .args([
                "ledger",
                "bench",
                "--data-dir",
                data.to_str().unwrap(),
                "--events",
                "10000000",
                "--concurrency",
                "16",
                "--size",
                "256",
                "--segment-size",
                "1048576",
                "--durability",
                durability,
                "--ack-log",
                acks.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let child_err = child.stderr.take().unwrap();
        let (opened_tx, opened) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(child_err).lines().map_while(Result::ok) {
                if line.starts_with("ledger bench: opened") {
                    let _ = opened_tx.send(());
                }
            }
        });
        if round % 4 == 3 {
            // Sometimes strike early: during startup, recovery or the first appends.
            sleep(Duration::from_millis(rng.next(150)));
        } else {
            opened
                .recv_timeout(Duration::from_secs(60))
                .expect("bench opened the ledger");
            started_rounds += 1;
            sleep(Duration::from_millis(5 + rng.next(400)));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let out = run(&["ledger", "recover", "--data-dir", data.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "round {round}: recover failed: {}",
            stderr(&out)
        );
        let report = last_json(&out);
        let out = verify(&data, &pubkey(&data));
        assert!(
            out.status.success(),
            "round {round}: verify failed: {}",
            stderr(&out)
        );

        let on_disk = leaves(&data);
        let acked = acknowledged(&acks);
        for (index, hash) in &acked {
            let found = on_disk.get(*index as usize).map(hex::encode);
            assert_eq!(
                found.as_ref(),
                Some(hash),
                "round {round}: acknowledged entry {index} lost"
            );
        }
        eprintln!(
            "{durability} round {round}: {} entries, {} acknowledged so far, recovery {report}",
            on_disk.len(),
            acked.len()
        );
    }
    // Every crash left a recovery entry naming the unclean shutdown.
    let mut recoveries = 0;
    scan(&Layout::new(&data), |e| {
        if e.header.kind == "ledger.recovery" {
            let v: serde_json::Value = serde_json::from_slice(e.line).unwrap();
            assert_eq!(v["data"]["unclean_shutdown"], true);
            recoveries += 1;
        }
        Ok(())
    })
    .unwrap();
    // Every kill after the ledger opened left an unclean run to recover (an early kill may
    // strike before the run was marked as started).
    assert!(
        recoveries >= started_rounds,
        "only {recoveries} recoveries for {started_rounds} crashes after open"
    );
    assert!(
        !acknowledged(&acks).is_empty(),
        "the writer never got to acknowledge anything"
    );
}

#[test]
fn kill_9_at_random_moments_loses_no_acknowledged_entry() {
    let seed = std::env::var("GATEHOUSE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("crash schedule seed: {seed} (set GATEHOUSE_CRASH_SEED to replay)");
    let mut rng = Lcg(seed);
    crash_rounds("sync", 12, &mut rng);
    crash_rounds("batched", 8, &mut rng);
}

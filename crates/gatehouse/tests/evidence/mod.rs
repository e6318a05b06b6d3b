//! The auditor's evidence drawn from a real gateway's ledger with the real CLI: bundles
//! exported for several filters and verified offline, each kind of tampering caught and
//! named, OCSF events traced back to their entries, and the HTML report opened in headless
//! Chromium with its figures checked against the ledger.

use std::path::Path;

use gatehouse_testkit::browser::{chromium, element_text, figure, run_chromium};
use serde_json::Value;

use crate::common::*;

/// Every entry of the ledger in `data`: index, leaf hash (hex), the entry.
fn ledger(data: &Path) -> Vec<(u64, String, Value)> {
    crate::entries(data)
        .into_iter()
        .map(|(i, leaf, v)| (i, hex::encode(leaf), v))
        .collect()
}

/// Whether an entry concerns `user`: they acted, they failed to sign in under that name,
/// or a decision was taken on their request.
fn concerns(v: &Value, user: &str) -> bool {
    v["actor"]["id"] == user
        || (v["kind"] == "auth.failure" && v["data"]["user"] == user)
        || (v["kind"] == "approval.decision" && v["data"]["requester"] == user)
}

fn rfc3339(us: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros(us);
    humantime::format_rfc3339_micros(t).to_string()
}

pub(crate) fn check_evidence(data: &Path) {
    let work = data.parent().unwrap().join("evidence");
    std::fs::create_dir_all(&work).unwrap();
    let key = pubkey(data);
    let all = ledger(data);
    check_bundles(data, &work, &key, &all);
    check_tampering(data, &work, &key, &all);
    check_ocsf(data, &all);
    check_report(data, &work, &all);
}

/// Which entries a filter should take.
type Takes = Box<dyn Fn(&Value) -> bool>;

/// Each filter's bundle verifies and holds exactly the entries the filter takes, counted
/// here from the ledger.
fn check_bundles(data: &Path, work: &Path, key: &str, all: &[(u64, String, Value)]) {
    let middle = all[all.len() / 2].2["ts"].as_u64().unwrap();
    let mid = rfc3339(middle);
    let filters: Vec<(Vec<&str>, Takes)> = vec![
        (vec![], Box::new(|_| true)),
        (vec!["--user", "alice"], Box::new(|v| concerns(v, "alice"))),
        (
            vec!["--resource", "pg-short"],
            Box::new(|v| v["resource"]["name"] == "pg-short"),
        ),
        (
            vec!["--since", &mid, "--user", "bob"],
            Box::new(move |v| v["ts"].as_u64().unwrap() >= middle && concerns(v, "bob")),
        ),
        (
            vec!["--until", &mid, "--resource", "pg"],
            Box::new(move |v| v["ts"].as_u64().unwrap() < middle && v["resource"]["name"] == "pg"),
        ),
    ];
    for (n, (filter, takes)) in filters.iter().enumerate() {
        let file = work.join(format!("bundle-{n}.jsonl"));
        let out = audit_export(data, &file, filter);
        assert!(out.status.success(), "{filter:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("bundle: entries"), "{}", stderr(&out));
        let out = verify_export(&file, key);
        assert!(out.status.success(), "{filter:?}: {}", stdout(&out));
        let v = last_json(&out);
        let matched = all.iter().filter(|(_, _, e)| takes(e)).count() as u64;
        assert_eq!(v["counts"]["matched"], matched, "{filter:?}: {v}");
        assert!(v["window_complete"] == true, "{filter:?}: {v}");
        assert_eq!(v["checkpoint_size"], all.len() as u64, "{v}");
    }
    // The readable form says what was proven.
    let out = run(&[
        "audit",
        "verify-export",
        work.join("bundle-1.jsonl").to_str().unwrap(),
        "--pubkey",
        key,
    ]);
    let said = stdout(&out);
    assert!(
        out.status.success() && said.starts_with("verified: "),
        "{said}"
    );
    assert!(said.contains("window: complete"), "{said}");
}

/// Every tampering the issue names fails verification with a message naming it.
fn check_tampering(data: &Path, work: &Path, key: &str, all: &[(u64, String, Value)]) {
    // The whole window: it holds vic's session, whose rows were recorded.
    let good = work.join("bundle-0.jsonl");
    let text = std::fs::read_to_string(&good).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let fails = |name: &str, changed: Vec<String>, words: &str, with_key: &str| {
        let file = work.join(format!("tampered-{name}.jsonl"));
        std::fs::write(&file, changed.join("\n") + "\n").unwrap();
        let out = verify_export(&file, with_key);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", stdout(&out));
        let error = last_json(&out)["error"].as_str().unwrap().to_string();
        assert!(
            error.contains(words),
            "{name}: {error:?} should say {words:?}"
        );
        // The readable form names it too.
        let out = run(&[
            "audit",
            "verify-export",
            file.to_str().unwrap(),
            "--pubkey",
            with_key,
        ]);
        assert!(stderr(&out).starts_with("FAILED: "), "{}", stderr(&out));
    };
    let owned = || lines.iter().map(|l| l.to_string()).collect::<Vec<_>>();
    let drop_t1 = all
        .iter()
        .find(|(_, _, v)| v["kind"] == "command" && v["data"]["sql"] == "DROP TABLE t1")
        .unwrap()
        .0;
    let at = |i: u64| {
        lines
            .iter()
            .position(|l| l.contains(&format!("{{\\\"v\\\":1,\\\"i\\\":{i},")))
            .unwrap()
    };

    let mut dropped = owned();
    dropped.remove(at(drop_t1));
    fails(
        "dropped",
        dropped,
        &format!("entry {drop_t1} is missing"),
        key,
    );

    let mut changed = owned();
    changed[at(drop_t1)] = changed[at(drop_t1)].replace("DROP TABLE t1", "DROP TABLE x1");
    fails(
        "changed",
        changed,
        &format!("entry {drop_t1} was changed"),
        key,
    );

    // An older checkpoint of the same ledger, validly signed, put in the newest's place.
    let log = std::fs::read_to_string(data.join("ledger/checkpoints.log")).unwrap();
    let older: Value = serde_json::from_str(log.lines().nth(1).unwrap()).unwrap();
    let mut swapped = owned();
    swapped[1] = serde_json::json!({"checkpoint": older["note"]}).to_string();
    fails("swapped", swapped, "checkpoint was swapped", key);

    let chunk = lines
        .iter()
        .position(|l| l.starts_with("{\"chunk\""))
        .expect("the sessions' result data is in the bundle");
    let mut record: Value = serde_json::from_str(lines[chunk]).unwrap();
    let data_b64 = record["chunk"]["data"].as_str().unwrap().to_string();
    let flipped = if data_b64.starts_with('A') { "B" } else { "A" };
    record["chunk"]["data"] = format!("{flipped}{}", &data_b64[1..]).into();
    let mut chunked = owned();
    chunked[chunk] = record.to_string();
    fails("chunk", chunked, "was changed", key);

    // Another ledger's key does not vouch for this one.
    let other = work.join("other-ledger");
    fill(&other, 10);
    fails("key", owned(), "does not verify", &pubkey(&other));
}

/// OCSF events: one per mappable entry the filter takes, each naming its entry by index
/// and leaf hash, with consistent class and type ids.
fn check_ocsf(data: &Path, all: &[(u64, String, Value)]) {
    let out = run(&[
        "audit",
        "export",
        "--data-dir",
        data.to_str().unwrap(),
        "--format",
        "ocsf",
        "--user",
        "alice",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let events: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut classes = std::collections::BTreeSet::new();
    for e in &events {
        let index: u64 = e["metadata"]["uid"].as_str().unwrap().parse().unwrap();
        let (_, leaf, entry) = &all[index as usize];
        assert_eq!(
            e["unmapped"]["gatehouse"]["leaf"].as_str(),
            Some(leaf.as_str())
        );
        assert!(concerns(entry, "alice"), "{entry}");
        let class = e["class_uid"].as_u64().unwrap();
        assert_eq!(e["category_uid"].as_u64().unwrap(), class / 1000);
        assert_eq!(
            e["type_uid"].as_u64().unwrap(),
            class * 100 + e["activity_id"].as_u64().unwrap()
        );
        assert_eq!(e["metadata"]["version"], "1.3.0");
        assert_eq!(
            e["time"].as_u64().unwrap(),
            entry["ts"].as_u64().unwrap() / 1000
        );
        classes.insert(class);
    }
    // Sign-ins, statements and approvals are all there.
    for class in [3002, 6005, 3005] {
        assert!(classes.contains(&class), "no class {class} in {classes:?}");
    }
    let commands = all
        .iter()
        .filter(|(_, _, v)| v["kind"] == "command" && concerns(v, "alice"))
        .count();
    let datastore = events
        .iter()
        .filter(|e| e["class_uid"] == 6005 && e["unmapped"]["gatehouse"]["kind"] == "command")
        .count();
    assert_eq!(datastore, commands);
}

/// The report, opened in headless Chromium: verified, with the ledger's figures; and a
/// report on a ledger altered on disk is marked failed.
fn check_report(data: &Path, work: &Path, all: &[(u64, String, Value)]) {
    let page = work.join("report.html");
    let out = run(&[
        "audit",
        "report",
        "--data-dir",
        data.to_str().unwrap(),
        "-o",
        page.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let Some(browser) = chromium("evidence report") else {
        return;
    };
    let dom = run_chromium(&browser, work, &["--dump-dom".to_string()], &page);
    assert_eq!(element_text(&dom, "verification-status"), "VERIFIED");
    let count = |kind: &str| all.iter().filter(|(_, _, v)| v["kind"] == kind).count() as u64;
    assert_eq!(figure(&dom, "statements-count"), count("command"));
    assert_eq!(
        figure(&dom, "approval-requests-count"),
        count("approval.request")
    );
    assert_eq!(figure(&dom, "auth-failures-count"), count("auth.failure"));
    let sessions: std::collections::BTreeSet<&str> = all
        .iter()
        .filter_map(|(_, _, v)| v["session"].as_str())
        .collect();
    assert_eq!(figure(&dom, "sessions-count"), sessions.len() as u64);
    let shot = work.join("report.png");
    run_chromium(
        &browser,
        work,
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,2000".to_string(),
        ],
        &page,
    );
    assert!(std::fs::metadata(&shot).unwrap().len() > 30_000);

    // The same ledger with one statement rewritten on disk.
    let copy = work.join("altered");
    assert!(
        std::process::Command::new("cp")
            .args(["-r", data.to_str().unwrap(), copy.to_str().unwrap()])
            .status()
            .unwrap()
            .success()
    );
    let segments = copy.join("ledger/segments");
    for seg in std::fs::read_dir(&segments).unwrap() {
        let path = seg.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        if let Some(at) = bytes.windows(13).position(|w| w == b"DROP TABLE t1") {
            bytes[at + 11] = b'x';
            std::fs::write(&path, &bytes).unwrap();
        }
    }
    let altered = work.join("report-altered.html");
    let out = run(&[
        "audit",
        "report",
        "--data-dir",
        copy.to_str().unwrap(),
        "-o",
        altered.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("does not verify"), "{}", stderr(&out));
    let dom = run_chromium(&browser, work, &["--dump-dom".to_string()], &altered);
    assert!(dom.contains("VERIFICATION FAILED"));
}

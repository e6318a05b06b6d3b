//! Helpers shared by the integration tests: run the real `gatehouse` binary.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

pub(crate) fn gatehouse() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    cmd.env_remove("RUST_LOG");
    cmd
}

pub(crate) fn run(args: &[&str]) -> Output {
    gatehouse().args(args).output().expect("running gatehouse")
}

pub(crate) fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The last line of stdout parsed as JSON.
pub(crate) fn last_json(out: &Output) -> serde_json::Value {
    let text = stdout(out);
    let line = text
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no output; stderr: {}", stderr(out)));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// Writes `events` synthetic entries into the ledger at `dir` with the bench command.
pub(crate) fn fill(dir: &Path, events: u64) {
    let out = run(&[
        "ledger",
        "bench",
        "--data-dir",
        dir.to_str().unwrap(),
        "--events",
        &events.to_string(),
        "--concurrency",
        "4",
        "--size",
        "300",
        "--segment-size",
        "65536",
    ]);
    assert!(out.status.success(), "bench failed: {}", stderr(&out));
}

pub(crate) fn pubkey(dir: &Path) -> String {
    let out = run(&["ledger", "pubkey", "--data-dir", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).trim().to_string()
}

pub(crate) fn verify(dir: &Path, key: &str) -> Output {
    run(&[
        "ledger",
        "verify",
        "--data-dir",
        dir.to_str().unwrap(),
        "--pubkey",
        key,
    ])
}

/// `gatehouse audit export` of `data` into `file` (a bundle unless `extra` says otherwise).
pub(crate) fn audit_export(data: &Path, file: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "audit",
        "export",
        "--data-dir",
        data.to_str().unwrap(),
        "-o",
        file.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run(&args)
}

/// `gatehouse audit verify-export FILE --pubkey KEY --json`.
pub(crate) fn verify_export(file: &Path, key: &str) -> Output {
    run(&[
        "audit",
        "verify-export",
        file.to_str().unwrap(),
        "--pubkey",
        key,
        "--json",
    ])
}

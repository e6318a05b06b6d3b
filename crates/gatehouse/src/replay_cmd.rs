//! `gatehouse replay`: a recorded session told again, offline from the ledger.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use gatehouse_core::ChunkRef;
use gatehouse_ledger::Layout;
use serde_json::Value;

use crate::cli::ReplayArgs;

pub(crate) async fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    if let Some(speed) = args.speed
        && !(speed.is_finite() && speed > 0.0)
    {
        anyhow::bail!("--speed must be a positive number (1 = real time), not {speed}");
    }
    let layout = ledger_in(&args.data_dir)?;
    let wanted = args.session.clone();
    let scanned = tokio::task::spawn_blocking(move || read(&layout, wanted.as_deref())).await??;
    let Some(session) = args.session else {
        list(&scanned.sessions);
        return Ok(ExitCode::SUCCESS);
    };
    if scanned.entries.is_empty() {
        eprintln!(
            "gatehouse replay: no session {session} in {} (run `gatehouse replay --data-dir {}` to list them)",
            args.data_dir.display(),
            args.data_dir.display()
        );
        return Ok(ExitCode::from(1));
    }
    let replay = gatehouse_audit::replay(&session, &scanned.entries, &scanned.results);
    let mut last = 0;
    for step in &replay.steps {
        if let Some(speed) = args.speed {
            let gap = step.offset_us.saturating_sub(last) as f64 / speed;
            tokio::time::sleep(Duration::from_micros(gap as u64)).await;
            last = step.offset_us;
        }
        let one = gatehouse_audit::Replay {
            session: session.clone(),
            steps: vec![step.clone()],
        };
        crate::write_stdout(&one.render());
    }
    for problem in &scanned.problems {
        eprintln!("gatehouse replay: {problem}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The ledger in `data_dir`, which must hold one.
pub(crate) fn ledger_in(data_dir: &std::path::Path) -> anyhow::Result<Layout> {
    let layout = Layout::new(data_dir);
    if !layout.root().exists() {
        anyhow::bail!(
            "{}: no ledger here (pass the gateway's data directory with --data-dir)",
            data_dir.display()
        );
    }
    Ok(layout)
}

/// What a scan of the ledger found.
struct Scanned {
    /// The wanted session's entries, in order.
    entries: Vec<Value>,
    /// Recorded result bytes by command entry index.
    results: BTreeMap<u64, Vec<u8>>,
    /// Every session: id, first entry (session.start or the first seen), commands.
    sessions: BTreeMap<String, (Value, u64)>,
    /// Chunks that could not be read (the replay shows the rest).
    problems: Vec<String>,
}

fn read(layout: &Layout, wanted: Option<&str>) -> anyhow::Result<Scanned> {
    let mut scanned = Scanned {
        entries: Vec::new(),
        results: BTreeMap::new(),
        sessions: BTreeMap::new(),
        problems: Vec::new(),
    };
    gatehouse_ledger::segment::scan(layout, |e| {
        let v: Value = serde_json::from_slice(e.line).unwrap_or(Value::Null);
        let Some(session) = v["session"].as_str() else {
            return Ok(());
        };
        let seen = scanned
            .sessions
            .entry(session.to_string())
            .or_insert_with(|| (v.clone(), 0));
        if v["kind"] == "command" {
            seen.1 += 1;
        }
        if wanted == Some(session) {
            scanned.entries.push(v);
        }
        Ok(())
    })
    .context("reading the ledger")?;
    for entry in scanned.entries.iter().filter(|e| e["kind"] == "recording") {
        let Some(chunk) = entry["chunks"]
            .get(0)
            .and_then(|c| serde_json::from_value::<ChunkRef>(c.clone()).ok())
        else {
            continue;
        };
        let bytes = match gatehouse_ledger::chunks::read_chunk(layout, &chunk) {
            Ok(bytes) => bytes,
            Err(e) => {
                scanned.problems.push(e);
                continue;
            }
        };
        for part in entry["data"]["parts"].as_array().into_iter().flatten() {
            let n = |i: usize| part.get(i).and_then(Value::as_u64).unwrap_or(0);
            let (command, offset, len) = (n(0), n(1) as usize, n(2) as usize);
            if let Some(slice) = bytes.get(offset..offset + len) {
                scanned
                    .results
                    .entry(command)
                    .or_default()
                    .extend_from_slice(slice);
            }
        }
    }
    Ok(scanned)
}

fn list(sessions: &BTreeMap<String, (Value, u64)>) {
    if sessions.is_empty() {
        outln!("no sessions recorded");
        return;
    }
    let width =
        |f: &dyn Fn(&Value) -> usize| sessions.values().map(|(v, _)| f(v)).max().unwrap_or(0);
    let who = width(&|v| v["actor"]["id"].as_str().map_or(1, str::len)).max(8);
    let res = width(&|v| v["resource"]["name"].as_str().map_or(1, str::len)).max(8);
    outln!(
        "{:<20} {:<who$} {:<res$} {:>8}  STARTED",
        "SESSION",
        "IDENTITY",
        "RESOURCE",
        "COMMANDS"
    );
    for (id, (first, commands)) in sessions {
        let started = first["ts"].as_u64().map_or("?".to_string(), |us| {
            humantime::format_rfc3339_millis(
                std::time::UNIX_EPOCH + std::time::Duration::from_micros(us),
            )
            .to_string()
        });
        outln!(
            "{:<20} {:<who$} {:<res$} {:>8}  {}",
            id,
            first["actor"]["id"].as_str().unwrap_or("?"),
            first["resource"]["name"].as_str().unwrap_or("?"),
            commands,
            started
        );
    }
}

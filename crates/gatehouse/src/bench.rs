//! `gatehouse ledger bench`: many concurrent writers appending through the real durable
//! path, reporting throughput and acknowledgement latency.

use std::fs::OpenOptions;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gatehouse_core::{Durability, Event, EventKind};
use gatehouse_ledger::{Ledger, LedgerOptions};
use serde_json::json;

use crate::cli::{BenchArgs, DurabilityArg};

pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.events > 0, "--events must be at least 1");
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    anyhow::ensure!(args.rate != Some(0), "--rate must be at least 1");
    let opts = LedgerOptions {
        segment_size: args.segment_size,
        ..LedgerOptions::default()
    };
    let data_dir = args.data_dir.clone();
    let (ledger, report) =
        tokio::task::spawn_blocking(move || Ledger::open(&data_dir, opts)).await??;
    eprintln!(
        "ledger bench: opened {} ({} entries{}); appending {} events of ~{} bytes from {} writers",
        args.data_dir.display(),
        report.entries,
        if report.unclean_shutdown {
            ", recovered from an unclean shutdown"
        } else {
            ""
        },
        args.events,
        args.size,
        args.concurrency
    );
    let durability = match args.durability {
        DurabilityArg::Sync => Durability::Sync,
        DurabilityArg::Batched => Durability::Batched,
    };
    let pad = "x".repeat(args.size.saturating_sub(base_size()));
    let ack_log = match &args.ack_log {
        Some(path) => Some(Arc::new(std::sync::Mutex::new(
            OpenOptions::new().create(true).append(true).open(path)?,
        ))),
        None => None,
    };

    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let progress = tokio::spawn({
        let next = next.clone();
        let total = args.events;
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let done = next.load(Ordering::Relaxed).min(total);
                eprintln!("ledger bench: {done}/{total} events");
            }
        }
    });
    let mut writers = Vec::with_capacity(args.concurrency);
    for writer in 0..args.concurrency {
        let ledger = ledger.clone();
        let next = next.clone();
        let pad = pad.clone();
        let ack_log = ack_log.clone();
        let (total, rate) = (args.events, args.rate);
        writers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                // Open loop: each event has a due time; latency counts from it, so a
                // stalled ledger shows up instead of slowing the offered load.
                let due = match rate {
                    Some(r) => {
                        let at = started + Duration::from_secs_f64(n as f64 / r as f64);
                        tokio::time::sleep_until(at.into()).await;
                        at
                    }
                    None => Instant::now(),
                };
                let event = Event::system(
                    EventKind::Bench,
                    json!({"writer": writer, "n": n, "pad": pad}),
                );
                // Timer wake-ups are late by up to a millisecond; count from the due time
                // only when the writer itself was late by more than that (backlog).
                let sent = Instant::now();
                let from = if sent.duration_since(due) > Duration::from_millis(2) {
                    due
                } else {
                    sent
                };
                let receipt = ledger.append(&event, durability).await?;
                latencies.push(from.elapsed().as_micros() as u32);
                if let Some(log) = &ack_log {
                    // When it was acknowledged, so a crash test can tell a loss inside the
                    // batched window from a real one.
                    let at_us = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_micros())
                        .unwrap_or(0);
                    let line = format!(
                        "{} {} {at_us}\n",
                        receipt.index,
                        hex::encode(receipt.leaf_hash)
                    );
                    log.lock()
                        .expect("ack log lock")
                        .write_all(line.as_bytes())?;
                }
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::with_capacity(args.events as usize);
    for writer in writers {
        latencies.extend(writer.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    progress.abort();
    tokio::task::spawn_blocking(move || ledger.close()).await??;

    latencies.sort_unstable();
    let pct = |p: f64| {
        let at = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        f64::from(latencies[at]) / 1000.0
    };
    outln!(
        "{}",
        json!({
            "events": args.events,
            "events_per_s": (args.events as f64 / elapsed).round(),
            "ack_p50_ms": pct(0.50),
            "ack_p99_ms": pct(0.99),
            "ack_max_ms": pct(1.0),
            "concurrency": args.concurrency,
            "size": args.size,
            "durability": format!("{:?}", args.durability).to_lowercase(),
            "rate": args.rate,
            "seconds": elapsed,
        })
    );
    Ok(ExitCode::SUCCESS)
}

/// Length of a bench entry line with an empty pad, to size the pad.
fn base_size() -> usize {
    let event = Event::system(
        EventKind::Bench,
        json!({"writer": 10, "n": 100_000, "pad": ""}),
    );
    let mut line = Vec::new();
    event.write_entry(100_000, 1_700_000_000_000_000, &mut line);
    line.len() + 1
}

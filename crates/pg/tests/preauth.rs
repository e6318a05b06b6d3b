//! What a client costs before it has signed in: startup parameters that could change the
//! role or how statements are read are refused and recorded; connections in startup are
//! capped per source; failed sign-ins are throttled; and a flood of clients sending huge
//! messages leaves memory and the ledger bounded.
#![allow(clippy::unwrap_used)] // a test (or bench) that cannot go on fails by panicking

mod harness;

use std::time::Duration;

use gatehouse_config::LimitsConfig;
use harness::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A startup packet (protocol 3.0) for `user` on `appdb`.
fn startup_packet(user: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&196608i32.to_be_bytes());
    for (k, v) in [("user", user), ("database", "appdb")] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

/// The process's resident memory now, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_parameters_that_change_the_role_or_the_reading_are_refused() {
    let gw = gateway_on(Setup {
        startup_parameters: vec!["work_mem".into()],
        ..Setup::default()
    })
    .await;
    let psql = |options: &str, sql: &str| {
        let mut cmd = std::process::Command::new(gw.pg.bindir().join("psql"));
        cmd.args(["-h", "127.0.0.1", "-p", &gw.port.to_string()])
            .args(["-U", "alice", "-d", "appdb", "-X", "-A", "-t", "-c", sql])
            .env("PGPASSWORD", KEY)
            .env("PGOPTIONS", options)
            .env("PGAPPNAME", "reporting");
        text(&cmd.output().unwrap())
    };
    // `options` can carry any setting (here the role and the lexical mode): never passed.
    for options in ["-c role=postgres", "-c standard_conforming_strings=off"] {
        let (out, err) = psql(options, "SELECT current_user");
        assert!(out.is_empty(), "{options}: {out}");
        assert!(
            err.contains("the startup parameter \"options\" is not allowed on pg-test"),
            "{options}: {err}"
        );
    }
    // Built-in safe ones (application_name) and ones the resource allows pass.
    let (out, err) = psql("", "SELECT current_setting('application_name')");
    assert_eq!(out, "reporting", "{err}");

    let entries = gw.entries().await;
    let refused: Vec<&Value> = of_kind(&entries, "policy.decision")
        .into_iter()
        .filter(|e| e["data"]["action"] == "startup_parameter")
        .collect();
    assert_eq!(refused.len(), 2);
    assert!(refused.iter().all(|e| e["data"]["parameter"] == "options"));
    assert!(refused.iter().all(|e| e["actor"]["id"] == "alice"));
    let _ = gw.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_in_startup_are_capped_per_source() {
    let gw = gateway_on(Setup {
        limits: LimitsConfig {
            max_startups_per_source: 2,
            ..Default::default()
        },
        ..Setup::default()
    })
    .await;
    let address = format!("127.0.0.1:{}", gw.port);
    // Two clients that connect and say nothing hold the source's two startup places.
    let idle_a = TcpStream::connect(&address).await.unwrap();
    let idle_b = TcpStream::connect(&address).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = TcpStream::connect(&address).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), third.read_to_end(&mut answer))
        .await
        .expect("the third connection is answered at once")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.contains("53300"), "{answer}");
    assert!(answer.contains("too many connections"), "{answer}");
    // Once one of them goes, a real client gets in.
    drop(idle_a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(alice_sql(&gw, "SELECT 1"), "1");
    drop(idle_b);
    let _ = gw.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sign_ins_are_throttled_per_source_and_user() {
    let gw = gateway(gatehouse_core::Durability::Sync).await;
    // Five failures are free; the sixth makes the source and the name wait.
    for _ in 0..6 {
        gw.refused("alice", "not-the-key");
    }
    let (_, err) = text(&gw.psql("alice", KEY, &["-c", "SELECT 1"]));
    assert!(err.contains("too many failed sign-ins"), "{err}");
    // The wait is over after a second; the right key then gets in.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(alice_sql(&gw, "SELECT 1"), "1");

    let entries = gw.entries().await;
    let failures = of_kind(&entries, "auth.failure");
    assert!(
        failures.iter().any(|e| e["data"]["reason"] == "throttled"),
        "{failures:?}"
    );
    let _ = gw.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unauthenticated_clients_costs_bounded_memory_and_entries() {
    const CLIENTS: usize = 300;
    let gw = gateway_on(Setup {
        limits: LimitsConfig {
            max_startups: 1024,
            max_startups_per_source: 1024,
            ..Default::default()
        },
        ..Setup::default()
    })
    .await;
    let address = format!("127.0.0.1:{}", gw.port);
    let entries_before = gw.ledger.status().size;
    let before = rss_kib();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(before));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kib(), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    // Each client signs in as alice and sends a password message that claims 1 GiB, then
    // as much of it as the gateway will take (up to 1 MiB each).
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        let address = address.clone();
        clients.spawn(async move {
            let mut tcp = TcpStream::connect(&address).await.unwrap();
            tcp.write_all(&startup_packet("alice")).await.unwrap();
            let mut request = [0u8; 9];
            tcp.read_exact(&mut request).await.unwrap();
            assert_eq!(request[0], b'R', "asked for a password");
            let mut header = vec![b'p'];
            header.extend_from_slice(&(1i32 << 30).to_be_bytes());
            tcp.write_all(&header).await.unwrap();
            let chunk = vec![b'x'; 64 * 1024];
            let mut sent = 0usize;
            while sent < (1 << 20) {
                match tokio::time::timeout(Duration::from_secs(5), tcp.write_all(&chunk)).await {
                    Ok(Ok(())) => sent += chunk.len(),
                    _ => break,
                }
            }
            let mut answer = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
            String::from_utf8_lossy(&answer).contains("over 16384 bytes before signing in")
        });
    }
    let mut told = 0;
    while let Some(result) = clients.join_next().await {
        told += usize::from(result.unwrap());
    }
    // Then a wave of wrong keys under as many names.
    for i in 0..200 {
        let user = format!("user-{i}-{}", "n".repeat(300));
        let _ = gw.psql(&user, "wrong", &["-c", "SELECT 1"]);
    }
    sampler.abort();
    let grown = peak.load(std::sync::atomic::Ordering::Relaxed) - before;
    eprintln!("flood: {CLIENTS} clients, peak resident memory grew by {grown} KiB");

    // Stopping the listener writes the counts gathered since.
    let _ = gw.stop.send(true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let entries = gw.entries().await;
    let written = entries.len() as u64 - entries_before;
    let failures = of_kind(&entries, "auth.failure");
    let counted: u64 = failures
        .iter()
        .map(|e| e["data"]["count"].as_u64().unwrap_or(1))
        .sum();
    eprintln!(
        "flood: {} auth.failure entries ({written} entries in all) for {counted} failures",
        failures.len()
    );
    assert!(
        told > CLIENTS * 9 / 10,
        "clients told why: {told} of {CLIENTS}"
    );
    // Unbounded, each client would hold up to 1 MiB: 300 MiB.
    assert!(grown < 48 * 1024, "memory grew by {grown} KiB");
    assert!(written <= 120, "{written} entries for a flood");
    assert!(
        counted >= (CLIENTS + 200) as u64,
        "every failure is counted: {counted}"
    );
    assert!(
        failures
            .iter()
            .all(|e| e["data"]["user"].as_str().is_none_or(|u| u.len() <= 70)),
        "claimed names are truncated"
    );
}

//! Conformance: a client must not be able to tell the gateway from the server it fronts,
//! except where policy speaks. Each test runs a real client (psql, psycopg 3) through the
//! gateway and, where the server's own answer is the reference, directly against the
//! cluster in the same run, and holds the two equal: syntax errors with their positions,
//! the requested database, the backend pid, a server-side termination, and what a refusal
//! does to a transaction.
#![allow(clippy::unwrap_used)] // a test (or bench) that cannot go on fails by panicking

mod harness;

use std::path::Path;
use std::process::Command;

use gatehouse_core::Durability;
use harness::*;
use serde_json::{Value, json};

/// Runs the scenario of `drivers/conformance.py` and returns what it printed.
fn scenario(gw: &Gateway, name: &str) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/drivers/conformance.py");
    let through = format!(
        "host=127.0.0.1 port={} user=alice dbname=appdb password={KEY}",
        gw.port
    );
    let direct = format!(
        "host=127.0.0.1 port={} user=app dbname=appdb password=app-secret",
        gw.pg.port
    );
    let out = Command::new("python3")
        .arg(&script)
        .args([name, &through, &direct])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{name}: {stdout}\n{stderr}");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{name}: {e}: {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syntax_errors_are_the_servers_with_their_position() {
    let gw = gateway(Durability::Sync).await;
    let seen = scenario(&gw, "syntax");
    assert_eq!(seen["gateway"], seen["direct"]);
    // Not vacuous: the texts did fail, with positions.
    let first = &seen["direct"][0];
    assert_eq!(
        first,
        &json!([
            "SELEC 1",
            false,
            "42601",
            "syntax error at or near \"SELEC\"",
            "1"
        ])
    );

    // psql shows the server's caret.
    let (_, stderr) = text(&gw.psql("alice", KEY, &["-c", "SELECT * FORM customers"]));
    assert!(
        stderr.contains("ERROR:  syntax error at or near \"FORM\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("LINE 1: SELECT * FORM customers"),
        "{stderr}"
    );

    // Still refused and recorded as such: the entry names the parser's reading.
    let entries = gw.entries().await;
    let refused: Vec<&Value> = of_kind(&entries, "command")
        .into_iter()
        .filter(|e| e["data"]["sql"] == "SELEC 1")
        .collect();
    assert!(!refused.is_empty(), "the unparsed text is recorded");
    assert_eq!(refused[0]["data"]["decision"]["outcome"], "deny");
    assert_eq!(
        refused[0]["data"]["syntax_error"],
        json!({"code": "42601", "message": "syntax error at or near \"SELEC\"", "position": 1})
    );
    assert!(
        refused[0]["data"]["unparsed"]
            .as_str()
            .is_some_and(|u| u.contains("syntax error")),
        "{}",
        refused[0]["data"]
    );

    let _ = gw.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_the_resource_does_not_serve_is_refused_as_the_server_would() {
    let gw = gateway(Durability::Sync).await;
    let psql = |database: &str| {
        Command::new(gw.pg.bindir().join("psql"))
            .args(["-h", "127.0.0.1", "-p", &gw.port.to_string(), "-U", "alice"])
            .args([
                "-d",
                database,
                "-X",
                "-A",
                "-t",
                "-c",
                "SELECT current_database()",
            ])
            .env("PGPASSWORD", KEY)
            .env("PGSSLMODE", "disable")
            .output()
            .unwrap()
    };
    let (stdout, _) = text(&psql("appdb"));
    assert_eq!(stdout.trim(), "appdb");
    let (_, stderr) = text(&psql("nosuchdb"));
    assert!(
        stderr.contains("FATAL:  database \"nosuchdb\" does not exist"),
        "{stderr}"
    );
    // No database named: the server would take the user name, and so does the gateway.
    let out = Command::new(gw.pg.bindir().join("psql"))
        .args(["-h", "127.0.0.1", "-p", &gw.port.to_string(), "-U", "alice"])
        .args(["-X", "-c", "SELECT 1"])
        .env("PGPASSWORD", KEY)
        .env("PGSSLMODE", "disable")
        .env_remove("PGDATABASE")
        .output()
        .unwrap();
    assert!(
        text(&out).1.contains("database \"alice\" does not exist"),
        "{}",
        text(&out).1
    );
    let entries = gw.entries().await;
    let refused: Vec<&Value> = of_kind(&entries, "policy.decision")
        .into_iter()
        .filter(|e| e["data"]["reason"] == "database_not_served")
        .collect();
    assert_eq!(refused.len(), 2, "each refusal is recorded");
    assert_eq!(refused[0]["data"]["requested_database"], "nosuchdb");
    assert_eq!(of_kind(&entries, "session.start").len(), 1);
    let _ = gw.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_pid_is_the_servers() {
    let gw = gateway(Durability::Sync).await;
    let seen = scenario(&gw, "pid");
    let expected = json!({"backend_is_told": true, "sender_is_told": true});
    assert_eq!(seen["direct"], expected);
    assert_eq!(seen["gateway"], expected);
    let _ = gw.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_termination_by_the_server_reaches_the_client() {
    let gw = gateway(Durability::Sync).await;
    let seen = scenario(&gw, "terminate");
    assert_eq!(seen["gateway"], seen["direct"]);
    assert_eq!(seen["direct"]["terminated"], true);
    assert_eq!(seen["direct"]["outcome"][1], "57P01", "{seen}");
    assert_eq!(seen["direct"]["closed"], true);
    // The session's end says why.
    let entries = gw.entries().await;
    let ends = of_kind(&entries, "session.end");
    assert!(
        ends.iter()
            .any(|e| e["data"]["reason"] == "target closed the connection"),
        "{ends:?}"
    );
    let _ = gw.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_fails_the_transaction_in_every_protocol() {
    let gw = gateway(Durability::Sync).await;
    let seen = scenario(&gw, "refusal_in_transaction");
    assert_eq!(
        seen["gateway"],
        json!({
            "simple": ["42501", true, "25P02"],
            "extended": ["42501", true, "25P02"],
            "pipeline": ["42501"],
            "rows_left": 0,
        })
    );
    let _ = gw.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_client_encoding_reads_and_masks_its_own_characters() {
    let gw = gateway_on(Setup {
        masking: Some(Default::default()),
        ..Setup::default()
    })
    .await;
    let seen = scenario(&gw, "encoding");
    assert_eq!(
        seen["direct"],
        json!([
            "LATIN9",
            ["café €", "ada@example.com"],
            ["prix 5 €"],
            ["22P02", "invalid input syntax for type integer: \"é\""],
            ["déjà vu ada@example.com"],
        ])
    );
    // Through the gateway the same, but for the e-mail addresses masking replaces.
    assert_eq!(
        seen["gateway"],
        json!([
            "LATIN9",
            ["café €", "[email]"],
            ["prix 5 €"],
            ["22P02", "invalid input syntax for type integer: \"é\""],
            ["déjà vu [email]"],
        ])
    );
    // The ledger holds the statement as the characters the client wrote.
    let entries = gw.entries().await;
    assert!(
        of_kind(&entries, "command")
            .iter()
            .any(|e| e["data"]["sql"] == "SELECT 'café €', 'ada@example.com'"),
        "the statement is recorded in its characters"
    );
    let _ = gw.stop.send(true);
}

//! The bypass suite: real clients (psql, psycopg's libpq API) trying to make the gateway
//! decide one statement while the server runs another, through the lexical settings,
//! prepared statements and portals. Each must be refused, or decided on what really runs,
//! and recorded truthfully; the table the attacks aim at must be untouched.
#![allow(clippy::unwrap_used)] // a test (or bench) that cannot go on fails by panicking

mod harness;

use std::path::Path;
use std::process::Command;

use gatehouse_core::Durability;
use harness::*;
use serde_json::Value;

/// What `bypass_check.py SCENARIO` reported, one outcome per step.
fn scenario(gw: &Gateway, name: &str) -> Vec<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/drivers/bypass_check.py");
    let conninfo = format!(
        "host=127.0.0.1 port={} user=alice dbname=appdb password={KEY}",
        gw.port
    );
    let out = Command::new("python3")
        .arg(&script)
        .arg(&conninfo)
        .arg(name)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{name}: {stdout}\n{stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{name}: {e}: {stdout}"))
}

/// How many customers the target itself has (asked directly, not through the gateway).
fn customers(gw: &Gateway) -> String {
    gw.pg
        .psql("appdb", "SELECT count(*) FROM customers")
        .unwrap()
        .trim()
        .to_string()
}

/// The `command` entries whose SQL is exactly `sql`.
fn commands_for<'a>(entries: &'a [Value], sql: &str) -> Vec<&'a Value> {
    of_kind(entries, "command")
        .into_iter()
        .filter(|c| c["data"]["sql"] == sql)
        .collect()
}

const ATTACK: &str = r"SELECT 'a\' -- '; DELETE FROM customers; --";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backslash_quoting_is_read_as_the_server_reads_it() {
    let gw = gateway(Durability::Sync).await;
    // Mid-session, by set_config (a read) and by SET: the gateway hears the server's
    // ParameterStatus and reads the attack as the server does, a SELECT and a DELETE
    // without WHERE, which the guardrail denies.
    for switch in [
        "SELECT set_config('standard_conforming_strings', 'off', false)",
        "SET standard_conforming_strings = off",
    ] {
        let out = gw.psql("alice", KEY, &["-c", switch, "-c", ATTACK]);
        let (_, stderr) = text(&out);
        assert!(!out.status.success(), "{switch}: the attack ran");
        assert!(stderr.contains("denied"), "{switch}: {stderr}");
        assert_eq!(
            customers(&gw),
            "2",
            "{switch}: the DELETE reached the target"
        );
    }
    // Standard strings again: the same text is one harmless SELECT, and runs.
    let out = gw.psql("alice", KEY, &["-c", ATTACK]);
    assert!(out.status.success(), "{}", text(&out).1);
    assert_eq!(customers(&gw), "2");

    let entries = gw.entries().await;
    let attacks = commands_for(&entries, ATTACK);
    assert_eq!(attacks.len(), 3, "every attempt is recorded");
    for denied in &attacks[..2] {
        assert_eq!(
            denied["data"]["commands"],
            serde_json::json!(["SELECT", "DELETE"])
        );
        assert_eq!(denied["data"]["decision"]["outcome"], "deny");
    }
    assert_eq!(
        attacks[2]["data"]["commands"],
        serde_json::json!(["SELECT"])
    );
    assert_eq!(attacks[2]["data"]["decision"]["outcome"], "allow");
    assert!(of_kind(&entries, "integrity.mismatch").is_empty());
    let _ = gw.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encodings_that_hide_quotes_are_refused_at_startup_and_mid_session() {
    let gw = gateway(Durability::Sync).await;
    let out = Command::new(gw.pg.bindir().join("psql"))
        .args(["-h", "127.0.0.1", "-p", &gw.port.to_string(), "-U", "alice"])
        .args(["-d", "appdb", "-X", "-c", "SELECT 1"])
        .env("PGPASSWORD", KEY)
        .env("PGCLIENTENCODING", "SJIS")
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("client_encoding SJIS is not supported"),
        "{stderr}"
    );
    let out = gw.psql(
        "alice",
        KEY,
        &["-c", "SET client_encoding = 'BIG5'", "-c", "SELECT 1"],
    );
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("client_encoding BIG5 is not supported"),
        "{stderr}"
    );
    // A safe one is fine.
    let out = gw.psql(
        "alice",
        KEY,
        &["-c", "SET client_encoding = 'LATIN1'", "-c", "SELECT 1"],
    );
    assert!(out.status.success(), "{}", text(&out).1);

    let entries = gw.entries().await;
    let refusals: Vec<&Value> = of_kind(&entries, "policy.decision")
        .into_iter()
        .filter(|e| e["data"]["setting"] == "client_encoding")
        .collect();
    assert_eq!(refusals.len(), 2, "{refusals:?}");
    assert_eq!(refusals[0]["data"]["value"], "SJIS");
    assert_eq!(refusals[1]["data"]["value"], "BIG5");
    assert!(
        refusals[1]["session"].is_string(),
        "mid-session: names its session"
    );
    let _ = gw.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_and_portals_follow_the_server() {
    let gw = gateway(Durability::Sync).await;

    // A second Parse of an existing name is refused by the server (42P05): the statement
    // executed is still the DELETE, which the guardrail denies.
    let steps = scenario(&gw, "reprepare");
    assert_eq!(steps, ["ok", "42P05", "42501"], "reprepare");

    // An unknown statement is the server's own error, never an empty statement.
    assert_eq!(scenario(&gw, "unknown"), ["26000"]);

    // A Close and a Parse that a failed message made the server skip: "s" is still the
    // DELETE. If the first segment's answers are still in flight when the Execute comes,
    // the gateway cannot be sure what "s" is and refuses (55000); if they have arrived, it
    // knows "s" is the DELETE and the guardrail denies it (42501). Never the SELECT.
    let steps = scenario(&gw, "pipelined_redefinition");
    assert_eq!(
        steps[..5],
        ["ok", "42601", "aborted", "aborted", "sync"],
        "pipelined redefinition"
    );
    assert!(
        steps[5] == "55000" || steps[5] == "42501",
        "the Execute is refused: {steps:?}"
    );
    assert_eq!(steps[6], "sync");

    // SQL EXECUTE runs what the name is: decided on the DELETE it runs, also inside
    // EXPLAIN ANALYZE; names prepared by SQL reach the extended protocol and go with
    // DEALLOCATE.
    let steps = scenario(&gw, "sql_execute");
    assert_eq!(
        Value::from(steps),
        serde_json::json!(["ok", "42501", "42501", "26000", "ok", ["2"], "ok", "26000"]),
        "sql execute"
    );
    assert_eq!(customers(&gw), "2", "no DELETE reached the target");

    let entries = gw.entries().await;
    for sql in ["EXECUTE s", "EXPLAIN ANALYZE EXECUTE s"] {
        let recorded = commands_for(&entries, sql);
        assert_eq!(recorded.len(), 1, "{sql}");
        assert_eq!(recorded[0]["data"]["decision"]["outcome"], "deny", "{sql}");
        let commands = recorded[0]["data"]["commands"].to_string();
        assert!(
            commands.contains("DELETE") || commands.contains("EXPLAIN ANALYZE"),
            "{sql}: {commands}"
        );
    }
    let unknown = commands_for(&entries, "EXECUTE never_prepared");
    assert_eq!(unknown[0]["data"]["decision"]["unreadable"], "26000");
    // The reprepared DELETE's execution is recorded as the DELETE it is.
    let deletes = commands_for(&entries, "DELETE FROM customers");
    assert!(
        deletes
            .iter()
            .any(|c| c["data"]["decision"]["outcome"] == "deny"),
        "{deletes:?}"
    );
    assert!(of_kind(&entries, "integrity.mismatch").is_empty());
    let _ = gw.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_that_reads_differently_while_settings_may_change_is_refused() {
    let gw = gateway(Durability::Sync).await;
    let steps = scenario(&gw, "lexical_pipeline");
    assert_eq!(
        Value::from(steps),
        serde_json::json!([
            ["off"],
            "55000",
            "sync",
            ["on"],
            ["off"],
            ["a', 1 -- "],
            ["it's"]
        ]),
        "lexical pipeline"
    );
    let entries = gw.entries().await;
    let refused = commands_for(&entries, r"SELECT 'a\', 1 -- '");
    assert_eq!(refused[0]["data"]["decision"]["unreadable"], "55000");
    let _ = gw.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_the_gateway_did_not_decide_ends_the_session() {
    let gw = gateway(Durability::Sync).await;
    // A function that redefines a prepared statement behind the gateway's back: the one
    // way left to run something else under a name (dynamic SQL inside the database).
    gw.pg
        .psql(
            "appdb",
            "SET ROLE app; CREATE FUNCTION sneak() RETURNS void LANGUAGE plpgsql AS $$ \
             BEGIN EXECUTE 'DEALLOCATE s'; \
             EXECUTE 'PREPARE s AS DELETE FROM customers WHERE id = 2'; END $$",
        )
        .unwrap();
    let out = gw.psql(
        "alice",
        KEY,
        &[
            "-c",
            "PREPARE s AS SELECT 1",
            "-c",
            "SELECT sneak()",
            "-c",
            "EXECUTE s",
            "-c",
            "SELECT 'after'",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("was not decided"), "{stderr}");
    assert!(!stdout.contains("after"), "the session went on: {stdout}");

    let entries = gw.entries().await;
    let mismatch = of_kind(&entries, "integrity.mismatch");
    assert_eq!(mismatch.len(), 1, "{mismatch:?}");
    assert_eq!(mismatch[0]["data"]["tag"], "DELETE 1");
    assert_eq!(
        mismatch[0]["data"]["decided"],
        serde_json::json!(["SELECT"])
    );
    let executed = commands_for(&entries, "EXECUTE s");
    assert_eq!(mismatch[0]["data"]["command"], executed[0]["i"]);
    let end = of_kind(&entries, "session.end");
    assert!(
        end.iter().any(|e| e["data"]["reason"]
            .as_str()
            .unwrap()
            .contains("not decided")),
        "{end:?}"
    );
    let _ = gw.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_statement_can_do_decides_its_classes() {
    let gw = gateway(Durability::Sync).await;
    // Reaching the server's files or programs is its own class, denied without a policy
    // that permits it, whether by COPY or by a function inside a SELECT.
    for sql in [
        "COPY customers TO '/tmp/gatehouse-exfil.csv'",
        "COPY customers FROM PROGRAM 'id'",
        "SELECT pg_read_file('/etc/hostname')",
    ] {
        let (out, err) = text(&gw.psql("alice", KEY, &["-c", sql]));
        assert!(out.is_empty(), "{sql}: {out}");
        assert!(err.contains("reaches outside the database"), "{sql}: {err}");
    }
    assert!(!Path::new("/tmp/gatehouse-exfil.csv").exists());
    // Changing who the session is, and code blocks, are named for what they are.
    let out = gw.psql(
        "alice",
        KEY,
        &[
            "-c",
            "SELECT set_config('role', 'app', false)",
            "-c",
            "RESET ROLE",
            "-c",
            "DO $$ BEGIN PERFORM 1; END $$",
        ],
    );
    assert!(out.status.success(), "{}", text(&out).1);

    let entries = gw.entries().await;
    let classes_of = |sql: &str| commands_for(&entries, sql)[0]["data"]["classes"].clone();
    assert_eq!(
        classes_of("SELECT pg_read_file('/etc/hostname')"),
        serde_json::json!(["read", "external"])
    );
    assert_eq!(
        classes_of("COPY customers FROM PROGRAM 'id'"),
        serde_json::json!(["external"])
    );
    assert_eq!(
        classes_of("SELECT set_config('role', 'app', false)"),
        serde_json::json!(["read", "dcl"])
    );
    assert_eq!(classes_of("RESET ROLE"), serde_json::json!(["dcl"]));
    assert_eq!(
        commands_for(&entries, "RESET ROLE")[0]["data"]["commands"],
        serde_json::json!(["RESET ROLE"])
    );
    assert_eq!(
        classes_of("DO $$ BEGIN PERFORM 1; END $$"),
        serde_json::json!(["procedural"])
    );
    let _ = gw.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_inside_a_transaction_fails_it_as_an_error_would() {
    let gw = gateway(Durability::Sync).await;
    // psql runs each -c in the same session: the refused DELETE must leave the block
    // failed, so the COMMIT rolls the INSERT back, as after any error in PostgreSQL.
    let out = gw.psql(
        "alice",
        KEY,
        &[
            "-c",
            "BEGIN",
            "-c",
            "INSERT INTO customers VALUES (3, 'Radia', 'radia@example.com')",
            "-c",
            "DELETE FROM customers",
            "-c",
            "SELECT 1",
            "-c",
            "COMMIT",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(stderr.contains("denied"), "{stderr}");
    assert!(
        stderr.contains("current transaction is aborted"),
        "the block is failed after the refusal: {stderr}"
    );
    assert!(stdout.contains("ROLLBACK"), "{stdout}");
    assert_eq!(customers(&gw), "2", "the INSERT was rolled back");
    // The ledger says so: the DELETE refused, the SELECT after it failed as in any failed
    // block, and the COMMIT recorded as the ROLLBACK the server made of it.
    let entries = gw.entries().await;
    let result_of = |sql: &str| {
        let index = commands_for(&entries, sql)[0]["i"].clone();
        of_kind(&entries, "result")
            .into_iter()
            .find(|r| r["data"]["command"] == index)
            .cloned()
    };
    assert_eq!(
        commands_for(&entries, "DELETE FROM customers")[0]["data"]["decision"]["outcome"],
        "deny"
    );
    assert!(result_of("DELETE FROM customers").is_none(), "never ran");
    assert_eq!(result_of("SELECT 1").unwrap()["data"]["error"], "25P02");
    assert_eq!(result_of("COMMIT").unwrap()["data"]["tags"][0], "ROLLBACK");
    let _ = gw.stop.send(true);
}

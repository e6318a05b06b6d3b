//! Grants cover exactly what they name: a statement held by several rules needs each of
//! them granted (or one approval of a review naming them all), and every holding rule is
//! recorded.
#![allow(clippy::unwrap_used)] // a test (or bench) that cannot go on fails by panicking

mod harness;

use std::time::Duration;

use gatehouse_approvals::{Approver, Decision, Review, State};
use gatehouse_sql::{Rule, RuleAction};
use harness::*;
use serde_json::Value;

fn review_rule(id: &str, commands: &[&str], tables: &[&str]) -> Rule {
    Rule {
        commands: commands.iter().map(|c| c.to_string()).collect(),
        tables: tables.iter().map(|t| t.to_string()).collect(),
        ..Rule::new(id, RuleAction::Review)
    }
}

/// Waits for alice's next pending review.
async fn pending(gw: &Gateway, seen: usize) -> Review {
    for _ in 0..200 {
        let list = gw.reviews.list().await;
        if list.len() > seen
            && let Some(r) = list.iter().find(|r| r.state == State::Pending)
        {
            return r.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no review was opened");
}

/// Decides review `id` as bob of the dba group.
async fn decide(gw: &Gateway, id: &str, decision: Decision) {
    let groups = vec!["dba".to_string()];
    let bob = Approver {
        name: "bob",
        groups: &groups,
        permitted: false,
    };
    gw.reviews
        .decide(id, bob, &decision, Some("test".into()), |_| async {
            Ok::<(), String>(())
        })
        .await
        .unwrap();
}

/// Runs `sql` as alice on a thread (it may be held); returns psql's success.
fn alice_in_background(gw: &Gateway, sql: &str) -> std::thread::JoinHandle<(bool, String)> {
    let mut cmd = std::process::Command::new(gw.pg.bindir().join("psql"));
    cmd.args(["-h", "127.0.0.1", "-p", &gw.port.to_string()])
        .args(["-U", "alice", "-d", "appdb", "-X", "-c", sql])
        .env("PGPASSWORD", KEY);
    std::thread::spawn(move || {
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_held_by_several_rules_needs_each_granted() {
    let gw = gateway_on(Setup {
        rules: Some(vec![
            review_rule("drops", &["DROP TABLE"], &[]),
            review_rule("payroll", &[], &["public.payroll*"]),
            review_rule("truncates", &["TRUNCATE"], &[]),
        ]),
        approvers: vec!["dba".into()],
        ..Setup::default()
    })
    .await;
    tokio::task::block_in_place(|| {
        gw.pg
            .psql(
                "appdb",
                "SET ROLE app; CREATE TABLE payroll_2020 (a int); CREATE TABLE payroll_2021 (a int); \
                 CREATE TABLE other (a int); CREATE TABLE payroll_x (a int);",
            )
            .unwrap();
    });

    // Held by two rules: one review names both; approved for an hour, it grants both.
    let first = alice_in_background(&gw, "DROP TABLE payroll_2020");
    let review = pending(&gw, 0).await;
    assert_eq!(review.holders, ["drops", "payroll"]);
    decide(
        &gw,
        &review.id,
        Decision::Approve {
            grant: Some(Duration::from_secs(3600)),
        },
    )
    .await;
    let (ok, err) = tokio::task::block_in_place(|| first.join().unwrap());
    assert!(ok, "{err}");

    // Both granted: held by both, or by either, it runs without a review.
    for sql in ["DROP TABLE payroll_2021", "DROP TABLE other"] {
        let (out, err) = text(&gw.psql("alice", KEY, &["-c", sql]));
        assert_eq!(out, "DROP TABLE", "{sql}: {err}");
        assert!(!err.contains("ERROR"), "{sql}: {err}");
    }
    // Held by a granted rule and one that is not: it waits for a review of its own.
    let third = alice_in_background(&gw, "TRUNCATE payroll_x");
    let held = pending(&gw, 1).await;
    assert_eq!(held.holders, ["payroll", "truncates"]);
    decide(&gw, &held.id, Decision::Deny).await;
    let (ok, err) = tokio::task::block_in_place(|| third.join().unwrap());
    assert!(!ok && err.contains("denied"), "{err}");

    let entries = gw.entries().await;
    let command = |sql: &str| -> Value {
        of_kind(&entries, "command")
            .into_iter()
            .find(|c| c["data"]["sql"] == sql)
            .unwrap_or_else(|| panic!("{sql} recorded"))
            .clone()
    };
    let both = command("DROP TABLE payroll_2021");
    assert_eq!(
        both["data"]["decision"]["holders"],
        serde_json::json!(["drops", "payroll"])
    );
    let grants = both["data"]["decision"]["grants"].as_array().unwrap();
    assert_eq!(grants.len(), 2);
    assert!(grants.iter().all(|g| g["review"] == review.id.as_str()));
    let one = command("DROP TABLE other");
    assert_eq!(
        one["data"]["decision"]["grant"]["review"],
        review.id.as_str()
    );
    let truncate = command("TRUNCATE payroll_x");
    assert!(truncate["data"]["decision"]["grant"].is_null());
    let _ = gw.stop.send(true);
}

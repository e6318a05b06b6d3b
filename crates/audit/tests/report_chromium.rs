//! The audit report opened in a real browser: a realistic ledger window (entries shaped the
//! way the gateway writes them) is rendered, loaded from a file by headless Chromium, and
//! the DOM Chromium built is checked against figures counted from the entries here,
//! independently of the renderer. A screenshot shows what an auditor sees.
//!
//! Chromium is `/usr/bin/chromium` (Debian's `chromium`; `scripts/test` installs it) or
//! `$CHROMIUM`. Without it the test fails under CI (`CI=true`) and is skipped otherwise.
//! The page, the DOMs and the screenshot stay in `<target>/tmp/report_chromium/`.
#![allow(clippy::unwrap_used)] // a test (or bench) that cannot go on fails by panicking

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use gatehouse_audit::report::{self, ReportInput, Verification};
use gatehouse_testkit::browser::{chromium, element_text, figure, run_chromium};
use serde_json::{Value, json};

/// 2025-11-24 09:00:00 UTC, unix microseconds.
const T0: u64 = 1_763_974_800_000_000;
const MIN: u64 = 60_000_000;

/// The SQL an attacker might send, hoping the auditor's browser runs it.
const HOSTILE_SQL: &str = "SELECT '<script>document.title=\"pwned\"</script><img src=x>' AS x";

/// Builds ledger entries the way the gateway does: index and time from the ledger, then
/// kind, actor, resource, session, data.
struct Ledger {
    entries: Vec<(Value, String)>,
}

impl Ledger {
    fn push(
        &mut self,
        ts: u64,
        kind: &str,
        actor: Option<Value>,
        session: Option<&str>,
        data: Value,
    ) -> u64 {
        let i = self.entries.len() as u64;
        let mut e = json!({"v": 1, "i": i, "ts": ts, "kind": kind});
        if let Some(a) = actor {
            e["actor"] = a;
        }
        if kind != "config.change" && kind != "key.created" && kind != "ledger.open" {
            e["resource"] = json!({"name": "pg-prod", "kind": "postgres"});
        }
        if let Some(s) = session {
            e["session"] = s.into();
        }
        e["data"] = data;
        // A stand-in leaf hash: 32 bytes of hex, distinct per entry.
        let leaf = format!("{:016x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).repeat(4);
        self.entries.push((e, leaf));
        i
    }
}

fn human(id: &str, groups: &[&str]) -> Value {
    json!({"id": id, "kind": "human", "idp": "okta", "groups": groups})
}

fn system() -> Value {
    json!({"id": "gatehouse", "kind": "system"})
}

/// A statement's `command` entry data, as `Session::admit` and `Session::audit` write it.
fn command_data(sql: &str, class: &str, command: &str, outcome: &str, rule: Option<&str>) -> Value {
    json!({
        "protocol": "simple",
        "classes": [class],
        "commands": [command],
        "tables": ["public.customers"],
        "decision": {"outcome": outcome, "rule": rule, "policies": []},
        "sql": sql,
    })
}

/// A `result` entry's data, as `Session::record_result` writes it.
/// Values masked per rule label or detector kind.
type Counts<'a> = &'a [(&'a str, u64)];

fn result_data(command: u64, rows: u64, masked: Option<(Counts, Counts)>) -> Value {
    let mut d = json!({
        "command": command, "tags": ["SELECT"], "rows": rows, "bytes": rows * 40,
        "duration_us": 1200, "error": null, "skipped": false,
    });
    if let Some((rules, detectors)) = masked {
        let rules: BTreeMap<&str, u64> = rules.iter().copied().collect();
        let detectors: BTreeMap<&str, u64> = detectors.iter().copied().collect();
        let values: u64 = rules.values().sum::<u64>() + detectors.values().sum::<u64>();
        d["masked"] = json!({"values": values, "rules": rules, "detectors": detectors});
    }
    d
}

fn scenario() -> Vec<(Value, String)> {
    let mut l = Ledger {
        entries: Vec::new(),
    };
    let mut t = T0;
    let mut tick = |minutes: u64| {
        t += minutes * MIN;
        t
    };
    l.push(tick(0), "ledger.open", Some(system()), None, json!({}));
    l.push(
        tick(1),
        "config.change",
        Some(system()),
        None,
        json!({"file": "/etc/gatehouse/gatehouse.toml", "sha256": "5e".repeat(32), "resources": ["pg-prod"]}),
    );
    l.push(
        tick(0),
        "config.change",
        Some(system()),
        None,
        json!({"policy": {"file": "/etc/gatehouse/policy.cedar", "trigger": "start", "loaded": true, "policies": 4}}),
    );
    l.push(
        tick(2),
        "key.created",
        Some(system()),
        None,
        json!({"name": "ci-nightly", "kind": "service", "groups": ["ci"], "expires_at": null, "by": "root", "key_id": "k-12ab", "seq": 1, "at": 1}),
    );

    // Alice reads customers (masked), is denied a DELETE without WHERE, gets a DROP
    // approved by bob with a one-hour grant, then runs an ALTER under that grant.
    let alice = || human("alice@example.com", &["eng"]);
    let s1 = "s-a11ce0000000001";
    l.push(
        tick(3),
        "session.start",
        Some(alice()),
        Some(s1),
        json!({"client": "10.0.0.7:50122", "application": "psql", "database": "app", "requested_database": "app",
               "key_id": null, "token_claims": null, "tls": true, "target_tls": true,
               "recording": {"results": true, "max_session_bytes": 1048576},
               "masking": {"client": "masked", "recording": "masked"}, "access_grant": null}),
    );
    for n in 0..6 {
        let c = l.push(
            tick(4),
            "command",
            Some(alice()),
            Some(s1),
            command_data(
                &format!("SELECT email, phone FROM customers WHERE id > {n}"),
                "read",
                "SELECT",
                "allow",
                None,
            ),
        );
        l.push(
            tick(0),
            "result",
            Some(alice()),
            Some(s1),
            result_data(
                c,
                10 + n,
                Some((
                    &[("email", 10 + n)],
                    &[("phone", 3), ("credit_card", n % 2)],
                )),
            ),
        );
    }
    let hostile = l.push(
        tick(1),
        "command",
        Some(alice()),
        Some(s1),
        command_data(HOSTILE_SQL, "read", "SELECT", "allow", None),
    );
    l.push(
        tick(0),
        "result",
        Some(alice()),
        Some(s1),
        result_data(hostile, 1, None),
    );
    l.push(
        tick(2),
        "command",
        Some(alice()),
        Some(s1),
        command_data(
            "DELETE FROM customers",
            "write",
            "DELETE",
            "deny",
            Some("no-unbounded-delete"),
        ),
    );
    let drop = l.push(
        tick(5),
        "command",
        Some(alice()),
        Some(s1),
        command_data(
            "DROP TABLE old_orders",
            "ddl",
            "DROP TABLE",
            "review",
            Some("ddl-needs-review"),
        ),
    );
    let req = l.push(
        tick(0),
        "approval.request",
        Some(alice()),
        Some(s1),
        json!({"review": "r-00000000a1", "command": {"index": drop, "leaf": "00".repeat(32)},
               "rule": "ddl-needs-review", "reason": "schema changes need a DBA",
               "approvers": ["dba"], "required": 1, "expires_at": (T0 / 1000) + 3_600_000}),
    );
    let approved_at = tick(3);
    l.push(
        approved_at,
        "approval.decision",
        Some(human("bob@example.com", &["dba"])),
        Some(s1),
        json!({"review": "r-00000000a1", "state": "approved", "approvals": 1, "required": 1,
               "request": {"index": req, "leaf": "00".repeat(32)}, "verdict": "approve",
               "reason": "<b>cleanup</b> per CHG-1042", "grant_until": approved_at / 1000 + 3_600_000}),
    );
    l.push(
        tick(0),
        "approval.decision",
        Some(alice()),
        Some(s1),
        json!({"review": "r-00000000a1", "state": "executed", "approvals": 1, "required": 1,
               "request": {"index": req, "leaf": "00".repeat(32)}}),
    );
    l.push(
        tick(0),
        "result",
        Some(alice()),
        Some(s1),
        result_data(drop, 0, None),
    );
    let mut alter = command_data(
        "ALTER TABLE orders ADD COLUMN note text",
        "ddl",
        "ALTER TABLE",
        "review",
        Some("ddl-needs-review"),
    );
    alter["decision"]["grant"] = json!({"review": "r-00000000a1",
        "request": {"index": req, "leaf": "00".repeat(32)}, "until": approved_at / 1000 + 3_600_000});
    let alter = l.push(tick(4), "command", Some(alice()), Some(s1), alter);
    l.push(
        tick(0),
        "result",
        Some(alice()),
        Some(s1),
        result_data(alter, 0, None),
    );
    l.push(
        tick(6),
        "session.end",
        Some(alice()),
        Some(s1),
        json!({"reason": "client closed the connection", "duration_ms": 41 * 60_000, "commands": 10,
               "refused": 0, "denied": 1, "errors": 0, "bytes_from_client": 900, "bytes_to_client": 24000,
               "recorded_bytes": 24000, "truncated_bytes": 0}),
    );

    // Failed sign-ins and a refused connection.
    l.push(
        tick(30),
        "auth.failure",
        None,
        None,
        json!({"user": "mallory", "client": "203.0.113.9:4242", "reason": "wrong_key", "method": "apikey"}),
    );
    l.push(
        tick(1),
        "auth.failure",
        None,
        None,
        json!({"user": "mallory", "client": "203.0.113.9:4243", "reason": "unknown_key", "method": "apikey", "key_id": "k-dead"}),
    );
    l.push(
        tick(0),
        "policy.decision",
        Some(human("eve@example.com", &["contractors"])),
        None,
        json!({"outcome": "deny", "policies": ["forbid-contractors-prod"], "message": "contractors may not reach prod",
               "action": "connect", "client": "10.0.0.9:6000"}),
    );

    // A CI job: a GRANT held for two approvals, one given, then denied; a TRUNCATE whose
    // review expires; and reads.
    let ci = || json!({"id": "ci-nightly", "kind": "service", "idp": "apikey", "groups": ["ci"]});
    let s2 = "s-c1000000000002";
    l.push(
        tick(60),
        "session.start",
        Some(ci()),
        Some(s2),
        json!({"client": "10.0.1.2:40000", "tls": true, "masking": "off", "access_grant": null}),
    );
    for n in 0..12 {
        let c = l.push(
            tick(2),
            "command",
            Some(ci()),
            Some(s2),
            command_data(
                &format!("SELECT count(*) FROM orders WHERE day = {n}"),
                "read",
                "SELECT",
                "allow",
                None,
            ),
        );
        l.push(
            tick(0),
            "result",
            Some(ci()),
            Some(s2),
            result_data(c, 1, None),
        );
    }
    let grant = l.push(
        tick(1),
        "command",
        Some(ci()),
        Some(s2),
        command_data(
            "GRANT SELECT ON orders TO reporting",
            "dcl",
            "GRANT",
            "review",
            Some("privileges"),
        ),
    );
    let req2 = l.push(
        tick(0),
        "approval.request",
        Some(ci()),
        Some(s2),
        json!({"review": "r-00000000b2", "command": {"index": grant, "leaf": "11".repeat(32)},
               "rule": "privileges", "reason": "privilege changes need two DBAs", "approvers": ["dba"], "required": 2}),
    );
    l.push(
        tick(2),
        "approval.decision",
        Some(human("bob@example.com", &["dba"])),
        Some(s2),
        json!({"review": "r-00000000b2", "state": "pending", "approvals": 1, "required": 2,
               "request": {"index": req2, "leaf": "11".repeat(32)}, "verdict": "approve", "reason": null, "grant_until": null}),
    );
    l.push(
        tick(1),
        "approval.decision",
        Some(human("dana@example.com", &["dba"])),
        Some(s2),
        json!({"review": "r-00000000b2", "state": "denied", "approvals": 1, "required": 2,
               "request": {"index": req2, "leaf": "11".repeat(32)}, "verdict": "deny",
               "reason": "use the reporting role's default privileges", "grant_until": null}),
    );
    let truncate = l.push(
        tick(3),
        "command",
        Some(ci()),
        Some(s2),
        command_data(
            "TRUNCATE staging_orders",
            "write",
            "TRUNCATE",
            "review",
            Some("truncate"),
        ),
    );
    let req3 = l.push(
        tick(0),
        "approval.request",
        Some(ci()),
        Some(s2),
        json!({"review": "r-00000000c3", "command": {"index": truncate, "leaf": "22".repeat(32)},
               "rule": "truncate", "reason": "TRUNCATE", "approvers": ["dba"], "required": 1}),
    );
    l.push(
        tick(15),
        "approval.decision",
        Some(ci()),
        Some(s2),
        json!({"review": "r-00000000c3", "state": "expired", "approvals": 0, "required": 1,
               "request": {"index": req3, "leaf": "22".repeat(32)}}),
    );
    // Still open at the end of the window: no session.end.

    // An access request granted for two hours, from the admin API (no session).
    let req4 = l.push(
        tick(5),
        "approval.request",
        Some(human("carol@example.com", &["support"])),
        None,
        json!({"review": "r-00000000d4", "access": {"for_ms": 7_200_000}, "reason": "incident INC-77",
               "approvers": ["dba"], "required": 1}),
    );
    let access_at = tick(2);
    l.push(
        access_at,
        "approval.decision",
        Some(human("bob@example.com", &["dba"])),
        None,
        json!({"review": "r-00000000d4", "state": "approved", "approvals": 1, "required": 1,
               "request": {"index": req4, "leaf": "33".repeat(32)}, "verdict": "approve", "reason": "INC-77",
               "grant_until": access_at / 1000 + 7_200_000}),
    );
    let s3 = "s-ca401000000003";
    l.push(
        tick(1),
        "session.start",
        Some(human("carol@example.com", &["support"])),
        Some(s3),
        json!({"client": "10.0.0.30:51000", "tls": true,
               "access_grant": {"review": "r-00000000d4", "request": {"index": req4, "leaf": "33".repeat(32)}, "until": access_at / 1000 + 7_200_000}}),
    );
    let c = l.push(
        tick(1),
        "command",
        Some(human("carol@example.com", &["support"])),
        Some(s3),
        command_data(
            "SELECT * FROM customers WHERE id = 77",
            "read",
            "SELECT",
            "allow",
            None,
        ),
    );
    l.push(
        tick(0),
        "result",
        Some(human("carol@example.com", &["support"])),
        Some(s3),
        result_data(c, 1, Some((&[("email", 1)], &[("iban", 1)]))),
    );
    l.push(
        tick(9),
        "session.end",
        Some(human("carol@example.com", &["support"])),
        Some(s3),
        json!({"reason": "client closed the connection", "duration_ms": 11 * 60_000, "commands": 1, "denied": 0}),
    );
    l.push(
        tick(20),
        "config.change",
        Some(system()),
        None,
        json!({"policy": {"file": "/etc/gatehouse/policy.cedar", "trigger": "SIGHUP", "loaded": false, "error": "line 3: unexpected token"}}),
    );
    l.entries
}

/// What the report must show, counted here from the entries by rules of this test.
#[derive(Debug)]
struct Expected {
    entries: u64,
    sessions: u64,
    statements: u64,
    denials: u64,
    auth_failures: u64,
    requests: u64,
    approved: u64,
    denied: u64,
    expired: u64,
    grants: u64,
    masked: u64,
    changes: u64,
    config_changes: u64,
    masked_by_rule: BTreeMap<String, u64>,
}

fn expected(entries: &[(Value, String)]) -> Expected {
    let kind = |e: &Value, k: &str| e["kind"] == k;
    let count = |k: &str| entries.iter().filter(|(e, _)| kind(e, k)).count() as u64;
    let commands = || {
        entries
            .iter()
            .map(|(e, _)| e)
            .filter(|e| kind(e, "command"))
    };
    let states = |state: &str| {
        entries
            .iter()
            .filter(|(e, _)| kind(e, "approval.decision") && e["data"]["state"] == state)
            .map(|(e, _)| e["data"]["review"].as_str().unwrap().to_string())
            .collect::<BTreeSet<_>>()
    };
    let approved: BTreeSet<String> = states("approved")
        .union(&states("executed"))
        .cloned()
        .collect();
    let mut masked_by_rule = BTreeMap::new();
    let mut masked = 0;
    for (e, _) in entries.iter().filter(|(e, _)| kind(e, "result")) {
        masked += e["data"]["masked"]["values"].as_u64().unwrap_or(0);
        if let Some(rules) = e["data"]["masked"]["rules"].as_object() {
            for (label, n) in rules {
                *masked_by_rule.entry(label.clone()).or_insert(0) += n.as_u64().unwrap();
            }
        }
    }
    let change_words = ["CREATE", "ALTER", "DROP", "GRANT", "REVOKE", "TRUNCATE"];
    Expected {
        entries: entries.len() as u64,
        sessions: entries
            .iter()
            .filter_map(|(e, _)| e["session"].as_str())
            .collect::<BTreeSet<_>>()
            .len() as u64,
        statements: commands().count() as u64,
        denials: commands()
            .filter(|e| e["data"]["decision"]["outcome"] == "deny")
            .count() as u64
            + entries
                .iter()
                .filter(|(e, _)| kind(e, "policy.decision") && e["data"]["outcome"] != "allow")
                .count() as u64,
        auth_failures: count("auth.failure"),
        requests: count("approval.request"),
        approved: approved.len() as u64,
        denied: states("denied").len() as u64,
        expired: states("expired").len() as u64,
        grants: entries
            .iter()
            .filter(|(e, _)| kind(e, "approval.decision") && e["data"]["grant_until"].is_u64())
            .count() as u64,
        masked,
        changes: commands()
            .filter(|e| {
                let sql = e["data"]["sql"].as_str().unwrap_or("").to_ascii_uppercase();
                change_words.iter().any(|w| sql.starts_with(w))
            })
            .count() as u64,
        config_changes: count("config.change"),
        masked_by_rule,
    }
}

fn input<'a>(entries: &'a [(Value, String)], ok: bool) -> ReportInput<'a> {
    let n = entries.len() as u64;
    ReportInput {
        title: "pg-prod access review, 24 November 2025".into(),
        since: Some(T0),
        until: Some(T0 + 6 * 3600 * 1_000_000),
        user: None,
        resource: Some("pg-prod".into()),
        generated_at: T0 + 7 * 3600 * 1_000_000,
        verification: Verification {
            ok,
            summary: if ok {
                format!("verified: {n} entries lead to the signed root")
            } else {
                "entry 17: leaf hash does not match the tree; the ledger was altered".into()
            },
            origin: "gatehouse.example.com/pg-prod".into(),
            checkpoint_size: n + 3,
            root: "9f".repeat(32),
            matched: n,
            excluded: 3,
            pruned: 0,
        },
        entries,
    }
}

#[test]
fn report_opens_in_chromium_with_the_figures_the_entries_imply() {
    let Some(browser) = chromium("report_chromium") else {
        return;
    };
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report_chromium");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();

    let entries = scenario();
    let want = expected(&entries);
    // The scenario has something in every section.
    assert!(want.sessions >= 3 && want.denials >= 2 && want.masked > 0 && want.changes >= 4);

    let html = report::render(&input(&entries, true));
    let page = work.join("report.html");
    std::fs::write(&page, &html).unwrap();
    let dom = run_chromium(&browser, &work, &["--dump-dom".to_string()], &page);
    std::fs::write(work.join("report.dom.html"), &dom).unwrap();

    assert_eq!(element_text(&dom, "verification-status"), "VERIFIED");
    assert!(dom.contains("class=\"verification ok\""));
    assert_eq!(
        element_text(&dom, "verification-summary"),
        format!("verified: {} entries lead to the signed root", want.entries)
    );
    assert_eq!(
        element_text(&dom, "checkpoint-origin"),
        "gatehouse.example.com/pg-prod"
    );
    assert_eq!(figure(&dom, "checkpoint-size"), want.entries + 3);
    assert_eq!(element_text(&dom, "checkpoint-root"), "9f".repeat(32));

    for (id, value) in [
        ("entries-count", want.entries),
        ("sessions-count", want.sessions),
        ("statements-count", want.statements),
        ("denials-count", want.denials),
        ("auth-failures-count", want.auth_failures),
        ("approval-requests-count", want.requests),
        ("approvals-approved-count", want.approved),
        ("approvals-denied-count", want.denied),
        ("approvals-expired-count", want.expired),
        ("grants-count", want.grants),
        ("masked-values-count", want.masked),
        ("changes-count", want.changes),
        ("config-changes-count", want.config_changes),
    ] {
        assert_eq!(figure(&dom, id), value, "#{id}");
    }
    // The renderer's own count agrees with what the browser shows.
    let counted = report::figures(&entries);
    assert_eq!(counted.masked_values, want.masked);
    for (rule, n) in &want.masked_by_rule {
        assert!(
            dom.contains(&format!("data-rule=\"{rule}\" data-value=\"{n}\"")),
            "masking rule {rule}: {n}"
        );
    }
    // Every statement is a row naming its ledger entry, and the charts count them all.
    for (e, _) in entries.iter().filter(|(e, _)| e["kind"] == "command") {
        assert!(dom.contains(&format!("data-index=\"{}\"", e["i"])), "{e}");
    }
    assert!(dom.contains(&format!(
        "id=\"chart-statements\" class=\"chart\" viewBox=\"0 0 1000 180\" role=\"img\" aria-label=\"chart-statements\" data-total=\"{}\"",
        want.statements
    )));
    // The approval chain of the DROP: request, bob's approval with its (escaped) reason.
    assert!(dom.contains("approve by bob@example.com: “&lt;b&gt;cleanup&lt;/b&gt; per CHG-1042”"));

    // The hostile statement is text on the page, not markup: no script ran (the title is
    // intact) and no element came out of it.
    assert!(!dom.contains("<script"), "a script element reached the DOM");
    assert!(!dom.contains("<img"), "an img element reached the DOM");
    assert!(dom.contains("&lt;script&gt;document.title=\"pwned\"&lt;/script&gt;&lt;img src=x&gt;"));
    assert!(dom.contains("<title>pg-prod access review, 24 November 2025</title>"));

    // What the auditor sees.
    let shot = work.join("report.png");
    run_chromium(
        &browser,
        &work,
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,2000".to_string(),
        ],
        &page,
    );
    let png = std::fs::read(&shot).expect("the screenshot was written");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    assert!(png.len() > 30_000, "screenshot is {} bytes", png.len());
    eprintln!("report_chromium: screenshot at {}", shot.display());

    // A ledger that did not verify is shown as such.
    let failed = work.join("report-failed.html");
    std::fs::write(&failed, report::render(&input(&entries, false))).unwrap();
    let dom = run_chromium(
        &browser,
        &work,
        &["--dump-dom".to_string(), "--lang=en".to_string()],
        &failed,
    );
    assert_eq!(
        element_text(&dom, "verification-status"),
        "VERIFICATION FAILED"
    );
    assert!(dom.contains("class=\"verification fail\""));
    assert!(dom.contains("role=\"alert\""));
}

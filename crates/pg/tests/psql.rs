//! The PostgreSQL gateway end to end: a real cluster (SCRAM), real `psql` and `pgbench`
//! through the gateway, and the ledger read back afterwards.
#![allow(clippy::unwrap_used)] // a test (or bench) that cannot go on fails by panicking

mod harness;

use std::path::{Path, PathBuf};
use std::process::Command;

use gatehouse_config::IdentityKind;
use gatehouse_core::Durability;
use gatehouse_ledger::{Layout, LedgerOptions};
use harness::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_through_the_gateway_is_recorded_before_it_runs() {
    let gw = gateway(Durability::Sync).await;
    let direct = gw
        .pg
        .psql("appdb", "SELECT name FROM customers ORDER BY id")
        .unwrap();

    let out = gw.psql(
        "alice",
        KEY,
        &["-c", "SELECT name FROM customers ORDER BY id"],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout, direct);

    // Several statements in one message, and an error inside a transaction.
    let script =
        "BEGIN; INSERT INTO customers VALUES (3, 'Linus', 'l@example.com'); SELECT 1/0; ROLLBACK;";
    let out = gw.psql("alice", KEY, &["-c", script]);
    let (_, stderr) = text(&out);
    assert!(stderr.contains("division by zero"), "{stderr}");
    let out = gw.psql("alice", KEY, &["-c", "SELECT count(*) FROM customers"]);
    assert_eq!(
        text(&out).0,
        "2",
        "the failed transaction left nothing behind"
    );

    let entries = gw.entries().await;
    let starts = of_kind(&entries, "session.start");
    assert_eq!(starts.len(), 3);
    assert_eq!(starts[0]["actor"]["id"], "alice");
    assert_eq!(starts[0]["actor"]["kind"], "human");
    assert_eq!(starts[0]["resource"]["name"], "pg-test");
    assert_eq!(starts[0]["data"]["application"], "psql");
    let commands = of_kind(&entries, "command");
    let sqls: Vec<&str> = commands
        .iter()
        .map(|c| c["data"]["sql"].as_str().unwrap())
        .collect();
    assert!(
        sqls.contains(&"SELECT name FROM customers ORDER BY id"),
        "{sqls:?}"
    );
    assert!(sqls.contains(&script), "{sqls:?}");
    // Every result names the command it belongs to, and comes after it.
    let results = of_kind(&entries, "result");
    assert_eq!(results.len(), commands.len());
    for r in &results {
        let command = r["data"]["command"].as_u64().unwrap();
        assert!(r["i"].as_u64().unwrap() > command);
        assert_eq!(entries[command as usize]["kind"], "command");
        assert_eq!(entries[command as usize]["session"], r["session"]);
    }
    let failed = results
        .iter()
        .find(|r| r["data"]["error"] == "22012")
        .expect("the division by zero is recorded");
    assert_eq!(failed["data"]["tags"][0], "BEGIN");
    let select = results
        .iter()
        .find(|r| r["data"]["tags"][0] == "SELECT 2")
        .unwrap();
    assert_eq!(select["data"]["rows"], 2);
    assert_eq!(of_kind(&entries, "session.end").len(), 3);
    let _ = gw.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_keys_are_refused_alike_and_recorded_with_the_reason() {
    let gw = gateway(Durability::Sync).await;
    for (user, key, reason) in [
        ("alice", "gh_wrong", "wrong_key"),
        ("mallory", KEY, "unknown_identity"),
    ] {
        let stderr = gw.refused(user, key);
        assert!(
            !stderr.contains(reason),
            "the client gets no hint: {stderr}"
        );
    }
    let entries = gw.entries().await;
    let failures = of_kind(&entries, "auth.failure");
    assert_eq!(failures.len(), 2);
    assert_eq!(failures[0]["data"]["reason"], "wrong_key");
    assert_eq!(failures[1]["data"]["reason"], "unknown_identity");
    assert_eq!(failures[1]["data"]["user"], "mallory");
    assert!(
        !serde_json::to_string(&entries)
            .unwrap()
            .contains("gh_wrong"),
        "keys never reach the ledger"
    );
    assert!(of_kind(&entries, "session.start").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_in_every_protocol_mode_is_recorded_per_statement() {
    let gw = gateway(Durability::Batched).await;
    let bench = |args: &[&str]| {
        Command::new(gw.pg.bindir().join("pgbench"))
            .args(["-h", "127.0.0.1", "-U"])
            .args(args)
            .env("PGPASSWORD", KEY)
            .output()
            .unwrap()
    };
    // Initialise directly as the app role, then run through the gateway.
    let init = Command::new(gw.pg.bindir().join("pgbench"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &gw.pg.port.to_string(),
            "-U",
            "app",
            "-i",
            "-s",
            "1",
            "-q",
            "appdb",
        ])
        .env("PGPASSWORD", "app-secret")
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let port = gw.port.to_string();
    for mode in ["simple", "extended", "prepared"] {
        let out = bench(&[
            "alice", "-p", &port, "-S", "-M", mode, "-c", "4", "-t", "25", "appdb",
        ]);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{mode}: {stderr}");
        assert!(
            stdout.contains("number of transactions actually processed: 100/100"),
            "{mode}: {stdout}"
        );
    }
    let entries = gw.entries().await;
    let selects: Vec<&Value> = of_kind(&entries, "command")
        .into_iter()
        .filter(|c| {
            c["data"]["sql"]
                .as_str()
                .is_some_and(|s| s.starts_with("SELECT abalance FROM pgbench_accounts"))
        })
        .collect();
    let count = |protocol: &str| {
        selects
            .iter()
            .filter(|c| c["data"]["protocol"] == protocol)
            .count()
    };
    assert_eq!(count("simple"), 100);
    // extended + prepared
    assert_eq!(count("extended"), 200);
    let failed: Vec<&Value> = of_kind(&entries, "result")
        .into_iter()
        .filter(|r| !r["data"]["error"].is_null())
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    let _ = gw.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_are_refused_when_the_ledger_cannot_record_them() {
    let gw = gateway(Durability::Sync).await;
    let out = gw.psql("alice", KEY, &["-c", "SELECT 1"]);
    assert!(out.status.success());
    // Open a session, then take the ledger away under it.
    let mut child = Command::new(gw.pg.bindir().join("psql"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &gw.port.to_string(),
            "-U",
            "alice",
            "-d",
            "appdb",
            "-X",
            "-A",
            "-t",
        ])
        .env("PGPASSWORD", KEY)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"SELECT 'before';\n").unwrap();
    stdin.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let ledger = gw.ledger.clone();
    tokio::task::spawn_blocking(move || ledger.close())
        .await
        .unwrap()
        .unwrap();
    stdin
        .write_all(b"DELETE FROM customers;\nSELECT 'after';\n")
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = text(&out);
    assert!(stdout.contains("before"), "{stdout}");
    assert!(
        stderr.contains("audit ledger cannot record this, so it was not executed"),
        "{stderr}"
    );
    assert!(!stdout.contains("after"), "{stdout}");
    assert_eq!(
        gw.pg
            .psql("appdb", "SELECT count(*) FROM customers")
            .unwrap(),
        "2",
        "the DELETE never ran"
    );
    // New sessions are refused too.
    let out = gw.psql("alice", KEY, &["-c", "SELECT 1"]);
    assert!(!out.status.success());
    let _ = gw.stop.send(true);
}

/// A small tmpfs mounted for one test, so that the ledger's disk can really fill up.
struct SmallDisk {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(bytes: u64) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs to fill the ledger's disk and needs root \
             (CAP_SYS_ADMIN): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { path, _dir: dir }
    }

    /// Takes every free byte.
    fn fill(&self) {
        use std::io::Write;
        let mut file = std::fs::File::create(self.path.join("filler")).unwrap();
        let block = vec![7u8; 4096];
        while file.write_all(&block).is_ok() {}
    }

    fn free(&self) {
        std::fs::remove_file(self.path.join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_ledger_disk_refuses_statements_and_serving_resumes_when_space_is_back() {
    let disk = SmallDisk::mount(2 << 20);
    let opts = LedgerOptions {
        segment_size: 256 << 10,
        retry_interval: std::time::Duration::from_millis(200),
        ..LedgerOptions::default()
    };
    let gw = gateway_on(Setup {
        ledger_dir: Some(disk.path.join("data")),
        opts,
        ..Setup::default()
    })
    .await;
    let out = gw.psql("alice", KEY, &["-c", "SELECT 'first'"]);
    assert!(out.status.success(), "{:?}", text(&out));

    // The disk fills up: the current segment and its spare still take entries, then the
    // ledger cannot start a new segment.
    disk.fill();
    let pad = "x".repeat(8000);
    let mut refused = None;
    for id in 100..400 {
        let sql = format!("INSERT INTO customers VALUES ({id}, 'pad', '{pad}')");
        let out = gw.psql("alice", KEY, &["-c", &sql]);
        if !out.status.success() {
            let (_, stderr) = text(&out);
            assert!(
                stderr.contains("the audit ledger cannot record this, so it was not executed"),
                "{stderr}"
            );
            refused = Some(id);
            break;
        }
    }
    let refused = refused.expect("a full disk made the ledger refuse a statement");
    assert_eq!(
        gw.pg
            .psql(
                "appdb",
                &format!("SELECT count(*) FROM customers WHERE id = {refused}")
            )
            .unwrap(),
        "0",
        "the refused INSERT never reached the target"
    );
    // While the disk stays full, an entry that needs a new segment cannot get through. (A
    // small one may: the ledger's own retry can recover into the room left in the current
    // segment, which is correct, so only the large statement is checked here.)
    let sql = format!("INSERT INTO customers VALUES ({refused}, 'pad', '{pad}')");
    let out = gw.psql("alice", KEY, &["-c", &sql]);
    assert!(!out.status.success(), "{:?}", text(&out));

    // Space comes back: the ledger recovers by itself and the gateway serves again.
    disk.free();
    let mut served = false;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let out = gw.psql("alice", KEY, &["-c", "SELECT 'after recovery'"]);
        if out.status.success() {
            assert!(text(&out).0.contains("after recovery"));
            served = true;
            break;
        }
    }
    assert!(served, "the gateway serves again once the disk has room");
    assert_eq!(gw.ledger.status().failed, None);
    let sql = format!("INSERT INTO customers VALUES ({refused}, 'pad', '{pad}')");
    let out = gw.psql("alice", KEY, &["-c", &sql]);
    assert!(out.status.success(), "{:?}", text(&out));

    let entries = gw.entries().await;
    // Each refusal is followed by one recovery once there is room, and each names the cause.
    let recoveries = of_kind(&entries, "ledger.recovery");
    assert!((1..=2).contains(&recoveries.len()), "{recoveries:?}");
    for recovery in &recoveries {
        let data = &recovery["data"];
        assert!(
            data["failure"].as_str().unwrap().contains("No space left"),
            "{data}"
        );
    }
    // Every INSERT recorded as a command ran on the target, and none that was refused.
    let inserted: Vec<u64> = of_kind(&entries, "command")
        .iter()
        .filter_map(|e| e["data"]["sql"].as_str())
        .filter(|sql| sql.starts_with("INSERT"))
        .map(|sql| sql[30..33].parse().unwrap())
        .collect();
    assert_eq!(inserted, (100..=refused).collect::<Vec<_>>());
    let on_target = gw
        .pg
        .psql("appdb", "SELECT count(*) FROM customers WHERE id >= 100")
        .unwrap();
    assert_eq!(on_target, (refused - 99).to_string());
    // And the ledger, with its recovery, verifies.
    let summary = verify_ledger(&gw.ledger_dir);
    assert_eq!(summary.entries, entries.len() as u64);
    let _ = gw.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_target_connection_uses_verified_tls_when_configured() {
    // The cluster refuses plaintext TCP, so a session at all proves TLS; the server's own
    // view of the connection confirms it.
    let gw = gateway_on(Setup {
        with_tls: true,
        target: Target::Tls {
            trusted: true,
            server_name: None,
        },
        ..Setup::default()
    })
    .await;
    let query = |sql: &str| {
        let out = gw.psql("alice", KEY, &["-c", sql]);
        assert!(out.status.success(), "{:?}", text(&out));
        text(&out).0
    };
    assert_eq!(
        query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").trim(),
        "t"
    );
    // 4.5 MB of rows back through both TLS legs: many records, and a socket that fills up.
    let rows = query("SELECT repeat('x', g) FROM generate_series(1, 3000) g");
    let lengths: Vec<usize> = rows.lines().map(str::len).collect();
    assert_eq!(lengths, (1..=3000).collect::<Vec<_>>());
    let entries = gw.entries().await;
    let start = of_kind(&entries, "session.start")[0].clone();
    assert_eq!(start["data"]["target_tls"], true);
    assert_eq!(start["data"]["tls"], true);
    let _ = gw.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_certificate_that_does_not_verify_ends_the_session_before_anything_runs() {
    for (trusted, server_name) in [(false, None), (true, Some("db.example.com"))] {
        let gw = gateway_on(Setup {
            target: Target::Tls {
                trusted,
                server_name,
            },
            ..Setup::default()
        })
        .await;
        let out = gw.psql("alice", KEY, &["-c", "SELECT 'should not run'"]);
        let (stdout, stderr) = text(&out);
        assert!(!out.status.success(), "{stdout}");
        assert!(
            stderr.contains("resource pg-test is unavailable"),
            "{stderr}"
        );
        let entries = gw.entries().await;
        assert!(of_kind(&entries, "command").is_empty());
        let failure = of_kind(&entries, "target.failure");
        assert_eq!(failure.len(), 1, "{entries:?}");
        let reason = failure[0]["data"]["reason"].as_str().unwrap();
        assert!(reason.contains("TLS with 127.0.0.1"), "{reason}");
        // Another CA with the same (default) name shows as a bad signature.
        let expected = if trusted {
            "certificate not valid for name \"db.example.com\""
        } else {
            "invalid peer certificate"
        };
        assert!(reason.contains(expected), "{reason}");
        assert_eq!(failure[0]["actor"]["id"], "alice");
        let _ = gw.stop.send(true);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guardrails_deny_on_parsed_statements_and_the_session_goes_on() {
    let gw = gateway(Durability::Sync).await;
    let script = "DROP DATABASE appdb;\n\
                  DELETE /* all of it */ FROM customers;\n\
                  WITH gone AS (DELETE FROM customers RETURNING id) SELECT count(*) FROM gone;\n\
                  SELEC 1;\n\
                  SELECT * FROM payroll_2026;\n\
                  DELETE FROM customers WHERE id = 99;\n\
                  SELECT count(*) FROM customers;\n";
    let mut child = Command::new(gw.pg.bindir().join("psql"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &gw.port.to_string(),
            "-U",
            "alice",
            "-d",
            "appdb",
            "-X",
            "-A",
            "-t",
        ])
        .env("PGPASSWORD", KEY)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = text(&out);
    assert!(
        stderr.contains("gatehouse: denied: databases are not dropped through the gateway"),
        "{stderr}"
    );
    assert!(
        stderr.contains("gatehouse: denied: denied by rule no-unbounded-writes"),
        "{stderr}"
    );
    // Text the parser rejects gets the server's own syntax error, with its caret.
    assert!(
        stderr.contains("ERROR:  syntax error at or near \"SELEC\"\nLINE 1: SELEC 1;"),
        "{stderr}"
    );
    assert!(stderr.contains("needs an approval"), "{stderr}");
    // The bounded DELETE ran (and matched nothing); the data is all still there.
    assert_eq!(stdout.lines().last(), Some("2"), "{stdout}");
    assert_eq!(
        gw.pg
            .psql("appdb", "SELECT count(*) FROM customers")
            .unwrap(),
        "2"
    );

    // The extended protocol is decided the same way (pgbench sends Parse/Bind/Execute).
    let script_path = gw.data.path().join("wipe.sql");
    std::fs::write(&script_path, "DELETE FROM customers;\n").unwrap();
    let bench = Command::new(gw.pg.bindir().join("pgbench"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &gw.port.to_string(),
            "-U",
            "alice",
            "-n",
            "-M",
            "prepared",
            "-t",
            "1",
        ])
        .arg("-f")
        .arg(&script_path)
        .arg("appdb")
        .env("PGPASSWORD", KEY)
        .output()
        .unwrap();
    let (_, bench_err) = text(&bench);
    assert!(
        bench_err.contains("denied by rule no-unbounded-writes"),
        "{bench_err}"
    );
    assert_eq!(
        gw.pg
            .psql("appdb", "SELECT count(*) FROM customers")
            .unwrap(),
        "2"
    );

    let entries = gw.entries().await;
    let decided: Vec<(String, Value)> = of_kind(&entries, "command")
        .iter()
        .map(|c| {
            (
                c["data"]["sql"].as_str().unwrap_or("").to_string(),
                c["data"]["decision"].clone(),
            )
        })
        .collect();
    let find = |needle: &str| {
        decided
            .iter()
            .find(|(sql, _)| sql.contains(needle))
            .unwrap_or_else(|| panic!("{needle} not recorded: {decided:#?}"))
            .1
            .clone()
    };
    assert_eq!(find("DROP DATABASE")["outcome"], "deny");
    assert_eq!(find("DROP DATABASE")["rule"], "no-drop-db");
    assert_eq!(find("WITH gone")["rule"], "no-unbounded-writes");
    assert_eq!(find("SELEC 1")["outcome"], "deny");
    assert_eq!(find("payroll_2026")["outcome"], "review");
    assert_eq!(find("WHERE id = 99")["outcome"], "allow");
    let drop = of_kind(&entries, "command")
        .into_iter()
        .find(|c| c["data"]["sql"] == "DROP DATABASE appdb;")
        .unwrap()
        .clone();
    assert_eq!(drop["data"]["classes"][0], "ddl");
    assert_eq!(drop["data"]["commands"][0], "DROP DATABASE");
    // A denied statement gets no result entry: it never ran.
    let index = drop["i"].as_u64().unwrap();
    assert!(
        of_kind(&entries, "result")
            .iter()
            .all(|r| r["data"]["command"] != index)
    );
    let _ = gw.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_both_ways_and_cancel_reach_the_target() {
    let gw = gateway(Durability::Sync).await;
    // COPY FROM STDIN and COPY TO STDOUT through psql's \copy.
    let csv = gw.data.path().join("in.csv");
    std::fs::write(&csv, "10,Edsger,e@example.com\n11,Barbara,b@example.com\n").unwrap();
    let copy_in = format!(
        "\\copy customers FROM '{}' WITH (FORMAT csv)",
        csv.display()
    );
    let out = gw.psql("alice", KEY, &["-c", &copy_in]);
    assert!(out.status.success(), "{}", text(&out).1);
    assert_eq!(text(&out).0, "COPY 2");
    let out = gw.psql(
        "alice",
        KEY,
        &[
            "-c",
            "\\copy (SELECT name FROM customers ORDER BY id) TO STDOUT",
        ],
    );
    assert_eq!(text(&out).0, "Ada\nGrace\nEdsger\nBarbara");

    // psql sends a CancelRequest to the gateway on SIGINT; it must reach the right backend.
    let child = Command::new(gw.pg.bindir().join("psql"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &gw.port.to_string(),
            "-U",
            "alice",
            "-d",
            "appdb",
            "-X",
        ])
        .args(["-c", "SELECT pg_sleep(30)"])
        .env("PGPASSWORD", KEY)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    // Wait until the sleep is running on the target.
    loop {
        let running = gw
            .pg
            .psql("appdb", "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'")
            .unwrap();
        if running == "1" {
            break;
        }
        assert!(started.elapsed().as_secs() < 20, "the sleep never started");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert!(
        started.elapsed().as_secs() < 20,
        "the statement was not cancelled"
    );
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains("canceling statement due to user request"),
        "{stderr}"
    );

    let entries = gw.entries().await;
    let copy = of_kind(&entries, "result")
        .into_iter()
        .find(|r| r["data"]["tags"][0] == "COPY 2")
        .expect("the COPY result is recorded");
    assert_eq!(copy["data"]["rows"], 2);
    let cancelled = of_kind(&entries, "result")
        .into_iter()
        .find(|r| r["data"]["error"] == "57014")
        .expect("the cancelled statement's result carries SQLSTATE 57014");
    assert!(cancelled["data"]["duration_us"].as_u64().unwrap() > 0);
    let _ = gw.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_offered_verified_and_required() {
    let gw = gateway_with(Durability::Sync, true).await;
    let conn = |mode: &str| {
        format!(
            "host=127.0.0.1 port={} user=alice dbname=appdb sslmode={mode} sslrootcert={}",
            gw.port,
            gw.data.path().join("demo-tls.crt").display()
        )
    };
    let psql = |conninfo: String, sql: &str| {
        Command::new(gw.pg.bindir().join("psql"))
            .args([conninfo.as_str(), "-X", "-A", "-t", "-c", sql])
            .env("PGPASSWORD", KEY)
            .output()
            .unwrap()
    };
    // verify-full checks the certificate against the CA file and the host name.
    let out = psql(conn("verify-full"), "SELECT count(*) FROM customers");
    assert!(out.status.success(), "{}", text(&out).1);
    assert_eq!(text(&out).0, "2");
    let out = psql(conn("disable"), "SELECT 1");
    assert!(!out.status.success());
    assert!(text(&out).1.contains("requires TLS"), "{}", text(&out).1);

    let entries = gw.entries().await;
    let start = of_kind(&entries, "session.start")[0].clone();
    assert_eq!(start["data"]["tls"], true);
    let failure = of_kind(&entries, "auth.failure")[0].clone();
    assert_eq!(failure["data"]["reason"], "tls_required");
    let _ = gw.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_binary_cursors_copy_and_pipelines_work_through_the_gateway() {
    let gw = gateway(Durability::Batched).await;
    let out = psycopg(&gw, "psycopg_check.py");
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "psycopg checks failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("psycopg checks passed"));

    let entries = gw.entries().await;
    let commands = of_kind(&entries, "command");
    let prepared: Vec<&&Value> = commands
        .iter()
        .filter(|c| {
            c["data"]["sql"]
                .as_str()
                .is_some_and(|s| s.starts_with("SELECT count(*) FROM customers WHERE id >"))
        })
        .collect();
    assert_eq!(
        prepared.len(),
        6,
        "each execution of the prepared statement is recorded"
    );
    assert!(prepared.iter().all(|c| c["data"]["protocol"] == "extended"));
    for sql in [
        "LISTEN gatehouse_events",
        "NOTIFY gatehouse_events, 'hello'",
    ] {
        assert!(
            commands.iter().any(|c| c["data"]["sql"] == sql),
            "{sql} is recorded"
        );
    }
    // Every "SELECT 2" sent after the failing "SELECT 1/0" in a pipeline was skipped.
    let second: Vec<u64> = commands
        .iter()
        .filter(|c| c["data"]["sql"] == "SELECT 2")
        .map(|c| c["i"].as_u64().unwrap())
        .collect();
    assert_eq!(second.len(), 20);
    for index in second {
        let result = of_kind(&entries, "result")
            .into_iter()
            .find(|r| r["data"]["command"] == index)
            .expect("every statement has a result entry");
        assert_eq!(result["data"]["skipped"], true, "{result}");
    }
    let _ = gw.stop.send(true);
}

/// The frames stored for command `command`: its parts from every `recording` entry, in
/// ledger order, read back from their chunks.
fn recorded_output(dir: &Path, entries: &[Value], command: u64) -> Vec<u8> {
    let layout = Layout::new(dir);
    let mut out = Vec::new();
    for rec in of_kind(entries, "recording") {
        let chunk: gatehouse_core::ChunkRef =
            serde_json::from_value(rec["chunks"][0].clone()).unwrap();
        let bytes = gatehouse_ledger::chunks::read_chunk(&layout, &chunk).unwrap();
        for part in rec["data"]["parts"].as_array().unwrap() {
            let [cmd, offset, len] = [0, 1, 2].map(|i| part[i].as_u64().unwrap() as usize);
            if cmd as u64 == command {
                out.extend_from_slice(&bytes[offset..offset + len]);
            }
        }
    }
    out
}

/// The text columns of every DataRow in `frames` (NULL as `None`), and the column names of
/// the RowDescriptions.
fn decode_rows(frames: &[u8]) -> (Vec<String>, Vec<Vec<Option<String>>>) {
    let (mut names, mut rows) = (Vec::new(), Vec::new());
    let mut rest = frames;
    while !rest.is_empty() {
        let len = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
        let (tag, body) = (rest[0], &rest[5..1 + len]);
        let count = u16::from_be_bytes(body[..2].try_into().unwrap()) as usize;
        let mut at = 2;
        match tag {
            b'T' => {
                for _ in 0..count {
                    let end = at + body[at..].iter().position(|&b| b == 0).unwrap();
                    names.push(String::from_utf8(body[at..end].to_vec()).unwrap());
                    at = end + 1 + 18; // table oid, column, type oid, size, modifier, format
                }
            }
            b'D' => {
                let mut row = Vec::new();
                for _ in 0..count {
                    let n = i32::from_be_bytes(body[at..at + 4].try_into().unwrap());
                    at += 4;
                    if n < 0 {
                        row.push(None);
                    } else {
                        let n = n as usize;
                        row.push(Some(String::from_utf8(body[at..at + n].to_vec()).unwrap()));
                        at += n;
                    }
                }
                rows.push(row);
            }
            other => panic!("unexpected frame {:?} in a recording", other as char),
        }
        rest = &rest[1 + len..];
    }
    (names, rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_data_is_recorded_in_chunks_and_tied_to_each_result() {
    let gw = gateway(Durability::Sync).await;
    // Simple protocol, a result bigger than one chunk, a statement without rows, and the
    // extended protocol.
    let big = "SELECT g, repeat('x', 1000) AS filler FROM generate_series(1, 600) g";
    let script = gw.data.path().join("recorded.sql");
    std::fs::write(
        &script,
        format!(
            "SELECT id, name, email FROM customers ORDER BY id;\n{big};\n\
             UPDATE customers SET name = name WHERE id = 1;\n"
        ),
    )
    .unwrap();
    let out = gw.psql("alice", KEY, &["-f", script.to_str().unwrap()]);
    assert!(out.status.success(), "{:?}", text(&out));
    // libpq's extended protocol: Parse/Bind/Describe/Execute/Sync with a parameter.
    let bound = gw.data.path().join("bound.sql");
    std::fs::write(&bound, "\\set n 41\nSELECT :n::int + 1 AS next;\n").unwrap();
    let bench = Command::new(gw.pg.bindir().join("pgbench"))
        .args(["-h", "127.0.0.1", "-p", &gw.port.to_string(), "-U", "alice"])
        .args(["-n", "-M", "extended", "-t", "1", "-f"])
        .arg(&bound)
        .arg("appdb")
        .env("PGPASSWORD", KEY)
        .output()
        .unwrap();
    assert!(bench.status.success(), "{:?}", text(&bench));
    let entries = gw.entries().await;
    let command_of = |sql: &str| {
        of_kind(&entries, "command")
            .into_iter()
            .find(|c| {
                // psql sends script statements with their semicolon.
                let text = c["data"]["sql"].as_str().unwrap_or_default();
                text.trim().trim_end_matches(';').trim() == sql
            })
            .unwrap_or_else(|| {
                panic!(
                    "no command entry for {sql}: {:?}",
                    of_kind(&entries, "command")
                        .iter()
                        .map(|c| c["data"]["sql"].clone())
                        .collect::<Vec<_>>()
                )
            })["i"]
            .as_u64()
            .unwrap()
    };
    let result_of = |command: u64| {
        of_kind(&entries, "result")
            .into_iter()
            .find(|r| r["data"]["command"] == command)
            .unwrap()
            .clone()
    };

    let small = command_of("SELECT id, name, email FROM customers ORDER BY id");
    let frames = recorded_output(&gw.ledger_dir, &entries, small);
    let (names, rows) = decode_rows(&frames);
    assert_eq!(names, ["id", "name", "email"]);
    assert_eq!(
        rows,
        [
            ["1", "Ada", "ada@example.com"].map(|v| Some(v.to_string())),
            ["2", "Grace", "grace@example.com"].map(|v| Some(v.to_string())),
        ]
    );
    let recorded = &result_of(small)["data"]["recorded"];
    assert_eq!(recorded["bytes"], frames.len());

    let big = command_of(big);
    let (_, rows) = decode_rows(&recorded_output(&gw.ledger_dir, &entries, big));
    assert_eq!(rows.len(), 600);
    assert_eq!(rows[599][0].as_deref(), Some("600"));
    assert_eq!(rows[599][1].as_ref().map(String::len), Some(1000));
    let spanned = of_kind(&entries, "recording")
        .iter()
        .filter(|r| {
            r["data"]["parts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p[0] == big)
        })
        .count();
    assert!(spanned >= 2, "600 KB is cut into several chunks");

    let bound = command_of("SELECT $1::int + 1 AS next");
    let (names, rows) = decode_rows(&recorded_output(&gw.ledger_dir, &entries, bound));
    assert_eq!(
        names,
        ["next"],
        "the Describe's RowDescription goes with the Execute"
    );
    assert_eq!(rows, [[Some("42".to_string())]]);

    // A statement without rows records no data.
    let update = result_of(command_of("UPDATE customers SET name = name WHERE id = 1"));
    assert!(update["data"].get("recorded").is_none(), "{update}");

    let end = &of_kind(&entries, "session.end")[0]["data"];
    assert!(end["recorded_bytes"].as_u64().unwrap() > 600_000, "{end}");
    assert_eq!(end["truncated_bytes"], 0);
    let summary = verify_ledger(&gw.ledger_dir);
    assert_eq!(summary.outputs_matched, 3);
    assert_eq!(
        (summary.outputs_incomplete, summary.outputs_unclaimed),
        (0, 0)
    );
    let _ = gw.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_cap_truncates_recorded_data_explicitly() {
    let cap = 100 << 10;
    let gw = gateway_on(Setup {
        record_cap: Some(cap),
        ..Setup::default()
    })
    .await;
    let out = gw.psql(
        "alice",
        KEY,
        &[
            "-c",
            "SELECT repeat('y', 1000) FROM generate_series(1, 300)",
            "-c",
            "SELECT 'after the cap'",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.ends_with("after the cap"),
        "the client gets everything"
    );
    let entries = gw.entries().await;
    let results = of_kind(&entries, "result");
    let first = &results[0]["data"];
    let kept = first["recorded"]["bytes"].as_u64().unwrap();
    let cut = first["truncated_bytes"].as_u64().unwrap();
    assert!(
        kept <= cap && kept > cap - 2000,
        "whole frames up to the cap: {kept}"
    );
    // Everything the result sent is either kept or counted: its rows, and one short
    // RowDescription that `bytes` (row data only) leaves out.
    let rows = first["bytes"].as_u64().unwrap();
    assert!(kept + cut > rows && kept + cut < rows + 100, "{first}");
    // Nothing after the cut is kept, so the stored data is a prefix of the session's output.
    assert!(results[1]["data"].get("recorded").is_none());
    assert!(results[1]["data"]["truncated_bytes"].as_u64().unwrap() > 0);
    let end = &of_kind(&entries, "session.end")[0]["data"];
    assert_eq!(end["recorded_bytes"], kept);
    assert!(end["truncated_bytes"].as_u64().unwrap() > cut);
    let summary = verify_ledger(&gw.ledger_dir);
    assert_eq!(summary.outputs_matched, 1);
    let _ = gw.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_may_record_summaries_only() {
    let gw = gateway_on(Setup {
        record_cap: None,
        ..Setup::default()
    })
    .await;
    let out = gw.psql("alice", KEY, &["-c", "SELECT name FROM customers"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let entries = gw.entries().await;
    assert!(of_kind(&entries, "recording").is_empty());
    let result = &of_kind(&entries, "result")[0]["data"];
    assert_eq!(result["rows"], 2);
    assert!(result.get("recorded").is_none() && result.get("truncated_bytes").is_none());
    let start = &of_kind(&entries, "session.start")[0]["data"];
    assert_eq!(start["recording"]["results"], false);
    let _ = gw.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_keys_sign_in_until_revoked_or_expired() {
    use gatehouse_identity::unix_now;

    let gw = gateway(Durability::Sync).await;
    let (live_id, live) = gw
        .add_agent_key("agent:reporting", &["analysts"], Some(unix_now() + 3600))
        .await;
    let (old_id, old) = gw
        .add_agent_key("agent:reporting", &["analysts"], Some(unix_now() - 1))
        .await;

    let out = gw.psql("agent:reporting", &live, &["-c", "SELECT current_user"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stdout, "app",
        "the target sees the gateway's login, not the agent"
    );

    gw.refused("agent:reporting", &old);
    // A valid key under another identity's name is a wrong key.
    gw.refused("alice", &live);
    gw.store
        .revoke_key(&live_id, Some("rotated"), unix_now(), "test")
        .await
        .unwrap();
    gw.refused("agent:reporting", &live);

    let entries = gw.entries().await;
    let start = &of_kind(&entries, "session.start")[0];
    assert_eq!(start["actor"]["id"], "agent:reporting");
    assert_eq!(start["actor"]["kind"], "agent");
    assert_eq!(start["actor"]["groups"][0], "analysts");
    assert_eq!(start["data"]["key_id"], live_id.as_str());
    let failures: Vec<(String, String)> = of_kind(&entries, "auth.failure")
        .iter()
        .map(|f| {
            (
                f["data"]["reason"].as_str().unwrap().to_string(),
                f["data"]["key_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        failures,
        [
            ("expired_key".to_string(), old_id.clone()),
            ("wrong_key".to_string(), live_id.clone()),
            ("revoked_key".to_string(), live_id.clone()),
        ]
    );
    // Key ids are recorded; the keys themselves never are.
    let ledger_text: String = entries.iter().map(|e| e.to_string()).collect();
    assert!(!ledger_text.contains(&live) && !ledger_text.contains(&old));
    let _ = gw.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_tokens_sign_in_and_every_bad_token_is_refused_with_its_reason() {
    use gatehouse_testkit::OidcProvider;

    let keys_dir = tempfile::tempdir().unwrap();
    let first_keys = keys_dir.path().join("keys-1.json");
    let provider = {
        let path = first_keys.clone();
        tokio::task::spawn_blocking(move || OidcProvider::start(&path, 0))
            .await
            .unwrap()
            .unwrap()
    };
    let port = provider.port;
    let issuer = gatehouse_config::IssuerConfig {
        name: "test-op".into(),
        issuer: provider.issuer(),
        audiences: vec!["gatehouse".into()],
        algorithms: vec!["RS256".into(), "ES256".into(), "EdDSA".into()],
        leeway: std::time::Duration::from_secs(30),
        username_claim: "sub".into(),
        groups_claim: "groups".into(),
        kind: IdentityKind::Service,
        jwks_refresh: std::time::Duration::from_secs(3600),
        claim_rules: Vec::new(),
    };
    let gw = gateway_on(Setup {
        issuers: vec![issuer],
        // Every bad token below is one more failure from this address: the throttle is
        // tested on its own.
        limits: gatehouse_config::LimitsConfig {
            free_failed_sign_ins: 1000,
            ..Default::default()
        },
        ..Setup::default()
    })
    .await;

    // A real client-credentials token from the provider, through psql's PGPASSWORD.
    let token = provider.token("ci").unwrap();
    assert!(token.len() > 500, "a long token: {}", token.len());
    let out = gw.psql("ci", &token, &["-c", "SELECT 'signed in with a token'"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout, "signed in with a token");
    // The token's groups drive decisions: `ci` is in `deployers`, which may not run DDL.
    let out = gw.psql("ci", &token, &["-c", "CREATE TABLE made_by_ci (i int)"]);
    assert!(
        text(&out)
            .1
            .contains("deployers change schemas through the pipeline"),
        "{:?}",
        text(&out)
    );

    // Tokens an attacker or a broken provider would make.
    let now = gatehouse_identity::unix_now();
    let iss = provider.issuer();
    let claims = |patch: serde_json::Value| {
        let mut c = serde_json::json!({
            "iss": iss, "sub": "ci", "aud": "gatehouse", "iat": now - 10, "exp": now + 300,
            "groups": ["deployers"], "jti": "forged",
        });
        for (k, v) in patch.as_object().unwrap() {
            c[k] = v.clone();
        }
        c.to_string()
    };
    let forge =
        |mode: &str, patch: serde_json::Value| provider.forge(mode, &claims(patch)).unwrap();
    // Changing one claim of a real token breaks its signature.
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let mut payload: serde_json::Value =
        serde_json::from_slice(&base64_url_decode(&parts[1])).unwrap();
    payload["groups"] = serde_json::json!(["admins"]);
    parts[1] = base64_url_encode(payload.to_string().as_bytes());
    let tampered = parts.join(".");
    let cases = [
        (
            "expired",
            forge("rs256", serde_json::json!({"exp": now - 120})),
            "token_expired",
        ),
        (
            "not yet valid",
            forge("rs256", serde_json::json!({"nbf": now + 600})),
            "token_not_yet_valid",
        ),
        (
            "issued in the future",
            forge("rs256", serde_json::json!({"iat": now + 600})),
            "token_issued_in_future",
        ),
        (
            "wrong audience",
            forge("rs256", serde_json::json!({"aud": "another-service"})),
            "token_wrong_audience",
        ),
        (
            "unknown issuer",
            forge(
                "rs256",
                serde_json::json!({"iss": "https://idp.example.com"}),
            ),
            "token_unknown_issuer",
        ),
        ("tampered", tampered, "token_bad_signature"),
        (
            "alg none",
            forge("none", serde_json::json!({})),
            "token_algorithm_not_allowed",
        ),
        (
            "HMAC with the public key",
            forge("hs256-pubkey", serde_json::json!({})),
            "token_algorithm_not_allowed",
        ),
        (
            "unknown key",
            forge("unknown-kid", serde_json::json!({})),
            "token_unknown_key",
        ),
        (
            "another client's token",
            provider.token("reporting").unwrap(),
            "user_mismatch",
        ),
    ];
    // The provider's own key with good claims is accepted: the forgeries fail for the one
    // thing each changes, not for how they were made.
    let good = forge("rs256", serde_json::json!({}));
    assert!(gw.psql("ci", &good, &["-c", "SELECT 1"]).status.success());
    for (what, token, _) in &cases {
        eprintln!("trying a token that is {what}");
        gw.refused("ci", token);
    }

    // Key rotation at the provider: restarted on the same port with new keys, its new
    // tokens are accepted without restarting the gateway (an unknown key id triggers a
    // fetch of the provider's keys, at most every 10 s).
    drop(provider);
    let second_keys = keys_dir.path().join("keys-2.json");
    let rotated = {
        let path = second_keys.clone();
        tokio::task::spawn_blocking(move || OidcProvider::start(&path, port))
            .await
            .unwrap()
            .unwrap()
    };
    let new_token = rotated.token("ci").unwrap();
    let kid = |t: &str| {
        let header: serde_json::Value =
            serde_json::from_slice(&base64_url_decode(t.split('.').next().unwrap())).unwrap();
        header["kid"].as_str().unwrap().to_string()
    };
    assert_ne!(kid(&new_token), kid(&token));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let out = gw.psql("ci", &new_token, &["-c", "SELECT 'rotated'"]);
        if out.status.success() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{:?}", text(&out));
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }

    let entries = gw.entries().await;
    let start = &of_kind(&entries, "session.start")[0];
    // Named within its issuer: no configured key or other issuer can be this principal.
    assert_eq!(start["actor"]["id"], "test-op/ci");
    assert_eq!(start["actor"]["kind"], "service");
    assert_eq!(start["actor"]["idp"], "test-op");
    assert_eq!(
        start["actor"]["groups"],
        serde_json::json!(["deployers", "analysts"])
    );
    assert!(
        start["data"]["key_id"]
            .as_str()
            .unwrap()
            .starts_with("oidc:test-op:")
    );
    let reasons: Vec<&str> = of_kind(&entries, "auth.failure")
        .iter()
        .map(|f| f["data"]["reason"].as_str().unwrap())
        .collect();
    for (what, _, reason) in &cases {
        assert!(
            reasons.contains(reason),
            "{what}: {reason} not in {reasons:?}"
        );
    }
    // Tokens are never recorded.
    let ledger_text: String = entries.iter().map(|e| e.to_string()).collect();
    assert!(!ledger_text.contains(&token) && !ledger_text.contains(&new_token));
    let _ = gw.stop.send(true);
}

fn base64_url_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .unwrap()
}

fn base64_url_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ci_tokens_are_mapped_to_service_identities_by_claim_rules() {
    use gatehouse_config::{ClaimRule, IssuerConfig};
    use gatehouse_testkit::OidcProvider;

    let keys_dir = tempfile::tempdir().unwrap();
    let keys = keys_dir.path().join("keys.json");
    let provider = tokio::task::spawn_blocking(move || OidcProvider::start(&keys, 0))
        .await
        .unwrap()
        .unwrap();
    let rule = |claims: &[(&str, &str)], identity: &str, groups: &[&str]| ClaimRule {
        claims: claims
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        identity: identity.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
    };
    let gw = gateway_on(Setup {
        issuers: vec![IssuerConfig {
            name: "ci-op".into(),
            issuer: provider.issuer(),
            audiences: vec!["gatehouse".into()],
            algorithms: vec!["RS256".into()],
            leeway: std::time::Duration::from_secs(30),
            username_claim: "sub".into(),
            groups_claim: "groups".into(),
            kind: IdentityKind::Service,
            jwks_refresh: std::time::Duration::from_secs(3600),
            claim_rules: vec![
                rule(
                    &[("repository", "acme/web"), ("ref", "refs/heads/*")],
                    "ci:web",
                    &["readers"],
                ),
                rule(
                    &[("repository", "acme/api"), ("ref", "refs/heads/main")],
                    "ci:api-deploy",
                    &["deployers"],
                ),
            ],
        }],
        ..Setup::default()
    })
    .await;

    // The job's token signs in as the identity its repository and branch map to, with the
    // rule's groups (here: a deny on DDL for deployers).
    let job = provider.token("gha").unwrap();
    let out = gw.psql("ci:api-deploy", &job, &["-c", "SELECT 'deploy job'"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let out = gw.psql("ci:api-deploy", &job, &["-c", "CREATE TABLE t (i int)"]);
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains("deployers change schemas through the pipeline"),
        "{stderr}"
    );
    // Not the identity of another rule, nor the token's own subject.
    gw.refused("ci:web", &job);
    gw.refused("gha", &job);
    // A token no rule matches (no repository claim at all) is refused.
    let other = provider.token("ci").unwrap();
    gw.refused("ci", &other);

    let entries = gw.entries().await;
    let start = &of_kind(&entries, "session.start")[0];
    assert_eq!(start["actor"]["id"], "ci-op/ci:api-deploy");
    assert_eq!(start["actor"]["kind"], "service");
    assert_eq!(start["actor"]["groups"], serde_json::json!(["deployers"]));
    assert_eq!(
        start["data"]["token_claims"],
        serde_json::json!({"repository": "acme/api", "ref": "refs/heads/main"})
    );
    let reasons: Vec<&str> = of_kind(&entries, "auth.failure")
        .iter()
        .map(|f| f["data"]["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        ["user_mismatch", "user_mismatch", "token_no_matching_rule"]
    );
    let _ = gw.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cedar_policies_decide_connect_and_each_statement_class() {
    let policies = r#"
@id("analysts-connect")
permit (principal in Gatehouse::Group::"analysts", action == Gatehouse::Action::"connect", resource);

@id("analysts-read")
permit (
  principal in Gatehouse::Group::"analysts",
  action in [Gatehouse::Action::"read", Gatehouse::Action::"transaction"],
  resource
);

@id("no-email-for-humans")
@message("e-mail addresses are not for browsing")
forbid (principal, action == Gatehouse::Action::"read", resource)
when { principal.kind == "human" && resource.tags.contains("pii") && resource has environment && resource.environment == "test"
       && context.tables.contains("public.customers") && context.command == "SELECT" }
unless { context.tables.contains("public.allowed") };
"#;
    let gw = gateway_on(Setup {
        policy: Some(policies),
        ..Setup::default()
    })
    .await;

    // alice is an analyst: she may connect and read, but not write (no policy permits it)
    // and not read customers (a forbid for humans).
    let out = gw.psql("alice", KEY, &["-c", "SELECT 40 + 2"]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(text(&out).0, "42");
    let out = gw.psql(
        "alice",
        KEY,
        &[
            "-c",
            "INSERT INTO customers VALUES (9, 'Eve', 'e@example.com')",
        ],
    );
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains("denied: no policy permits write on pg-test"),
        "{stderr}"
    );
    let out = gw.psql("alice", KEY, &["-c", "SELECT email FROM customers"]);
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains("denied: e-mail addresses are not for browsing"),
        "{stderr}"
    );
    assert_eq!(
        gw.pg
            .psql("appdb", "SELECT count(*) FROM customers")
            .unwrap(),
        "2",
        "the denied INSERT never reached the target"
    );

    // An identity in no permitted group may not even connect.
    let (_, key) = gw.add_agent_key("agent:outsider", &[], None).await;
    let out = gw.psql("agent:outsider", &key, &["-c", "SELECT 1"]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("agent:outsider may not connect to pg-test: no policy permits connect"),
        "{stderr}"
    );

    let entries = gw.entries().await;
    let decisions: Vec<(String, Value)> = of_kind(&entries, "command")
        .iter()
        .map(|c| {
            (
                c["data"]["sql"].as_str().unwrap().to_string(),
                c["data"]["decision"].clone(),
            )
        })
        .collect();
    let of = |prefix: &str| {
        decisions
            .iter()
            .find(|(sql, _)| sql.starts_with(prefix))
            .unwrap()
            .1
            .clone()
    };
    assert_eq!(of("SELECT 40")["outcome"], "allow");
    assert_eq!(
        of("SELECT 40")["policies"],
        serde_json::json!(["analysts-read"])
    );
    assert_eq!(of("INSERT")["outcome"], "deny");
    assert_eq!(
        of("SELECT email")["policies"],
        serde_json::json!(["no-email-for-humans"])
    );
    let denied = of_kind(&entries, "policy.decision");
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0]["actor"]["id"], "agent:outsider");
    assert_eq!(denied[0]["data"]["action"], "connect");
    assert_eq!(denied[0]["data"]["outcome"], "deny");
    // The outsider never reached the target: no session started for it.
    assert!(
        of_kind(&entries, "session.start")
            .iter()
            .all(|s| s["actor"]["id"] == "alice")
    );
    let _ = gw.stop.send(true);
}

/// Values the masking tests plant: SSNs written without dashes (no detector recognises
/// them, so only column lineage can catch them), a card number and an e-mail address.
const PLANTED: [&str; 6] = [
    "219099999",
    "457555462",
    "4111111111111111",
    "5555555555554444",
    "ada@example.com",
    "grace@example.com",
];

fn masking_config() -> gatehouse_config::MaskingConfig {
    gatehouse_config::MaskingConfig {
        columns: vec![
            gatehouse_config::ColumnMaskConfig {
                column: "public.people.ssn".into(),
                strategy: gatehouse_config::MaskStrategy(gatehouse_mask::Strategy::Redact),
                label: None,
            },
            gatehouse_config::ColumnMaskConfig {
                column: "people.card".into(),
                strategy: gatehouse_config::MaskStrategy(gatehouse_mask::Strategy::Partial {
                    keep_last: 4,
                }),
                label: Some("card".into()),
            },
        ],
        ..Default::default()
    }
}

/// A gateway with masking on and a `people` table (and a view over it) holding the
/// planted values.
async fn masking_gateway(policy: Option<&'static str>) -> Gateway {
    let gw = gateway_on(Setup {
        masking: Some(masking_config()),
        policy,
        ..Setup::default()
    })
    .await;
    tokio::task::block_in_place(|| {
        gw.pg.psql(
            "appdb",
            "SET ROLE app; \
             CREATE TABLE people (id int primary key, name text, ssn text UNIQUE, card text, notes text, born date); \
             INSERT INTO people VALUES \
               (1, 'Ada', '219099999', '4111111111111111', 'reach me at ada@example.com', '1815-12-10'), \
               (2, 'Grace', '457555462', '5555555555554444', 'grace@example.com after 5', '1906-12-09'); \
             CREATE VIEW v_people AS SELECT id, ssn AS s, upper(name) AS n FROM people; \
             CREATE VIEW v_people2 AS SELECT id, reverse(s) AS z, n FROM v_people;",
        )
        .unwrap();
    });
    gw
}

/// Every file under `dir` (ledger segments and chunks): none may hold a planted value.
fn assert_nothing_planted_under(dir: &Path) {
    assert_none_stored_under(dir, &PLANTED);
}

/// Every file under `dir` (ledger segments and chunks): none may hold any of `values`.
fn assert_none_stored_under(dir: &Path, values: &[&str]) {
    let mut stack = vec![dir.to_path_buf()];
    let mut files = 0;
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            files += 1;
            let bytes = std::fs::read(&path).unwrap();
            for value in values {
                assert!(
                    !bytes.windows(value.len()).any(|w| w == value.as_bytes()),
                    "{value} is stored in {}",
                    path.display()
                );
            }
        }
    }
    assert!(files > 0, "the ledger directory holds files");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masked_values_do_not_escape_through_messages_or_user_functions() {
    let gw = masking_gateway(None).await;
    tokio::task::block_in_place(|| {
        gw.pg
            .psql(
                "appdb",
                "SET ROLE app; \
                 CREATE FUNCTION leak(int) RETURNS text LANGUAGE sql \
                   AS $$ SELECT reverse(ssn) FROM people WHERE id = $1 $$; \
                 CREATE FUNCTION shout(int) RETURNS void LANGUAGE plpgsql \
                   AS $$ BEGIN RAISE NOTICE 'value: %', (SELECT reverse(ssn) FROM people WHERE id = $1); END $$; \
                 CREATE VIEW v_leak AS SELECT id, leak(id) AS x FROM people;",
            )
            .unwrap();
    });
    // The SSNs reversed: no detector knows them, only where they came from.
    let reversed = ["999990912", "264555754"];
    let routes = [
        // An error quoting a value computed from a masked column.
        "SELECT CAST(reverse(ssn) || 'x' AS int) FROM people WHERE id = 1",
        "SELECT 1 FROM people WHERE CAST(reverse(ssn) || 'x' AS int) = 1",
        // A user-defined function reading a masked column, in the select list, in a view,
        // and in a RAISE; and a DO block raising one.
        "SELECT leak(1)",
        "SELECT x FROM v_leak ORDER BY id",
        "SELECT shout(2)",
        "DO $$ BEGIN RAISE NOTICE '%', (SELECT reverse(ssn) FROM people WHERE id = 2); END $$",
        "DO $$ BEGIN RAISE EXCEPTION 'boom %', (SELECT reverse(ssn) FROM people WHERE id = 1); END $$",
    ];
    for sql in routes {
        let (out, err) = text(&gw.psql("alice", KEY, &["-c", sql]));
        for value in reversed {
            assert!(
                !out.contains(value) && !err.contains(value),
                "{sql}: {value} escaped:\n{out}\n{err}"
            );
        }
    }
    let (_, err) = text(&gw.psql(
        "alice",
        KEY,
        &[
            "-c",
            "SELECT CAST(reverse(ssn) || 'x' AS int) FROM people WHERE id = 1",
        ],
    ));
    assert!(err.contains("message masked"), "{err}");
    // Messages of statements that read no masked column, and built-in functions, are as
    // the server wrote them.
    let (_, err) = text(&gw.psql("alice", KEY, &["-c", "SELECT CAST('abc' AS int)"]));
    assert!(
        err.contains("invalid input syntax for type integer: \"abc\""),
        "{err}"
    );
    assert_eq!(
        alice_sql(&gw, "SELECT upper(name) FROM people WHERE id = 1"),
        "ADA"
    );
    let entries = gw.entries().await;
    assert!(!of_kind(&entries, "result").is_empty());
    assert_none_stored_under(&gw.ledger_dir, &reversed);
    let _ = gw.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masked_columns_do_not_escape_through_any_route_psql_can_take() {
    let gw = masking_gateway(None).await;
    // Each route tries to carry a masked column (or a detectable value) to the client.
    let routes = [
        "SELECT ssn, card, notes FROM people ORDER BY id",
        "SELECT ssn AS x, card AS y FROM people ORDER BY id",
        "SELECT * FROM people ORDER BY id",
        "SELECT p.* FROM people p ORDER BY id",
        "TABLE people",
        "SELECT reverse(ssn) FROM people",
        "SELECT replace(ssn, '9', 'x') FROM people",
        "SELECT encode(convert_to(ssn, 'UTF8'), 'base64') FROM people",
        "SELECT ssn || '' FROM people",
        "SELECT substring(ssn, 1, 9) FROM people",
        "SELECT ssn::bigint FROM people",
        "SELECT CAST(ssn AS varchar(20)) FROM people",
        "SELECT upper(ssn), lower(card) FROM people",
        "SELECT CASE WHEN id > 0 THEN ssn ELSE 'none' END FROM people",
        "SELECT coalesce(ssn, 'x') FROM people",
        "SELECT max(ssn), min(card) FROM people",
        "SELECT string_agg(ssn, ',') FROM people",
        "SELECT array_agg(ssn) FROM people",
        "SELECT json_agg(p) FROM people p",
        "SELECT row_to_json(p) FROM people p",
        "SELECT to_jsonb(p) - 'name' FROM people p",
        "SELECT p FROM people p",
        "SELECT (SELECT ssn FROM people ORDER BY id LIMIT 1)",
        "SELECT ARRAY(SELECT ssn FROM people)",
        "WITH x AS (SELECT ssn AS s FROM people) SELECT upper(s) FROM x",
        "WITH x(a) AS (SELECT ssn FROM people), y AS (SELECT a AS b FROM x) SELECT b || '!' FROM y",
        "SELECT t.a FROM (SELECT reverse(ssn) AS a FROM people) t",
        "SELECT name FROM people UNION ALL SELECT ssn FROM people",
        "SELECT 'x' UNION SELECT reverse(card) FROM people",
        "SELECT s, n FROM v_people",
        "SELECT lower(s) FROM v_people",
        "SELECT z FROM v_people2",
        "SELECT * FROM v_people2",
        "SELECT upper(z) FROM v_people2",
        "COPY (SELECT z FROM v_people2) TO STDOUT",
        "UPDATE people SET name = name WHERE id = 1 RETURNING ssn, reverse(card)",
        "COPY people TO STDOUT",
        "COPY people (ssn, notes) TO STDOUT",
        "COPY (SELECT reverse(ssn), notes FROM people) TO STDOUT",
        "COPY people TO STDOUT (FORMAT csv)",
        "COPY people TO STDOUT (FORMAT csv, HEADER, DELIMITER ';', QUOTE '''')",
        "COPY (SELECT ssn, notes FROM people) TO STDOUT CSV",
        "COPY people TO STDOUT (FORMAT binary)",
        "COPY (SELECT ssn::bigint, card::numeric, notes FROM people) TO STDOUT (FORMAT binary)",
        "COPY (SELECT 4111111111111110 + id, 'x' || notes FROM people) TO STDOUT (FORMAT binary)",
        "BEGIN; DECLARE c CURSOR FOR SELECT reverse(ssn), notes FROM people; FETCH ALL FROM c; COMMIT",
        "SELECT 'card ' || '4111 1111 1111 1111'",
        "SELECT '123-45-6789'::int",
        "DO $$ BEGIN RAISE NOTICE 'mail %', (SELECT notes FROM people WHERE id = 1); END $$",
        "INSERT INTO people (id, name, ssn) SELECT 3, 'Eve', ssn FROM people WHERE id = 1",
        "INSERT INTO people (id, name, ssn, card) VALUES (1, 'dup', 'x', 'y')",
        "LISTEN ch; SELECT pg_notify('ch', notes) FROM people WHERE id = 1",
    ];
    // The planted values, and what the routes make of them: reversed, with 9 replaced,
    // in base64.
    let forbidden: Vec<String> = {
        use base64::Engine;
        let mut all: Vec<String> = PLANTED.iter().map(|s| s.to_string()).collect();
        for s in PLANTED {
            all.push(s.chars().rev().collect());
            all.push(s.replace('9', "x"));
            all.push(base64::engine::general_purpose::STANDARD.encode(s));
        }
        all.extend(["123-45-6789".into(), "4111 1111 1111 1111".into()]);
        all
    };
    for sql in routes {
        let out = gw.psql("alice", KEY, &["-c", sql]);
        let (stdout, stderr) = text(&out);
        // psql quotes the client's own statement text under an error (`LINE 1: ...`):
        // that is not data the gateway sent.
        let seen: String = format!("{stdout}\n{stderr}")
            .lines()
            .filter(|l| !l.starts_with("LINE "))
            .collect::<Vec<_>>()
            .join("\n");
        for secret in &forbidden {
            assert!(
                !seen.contains(secret.as_str()),
                "{secret} escaped through {sql:?}:\n{seen}"
            );
        }
    }
    // Ordinary values pass unchanged: ids, dates, times, UUIDs, prices, order numbers.
    let ordinary = "SELECT id, name, born, '2026-11-23 13:45:10.123456+00'::timestamptz, \
                    'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid, 19.99::numeric, 'ORD-2026-000123', \
                    '+49 is a prefix', 'v1.2.3' FROM people ORDER BY id";
    let through = alice_sql(&gw, ordinary);
    let direct = tokio::task::block_in_place(|| gw.pg.psql("appdb", ordinary).unwrap());
    assert_eq!(through, direct.trim(), "ordinary values are untouched");
    assert!(through.contains("Ada|1815-12-10"), "{through}");

    // The value shapes: redaction names the rule, partial keeps the last four.
    let shown = alice_sql(&gw, "SELECT ssn, card, notes FROM people WHERE id = 1");
    assert_eq!(shown, "[ssn]|************1111|reach me at [email]");
    // Filters run on the clear values in the server; any output computed from a masked
    // column is masked whole, even a boolean.
    let counted = alice_sql(&gw, "SELECT count(*) FROM people WHERE ssn LIKE '2%'");
    assert_eq!(counted, "1");
    let derived = alice_sql(&gw, "SELECT ssn IS NULL FROM people WHERE id = 1");
    assert_eq!(derived, "", "{derived}");
    let masked_number = alice_sql(&gw, "SELECT ssn::bigint FROM people WHERE id = 1");
    assert_eq!(masked_number, "", "a masked number is sent as NULL");

    // The ledger says what was masked, never the values, and the recording is masked.
    let entries = gw.entries().await;
    let results = of_kind(&entries, "result");
    let masked: Vec<&&Value> = results
        .iter()
        .filter(|r| !r["data"]["masked"].is_null())
        .collect();
    assert!(
        masked.len() >= routes.len() - 6,
        "{} results with masking",
        masked.len()
    );
    let first = results
        .iter()
        .find(|r| {
            r["data"]["masked"]["rules"]["ssn"] == 2 && r["data"]["masked"]["rules"]["card"] == 2
        })
        .expect("a result counts the ssn and card values masked");
    assert_eq!(first["data"]["masked"]["detectors"]["email"], 2, "{first}");
    let start = &of_kind(&entries, "session.start")[0];
    assert_eq!(start["data"]["masking"]["client"], "masked");
    let _ = gw.stop.send(true);
    let summary = verify_ledger(&gw.ledger_dir);
    assert!(summary.ok && summary.outputs_matched > 0, "{summary:?}");
    assert_nothing_planted_under(&gw.ledger_dir);
}

/// Masked COPY output is still COPY output: a CSV (with a header and its own quote and
/// delimiter) and a binary copy taken through the gateway load back into the target as
/// they are, holding the masked values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masked_copy_output_loads_back() {
    let gw = masking_gateway(None).await;
    let dir = tempfile::tempdir().unwrap();
    let formats = [
        ("csv", "FORMAT csv, HEADER, DELIMITER ';', QUOTE ''''"),
        ("bin", "FORMAT binary"),
    ];
    for (name, options) in formats {
        let path = dir.path().join(name).display().to_string();
        let out = gw.psql(
            "alice",
            KEY,
            &["-c", &format!("\\copy people TO '{path}' ({options})")],
        );
        assert!(out.status.success(), "{name}: {}", text(&out).1);
        tokio::task::block_in_place(|| {
            let table = format!("people_{name}");
            gw.pg
                .psql("appdb", &format!("CREATE TABLE {table} (LIKE people)"))
                .unwrap();
            gw.pg
                .psql(
                    "appdb",
                    &format!("\\copy {table} FROM '{path}' ({options})"),
                )
                .unwrap_or_else(|e| panic!("{name} does not load back: {e}"));
            let loaded = gw
                .pg
                .psql(
                    "appdb",
                    &format!("SELECT id, name, ssn, card, notes, born FROM {table} ORDER BY id"),
                )
                .unwrap();
            let expected = if name == "csv" {
                // Text values carry the strategies' output.
                "1|Ada|[ssn]|************1111|reach me at [email]|1815-12-10\n\
                 2|Grace|[ssn]|************4444|[email] after 5|1906-12-09"
            } else {
                // Binary values of masked columns are NULL; a text value found by a
                // detector is rewritten in place.
                "1|Ada|||reach me at [email]|1815-12-10\n\
                 2|Grace|||[email] after 5|1906-12-09"
            };
            assert_eq!(loaded, expected, "{name}");
        });
    }
    let _ = gw.stop.send(true);
    assert_nothing_planted_under(&gw.ledger_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_and_prepared_results_from_psycopg_are_masked() {
    let gw = masking_gateway(None).await;
    let out = psycopg(&gw, "psycopg_masking.py");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "psycopg failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("psycopg masking checks done"), "{stdout}");
    for secret in PLANTED {
        assert!(
            !stdout.contains(secret),
            "{secret} escaped to psycopg:\n{stdout}"
        );
    }
    // Binary rows decoded fine: the masked tokens arrive as the driver's own types.
    assert!(stdout.contains("'[ssn]'"), "{stdout}");
    assert!(stdout.contains("[email]"), "{stdout}");
    let _ = gw.stop.send(true);
    assert_nothing_planted_under(&gw.ledger_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_may_show_clear_values_but_the_recording_stays_masked() {
    let gw = masking_gateway(Some(
        r#"permit (principal, action, resource);
permit (principal in Gatehouse::Group::"analysts", action == Gatehouse::Action::"unmask", resource);"#,
    ))
    .await;
    let out = gw.psql(
        "alice",
        KEY,
        &["-c", "SELECT ssn, notes FROM people WHERE id = 1"],
    );
    assert_eq!(text(&out).0.trim(), "219099999|reach me at ada@example.com");
    let entries = gw.entries().await;
    let start = &of_kind(&entries, "session.start")[0];
    assert_eq!(start["data"]["masking"]["client"], "clear");
    let _ = gw.stop.send(true);
    assert_nothing_planted_under(&gw.ledger_dir);
}

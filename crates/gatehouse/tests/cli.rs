//! The binary as a user meets it: help, config check, serve with its admin API (driven
//! with curl) and graceful shutdown, the demo, proofs.
#![allow(clippy::unwrap_used)] // a test (or bench) that cannot go on fails by panicking

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn help_lists_the_commands() {
    let out = run(&["--help"]);
    assert!(out.status.success());
    let text = stdout(&out);
    for cmd in ["serve", "demo", "config", "ledger"] {
        assert!(text.contains(cmd), "{text}");
    }
    let text = stdout(&run(&["ledger", "--help"]));
    for cmd in [
        "pubkey",
        "verify",
        "bench",
        "proof",
        "verify-proof",
        "recover",
    ] {
        assert!(text.contains(cmd), "{text}");
    }
}

#[test]
fn keys_hash_matches_generate_and_reads_stdin() {
    let out = run(&["keys", "generate", "--name", "agent:ci"]);
    assert!(out.status.success());
    let text = stdout(&out);
    let key = text
        .lines()
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string();
    assert!(key.starts_with("gh_"), "{text}");
    assert!(text.contains("name = \"agent:ci\""), "{text}");
    let mut child = gatehouse()
        .args(["keys", "hash"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{key}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let hash = stdout(&out).trim().to_string();
    assert!(
        text.contains(&format!("key_hash = \"{hash}\"")),
        "{text} vs {hash}"
    );
    assert_eq!(
        run(&["keys", "hash"]).status.code(),
        Some(1),
        "empty stdin is an error"
    );
}

#[test]
fn output_to_a_closed_pipe_ends_quietly() {
    // `gatehouse keys generate | head -1`: the reader is gone before anything is written.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = gatehouse()
        .args(["keys", "generate", "--name", "x"])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{stderr}");
}

#[test]
fn keys_create_list_and_revoke_explain_their_mistakes() {
    let dir = tempfile::tempdir().unwrap();
    let out = gatehouse()
        .current_dir(dir.path())
        .args(["keys", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("gatehouse.toml (give --config FILE or --data-dir DIR)"),
        "{}",
        stderr(&out)
    );
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let out = run(&[
        "keys",
        "create",
        "--name",
        "agent:x",
        "--ttl",
        "soon",
        "--data-dir",
        data,
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--ttl \"soon\""), "{}", stderr(&out));
    let out = run(&["keys", "revoke", "0123456789abcdef", "--data-dir", data]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no API key with id 0123456789abcdef"),
        "{}",
        stderr(&out)
    );
    // The data directory may come from a config file; `never` makes a key without expiry.
    let config = dir.path().join("gatehouse.toml");
    std::fs::write(&config, "data_dir = \"data\"\n").unwrap();
    let out = run(&[
        "keys",
        "create",
        "--name",
        "service:ci",
        "--ttl",
        "never",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("(service, groups: none), never expires"),
        "{}",
        stderr(&out)
    );
    let listed = stdout(&run(&["keys", "list", "--json", "--data-dir", data]));
    let key: serde_json::Value = serde_json::from_str(listed.trim()).unwrap();
    assert_eq!(
        (key["kind"].as_str(), key["expires_at"].is_null()),
        (Some("service"), true)
    );
    let id = key["id"].as_str().unwrap();
    assert!(
        run(&["keys", "revoke", id, "--data-dir", data])
            .status
            .success()
    );
    let again = run(&["keys", "revoke", id, "--data-dir", data]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already revoked"),
        "{}",
        stderr(&again)
    );
}

#[test]
fn policy_check_and_eval_explain_decisions_offline() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies.cedar");
    std::fs::write(
        &policies,
        r#"@id("analysts-connect")
permit (principal in Gatehouse::Group::"analysts", action == Gatehouse::Action::"connect", resource);
@id("analysts-read")
permit (principal in Gatehouse::Group::"analysts", action == Gatehouse::Action::"read", resource);
@id("payroll-review")
@review("payroll needs an approval")
forbid (principal, action == Gatehouse::Action::"read", resource) when { context.tables.contains("public.payroll") };
"#,
    )
    .unwrap();
    let config = dir.path().join("gatehouse.toml");
    std::fs::write(
        &config,
        "[policy]\npolicies = \"policies.cedar\"\n\
         [[resources]]\nname = \"pg-prod\"\nkind = \"http\"\n\
         [[resources.rules]]\nid = \"no-truncate\"\naction = \"deny\"\ncommands = [\"TRUNCATE\"]\n",
    )
    .unwrap();
    let config_arg = config.to_str().unwrap();

    let out = run(&["policy", "check", "--config", config_arg]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("ok (3 policies, validated against the built-in schema)"),
        "{}",
        stdout(&out)
    );
    let out = run(&["config", "check", config_arg]);
    assert!(out.status.success(), "{}", stderr(&out));

    let eval = |extra: &[&str]| {
        let mut args = vec![
            "policy",
            "eval",
            "--config",
            config_arg,
            "--resource",
            "pg-prod",
        ];
        args.extend_from_slice(extra);
        let out = run(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_str::<serde_json::Value>(stdout(&out).trim()).unwrap()
    };
    let d = eval(&[
        "--principal",
        "ann",
        "--groups",
        "analysts",
        "--action",
        "connect",
    ]);
    assert_eq!(
        (d["outcome"].as_str(), d["policies"][0].as_str()),
        (Some("allow"), Some("analysts-connect"))
    );
    let d = eval(&["--principal", "eve", "--action", "connect"]);
    assert_eq!(d["outcome"], "deny");
    assert_eq!(d["message"], "no policy permits connect on pg-prod");
    let d = eval(&[
        "--principal",
        "ann",
        "--groups",
        "analysts",
        "--sql",
        "SELECT * FROM payroll",
    ]);
    assert_eq!(d["outcome"], "review");
    assert_eq!(d["policies"][0], "payroll-review");
    assert_eq!(d["actions"][0], "read");
    // The resource's guardrails decide in the same place, and the deciding rule is named.
    let d = eval(&[
        "--principal",
        "ann",
        "--groups",
        "analysts",
        "--sql",
        "TRUNCATE customers",
    ]);
    assert_eq!(
        (d["outcome"].as_str(), d["rule"].as_str()),
        (Some("deny"), Some("no-truncate"))
    );

    // A policy that does not fit the schema is refused, naming the file and the policy.
    std::fs::write(
        &policies,
        "@id(\"by-team\")\npermit (principal, action, resource) when { principal.team == \"x\" };\n",
    )
    .unwrap();
    let out = run(&["policy", "check", "--config", config_arg]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("policies.cedar: policy by-team:"),
        "{}",
        stderr(&out)
    );
    let out = run(&["config", "check", config_arg]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("policy by-team"), "{}", stderr(&out));
}

/// The `config.change` entries about the policy in a (possibly live) ledger.
fn policy_changes(data: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let scanned = gatehouse_ledger::segment::scan(&gatehouse_ledger::Layout::new(data), |e| {
        let v: serde_json::Value = serde_json::from_slice(e.line).unwrap();
        if v["kind"] == "config.change" && v["data"]["policy"].is_object() {
            out.push(v["data"]["policy"].clone());
        }
        Ok(())
    });
    assert!(scanned.is_ok(), "{scanned:?}");
    out
}

#[test]
fn serve_reloads_the_policy_on_change_and_sighup_and_keeps_the_old_one_when_bad() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let policies = dir.path().join("policies.cedar");
    let good = "@id(\"a\")\npermit (principal in Gatehouse::Group::\"g\", action, resource);\n";
    std::fs::write(&policies, good).unwrap();
    let config = dir.path().join("gatehouse.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"data\"\n[admin]\nlisten = \"127.0.0.1:{port}\"\n[policy]\npolicies = \"policies.cedar\"\n"
        ),
    )
    .unwrap();
    let mut child = gatehouse()
        .args(["serve", "--config", config.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let data = dir.path().join("data");
    wait_until_serving(port);
    let wait_for = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let changes = policy_changes(&data);
            if changes.len() >= n {
                return changes;
            }
            assert!(Instant::now() < deadline, "{changes:?}");
            sleep(Duration::from_millis(200));
        }
    };
    let changes = wait_for(1);
    assert_eq!(
        (
            changes[0]["trigger"].as_str(),
            changes[0]["policies"].as_u64()
        ),
        (Some("start"), Some(1))
    );
    // A changed file is picked up by itself.
    std::fs::write(&policies, format!("{good}@id(\"b\")\nforbid (principal, action, resource) when {{ principal.kind == \"agent\" }};\n")).unwrap();
    let changes = wait_for(2);
    assert_eq!(changes[1]["loaded"], true, "{changes:?}");
    assert_eq!(changes[1]["policies"], 2);
    assert_eq!(changes[1]["trigger"], "file change");
    // A bad file is refused and the previous policy stays.
    std::fs::write(
        &policies,
        "permit (principal, action, resource) when { principal.nope };\n",
    )
    .unwrap();
    let changes = wait_for(3);
    assert_eq!(changes[2]["loaded"], false, "{changes:?}");
    assert!(
        changes[2]["error"]
            .as_str()
            .unwrap()
            .contains("policies.cedar"),
        "{changes:?}"
    );
    // SIGHUP reloads on demand (still the bad file: refused again, said again).
    signal(&child, "HUP");
    let changes = wait_for(4);
    assert_eq!(
        (
            changes[3]["trigger"].as_str(),
            changes[3]["loaded"].as_bool()
        ),
        (Some("SIGHUP"), Some(false))
    );
    assert_eq!(
        curl(&format!("http://127.0.0.1:{port}/healthz")).0,
        200,
        "still serving"
    );
    signal(&child, "TERM");
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    assert!(child.wait().unwrap().success(), "{logs}");
    assert!(logs.contains("access policy NOT reloaded"), "{logs}");
}

/// Sends `sig` (`TERM`, `INT`, `HUP`) to a child process.
fn signal(child: &std::process::Child, sig: &str) {
    let sent = Command::new("kill")
        .args([format!("-{sig}"), child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill -{sig}");
}

#[test]
fn config_check_accepts_the_example_and_names_bad_keys() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/gatehouse.toml");
    let out = gatehouse()
        .args(["config", "check", example.to_str().unwrap()])
        .env("PG_DEMO_PASSWORD", "not-a-real-secret")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("ok"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[ledger]\nbatched_window = \"soon\"\n").unwrap();
    let out = run(&["config", "check", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("bad.toml") && err.contains("batched_window"),
        "{err}"
    );

    let out = run(&[
        "config",
        "check",
        dir.path().join("missing.toml").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("missing.toml"), "{}", stderr(&out));
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn curl(url: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", url])
        .output()
        .expect("curl is installed by scripts/test");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.parse().unwrap_or(0), body.to_string())
}

#[test]
fn serve_answers_on_the_admin_api_and_signs_a_final_checkpoint_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("gatehouse.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"data\"\n[log]\nformat = \"json\"\n[admin]\nlisten = \"127.0.0.1:{port}\"\n\
             [ledger]\norigin = \"test.example/ledger\"\n"
        ),
    )
    .unwrap();
    // Started with a low soft limit on open files, as many systems set it: the gateway
    // raises it to the hard limit (two sockets per session).
    let mut child = Command::new("bash")
        .args(["-c", "ulimit -Sn 256 && exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_gatehouse"))
        .args([
            "--log-format",
            "json",
            "serve",
            "--config",
            config.to_str().unwrap(),
        ])
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    wait_until_serving(port);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let open_files: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .skip(3)
        .take(2)
        .collect();
    assert_eq!(open_files[0], open_files[1], "soft = hard: {limits}");
    assert_ne!(open_files[0], "256", "{limits}");
    let (_, health) = curl(&format!("{base}/healthz"));
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["status"], "ok");

    // A checkpoint appears within a second or two of the first entries.
    let deadline = Instant::now() + Duration::from_secs(10);
    let note = loop {
        let (code, body) = curl(&format!("{base}/api/ledger/checkpoint"));
        if code == 200 {
            break body;
        }
        assert!(Instant::now() < deadline, "no checkpoint: {code} {body}");
        sleep(Duration::from_millis(200));
    };
    let (_, key) = curl(&format!("{base}/api/ledger/pubkey"));
    let cp = gatehouse_ledger::verify_note(&note, key.trim()).unwrap();
    assert_eq!(cp.origin, "test.example/ledger");
    let (code, metrics) = curl(&format!("{base}/metrics"));
    assert_eq!(code, 200);
    assert!(
        metrics.contains("gatehouse_ledger_appends_total"),
        "{metrics}"
    );

    signal(&child, "TERM");
    let mut logs = Vec::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        logs.push(line.unwrap());
    }
    assert!(child.wait().unwrap().success());
    for line in &logs {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string(), "{line}");
    }
    assert!(
        logs.iter().any(|l| l.contains("final checkpoint signed")),
        "{logs:#?}"
    );

    let data = dir.path().join("data");
    let out = verify(&data, key.trim());
    assert!(out.status.success(), "{}", stderr(&out));
    let summary = last_json(&out);
    assert_eq!(
        summary["unsigned_entries"], 0,
        "the final checkpoint covers every entry"
    );
    // ledger.open and config.change
    assert_eq!(summary["entries"], 2);
}

#[test]
fn serve_refuses_a_bad_config_without_starting() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gatehouse.toml");
    std::fs::write(&config, "data_dir = \"data\"\nadmin_port = 1\n").unwrap();
    let out = run(&["serve", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("admin_port"), "{}", stderr(&out));
    assert!(!dir.path().join("data").exists(), "nothing was created");
}

#[test]
fn demo_serves_postgres_through_the_gateway_and_verifies_itself() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = gatehouse()
        .current_dir(dir.path())
        .args([
            "--log-format",
            "json",
            "demo",
            "--admin",
            "127.0.0.1:0",
            "--postgres",
            "127.0.0.1:0",
        ])
        .args(["--duration", "120s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut banner = String::new();
    let command = loop {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "demo ended early: {banner}"
        );
        banner.push_str(&line);
        if line.trim_start().starts_with("PGPASSWORD=") {
            break line.trim().to_string();
        }
    };
    assert!(banner.contains("Gatehouse demo is running"), "{banner}");
    // PGPASSWORD='<key>' psql "host=127.0.0.1 port=<port> user=... dbname=demo" -c '...'
    let key = command.split('\'').nth(1).unwrap().to_string();
    let conninfo = command.split('"').nth(1).unwrap().to_string();
    let psql = gatehouse_testkit::pg_bindir().unwrap().join("psql");
    let out = Command::new(psql)
        .args([
            conninfo.as_str(),
            "-X",
            "-A",
            "-t",
            "-c",
            "SELECT count(*) FROM customers",
        ])
        .env("PGPASSWORD", &key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3");

    // A key made from the CLI while the gateway runs is accepted at once, and refused once
    // revoked, without a restart.
    let data_dir = dir.path().join("gatehouse-demo");
    let data_arg = data_dir.to_str().unwrap();
    let made = run(&[
        "keys",
        "create",
        "--name",
        "agent:reporting",
        "--groups",
        "analysts",
        "--ttl",
        "1h",
        "--data-dir",
        data_arg,
    ]);
    assert!(made.status.success(), "{}", stderr(&made));
    let agent_key = common::stdout(&made).trim().to_string();
    assert!(agent_key.starts_with("ghk_"), "{agent_key}");
    assert!(
        stderr(&made).contains("(agent, groups: analysts)"),
        "{}",
        stderr(&made)
    );
    let agent_conninfo = conninfo.replace("user=demo@example.com", "user=agent:reporting");
    assert_ne!(agent_conninfo, conninfo);
    let as_agent = || {
        Command::new(gatehouse_testkit::pg_bindir().unwrap().join("psql"))
            .args([
                agent_conninfo.as_str(),
                "-X",
                "-A",
                "-t",
                "-c",
                "SELECT 'agent in'",
            ])
            .env("PGPASSWORD", &agent_key)
            .output()
            .unwrap()
    };
    let out = as_agent();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = run(&["keys", "list", "--json", "--data-dir", data_arg]);
    let entry: serde_json::Value = serde_json::from_str(common::stdout(&listed).trim()).unwrap();
    assert_eq!(entry["name"], "agent:reporting");
    assert_eq!(entry["status"], "active");
    assert!(entry.get("key_hash").is_none(), "{entry}");
    let id = entry["id"].as_str().unwrap().to_string();
    assert!(agent_key.contains(&id));
    let revoked = run(&[
        "keys",
        "revoke",
        &id,
        "--reason",
        "test over",
        "--data-dir",
        data_arg,
    ]);
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    let out = as_agent();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("password authentication failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = common::stdout(&run(&["keys", "list", "--data-dir", data_arg]));
    assert!(table.starts_with("ID"), "{table}");
    assert!(table.contains(&id) && table.contains("revoked"), "{table}");

    signal(&child, "INT");
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    assert!(child.wait().unwrap().success(), "{logs}");
    assert!(rest.contains("Verified the demo ledger offline"), "{rest}");
    for line in logs.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string(), "{line}");
    }
    // The statement was recorded, attributed to the demo identity.
    let data = dir.path().join("gatehouse-demo");
    let out = verify(&data, &pubkey(&data));
    assert!(out.status.success(), "{}", stderr(&out));
    let mut found = false;
    let mut key_changes = Vec::new();
    gatehouse_ledger::segment::scan(&gatehouse_ledger::Layout::new(&data), |e| {
        let v: serde_json::Value = serde_json::from_slice(e.line).unwrap();
        if v["kind"] == "command" && v["data"]["sql"] == "SELECT count(*) FROM customers" {
            assert_eq!(v["actor"]["id"], "demo@example.com");
            found = true;
        }
        let line = String::from_utf8_lossy(e.line);
        assert!(
            !line.contains(&agent_key),
            "a key is never recorded: {line}"
        );
        if v["kind"].as_str().is_some_and(|k| k.starts_with("key.")) {
            key_changes.push(v);
        }
        Ok(())
    })
    .unwrap();
    assert!(found, "the demo's statement is in the ledger");
    // The key made and revoked from the CLI is in the ledger too, with who did it.
    let kinds: Vec<&str> = key_changes
        .iter()
        .map(|v| v["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["key.created", "key.revoked"], "{key_changes:?}");
    assert_eq!(key_changes[0]["data"]["name"], "agent:reporting");
    assert_eq!(
        key_changes[0]["data"]["groups"],
        serde_json::json!(["analysts"])
    );
    assert!(
        key_changes[0]["data"]["by"]
            .as_str()
            .unwrap()
            .starts_with("cli:")
    );
    assert_eq!(
        key_changes[1]["data"]["key_id"],
        key_changes[0]["data"]["key_id"]
    );
    assert_eq!(key_changes[1]["data"]["reason"], "test over");
}

#[test]
fn proofs_verify_offline_and_detect_a_changed_entry() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), 50);
    let key = pubkey(dir.path());
    let out = run(&[
        "ledger",
        "proof",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--index",
        "17",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let proof_path = dir.path().join("proof.json");
    std::fs::write(&proof_path, &out.stdout).unwrap();
    let out = run(&[
        "ledger",
        "verify-proof",
        proof_path.to_str().unwrap(),
        "--pubkey",
        &key,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(last_json(&out)["index"], 17);

    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&proof_path).unwrap()).unwrap();
    let entry = doc["entry"]
        .as_str()
        .unwrap()
        .replacen("\"n\":", "\"n\":1", 1);
    doc["entry"] = entry.into();
    std::fs::write(&proof_path, doc.to_string()).unwrap();
    let out = run(&[
        "ledger",
        "verify-proof",
        proof_path.to_str().unwrap(),
        "--pubkey",
        &key,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("does not hash"), "{}", stderr(&out));

    let out = run(&[
        "ledger",
        "proof",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--index",
        "999",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not covered"), "{}", stderr(&out));
}

/// Waits for a gateway's admin API to answer `/healthz`.
fn wait_until_serving(admin_port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while curl(&format!("http://127.0.0.1:{admin_port}/healthz")).0 != 200 {
        assert!(Instant::now() < deadline, "serve did not come up");
        sleep(Duration::from_millis(100));
    }
}

/// Starts `gatehouse login ARGS` keeping its token in `token_file`, and returns it with
/// its error output read up to the line starting with `prefix` and the rest of that line
/// (the link it asks the person to open). The caller waits for it (`approve_in_browser`).
#[allow(
    clippy::zombie_processes,
    reason = "the child is handed to the caller, which waits for it"
)]
fn start_login(
    args: &[&str],
    token_file: &Path,
    prefix: &str,
) -> (
    std::process::Child,
    BufReader<std::process::ChildStderr>,
    String,
) {
    let mut login = gatehouse()
        .arg("login")
        .args(args)
        .env("GATEHOUSE_TOKEN_FILE", token_file)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = BufReader::new(login.stderr.take().unwrap());
    loop {
        let mut line = String::new();
        if said.read_line(&mut line).unwrap() == 0 {
            let status = login.wait();
            panic!("login ended early: {status:?}");
        }
        if let Some(rest) = line.trim().strip_prefix(prefix) {
            return (login, said, rest.to_string());
        }
    }
}

/// Plays the person at the browser for a running `gatehouse login` (signs in as `user`
/// and consents), then waits for the login to succeed; returns the rest of what it said.
fn approve_in_browser(
    link: &str,
    user: &str,
    login: &mut std::process::Child,
    mut said: BufReader<std::process::ChildStderr>,
) -> String {
    let browser = Command::new("node")
        .arg(gatehouse_testkit::oidc_dir().join("approve-in-browser.mjs"))
        .args([link, user])
        .output()
        .unwrap();
    assert!(
        browser.status.success(),
        "{}",
        String::from_utf8_lossy(&browser.stderr)
    );
    let mut rest = String::new();
    said.read_to_string(&mut rest).unwrap();
    assert!(login.wait().unwrap().success(), "{rest}");
    rest
}

#[test]
fn login_by_device_flow_then_token_signs_psql_in_and_refreshes() {
    use gatehouse_testkit::{OidcProvider, PgCluster};

    let dir = tempfile::tempdir().unwrap();
    let provider = OidcProvider::start(&dir.path().join("op-keys.json"), 0).unwrap();
    let pg = PgCluster::start().unwrap();
    pg.create_app("app", "app-secret", "appdb").unwrap();
    std::fs::write(dir.path().join("pg-password"), "app-secret").unwrap();
    let (admin, listen) = (free_port(), free_port());
    let config = dir.path().join("gatehouse.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"data\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\
             [[resources]]\nname = \"pg\"\nkind = \"postgres\"\nlisten = \"127.0.0.1:{listen}\"\n\
             target = \"127.0.0.1:{}\"\ndatabase = \"appdb\"\n\
             [resources.credentials]\nuser = \"app\"\npassword_file = \"pg-password\"\n\
             [[issuers]]\nname = \"test-op\"\nissuer = \"{}\"\naudiences = [\"gatehouse\"]\n\
             [policy]\npolicies = \"policies.cedar\"\n",
            pg.port,
            provider.issuer()
        ),
    )
    .unwrap();
    // The groups in the token decide in Cedar: analysts may connect and read, nothing else.
    std::fs::write(
        dir.path().join("policies.cedar"),
        "@id(\"analysts-read\")\npermit (principal in Gatehouse::Group::\"analysts\", \
         action in [Gatehouse::Action::\"connect\", Gatehouse::Action::\"read\"], resource);\n",
    )
    .unwrap();
    let mut serve = gatehouse()
        .args(["serve", "--config", config.to_str().unwrap()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until_serving(admin);

    // The person runs `gatehouse login`, opens the link it prints and approves.
    let token_file = dir.path().join("home/.config/gatehouse/token.json");
    let issuer = provider.issuer();
    let (mut login, said, link) = start_login(
        &["--issuer", &issuer, "--scope", "openid offline_access db"],
        &token_file,
        "(or open ",
    );
    let link = link.trim_end_matches(')').to_string();
    let rest = approve_in_browser(&link, "ann", &mut login, said);
    assert!(rest.contains("Signed in at"), "{rest}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the token file is private");

    let token = || {
        let out = gatehouse()
            .arg("token")
            .env("GATEHOUSE_TOKEN_FILE", &token_file)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out).trim().to_string()
    };
    let psql_sql = |token: &str, sql: &str| {
        Command::new(gatehouse_testkit::pg_bindir().unwrap().join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &listen.to_string(),
                "-U",
                "ann",
                "-d",
                "appdb",
            ])
            .args(["-X", "-A", "-t", "-c", sql])
            .env("PGPASSWORD", token)
            .output()
            .unwrap()
    };
    let psql = |token: &str| psql_sql(token, "SELECT 'ann via device flow'");
    let first = token();
    let out = psql_sql(&first, "CREATE TABLE notes (t text)");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no policy permits ddl on pg"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = psql(&first);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ann via device flow"
    );

    // Near expiry, `gatehouse token` refreshes first (and keeps the file private).
    let mut saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&token_file).unwrap()).unwrap();
    saved["expires_at"] = 0.into();
    std::fs::write(&token_file, saved.to_string()).unwrap();
    let second = token();
    assert_ne!(first, second, "a fresh token after refresh");
    let refreshed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&token_file).unwrap()).unwrap();
    assert!(refreshed["expires_at"].as_i64().unwrap() > 0);
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(psql(&second).status.success());

    signal(&serve, "TERM");
    assert!(serve.wait().unwrap().success());
    let mut starts = Vec::new();
    gatehouse_ledger::segment::scan(
        &gatehouse_ledger::Layout::new(&dir.path().join("data")),
        |e| {
            let v: serde_json::Value = serde_json::from_slice(e.line).unwrap();
            assert!(
                !String::from_utf8_lossy(e.line).contains(&first),
                "tokens are never recorded"
            );
            if v["kind"] == "session.start" {
                starts.push(v);
            }
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(starts.len(), 3);
    assert_eq!(starts[0]["actor"]["id"], "test-op/ann");
    assert_eq!(starts[0]["actor"]["idp"], "test-op");
    assert_eq!(
        starts[0]["actor"]["groups"],
        serde_json::json!(["analysts"])
    );
}

#[test]
fn login_in_a_browser_uses_pkce_and_a_loopback_redirect() {
    use base64::Engine;
    use gatehouse_testkit::OidcProvider;

    let dir = tempfile::tempdir().unwrap();
    let provider = OidcProvider::start(&dir.path().join("op-keys.json"), 0).unwrap();
    let token_file = dir.path().join("token.json");
    // The issuer may be named as in the gateway's config.
    let config = dir.path().join("gatehouse.toml");
    std::fs::write(
        &config,
        format!(
            "[[issuers]]\nname = \"corp\"\nissuer = \"{}\"\naudiences = [\"gatehouse\"]\n",
            provider.issuer()
        ),
    )
    .unwrap();
    let unknown = run(&[
        "login",
        "--issuer",
        "nope",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(!unknown.status.success());
    assert!(
        stderr(&unknown).contains("no such issuer"),
        "{}",
        stderr(&unknown)
    );
    assert!(
        stderr(&unknown).contains("known: corp"),
        "{}",
        stderr(&unknown)
    );
    let (mut login, said, link) = start_login(
        &[
            "--browser",
            "--issuer",
            "corp",
            "--config",
            config.to_str().unwrap(),
            "--scope",
            "openid offline_access db",
        ],
        &token_file,
        "Open this link to sign in: ",
    );
    assert!(link.contains("code_challenge_method=S256"), "{link}");
    assert!(
        link.contains("redirect_uri=http%3A%2F%2F127.0.0.1%3A"),
        "{link}"
    );
    // The "browser" signs in and consents; the provider redirects it to the CLI's port.
    approve_in_browser(&link, "bea", &mut login, said);
    let out = gatehouse()
        .arg("token")
        .env("GATEHOUSE_TOKEN_FILE", &token_file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let token = stdout(&out).trim().to_string();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["sub"], "bea");
    assert_eq!(claims["aud"], "gatehouse");
    assert_eq!(claims["iss"], provider.issuer().as_str());
}

/// Retention from the CLI: old segments are pruned to their hashes, the pruning is an
/// entry, `ledger verify` still passes, and exports say what was pruned while their
/// bundles still verify.
#[test]
fn pruned_ledgers_still_verify_and_exports_say_what_was_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let data_arg = data.to_str().unwrap();
    fill(data, 400);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let between = humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string();
    fill(data, 400);
    let key = pubkey(data);

    let out = run(&[
        "ledger",
        "prune",
        "--data-dir",
        data_arg,
        "--older-than",
        "1s",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan = last_json(&out);
    let end = plan["end"].as_u64().expect("something was pruned");
    assert_eq!(plan["first"], 0);
    assert!(
        end > 0 && !plan["segments"].as_array().unwrap().is_empty(),
        "{plan}"
    );
    assert!(
        data.join("ledger/segments")
            .read_dir()
            .unwrap()
            .any(|f| { f.unwrap().path().extension().is_some_and(|e| e == "pruned") })
    );
    // Twice is nothing more (what was left is newer, or the segment being written).
    let again = run(&[
        "ledger",
        "prune",
        "--data-dir",
        data_arg,
        "--older-than",
        "1h",
    ]);
    assert!(last_json(&again)["pruned"].is_null(), "{}", stdout(&again));

    let out = verify(data, &key);
    assert!(out.status.success(), "{}", stdout(&out));
    assert_eq!(last_json(&out)["pruned_entries"], end);

    // The whole log: the pruned entries are in the bundle as hashes, and said so.
    let bundle = data.join("all.bundle");
    let out = audit_export(data, &bundle, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("{end} pruned by retention")),
        "{}",
        stderr(&out)
    );
    let out = verify_export(&bundle, &key);
    assert!(out.status.success(), "{}", stdout(&out));
    let v = last_json(&out);
    assert_eq!(v["counts"]["pruned"], end);
    assert!(
        v["notes"].to_string().contains("pruned by retention"),
        "{v}"
    );
    let text = std::fs::read_to_string(&bundle).unwrap();
    assert!(text.contains("\"why\":\"pruned\""));
    assert!(
        text.contains("\\\"kind\\\":\\\"ledger.prune\\\""),
        "the pruning entry is in the log"
    );

    // A window after the pruned part is whole; a plain export names the pruned range.
    let out = audit_export(data, &bundle, &["--since", &between]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = verify_export(&bundle, &key);
    let v = last_json(&out);
    assert!(out.status.success() && v["window_complete"] == true, "{v}");
    assert_eq!(v["counts"]["pruned"], 0, "{v}");
    let out = run(&[
        "audit",
        "export",
        "--data-dir",
        data_arg,
        "--format",
        "jsonl",
    ]);
    assert!(out.status.success());
    assert!(
        stderr(&out).contains(&format!("entries 0..{end} were pruned by retention")),
        "{}",
        stderr(&out)
    );
}

#[test]
fn reviews_talk_https_to_an_admin_api_with_tls_and_verify_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, private) = gatehouse_pg::tls::ensure_self_signed(dir.path()).unwrap();
    let port = free_port();
    let key = "bob-key-0123456789";
    let config = dir.path().join("gatehouse.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"data\"\n[admin]\nlisten = \"127.0.0.1:{port}\"\n\
             tls = {{ cert = \"{}\", key = \"{}\" }}\n\
             [[identities]]\nname = \"bob\"\nkind = \"human\"\ngroups = [\"dba\"]\nkey_hash = \"{}\"\n",
            cert.file_name().unwrap().to_str().unwrap(),
            private.file_name().unwrap().to_str().unwrap(),
            gatehouse_identity::hash_key(key)
        ),
    )
    .unwrap();
    let out = run(&["config", "check", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    // `config check` reads the certificate and key as the gateway will.
    let good_key = std::fs::read(&private).unwrap();
    std::fs::write(&private, "not a key").unwrap();
    let out = run(&["config", "check", config.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("admin.tls.key: "), "{}", stderr(&out));
    std::fs::write(&private, good_key).unwrap();

    let mut child = gatehouse()
        .args(["serve", "--config", config.to_str().unwrap()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("https://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(&cert)
            .arg(format!("{base}/healthz"))
            .output()
            .expect("curl is installed by scripts/test");
        if out.stdout == b"200" {
            break;
        }
        assert!(Instant::now() < deadline, "serve did not come up over TLS");
        sleep(Duration::from_millis(100));
    }
    let reviews = |args: &[&str]| {
        gatehouse()
            .args(["reviews", "list", "--as", "bob"])
            .args(args)
            .env("GATEHOUSE_KEY", key)
            .env_remove("GATEHOUSE_ADMIN_URL")
            .env_remove("GATEHOUSE_ADMIN_CA")
            .output()
            .unwrap()
    };

    // From the config: https, trusting its [admin] tls certificate.
    let out = reviews(&["--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "no reviews pending");
    // An address given, with the certificate to trust.
    let out = reviews(&["--admin", &base, "--ca", cert.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Without it, the system's authorities do not vouch for this certificate.
    let out = reviews(&["--admin", &base]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("certificate"),
        "the certificate is named: {}",
        stderr(&out)
    );
    // --ca with a plain http:// address, and a key sent in the clear to another host, are
    // refused before anything is sent.
    let out = reviews(&[
        "--admin",
        &format!("http://127.0.0.1:{port}"),
        "--ca",
        cert.to_str().unwrap(),
    ]);
    assert!(
        stderr(&out).contains("--ca is for an https:// admin API"),
        "{}",
        stderr(&out)
    );
    let out = reviews(&["--admin", "http://192.0.2.7:8080"]);
    assert!(
        stderr(&out).contains("not sending your key over plain http:// to 192.0.2.7"),
        "{}",
        stderr(&out)
    );

    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
}

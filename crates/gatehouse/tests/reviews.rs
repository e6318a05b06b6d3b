//! Just-in-time approvals end to end: `gatehouse serve` holds psql's statements for review,
//! and other people decide them from other processes — `gatehouse reviews` and the admin
//! API with curl — while the ledger records each step in order. The auditor's evidence
//! (bundles, OCSF, the report) is then drawn from that ledger (`evidence`).
#![allow(clippy::unwrap_used)] // a test (or bench) that cannot go on fails by panicking

mod common;
mod evidence;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::*;
use gatehouse_testkit::PgCluster;
use serde_json::Value;

const PEOPLE: [(&str, &str); 6] = [
    ("alice", "devs"),
    ("bob", "dba"),
    ("carol", "dba"),
    ("eve", "analysts"),
    // In no approver group: access policy lets pat approve on `pg` only.
    ("pat", "oncall"),
    // May not connect, unless an access request is approved.
    ("vic", "contractors"),
];

const POLICIES: &str = r#"
@id("work")
permit (principal,
        action in [Gatehouse::Action::"connect", Gatehouse::Action::"read",
                   Gatehouse::Action::"write", Gatehouse::Action::"transaction",
                   Gatehouse::Action::"admin"],
        resource);
@id("no-contractors")
forbid (principal in Gatehouse::Group::"contractors",
        action == Gatehouse::Action::"connect",
        resource);
@id("pat-approves-pg")
permit (principal == Gatehouse::Identity::"pat",
        action == Gatehouse::Action::"approve",
        resource == Gatehouse::Resource::"pg");
"#;

fn key(name: &str) -> String {
    format!("{name}-key-0123456789")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Setup {
    dir: tempfile::TempDir,
    pg: PgCluster,
    admin: u16,
    /// Listen ports of the resources `pg` (one approval), `pg-two` (two) and `pg-short`
    /// (a two-second timeout).
    ports: [u16; 3],
    serve: Child,
    /// A webhook receiver: answers its first POST with 500 (so it is retried), records
    /// `path body` lines in `hooks_file`.
    receiver: Child,
    hooks_file: std::path::PathBuf,
}

const RECEIVER: &str = r#"
import http.server, sys
count = 0
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        global count
        count += 1
        body = self.rfile.read(int(self.headers['content-length']))
        if count == 1:
            self.send_response(500); self.end_headers(); return
        with open(sys.argv[2], 'ab') as f: f.write(self.path.encode() + b' ' + body + b'\n')
        self.send_response(200); self.end_headers()
    def log_message(self, *a): pass
http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()
"#;

fn start() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let pg = PgCluster::start().unwrap();
    pg.create_app("app", "app-secret", "appdb").unwrap();
    pg.psql(
        "appdb",
        "SET ROLE app; CREATE TABLE t1 (); CREATE TABLE t2 (); CREATE TABLE t3 (); \
         CREATE TABLE t4 (); CREATE TABLE t5 (); CREATE TABLE t6 (); \
         CREATE TABLE g1 (); CREATE TABLE g2 (); CREATE TABLE g3 (); CREATE TABLE g4 (); \
         CREATE TABLE g5 (); CREATE TABLE t7 (n int); INSERT INTO t7 VALUES (1); \
         CREATE TABLE t8 (); CREATE TABLE t9 (); CREATE TABLE t10 ();",
    )
    .unwrap();
    std::fs::write(dir.path().join("pg-password"), "app-secret").unwrap();
    let admin = free_port();
    let ports = [free_port(), free_port(), free_port()];
    let hook = free_port();
    let hooks_file = dir.path().join("hooks.log");
    let receiver = Command::new("python3")
        .args([
            "-c",
            RECEIVER,
            &hook.to_string(),
            hooks_file.to_str().unwrap(),
        ])
        .spawn()
        .unwrap();
    std::fs::write(dir.path().join("policies.cedar"), POLICIES).unwrap();
    let mut config = format!(
        "data_dir = \"data\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\
         [policy]\npolicies = \"policies.cedar\"\n"
    );
    for (name, port, approvals, timeout) in [
        ("pg", ports[0], 1, "60s"),
        ("pg-two", ports[1], 2, "60s"),
        ("pg-short", ports[2], 1, "2s"),
    ] {
        config.push_str(&format!(
            "[[resources]]\nname = \"{name}\"\nkind = \"postgres\"\nlisten = \"127.0.0.1:{port}\"\n\
             target = \"127.0.0.1:{}\"\ndatabase = \"appdb\"\n\
             [resources.credentials]\nuser = \"app\"\npassword_file = \"pg-password\"\n\
             [resources.masking]\nenabled = false\n\
             [resources.reviews]\napprovers = [\"dba\"]\napprovals = {approvals}\ntimeout = \"{timeout}\"\n\
             [[resources.rules]]\nid = \"drops-need-review\"\naction = \"review\"\n\
             commands = [\"DROP TABLE\"]\nmessage = \"dropping a table needs an approval\"\n",
            pg.port
        ));
        if name == "pg" {
            // A rule of its own: two approvals, and analysts may give one.
            config.push_str(
                "[[resources.rules]]\nid = \"truncates\"\naction = \"review\"\n\
                 commands = [\"TRUNCATE\"]\napprovals = 2\napprovers = [\"dba\", \"analysts\"]\n",
            );
            config.push_str(&format!(
                "[[resources.reviews.notify]]\nurl = \"http://127.0.0.1:{hook}/json\"\n\
                 [[resources.reviews.notify]]\nurl = \"http://127.0.0.1:{hook}/slack\"\nformat = \"slack\"\n"
            ));
        }
    }
    for (name, group) in PEOPLE {
        config.push_str(&format!(
            "[[identities]]\nname = \"{name}\"\nkind = \"human\"\ngroups = [\"{group}\"]\nkey_hash = \"{}\"\n",
            gatehouse_identity::hash_key(&key(name))
        ));
    }
    let file = dir.path().join("gatehouse.toml");
    std::fs::write(&file, config).unwrap();
    let serve = gatehouse()
        .args(["serve", "--config", file.to_str().unwrap()])
        .current_dir(dir.path())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while curl(&[&format!("http://127.0.0.1:{admin}/healthz")]).0 != 200 {
        assert!(Instant::now() < deadline, "serve did not come up");
        sleep(Duration::from_millis(100));
    }
    Setup {
        dir,
        pg,
        admin,
        ports,
        serve,
        receiver,
        hooks_file,
    }
}

/// `curl ARGS`: the HTTP status and body.
fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl is installed by scripts/test");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.parse().unwrap_or(0), body.to_string())
}

impl Setup {
    /// `psql -c SQL` as alice on the resource listening at `port`, in the background.
    fn psql(&self, port: u16, sql: &str) -> Child {
        self.psql_as("alice", port, sql)
    }

    fn psql_as(&self, who: &str, port: u16, sql: &str) -> Child {
        Command::new(self.pg.bindir().join("psql"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", who])
            .args(["-d", "appdb", "-X", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .env("PGPASSWORD", key(who))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// `POST` of a JSON `body` to the admin API at `path`, signed in as `who`.
    fn post(&self, who: &str, path: &str, body: &str) -> (u16, String) {
        let url = format!("http://127.0.0.1:{}{path}", self.admin);
        let user = format!("{who}:{}", key(who));
        let json = "content-type: application/json";
        curl(&["-u", &user, "-X", "POST", "-H", json, "-d", body, &url])
    }

    /// `gatehouse reviews ARGS` as `who`.
    fn reviews(&self, who: &str, args: &[&str]) -> Output {
        self.cli(who, "reviews", args).output().unwrap()
    }

    /// `gatehouse COMMAND ARGS` as `who`, not started.
    fn cli(&self, who: &str, command: &str, args: &[&str]) -> Command {
        let admin = format!("http://127.0.0.1:{}", self.admin);
        let mut cmd = gatehouse();
        cmd.arg(command)
            .args(args)
            .args(["--as", who, "--admin", &admin])
            .env("GATEHOUSE_KEY", key(who));
        cmd
    }

    /// The id of the one pending review, waiting for it to appear.
    fn pending(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self.reviews("bob", &["list", "--json"]);
            assert!(out.status.success(), "{}", stderr(&out));
            let lines: Vec<Value> = stdout(&out)
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            if let [one] = &lines[..] {
                return one["id"].as_str().unwrap().to_string();
            }
            assert!(lines.len() < 2, "one review at a time: {lines:?}");
            assert!(Instant::now() < deadline, "no review appeared");
            sleep(Duration::from_millis(100));
        }
    }

    fn table_exists(&self, name: &str) -> bool {
        self.pg
            .psql(
                "appdb",
                &format!("SELECT to_regclass('{name}') IS NOT NULL"),
            )
            .unwrap()
            == "t"
    }
}

fn finished(child: Child) -> (bool, String) {
    let out = child.wait_with_output().unwrap();
    (out.status.success(), stderr(&out))
}

#[test]
fn held_statements_run_only_once_approved_and_every_step_is_recorded() {
    let s = start();
    let [pg, pg_two, pg_short] = s.ports;

    // Approved from another process with the CLI, after refusals of the requester and of
    // someone outside the approver groups.
    let psql = s.psql(pg, "DROP TABLE t1");
    let id = s.pending();
    // The webhooks heard of it, the one refused at first on a retry.
    let deadline = Instant::now() + Duration::from_secs(20);
    let hooks = loop {
        let text = std::fs::read_to_string(&s.hooks_file).unwrap_or_default();
        if text.lines().count() >= 2 {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "webhooks not delivered: {text:?}"
        );
        sleep(Duration::from_millis(100));
    };
    let json_hook: Value = hooks
        .lines()
        .find_map(|l| l.strip_prefix("/json "))
        .map(|b| serde_json::from_str(b).unwrap())
        .unwrap();
    assert_eq!(json_hook["event"], "review.requested");
    assert_eq!(json_hook["review"]["id"], id.as_str());
    assert_eq!(json_hook["review"]["statement"], "DROP TABLE t1");
    assert_eq!(
        json_hook["approve_url"],
        format!("http://127.0.0.1:{}/api/reviews/{id}/approve", s.admin)
    );
    let slack: Value = hooks
        .lines()
        .find_map(|l| l.strip_prefix("/slack "))
        .map(|b| serde_json::from_str(b).unwrap())
        .unwrap();
    let text = slack["text"].as_str().unwrap();
    assert!(
        text.contains("alice asks to run on *pg*")
            && text.contains(&format!("gatehouse reviews approve {id}")),
        "{text}"
    );
    let own = s.reviews("alice", &["approve", &id]);
    assert!(!own.status.success());
    assert!(
        stderr(&own).contains("alice asked for this review and cannot decide it"),
        "{}",
        stderr(&own)
    );
    let outsider = s.reviews("eve", &["approve", &id]);
    assert!(!outsider.status.success());
    assert!(
        stderr(&outsider).contains("eve may not decide review"),
        "{}",
        stderr(&outsider)
    );
    let listed = s.reviews("bob", &["list"]);
    assert!(
        stdout(&listed).contains(&id) && stdout(&listed).contains("DROP TABLE t1"),
        "{}",
        stdout(&listed)
    );
    let approved = s.reviews("bob", &["approve", &id, "--reason", "planned cleanup"]);
    assert!(approved.status.success(), "{}", stderr(&approved));
    assert!(stdout(&approved).contains(&format!("review {id} is approved (1 of 1 approvals)")));
    let (ok, said) = finished(psql);
    assert!(ok, "{said}");
    assert!(
        said.contains(&format!(
            "gatehouse: held for review {id}: dropping a table needs an approval"
        )),
        "{said}"
    );
    assert!(
        said.contains(&format!("gatehouse reviews approve {id}")),
        "{said}"
    );
    assert!(!s.table_exists("t1"), "the approved DROP ran");
    let first = id;

    // Denied through the admin API, with a reason the client is told.
    let psql = s.psql(pg, "DROP TABLE t2");
    let id = s.pending();
    let (code, body) = s.post(
        "bob",
        &format!("/api/reviews/{id}/deny"),
        "{\"reason\":\"not during the freeze\"}",
    );
    assert_eq!(code, 200, "{body}");
    let (ok, said) = finished(psql);
    assert!(!ok);
    assert!(
        said.contains(&format!(
            "review {id} was denied by bob: not during the freeze"
        )),
        "{said}"
    );
    assert!(s.table_exists("t2"));
    // Without a valid sign-in the API refuses.
    let (code, _) = curl(&[
        "-u",
        "bob:wrong",
        &format!("http://127.0.0.1:{}/api/reviews", s.admin),
    ]);
    assert_eq!(code, 401);

    // Nobody decides: the statement times out.
    let psql = s.psql(pg_short, "DROP TABLE t3");
    let (ok, said) = finished(psql);
    assert!(!ok);
    assert!(
        said.contains("timed out after 2s without a decision"),
        "{said}"
    );
    assert!(s.table_exists("t3"));

    // Two approvals needed: the client hears of the first and runs after the second.
    let psql = s.psql(pg_two, "DROP TABLE t4");
    let id = s.pending();
    let once = s.reviews("bob", &["approve", &id]);
    assert!(
        stdout(&once).contains("is pending (1 of 2 approvals)"),
        "{}",
        stdout(&once)
    );
    assert!(s.table_exists("t4"), "one approval of two runs nothing");
    let twice = s.reviews("carol", &["approve", &id]);
    assert!(twice.status.success(), "{}", stderr(&twice));
    let (ok, said) = finished(psql);
    assert!(ok, "{said}");
    assert!(
        said.contains(&format!("review {id} approved by bob (1 of 2 approvals)")),
        "{said}"
    );
    assert!(!s.table_exists("t4"));

    // The client cancels (psql sends a CancelRequest on SIGINT).
    let psql = s.psql(pg, "DROP TABLE t5");
    let id = s.pending();
    let sent = Command::new("kill")
        .args(["-INT", &psql.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let (ok, said) = finished(psql);
    assert!(!ok);
    assert!(said.contains(&format!("review {id} cancelled")), "{said}");
    assert!(s.table_exists("t5"));
    let all = s.reviews("bob", &["list", "--all", "--json"]);
    let cancelled: Value = stdout(&all)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| r["id"] == id.as_str())
        .unwrap();
    assert_eq!(cancelled["state"], "cancelled");

    // The client goes away (killed): the review is cancelled, nothing runs.
    let mut psql = s.psql(pg, "DROP TABLE t10");
    let id = s.pending();
    psql.kill().unwrap();
    psql.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let all = s.reviews("bob", &["show", &id]);
        let now: Value = serde_json::from_str(&stdout(&all)).unwrap();
        if now["state"] == "cancelled" {
            break;
        }
        assert!(Instant::now() < deadline, "still {}", now["state"]);
        sleep(Duration::from_millis(100));
    }
    assert!(s.table_exists("t10"));

    // psycopg (the extended protocol: Parse, Bind, Execute) held and approved through
    // the admin API.
    let script = "import sys, psycopg\n\
                  with psycopg.connect(sys.argv[1], autocommit=True) as c:\n\
                  \x20   c.execute('DROP TABLE t6')\n\
                  print('psycopg done')\n";
    let driver = Command::new("python3")
        .args([
            "-c",
            script,
            &format!(
                "host=127.0.0.1 port={pg} user=alice dbname=appdb password={}",
                key("alice")
            ),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let id = s.pending();
    let (code, body) = s.post("carol", &format!("/api/reviews/{id}/approve"), "{}");
    assert_eq!(code, 200, "{body}");
    let out = driver.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("psycopg done"));
    assert!(!s.table_exists("t6"));

    // Access policy names an approver outside the groups, on one resource only.
    let psql = s.psql(pg, "DROP TABLE t8");
    let id = s.pending();
    let by_policy = s.reviews("pat", &["approve", &id]);
    assert!(by_policy.status.success(), "{}", stderr(&by_policy));
    let (ok, said) = finished(psql);
    assert!(ok, "{said}");
    assert!(
        said.contains("or those access policy permits to approve"),
        "{said}"
    );
    assert!(!s.table_exists("t8"));
    let psql = s.psql(pg_two, "DROP TABLE t9");
    let id = s.pending();
    let elsewhere = s.reviews("pat", &["approve", &id]);
    assert!(
        stderr(&elsewhere).contains("no policy permits pat to approve"),
        "{}",
        stderr(&elsewhere)
    );
    assert!(s.reviews("bob", &["deny", &id]).status.success());
    assert!(!finished(psql).0);

    // The rule's own approvers and count: eve (an analyst) may approve a TRUNCATE.
    let psql = s.psql(pg, "TRUNCATE t7");
    let id = s.pending();
    let first_of_two = s.reviews("eve", &["approve", &id]);
    assert!(
        stdout(&first_of_two).contains("is pending (1 of 2 approvals)"),
        "{}",
        stderr(&first_of_two)
    );
    assert!(s.reviews("bob", &["approve", &id]).status.success());
    let (ok, said) = finished(psql);
    assert!(ok, "{said}");
    assert_eq!(s.pg.psql("appdb", "SELECT count(*) FROM t7").unwrap(), "0");

    // Access requests: vic may not connect; asks for two seconds, gets them, and is out
    // again after.
    let (ok, said) = finished(s.psql_as("vic", pg, "SELECT 'vic in'"));
    assert!(!ok && said.contains("vic may not connect to pg"), "{said}");
    let asking = s
        .cli(
            "vic",
            "access",
            &[
                "request",
                "pg",
                "--for",
                "3s",
                "--reason",
                "incident 4711",
                "--wait",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let id = s.pending();
    let shown = s.reviews("bob", &["show", &id]);
    assert!(
        stdout(&shown).contains("incident 4711") && stdout(&shown).contains("access to pg for 3s"),
        "{}",
        stdout(&shown)
    );
    assert!(s.reviews("bob", &["approve", &id]).status.success());
    let asked = asking.wait_with_output().unwrap();
    assert!(
        asked.status.success(),
        "{}{}",
        stdout(&asked),
        stderr(&asked)
    );
    assert!(
        stdout(&asked).contains("access to pg granted for 3s"),
        "{}",
        stdout(&asked)
    );
    let out = s
        .psql_as("vic", pg, "SELECT 'vic in'")
        .wait_with_output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("vic in"));
    let access_review = id;
    sleep(Duration::from_millis(3500));
    let (ok, said) = finished(s.psql_as("vic", pg, "SELECT 'vic in'"));
    assert!(
        !ok && said.contains("vic may not connect to pg"),
        "the grant ran out: {said}"
    );
    // A request without a reason, or for a resource that does not exist, is refused.
    let bad = s
        .cli(
            "vic",
            "access",
            &["request", "pg", "--for", "1h", "--reason", " "],
        )
        .output()
        .unwrap();
    assert!(
        stderr(&bad).contains("say why access is needed"),
        "{}",
        stderr(&bad)
    );
    let bad = s
        .cli(
            "vic",
            "access",
            &["request", "pg-nope", "--for", "1h", "--reason", "x"],
        )
        .output()
        .unwrap();
    assert!(
        stderr(&bad).contains("there is no resource \"pg-nope\""),
        "{}",
        stderr(&bad)
    );

    // An approval for a duration: alice's next DROP on the same resource runs without a
    // review, one on another resource is still held.
    let psql = s.psql(pg, "DROP TABLE g1");
    let id = s.pending();
    let granted = s.reviews("bob", &["approve", &id, "--for", "1h"]);
    assert!(
        stdout(&granted)
            .contains("granted: the same rule lets this identity's statements through for"),
        "{}",
        stdout(&granted)
    );
    assert!(finished(psql).0);
    let (ok, said) = finished(s.psql(pg, "DROP TABLE g2"));
    assert!(ok, "{said}");
    assert!(!said.contains("held for review"), "{said}");
    assert!(!s.table_exists("g2"));
    let (ok, said) = finished(s.psql(pg_short, "DROP TABLE g3"));
    assert!(!ok && said.contains("held for review"), "{said}");
    assert!(s.table_exists("g3"));
    let granted_by = id;

    // A grant ends by itself: both approvers give two seconds.
    let psql = s.psql(pg_two, "DROP TABLE g4");
    let id = s.pending();
    assert!(
        s.reviews("bob", &["approve", &id, "--for", "2s"])
            .status
            .success()
    );
    assert!(
        s.reviews("carol", &["approve", &id, "--for", "2s"])
            .status
            .success()
    );
    assert!(finished(psql).0);
    sleep(Duration::from_millis(2500));
    let psql = s.psql(pg_two, "DROP TABLE g5");
    let id = s.pending();
    assert!(
        s.reviews("bob", &["deny", &id, "--reason", "the grant ran out"])
            .status
            .success()
    );
    let (ok, said) = finished(psql);
    assert!(!ok && said.contains("the grant ran out"), "{said}");
    assert!(s.table_exists("g5"));
    // A bad duration is named.
    let bad = s.reviews("bob", &["approve", "r-0000000000", "--for", "soon"]);
    assert!(
        stderr(&bad).contains("\"soon\" is not a duration"),
        "{}",
        stderr(&bad)
    );

    let Setup {
        dir,
        serve,
        mut receiver,
        ..
    } = s;
    let _ = receiver.kill();
    let _ = receiver.wait();
    assert!(
        Command::new("kill")
            .args(["-TERM", &serve.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    assert!(serve.wait_with_output().unwrap().status.success());
    check_ledger(&dir.path().join("data"), &first);
    check_grant(&dir.path().join("data"), &granted_by);
    let vic_session = check_access(&dir.path().join("data"), &access_review);
    check_replay(&dir.path().join("data"), &first, &vic_session);
    check_export(&dir.path().join("data"));
    evidence::check_evidence(&dir.path().join("data"));
}

/// `gatehouse serve` with the setup's configuration, up once its admin API answers.
fn serve(s: &Setup) -> Child {
    let file = s.dir.path().join("gatehouse.toml");
    let child = gatehouse()
        .args(["serve", "--config", file.to_str().unwrap()])
        .current_dir(s.dir.path())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while curl(&[&format!("http://127.0.0.1:{}/healthz", s.admin)]).0 != 200 {
        assert!(Instant::now() < deadline, "serve did not come up");
        sleep(Duration::from_millis(100));
    }
    child
}

/// Stops `serve` as an operator would (SIGTERM) and waits for it.
fn stop(serve: &mut Child) {
    let sent = Command::new("kill")
        .args(["-TERM", &serve.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    assert!(serve.wait().unwrap().success());
}

/// Issue 21: a review pending when the gateway stops is still there when it starts again.
/// Approvers decide it as any other (recorded in the ledger); the statement does not run
/// by itself — its session ended with the gateway — but an approval for a duration is a
/// grant the requester's next try runs under.
#[test]
fn a_pending_review_and_its_grant_survive_a_restart() {
    let mut s = start();
    let pg = s.ports[0];
    let psql = s.psql(pg, "DROP TABLE t9");
    let id = s.pending();
    stop(&mut s.serve);
    let (ok, err) = finished(psql);
    assert!(!ok, "the held session ends with the gateway: {err}");
    // ... saying why, and that the review stays open.
    assert!(
        err.contains("FATAL:  gatehouse is shutting down; review r-")
            && err.contains("stays open for approvers"),
        "{err}"
    );
    assert!(s.table_exists("t9"));

    s.serve = serve(&s);
    let shown = s.reviews("bob", &["show", &id]);
    assert!(shown.status.success(), "{}", stderr(&shown));
    let review: Value = serde_json::from_str(&stdout(&shown)).unwrap();
    assert_eq!(review["state"], "pending");
    assert_eq!(review["restarted"], true);
    assert_eq!(review["statement"], "DROP TABLE t9");

    let (code, body) = s.post(
        "bob",
        &format!("/api/reviews/{id}/approve"),
        r#"{"reason":"after the restart","for":"1h"}"#,
    );
    assert_eq!(code, 200, "{body}");
    let decided: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(decided["state"], "approved");
    // Nothing waited to run it.
    sleep(Duration::from_millis(300));
    assert!(s.table_exists("t9"));

    // The requester, back, finds it decided and runs the statement under its grant.
    let shown = s.reviews("alice", &["show", &id]);
    let review: Value = serde_json::from_str(&stdout(&shown)).unwrap();
    assert_eq!(review["state"], "approved");
    let (ok, err) = finished(s.psql(pg, "DROP TABLE t9"));
    assert!(ok, "{err}");
    assert!(!s.table_exists("t9"));

    // And the grant outlives a second restart.
    stop(&mut s.serve);
    s.serve = serve(&s);
    let (ok, err) = finished(s.psql(pg, "DROP TABLE t10"));
    assert!(ok, "{err}");

    stop(&mut s.serve);
    let _ = s.receiver.kill();
    let _ = s.receiver.wait();
    let data = s.dir.path().join("data");
    let decision = find(&data, |v| {
        v["kind"] == "approval.decision" && v["data"]["review"] == id.as_str()
    })
    .expect("the decision after the restart is recorded");
    assert_eq!(decision["data"]["state"], "approved");
    assert_eq!(decision["actor"]["id"], "bob");
    let request = find(&data, |v| {
        v["kind"] == "approval.request" && v["data"]["review"] == id.as_str()
    })
    .unwrap();
    assert_eq!(
        decision["data"]["request"]["index"], request["i"],
        "the decision names the request made before the restart"
    );
    for table in ["DROP TABLE t9", "DROP TABLE t10"] {
        let granted = entries(&data)
            .into_iter()
            .map(|(_, _, v)| v)
            .rfind(|v| v["kind"] == "command" && v["data"]["sql"] == table)
            .unwrap();
        assert_eq!(granted["data"]["decision"]["grant"]["review"], id.as_str());
    }
}

/// `gatehouse audit export`: filters by identity, resource and window; rows carry the
/// entries' leaf hashes.
fn check_export(data: &Path) {
    let data_arg = data.to_str().unwrap();
    let leaves: std::collections::HashMap<u64, String> = entries(data)
        .into_iter()
        .map(|(i, leaf, _)| (i, hex(&leaf)))
        .collect();
    let out = run(&[
        "audit",
        "export",
        "--data-dir",
        data_arg,
        "--format",
        "jsonl",
        "--user",
        "alice",
        "--since",
        "1h",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Alice's own entries, and the decisions others took on her requests.
    assert!(rows.iter().all(|r| r["actor"]["id"] == "alice"
        || (r["kind"] == "approval.decision" && r["data"]["requester"] == "alice")));
    assert!(rows.iter().any(|r| r["actor"]["id"] == "bob"));
    assert!(
        rows.iter()
            .any(|r| r["kind"] == "command" && r["data"]["sql"] == "DROP TABLE t1")
    );
    for r in &rows {
        assert_eq!(
            r["leaf"].as_str(),
            leaves.get(&r["i"].as_u64().unwrap()).map(String::as_str)
        );
    }

    let file = data.parent().unwrap().join("short.csv");
    let out = run(&[
        "audit",
        "export",
        "--data-dir",
        data_arg,
        "--format",
        "csv",
        "--resource",
        "pg-short",
        "-o",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let csv = std::fs::read_to_string(&file).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("index,time,kind,identity,resource,session,summary,leaf")
    );
    let body: Vec<&str> = lines.collect();
    assert!(
        !body.is_empty() && body.iter().all(|l| l.contains(",pg-short,")),
        "{csv}"
    );
    assert!(
        body.iter().any(|l| l.contains("DROP TABLE t3 [review]")),
        "{csv}"
    );

    // Nothing before an hour ago; a bad time is named.
    let out = run(&[
        "audit",
        "export",
        "--data-dir",
        data_arg,
        "--format",
        "jsonl",
        "--until",
        "1h",
    ]);
    assert!(
        out.status.success() && stdout(&out).is_empty(),
        "{}",
        stdout(&out)
    );
    let out = run(&[
        "audit",
        "export",
        "--data-dir",
        data_arg,
        "--format",
        "csv",
        "--since",
        "yesterday",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--since \"yesterday\""),
        "{}",
        stderr(&out)
    );
}

/// `gatehouse replay` tells the first review's session and vic's session again.
fn check_replay(data: &Path, id: &str, vic_session: &str) {
    let data_arg = data.to_str().unwrap();
    let listed = run(&["replay", "--data-dir", data_arg]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert!(stdout(&listed).contains(vic_session), "{}", stdout(&listed));

    let command = find(data, |v| {
        v["kind"] == "command" && v["data"]["sql"] == "DROP TABLE t1"
    });
    let session = command.unwrap()["session"].as_str().unwrap().to_string();
    let out = run(&["replay", &session, "--data-dir", data_arg]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let expected = [
        "alice connected to pg from 127.0.0.1:".to_string(),
        "alice=> DROP TABLE t1".into(),
        "decision: review by rule drops-need-review".into(),
        format!("held for review {id}: dropping a table needs an approval (needs 1 approval(s))"),
        format!("review {id} approved by bob: planned cleanup"),
        format!("review {id} executed by alice"),
        "DROP TABLE (0 rows,".into(),
        "session ended after".into(),
    ];
    let mut at = 0;
    for want in &expected {
        let found = text[at..]
            .find(want.as_str())
            .unwrap_or_else(|| panic!("{want:?} not in order in:\n{text}"));
        at += found + want.len();
    }
    // Each line starts with its time in the session.
    assert!(
        text.lines().next().unwrap().starts_with("[+00:00.000] "),
        "{text}"
    );

    let out = run(&["replay", vic_session, "--data-dir", data_arg]);
    let text = stdout(&out);
    assert!(text.contains("vic=> SELECT 'vic in'"), "{text}");
    assert!(
        text.contains("   ?column?") && text.contains("   vic in"),
        "the row as vic saw it:\n{text}"
    );
    assert!(text.contains("SELECT 1 (1 rows,"), "{text}");

    let missing = run(&["replay", "s-0000", "--data-dir", data_arg]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("no session s-0000"),
        "{}",
        stderr(&missing)
    );
}

/// vic's session came in on the access grant, and says which. Returns its id.
fn check_access(data: &Path, id: &str) -> String {
    let starts: Vec<Value> = entries(data)
        .into_iter()
        .map(|(_, _, v)| v)
        .filter(|v| v["kind"] == "session.start" && v["actor"]["id"] == "vic")
        .collect();
    assert_eq!(starts.len(), 1, "vic got in once");
    assert_eq!(starts[0]["data"]["access_grant"]["review"], id);
    starts[0]["session"].as_str().unwrap().to_string()
}

/// The statement a grant let through names the review that granted it.
fn check_grant(data: &Path, id: &str) {
    let through = find(data, |v| {
        v["kind"] == "command" && v["data"]["sql"] == "DROP TABLE g2"
    });
    let decision = &through.expect("recorded")["data"]["decision"];
    assert_eq!(decision["outcome"], "review");
    assert_eq!(decision["grant"]["review"], id);
    assert!(decision["grant"]["request"]["leaf"].as_str().unwrap().len() == 64);
}

/// The first review's entries: the command (decided `review`), the request naming it by
/// index and leaf hash, then approved and executed naming the request — in that order,
/// with hashes that match the entries they name.
fn check_ledger(data: &Path, id: &str) {
    let entries = entries(data);
    let by_index = |i: u64| entries.iter().find(|(n, _, _)| *n == i).unwrap();
    let request = entries
        .iter()
        .find(|(_, _, v)| v["kind"] == "approval.request" && v["data"]["review"] == id)
        .expect("the request is recorded");
    let command_ref = &request.2["data"]["command"];
    let command = by_index(command_ref["index"].as_u64().unwrap());
    assert_eq!(command_ref["leaf"], hex(&command.1));
    assert_eq!(command.2["kind"], "command");
    assert_eq!(command.2["data"]["decision"]["outcome"], "review");
    assert_eq!(command.2["data"]["sql"], "DROP TABLE t1");
    let steps: Vec<&(u64, [u8; 32], Value)> = entries
        .iter()
        .filter(|(_, _, v)| v["kind"] == "approval.decision" && v["data"]["review"] == id)
        .collect();
    let states: Vec<&str> = steps
        .iter()
        .map(|(_, _, v)| v["data"]["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["approved", "executed"]);
    assert_eq!(steps[0].2["actor"]["id"], "bob");
    assert_eq!(steps[0].2["data"]["reason"], "planned cleanup");
    for (index, _, v) in &steps {
        assert_eq!(v["data"]["request"]["index"], request.0);
        assert_eq!(v["data"]["request"]["leaf"], hex(&request.1));
        assert!(*index > request.0 && request.0 > command.0, "in order");
    }
    assert!(steps[0].0 < steps[1].0, "approved before executed");
    // The statement's result comes after its execution was recorded.
    let result = entries
        .iter()
        .find(|(_, _, v)| v["kind"] == "result" && v["data"]["command"] == command.0)
        .expect("the approved statement ran");
    assert!(result.0 > steps[1].0);
}

/// Every entry of the ledger in `data`: index, leaf hash, the entry.
fn entries(data: &Path) -> Vec<(u64, [u8; 32], Value)> {
    let mut all = Vec::new();
    gatehouse_ledger::segment::scan(&gatehouse_ledger::Layout::new(data), |e| {
        let v: Value = serde_json::from_slice(e.line).unwrap();
        all.push((e.index, gatehouse_ledger::merkle::leaf_hash(e.line), v));
        Ok(())
    })
    .unwrap();
    all
}

/// The first entry `matches` takes.
fn find(data: &Path, matches: impl Fn(&Value) -> bool) -> Option<Value> {
    entries(data)
        .into_iter()
        .map(|(_, _, v)| v)
        .find(|v| matches(v))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

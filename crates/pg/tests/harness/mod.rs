//! The PostgreSQL gateway test harness: a real cluster (SCRAM) with an `appdb` owned by
//! `app` and a `customers` table, a gateway in front of it with guardrails, and helpers to
//! run `psql` and psycopg through it and read the ledger back. Shared by the test files.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use gatehouse_config::{IdentityConfig, IdentityKind, Secret};
use gatehouse_core::Durability;
use gatehouse_identity::{ApiKeys, Authenticator, hash_key};
use gatehouse_ledger::segment::scan;
use gatehouse_ledger::{Layout, Ledger, LedgerOptions};
use gatehouse_pg::{CancelMap, PgResource};
use gatehouse_sql::{OnUnparsed, Rule, RuleAction, StatementClass};
use gatehouse_testkit::PgCluster;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub(crate) const KEY: &str = "gh_test_key_for_alice";

pub(crate) fn guardrails() -> Vec<Rule> {
    let rule = |id: &str| Rule::new(id, RuleAction::Deny);
    vec![
        Rule {
            commands: vec!["DROP DATABASE".into()],
            message: Some("databases are not dropped through the gateway".into()),
            ..rule("no-drop-db")
        },
        Rule {
            commands: vec!["DELETE".into(), "UPDATE".into()],
            missing_where: true,
            ..rule("no-unbounded-writes")
        },
        Rule {
            tables: vec!["public.payroll*".into()],
            action: RuleAction::Review,
            ..rule("payroll-needs-review")
        },
        Rule {
            classes: vec![StatementClass::Ddl],
            groups: vec!["deployers".into()],
            message: Some("deployers change schemas through the pipeline".into()),
            ..rule("deployers-no-ddl")
        },
    ]
}

pub(crate) struct Gateway {
    pub pg: PgCluster,
    pub port: u16,
    pub ledger: Ledger,
    /// The gateway data directory holding the ledger.
    pub ledger_dir: PathBuf,
    pub data: tempfile::TempDir,
    pub stop: watch::Sender<bool>,
    /// The state store the gateway checks managed API keys in.
    pub store: gatehouse_store::Store,
    /// The reviews of held statements, as the admin API would see them.
    pub reviews: gatehouse_approvals::Reviews,
}

pub(crate) async fn gateway(durability: Durability) -> Gateway {
    gateway_with(durability, false).await
}

pub(crate) async fn gateway_with(durability: Durability, with_tls: bool) -> Gateway {
    gateway_on(Setup {
        durability,
        with_tls,
        ..Setup::default()
    })
    .await
}

/// How a test's gateway is set up.
pub(crate) struct Setup {
    pub durability: Durability,
    /// TLS towards clients (self-signed, required).
    pub with_tls: bool,
    /// Where the ledger lives (default: the test's temporary directory).
    pub ledger_dir: Option<PathBuf>,
    pub opts: LedgerOptions,
    pub target: Target,
    /// Result data recorded per session (`None`: summaries only).
    pub record_cap: Option<u64>,
    /// OpenID Providers whose tokens are accepted.
    pub issuers: Vec<gatehouse_config::IssuerConfig>,
    /// Cedar policy text (`None`: guardrails only).
    pub policy: Option<&'static str>,
    /// `[resources.masking]` (`None`: masking off, so other tests see their data as is).
    pub masking: Option<gatehouse_config::MaskingConfig>,
    /// `[resources.limits]`.
    pub limits: gatehouse_config::LimitsConfig,
    /// Startup parameters allowed beyond the built-in list.
    pub startup_parameters: Vec<String>,
    /// Guardrails (`None`: [`guardrails`]).
    pub rules: Option<Vec<Rule>>,
    /// Groups that approve held statements (none: held statements are refused).
    pub approvers: Vec<String>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            durability: Durability::Sync,
            with_tls: false,
            ledger_dir: None,
            opts: LedgerOptions::default(),
            target: Target::Plain,
            record_cap: Some(16 << 20),
            issuers: Vec::new(),
            policy: None,
            masking: None,
            limits: Default::default(),
            startup_parameters: Vec::new(),
            rules: None,
            approvers: Vec::new(),
        }
    }
}

/// How the gateway reaches the test's cluster.
#[derive(Clone, Copy)]
pub(crate) enum Target {
    Plain,
    /// The cluster serves TLS only, with a certificate for `localhost` and 127.0.0.1 signed
    /// by a fresh CA; the gateway trusts that CA (or, with `trusted: false`, another one)
    /// and checks `server_name` (default: the target's host).
    Tls {
        trusted: bool,
        server_name: Option<&'static str>,
    },
}

/// A CA and a server certificate it signed, as PEM: (CA certificate, server certificate,
/// server key).
pub(crate) fn make_ca_and_server_cert() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    (ca.pem(), server.pem(), server_key.serialize_pem())
}

pub(crate) async fn gateway_on(setup: Setup) -> Gateway {
    let Setup {
        durability,
        with_tls,
        ledger_dir,
        opts,
        target,
        record_cap,
        issuers,
        policy,
        masking,
        limits,
        startup_parameters,
        rules,
        approvers,
    } = setup;
    let (pg, trusted_ca) = tokio::task::spawn_blocking(move || {
        let pg = PgCluster::start().unwrap();
        let trusted_ca = match target {
            Target::Plain => None,
            Target::Tls { trusted, .. } => {
                let (ca, cert, key) = make_ca_and_server_cert();
                pg.enable_tls(&cert, &key).unwrap();
                Some(if trusted { ca } else { make_ca_and_server_cert().0 })
            }
        };
        pg.create_app("app", "app-secret", "appdb").unwrap();
        pg.psql(
            "appdb",
            "SET ROLE app; CREATE TABLE customers (id int primary key, name text, email text); \
             INSERT INTO customers VALUES (1, 'Ada', 'ada@example.com'), (2, 'Grace', 'grace@example.com')",
        )
        .unwrap();
        (pg, trusted_ca)
    })
    .await
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let target_tls = trusted_ca.map(|ca| {
        let path = data.path().join("target-ca.pem");
        std::fs::write(&path, ca).unwrap();
        let name = match target {
            Target::Tls {
                server_name: Some(name),
                ..
            } => name,
            _ => "127.0.0.1",
        };
        gatehouse_pg::tls::load_client_config(&path, name).unwrap()
    });
    let ledger_dir = ledger_dir.unwrap_or_else(|| data.path().to_path_buf());
    let dir = ledger_dir.clone();
    let (ledger, _) = tokio::task::spawn_blocking(move || Ledger::open(&dir, opts))
        .await
        .unwrap()
        .unwrap();
    let keys = ApiKeys::new(&[IdentityConfig {
        name: "alice".into(),
        kind: IdentityKind::Human,
        groups: vec!["analysts".into()],
        key_hash: hash_key(KEY),
    }]);
    let store = gatehouse_store::Store::open_in(data.path()).await.unwrap();
    let reviews = gatehouse_approvals::Reviews::default();
    let resource = Arc::new(PgResource {
        name: "pg-test".into(),
        target: format!("127.0.0.1:{}", pg.port),
        database: "appdb".into(),
        user: "app".into(),
        password: Secret::new("app-secret"),
        durability,
        auth: Authenticator::new(keys, Some(store.clone()))
            .with_oidc(gatehouse_identity::oidc::Oidc::new(&issuers).unwrap()),
        ledger: ledger.clone(),
        cancels: CancelMap::default(),
        rules: rules.unwrap_or_else(guardrails),
        on_unparsed: OnUnparsed::Deny,
        tls: with_tls.then(|| {
            let (cert, key) = gatehouse_pg::tls::ensure_self_signed(data.path()).unwrap();
            gatehouse_pg::tls::load_server_config(&cert, &key).unwrap()
        }),
        require_tls: with_tls,
        target_tls,
        record_results: record_cap,
        policy: policy.map(|text| {
            let path = data.path().join("policies.cedar");
            std::fs::write(&path, text).unwrap();
            Arc::new(gatehouse_policy::PolicyHandle::load(&path, None).unwrap())
        }),
        environment: Some("test".into()),
        tags: vec!["pii".into()],
        masking: masking.map(|config| {
            Arc::new(
                gatehouse_pg::masking::MaskPolicy::from_config(&config, b"test-mask-key").unwrap(),
            )
        }),
        catalog: gatehouse_pg::catalog::Catalog::new(),
        reviews: reviews.clone(),
        // No approvers (the default): a statement held for review is refused.
        review: gatehouse_pg::ReviewSettings {
            approvers,
            approvals: 1,
            timeout: std::time::Duration::from_secs(600),
            admin_url: "http://127.0.0.1:1".into(),
            notify: Vec::new(),
        },
        admission: gatehouse_pg::admission::Admission::from_config(&limits),
        startup_parameters,
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stop_rx) = watch::channel(false);
    tokio::spawn(gatehouse_pg::serve(listener, resource, stop_rx));
    Gateway {
        pg,
        port,
        ledger,
        ledger_dir,
        data,
        stop,
        store,
        reviews,
    }
}

impl Gateway {
    pub(crate) fn psql(&self, user: &str, key: &str, args: &[&str]) -> Output {
        Command::new(self.pg.bindir().join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                user,
                "-d",
                "appdb",
            ])
            .args(["-X", "-A", "-t"])
            .args(args)
            .env("PGPASSWORD", key)
            .env("PGSSLMODE", "prefer")
            .env("PGSSLROOTCERT", self.data.path().join("demo-tls.crt"))
            .output()
            .unwrap()
    }

    /// Signs in as `user` with `key` and expects the refusal every bad credential gets, the
    /// same whatever was wrong; returns psql's error output.
    pub(crate) fn refused(&self, user: &str, key: &str) -> String {
        let out = self.psql(user, key, &["-c", "SELECT 'must not run'"]);
        let (_, stderr) = text(&out);
        assert!(!out.status.success(), "{user} got in");
        assert!(
            stderr.contains(&format!(
                "password authentication failed for user \"{user}\""
            )),
            "{stderr}"
        );
        stderr
    }

    /// Stores a new managed agent key for `name` in the gateway's state store; returns its
    /// id and the key.
    pub(crate) async fn add_agent_key(
        &self,
        name: &str,
        groups: &[&str],
        expires_at: Option<i64>,
    ) -> (String, String) {
        let (id, key) = gatehouse_identity::new_managed_key().unwrap();
        let stored = gatehouse_store::ManagedKey {
            id: id.clone(),
            name: name.into(),
            kind: IdentityKind::Agent,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            key_hash: hash_key(&key),
            created_at: gatehouse_identity::unix_now(),
            expires_at,
            revoked_at: None,
            revoked_reason: None,
        };
        self.store.insert_key(&stored, "test").await.unwrap();
        (id, key)
    }

    /// Waits for sessions to record their end, closes the ledger and returns every entry.
    pub(crate) async fn entries(&self) -> Vec<Value> {
        // A client may exit before its session task has appended `session.end`: wait until
        // the ledger has been quiet for a moment.
        let mut last = self.ledger.status().size;
        let mut quiet = 0;
        while quiet < 3 {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let now = self.ledger.status().size;
            quiet = if now == last { quiet + 1 } else { 0 };
            last = now;
        }
        let ledger = self.ledger.clone();
        tokio::task::spawn_blocking(move || ledger.close())
            .await
            .unwrap()
            .unwrap();
        read_entries(&self.ledger_dir)
    }
}

pub(crate) fn read_entries(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    scan(&Layout::new(dir), |e| {
        out.push(serde_json::from_slice(e.line).unwrap());
        Ok(())
    })
    .unwrap();
    out
}

/// The offline verifier's summary of the ledger in `dir`, which must be intact.
pub(crate) fn verify_ledger(dir: &Path) -> gatehouse_ledger::VerifySummary {
    gatehouse_ledger::verify(dir, &gatehouse_ledger::TrustedKey::FromDataDir, &[], |_| {}).unwrap()
}

pub(crate) fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

pub(crate) fn of_kind<'a>(entries: &'a [Value], kind: &str) -> Vec<&'a Value> {
    entries.iter().filter(|e| e["kind"] == kind).collect()
}

/// Runs the driver script `tests/drivers/NAME` against the gateway as alice.
pub(crate) fn psycopg(gw: &Gateway, name: &str) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/drivers")
        .join(name);
    let conninfo = format!(
        "host=127.0.0.1 port={} user=alice dbname=appdb password={KEY}",
        gw.port
    );
    Command::new("python3")
        .arg(&script)
        .arg(&conninfo)
        .output()
        .unwrap()
}

/// What alice's psql prints for `sql` through the gateway, trimmed.
pub(crate) fn alice_sql(gw: &Gateway, sql: &str) -> String {
    text(&gw.psql("alice", KEY, &["-c", sql]))
        .0
        .trim()
        .to_string()
}

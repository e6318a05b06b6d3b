//! `gatehouse demo`: the gateway on a built-in configuration — a local data directory, and
//! when PostgreSQL's server binaries are installed, a throwaway PostgreSQL with a table of
//! fake customer data behind a `pg-demo` resource, plus an API key to sign in with.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use gatehouse_config::{
    Config, CredentialsConfig, Durability, IdentityConfig, IdentityKind, ResourceConfig,
    ResourceKind, TlsConfig,
};
use gatehouse_core::{Actor, ActorKind, Event, EventKind, ResourceRef};
use gatehouse_identity::{generate_key, hash_key};
use gatehouse_ledger::{Ledger, TrustedKey};
use gatehouse_sql::{OnUnparsed, Rule, RuleAction};
use gatehouse_testkit::PgCluster;
use serde_json::json;

use crate::cli::{DemoArgs, LogFormat};
use crate::gateway::{Running, run_gateway, shutdown_signal};
use crate::logging;

const DEMO_USER: &str = "demo@example.com";

/// Fake people, so masking and auditing have something realistic to show.
const SEED: &str =
    "CREATE TABLE customers (id int PRIMARY KEY, name text, email text, phone text, card text);
INSERT INTO customers VALUES
 (1, 'Ada Lovelace', 'ada@example.com', '+44 20 7946 0018', '4111 1111 1111 1111'),
 (2, 'Grace Hopper', 'grace@example.org', '+1 212 555 0199', '5500 0000 0000 0004'),
 (3, 'Alan Turing', 'alan@example.net', '+44 161 496 0754', '3400 0000 0000 009');";

pub(crate) async fn demo(
    args: DemoArgs,
    log_format: Option<LogFormat>,
) -> anyhow::Result<ExitCode> {
    logging::init(log_format.unwrap_or(LogFormat::Text), "info", false)?;
    let mut config = Config::demo(args.data_dir.clone());
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;

    // A throwaway PostgreSQL when its binaries are here; the demo still runs without one.
    let cluster = match tokio::task::spawn_blocking(start_demo_database).await? {
        Ok(cluster) => Some(cluster),
        Err(why) => {
            eprintln!("demo: no demo PostgreSQL ({why}); running the ledger and admin API only");
            None
        }
    };
    let key = generate_key().map_err(anyhow::Error::msg)?;
    if let Some(cluster) = &cluster {
        let password_file = config.data_dir.join("demo-target-password");
        std::fs::write(&password_file, "demo-app-secret")?;
        config.identities.push(IdentityConfig {
            name: DEMO_USER.into(),
            kind: IdentityKind::Human,
            groups: vec!["analysts".into()],
            key_hash: hash_key(&key),
        });
        config.resources.push(ResourceConfig {
            name: "pg-demo".into(),
            kind: ResourceKind::Postgres,
            durability: Durability::Sync,
            listen: Some(pick_listen(args.postgres)),
            target: Some(format!("127.0.0.1:{}", cluster.port)),
            database: Some("demo".into()),
            credentials: Some(CredentialsConfig {
                user: "app".into(),
                password_env: None,
                password_file: Some(password_file),
            }),
            rules: demo_rules(),
            on_unparsed: OnUnparsed::Deny,
            tls: Some(demo_tls(&config.data_dir)?),
            // The demo cluster listens on loopback only.
            target_tls: None,
            recording: Default::default(),
            masking: Default::default(),
            reviews: Default::default(),
            environment: None,
            tags: Vec::new(),
            limits: Default::default(),
            startup_parameters: Vec::new(),
        });
    }
    config
        .validate()
        .map_err(|problems| anyhow::anyhow!("demo configuration: {problems:?}"))?;

    let data_dir = config.data_dir.clone();
    let with_database = cluster.is_some();
    run_gateway(
        &config,
        args.admin,
        true,
        None,
        shutdown_signal(args.duration),
        async |running: &Running| {
            if !with_database {
                write_sample_session(&running.ledger).await?;
            }
            print_banner(&data_dir.display().to_string(), running, &key);
            Ok(())
        },
    )
    .await?;
    drop(cluster);

    let summary = tokio::task::spawn_blocking(move || {
        gatehouse_ledger::verify(&data_dir, &TrustedKey::FromDataDir, &[], |_| {})
    })
    .await??;
    outln!(
        "\nVerified the demo ledger offline: {} entries, {} checkpoints, root {} — intact.",
        summary.entries,
        summary.checkpoints,
        summary.root
    );
    Ok(ExitCode::SUCCESS)
}

/// A self-signed certificate in the data directory (made on first start), required.
fn demo_tls(data_dir: &std::path::Path) -> anyhow::Result<TlsConfig> {
    let (cert, key) = gatehouse_pg::tls::ensure_self_signed(data_dir)?;
    Ok(TlsConfig {
        cert,
        key,
        require: true,
    })
}

/// Guardrails worth showing: try `DROP DATABASE demo` or `DELETE FROM customers`.
fn demo_rules() -> Vec<Rule> {
    let rule = |id: &str, message: &str| Rule {
        message: Some(message.into()),
        ..Rule::new(id, RuleAction::Deny)
    };
    vec![
        Rule {
            commands: vec!["DROP DATABASE".into(), "TRUNCATE".into()],
            ..rule(
                "no-destroy",
                "dropping or truncating is not allowed through the demo gateway",
            )
        },
        Rule {
            commands: vec!["DELETE".into(), "UPDATE".into()],
            missing_where: true,
            ..rule(
                "no-unbounded-writes",
                "DELETE and UPDATE need a WHERE clause",
            )
        },
    ]
}

fn start_demo_database() -> Result<PgCluster, String> {
    let cluster = PgCluster::start()?;
    cluster.create_app("app", "demo-app-secret", "demo")?;
    cluster.psql("demo", &format!("SET ROLE app; {SEED}"))?;
    Ok(cluster)
}

/// The requested PostgreSQL listen address, or a free port when it is taken.
fn pick_listen(wanted: SocketAddr) -> SocketAddr {
    match std::net::TcpListener::bind(wanted) {
        Ok(_) => wanted,
        Err(_) => SocketAddr::new(wanted.ip(), gatehouse_testkit::free_port()),
    }
}

/// Without a database, a short made-up session shows the event shapes of a real one.
async fn write_sample_session(ledger: &Ledger) -> anyhow::Result<()> {
    let actor = Actor {
        id: "alice@example.com".into(),
        kind: ActorKind::Human,
        idp: Some("demo".into()),
        groups: vec!["analysts".into()],
    };
    let resource = ResourceRef {
        name: "pg-demo".into(),
        kind: "postgres".into(),
    };
    let session = format!("demo-{}", std::process::id());
    let event = |kind, data| Event {
        kind,
        actor: Some(actor.clone()),
        resource: Some(resource.clone()),
        session: Some(session.clone()),
        data,
        chunks: Vec::new(),
    };
    let chunk = ledger
        .put_chunk(b"id|email\n1|[email redacted]\n2|[email redacted]\n".to_vec())
        .await?;
    let mut result = event(EventKind::Result, json!({"tags": ["SELECT 2"], "rows": 2}));
    result.chunks.push(chunk);
    for e in [
        event(
            EventKind::SessionStart,
            json!({"client": "127.0.0.1", "application": "psql"}),
        ),
        event(
            EventKind::Command,
            json!({"sql": "SELECT id, email FROM customers LIMIT 2", "protocol": "simple"}),
        ),
        result,
        event(EventKind::SessionEnd, json!({"commands": 1})),
    ] {
        ledger.append(&e, gatehouse_core::Durability::Sync).await?;
    }
    ledger.checkpoint().await?;
    Ok(())
}

fn print_banner(dir: &str, running: &Running, key: &str) {
    // Under `cargo run` the binary is not on PATH; show the command that works.
    let exe = std::env::current_exe().unwrap_or_default();
    let gatehouse = if exe.components().any(|c| c.as_os_str() == "target") {
        "cargo run --release --"
    } else {
        "gatehouse"
    };
    let admin = running.admin;
    let vkey = running.ledger.verifier_key();
    outln!("\nGatehouse demo is running.\n");
    outln!("  data directory   {dir}");
    outln!("  admin API        http://{admin}");
    outln!("  verifier key     {vkey}");
    for (name, addr) in &running.postgres {
        outln!("  {name:<16} postgres on {addr} (identity {DEMO_USER})");
        outln!("\nConnect with psql (the API key is the password; it is shown only now):");
        outln!(
            "  PGPASSWORD='{key}' psql \"host={} port={} user={DEMO_USER} dbname=demo sslmode=require\" -c 'SELECT name, email FROM customers'",
            addr.ip(),
            addr.port()
        );
    }
    outln!("\nTry, in another terminal:");
    outln!("  curl http://{admin}/api/ledger/checkpoint");
    outln!("  curl http://{admin}/metrics");
    outln!("  {gatehouse} ledger verify --data-dir {dir} --pubkey '{vkey}'");
    outln!("  {gatehouse} ledger proof --data-dir {dir} --index 3");
    outln!("  {gatehouse} replay --data-dir {dir}");
    outln!("  {gatehouse} audit report --data-dir {dir} -o report.html");
    outln!("  {gatehouse} audit export --data-dir {dir} -o evidence.bundle");
    outln!("  {gatehouse} audit verify-export evidence.bundle --pubkey '{vkey}'");
    outln!("\nPress Ctrl-C to stop (the ledger then signs a final checkpoint).\n");
}

//! Running the gateway: `serve` from a config file, `demo` on the built-in default, and
//! `config check`. Owns startup order, signals and graceful shutdown.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use gatehouse_config::Config;
use gatehouse_core::{Actor, ActorKind, Durability, Event, EventKind, ResourceRef};
use gatehouse_ledger::{Ledger, LedgerOptions, TrustedKey};
use gatehouse_server::AdminState;
use metrics_exporter_prometheus::PrometheusBuilder;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::cli::{DemoArgs, LogFormat, ServeArgs};
use crate::logging;

/// `gatehouse config check FILE`: prints every problem, exit 0 only when valid.
pub fn config_check(file: &Path) -> ExitCode {
    match Config::load(file) {
        Ok(config) => {
            println!(
                "{}: ok ({} resource{}, data directory {})",
                file.display(),
                config.resources.len(),
                if config.resources.len() == 1 { "" } else { "s" },
                config.data_dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

/// `gatehouse serve --config FILE`.
pub async fn serve(args: ServeArgs, log_format: Option<LogFormat>) -> anyhow::Result<ExitCode> {
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    let format = log_format.unwrap_or(match config.log.format {
        gatehouse_config::LogFormat::Text => LogFormat::Text,
        gatehouse_config::LogFormat::Json => LogFormat::Json,
    });
    logging::init(format, &config.log.level, true)?;
    let config_bytes = std::fs::read(&args.config).unwrap_or_default();
    run_gateway(
        &config,
        config.admin.listen,
        false,
        Some((&args.config, &config_bytes)),
        shutdown_signal(None),
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// `gatehouse demo`: the built-in configuration, a few sample events, and a walkthrough.
pub async fn demo(args: DemoArgs, log_format: Option<LogFormat>) -> anyhow::Result<ExitCode> {
    logging::init(log_format.unwrap_or(LogFormat::Text), "info", false)?;
    let config = Config::demo(args.data_dir.clone());
    run_gateway(
        &config,
        args.admin,
        true,
        None,
        shutdown_signal(args.duration),
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}

fn ledger_options(config: &Config) -> LedgerOptions {
    let l = &config.ledger;
    LedgerOptions {
        origin: Some(l.origin.clone()),
        segment_size: l.segment_size.bytes(),
        max_batch: l.max_batch,
        max_entry_size: l.max_entry_size.bytes() as usize,
        checkpoint_interval: l.checkpoint_interval,
        heartbeat_interval: Some(l.heartbeat_interval),
        batched_window: l.batched_window,
    }
}

/// Starts the ledger and the admin API, runs until `shutdown` resolves, then stops the
/// API, flushes the ledger and signs its final checkpoint.
async fn run_gateway(
    config: &Config,
    admin: SocketAddr,
    demo: bool,
    config_file: Option<(&Path, &[u8])>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let metrics = PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    let data_dir = config.data_dir.clone();
    let opts = ledger_options(config);
    let (ledger, report) = tokio::task::spawn_blocking(move || Ledger::open(&data_dir, opts))
        .await?
        .with_context(|| format!("opening the ledger in {}", config.data_dir.display()))?;
    tracing::info!(
        data_dir = %config.data_dir.display(),
        entries = report.entries,
        unclean_shutdown = report.unclean_shutdown,
        verifier_key = %ledger.verifier_key(),
        "ledger open"
    );
    if let Some((path, bytes)) = config_file {
        // Record which configuration this run enforces (its hash, never its secrets).
        let event = Event::system(
            EventKind::ConfigChange,
            json!({
                "file": path.display().to_string(),
                "sha256": hex::encode(Sha256::digest(bytes)),
                "resources": config.resources.iter().map(|r| &r.name).collect::<Vec<_>>(),
            }),
        );
        ledger.append(&event, Durability::Sync).await?;
    }

    let listener = match TcpListener::bind(admin).await {
        Ok(l) => l,
        Err(e) if demo => {
            tracing::warn!(%admin, error = %e, "admin address taken; using a free port");
            TcpListener::bind(SocketAddr::new(admin.ip(), 0)).await?
        }
        Err(e) => return Err(e).with_context(|| format!("admin.listen: cannot listen on {admin}")),
    };
    let admin_addr = listener.local_addr()?;
    tracing::info!(address = %admin_addr, "admin API listening");

    let (stop_tx, stop_rx) = watch::channel(false);
    let state = AdminState {
        ledger: ledger.clone(),
        metrics: Some(metrics),
    };
    let mut api_stop = stop_rx.clone();
    let api = tokio::spawn(gatehouse_server::serve(listener, state, async move {
        let _ = api_stop.wait_for(|s| *s).await;
    }));

    if demo {
        write_demo_session(&ledger).await?;
        print_demo_banner(config, &ledger, admin_addr);
    }

    shutdown.await;
    tracing::info!("shutting down: stopping the admin API, flushing the ledger");
    let _ = stop_tx.send(true);
    match tokio::time::timeout(Duration::from_secs(10), api).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "admin API stopped with an error"),
        Err(_) => tracing::warn!("admin API did not stop within 10 s"),
        _ => {}
    }
    let closing = ledger.clone();
    let checkpoint = tokio::task::spawn_blocking(move || closing.close()).await??;
    match &checkpoint {
        Some(cp) => tracing::info!(
            size = cp.checkpoint.size,
            "final checkpoint signed; ledger closed"
        ),
        None => tracing::info!("ledger closed (empty)"),
    }

    if demo {
        let data_dir = config.data_dir.clone();
        let key = TrustedKey::Given(ledger.verifier_key().to_string());
        let summary = tokio::task::spawn_blocking(move || {
            gatehouse_ledger::verify(&data_dir, &key, &[], |_| {})
        })
        .await??;
        println!(
            "\nVerified the demo ledger offline: {} entries, {} checkpoints, root {} — intact.",
            summary.entries, summary.checkpoints, summary.root
        );
    }
    Ok(())
}

/// A short made-up session so the demo ledger shows the event shapes of a real one.
async fn write_demo_session(ledger: &Ledger) -> anyhow::Result<()> {
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
    let result_rows = b"id|email\n1|[email redacted]\n2|[email redacted]\n".to_vec();
    let chunk = ledger.put_chunk(result_rows).await?;
    let mut result = event(
        EventKind::Result,
        json!({"tag": "SELECT 2", "rows": 2, "masked": {"email": 2}}),
    );
    result.chunks.push(chunk);
    for e in [
        event(
            EventKind::SessionStart,
            json!({"client": "127.0.0.1", "application": "psql"}),
        ),
        event(
            EventKind::Command,
            json!({"sql": "SELECT id, email FROM customers LIMIT 2", "class": "read"}),
        ),
        event(
            EventKind::PolicyDecision,
            json!({"decision": "allow", "policies": ["analysts-read"]}),
        ),
        result,
        event(
            EventKind::Command,
            json!({"sql": "DROP TABLE customers", "class": "ddl"}),
        ),
        event(
            EventKind::PolicyDecision,
            json!({"decision": "deny", "policies": ["no-drop"]}),
        ),
        event(EventKind::SessionEnd, json!({"commands": 2, "denied": 1})),
    ] {
        ledger.append(&e, Durability::Sync).await?;
    }
    ledger.checkpoint().await?;
    Ok(())
}

fn print_demo_banner(config: &Config, ledger: &Ledger, admin: SocketAddr) {
    let dir = config.data_dir.display();
    // Under `cargo run` the binary is not on PATH; show the command that works.
    let exe = std::env::current_exe().unwrap_or_default();
    let gatehouse = if exe.components().any(|c| c.as_os_str() == "target") {
        "cargo run --release --"
    } else {
        "gatehouse"
    };
    println!(
        "\nGatehouse demo is running.\n\
         \n  data directory   {dir}\
         \n  admin API        http://{admin}\
         \n  verifier key     {key}\
         \n\nTry, in another terminal:\
         \n  curl http://{admin}/healthz\
         \n  curl http://{admin}/api/ledger/checkpoint\
         \n  curl http://{admin}/metrics\
         \n  {gatehouse} ledger verify --data-dir {dir} --pubkey '{key}'\
         \n  {gatehouse} ledger proof --data-dir {dir} --index 3\
         \n\nPress Ctrl-C to stop (the ledger then signs a final checkpoint).\n",
        key = ledger.verifier_key()
    );
}

/// Resolves on SIGINT or SIGTERM, or after `limit` when given.
async fn shutdown_signal(limit: Option<Duration>) {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    let timer = async {
        match limit {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
        _ = timer => tracing::info!("demo duration reached"),
    }
}

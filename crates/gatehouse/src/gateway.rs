//! Running the gateway: `serve` from a config file and `config check`. Owns startup order,
//! signals and graceful shutdown; `demo` reuses it with a built-in configuration.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use std::sync::Arc;

use gatehouse_approvals::Reviews;
use gatehouse_config::{Config, ResourceKind};
use gatehouse_core::{Durability, Event, EventKind};
use gatehouse_identity::{ApiKeys, Authenticator};
use gatehouse_ledger::{Ledger, LedgerOptions};
use gatehouse_pg::{CancelMap, PgResource};
use gatehouse_policy::PolicyHandle;
use gatehouse_server::{AdminState, ResourceFacts};
use gatehouse_store::Store;
use metrics_exporter_prometheus::PrometheusBuilder;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::cli::{LogFormat, ServeArgs};
use crate::logging;

/// `gatehouse config check FILE`: prints every problem, exit 0 only when valid.
pub(crate) fn config_check(file: &Path) -> ExitCode {
    match Config::load(file) {
        Ok(config) => {
            if let Some(p) = &config.policy
                && let Err(e) =
                    gatehouse_policy::PolicyEngine::load(&p.policies, p.schema.as_deref())
            {
                eprintln!("{}: policy: {e}", file.display());
                return ExitCode::from(1);
            }
            if let Some(tls) = &config.admin.tls
                && let Err(e) = gatehouse_server::tls::server_config(&tls.cert, &tls.key)
            {
                eprintln!("{}: {e}", file.display());
                return ExitCode::from(1);
            }
            outln!(
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
pub(crate) async fn serve(
    args: ServeArgs,
    log_format: Option<LogFormat>,
) -> anyhow::Result<ExitCode> {
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
        async |running: &Running| {
            for (name, addr) in &running.postgres {
                tracing::info!(resource = %name, address = %addr, "accepting PostgreSQL clients");
            }
            Ok(())
        },
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn ledger_options(config: &Config) -> LedgerOptions {
    let l = &config.ledger;
    LedgerOptions {
        origin: Some(l.origin.clone()),
        segment_size: l.segment_size.bytes(),
        retry_interval: l.retry_interval,
        max_entry_size: l.max_entry_size.bytes() as usize,
        checkpoint_interval: l.checkpoint_interval,
        heartbeat_interval: Some(l.heartbeat_interval),
        batched_window: l.batched_window,
    }
}

/// What a running gateway tells the code that started it.
pub(crate) struct Running {
    pub ledger: Ledger,
    pub admin: SocketAddr,
    /// Each PostgreSQL resource and the address it listens on.
    pub postgres: Vec<(String, SocketAddr)>,
}

/// Starts the ledger, the admin API and a listener per resource, calls `started`, runs
/// until `shutdown` resolves, then stops listening, flushes the ledger and signs its final
/// checkpoint.
pub(crate) async fn run_gateway(
    config: &Config,
    admin: SocketAddr,
    demo: bool,
    config_file: Option<(&Path, &[u8])>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    started: impl AsyncFnOnce(&Running) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    match crate::limits::raise_open_files() {
        Ok(Some((from, to))) => tracing::info!(from, to, "raised the open-file limit"),
        Ok(None) => {}
        Err(e) => tracing::warn!("{e}; sessions may be refused under load"),
    }
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
    // Read before anything else starts, so a bad certificate stops the gateway with the
    // key to fix rather than leaving it without its API.
    let admin_tls = match &config.admin.tls {
        Some(tls) => Some(
            gatehouse_server::tls::server_config(&tls.cert, &tls.key)
                .map_err(anyhow::Error::msg)?,
        ),
        None => None,
    };
    let admin_scheme = if admin_tls.is_some() { "https" } else { "http" };
    tracing::info!(address = %admin_addr, tls = admin_tls.is_some(), "admin API listening");
    if admin_tls.is_none() && !admin_addr.ip().is_loopback() {
        tracing::warn!(
            address = %admin_addr,
            "the admin API has no TLS ([admin] tls): requests with credentials from other hosts are refused"
        );
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    // Managed API keys and their change log live in the state store beside the ledger.
    let store = Store::open_in(&config.data_dir)
        .await
        .with_context(|| format!("opening the state store in {}", config.data_dir.display()))?;
    // The store is read at every sign-in, so keys created or revoked from the CLI count at
    // once.
    let oidc = gatehouse_identity::oidc::Oidc::new(&config.issuers).map_err(anyhow::Error::msg)?;
    let auth =
        Authenticator::new(ApiKeys::new(&config.identities), Some(store.clone())).with_oidc(oidc);
    // Reviews and grants live in the store too, so a restart keeps pending reviews
    // decidable and grants in force.
    let reviews = Reviews::load(store.clone())
        .await
        .context("loading reviews and grants from the state store")?;
    expire_reloaded(&reviews, &ledger).await;
    let key_events = tokio::spawn(record_key_events(
        store.clone(),
        ledger.clone(),
        stop_rx.clone(),
    ));
    if let Some(days) = config.ledger.retention_days {
        tokio::spawn(retention(ledger.clone(), days, stop_rx.clone()));
    }
    let policy = match &config.policy {
        Some(p) => {
            let handle = PolicyHandle::load(&p.policies, p.schema.as_deref())
                .map_err(|e| anyhow::anyhow!("policy: {e}"))?;
            let count = handle.get().len();
            tracing::info!(policies = count, file = %p.policies.display(), "access policy loaded");
            // Which policy was in force from when is part of the evidence.
            let file = p.policies.display().to_string();
            let data = json!({"policy": {"file": file, "trigger": "start", "loaded": true, "policies": count}});
            ledger
                .append(
                    &Event::system(EventKind::ConfigChange, data),
                    Durability::Sync,
                )
                .await
                .context("recording the access policy in the ledger")?;
            let handle = Arc::new(handle);
            tokio::spawn(watch_policy(
                handle.clone(),
                ledger.clone(),
                stop_rx.clone(),
            ));
            Some(handle)
        }
        None => None,
    };
    let resources = config
        .resources
        .iter()
        .map(|r| {
            let facts = ResourceFacts {
                kind: "postgres".into(),
                environment: r.environment.clone(),
                tags: r.tags.clone(),
                approvers: r.reviews.approvers.clone(),
                approvals: r.reviews.approvals,
                timeout: r.reviews.timeout,
                notify: gatehouse_pg::webhooks(&r.reviews),
                admin_url: r
                    .reviews
                    .admin_url
                    .clone()
                    .unwrap_or_else(|| format!("{admin_scheme}://{admin_addr}")),
            };
            (r.name.clone(), facts)
        })
        .collect();
    let state = AdminState {
        ledger: ledger.clone(),
        metrics: Some(metrics),
        auth: auth.clone(),
        reviews: reviews.clone(),
        policy: policy.clone(),
        resources: Arc::new(resources),
    };
    let mut api_stop = stop_rx.clone();
    let api = tokio::spawn(gatehouse_server::serve(
        listener,
        state,
        admin_tls,
        async move {
            let _ = api_stop.wait_for(|s| *s).await;
        },
    ));
    let shared = Shared {
        ledger: ledger.clone(),
        auth,
        reviews,
        policy,
        admin_url: format!("{admin_scheme}://{admin_addr}"),
    };
    let postgres = start_postgres(config, &shared, &stop_rx).await?;

    started(&Running {
        ledger: ledger.clone(),
        admin: admin_addr,
        postgres,
    })
    .await?;

    shutdown.await;
    tracing::info!("shutting down: stopping the admin API, flushing the ledger");
    let _ = stop_tx.send(true);
    match tokio::time::timeout(Duration::from_secs(10), api).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "admin API stopped with an error"),
        Err(_) => tracing::warn!("admin API did not stop within 10 s"),
        _ => {}
    }
    // Key changes made up to now go into the ledger before it closes.
    let _ = tokio::time::timeout(Duration::from_secs(10), key_events).await;
    let closing = ledger.clone();
    let checkpoint = tokio::task::spawn_blocking(move || closing.close()).await??;
    match &checkpoint {
        Some(cp) => tracing::info!(
            size = cp.checkpoint.size,
            "final checkpoint signed; ledger closed"
        ),
        None => tracing::info!("ledger closed (empty)"),
    }

    Ok(())
}

/// Reloads the access policy on SIGHUP and when its files change (checked every 2 s),
/// without touching sessions: each decision takes the policy in force when it is made. A
/// reload that fails keeps the old policy; both outcomes are logged and recorded.
async fn watch_policy(handle: Arc<PolicyHandle>, ledger: Ledger, mut stop: watch::Receiver<bool>) {
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "no SIGHUP handler; the policy reloads on file change only");
            None
        }
    };
    loop {
        let trigger = tokio::select! {
            _ = async {
                match hangup.as_mut() {
                    Some(h) => { h.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => "SIGHUP",
            _ = tokio::time::sleep(Duration::from_secs(2)) => {
                if !handle.changed() {
                    continue;
                }
                "file change"
            }
            _ = stop.changed() => return,
        };
        let file = handle.policies_path().display().to_string();
        let data = match handle.reload() {
            Ok(count) => {
                tracing::info!(policies = count, file, trigger, "access policy reloaded");
                json!({"policy": {"file": file, "trigger": trigger, "loaded": true, "policies": count}})
            }
            Err(e) => {
                tracing::error!(error = %e, file, trigger, "access policy NOT reloaded; the previous policy stays in force");
                json!({"policy": {"file": file, "trigger": trigger, "loaded": false, "error": e.to_string()}})
            }
        };
        if let Err(e) = ledger
            .append(
                &Event::system(EventKind::ConfigChange, data),
                Durability::Sync,
            )
            .await
        {
            tracing::warn!(error = %e, "could not record a policy reload");
        }
    }
}

/// Moves key changes from the store's outbox into the ledger, every second and once more
/// when `stop` turns true. A change is marked recorded only after its entry is durable; a
/// crash in between records it again on the next run (with the same `seq`), never loses it.
/// Prunes what is older than `days` when the gateway starts and every hour after. A
/// pruning that fails is logged and tried again at the next round; nothing is lost by
/// waiting.
async fn retention(ledger: Ledger, days: u32, mut stop: watch::Receiver<bool>) {
    let keep = Duration::from_secs(u64::from(days) * 86_400);
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let ledger = ledger.clone();
        let pruned = tokio::task::spawn_blocking(move || {
            let cutoff = std::time::SystemTime::now() - keep;
            let cutoff_us = gatehouse_core::clock::micros_of(cutoff);
            ledger.prune(cutoff_us, &format!("retention_days = {days}"))
        })
        .await;
        match pruned {
            Ok(Ok(Some(plan))) => tracing::info!(
                first = plan.first,
                end = plan.end,
                segments = plan.segments.len(),
                chunks = plan.chunks.len(),
                bytes = plan.bytes,
                "retention pruned old ledger entries (their hashes stay)"
            ),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "retention could not prune the ledger"),
            Err(e) => tracing::error!(error = %e, "retention task failed"),
        }
    }
}

async fn record_key_events(store: Store, ledger: Ledger, mut stop: watch::Receiver<bool>) {
    loop {
        let stopping = *stop.borrow();
        match store.pending_key_events().await {
            Ok(events) => {
                for e in events {
                    let kind = match e.kind.as_str() {
                        "key.created" => EventKind::KeyCreated,
                        "key.revoked" => EventKind::KeyRevoked,
                        other => {
                            tracing::warn!(kind = other, "unknown key event in the state store");
                            continue;
                        }
                    };
                    let mut data = e.detail.clone();
                    data["key_id"] = e.key_id.clone().into();
                    data["seq"] = e.seq.into();
                    data["at"] = e.at.into();
                    let event = Event::system(kind, data);
                    if let Err(err) = ledger.append(&event, Durability::Sync).await {
                        tracing::warn!(error = %err, "cannot record a key change yet; retrying");
                        break;
                    }
                    if let Err(err) = store.mark_key_event_recorded(e.seq).await {
                        tracing::warn!(error = %err, "cannot mark a key change recorded");
                        break;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read key changes from the state store"),
        }
        if stopping {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => {}
        }
    }
}

/// The key of a resource's `hash` masking strategy: from `key_env`/`key_file`, else one
/// generated on first start and kept (0600) in the data directory, so hashed values stay
/// the same across restarts and joins over them keep working.
fn masking_key(
    config: &Config,
    resource: &gatehouse_config::ResourceConfig,
) -> anyhow::Result<Vec<u8>> {
    if let Some(secret) = resource
        .masking
        .key()
        .map_err(|p| anyhow::anyhow!("resources.{}.masking.{p}", resource.name))?
    {
        return Ok(secret.expose().as_bytes().to_vec());
    }
    let path = config.data_dir.join("mask.key");
    match std::fs::read(&path) {
        Ok(key) if key.len() >= 32 => return Ok(key),
        Ok(_) => anyhow::bail!(
            "{} is shorter than 32 bytes; remove it to make a new key",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
    let mut key = vec![0u8; 32];
    getrandom::fill(&mut key)
        .map_err(|e| anyhow::anyhow!("no randomness for a masking key: {e}"))?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(mut file) => {
            file.write_all(&key)?;
            file.sync_all()?;
            Ok(key)
        }
        // Another resource (or process) made it first: use that one.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(std::fs::read(&path)?),
        Err(e) => Err(anyhow::anyhow!("cannot create {}: {e}", path.display())),
    }
}

/// Ends, at its expiry, each review that was pending when the gateway last stopped: no
/// session waits on it any more to do so (and an access request's timer ended with the
/// process). Like every end, it is in the ledger before it applies.
async fn expire_reloaded(reviews: &Reviews, ledger: &Ledger) {
    let pending = reviews
        .list()
        .await
        .into_iter()
        .filter(|r| r.state == gatehouse_approvals::State::Pending);
    for review in pending {
        tracing::info!(review = %review.id, requester = %review.requester, "a review pending before the restart is still open");
        let (reviews, ledger) = (reviews.clone(), ledger.clone());
        tokio::spawn(async move {
            let left = review
                .expires_at
                .saturating_sub(gatehouse_approvals::now_ms());
            tokio::time::sleep(Duration::from_millis(left)).await;
            let _ = reviews
                .finish(
                    &review.id,
                    gatehouse_approvals::State::Expired,
                    |next: &gatehouse_approvals::Review| {
                        let event = gatehouse_approvals::decision_event(next, None, json!({}));
                        async move { ledger.append_ref(&event).await }
                    },
                )
                .await;
        });
    }
}

/// What every resource's sessions share.
struct Shared {
    ledger: Ledger,
    auth: Authenticator,
    reviews: Reviews,
    policy: Option<Arc<PolicyHandle>>,
    /// Where approvers reach the admin API, unless a resource says otherwise.
    admin_url: String,
}

/// Binds a listener for each PostgreSQL resource and serves it until `stop` turns true.
async fn start_postgres(
    config: &Config,
    shared: &Shared,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Vec<(String, SocketAddr)>> {
    let cancels = CancelMap::default();
    let mut bound = Vec::new();
    for r in config
        .resources
        .iter()
        .filter(|r| r.kind == ResourceKind::Postgres)
    {
        let mask_key = masking_key(config, r)?;
        let mut r = r.clone();
        if r.reviews.admin_url.is_none() {
            r.reviews.admin_url = Some(shared.admin_url.clone());
        }
        let resource = PgResource::from_config(
            &r,
            shared.auth.clone(),
            shared.ledger.clone(),
            cancels.clone(),
            shared.policy.clone(),
            &mask_key,
            shared.reviews.clone(),
        )?;
        let addr = r
            .listen
            .with_context(|| format!("resources.{}.listen is required", r.name))?;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("resources.{}.listen: cannot listen on {addr}", r.name))?;
        let local = listener.local_addr()?;
        bound.push((r.name.clone(), local));
        tokio::spawn(gatehouse_pg::serve(
            listener,
            Arc::new(resource),
            stop.clone(),
        ));
    }
    Ok(bound)
}

/// Resolves on SIGINT or SIGTERM, or after `limit` when given.
pub(crate) async fn shutdown_signal(limit: Option<Duration>) {
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

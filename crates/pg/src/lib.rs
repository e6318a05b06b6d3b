//! The PostgreSQL gateway: listens for a resource's clients, authenticates them, connects
//! to the target with the credentials the gateway holds, and relays the protocol while
//! recording every statement in the ledger *before* it reaches the target.
//!
//! Hook order per statement (see docs/ARCHITECTURE.md): read → decide → ledger append
//! (durable in `sync` mode) → forward; and on the way back: relay → summarise → `result`.

pub mod admission;
mod cancel;
pub mod catalog;
pub mod encoding;
mod error;
mod integrity;
mod lexical;
pub mod masking;
mod prepared;
mod recording;
mod session;
pub mod tls;
mod tracker;
mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use gatehouse_approvals::Reviews;
use gatehouse_config::{ResourceConfig, Secret};
use gatehouse_core::{Actor, Durability, Event, EventKind, ResourceRef};
use gatehouse_identity::Authenticator;
use gatehouse_ledger::Ledger;
use gatehouse_policy::PolicyHandle;
use gatehouse_sql::{OnUnparsed, Rule};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use cancel::CancelMap;
pub use error::PgError;

/// Everything a session of one PostgreSQL resource needs; shared by its sessions.
#[derive(Debug)]
pub struct PgResource {
    pub name: String,
    /// `host:port` of the real server.
    pub target: String,
    pub database: String,
    pub user: String,
    pub password: Secret,
    pub durability: Durability,
    /// Checks API keys: configured identities and managed keys in the state store.
    pub auth: Authenticator,
    pub ledger: Ledger,
    pub cancels: CancelMap,
    /// Guardrails, decided per statement on the parsed SQL.
    pub rules: Vec<Rule>,
    pub on_unparsed: OnUnparsed,
    /// TLS towards clients; without it, sign-in is accepted from loopback only.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Refuse clients that stay in plaintext.
    pub require_tls: bool,
    /// TLS towards the target; `None` speaks plaintext to it.
    pub target_tls: Option<TargetTls>,
    /// At most this many bytes of result data are recorded per session; `None` records
    /// result summaries only.
    pub record_results: Option<u64>,
    /// Cedar policies for `connect` and each statement class; `None`: guardrails only.
    pub policy: Option<Arc<PolicyHandle>>,
    /// What policies see of this resource besides its name and kind.
    pub environment: Option<String>,
    pub tags: Vec<String>,
    /// Masking of results; `None` when `[resources.masking] enabled = false`.
    pub masking: Option<Arc<masking::MaskPolicy>>,
    /// The target's catalog as masking reads it.
    pub catalog: catalog::Catalog,
    /// Reviews of held statements, shared with the admin API.
    pub reviews: Reviews,
    /// Who approves this resource's held statements, how many, how long to wait.
    pub review: ReviewSettings,
    /// What clients may cost before they sign in: connection caps, the sign-in throttle,
    /// and the aggregation of failed sign-ins in the ledger.
    pub admission: admission::Admission,
    /// Startup parameters clients may set beyond the built-in safe list.
    pub startup_parameters: Vec<String>,
}

/// The webhooks of `[resources.reviews]`.
pub fn webhooks(
    config: &gatehouse_config::ReviewsConfig,
) -> Vec<gatehouse_approvals::notify::Webhook> {
    use gatehouse_approvals::notify::{Format, Webhook};
    config
        .notify
        .iter()
        .map(|n| Webhook {
            url: n.url.clone(),
            format: match n.format {
                gatehouse_config::NotifyFormat::Json => Format::Json,
                gatehouse_config::NotifyFormat::Slack => Format::Slack,
            },
        })
        .collect()
}

/// `[resources.reviews]` as a session uses it.
#[derive(Debug, Clone)]
pub struct ReviewSettings {
    pub approvers: Vec<String>,
    pub approvals: u32,
    pub timeout: std::time::Duration,
    /// Where approvers reach the admin API (named in the client's notice).
    pub admin_url: String,
    /// Webhooks told of each new review.
    pub notify: Vec<gatehouse_approvals::notify::Webhook>,
}

/// How the gateway reaches a target over TLS: the verifying client configuration and the
/// name the target's certificate must carry.
#[derive(Debug, Clone)]
pub struct TargetTls {
    pub config: Arc<rustls::ClientConfig>,
    pub server_name: rustls::pki_types::ServerName<'static>,
}

impl PgResource {
    /// Builds the runtime view of a `[[resources]]` entry of kind postgres.
    pub fn from_config(
        config: &ResourceConfig,
        auth: Authenticator,
        ledger: Ledger,
        cancels: CancelMap,
        policy: Option<Arc<PolicyHandle>>,
        mask_key: &[u8],
        reviews: Reviews,
    ) -> Result<Self, PgError> {
        let missing =
            |key: &str| PgError::Config(format!("resources.{}.{key} is required", config.name));
        let credentials = config
            .credentials
            .as_ref()
            .ok_or_else(|| missing("credentials"))?;
        let password = credentials
            .password()
            .map_err(|p| PgError::Config(format!("resources.{}.credentials.{p}", config.name)))?;
        Ok(PgResource {
            name: config.name.clone(),
            target: config.target.clone().ok_or_else(|| missing("target"))?,
            database: config.database.clone().ok_or_else(|| missing("database"))?,
            user: credentials.user.clone(),
            password,
            durability: config.durability,
            auth,
            ledger,
            cancels,
            rules: config.rules.clone(),
            on_unparsed: config.on_unparsed,
            tls: match &config.tls {
                Some(t) => Some(tls::load_server_config(&t.cert, &t.key)?),
                None => None,
            },
            require_tls: config.tls.as_ref().is_some_and(|t| t.require),
            target_tls: match &config.target_tls {
                Some(t) => {
                    let target = config.target.as_deref().unwrap_or_default();
                    let name = t
                        .server_name
                        .clone()
                        .unwrap_or_else(|| tls::host_of(target).to_string());
                    Some(tls::load_client_config(&t.ca, &name).map_err(|e| {
                        PgError::Config(format!("resources.{}.target_tls.{e}", config.name))
                    })?)
                }
                None => None,
            },
            record_results: config
                .recording
                .results
                .then(|| config.recording.max_session_bytes.bytes()),
            policy,
            environment: config.environment.clone(),
            tags: config.tags.clone(),
            masking: match config.masking.enabled {
                true => Some(Arc::new(
                    masking::MaskPolicy::from_config(&config.masking, mask_key).map_err(|e| {
                        PgError::Config(format!("resources.{}.masking: {e}", config.name))
                    })?,
                )),
                false => None,
            },
            catalog: catalog::Catalog::new(),
            reviews,
            review: ReviewSettings {
                approvers: config.reviews.approvers.clone(),
                approvals: config.reviews.approvals,
                timeout: config.reviews.timeout,
                admin_url: config
                    .reviews
                    .admin_url
                    .clone()
                    .unwrap_or_else(|| "http://<admin address>".into()),
                notify: webhooks(&config.reviews),
            },
            admission: admission::Admission::from_config(&config.limits),
            startup_parameters: config.startup_parameters.clone(),
        })
    }

    /// This resource as access policies see it.
    pub(crate) fn target(&self) -> gatehouse_policy::Target<'_> {
        gatehouse_policy::Target {
            name: &self.name,
            kind: "postgres",
            environment: self.environment.as_deref(),
            tags: &self.tags,
        }
    }

    /// An entry about this resource, by `actor` (none before sign-in), in `session`.
    pub(crate) fn event(
        &self,
        kind: EventKind,
        actor: Option<&Actor>,
        session: Option<&str>,
        data: serde_json::Value,
    ) -> Event {
        Event {
            kind,
            actor: actor.cloned(),
            resource: Some(ResourceRef {
                name: self.name.clone(),
                kind: "postgres".into(),
            }),
            session: session.map(str::to_string),
            data,
            chunks: Vec::new(),
        }
    }
}

/// Writes `bytes` and flushes. The flush matters with TLS: tokio-rustls may keep encrypted
/// records buffered when the socket would block, until the next write or a flush.
pub(crate) async fn send<S: AsyncWrite + Unpin>(
    stream: &mut S,
    bytes: &[u8],
) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

/// Accepts clients on `listener` until `shutdown` turns true; each connection runs as its
/// own task, so one slow or held session never blocks another.
pub async fn serve(
    listener: TcpListener,
    resource: Arc<PgResource>,
    mut shutdown: watch::Receiver<bool>,
) {
    let local: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(resource = %resource.name, address = ?local, target = %resource.target, "postgres listener up");
    let mut failures = tokio::time::interval(admission::FAILURE_INTERVAL);
    loop {
        tokio::select! {
            _ = failures.tick() => record_failures(&resource, false).await,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let resource = resource.clone();
                    let stopping = shutdown.clone();
                    tokio::spawn(async move {
                        session::run(stream, peer, resource, stopping).await;
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            // The guard `wait_for` returns is not Send; drop it inside the future.
            _ = async { let _ = shutdown.wait_for(|stop| *stop).await; } => break,
        }
    }
    record_failures(&resource, true).await;
    tracing::info!(resource = %resource.name, "postgres listener stopped");
}

/// Writes the counts of failed sign-ins gathered in intervals that have ended (all of
/// them with `all`).
async fn record_failures(resource: &PgResource, all: bool) {
    for data in resource
        .admission
        .flush_failures(std::time::Instant::now(), all)
    {
        let event = resource.event(EventKind::AuthFailure, None, None, data);
        if let Err(e) = resource.ledger.append(&event, resource.durability).await {
            tracing::error!(error = %e, "could not record failed sign-ins");
        }
    }
}

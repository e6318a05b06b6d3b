//! The admin HTTP API: health, the latest signed checkpoint, the verifier key,
//! Prometheus metrics, and the reviews of held statements ([`reviews`]), served by an
//! accept loop of its own ([`accept`]) over plain HTTP or TLS ([`tls`]). Credentials are
//! never taken over plain HTTP from another host ([`peer`]).

pub mod accept;
mod error;
pub mod peer;
pub mod reviews;
pub mod tls;

pub use accept::{Limits, serve_with};
pub use error::ServerError;
pub use peer::Peer;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use gatehouse_approvals::Reviews;
use gatehouse_identity::Authenticator;
use gatehouse_ledger::Ledger;
use gatehouse_policy::PolicyHandle;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tokio::net::TcpListener;

/// What the handlers need; cheap to clone.
#[derive(Clone, Debug)]
pub struct AdminState {
    pub ledger: Ledger,
    /// `None` when no metrics recorder is installed (tests); `/metrics` then says so.
    pub metrics: Option<PrometheusHandle>,
    /// Signs in the callers of the reviews routes.
    pub auth: Authenticator,
    pub reviews: Reviews,
    /// The access policy, whose `approve` action also decides who may decide reviews.
    pub policy: Option<Arc<PolicyHandle>>,
    /// What policies see of each resource by name: its environment and tags.
    pub resources: Arc<HashMap<String, ResourceFacts>>,
}

/// What the admin API knows of a resource: what access policy sees besides its name, and
/// how its reviews go (for access requests).
#[derive(Clone, Debug, Default)]
pub struct ResourceFacts {
    pub kind: String,
    pub environment: Option<String>,
    pub tags: Vec<String>,
    pub approvers: Vec<String>,
    pub approvals: u32,
    pub timeout: std::time::Duration,
    pub notify: Vec<gatehouse_approvals::notify::Webhook>,
    pub admin_url: String,
}

/// The admin API routes. A request carrying credentials must come with a [`Peer`] that
/// may carry them ([`peer::refuse_plaintext_credentials`]); [`serve`] adds it.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/ledger/checkpoint", get(checkpoint))
        .route("/api/ledger/pubkey", get(pubkey))
        .route("/metrics", get(metrics))
        .route("/api/reviews", get(reviews::list))
        .route("/api/reviews/{id}", get(reviews::show))
        .route("/api/reviews/{id}/approve", post(reviews::approve))
        .route("/api/reviews/{id}/deny", post(reviews::deny))
        .route("/api/access", post(reviews::request_access))
        .layer(axum::middleware::from_fn(
            peer::refuse_plaintext_credentials,
        ))
        .with_state(state)
}

/// Serves the admin API on an already-bound listener until `shutdown` completes: over TLS
/// with `tls` (see [`tls::server_config`]), else plain HTTP, with the [`accept`] loop's
/// connection cap and timeouts ([`Limits::default`]).
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, router(state), tls, Limits::default(), shutdown).await
}

/// 200 while the ledger accepts appends, 503 once it has failed (the gateway then
/// refuses every command, so load balancers should take it out).
async fn healthz(State(state): State<AdminState>) -> Response {
    let status = state.ledger.status();
    let body = json!({
        "status": if status.failed.is_none() { "ok" } else { "failing" },
        "ledger": {
            "entries": status.size,
            "durable_entries": status.durable_size,
            "checkpoint_size": status.checkpoint.as_ref().map(|c| c.checkpoint.size),
            "error": status.failed,
        }
    });
    let code = if status.failed.is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

/// The newest signed checkpoint as a C2SP signed note (`text/plain`).
async fn checkpoint(State(state): State<AdminState>) -> Response {
    match state.ledger.status().checkpoint {
        Some(cp) => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            cp.note,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no checkpoint has been signed yet\n").into_response(),
    }
}

/// The verifier key that checks this ledger's checkpoints.
async fn pubkey(State(state): State<AdminState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{}\n", state.ledger.verifier_key()),
    )
        .into_response()
}

async fn metrics(State(state): State<AdminState>) -> Response {
    match &state.metrics {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are not enabled\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{Body, to_bytes};
    use axum::http::Request;
    use gatehouse_ledger::{LedgerOptions, verify_note};
    use tower::ServiceExt;

    async fn get_text(app: &Router, path: &str) -> (StatusCode, String) {
        let response = app
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn health_checkpoint_and_pubkey() {
        let dir = tempfile::tempdir().unwrap();
        let (ledger, _) = Ledger::open(dir.path(), LedgerOptions::default()).unwrap();
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let app = router(AdminState {
            ledger: ledger.clone(),
            metrics: Some(recorder.handle()),
            auth: Authenticator::default(),
            reviews: Reviews::default(),
            policy: None,
            resources: Arc::default(),
        });

        let (code, body) = get_text(&app, "/healthz").await;
        assert_eq!(code, StatusCode::OK);
        let health: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(health["status"], "ok");
        assert_eq!(health["ledger"]["durable_entries"], 1, "{body}");

        ledger.checkpoint().await.unwrap();
        let (code, note) = get_text(&app, "/api/ledger/checkpoint").await;
        assert_eq!(code, StatusCode::OK);
        let (_, vkey) = get_text(&app, "/api/ledger/pubkey").await;
        let cp = verify_note(&note, vkey.trim()).unwrap();
        assert_eq!(cp.size, 1);

        let (code, _) = get_text(&app, "/metrics").await;
        assert_eq!(code, StatusCode::OK);
        let (code, _) = get_text(&app, "/nope").await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        tokio::task::spawn_blocking(move || ledger.close())
            .await
            .unwrap()
            .unwrap();
    }
}

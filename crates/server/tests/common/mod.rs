//! What the admin API tests share: a gateway's admin state with a real ledger, identities
//! signing in with API keys, an access policy, two resources, and reviews in the registry.

#![allow(dead_code)] // each test file uses its own part

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode, header};
use axum::response::Response;
use base64::Engine;
use gatehouse_approvals::{EntryRef, NewReview, Review, Reviews};
use gatehouse_config::{IdentityConfig, IdentityKind};
use gatehouse_identity::{ApiKeys, Authenticator};
use gatehouse_ledger::{Ledger, LedgerOptions};
use gatehouse_policy::PolicyHandle;
use gatehouse_server::{AdminState, Peer, ResourceFacts};

/// Who signs in, and their groups.
pub(crate) const PEOPLE: [(&str, &str); 8] = [
    ("alice", "devs"),
    ("bob", "dba"),
    ("dora", "devleads"),
    ("ann", "auditors"),
    ("pat", "oncall"),
    ("eve", "analysts"),
    ("mallory", "nobody"),
    ("vic", "contractors"),
];

/// Auditors may see `pg-prod`'s reviews; pat may decide them.
pub(crate) const POLICIES: &str = r#"
permit (principal in Gatehouse::Group::"auditors",
        action == Gatehouse::Action::"audit",
        resource == Gatehouse::Resource::"pg-prod");
permit (principal == Gatehouse::Identity::"pat",
        action == Gatehouse::Action::"approve",
        resource == Gatehouse::Resource::"pg-prod");
"#;

pub(crate) fn key(name: &str) -> String {
    format!("{name}-key-0123456789")
}

/// `Authorization: Basic` for `who` with their key.
pub(crate) fn basic(who: &str) -> String {
    basic_with(who, &key(who))
}

pub(crate) fn basic_with(who: &str, key: &str) -> String {
    let raw = format!("{who}:{key}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

pub(crate) struct Gateway {
    pub dir: tempfile::TempDir,
    pub state: AdminState,
}

impl Gateway {
    /// A gateway with `pg-prod` (approvers `dba`) and `pg-dev` (approvers `devleads`), and
    /// no reviews yet.
    pub(crate) fn start() -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let options = LedgerOptions {
            // Nothing but the tests' own entries, so counts are exact.
            heartbeat_interval: None,
            ..LedgerOptions::default()
        };
        let (ledger, _) = Ledger::open(&dir.path().join("data"), options).unwrap();
        let identities: Vec<IdentityConfig> = PEOPLE
            .iter()
            .map(|(name, group)| IdentityConfig {
                name: name.to_string(),
                kind: IdentityKind::Human,
                groups: vec![group.to_string()],
                key_hash: gatehouse_identity::hash_key(&key(name)),
            })
            .collect();
        let policies = dir.path().join("policies.cedar");
        std::fs::write(&policies, POLICIES).unwrap();
        let policy = PolicyHandle::load(&policies, None).unwrap();
        let facts = |approvers: &str| ResourceFacts {
            kind: "postgres".into(),
            approvers: vec![approvers.to_string()],
            approvals: 1,
            timeout: Duration::from_secs(600),
            admin_url: "http://127.0.0.1:8080".into(),
            ..ResourceFacts::default()
        };
        let resources = HashMap::from([
            ("pg-prod".to_string(), facts("dba")),
            ("pg-dev".to_string(), facts("devleads")),
        ]);
        let state = AdminState {
            ledger,
            metrics: None,
            auth: Authenticator::new(ApiKeys::new(&identities), None),
            reviews: Reviews::default(),
            policy: Some(Arc::new(policy)),
            resources: Arc::new(resources),
        };
        Gateway { dir, state }
    }

    /// Opens a review as a session would (without a ledger entry of its own).
    pub(crate) async fn open(&self, requester: &str, resource: &str, approvers: &[&str]) -> Review {
        let new = NewReview {
            access: None,
            resource: resource.into(),
            requester: requester.into(),
            session: "s-1".into(),
            statement: format!("DROP TABLE secret_{requester}"),
            rule: Some("drops".into()),
            holders: Vec::new(),
            reason: "dropping needs an approval".into(),
            approvers: approvers.iter().map(|a| a.to_string()).collect(),
            required: 1,
            timeout: Duration::from_secs(600),
        };
        let (review, _rx) = self
            .state
            .reviews
            .open(new, |_| async {
                Ok::<_, String>(EntryRef {
                    index: 1,
                    leaf: "00".into(),
                })
            })
            .await
            .unwrap();
        review
    }

    /// Entries in the ledger now.
    pub(crate) fn entries(&self) -> u64 {
        self.state.ledger.status().size
    }

    pub(crate) async fn close(self) {
        let ledger = self.state.ledger.clone();
        drop(self.state);
        tokio::task::spawn_blocking(move || ledger.close())
            .await
            .unwrap()
            .unwrap();
    }
}

/// A loopback plaintext connection, as the accept loop describes it.
pub(crate) fn local() -> Peer {
    Peer {
        addr: SocketAddr::from(([127, 0, 0, 1], 40000)),
        tls: false,
    }
}

/// A connection from another host.
pub(crate) fn remote(tls: bool) -> Peer {
    Peer {
        addr: SocketAddr::from(([192, 0, 2, 7], 40000)),
        tls,
    }
}

/// A request to `path` with `method`, signed in with `auth` (if any) on `peer` (if any).
pub(crate) fn request(
    method: &str,
    path: &str,
    auth: Option<&str>,
    peer: Option<Peer>,
    body: Option<&str>,
) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(path);
    if let Some(auth) = auth {
        builder = builder.header(header::AUTHORIZATION, auth);
    }
    if body.is_some() {
        builder = builder.header(header::CONTENT_TYPE, "application/json");
    }
    let mut request = builder
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    if let Some(peer) = peer {
        request.extensions_mut().insert(peer);
    }
    request
}

/// The status and JSON body (`null` if not JSON) of `response`.
pub(crate) async fn read(response: Response) -> (StatusCode, serde_json::Value) {
    let status = response.status();
    let bytes = to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

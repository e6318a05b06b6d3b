//! The reviews routes of the admin API: list and show reviews, approve or deny one. Every
//! call signs in as an identity (HTTP Basic: the identity's name and its API key or OIDC
//! token, as with psql); a failed sign-in is answered 401 and recorded.
//!
//! A review shows who asked to run what, so only some people see it (`may_see`): its
//! requester, its approvers, and those access policy permits to `approve` or `audit` on
//! its resource. To everyone else it does not exist: it is left out of the list, and
//! asking for it is answered as for an unknown id.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use gatehouse_approvals::{
    Approver, Decision, NewReview, Review, ReviewError, State as ReviewState, decision_event,
};
use gatehouse_core::{Actor, Durability, Event, EventKind};
use gatehouse_policy::Action;
use serde::Deserialize;
use serde_json::json;

use crate::AdminState;

/// The body of an approval or denial (optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    #[serde(default)]
    pub reason: Option<String>,
    /// Approve for a duration (`"2h"`): later statements of the same rule from the same
    /// identity on the same resource run without a review until then.
    #[serde(default, rename = "for")]
    pub grant: Option<String>,
}

/// The longest grant an approval can give.
const MAX_GRANT: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

/// A refusal as the API gives it: a status and a JSON body naming what was wrong.
fn refuse(code: StatusCode, message: impl Into<String>) -> Response {
    (code, Json(json!({"error": message.into()}))).into_response()
}

/// The identity behind the request's `Authorization: Basic` header.
async fn sign_in(state: &AdminState, headers: &HeaderMap) -> Result<Actor, Response> {
    let challenge = || {
        let mut r = refuse(
            StatusCode::UNAUTHORIZED,
            "sign in with HTTP Basic: your identity's name and its API key or OIDC token",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"gatehouse\""),
        );
        r
    };
    let Some(encoded) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    else {
        return Err(challenge());
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok());
    let Some((name, key)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
        return Err(challenge());
    };
    match state.auth.authenticate(name, key).await {
        Ok(signed) => Ok(signed.actor),
        Err(failure) => {
            let event = Event::system(
                EventKind::AuthFailure,
                json!({"via": "admin-api", "user": name, "reason": failure.reason()}),
            );
            if let Err(e) = state.ledger.append(&event, Durability::Sync).await {
                tracing::error!(error = %e, "could not record a failed admin API sign-in");
            }
            Err(challenge())
        }
    }
}

/// Whether `actor` may see `review`: its requester, a member of its approver groups or of
/// its resource's, or someone access policy permits to `approve` or `audit` on its
/// resource. `permitted` remembers policy's answer per resource for one request.
fn may_see(
    state: &AdminState,
    actor: &Actor,
    review: &Review,
    permitted: &mut HashMap<String, bool>,
) -> bool {
    if actor.id == review.requester {
        return true;
    }
    let member = |groups: &[String]| groups.iter().any(|g| actor.groups.contains(g));
    if member(&review.approvers)
        || state
            .resources
            .get(&review.resource)
            .is_some_and(|facts| member(&facts.approvers))
    {
        return true;
    }
    *permitted.entry(review.resource.clone()).or_insert_with(|| {
        policy_permits(state, actor, &review.resource, Action::Approve)
            || policy_permits(state, actor, &review.resource, Action::Audit)
    })
}

/// `GET /api/reviews`: every review the caller may see (`may_see`), newest first.
pub async fn list(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    let actor = match sign_in(&state, &headers).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let mut permitted = HashMap::new();
    let visible: Vec<Review> = state
        .reviews
        .list()
        .await
        .into_iter()
        .filter(|r| may_see(&state, &actor, r, &mut permitted))
        .collect();
    Json(json!({"reviews": visible})).into_response()
}

/// `GET /api/reviews/{id}`: a review the caller may not see is answered exactly as one
/// that does not exist, so its id says nothing.
pub async fn show(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let actor = match sign_in(&state, &headers).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    match state.reviews.get(&id).await {
        Some(review) if may_see(&state, &actor, &review, &mut HashMap::new()) => {
            Json(review).into_response()
        }
        _ => refuse(StatusCode::NOT_FOUND, format!("there is no review {id}")),
    }
}

/// `POST /api/reviews/{id}/approve`.
pub async fn approve(
    state: State<AdminState>,
    headers: HeaderMap,
    id: Path<String>,
    body: Option<Json<DecisionBody>>,
) -> Response {
    decide(state, headers, id, body, true).await
}

/// `POST /api/reviews/{id}/deny`.
pub async fn deny(
    state: State<AdminState>,
    headers: HeaderMap,
    id: Path<String>,
    body: Option<Json<DecisionBody>>,
) -> Response {
    decide(state, headers, id, body, false).await
}

async fn decide(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Option<Json<DecisionBody>>,
    approve: bool,
) -> Response {
    let actor = match sign_in(&state, &headers).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let reason = body
        .reason
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty());
    let decision = match (approve, body.grant.as_deref()) {
        (false, Some(_)) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "\"for\" goes with an approval, not a denial",
            );
        }
        (false, None) => Decision::Deny,
        (true, None) => Decision::Approve { grant: None },
        (true, Some(text)) => match humantime::parse_duration(text) {
            Ok(d) if d >= std::time::Duration::from_secs(1) && d <= MAX_GRANT => {
                Decision::Approve { grant: Some(d) }
            }
            Ok(_) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    format!("\"for\": {text:?} must be between 1s and 7days"),
                );
            }
            Err(e) => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    format!("\"for\": {text:?} is not a duration ({e}); write e.g. \"2h\""),
                );
            }
        },
    };
    let Some(held) = state.reviews.get(&id).await else {
        return refuse(StatusCode::NOT_FOUND, format!("there is no review {id}"));
    };
    let who = Approver {
        name: &actor.id,
        groups: &actor.groups,
        permitted: policy_permits(&state, &actor, &held.resource, Action::Approve),
    };
    let ledger = state.ledger.clone();
    let recorder = actor.clone();
    let verdict = if approve { "approve" } else { "deny" };
    let decided = state
        .reviews
        .decide(&id, who, &decision, reason.clone(), |next: &Review| {
            // The decision is in the ledger before it takes effect.
            let event = decision_event(
                next,
                Some(recorder),
                json!({"verdict": verdict, "reason": reason, "grant_until": next.grant_until}),
            );
            async move { ledger.append_ref(&event).await }
        })
        .await;
    match decided {
        Ok(review) => Json(review).into_response(),
        Err(e) => refuse(status_of(&e), e.to_string()),
    }
}

/// The status a registry refusal is answered with.
fn status_of(e: &ReviewError) -> StatusCode {
    match e {
        ReviewError::NotFound(_) => StatusCode::NOT_FOUND,
        ReviewError::NotPending { .. } | ReviewError::AlreadyApproved(_) => StatusCode::CONFLICT,
        ReviewError::OwnRequest(_) | ReviewError::NotAnApprover { .. } => StatusCode::FORBIDDEN,
        ReviewError::TooManyOpen { .. } => StatusCode::TOO_MANY_REQUESTS,
        ReviewError::Record(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// Whether the access policy permits `actor` to take `action` on `resource`. A policy
/// error (a custom schema without the action, say) permits nothing.
fn policy_permits(state: &AdminState, actor: &Actor, resource: &str, action: Action) -> bool {
    let (Some(handle), Some(facts)) = (&state.policy, state.resources.get(resource)) else {
        return false;
    };
    let target = gatehouse_policy::Target {
        name: resource,
        kind: &facts.kind,
        environment: facts.environment.as_deref(),
        tags: &facts.tags,
    };
    match gatehouse_policy::SessionPolicy::default().action(handle, actor, &target, action) {
        Ok(decision) => decision.outcome == gatehouse_sql::Outcome::Allow,
        Err(e) => {
            let action = action.name();
            tracing::warn!(error = %e, action, "a review action could not be decided; only the requester and approver groups count");
            false
        }
    }
}

/// The body of an access request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessBody {
    pub resource: String,
    /// How long access is asked for (`"2h"`; at most 7 days).
    #[serde(rename = "for")]
    pub duration: String,
    /// Why: approvers see it; required.
    pub reason: String,
}

/// `POST /api/access`: asks for access (`connect`) to a resource for a while. It follows
/// the review path — approvers, the resource's approvals and timeout, notifications —
/// and, approved, lets the requester connect until it runs out though policy would not.
pub async fn request_access(
    State(state): State<AdminState>,
    headers: HeaderMap,
    body: Option<Json<AccessBody>>,
) -> Response {
    let actor = match sign_in(&state, &headers).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let Some(Json(body)) = body else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "send {\"resource\": ..., \"for\": \"2h\", \"reason\": ...} as JSON",
        );
    };
    let Some(facts) = state.resources.get(&body.resource) else {
        return refuse(
            StatusCode::NOT_FOUND,
            format!("there is no resource {:?}", body.resource),
        );
    };
    let duration = match humantime::parse_duration(&body.duration) {
        Ok(d) if d >= std::time::Duration::from_secs(1) && d <= MAX_GRANT => d,
        Ok(_) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("\"for\": {:?} must be between 1s and 7days", body.duration),
            );
        }
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!(
                    "\"for\": {:?} is not a duration ({e}); write e.g. \"2h\"",
                    body.duration
                ),
            );
        }
    };
    let reason = body.reason.trim().to_string();
    if reason.is_empty() {
        return refuse(
            StatusCode::BAD_REQUEST,
            "\"reason\": say why access is needed",
        );
    }
    if facts.approvers.is_empty() && state.policy.is_none() {
        return refuse(
            StatusCode::CONFLICT,
            format!(
                "resources.{}.reviews.approvers names no group that may approve access, and no access policy is configured",
                body.resource
            ),
        );
    }
    let asked = humantime::format_duration(duration).to_string();
    let new = NewReview {
        access: Some(duration),
        resource: body.resource.clone(),
        requester: actor.id.clone(),
        session: String::new(),
        statement: format!("access to {} for {asked}", body.resource),
        rule: None,
        holders: Vec::new(),
        reason,
        approvers: facts.approvers.clone(),
        required: facts.approvals,
        timeout: facts.timeout,
    };
    let ledger = state.ledger.clone();
    let requester = actor.clone();
    let opened = state
        .reviews
        .open(new, |review: &Review| {
            let event = Event {
                kind: EventKind::ApprovalRequest,
                actor: Some(requester),
                resource: Some(gatehouse_core::ResourceRef {
                    name: review.resource.clone(),
                    kind: "postgres".into(),
                }),
                session: None,
                data: json!({
                    "review": review.id,
                    "access": {"for_ms": review.access_ms},
                    "reason": review.reason,
                    "approvers": review.approvers,
                    "required": review.required,
                    "expires_at": review.expires_at,
                }),
                chunks: Vec::new(),
            };
            async move { ledger.append_ref(&event).await }
        })
        .await;
    let review = match opened {
        Ok((review, _)) => review,
        Err(e) => return refuse(status_of(&e), e.to_string()),
    };
    gatehouse_approvals::notify::review_requested(&facts.notify, &review, &facts.admin_url);
    // Undecided when its time is up, it expires (recorded like the rest).
    let (reviews, ledger, id, timeout) = (
        state.reviews.clone(),
        state.ledger.clone(),
        review.id.clone(),
        facts.timeout,
    );
    tokio::spawn(async move {
        tokio::time::sleep(timeout).await;
        let _ = reviews
            .finish(&id, ReviewState::Expired, |next: &Review| {
                let event = decision_event(next, None, json!({}));
                async move { ledger.append_ref(&event).await }
            })
            .await;
    });
    (StatusCode::CREATED, Json(review)).into_response()
}

//! Everything before the relay: the startup packet, sign-in, the connect policy, the
//! database and startup-parameter checks, the target connection and `session.start`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use gatehouse_core::EventKind;
use gatehouse_policy::{Action, SessionPolicy};
use gatehouse_sql::Outcome;
use gatehouse_wire_pg::backend;
use gatehouse_wire_pg::frontend::{self, Frontend};
use gatehouse_wire_pg::{StartupPacket, split_frame, split_startup};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use super::{
    ClientStream, Link, Session, SessionMasking, Totals, ledger_refusal, unsafe_setting_decision,
    unsafe_setting_message,
};
use crate::cancel::CancelTarget;
use crate::error::PgError;
use crate::lexical::Lexicon;
use crate::prepared::Names;
use crate::recording::Recorder;
use crate::tracker::Tracker;
use crate::upstream;
use crate::{PgResource, send};

/// The largest startup packet accepted: PostgreSQL's own limit (MAX_STARTUP_PACKET_LENGTH).
const MAX_STARTUP_PACKET: usize = 10_000;
/// The largest password message accepted before sign-in: an API key or an OIDC token (a
/// token with many groups runs to a few KiB), never the 1 GiB a frame may otherwise be.
const MAX_PASSWORD_FRAME: usize = 16 * 1024;

/// A connection that broke the protocol or sent too much before signing in: the client is
/// told why and the failure is recorded (aggregated, like failed sign-ins).
pub(super) async fn refuse_startup<S: ClientStream>(
    client: &mut S,
    resource: &PgResource,
    peer: SocketAddr,
    error: &PgError,
) {
    let Some(reason) = error.startup_failure() else {
        return;
    };
    let _ = fatal(client, "08P01", &format!("gatehouse: {error}")).await;
    record_auth_failure(resource, "", peer, reason, None).await;
}

/// Answers the client with a FATAL error (the connection then closes).
pub(super) async fn fatal<S: ClientStream>(
    client: &mut S,
    code: &str,
    message: &str,
) -> Result<(), PgError> {
    let mut out = Vec::new();
    backend::error_response("FATAL", code, message, &mut out);
    send(client, &out).await?;
    Ok(())
}

/// Reads bytes until `buf` holds one complete startup packet.
pub(super) async fn read_startup<S: ClientStream>(
    client: &mut S,
    buf: &mut BytesMut,
) -> Result<StartupPacket, PgError> {
    loop {
        if let Some((packet, len)) = split_startup(buf).map_err(PgError::client_protocol)? {
            buf.advance(len);
            return Ok(packet);
        }
        if buf.len() > MAX_STARTUP_PACKET {
            return Err(PgError::TooLarge {
                what: "a startup packet",
                limit: MAX_STARTUP_PACKET,
            });
        }
        if client.read_buf(buf).await? == 0 {
            return Err(PgError::Client(
                "closed the connection during startup".into(),
            ));
        }
    }
}

async fn read_frame<S: ClientStream>(
    client: &mut S,
    buf: &mut BytesMut,
) -> Result<Vec<u8>, PgError> {
    loop {
        if let Some(len) = split_frame(buf).map_err(PgError::client_protocol)? {
            let frame = buf[..len].to_vec();
            buf.advance(len);
            return Ok(frame);
        }
        if buf.len() > MAX_PASSWORD_FRAME {
            return Err(PgError::TooLarge {
                what: "a message",
                limit: MAX_PASSWORD_FRAME,
            });
        }
        if client.read_buf(buf).await? == 0 {
            return Err(PgError::Client(
                "closed the connection during authentication".into(),
            ));
        }
    }
}

/// Startup phase. `Ok(None)` when the connection was fully handled here (cancel, refusal).
pub(super) async fn startup<S: ClientStream>(
    client: &mut S,
    link: Link,
    resource: &Arc<PgResource>,
    mut buf: BytesMut,
    mut first: Option<StartupPacket>,
) -> Result<Option<Session>, PgError> {
    let peer = link.peer;
    let params = loop {
        let packet = match first.take() {
            Some(p) => p,
            None => read_startup(client, &mut buf).await?,
        };
        match packet {
            // Already encrypted, or no TLS here: say no, and the client may go on.
            StartupPacket::SslRequest | StartupPacket::GssEncRequest => {
                client.write_all(b"N").await?
            }
            StartupPacket::Cancel { pid, secret } => {
                if let Some(target) = resource.cancels.lookup(pid, secret) {
                    // A held statement is not at the target yet: its review ends instead.
                    target.held.notify_waiters();
                    if let Err(e) =
                        upstream::cancel(&target.target, target.pid, target.secret).await
                    {
                        tracing::warn!(error = %e, "forwarding a cancel request failed");
                    }
                }
                return Ok(None);
            }
            StartupPacket::Startup { params, .. } => break params,
        }
    };
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let Some(user) = param("user").filter(|u| !u.is_empty()) else {
        fatal(
            client,
            "28000",
            "gatehouse: no user name given; sign in with your identity as the user name",
        )
        .await?;
        return Ok(None);
    };
    if param("replication").is_some_and(|v| v != "false" && v != "0") {
        fatal(
            client,
            "0A000",
            "gatehouse: replication connections are not supported",
        )
        .await?;
        return Ok(None);
    }
    if !link.tls && resource.require_tls {
        record_auth_failure(resource, &user, peer, "tls_required", None).await;
        fatal(
            client,
            "28000",
            "gatehouse: this resource requires TLS (use sslmode=require)",
        )
        .await?;
        return Ok(None);
    }
    if !link.tls && !peer.ip().is_loopback() {
        // The API key travels as a cleartext password: never across a network without TLS.
        record_auth_failure(resource, &user, peer, "plaintext_from_network", None).await;
        fatal(
            client,
            "28000",
            "gatehouse: without TLS, sign-in is accepted from loopback only",
        )
        .await?;
        return Ok(None);
    }

    // Whoever keeps failing waits, and while it waits its credentials are not even read.
    let throttle_keys = gatehouse_identity::throttle::keys(peer.ip(), &user);
    if let Err(wait) = resource
        .admission
        .throttle
        .check(&throttle_keys, Instant::now())
    {
        record_auth_failure(resource, &user, peer, "throttled", None).await;
        fatal(
            client,
            "28000",
            &format!(
                "gatehouse: too many failed sign-ins from this address or for this user; try again in {} s",
                wait.as_secs().max(1)
            ),
        )
        .await?;
        return Ok(None);
    }

    let mut out = Vec::new();
    backend::auth_cleartext(&mut out);
    send(client, &out).await?;
    let frame = read_frame(client, &mut buf).await?;
    let key = match frontend::parse(&frame) {
        Ok(Frontend::Password(body)) => frontend::password_text(body).unwrap_or("").to_string(),
        _ => {
            fatal(client, "08P01", "gatehouse: expected a password message").await?;
            return Ok(None);
        }
    };
    let signed_in = match resource.auth.authenticate(&user, &key).await {
        Ok(signed_in) => signed_in,
        Err(why) => {
            // The id of a managed key is public and tells the auditor which key was tried;
            // anything else presented is never recorded.
            let key_id = gatehouse_identity::managed_key_id(&key);
            resource
                .admission
                .throttle
                .failed(&throttle_keys, Instant::now());
            record_auth_failure(resource, &user, peer, why.reason(), key_id).await;
            // The same message for every cause: no hint which part was wrong.
            fatal(
                client,
                "28P01",
                &format!("password authentication failed for user \"{user}\""),
            )
            .await?;
            return Ok(None);
        }
    };
    resource.admission.throttle.succeeded(&throttle_keys[1]);
    let actor = signed_in.actor;
    let mut policy = SessionPolicy::default();
    // An approved access request lets in whom policy would not (until it runs out).
    let mut access_grant = None;
    if let Some(handle) = &resource.policy {
        let refusal = match policy.action(handle, &actor, &resource.target(), Action::Connect) {
            Ok(d) if d.outcome == Outcome::Allow => None,
            Ok(d) => {
                access_grant = resource.reviews.access_grant(&resource.name, &actor.id);
                match access_grant {
                    Some(_) => None,
                    None => Some((
                        json!({"outcome": d.outcome.as_str(), "policies": d.policies, "message": d.message}),
                        d.message.unwrap_or_default(),
                    )),
                }
            }
            // A policy that cannot be evaluated refuses: fail closed.
            Err(e) => Some((
                json!({"outcome": "deny", "error": e.to_string()}),
                "the access policy could not be evaluated".to_string(),
            )),
        };
        if let Some((mut data, why)) = refusal {
            data["action"] = "connect".into();
            data["client"] = peer.to_string().into();
            let event = resource.event(EventKind::PolicyDecision, Some(&actor), None, data);
            if let Err(e) = resource.ledger.append(&event, resource.durability).await {
                tracing::error!(error = %e, "could not record a denied connection");
            }
            fatal(
                client,
                "28000",
                &format!(
                    "gatehouse: {} may not connect to {}: {why}",
                    actor.id, resource.name
                ),
            )
            .await?;
            return Ok(None);
        }
    }
    // The server answers a database it does not have after sign-in, and takes the user name
    // when none is asked for; the gateway serves one database and never substitutes it.
    let requested = param("database")
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| user.clone());
    if requested != resource.database {
        let event = resource.event(
            EventKind::PolicyDecision,
            Some(&actor),
            None,
            json!({
                "action": "connect",
                "outcome": "deny",
                "reason": "database_not_served",
                "requested_database": requested,
                "client": peer.to_string(),
            }),
        );
        if let Err(e) = resource.ledger.append(&event, resource.durability).await {
            tracing::error!(error = %e, "could not record a refused database");
        }
        fatal(
            client,
            "3D000",
            &format!("database \"{requested}\" does not exist"),
        )
        .await?;
        return Ok(None);
    }
    let matched_claims: serde_json::Map<String, Value> = signed_in
        .matched_claims
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();

    // Pass on the client's display and timing preferences; anything that could change the
    // role, the session authorization or how statements are read is refused unless the
    // resource allows it (and `options`, `role` and the like never are).
    let mut forwarded: Vec<(String, String)> = Vec::new();
    for (name, value) in &params {
        if matches!(name.as_str(), "user" | "database" | "replication") {
            continue;
        }
        let allowed = gatehouse_sql::startup_parameter_forbidden(name).is_none()
            && (gatehouse_sql::startup_parameter_safe(name)
                || resource
                    .startup_parameters
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(name)));
        if !allowed {
            let event = resource.event(
                EventKind::PolicyDecision,
                Some(&actor),
                None,
                json!({
                    "action": "startup_parameter",
                    "parameter": name,
                    "outcome": "deny",
                    "client": peer.to_string(),
                }),
            );
            if let Err(e) = resource.ledger.append(&event, resource.durability).await {
                tracing::error!(error = %e, "could not record a refused startup parameter");
            }
            fatal(
                client,
                "42501",
                &format!(
                    "gatehouse: the startup parameter \"{name}\" is not allowed on {}",
                    resource.name
                ),
            )
            .await?;
            return Ok(None);
        }
        forwarded.push((name.clone(), value.clone()));
    }
    let target = match upstream::connect(resource, &forwarded).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(resource = %resource.name, error = %e, "cannot open the target connection");
            let event = resource.event(
                EventKind::TargetFailure,
                Some(&actor),
                None,
                json!({"client": peer.to_string(), "target": resource.target, "reason": e.to_string()}),
            );
            if let Err(e) = resource.ledger.append(&event, resource.durability).await {
                tracing::error!(error = %e, "could not record a target failure");
            }
            // The client learns only that the resource is unavailable: the reason may
            // describe the network behind the gateway, and is in the ledger and the log.
            fatal(
                client,
                "08001",
                &format!("gatehouse: resource {} is unavailable", resource.name),
            )
            .await?;
            return Ok(None);
        }
    };

    // The greeting reports the settings statements will be read under; an encoding the
    // gateway cannot read like the server does ends the connection here.
    let mut lexicon = Lexicon::default();
    if let Err(unsafe_setting) = lexicon.observe_frames(&target.greeting) {
        let data = unsafe_setting_decision(&unsafe_setting, peer);
        let event = resource.event(EventKind::PolicyDecision, Some(&actor), None, data);
        if let Err(e) = resource.ledger.append(&event, resource.durability).await {
            tracing::error!(error = %e, "could not record a refused session setting");
        }
        fatal(client, "0A000", &unsafe_setting_message(&unsafe_setting)).await?;
        return Ok(None);
    }

    let masking = match &resource.masking {
        Some(mask) => {
            let clear_client = match &resource.policy {
                Some(handle) => policy
                    .action(handle, &actor, &resource.target(), Action::Unmask)
                    .is_ok_and(|d| d.outcome == Outcome::Allow),
                None => false,
            };
            Some(SessionMasking {
                policy: mask.clone(),
                clear_client,
                statements: HashMap::new(),
                cursors: HashMap::new(),
                row: Vec::new(),
                unowned: Default::default(),
            })
        }
        None => None,
    };
    let session_id = new_session_id();
    let start = resource.event(
        EventKind::SessionStart,
        Some(&actor),
        Some(&session_id),
        json!({
            "client": peer.to_string(),
            "application": param("application_name"),
            "database": resource.database,
            "key_id": signed_in.key_id,
            "token_claims": (!matched_claims.is_empty()).then_some(matched_claims),
            "tls": link.tls,
            "target_tls": target.stream.is_tls(),
            "recording": {
                "results": resource.record_results.is_some(),
                "max_session_bytes": resource.record_results,
            },
            "masking": match &masking {
                Some(m) => json!({"client": if m.clear_client { "clear" } else { "masked" }, "recording": "masked"}),
                None => json!("off"),
            },
            "access_grant": access_grant.as_ref().map(|g| json!({"review": g.review, "request": g.request, "until": g.until})),
        }),
    );
    if let Err(e) = resource.ledger.append(&start, resource.durability).await {
        fatal(client, "58000", &ledger_refusal(&e)).await?;
        return Ok(None);
    }

    let cancelled = Arc::new(Notify::new());
    let key = resource.cancels.register(CancelTarget {
        target: resource.target.clone(),
        pid: target.pid,
        secret: target.secret,
        held: cancelled.clone(),
    });
    let mut out = Vec::new();
    backend::auth_ok(&mut out);
    out.extend_from_slice(&target.greeting);
    backend::backend_key_data(key.0, key.1, &mut out);
    backend::ready_for_query(target.status, &mut out);
    send(client, &out).await?;
    tracing::info!(resource = %resource.name, session = %session_id, identity = %actor.id, %peer, "session started");

    Ok(Some(Session {
        resource: resource.clone(),
        actor,
        id: session_id,
        peer,
        cancel_key: key,
        target: target.stream,
        tracker: Tracker::new(target.status),
        recorder: Recorder::new(resource.record_results),
        leftover: buf,
        names: Names::default(),
        recent: HashMap::new(),
        lexicon,
        stop: None,
        skip_until_sync: false,
        totals: Totals::default(),
        started: Instant::now(),
        policy,
        masking,
        cancelled,
        held_input: BytesMut::new(),
        client_gone: false,
        stopping: None,
    }))
}

fn new_session_id() -> String {
    let mut raw = [0u8; 8];
    let _ = getrandom::fill(&mut raw);
    format!(
        "s-{}",
        raw.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

pub(super) async fn record_auth_failure(
    resource: &PgResource,
    user: &str,
    peer: SocketAddr,
    reason: &str,
    key_id: Option<&str>,
) {
    // The first failure of a source, reason and name in an interval is written now; the
    // rest are counted into one entry (see `admission`), so a flood cannot fill the ledger.
    let Some(mut data) = resource
        .admission
        .auth_failure(peer.ip(), reason, user, Instant::now())
    else {
        tracing::debug!(resource = %resource.name, %peer, reason, "authentication failed (counted)");
        return;
    };
    data["client"] = peer.to_string().into();
    data["method"] = "apikey".into();
    if let Some(id) = key_id {
        data["key_id"] = id.into();
    }
    let event = resource.event(EventKind::AuthFailure, None, None, data);
    if let Err(e) = resource.ledger.append(&event, resource.durability).await {
        tracing::error!(error = %e, "could not record an authentication failure");
    }
    let user = crate::admission::recorded_name(user);
    tracing::info!(resource = %resource.name, user, %peer, reason, "authentication failed");
}

//! One client connection: startup and authentication, the target connection, then the
//! relay loop that records each statement before forwarding it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use gatehouse_approvals::{EntryRef, NewReview, Review, ReviewError, State, Verdict};
use gatehouse_core::{Actor, Event, EventKind};
use gatehouse_ledger::{LedgerError, Receipt};
use gatehouse_wire_pg::backend;
use gatehouse_wire_pg::frontend::{self, Frontend};
use gatehouse_wire_pg::{StartupPacket, split_frame, split_startup};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};

use crate::admission::Ticket;
use crate::cancel::CancelTarget;
use crate::error::PgError;
use crate::lexical::{Lexicon, UnsafeSetting};
use crate::masking::{CopyPlan, MaskPolicy, ResultPlan, Rewriter, Shape, Source};
use crate::prepared::{Lookup, Names, Op, Pending, Portal, Prepared};
use crate::recording::Recorder;
use crate::tracker::{Describes, Expect, Tracker, Work};
use crate::upstream::{self, TargetStream};
use crate::{PgResource, send};
use gatehouse_policy::{Action, SessionPolicy, decide_statement};
use gatehouse_sql::{Analysis, Outcome, PreparedUse};

/// Sends everything in `buf` (if anything) and empties it; returns how many bytes went.
async fn drain_into<S: AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> Result<u64, PgError> {
    if buf.is_empty() {
        return Ok(0);
    }
    send(stream, buf).await?;
    let sent = buf.len() as u64;
    buf.clear();
    Ok(sent)
}

/// What the server is sent in place of a refused simple query: text that cannot parse,
/// and says in the server's log why it came.
const STAND_IN_QUERY: &[u8] = b"GATEHOUSE REFUSED THIS STATEMENT\0";
/// What the server is sent in place of a refused extended-protocol message: an Execute of
/// a portal no client can have made (its name has a space and a colon).
const STAND_IN_EXECUTE: &[u8] = b"gatehouse: refused\0\0\0\0\0";

/// Client bytes a session keeps while a statement is held; more stay in the socket.
const MAX_HELD_INPUT: usize = 1 << 20;

/// How long a client may take from connecting to finishing authentication.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// SQL longer than this goes into a chunk; the entry keeps a prefix and the chunk's hash.
const INLINE_SQL: usize = 16 * 1024;

/// The largest startup packet accepted: PostgreSQL's own limit (MAX_STARTUP_PACKET_LENGTH).
const MAX_STARTUP_PACKET: usize = 10_000;
/// The largest password message accepted before sign-in: an API key or an OIDC token (a
/// token with many groups runs to a few KiB), never the 1 GiB a frame may otherwise be.
const MAX_PASSWORD_FRAME: usize = 16 * 1024;

/// Runs one client connection to its end; every failure is answered and logged here.
pub async fn run(
    mut tcp: TcpStream,
    peer: SocketAddr,
    resource: Arc<PgResource>,
    stopping: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let mut ticket = match resource.admission.admit(peer.ip()) {
        Ok(ticket) => ticket,
        Err(turned) => {
            // Said in the server's words (too_many_connections), without reading anything.
            metrics::counter!("gatehouse_connections_turned_away_total", "reason" => turned.reason())
                .increment(1);
            let mut out = Vec::new();
            backend::error_response(
                "FATAL",
                "53300",
                "gatehouse: too many connections are waiting to sign in; try again shortly",
                &mut out,
            );
            let _ = send(&mut tcp, &out).await;
            record_auth_failure(&resource, "", peer, turned.reason(), None).await;
            return;
        }
    };
    let mut buf = BytesMut::with_capacity(1024);
    // The first packet decides whether the connection switches to TLS.
    let first = match tokio::time::timeout(STARTUP_TIMEOUT, read_startup(&mut tcp, &mut buf)).await
    {
        Ok(Ok(packet)) => packet,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "connection ended before startup");
            refuse_startup(&mut tcp, &resource, peer, &e).await;
            return;
        }
        Err(_) => return,
    };
    match (&first, &resource.tls) {
        (StartupPacket::SslRequest, Some(config)) => {
            if !buf.is_empty() {
                // Bytes after SSLRequest but before the handshake could be injected by a
                // man in the middle (CVE-2021-23214); refuse.
                tracing::warn!(%peer, "data after SSLRequest before the TLS handshake; closing");
                return;
            }
            if tcp.write_all(b"S").await.is_err() {
                return;
            }
            let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
            match tokio::time::timeout(STARTUP_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let link = Link { peer, tls: true };
                    serve(tls, link, resource, buf, None, &mut ticket, stopping).await
                }
                Ok(Err(e)) => tracing::info!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
            }
        }
        _ => {
            let link = Link { peer, tls: false };
            serve(tcp, link, resource, buf, Some(first), &mut ticket, stopping).await
        }
    }
}

/// Startup (with a first packet possibly already read), then the relay.
async fn serve<S: ClientStream>(
    mut client: S,
    link: Link,
    resource: Arc<PgResource>,
    buf: BytesMut,
    first: Option<StartupPacket>,
    ticket: &mut Ticket,
    stopping: watch::Receiver<bool>,
) {
    let peer = link.peer;
    let started = tokio::time::timeout(
        STARTUP_TIMEOUT,
        startup(&mut client, link, &resource, buf, first),
    )
    .await;
    // Signed in (or gone): no longer one of the listener's connections in startup.
    ticket.signed_in();
    let mut session = match started {
        Ok(Ok(Some(session))) => session,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            tracing::info!(resource = %resource.name, %peer, error = %e, "connection ended during startup");
            refuse_startup(&mut client, &resource, peer, &e).await;
            return;
        }
        Err(_) => {
            let _ = fatal(&mut client, "08006", "gatehouse: startup took too long").await;
            return;
        }
    };
    session.stopping = Some(stopping);
    session.relay(client).await;
}

/// What the gateway's side of a client connection is: plain TCP or TLS over it.
pub trait ClientStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> ClientStream for T {}

/// Where a client connection comes from and whether it is encrypted.
#[derive(Debug, Clone, Copy)]
struct Link {
    peer: SocketAddr,
    tls: bool,
}

/// A connection that broke the protocol or sent too much before signing in: the client is
/// told why and the failure is recorded (aggregated, like failed sign-ins).
async fn refuse_startup<S: ClientStream>(
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
async fn fatal<S: ClientStream>(client: &mut S, code: &str, message: &str) -> Result<(), PgError> {
    let mut out = Vec::new();
    backend::error_response("FATAL", code, message, &mut out);
    send(client, &out).await?;
    Ok(())
}

/// Reads bytes until `buf` holds one complete startup packet.
async fn read_startup<S: ClientStream>(
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
async fn startup<S: ClientStream>(
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

/// What the client is told when the server reports a setting the gateway cannot read
/// statements under.
fn unsafe_setting_message(setting: &UnsafeSetting) -> String {
    format!(
        "gatehouse: {} {} is not supported: in it, a character can contain the bytes of a quote or a backslash, so the gateway could not read statements as the server does; use UTF8",
        setting.name, setting.value
    )
}

/// The `policy.decision` data of a session refused or ended for a setting the server
/// reported.
fn unsafe_setting_decision(setting: &UnsafeSetting, peer: SocketAddr) -> Value {
    json!({
        "action": "session_setting",
        "setting": setting.name,
        "value": setting.value,
        "outcome": "deny",
        "client": peer.to_string(),
        "message": "an encoding in which a character can contain a quote or backslash byte",
    })
}

/// What runs when `wrapper` executes a prepared statement whose statement is `run`: a
/// plain `EXECUTE` is the statement it runs; `EXPLAIN ANALYZE EXECUTE` and `CREATE TABLE AS
/// EXECUTE` keep their own command and take on what it does.
fn executed(
    wrapper: &gatehouse_sql::Statement,
    run: &gatehouse_sql::Statement,
) -> gatehouse_sql::Statement {
    let mut out = if wrapper.command == "EXECUTE" {
        run.clone()
    } else {
        let mut merged = wrapper.clone();
        if wrapper.command == "EXPLAIN ANALYZE" {
            merged.class = run.class;
        }
        for t in &run.tables {
            if !merged.tables.contains(t) {
                merged.tables.push(t.clone());
            }
        }
        merged.missing_where |= run.missing_where;
        merged.writes |= run.writes;
        merged.inner_commands.push(run.command.clone());
        merged
            .inner_commands
            .extend(run.inner_commands.iter().cloned());
        merged.prepared = None;
        merged
    };
    if !out.inner_commands.iter().any(|c| c == "EXECUTE") {
        out.inner_commands.push("EXECUTE".into());
    }
    out
}

fn new_session_id() -> String {
    let mut raw = [0u8; 8];
    let _ = getrandom::fill(&mut raw);
    format!(
        "s-{}",
        raw.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

fn ledger_refusal(e: &LedgerError) -> String {
    format!("gatehouse: the audit ledger cannot record this, so it was not executed ({e})")
}

async fn record_auth_failure(
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

/// How many distinct statement texts a session keeps analysed, and the longest text kept:
/// clients repeat the same few statements (simple queries, unnamed Parse), so a small cache
/// takes the parser off the hot path without letting one session hold much memory.
const RECENT_STATEMENTS: usize = 64;
const RECENT_MAX_SQL: usize = 4096;

#[derive(Debug, Default)]
struct Totals {
    commands: u64,
    refused: u64,
    denied: u64,
    errors: u64,
    bytes_from_client: u64,
    bytes_to_client: u64,
}

struct Session {
    resource: Arc<PgResource>,
    actor: Actor,
    id: String,
    peer: SocketAddr,
    cancel_key: (i32, i32),
    target: TargetStream,
    tracker: Tracker,
    recorder: Recorder,
    /// Client bytes read during startup that belong to the relay phase.
    leftover: BytesMut,
    /// Prepared statements and portals as the server has confirmed them, each statement
    /// parsed once at Parse time so the hot path (Bind/Execute) does no parsing.
    names: Names,
    /// Recently seen statement text → its analysis (see `RECENT_STATEMENTS`), under the
    /// current lexical settings.
    recent: HashMap<String, Arc<Prepared>>,
    /// How the server reads SQL text in this session, as it last reported.
    lexicon: Lexicon,
    /// Set when the session must end once the current server frames are handled.
    stop: Option<Stop>,
    /// After a refused Execute the rest of the pipeline is dropped until Sync, as the
    /// server itself does after an error.
    skip_until_sync: bool,
    totals: Totals,
    started: Instant,
    /// The access policy as this session last used it (see [`SessionPolicy`]).
    policy: SessionPolicy,
    /// Masking of results; `None` when the resource masks nothing.
    masking: Option<SessionMasking>,
    /// Woken by a CancelRequest with this session's key (ends a held statement's wait).
    cancelled: Arc<Notify>,
    /// Client bytes read while a statement was held, handled after it.
    held_input: BytesMut,
    /// The client left while a statement was held.
    client_gone: bool,
    /// Turns true when the gateway stops: a held statement's session then ends with a
    /// clear error, its review left open for approvers.
    stopping: Option<watch::Receiver<bool>>,
}

/// Why a session must end: what the client is told, and the entry that explains it.
struct Stop {
    code: &'static str,
    message: String,
    /// Why, as an entry written before the client is told (none where `session.end` says
    /// all there is).
    event: Option<Event>,
}

/// The client message a statement came in, for the `command` entry of a refusal: made
/// into JSON only when such an entry is written, off the hot path.
#[derive(Debug, Clone, Copy)]
enum Via<'a> {
    Simple,
    Parse(&'a str),
    Execute {
        portal: &'a str,
        statement: Option<&'a str>,
    },
}

impl Via<'_> {
    fn detail(self) -> Value {
        match self {
            Via::Simple => json!({"protocol": "simple"}),
            Via::Parse(name) => json!({"protocol": "extended", "parse": name}),
            Via::Execute { portal, statement } => {
                json!({"protocol": "extended", "portal": portal, "statement": statement})
            }
        }
    }
}

/// Why a message is refused, as its client is told: in an ErrorResponse where the server's
/// answer would have been.
struct Refusal {
    code: &'static str,
    message: String,
    /// The character of the statement the error points at (a syntax error's).
    position: Option<u32>,
}

impl From<(&'static str, String)> for Refusal {
    fn from((code, message): (&'static str, String)) -> Refusal {
        Refusal {
            code,
            message,
            position: None,
        }
    }
}

/// The client and the pending output, lent to a statement that may be held.
struct Io<'a, S> {
    client: &'a mut S,
    to_server: &'a mut Vec<u8>,
    to_client: &'a mut Vec<u8>,
}

/// A session's masking state.
struct SessionMasking {
    policy: Arc<MaskPolicy>,
    /// Policy lets this client see clear values; the recording is masked all the same.
    clear_client: bool,
    /// Prepared statement → its RowDescription body, as described ahead of executions.
    statements: HashMap<String, Arc<[u8]>>,
    /// Cursor → the statement that declared it, for the rows FETCH returns.
    cursors: HashMap<String, Arc<Source>>,
    /// Where each masked DataRow is written: one buffer for all rows, not one per row.
    row: Vec<u8>,
    /// Counts for a frame that belongs to no statement (a notice between statements):
    /// what is masked there has no result to be recorded with.
    unowned: crate::masking::MaskCounts,
}

impl Session {
    async fn relay<S: ClientStream>(mut self, mut client: S) {
        let reason = match self.pump(&mut client).await {
            Ok(reason) => reason,
            Err(e) => {
                tracing::info!(session = %self.id, error = %e, "session ended with an error");
                e.to_string()
            }
        };
        self.resource.cancels.remove(self.cancel_key);
        self.flush_recording().await;
        let (recorded_bytes, truncated_bytes) = self.recorder.totals();
        let end = self.event(
            EventKind::SessionEnd,
            json!({
                "reason": reason,
                "duration_ms": self.started.elapsed().as_millis() as u64,
                "commands": self.totals.commands,
                "refused": self.totals.refused,
                "denied": self.totals.denied,
                "errors": self.totals.errors,
                "bytes_from_client": self.totals.bytes_from_client,
                "bytes_to_client": self.totals.bytes_to_client,
                "recorded_bytes": recorded_bytes,
                "truncated_bytes": truncated_bytes,
            }),
        );
        if let Err(e) = self
            .resource
            .ledger
            .append(&end, self.resource.durability)
            .await
        {
            tracing::error!(session = %self.id, error = %e, "could not record the end of a session");
        }
        tracing::info!(session = %self.id, peer = %self.peer, reason, "session ended");
    }

    /// Moves bytes both ways until one side closes; returns why it ended.
    async fn pump<S: ClientStream>(&mut self, client: &mut S) -> Result<String, PgError> {
        let mut cbuf = std::mem::take(&mut self.leftover);
        cbuf.reserve(16 * 1024);
        let mut sbuf = BytesMut::with_capacity(16 * 1024);
        let mut to_server = Vec::with_capacity(16 * 1024);
        let mut to_client = Vec::with_capacity(16 * 1024);
        let mut done = Vec::new();
        // Bytes read before the relay started are processed first.
        let mut pending_client = !cbuf.is_empty();
        loop {
            let client_read = if pending_client {
                pending_client = false;
                true
            } else {
                tokio::select! {
                    n = client.read_buf(&mut cbuf) => {
                        if n? == 0 {
                            return Ok("client closed the connection".into());
                        }
                        true
                    }
                    n = self.target.read_buf(&mut sbuf) => {
                        if n? == 0 {
                            return Ok("target closed the connection".into());
                        }
                        false
                    }
                }
            };
            if client_read {
                let terminate = self
                    .handle_client_frames(client, &mut cbuf, &mut to_server, &mut to_client)
                    .await?;
                // What the client sent while a statement was held is handled next.
                if !self.held_input.is_empty() {
                    cbuf.extend_from_slice(&std::mem::take(&mut self.held_input));
                    pending_client = true;
                }
                // Bytes go out before results are recorded: a result entry gates nothing,
                // so building it stays off the statement's latency. It is recorded even
                // when a send fails.
                let to_target = drain_into(&mut self.target, &mut to_server).await;
                let sent = match to_target {
                    Ok(_) => drain_into(client, &mut to_client).await,
                    Err(e) => Err(e),
                };
                self.tracker.take_orphans(&mut done);
                self.record_results(&mut done);
                self.totals.bytes_to_client += sent?;
                if let Some(stop) = self.stop.take() {
                    return self.end_for(client, stop).await;
                }
                if terminate {
                    return Ok("client terminated the session".into());
                }
                if self.client_gone {
                    return Ok("client closed the connection while a statement was held".into());
                }
            } else {
                while let Some(len) =
                    split_frame(&sbuf).map_err(|e| PgError::Target(format!("protocol: {e}")))?
                {
                    if sbuf[0] == b'S' {
                        self.observe_setting(&sbuf[..len]);
                    }
                    if sbuf[0] == b'E' && self.tracker.refusal_due() {
                        // The stand-in of a refused message failed, as it must: the client
                        // gets the refusal in its place, never the stand-in's error.
                        self.tracker.on_server(
                            &sbuf[..len],
                            &mut done,
                            &mut to_client,
                            &mut self.recorder,
                        );
                        sbuf.advance(len);
                        continue;
                    }
                    if self.masking.is_some() {
                        let frame = &sbuf[..len];
                        if self.needs_planning(frame) {
                            self.plan_masking(frame).await;
                        }
                        self.on_server_masked(frame, &mut to_client, &mut done);
                        sbuf.advance(len);
                    } else {
                        let frame = &sbuf[..len];
                        to_client.extend_from_slice(frame);
                        self.tracker.on_server(
                            frame,
                            &mut done,
                            &mut to_client,
                            &mut self.recorder,
                        );
                        sbuf.advance(len);
                    }
                    self.settle_names();
                }
                let sent = drain_into(client, &mut to_client).await;
                self.record_results(&mut done);
                if self.recorder.ready() {
                    self.flush_recording().await;
                }
                self.totals.bytes_to_client += sent?;
                if let Some(stop) = self.stop.take() {
                    return self.end_for(client, stop).await;
                }
            }
        }
    }

    /// Ends the session for `stop`: its entry is appended (durably: it explains why a
    /// session ended), then the client gets a FATAL error.
    async fn end_for<S: ClientStream>(
        &mut self,
        client: &mut S,
        stop: Stop,
    ) -> Result<String, PgError> {
        if let Some(event) = &stop.event
            && let Err(e) = self
                .resource
                .ledger
                .append(event, gatehouse_core::Durability::Sync)
                .await
        {
            tracing::error!(session = %self.id, error = %e, "could not record why a session ended");
        }
        let mut out = Vec::new();
        backend::error_response("FATAL", stop.code, &stop.message, &mut out);
        let _ = send(client, &out).await;
        Ok(stop.message)
    }

    /// A ParameterStatus from the server: the lexical settings follow it, and an encoding
    /// the gateway cannot read statements under ends the session.
    fn observe_setting(&mut self, frame: &[u8]) {
        let Ok((name, value)) = backend::parameter_status(&frame[5..]) else {
            return;
        };
        let before = self.lexicon.lexical;
        match self.lexicon.observe(name, value) {
            Ok(()) => {
                if self.lexicon.lexical != before {
                    // Cached analyses were read under the old settings.
                    self.recent.clear();
                }
            }
            Err(setting) => {
                if self.stop.is_none() {
                    let event = self.event(
                        EventKind::PolicyDecision,
                        unsafe_setting_decision(&setting, self.peer),
                    );
                    self.stop = Some(Stop {
                        code: "0A000",
                        message: unsafe_setting_message(&setting),
                        event: Some(event),
                    });
                }
            }
        }
    }

    /// Applies what the server confirmed or refused of the session's names. A statement
    /// whose meaning changed loses the description masking kept for it.
    fn settle_names(&mut self) {
        let mut changed = Vec::new();
        for settled in self.tracker.take_settled() {
            self.names.settle(settled, &mut changed);
        }
        if let Some(m) = &mut self.masking {
            for name in &changed {
                m.statements.remove(name);
            }
        }
    }

    /// Handles every complete client frame in `buf`. Returns true on Terminate.
    async fn handle_client_frames<S: ClientStream>(
        &mut self,
        client: &mut S,
        buf: &mut BytesMut,
        to_server: &mut Vec<u8>,
        to_client: &mut Vec<u8>,
    ) -> Result<bool, PgError> {
        while let Some(len) = split_frame(buf).map_err(PgError::client_protocol)? {
            let frame = buf.split_to(len);
            self.totals.bytes_from_client += len as u64;
            // In another client encoding, statements are read as the characters the server
            // will see; the server gets the client's bytes.
            let readable = self.lexicon.encoding.readable_frame(&frame);
            let message = match frontend::parse(readable.as_deref().unwrap_or(&frame)) {
                Ok(m) => m,
                Err(e) => {
                    backend::error_response(
                        "FATAL",
                        "08P01",
                        &format!("gatehouse: {e}"),
                        to_client,
                    );
                    return Ok(true);
                }
            };
            if self.skip_until_sync && message != Frontend::Sync {
                continue;
            }
            match message {
                Frontend::Query(sql) => {
                    let read = self.read_statement(sql, Via::Simple).await;
                    let admitted = match read {
                        Ok(prepared) => {
                            let io = Io {
                                client: &mut *client,
                                to_server: &mut *to_server,
                                to_client: &mut *to_client,
                            };
                            self.admit(&prepared, json!({"protocol": "simple"}), io)
                                .await
                                .map(|index| (index, prepared))
                        }
                        Err(refusal) => Err(refusal),
                    };
                    match admitted {
                        Ok((index, prepared)) => {
                            to_server.extend_from_slice(&frame);
                            let shape = self.shape(&prepared, None);
                            self.tracker.push(Expect::Query(
                                Work::new(index).with_shape(shape).deciding(prepared),
                            ));
                        }
                        Err(refusal) => self.refuse(refusal, true, to_server),
                    }
                }
                Frontend::Parse { name, query } => {
                    let refusal = if !name.is_empty()
                        && self.names.statement_count() >= crate::prepared::MAX_STATEMENTS
                    {
                        let message = format!(
                            "gatehouse: this session holds {} prepared statements, the most it may; close some first",
                            crate::prepared::MAX_STATEMENTS
                        );
                        Some(("54000", message).into())
                    } else {
                        match self.read_text(query, Via::Parse(name)).await {
                            Ok(prepared) => {
                                to_server.extend_from_slice(&frame);
                                self.tracker.push(Expect::Parse(Op::Parse {
                                    name: name.to_string(),
                                    prepared,
                                }));
                                None
                            }
                            Err(refusal) => Some(refusal),
                        }
                    };
                    if let Some(refusal) = refusal {
                        self.refuse(refusal, false, to_server);
                    }
                }
                Frontend::Bind { portal, statement } => {
                    let formats = match self.masking {
                        // A malformed Bind is refused by the server; no rows follow it.
                        Some(_) => frontend::bind_result_formats(&frame[5..]).unwrap_or_default(),
                        None => Vec::new(),
                    };
                    // What the statement will be when the Bind reaches the server; a portal
                    // of a statement the gateway cannot name is refused at Execute.
                    let prepared = match self.names.statement(statement, self.tracker.pending()) {
                        Lookup::Known(prepared) => Some(prepared),
                        Lookup::Unknown | Lookup::Uncertain => None,
                    };
                    let bound = Portal {
                        statement: statement.to_string(),
                        prepared,
                        formats,
                    };
                    to_server.extend_from_slice(&frame);
                    self.tracker
                        .push(Expect::Bind(Op::Bind(portal.to_string(), bound)));
                }
                Frontend::Execute { portal, .. } => {
                    let bound = match self.names.portal(portal, self.tracker.pending()) {
                        Lookup::Known(Portal {
                            statement,
                            prepared: Some(prepared),
                            formats,
                        }) => Ok((statement, prepared, formats)),
                        Lookup::Known(Portal { statement, .. }) => Err((
                            "55000",
                            format!(
                                "gatehouse: portal \"{portal}\" was bound from statement \"{statement}\", which the gateway could not name when it was bound (it was unknown, or being redefined by statements still in flight)"
                            ),
                        ).into()),
                        Lookup::Unknown => {
                            Err(("34000", format!("portal \"{portal}\" does not exist")).into())
                        }
                        Lookup::Uncertain => Err((
                            "55000",
                            format!(
                                "gatehouse: portal \"{portal}\" is being redefined by statements still in flight; send its Execute after they complete"
                            ),
                        ).into()),
                    };
                    let bound = match bound {
                        Ok((statement, prepared, formats)) => {
                            let via = Via::Execute {
                                portal,
                                statement: Some(&statement),
                            };
                            match self.resolve_executes(&prepared, via).await {
                                Ok(prepared) => Ok((statement, prepared, formats)),
                                Err(refusal) => Err(refusal),
                            }
                        }
                        Err(refusal) => {
                            let via = Via::Execute {
                                portal,
                                statement: None,
                            };
                            self.record_unreadable(via, "", &refusal).await;
                            Err(refusal)
                        }
                    };
                    let admitted = match bound {
                        Ok((statement, prepared, formats)) => {
                            let detail = json!({"protocol": "extended", "statement": statement, "portal": portal});
                            let io = Io {
                                client: &mut *client,
                                to_server: &mut *to_server,
                                to_client: &mut *to_client,
                            };
                            self.admit(&prepared, detail, io)
                                .await
                                .map(|index| (index, statement, prepared, formats))
                        }
                        Err(refusal) => Err(refusal),
                    };
                    match admitted {
                        Ok((index, statement, prepared, formats)) => {
                            to_server.extend_from_slice(&frame);
                            let shape = self.shape(&prepared, Some((statement, formats)));
                            self.tracker.push(Expect::Execute(
                                Work::new(index).with_shape(shape).deciding(prepared),
                            ));
                        }
                        Err(refusal) => self.refuse(refusal, false, to_server),
                    }
                }
                Frontend::Describe { kind, name } => {
                    to_server.extend_from_slice(&frame);
                    self.tracker
                        .push(Expect::Describe((kind == b'S').then(|| name.to_string())));
                }
                Frontend::Close { kind, name } => {
                    // Takes effect when the server confirms it (CloseComplete).
                    to_server.extend_from_slice(&frame);
                    self.tracker.push(Expect::Close(Op::Close {
                        kind,
                        name: name.to_string(),
                    }));
                }
                Frontend::Sync => {
                    self.skip_until_sync = false;
                    to_server.extend_from_slice(&frame);
                    self.tracker.push(Expect::Sync);
                }
                Frontend::FunctionCall => {
                    // A function call runs code on the server: recorded like a statement, and
                    // decided as text the parser cannot read (it has no SQL).
                    let prepared = Prepared::from_analysis(
                        "",
                        self.lexicon.lexical,
                        Analysis {
                            statements: Vec::new(),
                            unparsed: Some("a fast-path function call carries no SQL".into()),
                            syntax_error: None,
                        },
                    );
                    let io = Io {
                        client: &mut *client,
                        to_server: &mut *to_server,
                        to_client: &mut *to_client,
                    };
                    match self
                        .admit(&prepared, json!({"protocol": "function_call"}), io)
                        .await
                    {
                        Ok(index) => {
                            to_server.extend_from_slice(&frame);
                            self.tracker.push(Expect::Query(Work::new(index)));
                        }
                        Err(refusal) => self.refuse(refusal, true, to_server),
                    }
                }
                Frontend::Terminate => {
                    to_server.extend_from_slice(&frame);
                    return Ok(true);
                }
                // Flush, COPY data and anything this gateway does not inspect pass through.
                _ => to_server.extend_from_slice(&frame),
            }
        }
        Ok(false)
    }

    /// Reads a text sent for parsing (a simple query or a Parse) under the session's
    /// lexical settings. While statements are in flight the server may be changing those
    /// settings; a text that would read differently then is refused (and recorded).
    async fn read_text(&mut self, sql: &str, via: Via<'_>) -> Result<Arc<Prepared>, Refusal> {
        if !self.tracker.is_idle()
            && let Some(why) = Lexicon::unsettled_reading(sql)
        {
            let message = format!(
                "gatehouse: this statement cannot be read safely now: {why}; send it after the statements before it have completed"
            );
            let refusal = Refusal::from(("55000", message));
            self.record_unreadable(via, sql, &refusal).await;
            return Err(refusal);
        }
        Ok(self.analysed(sql))
    }

    /// [`Session::read_text`], then every `EXECUTE` in it read as the statement it runs.
    async fn read_statement(&mut self, sql: &str, via: Via<'_>) -> Result<Arc<Prepared>, Refusal> {
        let prepared = self.read_text(sql, via).await?;
        self.resolve_executes(&prepared, via).await
    }

    /// The statement as the server will run it: each SQL `EXECUTE name` (also inside
    /// `EXPLAIN ANALYZE` or `CREATE TABLE AS`) is decided on what `name` will be when it
    /// runs. A name the gateway does not know, or cannot be sure of, is refused and
    /// recorded.
    async fn resolve_executes(
        &mut self,
        prepared: &Arc<Prepared>,
        via: Via<'_>,
    ) -> Result<Arc<Prepared>, Refusal> {
        match self.substitute_executes(prepared, 0) {
            Ok(resolved) => Ok(resolved),
            Err(refusal) => {
                self.record_unreadable(via, &prepared.sql, &refusal).await;
                Err(refusal)
            }
        }
    }

    fn substitute_executes(
        &self,
        prepared: &Arc<Prepared>,
        depth: usize,
    ) -> Result<Arc<Prepared>, Refusal> {
        let statements = &prepared.analysis.statements;
        let executes =
            |s: &gatehouse_sql::Statement| matches!(s.prepared, Some(PreparedUse::Execute { .. }));
        if !statements.iter().any(executes) {
            return Ok(prepared.clone());
        }
        if depth >= 4 {
            return Err((
                "54001",
                "gatehouse: prepared statements execute each other too deeply".into(),
            )
                .into());
        }
        let mut out = Vec::with_capacity(statements.len());
        let mut unparsed = prepared.analysis.unparsed.clone();
        for (i, statement) in statements.iter().enumerate() {
            let Some(PreparedUse::Execute { name }) = &statement.prepared else {
                out.push(statement.clone());
                continue;
            };
            // Statements before this one in the same text have run if this one runs.
            let ahead = statements[..i]
                .iter()
                .filter(|s| s.prepared.is_some())
                .map(|s| Pending::Sql(prepared, s));
            let body = match self
                .names
                .statement(name, self.tracker.pending().chain(ahead))
            {
                Lookup::Known(body) => self.substitute_executes(&body, depth + 1)?,
                Lookup::Unknown => {
                    return Err((
                        "26000",
                        format!("prepared statement \"{name}\" does not exist"),
                    )
                        .into());
                }
                Lookup::Uncertain => {
                    return Err((
                        "55000",
                        format!(
                            "gatehouse: prepared statement \"{name}\" is being redefined by statements still in flight; execute it after they complete"
                        ),
                    ).into());
                }
            };
            if body.analysis.unparsed.is_some() {
                unparsed = body.analysis.unparsed.clone();
            }
            for run in &body.analysis.statements {
                out.push(executed(statement, run));
            }
        }
        Ok(Arc::new(Prepared::from_analysis(
            &prepared.sql,
            prepared.lexical,
            Analysis {
                statements: out,
                unparsed,
                syntax_error: None,
            },
        )))
    }

    /// Records a statement the gateway refuses because it cannot tell what the server
    /// would run: a `command` entry decided `deny`, with the reason.
    async fn record_unreadable(&mut self, via: Via<'_>, sql: &str, refusal: &Refusal) {
        let mut detail = via.detail();
        detail["decision"] =
            json!({"outcome": "deny", "unreadable": refusal.code, "message": refusal.message});
        self.totals.denied += 1;
        if let Err(e) = self.audit(sql, detail).await {
            tracing::warn!(session = %self.id, error = %e, "could not record a refused statement");
        }
    }

    /// Refuses a message: the client gets the refusal where the server's answer would have
    /// been, and the server gets a stand-in it must fail, so it aborts the transaction (or
    /// skips to the next Sync) exactly as after a real error — a refusal in the middle of a
    /// pipeline or a transaction block never lets what came before it commit as though
    /// nothing had failed. A simple query or function call (`query`) is stood in for by a
    /// query that cannot parse; an extended-protocol message by an Execute of a portal that
    /// cannot exist, after which the rest of the pipeline is dropped until Sync, as the
    /// server drops it.
    fn refuse(&mut self, refusal: Refusal, query: bool, to_server: &mut Vec<u8>) {
        let mut reply = Vec::new();
        match refusal.position {
            Some(at) => {
                backend::error_response_at("ERROR", refusal.code, &refusal.message, at, &mut reply)
            }
            None => backend::error_response("ERROR", refusal.code, &refusal.message, &mut reply),
        }
        if query {
            frontend::frame(b'Q', STAND_IN_QUERY, to_server);
        } else {
            frontend::frame(b'E', STAND_IN_EXECUTE, to_server);
            self.skip_until_sync = true;
        }
        self.tracker.push(Expect::Refused { reply, query });
    }

    /// The analysis of `sql`, from the session's cache when the text was seen recently.
    fn analysed(&mut self, sql: &str) -> Arc<Prepared> {
        if let Some(hit) = self.recent.get(sql) {
            return hit.clone();
        }
        let prepared = Arc::new(Prepared::new(sql, self.lexicon.lexical));
        if sql.len() <= RECENT_MAX_SQL {
            if self.recent.len() >= RECENT_STATEMENTS {
                // Simpler than LRU and enough: a workload of more distinct texts than
                // this gains little from any cache of this size.
                self.recent.clear();
            }
            self.recent.insert(sql.to_string(), prepared.clone());
        }
        prepared
    }

    fn event(&self, kind: EventKind, data: Value) -> Event {
        self.resource
            .event(kind, Some(&self.actor), Some(&self.id), data)
    }

    /// Decides a statement and records the decision, write-ahead: the `command` entry is
    /// appended (durable in `sync` mode) before an allowed statement may be forwarded. A
    /// statement held for review waits here for its decision ([`Session::hold`]). Returns
    /// the entry's ledger index, or the SQLSTATE and message of the refusal.
    async fn admit<S: ClientStream>(
        &mut self,
        prepared: &Prepared,
        mut detail: Value,
        io: Io<'_, S>,
    ) -> Result<u64, Refusal> {
        let cedar = self.resource.policy.as_ref().map(|handle| {
            self.policy.statements(
                handle,
                &self.actor,
                &self.resource.target(),
                &prepared.analysis,
            )
        });
        let decision = decide_statement(
            &self.resource.rules,
            self.resource.on_unparsed,
            &self.actor.groups,
            &prepared.analysis,
            cedar,
        );
        if let Value::Object(map) = &mut detail {
            map.extend(prepared.summary.clone());
        }
        detail["decision"] = json!({"outcome": decision.outcome.as_str(), "rule": decision.rule, "policies": decision.policies});
        // Every rule and policy that holds the statement; a grant covers exactly what it
        // names, so the statement skips its review only with a grant for each.
        let holders: Vec<String> = if decision.holders.is_empty() {
            decision
                .rule
                .clone()
                .or_else(|| decision.policies.first().cloned())
                .into_iter()
                .collect()
        } else {
            decision.holders.clone()
        };
        if holders.len() > 1 {
            detail["decision"]["holders"] = json!(holders);
        }
        let grants: Option<Vec<gatehouse_approvals::Grant>> = match decision.outcome {
            Outcome::Review => holders
                .iter()
                .map(|h| {
                    self.resource
                        .reviews
                        .grant(&self.resource.name, &self.actor.id, Some(h))
                })
                .collect(),
            _ => None,
        };
        let grant = grants.as_ref().and_then(|g| g.first());
        if let (Some(grants), Some(first)) = (&grants, grant) {
            // The entry names the review that granted it (each, when several hold).
            detail["decision"]["grant"] =
                json!({"review": first.review, "request": first.request, "until": first.until});
            if grants.len() > 1 {
                detail["decision"]["grants"] = grants
                    .iter()
                    .map(|g| json!({"rule": g.rule, "review": g.review, "request": g.request, "until": g.until}))
                    .collect();
            }
        }
        let receipt = self
            .audit(&prepared.sql, detail)
            .await
            .map_err(|m| Refusal::from(("58000", m)))?;
        match decision.outcome {
            Outcome::Allow => Ok(receipt.index),
            Outcome::Review if grant.is_some() => Ok(receipt.index),
            Outcome::Deny => {
                self.totals.denied += 1;
                // Text the parser rejected is answered with the parser's own error, as the
                // server would answer it; the entry above records it as refused.
                if let Some(syntax) = &prepared.analysis.syntax_error {
                    return Err(Refusal {
                        code: syntax.code,
                        message: syntax.message.clone(),
                        position: syntax.position,
                    });
                }
                let reason = decision.message.unwrap_or_default();
                Err(("42501", format!("gatehouse: denied: {reason}")).into())
            }
            Outcome::Review => {
                let reason = decision.message.unwrap_or_default();
                let held = self
                    .hold(&prepared.sql, &receipt, holders, reason, io)
                    .await;
                if held.is_err() {
                    self.totals.denied += 1;
                }
                held.map(|()| receipt.index)
            }
        }
    }

    /// Holds a statement for review: opens the review (an `approval.request` entry naming
    /// the command entry), tells the client how it can be approved, and waits — for the
    /// approvers, the timeout, a CancelRequest or the client leaving — recording how it
    /// ended. `Ok` once approved (its `executed` entry written before the statement is sent).
    async fn hold<S: ClientStream>(
        &mut self,
        sql: &str,
        command: &Receipt,
        holders: Vec<String>,
        reason: String,
        io: Io<'_, S>,
    ) -> Result<(), Refusal> {
        let mut settings = self.resource.review.clone();
        // A holding rule may ask for other approvers or more approvals. With several
        // holders, the review must satisfy each: the most approvals any asks for (a Cedar
        // policy asks for the resource's), from groups every holding rule accepts.
        let holding: Vec<&gatehouse_sql::Rule> = self
            .resource
            .rules
            .iter()
            .filter(|r| holders.iter().any(|h| h == &r.id))
            .collect();
        let default = settings.approvals;
        settings.approvals = holding
            .iter()
            .map(|r| r.approvals.unwrap_or(default))
            .chain((holding.len() < holders.len()).then_some(default))
            .max()
            .unwrap_or(default);
        let mut approvers: Option<Vec<String>> = None;
        for groups in holding.iter().filter_map(|r| r.approvers.as_ref()) {
            approvers = Some(match approvers {
                None => groups.clone(),
                Some(so_far) => so_far.into_iter().filter(|g| groups.contains(g)).collect(),
            });
        }
        if let Some(groups) = approvers {
            settings.approvers = groups;
        }
        let rule = holders.first().cloned();
        // Without approver groups only access policy can name approvers.
        if settings.approvers.is_empty() && self.resource.policy.is_none() {
            return Err((
                "42501",
                format!(
                    "gatehouse: this statement needs an approval ({reason}), but resources.{}.reviews.approvers names no group that may give one and no access policy is configured, so it was not executed",
                    self.resource.name
                ),
            ).into());
        }
        let command_ref = EntryRef {
            index: command.index,
            leaf: hex::encode(command.leaf_hash),
        };
        let new = NewReview {
            access: None,
            resource: self.resource.name.clone(),
            requester: self.actor.id.clone(),
            session: self.id.clone(),
            statement: sql.to_string(),
            rule,
            holders: if holders.len() > 1 {
                holders
            } else {
                Vec::new()
            },
            reason,
            approvers: settings.approvers.clone(),
            required: settings.approvals,
            timeout: settings.timeout,
        };
        let ledger = self.resource.ledger.clone();
        let request = self.event(EventKind::ApprovalRequest, Value::Null);
        let opened = self
            .resource
            .reviews
            .open(new, |review: &Review| {
                let mut event = request;
                event.data = json!({
                    "review": review.id,
                    "command": command_ref,
                    "rule": review.rule,
                    "reason": review.reason,
                    "approvers": review.approvers,
                    "required": review.required,
                    "expires_at": review.expires_at,
                });
                async move { ledger.append_ref(&event).await.map_err(|e| e.to_string()) }
            })
            .await;
        let (review, mut changes) = match opened {
            Ok(opened) => opened,
            // Too many of this identity's reviews wait already: a limit, not a failure.
            Err(e @ ReviewError::TooManyOpen { .. }) => {
                return Err((
                    "53400",
                    format!("gatehouse: {e}; the statement was not executed"),
                )
                    .into());
            }
            Err(e) => {
                return Err((
                    "58000",
                    format!("gatehouse: the review could not be opened: {e}"),
                )
                    .into());
            }
        };
        let id = review.id.clone();
        gatehouse_approvals::notify::review_requested(
            &settings.notify,
            &review,
            &settings.admin_url,
        );
        let wait = humantime::format_duration(settings.timeout).to_string();
        let mut notice = Vec::new();
        backend::write_message_fields(
            b'N',
            [
                (b'S', "NOTICE"),
                (b'V', "NOTICE"),
                (b'C', "00000"),
                (
                    b'M',
                    format!("gatehouse: held for review {id}: {}", review.reason).as_str(),
                ),
                (
                    b'D',
                    format!(
                        "Waiting up to {wait} for {} approval(s) from {}.",
                        review.required,
                        match (review.approvers.is_empty(), self.resource.policy.is_some()) {
                            (true, _) => "those access policy permits to approve".to_string(),
                            (false, true) => format!(
                                "the group(s) {} or those access policy permits to approve",
                                review.approvers.join(", ")
                            ),
                            (false, false) => format!("the group(s) {}", review.approvers.join(", ")),
                        }
                    )
                    .as_str(),
                ),
                (
                    b'H',
                    format!(
                        "Approve with `gatehouse reviews approve {id}` or POST {}/api/reviews/{id}/approve.",
                        settings.admin_url
                    )
                    .as_str(),
                ),
            ],
            &mut notice,
        );
        io.to_client.extend_from_slice(&notice);
        // What came before this statement goes out now; its results wait with the rest.
        drain_into(&mut self.target, io.to_server)
            .await
            .map_err(|e| {
                (
                    "08006",
                    format!("gatehouse: the target connection failed: {e}"),
                )
            })?;
        let _ = drain_into(io.client, io.to_client).await;
        let deadline = tokio::time::Instant::now() + settings.timeout;
        let cancelled = self.cancelled.clone();
        let mut stopping = self.stopping.clone();
        let ended = loop {
            tokio::select! {
                // The gateway is stopping: the review stays open (it is in the state store,
                // decidable after the restart); this session ends, saying so.
                _ = async {
                    match stopping.as_mut() {
                        // The guard `wait_for` returns is not Send; dropped in here.
                        Some(stop) => { let _ = stop.wait_for(|stop| *stop).await; }
                        None => std::future::pending::<()>().await,
                    }
                } => {
                    let message = format!(
                        "gatehouse is shutting down; review {id} stays open for approvers: run the statement again once it is approved"
                    );
                    self.stop = Some(Stop {
                        code: "57P01",
                        message: message.clone(),
                        event: None,
                    });
                    return Err(("57P01", message).into());
                }
                changed = changes.changed() => {
                    if changed.is_err() {
                        break State::Cancelled;
                    }
                    let now = changes.borrow_and_update().clone();
                    match now.state {
                        State::Approved => break State::Approved,
                        State::Denied => {
                            let denial = now.denial.unwrap_or(Verdict { by: "?".into(), at: 0, reason: None, grant_ms: None });
                            let why = denial.reason.map(|r| format!(": {r}")).unwrap_or_default();
                            return Err(("42501", format!("gatehouse: review {id} was denied by {}{why}", denial.by)).into());
                        }
                        State::Pending => {
                            // Progress: who approved, and how many are still needed.
                            let by = now.approvals.last().map(|a| a.by.as_str()).unwrap_or("?");
                            let mut out = Vec::new();
                            backend::notice_response(
                                "00000",
                                &format!(
                                    "gatehouse: review {id} approved by {by} ({} of {} approvals)",
                                    now.approvals.len(),
                                    now.required
                                ),
                                &mut out,
                            );
                            let _ = drain_into(io.client, &mut out).await;
                        }
                        _ => break now.state,
                    }
                }
                _ = tokio::time::sleep_until(deadline) => break State::Expired,
                _ = cancelled.notified() => break State::Cancelled,
                // Past the cap the client's bytes wait in its socket: the session holds
                // no more of them than this while a statement waits.
                read = io.client.read_buf(&mut self.held_input),
                    if self.held_input.len() < MAX_HELD_INPUT =>
                {
                    // More from the client waits its turn; nothing, or an error, means
                    // the client has gone.
                    if !matches!(read, Ok(n) if n > 0) {
                        self.client_gone = true;
                        break State::Cancelled;
                    }
                }
            }
        };
        let target = match ended {
            State::Approved => State::Executed,
            other => other,
        };
        let ledger = self.resource.ledger.clone();
        let finished = self
            .resource
            .reviews
            .finish(&id, target, |next: &Review| {
                let event =
                    gatehouse_approvals::decision_event(next, Some(self.actor.clone()), json!({}));
                async move {
                    ledger
                        .append_ref(&event)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }
            })
            .await;
        match (target, finished) {
            (State::Executed, Ok(_)) => Ok(()),
            (State::Expired, Ok(_)) => Err((
                "57014",
                format!(
                    "gatehouse: review {id} timed out after {wait} without a decision; the statement was not executed"
                ),
            ).into()),
            (State::Cancelled, Ok(_)) => Err((
                "57014",
                format!(
                    "gatehouse: canceling statement due to user request (review {id} cancelled)"
                ),
            ).into()),
            // A decision came in between (a denial just before the timeout): it stands.
            (
                _,
                Err(ReviewError::NotPending {
                    state: State::Denied,
                    ..
                }),
            ) => Err(("42501", format!("gatehouse: review {id} was denied")).into()),
            (_, Err(e)) => Err((
                "42501",
                format!("gatehouse: review {id}: {e}; the statement was not executed"),
            ).into()),
            (_, Ok(_)) => Err((
                "42501",
                format!("gatehouse: review {id} ended; the statement was not executed"),
            ).into()),
        }
    }

    /// Write-ahead audit: the `command` entry is appended (durable in `sync` mode) before the
    /// statement may be forwarded. Returns its ledger index, or the refusal message.
    async fn audit(&mut self, sql: &str, mut detail: Value) -> Result<Receipt, String> {
        let mut event = self.event(EventKind::Command, Value::Null);
        if sql.len() > INLINE_SQL {
            match self
                .resource
                .ledger
                .put_chunk(sql.as_bytes().to_vec())
                .await
            {
                Ok(chunk) => {
                    detail["sql_prefix"] = sql[..sql.floor_char_boundary(INLINE_SQL)].into();
                    detail["sql_in_chunk"] = true.into();
                    event.chunks.push(chunk);
                }
                Err(e) => {
                    self.totals.refused += 1;
                    return Err(ledger_refusal(&e));
                }
            }
        } else {
            detail["sql"] = sql.into();
        }
        event.data = detail;
        match self
            .resource
            .ledger
            .append(&event, self.resource.durability)
            .await
        {
            Ok(receipt) => {
                self.totals.commands += 1;
                Ok(receipt)
            }
            Err(e) => {
                self.totals.refused += 1;
                tracing::warn!(session = %self.id, error = %e, "statement refused: ledger unavailable");
                Err(ledger_refusal(&e))
            }
        }
    }

    /// Writes the buffered result data as a chunk and appends the `recording` entry that
    /// says which command each slice belongs to. A chunk that cannot be written is recorded
    /// as lost, with the reason, so the gap is explicit.
    async fn flush_recording(&mut self) {
        let Some(batch) = self.recorder.take() else {
            return;
        };
        let parts: Vec<[u64; 3]> = batch
            .parts
            .iter()
            .map(|p| [p.command, p.offset, p.len])
            .collect();
        let mut event = self.event(
            EventKind::Recording,
            json!({"parts": parts, "bytes": batch.bytes.len()}),
        );
        match self.resource.ledger.put_chunk(batch.bytes).await {
            Ok(chunk) => event.chunks.push(chunk),
            Err(e) => {
                tracing::error!(session = %self.id, error = %e, "could not store result data");
                event.data["lost"] = e.to_string().into();
            }
        }
        // Not waited for, like a result: it gates nothing the client does.
        if let Err(e) = self.resource.ledger.append_detached(&event) {
            tracing::error!(session = %self.id, error = %e, "could not record result data");
        }
    }

    /// What masking needs to know of a statement about to run (nothing when off).
    fn shape(&mut self, prepared: &Prepared, extended: Option<(String, Vec<i16>)>) -> Shape {
        let Some(m) = &mut self.masking else {
            return Shape::default();
        };
        let mut source = prepared.source(m.policy.has_rules());
        if let Some(lineage) = &source.lineage {
            if let Some(cursor) = &lineage.declares_cursor {
                m.cursors.insert(cursor.clone(), source.clone());
            } else if let Some(cursor) = &lineage.fetches_cursor {
                // FETCH returns the declaring query's columns; an unknown cursor (declared
                // before the gateway saw it, e.g. inside a function) has unknown lineage.
                source = m.cursors.get(cursor).cloned().unwrap_or_else(|| {
                    Arc::new(Source::new(
                        prepared.sql.clone(),
                        Some(gatehouse_sql::lineage::Lineage {
                            opaque: true,
                            ..Default::default()
                        }),
                        Vec::new(),
                    ))
                });
            }
        }
        let (statement, formats) = match extended {
            Some((statement, formats)) => (Some(statement), Some(formats)),
            None => (None, None),
        };
        Shape {
            source: Some(source),
            statement,
            formats,
            ddl: prepared.is_ddl(),
            ..Shape::default()
        }
    }

    /// Whether a server frame needs a masking plan made first: a result's description, or
    /// its first row when it was described earlier (a prepared statement), or the start of
    /// COPY. Every other frame is masked without waiting on anything.
    fn needs_planning(&mut self, frame: &[u8]) -> bool {
        match frame[0] {
            b'T' | b'H' => true,
            b'D' => self
                .tracker
                .front_work()
                .is_some_and(|w| w.shape.plan.is_none()),
            // Whether a statement's messages may quote masked values needs the catalog.
            b'E' | b'N' => {
                self.masking.as_ref().is_some_and(|m| m.policy.has_rules())
                    && self
                        .tracker
                        .front_work()
                        .is_some_and(|w| w.shape.texts_tainted.is_none())
            }
            _ => false,
        }
    }

    /// Makes the plan [`Session::needs_planning`] asked for (reading the catalog if need be).
    async fn plan_masking(&mut self, frame: &[u8]) {
        match frame[0] {
            b'T' => self.describe(frame).await,
            b'D' => self.plan_from_statement().await,
            b'H' => self.plan_copy(frame).await,
            b'E' | b'N' => self.plan_texts().await,
            _ => {}
        }
    }

    /// Reads what the catalog must say of the relations a statement names and the
    /// functions it calls; a failure is logged with what follows from it (`then`).
    async fn load_statement_catalog(&self, source: Option<&Source>, then: &str) {
        let needs = crate::masking::CatalogNeeds::of_statement(source);
        if let Err(e) = self
            .resource
            .catalog
            .load(&self.resource, &[], &[], &needs.names, &needs.functions)
            .await
        {
            tracing::warn!(session = %self.id, error = %e, "catalog lookup failed; {then}");
        }
    }

    /// Decides whether the front statement's error and notice texts are masked whole
    /// ([`crate::masking::texts_tainted`]), reading what the catalog must say first.
    async fn plan_texts(&mut self) {
        let Some(m) = &self.masking else {
            return;
        };
        let policy = m.policy.clone();
        let Some(work) = self.tracker.front_work() else {
            return;
        };
        let source = work.shape.source.clone();
        self.load_statement_catalog(
            source.as_deref(),
            "the statement's messages are masked whole",
        )
        .await;
        let tainted =
            crate::masking::texts_tainted(&policy, &self.resource.catalog, source.as_deref());
        if let Some(work) = self.tracker.front_work() {
            work.shape.texts_tainted = Some(tainted);
        }
    }

    /// One server frame with masking on, its plan made: the frame is masked, the masked
    /// bytes are recorded, and the client gets them (or the clear bytes when policy lets it
    /// see clear values). Not async: most frames are rows, and a row waits on nothing.
    fn on_server_masked(&mut self, frame: &[u8], to_client: &mut Vec<u8>, done: &mut Vec<Work>) {
        let Some(m) = &mut self.masking else {
            return;
        };
        let rewriter = Rewriter {
            policy: &m.policy,
            catalog: &self.resource.catalog,
            encoding: self.lexicon.encoding,
        };
        let work = self.tracker.front_work();
        let (plan, copy, first, tainted, counts) = match work {
            Some(w) => {
                let first = w.shape.copy_rows == 0;
                if frame[0] == b'd' {
                    w.shape.copy_rows += 1;
                }
                (
                    w.shape.plan.as_deref(),
                    w.shape.copy.as_deref(),
                    first,
                    w.shape.texts_tainted == Some(true),
                    &mut w.shape.counts,
                )
            }
            None => {
                m.unowned = crate::masking::MaskCounts::default();
                (None, None, true, false, &mut m.unowned)
            }
        };
        m.row.clear();
        let row_changed =
            frame[0] == b'D' && rewriter.data_row_into(frame, plan, counts, &mut m.row);
        let other = match frame[0] {
            // Without a plan (the CopyOutResponse could not be read) nothing is known of
            // the rows: they are looked at whole.
            b'd' => rewriter.copy_data(frame, copy.unwrap_or(&CopyPlan::default()), first, counts),
            b'E' | b'N' => rewriter.fields_message(frame, tainted, counts),
            b'A' => rewriter.notification(frame, counts),
            _ => None,
        };
        let recorded: &[u8] = if row_changed {
            &m.row
        } else {
            other.as_deref().unwrap_or(frame)
        };
        to_client.extend_from_slice(if m.clear_client { frame } else { recorded });
        self.tracker
            .on_server(recorded, done, to_client, &mut self.recorder);
    }

    /// A RowDescription: the plan of the result it describes, or (for a prepared
    /// statement described ahead) the description kept for its executions.
    async fn describe(&mut self, frame: &[u8]) {
        match self.tracker.describes() {
            Describes::Work(at, statement) => {
                let Some(work) = self.tracker.work_at(at) else {
                    return;
                };
                let (source, formats) = (work.shape.source.clone(), work.shape.formats.clone());
                // A Describe of a portal reports the real formats, and so does a simple
                // query; a statement's description has placeholders the Bind replaces.
                let formats = if statement { formats } else { None };
                let plan = self.build_plan(&frame[5..], formats, source).await;
                if let Some(work) = self.tracker.work_at(at) {
                    work.shape.plan = plan;
                }
            }
            Describes::Statement(name) => {
                if let Some(m) = &mut self.masking {
                    m.statements.insert(name, frame[5..].into());
                }
            }
            Describes::Nothing => {}
        }
    }

    /// The plan of an Execute whose statement was described earlier, with the Bind's formats.
    async fn plan_from_statement(&mut self) {
        let Some(work) = self.tracker.front_work() else {
            return;
        };
        // Taken, not copied: they are wanted for this plan only.
        let (source, formats, statement) = (
            work.shape.source.clone(),
            work.shape.formats.take(),
            work.shape.statement.take(),
        );
        let body = match (&self.masking, statement) {
            (Some(m), Some(name)) => m.statements.get(&name).cloned(),
            _ => None,
        };
        // Unknown shape: the plan stays empty and every value is masked whole.
        let Some(body) = body else {
            return;
        };
        let plan = self.build_plan(&body, formats, source).await;
        if let Some(work) = self.tracker.front_work() {
            work.shape.plan = plan;
        }
    }

    /// A result's plan, kept with its statement or built after loading what the catalog
    /// must say about it. A catalog that cannot be read leaves origins unresolved, which
    /// masks them (see [`crate::masking::plan`]); such a plan is not kept, so the next
    /// result tries the catalog again.
    async fn build_plan(
        &mut self,
        body: &[u8],
        formats: Option<Vec<i16>>,
        source: Option<Arc<Source>>,
    ) -> Option<Arc<ResultPlan>> {
        let policy = self.masking.as_ref()?.policy.clone();
        let generation = self.resource.catalog.generation();
        if let Some(plan) = source
            .as_ref()
            .and_then(|s| s.plan(body, formats.as_deref(), generation))
        {
            return Some(plan);
        }
        let fields = gatehouse_wire_pg::rows::row_description(body).ok()?;
        let needs = crate::masking::catalog_needs(&policy, &fields, source.as_deref());
        let loaded = self
            .resource
            .catalog
            .load(
                &self.resource,
                &needs.relations,
                &needs.types,
                &needs.names,
                &needs.functions,
            )
            .await;
        if let Err(e) = &loaded {
            tracing::warn!(session = %self.id, error = %e, "catalog lookup failed; unresolved columns are masked");
        }
        let plan = Arc::new(crate::masking::plan(
            &policy,
            &self.resource.catalog,
            &fields,
            formats.as_deref(),
            source.as_deref(),
        ));
        if let (Ok(()), Some(source)) = (loaded, &source) {
            source.keep(body, formats, generation, plan.clone());
        }
        Some(plan)
    }

    /// A CopyOutResponse: how the rows of this COPY are masked.
    async fn plan_copy(&mut self, frame: &[u8]) {
        let Some(m) = &self.masking else {
            return;
        };
        let policy = m.policy.clone();
        let Ok((overall, columns)) = gatehouse_wire_pg::backend::copy_response(&frame[5..]) else {
            return;
        };
        let Some(work) = self.tracker.front_work() else {
            return;
        };
        let source = work.shape.source.clone();
        // The columns' types tell how each value is masked (a token where the type is text,
        // NULL where it is not, bytea as its bytes), rules or not.
        self.load_statement_catalog(source.as_deref(), "unresolved columns are masked")
            .await;
        let copy = crate::masking::copy_plan(
            &policy,
            &self.resource.catalog,
            source.as_deref(),
            (overall, columns.len()),
        );
        if let Some(work) = self.tracker.front_work() {
            work.shape.copy = Some(Arc::new(copy));
        }
    }

    fn record_results(&mut self, done: &mut Vec<Work>) {
        for work in done.drain(..) {
            self.record_result(work);
        }
    }

    /// The after-the-fact summary of a statement; nobody waits for it.
    fn record_result(&mut self, work: Work) {
        if work.error.is_some() {
            self.totals.errors += 1;
        }
        if let Some(decided) = &work.decided
            && let Some((tag, why)) =
                crate::integrity::unaccounted_tag(&decided.analysis, &work.tags)
        {
            // The server ran something that was not decided: the gateway's reading and the
            // server's diverged. Recorded, counted, and the session ends.
            metrics::counter!("gatehouse_integrity_mismatches_total").increment(1);
            tracing::error!(session = %self.id, tag, why, "integrity mismatch: the target ran a command that was not decided");
            if self.stop.is_none() {
                let event = self.event(
                    EventKind::IntegrityMismatch,
                    json!({
                        "command": work.command,
                        "decided": decided.summary.get("commands"),
                        "tags": work.tags,
                        "tag": tag,
                        "reason": why,
                    }),
                );
                self.stop = Some(Stop {
                    code: "XX000",
                    message: format!(
                        "gatehouse: the server ran a command that was not decided ({why}); the session is ended"
                    ),
                    event: Some(event),
                });
            }
        }
        let mut data = json!({
            "command": work.command,
            "tags": work.tags,
            "rows": work.rows,
            "bytes": work.bytes,
            "duration_us": work.started.elapsed().as_micros() as u64,
            "error": work.error,
            "skipped": work.skipped,
        });
        // The recorded bytes themselves follow in `recording` entries; the hash here ties
        // them to this result the moment it ends.
        if let Some(sha256) = work.output.sha256() {
            data["recorded"] = json!({"sha256": sha256, "bytes": work.output.len});
        }
        if work.output.truncated > 0 {
            data["truncated_bytes"] = work.output.truncated.into();
        }
        if !work.shape.counts.is_empty() {
            data["masked"] = work.shape.counts.to_json();
        }
        if work.shape.ddl {
            // The catalog may have changed under the masking plans.
            self.resource.catalog.invalidate();
        }
        let event = self.event(EventKind::Result, data);
        if let Err(e) = self
            .resource
            .ledger
            // Not waited for, even on `sync` resources: a result gates nothing, and the
            // next command's fsync (or the batched window) makes it durable; an fsync of
            // its own would double the syncs per statement.
            .append_detached(&event)
        {
            tracing::error!(session = %self.id, error = %e, "could not record a result");
        }
    }
}

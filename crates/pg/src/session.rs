//! One client connection: startup and authentication, the target connection, then the
//! relay loop that records each statement before forwarding it.
//!
//! This file holds the session's state and the relay loop; each phase has its module:
//! `startup` (everything before the relay), `client` (client messages and how their
//! statements are read), `decide` (admission: the decision, the hold for review, the
//! write-ahead audit) and `results` (masking on the data path and result recording).

mod client;
mod decide;
mod results;
mod startup;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use gatehouse_core::{Actor, Event, EventKind};
use gatehouse_ledger::LedgerError;
use gatehouse_policy::SessionPolicy;
use gatehouse_wire_pg::backend;
use gatehouse_wire_pg::{StartupPacket, split_frame};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};

use crate::admission::Ticket;
use crate::error::PgError;
use crate::lexical::{Lexicon, UnsafeSetting};
use crate::masking::{MaskPolicy, Source};
use crate::prepared::{Names, Prepared};
use crate::recording::Recorder;
use crate::tracker::Tracker;
use crate::upstream::TargetStream;
use crate::{PgResource, send};
use startup::{fatal, read_startup, record_auth_failure, refuse_startup, startup};

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

/// How long a client may take from connecting to finishing authentication.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs one client connection to its end; every failure is answered and logged here.
pub(crate) async fn run(
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
pub(crate) trait ClientStream:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send
{
}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> ClientStream for T {}

/// Where a client connection comes from and whether it is encrypted.
#[derive(Debug, Clone, Copy)]
struct Link {
    peer: SocketAddr,
    tls: bool,
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

fn ledger_refusal(e: &LedgerError) -> String {
    format!("gatehouse: the audit ledger cannot record this, so it was not executed ({e})")
}

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

    fn event(&self, kind: EventKind, data: Value) -> Event {
        self.resource
            .event(kind, Some(&self.actor), Some(&self.id), data)
    }
}

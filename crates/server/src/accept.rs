//! The admin API's accept loop: plain TCP or TLS, a cap on connections, and timeouts on
//! every stage a client could stall — the TLS handshake, the request head, the whole
//! request — so a few idle or slow clients cannot hold the API (the approvers' way in)
//! for everyone else. Shutdown is graceful: listening stops, idle connections close,
//! requests in flight get [`SHUTDOWN_GRACE`] to finish.
//!
//! Only HTTP/1.1 is spoken: its request head has a read timeout of its own (hyper's
//! `header_read_timeout`, which also ends idle keep-alive connections), while HTTP/2's
//! streams would need another set of limits for nothing the API needs.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::peer::Peer;

/// Connections served at once. Each approver or script needs one or two; a listener that
/// takes more than this is being flooded, and the ones past it are closed at once (before a
/// byte is read) so those in service keep working.
pub const MAX_CONNECTIONS: usize = 256;
/// From accepting a connection to a finished TLS handshake. A handshake is a few round
/// trips; ten seconds allows for a slow network, not for a client that sends nothing.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// For a request's head (request line and headers) to arrive, from the moment the
/// connection waits for one — so an idle keep-alive connection is also closed after it.
/// The CLI sends each request in one go; only a stalling client needs longer.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// For a whole request: reading the body and the route's work (a sign-in, a ledger
/// append). The routes take milliseconds; thirty seconds covers a slow OIDC key fetch.
/// A request past it is answered 503 and its work is dropped.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// At shutdown, how long requests in flight may still take before their connections are
/// dropped. The gateway waits ten seconds for the API to stop; this stays below that.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The limits of the accept loop; [`Limits::default`] is the constants above, which
/// [`crate::serve`] uses. Tests shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub tls_handshake: Duration,
    pub header_read: Duration,
    pub request: Duration,
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: MAX_CONNECTIONS,
            tls_handshake: TLS_HANDSHAKE_TIMEOUT,
            header_read: HEADER_READ_TIMEOUT,
            request: REQUEST_TIMEOUT,
            shutdown_grace: SHUTDOWN_GRACE,
        }
    }
}

/// Serves `app` on an already-bound listener until `shutdown` completes: over TLS when
/// `tls` is given, plain HTTP otherwise. Every request carries its connection's [`Peer`].
/// Returns once every connection has ended (or been dropped after the grace period).
pub async fn serve_with(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let acceptor = tls.map(TlsAcceptor::from);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, addr) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, or a connection reset before it was taken:
                // the listener itself is fine. A short pause keeps a full descriptor
                // table from turning this loop into a spin.
                tracing::warn!(error = %e, "admin API: could not accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!(peer = %addr, "admin API: connection cap reached; closing the new one");
            drop(stream);
            continue;
        };
        tokio::spawn(connection(
            stream,
            addr,
            app.clone(),
            acceptor.clone(),
            limits,
            stop_rx.clone(),
            permit,
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a permit until its task ends, so having them all back means
    // every connection is done. Each ends itself within the grace period; the margin
    // only covers the tasks' own wake-up.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let drained = tokio::time::timeout(
        limits.shutdown_grace + Duration::from_secs(1),
        permits.acquire_many(all),
    )
    .await;
    if drained.is_err() {
        tracing::warn!("admin API: some connections had not ended after the grace period");
    }
    Ok(())
}

/// One connection, from the TLS handshake (if any) to its end. `_permit` is its place
/// under the cap, given back when the task ends.
async fn connection(
    stream: TcpStream,
    addr: SocketAddr,
    app: Router,
    acceptor: Option<TlsAcceptor>,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    // Nagle would hold back the last small segment of a response behind a delayed ACK.
    let _ = stream.set_nodelay(true);
    let Some(acceptor) = acceptor else {
        let peer = Peer { addr, tls: false };
        return http1(TokioIo::new(stream), peer, app, limits, stop).await;
    };
    let handshake = tokio::time::timeout(limits.tls_handshake, acceptor.accept(stream));
    let stream = tokio::select! {
        done = handshake => match done {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(peer = %addr, error = %e, "admin API: TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(peer = %addr, "admin API: TLS handshake timed out");
                return;
            }
        },
        _ = stop.wait_for(|s| *s) => return,
    };
    let peer = Peer { addr, tls: true };
    http1(TokioIo::new(stream), peer, app, limits, stop).await;
}

/// Serves HTTP/1.1 requests on `io` until the client leaves, a timeout ends it, or the
/// server stops.
async fn http1<I>(io: I, peer: Peer, app: Router, limits: Limits, mut stop: watch::Receiver<bool>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(peer);
        let app = app.clone();
        async move {
            let response = match tokio::time::timeout(limits.request, app.oneshot(request)).await {
                Ok(Ok(response)) => response,
                Ok(Err(never)) => match never {},
                Err(_) => timed_out(limits.request),
            };
            Ok::<_, Infallible>(response)
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        ended = conn.as_mut() => {
            if let Err(e) = ended {
                tracing::debug!(peer = %peer.addr, error = %e, "admin API: connection ended");
            }
            return;
        }
        _ = stop.wait_for(|s| *s) => {}
    }
    // Stopping: an idle connection closes now, one with a request in flight after its
    // response; past the grace period it is dropped.
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(limits.shutdown_grace, conn).await;
}

/// The answer to a request that ran out of time; the connection is closed after it, as
/// the client may still be sending.
fn timed_out(limit: Duration) -> Response {
    let message = format!(
        "the request did not complete within {}",
        humantime::format_duration(limit)
    );
    let mut response = (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(json!({"error": message})),
    )
        .into_response();
    response.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    response
}

//! Who is on the other end of a request's connection, as the accept loop saw it, and the
//! guard that keeps credentials off plaintext connections from other hosts.
//!
//! HTTP Basic sends the identity's key itself. Over plain HTTP from another host anyone on
//! the path could read it, so such a request is refused before its credentials are looked
//! at: it is not a sign-in attempt, and nothing is recorded. Requests without credentials
//! (health, checkpoint, verifier key, metrics) are served either way.

use std::net::SocketAddr;

use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The connection a request came on; the accept loop puts it in every request's
/// extensions. A request without one (a router used without [`crate::serve`]) is treated
/// as plaintext from an unknown host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub addr: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
}

impl Peer {
    /// Whether credentials may travel on this connection: over TLS, or from this host.
    pub fn may_carry_credentials(&self) -> bool {
        // An IPv4 client of a dual-stack listener shows as ::ffff:a.b.c.d.
        self.tls || self.addr.ip().to_canonical().is_loopback()
    }
}

/// The status of a refused request.
pub const REFUSED: StatusCode = StatusCode::FORBIDDEN;
/// What a refused request is told.
pub const REFUSAL: &str = "credentials are not accepted over plain HTTP from another host: \
the admin API has no TLS certificate ([admin] tls), so anyone on the way could read your key; \
call it from the gateway's own host, or configure [admin] tls and use https://";

/// Middleware: a request carrying an `Authorization` header on a plaintext connection
/// from another host is answered [`REFUSED`] without reaching its route.
pub async fn refuse_plaintext_credentials(request: Request, next: Next) -> Response {
    if request.headers().contains_key(header::AUTHORIZATION) {
        let allowed = request
            .extensions()
            .get::<Peer>()
            .is_some_and(Peer::may_carry_credentials);
        if !allowed {
            return (REFUSED, axum::Json(json!({"error": REFUSAL}))).into_response();
        }
    }
    next.run(request).await
}

//! The gateway's own connection to the target: TLS when configured (always verified),
//! startup with the held credentials and SCRAM-SHA-256 (or MD5 / cleartext for old
//! servers), up to the first ReadyForQuery.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use gatehouse_wire_pg::{backend, split_frame};
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::PgResource;
use crate::error::PgError;

/// The byte stream to the target: plain TCP, or TLS on top of it.
pub(crate) enum TargetStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl TargetStream {
    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, TargetStream::Tls(_))
    }
}

impl AsyncRead for TargetStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TargetStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            TargetStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for TargetStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            TargetStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            TargetStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TargetStream::Plain(s) => Pin::new(s).poll_flush(cx),
            TargetStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TargetStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            TargetStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A target connection that is authenticated and ready for queries.
pub(crate) struct Upstream {
    pub stream: TargetStream,
    pub pid: i32,
    pub secret: i32,
    /// ParameterStatus (and any NoticeResponse) frames to pass on to the client.
    pub greeting: Vec<u8>,
    /// Transaction status of the first ReadyForQuery.
    pub status: u8,
}

/// Connects and authenticates; `params` are client startup parameters worth passing on.
pub(crate) async fn connect(
    resource: &PgResource,
    params: &[(String, String)],
) -> Result<Upstream, PgError> {
    let stream = TcpStream::connect(&resource.target)
        .await
        .map_err(|e| PgError::Target(format!("cannot connect to {}: {e}", resource.target)))?;
    // Small request/response messages: without NODELAY every round trip waits on Nagle.
    stream.set_nodelay(true)?;
    let stream = match &resource.target_tls {
        Some(tls) => TargetStream::Tls(Box::new(start_tls(stream, tls, &resource.target).await?)),
        None => TargetStream::Plain(stream),
    };
    let mut conn = Conn {
        stream,
        buf: Vec::with_capacity(8192),
    };
    let mut startup = vec![
        ("user", resource.user.as_str()),
        ("database", resource.database.as_str()),
    ];
    for (k, v) in params {
        startup.push((k.as_str(), v.as_str()));
    }
    let mut out = BytesMut::new();
    frontend::startup_message(startup, &mut out)?;
    conn.send(&out).await?;

    authenticate(&mut conn, resource).await?;

    let mut greeting = Vec::new();
    let mut key = None;
    loop {
        let frame = conn.read_frame().await?;
        match frame[0] {
            b'K' => {
                if let Ok(backend::Backend::BackendKeyData { pid, secret }) = backend::parse(&frame)
                {
                    key = Some((pid, secret));
                }
            }
            b'Z' => {
                let (pid, secret) = key.unwrap_or((0, 0));
                return Ok(Upstream {
                    stream: conn.stream,
                    pid,
                    secret,
                    greeting,
                    status: frame.get(5).copied().unwrap_or(b'I'),
                });
            }
            b'E' => return Err(target_error(&frame)),
            _ => greeting.extend_from_slice(&frame),
        }
    }
}

/// Sends a CancelRequest for a target backend.
pub(crate) async fn cancel(target: &str, pid: i32, secret: i32) -> Result<(), PgError> {
    let mut stream = TcpStream::connect(target)
        .await
        .map_err(|e| PgError::Target(format!("cannot connect to {target}: {e}")))?;
    let mut out = BytesMut::new();
    frontend::cancel_request(pid, secret, &mut out);
    stream.write_all(&out).await?;
    Ok(())
}

async fn authenticate(conn: &mut Conn, resource: &PgResource) -> Result<(), PgError> {
    let password = resource.password.expose().as_bytes();
    let mut scram: Option<sasl::ScramSha256> = None;
    loop {
        let frame = conn.read_frame().await?;
        if frame[0] == b'E' {
            return Err(target_error(&frame));
        }
        if frame[0] != b'R' || frame.len() < 9 {
            return Err(PgError::Target(format!(
                "unexpected message {:?} during authentication",
                frame[0] as char
            )));
        }
        let code = i32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]);
        let data = &frame[9..];
        let mut out = BytesMut::new();
        match code {
            0 => return Ok(()),
            3 => frontend::password_message(password, &mut out)?,
            5 => {
                let salt: [u8; 4] = data
                    .get(..4)
                    .and_then(|s| s.try_into().ok())
                    .ok_or_else(|| PgError::Target("short MD5 salt".into()))?;
                let hash = md5_hash(resource.user.as_bytes(), password, salt);
                frontend::password_message(hash.as_bytes(), &mut out)?;
            }
            10 => {
                let offers_scram = data
                    .split(|&b| b == 0)
                    .any(|m| m == sasl::SCRAM_SHA_256.as_bytes());
                if !offers_scram {
                    return Err(PgError::Target(
                        "the target offers no SASL mechanism the gateway supports (SCRAM-SHA-256)"
                            .into(),
                    ));
                }
                let state = sasl::ScramSha256::new(password, sasl::ChannelBinding::unsupported());
                frontend::sasl_initial_response(sasl::SCRAM_SHA_256, state.message(), &mut out)?;
                scram = Some(state);
            }
            11 => {
                let state = scram
                    .as_mut()
                    .ok_or_else(|| PgError::Target("SASL continue without a start".into()))?;
                state
                    .update(data)
                    .map_err(|e| PgError::Target(format!("SCRAM: {e}")))?;
                frontend::sasl_response(state.message(), &mut out)?;
            }
            12 => {
                let state = scram
                    .as_mut()
                    .ok_or_else(|| PgError::Target("SASL final without a start".into()))?;
                state
                    .finish(data)
                    .map_err(|e| PgError::Target(format!("SCRAM server signature: {e}")))?;
                continue;
            }
            other => {
                return Err(PgError::Target(format!(
                    "unsupported authentication method {other} requested by the target"
                )));
            }
        }
        conn.send(&out).await?;
    }
}

/// SSLRequest, then a TLS handshake that verifies the target's certificate against the
/// configured authorities and name. A target that declines TLS is an error, never a
/// silent fall-back to plaintext.
async fn start_tls(
    mut stream: TcpStream,
    tls: &crate::TargetTls,
    target: &str,
) -> Result<TlsStream<TcpStream>, PgError> {
    let mut out = BytesMut::new();
    frontend::ssl_request(&mut out);
    stream.write_all(&out).await?;
    // Exactly one byte: anything the server sent after it must be part of the handshake,
    // so bytes injected before TLS starts cannot be taken as the server's.
    let mut answer = [0u8; 1];
    stream.read_exact(&mut answer).await.map_err(|e| {
        PgError::Target(format!(
            "{target} closed the connection at the TLS request: {e}"
        ))
    })?;
    match answer[0] {
        b'S' => {}
        b'N' => {
            return Err(PgError::Target(format!(
                "{target} does not accept TLS, and target_tls is configured (is ssl = on?)"
            )));
        }
        other => {
            return Err(PgError::Target(format!(
                "{target} answered the TLS request with {:?}, not S or N",
                other as char
            )));
        }
    }
    tokio_rustls::TlsConnector::from(tls.config.clone())
        .connect(tls.server_name.clone(), stream)
        .await
        .map_err(|e| PgError::Target(format!("TLS with {target}: {e}")))
}

fn target_error(frame: &[u8]) -> PgError {
    match backend::error_fields(&frame[5..]) {
        Ok((code, message)) => PgError::Target(format!("{message} (SQLSTATE {code})")),
        Err(_) => PgError::Target("malformed error from the target".into()),
    }
}

struct Conn {
    stream: TargetStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn send(&mut self, bytes: &[u8]) -> Result<(), PgError> {
        Ok(crate::send(&mut self.stream, bytes).await?)
    }

    async fn read_frame(&mut self) -> Result<Vec<u8>, PgError> {
        loop {
            if let Some(len) =
                split_frame(&self.buf).map_err(|e| PgError::Target(format!("protocol: {e}")))?
            {
                let frame = self.buf[..len].to_vec();
                self.buf.drain(..len);
                return Ok(frame);
            }
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(PgError::Target(
                    "closed the connection during startup".into(),
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

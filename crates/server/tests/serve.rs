//! The accept loop on real loopback sockets: TLS with a certificate the client verifies,
//! clients that stall at each stage cut off, the connection cap, the request timeout, a
//! graceful stop, and credentials refused from another address over plain HTTP.
#![allow(clippy::unwrap_used)] // a test (or bench) that cannot go on fails by panicking

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use common::*;
use gatehouse_server::{Limits, router, serve_with};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A test certificate authority: its certificate (PEM) and what signs with it.
fn authority(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(params, key))
}

/// The admin API's certificate for localhost and 127.0.0.1, signed by `ca`, written as
/// PEM files into `dir`: (certificate, key).
fn server_files(
    dir: &std::path::Path,
    ca: &Issuer<'static, KeyPair>,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    let (cert_path, key_path) = (dir.join("admin.crt"), dir.join("admin.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(
        bind: &str,
        app: Router,
        tls: Option<Arc<rustls::ServerConfig>>,
        limits: Limits,
    ) -> Server {
        let listener = TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_with(listener, app, tls, limits, async move {
            let _ = stopped.await;
        }));
        Server {
            addr,
            stop: Some(stop),
            task,
        }
    }

    /// Stops it and waits for the accept loop to return.
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Reads until the server closes the connection (or resets it); `None` if it is still
/// open after `within`. Returns what was read.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(seen),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// `GET path` over a fresh connection, by hand: the status line's code, or `None` if the
/// connection was closed without an answer.
async fn raw_get(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let head = format!("GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.ok()?;
    let answer = closed_within(&mut stream, Duration::from_secs(5)).await?;
    let text = String::from_utf8_lossy(&answer);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_served_with_the_configured_certificate_and_the_client_verifies_it() {
    let gw = Gateway::start();
    let (ca_pem, ca) = authority("gatehouse test CA");
    let (cert, private) = server_files(gw.dir.path(), &ca);
    let tls = gatehouse_server::tls::server_config(&cert, &private).unwrap();
    let server = Server::start(
        "127.0.0.1:0",
        router(gw.state.clone()),
        Some(tls),
        Limits::default(),
    )
    .await;
    let base = format!("https://127.0.0.1:{}", server.addr.port());

    let trusting = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
        .build()
        .unwrap();
    let health = trusting
        .get(format!("{base}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let reviews = trusting
        .get(format!("{base}/api/reviews"))
        .basic_auth("bob", Some(key("bob")))
        .send()
        .await
        .unwrap();
    assert_eq!(reviews.status(), 200, "signed in over TLS");

    // A client that trusts another authority, or only the system's, refuses the server.
    let (other_pem, _) = authority("another CA");
    let other = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([reqwest::Certificate::from_pem(other_pem.as_bytes()).unwrap()])
        .build()
        .unwrap();
    for refusing in [other, client()] {
        let err = refusing
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap_err();
        let chain = format!("{err:?}");
        assert!(
            chain.contains("UnknownIssuer") || chain.contains("certificate"),
            "{chain}"
        );
    }
    // Plain HTTP on the TLS port gets no answer.
    assert_eq!(raw_get(server.addr, "/healthz").await, None);

    server.stop().await;
    gw.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_stall_are_cut_off() {
    let gw = Gateway::start();
    let limits = Limits {
        tls_handshake: Duration::from_millis(300),
        header_read: Duration::from_millis(300),
        ..Limits::default()
    };
    let plain = Server::start("127.0.0.1:0", router(gw.state.clone()), None, limits).await;

    // Connects and sends nothing.
    let started = Instant::now();
    let mut silent = TcpStream::connect(plain.addr).await.unwrap();
    assert!(
        closed_within(&mut silent, Duration::from_secs(5))
            .await
            .is_some(),
        "a silent client is closed"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "by the timeout, not at once"
    );

    // Sends half a request head and stops.
    let mut half = TcpStream::connect(plain.addr).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nhost: test\r\n")
        .await
        .unwrap();
    let said = closed_within(&mut half, Duration::from_secs(5))
        .await
        .expect("a half-sent head is cut off");
    assert!(!said.starts_with(b"HTTP/1.1 200"));

    // Keeps a connection open after its answer.
    let mut idle = TcpStream::connect(plain.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    let said = closed_within(&mut idle, Duration::from_secs(5))
        .await
        .expect("an idle keep-alive connection is closed");
    assert!(said.starts_with(b"HTTP/1.1 200"), "answered first");

    // A client that does its part is served meanwhile.
    assert_eq!(raw_get(plain.addr, "/healthz").await, Some(200));
    plain.stop().await;

    // Over TLS: a client that never starts the handshake.
    let (_, ca) = authority("gatehouse test CA");
    let (cert, private) = server_files(gw.dir.path(), &ca);
    let tls = gatehouse_server::tls::server_config(&cert, &private).unwrap();
    let secure = Server::start("127.0.0.1:0", router(gw.state.clone()), Some(tls), limits).await;
    let mut silent = TcpStream::connect(secure.addr).await.unwrap();
    assert!(
        closed_within(&mut silent, Duration::from_secs(5))
            .await
            .is_some(),
        "a client that never says hello is closed"
    );
    secure.stop().await;
    gw.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_past_the_cap_is_closed_at_once() {
    let gw = Gateway::start();
    let limits = Limits {
        max_connections: 2,
        header_read: Duration::from_secs(30),
        ..Limits::default()
    };
    let server = Server::start("127.0.0.1:0", router(gw.state.clone()), None, limits).await;
    let first = TcpStream::connect(server.addr).await.unwrap();
    let mut second = TcpStream::connect(server.addr).await.unwrap();
    // The second is in service (so both have their places): it answers.
    second
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 12];
    second.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200");

    let mut third = TcpStream::connect(server.addr).await.unwrap();
    let said = closed_within(&mut third, Duration::from_secs(5))
        .await
        .expect("the third connection is closed long before any timeout");
    assert!(said.is_empty(), "without an answer");

    // A place freed is a place taken again.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    while raw_get(server.addr, "/healthz").await != Some(200) {
        assert!(Instant::now() < deadline, "the freed place was not reused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(second);
    server.stop().await;
    gw.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_time_is_answered_503() {
    let app = Router::new()
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "too late"
            }),
        )
        .route("/quick", get(|| async { "ok" }));
    let limits = Limits {
        request: Duration::from_millis(300),
        ..Limits::default()
    };
    let server = Server::start("127.0.0.1:0", app, None, limits).await;
    let base = format!("http://{}", server.addr);
    let started = Instant::now();
    let answer = client().get(format!("{base}/slow")).send().await.unwrap();
    assert_eq!(answer.status(), 503);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(answer.headers()["connection"], "close");
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(
        body["error"], "the request did not complete within 300ms",
        "{body}"
    );
    let quick = client().get(format!("{base}/quick")).send().await.unwrap();
    assert_eq!(quick.text().await.unwrap(), "ok");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_lets_requests_in_flight_finish_and_closes_idle_connections() {
    let entered = Arc::new(tokio::sync::Notify::new());
    let seen = entered.clone();
    let app = Router::new().route(
        "/slow",
        get(move || {
            let seen = seen.clone();
            async move {
                seen.notify_one();
                tokio::time::sleep(Duration::from_millis(300)).await;
                "done"
            }
        }),
    );
    let limits = Limits {
        header_read: Duration::from_secs(30),
        shutdown_grace: Duration::from_secs(20),
        ..Limits::default()
    };
    let server = Server::start("127.0.0.1:0", app, None, limits).await;
    let addr = server.addr;
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let in_flight = tokio::spawn(async move {
        let answer = client()
            .get(format!("http://{addr}/slow"))
            .send()
            .await
            .unwrap();
        (answer.status(), answer.text().await.unwrap())
    });
    entered.notified().await;

    let started = Instant::now();
    server.stop().await;
    // Well within the grace period: the idle connection was closed, not waited for.
    assert!(started.elapsed() < Duration::from_secs(10));
    let (status, text) = in_flight.await.unwrap();
    assert_eq!((status.as_u16(), text.as_str()), (200, "done"));
    assert!(
        closed_within(&mut idle, Duration::from_secs(1))
            .await
            .is_some()
    );
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
}

/// This host's address on its network (not loopback), if it has one: what another host
/// would connect from, as far as the server can tell.
fn network_address() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    // A UDP connect sends nothing; it picks the outgoing interface.
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_plain_http_credentials_count_from_this_host_only() {
    let gw = Gateway::start();
    let server = Server::start(
        "0.0.0.0:0",
        router(gw.state.clone()),
        None,
        Limits::default(),
    )
    .await;
    let port = server.addr.port();
    let local = client()
        .get(format!("http://127.0.0.1:{port}/api/reviews"))
        .basic_auth("bob", Some(key("bob")))
        .send()
        .await
        .unwrap();
    assert_eq!(local.status(), 200, "from loopback");
    if let Some(ip) = network_address() {
        let before = gw.entries();
        let url = format!("http://{}/api/reviews", SocketAddr::new(ip, port));
        let refused = client()
            .get(&url)
            .basic_auth("bob", Some("a wrong key"))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 403, "from {ip}");
        let body: serde_json::Value = refused.json().await.unwrap();
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("configure [admin] tls"),
            "{body}"
        );
        assert_eq!(gw.entries(), before, "not a sign-in attempt");
        let health = client()
            .get(format!("http://{}/healthz", SocketAddr::new(ip, port)))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), 200, "no credentials, no refusal");
    } else {
        eprintln!("no network address on this host: only loopback was tried");
    }
    server.stop().await;
    gw.close().await;
}

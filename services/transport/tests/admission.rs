//! Admission over real loopback QUIC: a source past its connection cap is refused while
//! another source still gets in, a closed connection frees its
//! place, and under a handshake flood every client must answer a Retry and still connects.

#![allow(missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::{ConnectionError, TransportErrorCode};
use tokio_util::sync::CancellationToken;
use transport::admit::{Admission, Limits};
use transport::quic::{self, Windows};

/// A server running the accept loop under `limits`, whose connections stay open until the
/// client closes them. Stops (and removes its files) when dropped.
struct Server {
    addr: SocketAddr,
    admission: Arc<Admission>,
    ca: std::path::PathBuf,
    dir: std::path::PathBuf,
    shutdown: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn server(limits: Limits) -> Server {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "ghost-admission-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let pki = identity::Pki::new(&dir.join("tls"), &dir.join("ca"));
    pki.ensure(std::time::SystemTime::now())
        .expect("certificates");
    let files = pki.files(identity::Role::Ingest);
    let identity = files.server_identity().expect("identity");
    let endpoint = quic::server(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        &identity,
        &[quic::ALPN_PUBLISH],
        Windows::RECEIVER,
    )
    .expect("server");
    let addr = endpoint.local_addr().expect("address");
    let admission = Admission::new(limits);
    let shutdown = CancellationToken::new();
    tokio::spawn(quic::accept_loop(
        endpoint,
        admission.clone(),
        shutdown.clone(),
        |conn| async move {
            conn.closed().await;
        },
    ));
    Server {
        addr,
        admission,
        ca: files.ca.clone(),
        dir,
        shutdown,
    }
}

/// A client endpoint bound on `ip`, trusting the test's CA.
fn client_on(ca: &std::path::Path, ip: [u8; 4]) -> quinn::Endpoint {
    let crypto = identity::client_config(ca, quic::ALPN_PUBLISH).expect("client TLS");
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(crypto).expect("QUIC TLS");
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(quic::transport(Windows::PUBLISHER)));
    let mut endpoint = quinn::Endpoint::client(SocketAddr::from((ip, 0))).expect("client");
    endpoint.set_default_client_config(config);
    endpoint
}

async fn connect(
    client: &quinn::Endpoint,
    to: SocketAddr,
) -> Result<quinn::Connection, ConnectionError> {
    let connecting = client.connect(to, identity::INGEST_NAME).expect("connect");
    tokio::time::timeout(Duration::from_secs(10), connecting)
        .await
        .expect("the handshake ends within 10 s")
}

fn limits(per_source: u32, retry_above: u32) -> Limits {
    Limits {
        per_source,
        retry_above,
        limit_loopback: true,
        ..Limits::default()
    }
}

#[tokio::test]
async fn a_source_past_its_cap_is_refused_and_another_is_not() {
    let server = server(limits(3, 64));
    let one = client_on(&server.ca, [127, 0, 0, 1]);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect(&one, server.addr).await.expect("within the cap"));
    }
    let refused = connect(&one, server.addr)
        .await
        .expect_err("the fourth connection is refused");
    match &refused {
        ConnectionError::ConnectionClosed(close) => {
            assert_eq!(close.error_code, TransportErrorCode::CONNECTION_REFUSED);
        }
        other => panic!("expected CONNECTION_REFUSED, got {other}"),
    }
    assert_eq!(server.admission.metrics().refused.get(), 1);

    let other = client_on(&server.ca, [127, 0, 0, 2]);
    let _theirs = connect(&other, server.addr)
        .await
        .expect("another source is not affected");

    let closed = held.pop().expect("a connection");
    closed.close(0u32.into(), b"done");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match connect(&one, server.addr).await {
            Ok(_again) => break,
            Err(error) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "a closed connection freed no place within 5 s: {error}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    println!(
        "admission: 3 connections from 127.0.0.1 held, the 4th refused, \
         127.0.0.2 admitted, a place freed on close"
    );
}

#[tokio::test]
async fn under_a_handshake_flood_clients_answer_a_retry_and_connect() {
    let server = server(limits(1_000, 4));
    let clients: Vec<_> = (0..4)
        .map(|_| client_on(&server.ca, [127, 0, 0, 1]))
        .collect();
    let attempts = 80;
    let mut handshakes = tokio::task::JoinSet::new();
    for i in 0..attempts {
        let client = clients[i % clients.len()].clone();
        let to = server.addr;
        handshakes.spawn(async move { connect(&client, to).await });
    }
    let mut connected = Vec::new();
    while let Some(result) = handshakes.join_next().await {
        connected.push(
            result
                .expect("task")
                .expect("a client that answers the Retry connects"),
        );
    }
    let retries = server.admission.metrics().retries.get();
    println!(
        "admission: {attempts} handshakes at once, {retries} asked for a Retry, all connected"
    );
    assert_eq!(connected.len(), attempts);
    assert!(
        retries > 0,
        "80 handshakes at once with a threshold of 4 sent no Retry"
    );
    // The server ends its side of a handshake one flight after the client does.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while server.admission.metrics().handshakes.get() != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} handshakes still counted as in flight 5 s after all clients connected",
            server.admission.metrics().handshakes.get()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn loopback_is_exempt_by_default() {
    let server = server(Limits {
        per_source: 1,
        retry_above: 0,
        ..Limits::default()
    });
    let client = client_on(&server.ca, [127, 0, 0, 1]);
    let _a = connect(&client, server.addr).await.expect("first");
    let _b = connect(&client, server.addr)
        .await
        .expect("loopback is not limited");
    assert_eq!(server.admission.metrics().retries.get(), 0);
    assert_eq!(server.admission.metrics().refused.get(), 0);
}

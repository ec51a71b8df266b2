//! The gateway at a public name, in-process on 127.0.0.1:0: HTTPS (HTTP/2 and HTTP/1.1 by
//! ALPN) with a certificate from files, the plain port answering ACME challenges from a
//! directory, and a stranger's tricks on the HTTPS port (no handshake, garbage) cut without
//! harm to anyone else.

#![allow(missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

struct Gateway {
    http: SocketAddr,
    https: SocketAddr,
    ca: rustls::pki_types::CertificateDer<'static>,
    dir: tempfile::TempDir,
    shutdown: CancellationToken,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start() -> Gateway {
    use rustls::pki_types::pem::PemObject;
    let dir = tempfile::tempdir().expect("temp dir");
    let made = identity::generate().expect("certificate");
    let files = identity::Files::in_dir(dir.path());
    std::fs::write(&files.https_cert, &made.cert).expect("cert");
    std::fs::write(&files.https_key, &made.key).expect("key");
    let challenges = dir.path().join("challenges");
    std::fs::create_dir(&challenges).expect("challenges");
    let certificate = gateway::https::certificate(dir.path()).expect("load");
    let tls = identity::https_server_config(certificate).expect("config");
    let http = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let https = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let (http_addr, https_addr) = (
        http.local_addr().expect("addr"),
        https.local_addr().expect("addr"),
    );
    let limits = gateway::Limits {
        header_read_timeout: Duration::from_secs(1).into(),
        ..Default::default()
    };
    let public = gateway::Public {
        https: Some((https, Arc::new(tls))),
        https_url: Some(format!("https://relay.ghost:{}", https_addr.port())),
        acme_challenges: Some(challenges),
    };
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        // Control is nowhere: these tests never need it.
        let _ =
            gateway::serve_public(http, public, "http://127.0.0.1:1", None, &limits, stop).await;
    });
    Gateway {
        http: http_addr,
        https: https_addr,
        ca: rustls::pki_types::CertificateDer::from_pem_slice(made.ca.as_bytes()).expect("ca"),
        dir,
        shutdown,
    }
}

/// GET `path` over HTTPS offering `alpn`: the protocol agreed and the response's head.
async fn get(gateway: &Gateway, alpn: &[u8], path: &str) -> (Vec<u8>, String) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(gateway.ca.clone()).expect("root");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(gateway.https)
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from("relay.ghost").expect("name");
    let mut tls = connector.connect(name, tcp).await.expect("handshake");
    let agreed = tls.get_ref().1.alpn_protocol().unwrap_or_default().to_vec();
    if agreed == b"h2" {
        // The HTTP/2 preface and an empty SETTINGS frame: the server answers with its own
        // SETTINGS, which is all this needs to see.
        tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            .await
            .expect("preface");
        let mut frame = [0u8; 9];
        tls.read_exact(&mut frame).await.expect("settings");
        assert_eq!(frame[3], 4, "the server's first frame is SETTINGS");
        return (agreed, String::new());
    }
    let request = format!("GET {path} HTTP/1.1\r\nHost: relay.ghost\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.expect("send");
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    (agreed, String::from_utf8_lossy(&response).into_owned())
}

#[tokio::test]
async fn https_speaks_http2_and_http1_with_hsts() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let gateway = start().await;
        let (agreed, _) = get(&gateway, b"h2", "/health").await;
        assert_eq!(agreed, b"h2");
        let (agreed, response) = get(&gateway, b"http/1.1", "/health").await;
        assert_eq!(agreed, b"http/1.1");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(
            response
                .to_lowercase()
                .contains("strict-transport-security: max-age=31536000"),
            "{response}"
        );
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn the_plain_port_answers_challenges_from_their_files_only() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let gateway = start().await;
        let token = "Zm9vYmFyLXRva2VuLTEyMw";
        std::fs::write(
            gateway.dir.path().join("challenges").join(token),
            "answer.thumb",
        )
        .expect("challenge");
        std::fs::write(gateway.dir.path().join("secret"), "not for strangers").expect("file");
        let base = format!("http://{}/.well-known/acme-challenge", gateway.http);
        let answer = reqwest::get(format!("{base}/{token}")).await.expect("get");
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.text().await.expect("body"), "answer.thumb");
        for bad in ["unknown", "..%2Fsecret", "%2E%2E", "a.b"] {
            let r = reqwest::get(format!("{base}/{bad}")).await.expect("get");
            assert_eq!(r.status(), 404, "{bad}");
        }
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn a_stranger_on_the_https_port_is_cut_and_harms_nobody() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let gateway = start().await;
        // No handshake at all: cut after the header-read timeout (1 s here).
        let mut silent = tokio::net::TcpStream::connect(gateway.https)
            .await
            .expect("connect");
        let started = Instant::now();
        // Garbage instead of a ClientHello: closed at once.
        let mut garbage = tokio::net::TcpStream::connect(gateway.https)
            .await
            .expect("connect");
        garbage
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 256];
        let read = tokio::time::timeout(Duration::from_secs(5), garbage.read(&mut buf))
            .await
            .expect("garbage answered in time");
        assert!(matches!(read, Ok(_) | Err(_)), "closed");
        // Someone else is served meanwhile.
        let (_, response) = get(&gateway, b"http/1.1", "/health").await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        let closed = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf))
            .await
            .expect("the silent client was cut");
        let cut = started.elapsed();
        println!(
            "https: a client that never handshakes was cut after {:.2} s",
            cut.as_secs_f64()
        );
        assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
        assert!(cut >= Duration::from_millis(900), "cut too early: {cut:?}");
    })
    .await
    .expect("test timed out");
}

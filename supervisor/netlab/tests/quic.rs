//! A QUIC endpoint built on a socket from the lab connects to a server on the host's
//! 127.0.0.1 and sees the lab's round-trip time, as a benchmark viewer would.

mod common;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::rustls::RootCertStore;
use quinn::rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use tokio::time::timeout;

#[tokio::test]
async fn quic_across_the_lab_sees_the_rtt() {
    let Some(lab) = common::lab("rtt=60ms") else {
        return;
    };
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()])
        .expect("a self-signed certificate");
    let cert = CertificateDer::from(certified.cert.der().to_vec());
    let key = PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
    let server_config = quinn::ServerConfig::with_single_cert(vec![cert.clone()], key.into())
        .expect("server config");
    let server = quinn::Endpoint::server(server_config, (Ipv4Addr::LOCALHOST, 0).into())
        .expect("a QUIC server on the host");
    let server_addr = server.local_addr().expect("server address");
    tokio::spawn(async move {
        let Some(incoming) = server.accept().await else {
            return;
        };
        let Ok(connection) = incoming.await else {
            return;
        };
        while let Ok((mut send, mut recv)) = connection.accept_bi().await {
            let Ok(request) = recv.read_to_end(64).await else {
                return;
            };
            let _ = send.write_all(&request).await;
            let _ = send.finish();
        }
    });

    let socket = lab
        .udp_socket((Ipv4Addr::UNSPECIFIED, 0).into())
        .expect("a socket in the lab");
    let mut client = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .expect("a QUIC endpoint on the lab's socket");
    let mut roots = RootCertStore::empty();
    roots.add(cert).expect("trust the server");
    client.set_default_client_config(
        quinn::ClientConfig::with_root_certificates(Arc::new(roots)).expect("client config"),
    );

    let exchange = async {
        let connection = client
            .connect(server_addr, "localhost")
            .expect("start connecting")
            .await
            .expect("connect across the lab");
        // A request on a new stream and its answer: one round trip each.
        let mut trips = Vec::new();
        for _ in 0..7 {
            let started = Instant::now();
            let (mut send, mut recv) = connection.open_bi().await.expect("a stream");
            send.write_all(b"ping").await.expect("write");
            send.finish().expect("finish");
            assert_eq!(recv.read_to_end(64).await.expect("read"), b"ping");
            trips.push(started.elapsed());
        }
        let estimate = connection.rtt();
        connection.close(0u32.into(), b"done");
        // The fastest exchange: a debug build's cryptography and a busy machine only ever
        // add to the path's time, so the minimum is what the path itself takes.
        let fastest = trips.into_iter().min().expect("seven exchanges");
        (fastest, estimate)
    };
    let (measured, estimate) = timeout(Duration::from_secs(10), exchange)
        .await
        .expect("QUIC exchange in time");
    client.wait_idle().await;
    eprintln!(
        "fastest QUIC request and answer: {measured:?}; quinn's RTT estimate {estimate:?} (configured 60ms)"
    );
    let error = measured.as_secs_f64() / 0.060 - 1.0;
    assert!(error.abs() <= 0.10, "QUIC round trip {measured:?}");
}

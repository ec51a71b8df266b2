//! A media sender asks its receiver for fewer acknowledgements (QUIC's ACK-frequency
//! extension), over a real loopback connection; a receiver asks nothing of a sender.

#![allow(missing_docs)]

use std::time::Duration;

use bytes::Bytes;
use transport::quic::{self, Windows};
use transport::tls;

/// What the client saw after `server_windows`'s side sent it 40 frames of 8,000 bytes on
/// one stream, a frame every 10 ms.
async fn client_stats(server_windows: Windows) -> quinn::ConnectionStats {
    let dir = std::env::temp_dir().join(format!(
        "ghost-acks-test-{}-{}",
        std::process::id(),
        server_windows.uni_streams
    ));
    let pki = tls::Pki::new(&dir.join("tls"), &dir.join("ca"));
    let made = pki.ensure(std::time::SystemTime::now());
    let files = pki.files(tls::Role::Relay);
    let ca = std::fs::read(&files.ca);
    let identity = tls::Identity::load(&files.relay_cert, &files.relay_key);
    let _ = std::fs::remove_dir_all(&dir);
    made.expect("certificates");
    let identity = identity.expect("identity");
    let ca_file = std::env::temp_dir().join(format!(
        "ghost-acks-test-ca-{}-{}.pem",
        std::process::id(),
        server_windows.uni_streams
    ));
    std::fs::write(&ca_file, ca.expect("CA certificate")).expect("writing the CA");
    let localhost = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let server =
        quic::server(localhost, &identity, &[quic::ALPN_VIEW], server_windows).expect("server");
    let client = quic::client(&ca_file, quic::ALPN_VIEW, Windows::RECEIVER);
    let _ = std::fs::remove_file(&ca_file);
    let client = client.expect("client");
    let addr = server.local_addr().expect("address");

    let send = async {
        let conn = server
            .accept()
            .await
            .expect("incoming")
            .await
            .expect("handshake");
        let mut stream = conn.open_uni().await.expect("stream");
        let frame = Bytes::from(vec![7u8; 8_000]);
        for _ in 0..40 {
            stream.write_chunk(frame.clone()).await.expect("write");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stream.finish().expect("finish");
        // Keep the connection until the client has read everything and closed.
        conn.closed().await;
    };
    let receive = async {
        let conn = client
            .connect(addr, tls::RELAY_NAME)
            .expect("connect")
            .await
            .expect("handshake");
        let mut stream = conn.accept_uni().await.expect("stream");
        let bytes = stream.read_to_end(1 << 20).await.expect("read");
        assert_eq!(bytes.len(), 40 * 8_000);
        let stats = conn.stats();
        conn.close(0u32.into(), b"done");
        stats
    };
    let ((), stats) = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(send, receive)
    })
    .await
    .expect("the transfer finishes in time");
    client.wait_idle().await;
    stats
}

#[tokio::test]
async fn a_media_sender_asks_its_receiver_to_acknowledge_less_often() {
    let asked = client_stats(Windows::SENDER).await;
    assert!(
        asked.frame_rx.ack_frequency >= 1,
        "the sender's ACK_FREQUENCY frame reached the receiver: {:?}",
        asked.frame_rx
    );
    let unasked = client_stats(Windows::RECEIVER).await;
    assert_eq!(
        unasked.frame_rx.ack_frequency, 0,
        "a receiver's windows ask nothing of the other side"
    );
    // Six packets a frame: at QUIC's default the receiver acknowledges every frame at once,
    // asked for one per ten packets it acknowledges about every second frame.
    assert!(
        asked.frame_tx.acks < unasked.frame_tx.acks,
        "asked to acknowledge less: {} acknowledgements against {} for the same {} packets",
        asked.frame_tx.acks,
        unasked.frame_tx.acks,
        asked.udp_rx.datagrams
    );
}

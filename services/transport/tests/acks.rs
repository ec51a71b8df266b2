//! A media sender asks its receiver for fewer acknowledgements (QUIC's ACK-frequency
//! extension), over a real loopback connection; a receiver asks nothing of a sender.

#![allow(missing_docs)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use transport::quic::{self, Windows};

use common::{Endpoints, Server};

/// What the client saw after `server_windows`'s side sent it 40 frames of 8,000 bytes on
/// one stream, a frame every 10 ms.
async fn client_stats(server_windows: Windows) -> quinn::ConnectionStats {
    let endpoints = Endpoints::new(
        Server::Relay,
        quic::ALPN_VIEW,
        server_windows,
        Windows::RECEIVER,
    );
    let (sender, receiver) = endpoints.connect().await;
    let send = async {
        let mut stream = sender.open_uni().await.expect("stream");
        let frame = Bytes::from(vec![7u8; 8_000]);
        for _ in 0..40 {
            stream.write_chunk(frame.clone()).await.expect("write");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stream.finish().expect("finish");
        // Keep the connection until the client has read everything and closed.
        sender.closed().await;
    };
    let receive = async {
        let mut stream = receiver.accept_uni().await.expect("stream");
        let bytes = stream.read_to_end(1 << 20).await.expect("read");
        assert_eq!(bytes.len(), 40 * 8_000);
        let stats = receiver.stats();
        receiver.close(0u32.into(), b"done");
        stats
    };
    let ((), stats) = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(send, receive)
    })
    .await
    .expect("the transfer finishes in time");
    endpoints.client.wait_idle().await;
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

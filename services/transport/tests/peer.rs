//! WebTransport speaks our codes: over a real loopback session, a stream reset or stopped
//! with `group_skipped` and a session closed with a `Code` read exactly as over native QUIC,
//! although on the wire they travel in the HTTP/3 error space (and the close in a capsule).

#![allow(missing_docs)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use quinn::{ReadError, VarInt, WriteError};
use transport::peer::{self, Peer, RecvStream, SendStream};
use transport::quic::{self, Closed, Windows};
use wire::{Code, Reset};

use common::{Endpoints, Server};

/// A WebTransport session on 127.0.0.1, both ends, with the endpoints that drive them.
async fn pair() -> (
    web_transport_quinn::Session,
    web_transport_quinn::Session,
    Endpoints,
) {
    let endpoints = Endpoints::new(
        Server::Relay,
        quic::ALPN_H3,
        Windows::SENDER,
        Windows::RECEIVER,
    );
    let (server, client) = endpoints.connect().await;
    let url = url::Url::parse(&format!("https://{}/", endpoints.addr)).expect("url");
    let (server_session, client_session) = tokio::join!(
        peer::accept_webtransport(server),
        web_transport_quinn::Session::connect(client, url)
    );
    (
        server_session.expect("session"),
        client_session.expect("session"),
        endpoints,
    )
}

#[tokio::test]
async fn webtransport_carries_our_stream_and_close_codes() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let (relay, viewer, _endpoints) = pair().await;
        let skipped = u32::from(Reset::GroupSkipped);

        // The relay skips a group: the viewer reads the reset as `group_skipped`.
        let mut group = Peer::open_uni(&relay).await.expect("open");
        SendStream::write_chunk(&mut group, Bytes::from_static(b"group"))
            .await
            .expect("write");
        let mut recv = Peer::accept_uni(&viewer).await.expect("accept");
        let chunk = RecvStream::read_chunk(&mut recv, 64).await.expect("read");
        assert_eq!(chunk.as_deref(), Some(&b"group"[..]));
        SendStream::reset(&mut group, skipped);
        assert_eq!(
            RecvStream::read_chunk(&mut recv, 64).await,
            Err(ReadError::Reset(VarInt::from_u32(skipped)))
        );

        // The viewer moves on from a group: the relay reads the stop as `group_skipped`.
        let mut group = Peer::open_uni(&relay).await.expect("open");
        SendStream::write_chunk(&mut group, Bytes::from_static(b"older"))
            .await
            .expect("write");
        let mut recv = Peer::accept_uni(&viewer).await.expect("accept");
        RecvStream::stop(&mut recv, skipped);
        // Writes succeed until the stop arrives (or the viewer's window fills and the write
        // waits for it).
        let stopped = async {
            loop {
                if let Err(e) =
                    SendStream::write_chunk(&mut group, Bytes::from_static(b"more")).await
                {
                    return e;
                }
            }
        };
        assert_eq!(
            stopped.await,
            WriteError::Stopped(VarInt::from_u32(skipped))
        );

        // The relay closes the session: the viewer reads our code, not HTTP/3's.
        quic::close(&relay, Code::Capacity, "relay at capacity");
        let closed = Closed::from(&Peer::closed(&viewer).await);
        assert_eq!(
            closed,
            Closed::ByPeer {
                code: Code::Capacity,
                reason: "relay at capacity".into()
            }
        );
        assert_eq!(
            Peer::close_reason(&viewer).map(|e| Closed::from(&e)),
            Some(closed)
        );
    })
    .await
    .expect("test timed out");
}

//! WebTransport speaks our codes: over a real loopback session, a stream reset or stopped
//! with `group_skipped` and a session closed with a `Code` read exactly as over native QUIC,
//! although on the wire they travel in the HTTP/3 error space (and the close in a capsule).

#![allow(missing_docs)]

use std::time::Duration;

use bytes::Bytes;
use quinn::{ReadError, VarInt, WriteError};
use transport::peer::{self, Peer, RecvStream, SendStream};
use transport::quic::{self, Closed, Windows};
use transport::tls;
use wire::{Code, Reset};

/// A WebTransport session on 127.0.0.1, both ends, with the endpoints that drive them.
async fn pair() -> (
    web_transport_quinn::Session,
    web_transport_quinn::Session,
    [quinn::Endpoint; 2],
) {
    let dir = std::env::temp_dir().join(format!("ghost-peer-test-{}", std::process::id()));
    let pki = tls::Pki::new(&dir.join("tls"), &dir.join("ca"));
    pki.ensure(std::time::SystemTime::now())
        .expect("certificates");
    let files = pki.files(tls::Role::Relay);
    let identity = tls::Identity::load(&files.relay_cert, &files.relay_key).expect("identity");
    let localhost = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let server =
        quic::server(localhost, &identity, &[quic::ALPN_H3], Windows::SENDER).expect("server");
    let client = quic::client(&files.ca, quic::ALPN_H3, Windows::RECEIVER).expect("client");
    let addr = server.local_addr().expect("address");
    let accept = async {
        let conn = server
            .accept()
            .await
            .expect("incoming")
            .await
            .expect("handshake");
        peer::accept_webtransport(conn).await.expect("session")
    };
    let connect = async {
        let conn = client
            .connect(addr, tls::RELAY_NAME)
            .expect("connect")
            .await
            .expect("handshake");
        let url = url::Url::parse(&format!("https://{addr}/")).expect("url");
        web_transport_quinn::Session::connect(conn, url)
            .await
            .expect("session")
    };
    let (server_session, client_session) = tokio::join!(accept, connect);
    let _ = std::fs::remove_dir_all(&dir);
    (server_session, client_session, [server, client])
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

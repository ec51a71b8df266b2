//! One-stream delivery over a real loopback QUIC connection: after a join asking for it, the
//! relay's fan-out runs on the WebSocket carrier's framing over the session stream, every
//! group arrives there in order with no stream of its own, the end closes both layers with
//! `ended`; and a viewer that stops reading has groups skipped while the stream goes on.

#![allow(missing_docs)]

mod common;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use transport::fanout::{self, Metrics};
use transport::one_stream::{self, OneStream};
use transport::peer::{Peer, RecvStream};
use transport::quic::{self, Closed, Session, Windows};
use transport::track::{Track, TrackInfo};
use wire::{Code, Delivery, Frame, GroupDecoder, GroupEvent, Message};

use common::{Endpoints, Server};

fn track() -> Track {
    Track::new(TrackInfo {
        id: "s".into(),
        name: "one".into(),
        init: Bytes::from_static(b"init"),
    })
}

/// A relay serving `source` to one viewer that asked for one stream, as `relay::viewer`
/// does; the viewer's side joined, with the relay's `Init` read.
struct Joined {
    viewer: quinn::Connection,
    carried: transport::ws::Session,
    session: Session<transport::ws::Session>,
    relay: tokio::task::JoinHandle<Result<(), fanout::ServeError>>,
    _endpoints: Endpoints,
}

/// The relay's side, as `relay::viewer` serves a viewer that asked for one stream.
fn serve(
    relay_conn: quinn::Connection,
    source: &Track,
    metrics: &Metrics,
) -> tokio::task::JoinHandle<Result<(), fanout::ServeError>> {
    let (source, metrics) = (source.clone(), metrics.clone());
    tokio::spawn(async move {
        let mut session = Session::accept(&relay_conn).await.expect("session");
        let join = session.recv().await.expect("join");
        assert!(matches!(
            join,
            Some(Message::Join {
                delivery: Delivery::OneStream,
                ..
            })
        ));
        let carried = quinn::Connection::relay_side(session)
            .await
            .expect("native QUIC carries one stream");
        let mut inner = Session::open(&carried).await?;
        fanout::serve(&carried, &mut inner, &source, &metrics).await?;
        let _ = tokio::time::timeout(fanout::END_LINGER, relay_conn.closed()).await;
        quic::close(&relay_conn, Code::Ended, "stream ended");
        Ok(())
    })
}

fn endpoints() -> Endpoints {
    Endpoints::new(
        Server::Relay,
        quic::ALPN_VIEW,
        Windows::SENDER,
        Windows::RECEIVER,
    )
}

/// Sends a join asking for one stream on a new session stream.
async fn ask(viewer: &quinn::Connection) -> Session {
    let mut session = Session::open(viewer).await.expect("session");
    session
        .send(&Message::Join {
            stream_id: "s".into(),
            ticket: Bytes::new(),
            delivery: Delivery::OneStream,
        })
        .await
        .expect("join");
    session
}

async fn join(source: &Track, metrics: &Metrics) -> Joined {
    let endpoints = endpoints();
    let (relay_conn, viewer) = endpoints.connect().await;
    let relay = serve(relay_conn, source, metrics);
    let session = ask(&viewer).await;
    let carried = one_stream::viewer_side(session).await;
    let mut session = Session::accept(&carried).await.expect("inner session");
    let init = session.recv().await.expect("init");
    assert!(
        matches!(&init, Some(Message::Init { init, .. }) if &init[..] == b"init"),
        "{init:?}"
    );
    Joined {
        viewer,
        carried,
        session,
        relay,
        _endpoints: endpoints,
    }
}

/// Reads one group stream of the framing: its sequence and frames' capture times.
async fn read_group(mut recv: transport::ws::WsRecv) -> (u64, Vec<u64>) {
    let (mut decoder, mut buf) = (GroupDecoder::new(), BytesMut::new());
    let (mut sequence, mut frames) = (None, Vec::new());
    loop {
        while let Some(event) = decoder.decode(&mut buf).expect("a valid group") {
            match event {
                GroupEvent::Header(h) => sequence = Some(h.sequence),
                GroupEvent::Frame(f) => frames.push(f.capture_us()),
            }
        }
        match RecvStream::read_chunk(&mut recv, 64 * 1024).await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(e) => panic!("group stream broken: {e}"),
        }
    }
    (sequence.expect("a group header"), frames)
}

#[tokio::test]
async fn every_group_comes_in_order_on_the_session_stream_and_the_end_closes_both() {
    tokio::time::timeout(Duration::from_secs(10), async {
        let (source, metrics) = (track(), Metrics::default());
        let mut joined = join(&source, &metrics).await;
        let publish = async {
            for sequence in 0..4u64 {
                let mut group = source.start_group(sequence).expect("newer group");
                for n in 0..3 {
                    let frame = Frame::new(sequence * 10 + n, &[7u8; 2_000]).expect("frame");
                    group.push(frame).expect("within limits");
                }
                drop(group);
                // The next group supersedes this one: leave it time to leave.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            source.end();
        };
        let receive = async {
            let mut groups = Vec::new();
            loop {
                tokio::select! {
                    recv = joined.carried.accept_uni() => {
                        groups.push(read_group(recv.expect("a group stream")).await);
                    }
                    msg = joined.session.recv() => match msg.expect("session") {
                        Some(Message::End { last_group }) => break (groups, last_group),
                        other => panic!("unexpected {other:?}"),
                    },
                }
            }
        };
        let ((), (groups, last_group)) = tokio::join!(publish, receive);
        assert_eq!(last_group, Some(3));
        let want: Vec<(u64, Vec<u64>)> = (0..4u64)
            .map(|s| (s, (0..3).map(|n| s * 10 + n).collect()))
            .collect();
        assert_eq!(groups, want);
        assert_eq!(metrics.groups_sent.get(), 4);
        assert_eq!(metrics.groups_skipped.get(), 0);
        // Nothing came on a stream of its own: the relay opened none on the connection.
        let stray = tokio::time::timeout(Duration::from_millis(50), joined.viewer.accept_uni());
        assert!(
            !matches!(stray.await, Ok(Ok(_))),
            "a group on its own stream"
        );

        // The viewer waits rather than close: the relay closes the framing, then QUIC, both
        // with `ended`.
        let framing = joined.carried.closed().await;
        assert_eq!(
            Closed::from(&framing),
            Closed::ByPeer {
                code: Code::Ended,
                reason: "stream ended".into()
            }
        );
        let quic = joined.viewer.closed().await;
        assert!(
            matches!(
                Closed::from(&quic),
                Closed::ByPeer {
                    code: Code::Ended,
                    ..
                }
            ),
            "{quic:?}"
        );
        joined.relay.await.expect("relay task").expect("served");
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn a_viewer_that_stops_reading_has_groups_skipped_and_the_stream_goes_on() {
    tokio::time::timeout(Duration::from_secs(15), async {
        let (source, metrics) = (track(), Metrics::default());
        let endpoints = endpoints();
        let (relay_conn, viewer) = endpoints.connect().await;
        let _relay = serve(relay_conn, &source, &metrics);
        // The viewer asks for one stream, then reads nothing: its window fills as a slow
        // path's would.
        let _session = ask(&viewer).await;
        // 100 KB groups of one frame, 20 a second: the viewer's window and the framing's
        // buffer (256 KiB each) fill within half a second, then the relay must skip.
        let payload = vec![7u8; 100_000];
        let started = tokio::time::Instant::now();
        for sequence in 0..30u64 {
            let mut group = source.start_group(sequence).expect("newer group");
            group
                .push(Frame::new(sequence, &payload).expect("frame"))
                .expect("within limits");
            drop(group);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Publishing never waited on the viewer.
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert!(metrics.groups_skipped.get() > 0, "{metrics:?}");
        let bytes = metrics.bytes_sent.get();
        assert!(bytes < 30 * 100_000, "every group went out: {bytes}");
        source.end();
    })
    .await
    .expect("test timed out");
}

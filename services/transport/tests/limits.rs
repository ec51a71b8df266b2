//! Byte limits on the receiving side of a real loopback QUIC connection: a group past its
//! limit is cut and its sender is told why (`group_too_large`), the next group flows, and
//! half-sent frames on many group streams count against the stream's limit.

#![allow(missing_docs)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use quinn::{VarInt, WriteError};
use transport::fanout::{self, Metrics};
use transport::quic::{self, Session, Windows};
use transport::track::{Limits, Track, TrackInfo};
use wire::{Frame, GroupHeader, Message, Reset};

use common::{Endpoints, Server};

/// A publisher's connection to a receiver that feeds `track` (as ingest does), both ends.
struct Pair {
    publisher: quinn::Connection,
    session: Session,
    receiving: tokio::task::JoinHandle<()>,
    _endpoints: Endpoints,
}

async fn pair(track: Track, metrics: Metrics) -> Pair {
    let endpoints = Endpoints::new(
        Server::Ingest,
        quic::ALPN_PUBLISH,
        Windows::RECEIVER,
        Windows::PUBLISHER,
    );
    let (conn, publisher) = endpoints.connect().await;
    let mut session = Session::open(&publisher).await.expect("session");
    session
        .send(&Message::Announce {
            name: "big".into(),
            key: String::new(),
            init: Bytes::new(),
        })
        .await
        .expect("announce");
    let receiving = tokio::spawn(async move {
        let mut theirs = Session::accept(&conn).await.expect("session");
        let announce = theirs.recv().await.expect("announce");
        assert!(matches!(announce, Some(Message::Announce { .. })));
        let _ = fanout::receive_track(&conn, &mut theirs, &track, &metrics).await;
    });
    Pair {
        publisher,
        session,
        receiving,
        _endpoints: endpoints,
    }
}

fn track(limits: Limits) -> Track {
    Track::with_limits(
        TrackInfo {
            id: "s".into(),
            name: "big".into(),
            init: Bytes::new(),
        },
        limits,
    )
}

/// Writes frames of `size` bytes to a new group stream until the receiver stops it (or
/// `max` frames are written); how many were written and how it ended.
async fn send_group(
    conn: &quinn::Connection,
    sequence: u64,
    size: usize,
    max: usize,
) -> (usize, Option<WriteError>) {
    let mut stream = conn.open_uni().await.expect("open group");
    stream
        .write_chunk(GroupHeader { sequence }.to_bytes())
        .await
        .expect("header");
    let payload = vec![7u8; size];
    for n in 0..max {
        let frame = Frame::new(n as u64, &payload).expect("frame");
        if let Err(e) = stream.write_chunk(frame.encoded().clone()).await {
            return (n, Some(e));
        }
    }
    let _ = stream.finish();
    (max, None)
}

#[tokio::test]
async fn a_group_past_its_limit_is_cut_and_the_sender_told_why() {
    tokio::time::timeout(Duration::from_secs(20), async {
        let one = Frame::new(0, &[0u8; 10_000])
            .expect("frame")
            .encoded()
            .len();
        let t = track(Limits {
            group: 20 * one,
            stream: 50 * one,
        });
        let metrics = Metrics::default();
        let mut reader = t.subscribe();
        let pair = pair(t.clone(), metrics.clone()).await;

        // A group that never ends: the receiver stops it at the limit with our code.
        let (written, ended) = send_group(&pair.publisher, 1, 10_000, 10_000).await;
        println!("cut after {written} frames written: {ended:?}");
        assert_eq!(
            ended,
            Some(WriteError::Stopped(VarInt::from_u32(
                Reset::GroupTooLarge.into()
            )))
        );
        let mut group = reader.next_group().await.expect("group 1");
        let mut got = 0;
        while group.next_frame().await.is_some() {
            got += 1;
        }
        assert_eq!(
            got, 20,
            "the frames up to the limit reach readers, then the group ends"
        );
        assert_eq!(metrics.groups_cut.get(), 1);
        assert!(t.held_bytes() <= 20 * one, "held {}", t.held_bytes());

        // The connection goes on: the next group flows whole.
        let (written, ended) = send_group(&pair.publisher, 2, 10_000, 5).await;
        assert_eq!((written, ended), (5, None));
        let mut group = reader.next_group().await.expect("group 2");
        assert_eq!(group.sequence(), 2);
        let mut got = 0;
        while group.next_frame().await.is_some() {
            got += 1;
        }
        assert_eq!(got, 5);
        assert_eq!(metrics.groups_cut.get(), 1);
        drop(pair.session);
        pair.receiving.abort();
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn half_sent_frames_on_many_groups_count_against_the_stream() {
    tokio::time::timeout(Duration::from_secs(20), async {
        let stream_limit = 1 << 20;
        let t = track(Limits {
            group: 4 << 20,
            stream: stream_limit,
        });
        let metrics = Metrics::default();
        let pair = pair(t.clone(), metrics.clone()).await;
        // Groups 1..=8, each a frame that announces 4 MiB and sends 200 KB of it, never the
        // rest: without a stream limit the receiver would hold 1.6 MB and wait for more.
        let mut streams = Vec::new();
        for sequence in 1..=8u64 {
            let mut s = pair.publisher.open_uni().await.expect("open");
            let mut head = GroupHeader { sequence }.to_bytes().to_vec();
            head.extend_from_slice(&0u64.to_be_bytes());
            head.extend_from_slice(&(4u32 << 20).to_be_bytes());
            s.write_chunk(Bytes::from(head)).await.expect("headers");
            // The receiver may stop this one already, as it reads: that is the cut.
            let _ = s.write_chunk(Bytes::from(vec![1u8; 200_000])).await;
            streams.push(s);
        }
        // Each stream is stopped (cut at the stream's limit, or skipped as superseded when
        // a newer group got in first) or still open; wait for all at once, bounded.
        let waits = streams.into_iter().map(|s| {
            tokio::spawn(async move {
                tokio::time::timeout(Duration::from_secs(3), s.stopped())
                    .await
                    .ok()
                    .and_then(|r| r.ok().flatten())
            })
        });
        let mut stopped = 0;
        for wait in waits.collect::<Vec<_>>() {
            let code = wait.await.expect("wait task");
            let reset = code.and_then(|c| Reset::from_code(c.into_inner()));
            assert!(
                matches!(
                    reset,
                    None | Some(Reset::GroupTooLarge) | Some(Reset::GroupSkipped)
                ),
                "{code:?}"
            );
            if reset == Some(Reset::GroupTooLarge) {
                stopped += 1;
            }
        }
        println!(
            "{stopped} of 8 half-sent groups cut; the stream holds {} bytes",
            t.held_bytes()
        );
        assert!(stopped >= 1, "no group was cut");
        assert!(t.held_bytes() <= stream_limit, "held {}", t.held_bytes());
        assert!(metrics.groups_cut.get() >= 1);
        drop(pair.session);
        pair.receiving.abort();
    })
    .await
    .expect("test timed out");
}

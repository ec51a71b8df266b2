//! What a stranger on the network can make a whole stack hold or do, through its real
//! services: a publisher's 4 GB groups stay within the stated memory bound at ingest and at
//! the relay, and a loop of 1,000 joins neither starts relays nor keeps an idle one alive.

#![allow(missing_docs)]

mod common;

use std::time::{Duration, Instant};

use api::status::EventKind;
use common::{RawPublisher, Stack, TEST_TIMEOUT};
use tokio_util::sync::CancellationToken;
use wire::{Frame, GroupHeader};

/// Resident memory of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

const MIB: u64 = 1 << 20;

/// Writes group `sequence` of frames of `frame` bytes on `publisher`'s connection until
/// `total` bytes are written or the receiver stops it; the bytes written and the stop code,
/// if stopped.
async fn send_group(
    publisher: &RawPublisher,
    sequence: u64,
    frame: usize,
    total: u64,
) -> (u64, Option<u64>) {
    let mut stream = publisher.conn.open_uni().await.expect("group stream");
    stream
        .write_chunk(GroupHeader { sequence }.to_bytes())
        .await
        .expect("group header");
    let payload = vec![0x5a; frame];
    let mut written = 0;
    while written < total {
        let f = Frame::new(server::clock::now_us(), &payload).expect("frame");
        match stream.write_chunk(f.encoded().clone()).await {
            Ok(()) => written += frame as u64,
            Err(quinn::WriteError::Stopped(code)) => return (written, Some(code.into_inner())),
            Err(e) => panic!("group {sequence}: {e}"),
        }
    }
    let _ = stream.finish();
    (written, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_gb_groups_stay_within_the_memory_bound() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let stack = Stack::up(&["--relays", "1"]);
        let ingest = stack.pid("ingest").await.expect("ingest pid");
        let relay = stack.pid("relay-1").await.expect("relay pid");
        let publisher = stack.raw_publisher("huge").await;
        // A first, small group so the viewer has a place to start and the relay carries the
        // stream before the large ones come.
        send_group(&publisher, 1, 1000, 10_000).await;
        let stop = CancellationToken::new();
        let viewer = stack.watch(&publisher.stream_id, None, None, stop.clone());
        tokio::time::sleep(Duration::from_millis(500)).await;
        let base = (rss(ingest), rss(relay));

        // Sample both processes' memory all along.
        let sampling = CancellationToken::new();
        let sampler = {
            let sampling = sampling.clone();
            tokio::spawn(async move {
                let mut peak = (0, 0);
                while !sampling.is_cancelled() {
                    peak.0 = peak.0.max(rss(ingest));
                    peak.1 = peak.1.max(rss(relay));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                peak
            })
        };
        // Four groups of 4 GB each, in 1 MiB frames: each is cut at the group bound.
        let t0 = Instant::now();
        let mut cut = Vec::new();
        for sequence in 2..=5 {
            let (written, stopped) = send_group(&publisher, sequence, MIB as usize, 4 << 30).await;
            cut.push((written / MIB, stopped));
        }
        let took = t0.elapsed();
        // The stream goes on: a normal group reaches the viewer.
        send_group(&publisher, 6, 1000, 10_000).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        sampling.cancel();
        let peak = sampler.await.expect("sampler");
        stop.cancel();
        let watched = viewer.await.expect("viewer task").expect("viewer");

        let grew = |peak: u64, base: u64| peak.saturating_sub(base) / MIB;
        println!(
            "4 GB groups: each cut after {:?} MiB (stop codes {:?}) in {:.1} s; ingest RSS {} MiB -> peak {} MiB (+{}), relay {} MiB -> peak {} MiB (+{}); viewer got {} groups, {} frames",
            cut.iter().map(|c| c.0).collect::<Vec<_>>(),
            cut.iter().map(|c| c.1).collect::<Vec<_>>(),
            took.as_secs_f64(),
            base.0 / MIB,
            peak.0 / MIB,
            grew(peak.0, base.0),
            base.1 / MIB,
            peak.1 / MIB,
            grew(peak.1, base.1),
            watched.groups,
            watched.frames,
        );
        for (written, stopped) in &cut {
            assert_eq!(*stopped, Some(17), "every 4 GB group is stopped as group_too_large");
            assert!(*written <= 64 + 8, "a group ran to {written} MiB before the cut");
        }
        // The stated bound is 144 MiB per stream at one hop; allow the allocator and the
        // QUIC buffers (windows of a few MiB) some room on top.
        let bound = wire::limits::MAX_STREAM as u64 / MIB + 32;
        assert!(grew(peak.0, base.0) <= bound, "ingest grew past {bound} MiB");
        assert!(grew(peak.1, base.1) <= bound, "the relay grew past {bound} MiB");
        assert!(watched.groups >= 2, "the viewer kept watching: {watched:?}");
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_loop_neither_starts_relays_nor_keeps_one_alive() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        // Loopback counts as a stranger here, with the join limits scaled to a relay of 4
        // seats as the defaults are to one of 200 (30 at once, 10 per second).
        let stack = Stack::up_with_env(
            "process",
            common::scenarios::SPIKE,
            &[
                ("GHOST_GATEWAY_JOIN_LIMIT_LOOPBACK", "1"),
                ("GHOST_GATEWAY_JOIN_BURST", "2"),
                ("GHOST_GATEWAY_JOIN_RATE", "1"),
            ],
        );
        let stop = CancellationToken::new();
        let (id, publisher) = stack.publish("loop", 30, 2000, 30, None, stop.clone()).await;

        // Real demand first, as the gateway would bring it: five viewers for four seats.
        // The fifth refusal makes control ask for a relay.
        let mut control = stack.control_as(identity::Role::Gateway).await;
        let mut refused = 0;
        for _ in 0..5 {
            let join = control
                .join(proto::control::JoinRequest { stream: id.clone() })
                .await;
            refused += usize::from(join.is_err());
        }
        assert_eq!(refused, 1, "four seats, five joins");
        let started = Instant::now();
        loop {
            if stack.relay_count().await == 2 {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "no relay for the demand");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let capacity_events = events(&stack, EventKind::Capacity).await;

        // Now the loop: 1,000 joins at 100 a second, while the new relay has no viewer.
        let t0 = Instant::now();
        let (mut ok, mut limited, mut full) = (0, 0, 0);
        let mut most_relays = 2;
        let mut gone_at = None;
        let url = format!("{}/streams/{id}/join", stack.file.gateway_url);
        for i in 0..1000u32 {
            let answer = stack.http.post(&url).send().await.expect("join request");
            match answer.status().as_u16() {
                200 => ok += 1,
                429 => limited += 1,
                503 => full += 1,
                other => panic!("join answered {other}"),
            }
            if i % 25 == 0 {
                let now = stack.relay_count().await;
                most_relays = most_relays.max(now);
                if now == 1 && gone_at.is_none() {
                    gone_at = Some(t0.elapsed());
                }
            }
            let next = t0 + Duration::from_millis(10 * u64::from(i + 1));
            tokio::time::sleep_until(next.into()).await;
        }
        let looped = t0.elapsed();
        println!(
            "join loop: 1000 joins in {:.1} s: {ok} answered, {limited} got 429, {full} got 503; relays at most {most_relays}; the idle relay removed {} into the loop",
            looped.as_secs_f64(),
            gone_at.map_or("not".to_string(), |t| format!("{:.1} s", t.as_secs_f64()))
        );
        // The relay added for the real demand goes once idle for 3 s (then drained), while
        // the loop goes on.
        assert!(
            gone_at.is_some(),
            "the idle relay was still there when the 10 s loop ended"
        );
        assert_eq!(most_relays, 2, "the loop started a relay");
        assert_eq!(
            events(&stack, EventKind::Capacity).await,
            capacity_events,
            "the loop asked for capacity"
        );
        assert!(limited >= 900, "only {limited} of 1000 joins were limited");
        assert_eq!(full, 0, "the loop filled placement");
        stop.cancel();
        let _ = publisher.await;
    })
    .await
    .expect("test timed out");
}

/// Events of `kind` in the supervisor's log.
async fn events(stack: &Stack, kind: EventKind) -> usize {
    stack
        .status()
        .await
        .events
        .iter()
        .filter(|e| e.kind == kind)
        .count()
}

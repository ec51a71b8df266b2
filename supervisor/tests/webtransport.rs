//! Browser viewers: a relay serves WebTransport (HTTP/3, ALPN `h3`) beside native viewers on
//! the same UDP port, with the same ticket check, admission cap, groups and close codes.

mod common;

use std::time::Duration;

use api::client::EndReason;
use api::status::Role;
use clients::watch::Transport;
use common::{Stack, TEST_TIMEOUT};
use tokio_util::sync::CancellationToken;
use transport::quic::{self, Closed, Windows};
use wire::Code;

const FPS: u32 = 30;
const GROUP: u32 = 15;

/// A hand-driven WebTransport viewer: connects to relay-1, opens the session stream and
/// presents `ticket` for `stream`. Returns how the relay closed the session.
async fn webtransport_join(stack: &Stack, stream: &str, ticket: Vec<u8>) -> Closed {
    let endpoint =
        quic::client(&stack.state.ca(), quic::ALPN_H3, Windows::RECEIVER).expect("endpoint");
    let addr = stack.addr("relay-1", Role::Quic).await;
    let conn = endpoint
        .connect(addr, identity::RELAY_NAME)
        .expect("connect")
        .await
        .expect("QUIC handshake");
    let url = url::Url::parse(&format!("https://{addr}/")).expect("url");
    let session = web_transport_quinn::Session::connect(conn, url)
        .await
        .expect("WebTransport session");
    common::join_until_closed(&session, stream, ticket, Duration::from_secs(3)).await
}

/// Polls the relay's gauge `metric` until it reads `want`.
async fn wait_gauge(stack: &Stack, metric: &str, want: u32) {
    let name = format!("ghost_relay_{metric}");
    stack
        .wait_metric("relay-1", &name, f64::from(want), Duration::from_secs(5))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webtransport_viewer_gets_what_a_native_one_gets() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let stack = Stack::up(&["--relays", "1", "--relay-capacity", "2"]);
        let stop = CancellationToken::new();
        let (id, publisher) = stack
            .publish(
                "browser",
                FPS,
                2000,
                GROUP,
                Some(Duration::from_secs(4)),
                stop.clone(),
            )
            .await;
        let mut forged = stack.relay_ticket(&id);
        if let Some(last) = forged.last_mut() {
            *last ^= 1;
        }
        let forged = webtransport_join(&stack, &id, forged).await;
        println!("forged ticket over WebTransport: {forged:?}");
        assert!(
            matches!(
                forged,
                Closed::ByPeer {
                    code: Code::Unauthorized,
                    ..
                }
            ),
            "{forged:?}"
        );
        wait_gauge(&stack, "viewers", 0).await;

        let native = stack.watch(&id, None, None, stop.clone());
        let browser = stack.watch_on(Transport::WebTransport, &id, None, None, stop.clone());
        wait_gauge(&stack, "viewers", 2).await;
        // One of them a browser, as operators see it.
        wait_gauge(&stack, "webtransport_viewers", 1).await;
        let asked = std::time::Instant::now();
        // With the relay full the gateway would refuse (and ask for another relay); the
        // relay's own cap is what is under test.
        let full = webtransport_join(&stack, &id, stack.relay_ticket(&id)).await;
        println!(
            "relay full: third (WebTransport) viewer closed after {:.1} ms: {full:?}",
            common::ms(asked.elapsed())
        );
        assert!(
            matches!(
                full,
                Closed::ByPeer {
                    code: Code::Capacity,
                    ..
                }
            ),
            "{full:?}"
        );

        let report = publisher.await.expect("join").expect("publisher");
        let native = native.await.expect("join").expect("native viewer");
        let browser = browser.await.expect("join").expect("WebTransport viewer");
        println!(
            "published {} frames in {} groups; native: {} frames, {} groups from group {:?}, \
             p50 {:.1} ms, {:?}; WebTransport: {} frames, {} groups from group {:?}, \
             p50 {:.1} ms, {:?}",
            report.frames,
            report.groups,
            native.frames,
            native.groups,
            native.first_group,
            native.latency_ms.p50,
            native.end_reason,
            browser.frames,
            browser.groups,
            browser.first_group,
            browser.latency_ms.p50,
            browser.end_reason,
        );
        assert_eq!(browser.end_reason, EndReason::Ended, "{browser:?}");
        assert!(browser.groups >= 2, "{browser:?}");
        assert_eq!(native.end_reason, EndReason::Ended, "{native:?}");
        common::lost_nothing("native", &native, report.frames, GROUP);
        common::lost_nothing("WebTransport", &browser, report.frames, GROUP);
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_webtransport_viewer_skips_whole_groups_and_nobody_else_notices() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let stack = Stack::up(&["--relays", "1"]);
        let stop = CancellationToken::new();
        let (fps, group) = (30u32, 30u32);
        let (id, publisher) = stack
            .publish("slow-browser", fps, 8000, group, None, stop.clone())
            .await;
        let watch_for = Duration::from_secs(6);
        // Reading at a tenth of the rate: the relay resets its older groups (`group_skipped`).
        let slow_delay = Duration::from_secs_f64(10.0 / f64::from(fps));
        let slow = stack.watch_on(
            Transport::WebTransport,
            &id,
            Some(watch_for + Duration::from_secs(2)),
            Some(slow_delay),
            stop.clone(),
        );
        let native = stack.watch(&id, Some(watch_for), None, stop.clone());
        let native = native.await.expect("join").expect("native viewer");
        let slow = slow.await.expect("join").expect("slow WebTransport viewer");
        let group_ms = f64::from(group) / f64::from(fps) * 1e3;
        println!(
            "slow WebTransport viewer: skipped {} groups of {}, max delay {:.0} ms; native \
             beside it: skipped {}, p99 {:.1} ms",
            slow.skipped_groups,
            slow.groups + slow.skipped_groups,
            slow.latency_ms.max,
            native.skipped_groups,
            native.latency_ms.p99
        );
        assert!(slow.skipped_groups > 0, "{slow:?}");
        assert!(
            slow.latency_ms.max < 2.0 * group_ms + 1000.0,
            "the slow viewer fell {:.0} ms behind",
            slow.latency_ms.max
        );
        assert_eq!(native.skipped_groups, 0, "{native:?}");
        stop.cancel();
        let _ = publisher.await;
    })
    .await
    .expect("test timed out");
}

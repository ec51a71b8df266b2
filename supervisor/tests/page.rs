//! The status page in a real browser: headless Chromium renders relays, streams (with the
//! protocol each is published over), the event timeline and the charts, with no script error.

mod common;

use std::time::Duration;

use common::{Stack, TEST_TIMEOUT};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_renders_in_a_browser() {
    let Some(browser) = common::chromium() else {
        return;
    };
    tokio::time::timeout(TEST_TIMEOUT, async {
        let stack = Stack::up(&["--relays", "2"]);
        let stop = CancellationToken::new();
        let (id, publisher) = stack
            .publish("on-the-page", 30, 2000, 30, None, stop.clone())
            .await;
        let viewer = stack.watch(&id, None, None, stop.clone());
        // A stream of each protocol: the publisher above goes through ingest (QUIC).
        stack.create_at_control("from-an-encoder", "rtmp").await;
        let killed = stack
            .ghost()
            .args(["chaos", "kill-relay", "--id", "relay-2"])
            .output()
            .expect("chaos");
        assert!(killed.status.success());
        // Let a few chart samples and the restart land.
        tokio::time::sleep(Duration::from_secs(3)).await;

        let dom = stack
            .dump_dom(browser, &stack.file.supervisor_url, 3000)
            .await;
        assert!(
            dom.contains("data-rendered=\"yes\""),
            "page never rendered:\n{dom}"
        );
        assert!(!dom.contains("data-script-error"), "script error:\n{dom}");
        for needle in [
            "relay-1",
            "relay-2",
            "on-the-page",
            "kill",
            "restart",
            "<polyline points=\"0",
            "/watch/",
            "from-an-encoder",
            "<td>quic</td>",
            "<td>rtmp</td>",
        ] {
            assert!(dom.contains(needle), "page lacks {needle:?}:\n{dom}");
        }
        println!(
            "status page: rendered {} bytes of DOM with relays, streams, timeline and charts",
            dom.len()
        );
        stop.cancel();
        let _ = viewer.await;
        let _ = publisher.await;
    })
    .await
    .expect("test timed out");
}

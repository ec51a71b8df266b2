//! The viewers' web app, served by the viewer gateway, in a real browser: headless Chromium
//! lists the live streams and shows, in words, a stream that does not exist and a stack that
//! is full.

mod common;

use common::{Stack, TEST_TIMEOUT};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_app_lists_streams_and_says_where_things_stand() {
    let Some(browser) = common::chromium() else {
        return;
    };
    tokio::time::timeout(TEST_TIMEOUT, async {
        // One relay of one seat that may not grow: the second viewer finds it full.
        let stack = Stack::up(&[
            "--relays",
            "1",
            "--max-relays",
            "1",
            "--relay-capacity",
            "1",
        ]);
        let stop = CancellationToken::new();
        let (id, publisher) = stack
            .publish("in-the-browser", 30, 2000, 30, None, stop.clone())
            .await;
        let gateway = &stack.file.gateway_url;

        let list = stack.dump_dom(browser, &format!("{gateway}/"), 3000).await;
        assert!(
            list.contains("data-streams=\"1\""),
            "list never filled:\n{list}"
        );
        assert!(
            list.contains("in-the-browser"),
            "stream not listed:\n{list}"
        );
        assert!(
            list.contains(&format!("/watch/{id}")),
            "no watch link:\n{list}"
        );

        let missing = stack
            .dump_dom(browser, &format!("{gateway}/watch/no-such-stream"), 3000)
            .await;
        assert!(missing.contains("data-state=\"missing\""), "{missing}");
        assert!(missing.contains("No such stream."), "{missing}");

        // The one seat taken by a native viewer: the page says full and counts down.
        let viewer = stack.watch(&id, None, None, stop.clone());
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        let full = stack
            .dump_dom(browser, &format!("{gateway}/watch/{id}"), 1500)
            .await;
        assert!(full.contains("data-state=\"full\""), "{full}");
        assert!(full.contains("Full right now."), "{full}");
        assert!(full.contains("Trying again in"), "{full}");
        println!("web app: list, no-such-stream and full pages rendered as expected");

        stop.cancel();
        let _ = viewer.await;
        let _ = publisher.await;
    })
    .await
    .expect("test timed out");
}

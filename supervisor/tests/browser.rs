//! A viewer in a real browser: headless Chromium opens the watch page, which joins through
//! the gateway, connects to the relay over WebTransport (pinning the relay's certificate by
//! its hash), and decodes real ffmpeg output (H.264 with Opus, or with AAC) with WebCodecs.

mod common;

use std::time::{Duration, Instant};

use common::browser::{Browser, Page};
use common::{Stack, TEST_TIMEOUT};
use serde_json::Value;

const FPS: u32 = 30;

/// What the page measured (`window.ghost`).
async fn measured(browser: &mut Browser, page: &Page) -> Value {
    browser
        .eval(page, "JSON.parse(JSON.stringify(window.ghost || {}))")
        .await
}

/// Polls the page until `check` holds, or panics after `within`; returns how long it took.
async fn until(
    browser: &mut Browser,
    page: &Page,
    within: Duration,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let v = measured(browser, page).await;
        if check(&v) {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "{what}: the page shows {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn n(v: &Value, field: &str) -> f64 {
    v[field].as_f64().unwrap_or(0.0)
}

async fn plays(audio_codec: &str, label: &str) {
    let Some(binary) = common::chromium() else {
        return;
    };
    if !common::ffmpeg_available() {
        return;
    }
    tokio::time::timeout(TEST_TIMEOUT, async {
        let stack = Stack::up(&["--relays", "1"]);
        let (id, mut ffmpeg, mut publisher) = stack.go_live(label, audio_codec, None).await;
        let mut browser = Browser::start(binary, &stack.dir.path().join("browser")).await;
        let page = browser
            .open(&format!("{}/watch/{id}", stack.file.gateway_url))
            .await;
        let joined = until(
            &mut browser,
            &page,
            Duration::from_secs(15),
            "no picture",
            |v| n(v, "rendered") > 0.0,
        )
        .await;

        // Ten seconds of watching: frames sent, frames drawn, sound decoded, delay; a native
        // viewer on the same relay meanwhile, to tell the browser's delay from the stream's.
        let native = stack.watch(
            &id,
            Some(Duration::from_secs(10)),
            None,
            tokio_util::sync::CancellationToken::new(),
        );
        // The decoders' first frames come out in a burst (a one-time start-up of about 0.1 to
        // 0.2 s, reported as "picture after"); the delay a viewer lives with is measured after.
        tokio::time::sleep(Duration::from_secs(1)).await;
        browser.eval(&page, "window.ghost.reset()").await;
        let before = measured(&mut browser, &page).await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        let after = measured(&mut browser, &page).await;
        let native = native.await.expect("join").expect("native viewer");
        // GHOST_BROWSER_SCREENSHOT=DIR keeps a picture of the page playing, for people.
        if let Some(dir) = std::env::var_os("GHOST_BROWSER_SCREENSHOT") {
            let png = browser.screenshot(&page).await;
            std::fs::write(std::path::Path::new(&dir).join(format!("{label}.png")), png)
                .expect("write the screenshot");
        }
        let drawn = n(&after, "rendered") - n(&before, "rendered");
        let sent = 10.0 * f64::from(FPS);
        let audio = n(&after, "audio") - n(&before, "audio");
        println!(
            "browser ({label}): picture after {:.0} ms; {drawn} of {sent} video frames drawn in \
             10 s, {audio} audio frames decoded; capture-to-render delay p50 {} ms, p99 {} ms",
            common::ms(joined),
            after["delay"]["p50"],
            after["delay"]["p99"],
        );
        println!(
            "browser ({label}): the native viewer beside it: {} frames, {} skipped groups, \
             delay p50 {:.1} ms, p99 {:.1} ms",
            native.frames, native.skipped_groups, native.latency_ms.p50, native.latency_ms.p99
        );
        assert!(
            drawn >= 0.9 * sent,
            "{drawn} of {sent} frames drawn: {after}"
        );
        assert_eq!(
            native.skipped_groups, 0,
            "the native viewer suffered: {native:?}"
        );
        assert!(audio > 0.0, "no sound decoded: {after}");
        assert_eq!(after["state"], "live", "{after}");

        // The streamer stops: the page says so within a second.
        let _ = ffmpeg.start_kill();
        let _ = ffmpeg.wait().await;
        let _ = publisher.wait().await;
        let ended = until(
            &mut browser,
            &page,
            Duration::from_secs(1),
            "not ended",
            |v| v["state"] == "ended",
        )
        .await;
        println!(
            "browser ({label}): the page said the stream ended {:.0} ms after the publisher did",
            common::ms(ended)
        );
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_plays_h264_with_opus() {
    plays("libopus", "h264-opus").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_plays_h264_with_aac() {
    plays("aac", "h264-aac").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_waits_out_a_full_stack_and_says_when_its_relay_is_lost() {
    let Some(binary) = common::chromium() else {
        return;
    };
    tokio::time::timeout(TEST_TIMEOUT, async {
        // One seat to start with, room for one more relay on demand.
        let stack = Stack::up(&[
            "--relays",
            "1",
            "--max-relays",
            "2",
            "--relay-capacity",
            "1",
        ]);
        let stop = tokio_util::sync::CancellationToken::new();
        let (id, publisher) = stack
            .publish("crowded", 30, 2000, 30, None, stop.clone())
            .await;
        let native = stack.watch(&id, None, None, stop.clone());
        // The seat shows as taken at control with the relay's next heartbeat.
        tokio::time::sleep(Duration::from_millis(800)).await;

        let mut browser = Browser::start(binary, &stack.dir.path().join("browser")).await;
        let page = browser
            .open(&format!("{}/watch/{id}", stack.file.gateway_url))
            .await;
        until(
            &mut browser,
            &page,
            Duration::from_secs(5),
            "not full",
            |v| v["state"] == "full",
        )
        .await;
        let countdown = browser
            .eval(&page, "document.getElementById('detail').textContent")
            .await;
        assert!(
            countdown
                .as_str()
                .is_some_and(|t| t.starts_with("Trying again in")),
            "{countdown}"
        );
        // The refusal made control ask for a relay; the page's own retry gets it in.
        let waited = until(
            &mut browser,
            &page,
            Duration::from_secs(10),
            "never got in",
            |v| v["state"] == "live" && n(v, "frames") > 0.0,
        )
        .await;
        println!(
            "browser: full, counted down, and got in {:.0} ms later on the relay added for it",
            common::ms(waited)
        );

        // Its relay dies (the native viewer holds relay-1, so the page is on relay-2).
        let killed = stack
            .ghost()
            .args(["chaos", "kill-relay", "--id", "relay-2"])
            .output()
            .expect("chaos");
        assert!(killed.status.success());
        let lost = until(
            &mut browser,
            &page,
            Duration::from_secs(3),
            "not lost",
            |v| v["state"] == "lost",
        )
        .await;
        let rejoin = browser
            .eval(&page, "document.getElementById('rejoin').hidden")
            .await;
        assert_eq!(rejoin, Value::Bool(false), "no rejoin button");
        println!(
            "browser: the page said the connection was lost {:.0} ms after the relay was killed",
            common::ms(lost)
        );

        stop.cancel();
        let _ = native.await;
        let _ = publisher.await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_keeps_playing_through_a_certificate_renewal_and_a_new_page_pins_the_new_hash() {
    let Some(binary) = common::chromium() else {
        return;
    };
    tokio::time::timeout(TEST_TIMEOUT, async {
        let stack = Stack::up_with_env(
            "process",
            &["--relays", "1"],
            &[("GHOST_RELAY_CERT_CHECK", "200ms")],
        );
        let stop = tokio_util::sync::CancellationToken::new();
        let (id, publisher) = stack
            .publish("renewed-in-a-browser", 30, 2000, 30, None, stop.clone())
            .await;
        let url = format!("{}/watch/{id}", stack.file.gateway_url);
        let mut browser = Browser::start(binary, &stack.dir.path().join("browser")).await;
        let first = browser.open(&url).await;
        until(
            &mut browser,
            &first,
            Duration::from_secs(10),
            "first page",
            |v| v["state"] == "live" && n(v, "frames") > 0.0,
        )
        .await;
        let old = supervisor::client::watch::join(&stack.http, &stack.file.gateway_url, &id)
            .await
            .expect("join")
            .cert_sha256;

        let files = transport::tls::Files::in_dir(&stack.state.tls_dir());
        files
            .renew_relay(std::time::SystemTime::now())
            .expect("renew");
        let renewed = Instant::now();
        loop {
            let hash = supervisor::client::watch::join(&stack.http, &stack.file.gateway_url, &id)
                .await
                .expect("join")
                .cert_sha256;
            if hash != old {
                break;
            }
            assert!(renewed.elapsed() < Duration::from_secs(10), "no new hash");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let frames_then = n(&measured(&mut browser, &first).await, "frames");

        // A new page pins the new hash and plays; the first one went on all along.
        let second = browser.open(&url).await;
        until(
            &mut browser,
            &second,
            Duration::from_secs(10),
            "second page",
            |v| v["state"] == "live" && n(v, "frames") > 0.0,
        )
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let first_now = measured(&mut browser, &first).await;
        assert_eq!(first_now["state"], "live", "{first_now}");
        assert!(n(&first_now, "frames") > frames_then + 20.0, "{first_now}");
        println!(
            "browser: renewal mid-session: the first page went on ({} frames), a new page \
             joined on the new certificate",
            first_now["frames"]
        );
        stop.cancel();
        let _ = publisher.await;
    })
    .await
    .expect("test timed out");
}

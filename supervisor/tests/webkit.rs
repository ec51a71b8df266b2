//! A viewer in WebKit, Safari's engine: WebKitGTK's MiniBrowser under Xvfb, driven over W3C
//! WebDriver. WebKit has no WebTransport, so the watch page goes straight to the relay's
//! WebSocket carrier, and decodes real ffmpeg output (H.264 with AAC, or with Opus) with
//! WebKit's WebCodecs. The page's states (ended, full, connection lost) show as in Chromium
//! (tests/browser.rs).

mod common;

use std::time::{Duration, Instant};

use common::webkit::WebKit;
use common::{Stack, TEST_TIMEOUT};
use serde_json::Value;

const FPS: u32 = 30;

/// WebKit tests run one at a time: two WebKits (with a stack and ffmpeg each) on CI's two
/// cores starve each other's decoders, and the figures printed would be the contention's.
static ONE_AT_A_TIME: std::sync::LazyLock<tokio::sync::Mutex<()>> =
    std::sync::LazyLock::new(|| tokio::sync::Mutex::new(()));

/// What the page measured (`window.ghost`).
async fn measured(webkit: &WebKit) -> Value {
    webkit.eval("window.ghost || {}").await
}

/// Polls the page until `check` holds, or panics after `within`; returns how long it took.
async fn until(
    webkit: &WebKit,
    within: Duration,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let v = measured(webkit).await;
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

/// WebKit plays real ffmpeg media with `audio_codec` (`audio_frames` sound frames a second)
/// over WebSocket, and says when the stream ends.
async fn plays(audio_codec: &str, audio_frames: f64, label: &str) {
    let Some(tools) = common::webkit::installed() else {
        return;
    };
    if !common::ffmpeg_available() {
        return;
    }
    let _alone = ONE_AT_A_TIME.lock().await;
    tokio::time::timeout(TEST_TIMEOUT, async {
        let stack = Stack::up(&["--relays", "1"]);
        let (id, mut ffmpeg, mut publisher) = stack.go_live(label, audio_codec, None).await;
        let webkit = WebKit::start(&tools).await;
        let started = Instant::now();
        webkit
            .navigate(&format!("{}/watch/{id}", stack.file.gateway_url))
            .await
            .expect("watch page");
        until(&webkit, Duration::from_secs(15), "no picture", |v| {
            n(v, "rendered") > 0.0
        })
        .await;
        let joined = started.elapsed();
        // A script error while it plays (one thrown where the decoders hand their output
        // over, say) would go unseen in the counts: the page collects them from here on.
        webkit
            .eval(
                "(window.errors = [], addEventListener('error', (e) => \
                 window.errors.push(String(e.message))))",
            )
            .await;
        // No WebTransport in WebKit: the page goes to WebSocket without a race.
        let now = measured(&webkit).await;
        assert_eq!(now["carrier"], "websocket", "{now}");

        // Ten seconds of watching; a native viewer on the same relay meanwhile, to tell the
        // browser's delay from the stream's.
        let native = stack.watch(
            &id,
            Some(Duration::from_secs(10)),
            None,
            tokio_util::sync::CancellationToken::new(),
        );
        // The delay a viewer lives with is measured past the decoders' start-up burst.
        tokio::time::sleep(Duration::from_secs(1)).await;
        webkit.eval("window.ghost.reset()").await;
        let before = measured(&webkit).await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        let after = measured(&webkit).await;
        let native = native.await.expect("join").expect("native viewer");
        // GHOST_BROWSER_SCREENSHOT=DIR keeps a picture of the page playing, for people.
        if let Some(dir) = std::env::var_os("GHOST_BROWSER_SCREENSHOT") {
            let png = webkit.screenshot().await;
            std::fs::write(
                std::path::Path::new(&dir).join(format!("webkit-{label}.png")),
                png,
            )
            .expect("write the screenshot");
        }
        let drawn = n(&after, "rendered") - n(&before, "rendered");
        let sent = 10.0 * f64::from(FPS);
        let audio = n(&after, "audio") - n(&before, "audio");
        println!(
            "webkit ({label}, {}): picture after {:.0} ms; {drawn} of {sent} video frames \
             drawn in 10 s, {audio} audio frames decoded; capture-to-render delay p50 {} ms, \
             p99 {} ms",
            after["carrier"],
            common::ms(joined),
            after["delay"]["p50"],
            after["delay"]["p99"],
        );
        println!(
            "webkit ({label}): the native viewer beside it: {} frames, {} skipped groups, \
             delay p50 {:.1} ms, p99 {:.1} ms",
            native.frames, native.skipped_groups, native.latency_ms.p50, native.latency_ms.p99
        );
        assert!(
            drawn >= 0.9 * sent,
            "{drawn} of {sent} frames drawn: {after}"
        );
        assert!(
            after["delay"]["p50"].is_number(),
            "no delay reported: {after}"
        );
        assert!(
            after["delay"]["p99"].is_number(),
            "no delay reported: {after}"
        );
        // WebKit's WebCodecs (GStreamer's decoders) has both AAC and Opus.
        // Sound flows throughout; its count is looser than the picture's, as GStreamer's
        // decoding thread falls behind for a while on a busy machine and catches up later.
        assert!(
            audio >= 0.5 * 10.0 * audio_frames,
            "{audio} sound frames decoded: {after}"
        );
        assert_eq!(after["state"], "live", "{after}");
        let errors = webkit.eval("window.errors").await;
        assert_eq!(errors, serde_json::json!([]), "the page threw");

        // The streamer stops: the page says so within a second or two.
        let _ = ffmpeg.start_kill();
        let _ = ffmpeg.wait().await;
        let _ = publisher.wait().await;
        let ended = until(&webkit, Duration::from_secs(2), "not ended", |v| {
            v["state"] == "ended"
        })
        .await;
        println!(
            "webkit ({label}): the page said the stream ended {:.0} ms after the publisher did",
            common::ms(ended)
        );
        webkit.quit().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webkit_plays_h264_with_aac_over_websocket() {
    // ffmpeg's tone is at 44.1 kHz, AAC's frames 1,024 samples long.
    plays("aac", 44_100.0 / 1024.0, "h264-aac").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webkit_plays_h264_with_opus_over_websocket() {
    // Opus at 48 kHz in 20 ms frames.
    plays("libopus", 50.0, "h264-opus").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_webkit_the_page_waits_out_a_full_stack_and_says_when_its_relay_is_lost() {
    let Some(tools) = common::webkit::installed() else {
        return;
    };
    let _alone = ONE_AT_A_TIME.lock().await;
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

        let webkit = WebKit::start(&tools).await;
        webkit
            .navigate(&format!("{}/watch/{id}", stack.file.gateway_url))
            .await
            .expect("watch page");
        until(&webkit, Duration::from_secs(5), "not full", |v| {
            v["state"] == "full"
        })
        .await;
        let countdown = webkit
            .execute("return document.getElementById('detail').textContent")
            .await;
        assert!(
            countdown
                .as_str()
                .is_some_and(|t| t.starts_with("Trying again in")),
            "{countdown}"
        );
        // The refusal made control ask for a relay; the page's own retry gets it in.
        let waited = until(&webkit, Duration::from_secs(10), "never got in", |v| {
            v["state"] == "live" && n(v, "frames") > 0.0
        })
        .await;
        let now = measured(&webkit).await;
        assert_eq!(now["carrier"], "websocket", "{now}");
        println!(
            "webkit: full, counted down, and got in {:.0} ms later on the relay added for it",
            common::ms(waited)
        );

        // Its relay dies (the native viewer holds relay-1, so the page is on relay-2).
        let killed = stack
            .ghost()
            .args(["chaos", "kill-relay", "--id", "relay-2"])
            .output()
            .expect("chaos");
        assert!(killed.status.success());
        let lost = until(&webkit, Duration::from_secs(3), "not lost", |v| {
            v["state"] == "lost"
        })
        .await;
        let rejoin = webkit
            .execute("return document.getElementById('rejoin').hidden")
            .await;
        assert_eq!(rejoin, Value::Bool(false), "no rejoin button");
        println!(
            "webkit: the page said the connection was lost {:.0} ms after the relay was killed",
            common::ms(lost)
        );

        stop.cancel();
        let _ = native.await;
        let _ = publisher.await;
        webkit.quit().await;
    })
    .await
    .expect("test timed out");
}

//! A viewer in a real browser: headless Chromium opens the watch page, which joins through
//! the gateway, connects to the relay over WebTransport (pinning the relay's certificate by
//! its hash) or over WebSocket (the TCP carrier), and decodes real ffmpeg output (H.264 with Opus, or with AAC) with WebCodecs.
//! Apart from a stack: the page's MP4 module splits an init segment carried inline off the
//! fragment after it, and takes garbage for no init segment.

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

/// The page plays real ffmpeg media with `audio_codec` over `carrier` ("webtransport", the
/// page's first choice; "websocket", as a page that remembers WebSocket winning goes), on a
/// device whose clock is `skew_ms` off (its `Date.now()` shifted): the delay it shows is
/// still the true one. `decoder` is "webcodecs", or "mse" for Media Source Extensions, what
/// a browser without WebCodecs plays with (asked for by `?decoder=mse`).
async fn plays(audio_codec: &str, label: &str, carrier: &str, skew_ms: i64, decoder: &str) {
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
        let page = browser.open("about:blank").await;
        browser
            .navigate(&page, &format!("{}/", stack.file.gateway_url))
            .await
            .expect("home page");
        if skew_ms != 0 {
            browser
                .on_new_document(
                    &page,
                    &format!(
                        "(() => {{ const now = Date.now.bind(Date); \
                         Date.now = () => now() + ({skew_ms}); }})()"
                    ),
                )
                .await;
        }
        if carrier == "websocket" {
            browser
                .eval(
                    &page,
                    "localStorage.setItem('ghost-carrier', `websocket ${Date.now()}`)",
                )
                .await;
        }
        browser.bring_to_front(&page).await;
        let started = Instant::now();
        browser
            .navigate(
                &page,
                &format!(
                    "{}/watch/{id}{}",
                    stack.file.gateway_url,
                    if decoder == "mse" { "?decoder=mse" } else { "" }
                ),
            )
            .await
            .expect("watch page");
        let joined = until(
            &mut browser,
            &page,
            Duration::from_secs(15),
            "no picture",
            |v| n(v, "rendered") > 0.0,
        )
        .await
        .max(started.elapsed());
        assert_eq!(
            measured(&mut browser, &page).await["carrier"],
            carrier,
            "the page took another carrier"
        );

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
        let offset = after["clockOffset"].as_f64().unwrap_or(f64::NAN);
        println!(
            "browser ({label}): the page's clock {skew_ms} ms off; the offset it read from the \
             relay: {offset:.1} ms"
        );
        assert!(
            (offset + skew_ms as f64).abs() < 100.0,
            "clock offset {offset} ms for a clock {skew_ms} ms off: {after}"
        );
        let p50 = after["delay"]["p50"].as_f64().unwrap_or(f64::NAN);
        assert!((0.0..500.0).contains(&p50), "delay p50 {p50} ms: {after}");
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
            "browser ({label}, {carrier}): picture after {:.0} ms; {drawn} of {sent} video frames drawn in \
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
        assert_eq!(after["decoder"], decoder, "{after}");
        // Sound through WebCodecs is counted frame by frame; through MSE the <video> element
        // plays it, unseen by the page.
        assert!(decoder == "mse" || audio > 0.0, "no sound decoded: {after}");
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
    plays("libopus", "h264-opus", "webtransport", 0, "webcodecs").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_plays_over_websocket() {
    // A phone whose clock is 3 s fast.
    plays("aac", "h264-aac-websocket", "websocket", 3000, "webcodecs").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_without_webcodecs_plays_through_media_source_extensions() {
    plays("aac", "h264-aac-mse", "websocket", 0, "mse").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_plays_h264_with_aac() {
    // And one 2 s slow.
    plays("aac", "h264-aac", "webtransport", -2000, "webcodecs").await;
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
        let old = clients::watch::join(&stack.http, &stack.file.gateway_url, &id)
            .await
            .expect("join")
            .cert_sha256;

        stack
            .state
            .pki()
            .renew_relay(std::time::SystemTime::now())
            .expect("renew");
        let renewed = Instant::now();
        loop {
            let hash = clients::watch::join(&stack.http, &stack.file.gateway_url, &id)
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

/// One MP4 box of `kind` around `body`: a 32-bit size, or with `large` size 1 and a 64-bit
/// size after the type.
fn mp4_box(kind: &[u8; 4], body: &[u8], large: bool) -> Vec<u8> {
    let mut out = Vec::new();
    if large {
        out.extend_from_slice(&1u32.to_be_bytes());
        out.extend_from_slice(kind);
        out.extend_from_slice(&(16 + body.len() as u64).to_be_bytes());
    } else {
        out.extend_from_slice(&(8 + body.len() as u32).to_be_bytes());
        out.extend_from_slice(kind);
    }
    out.extend_from_slice(body);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_splits_an_inline_init_segment_off_a_fragment() {
    let Some(binary) = common::chromium() else {
        return;
    };
    let init = [
        mp4_box(b"ftyp", b"isom\0\0\x02\0isomiso6", false),
        mp4_box(b"moov", &mp4_box(b"mvhd", &[3; 20], false), false),
    ]
    .concat();
    let large_init = [
        mp4_box(b"ftyp", b"cmfc\0\0\0\0", true),
        mp4_box(b"free", &[], false),
        mp4_box(b"moov", &mp4_box(b"trak", &[4; 12], false), true),
    ]
    .concat();
    let fragment = [
        mp4_box(b"moof", &[1; 24], false),
        mp4_box(b"mdat", &[2; 40], false),
    ]
    .concat();
    let whole = [init.clone(), fragment.clone()].concat();
    // Each payload, and the length of the init segment it starts with (None: no init).
    let mut cases: Vec<(Vec<u8>, Option<usize>)> = vec![
        (whole.clone(), Some(init.len())),
        (
            [large_init.clone(), fragment.clone()].concat(),
            Some(large_init.len()),
        ),
        (init.clone(), Some(init.len())),
        (fragment.clone(), None),
        (Vec::new(), None),
        (
            [mp4_box(b"ftyp", b"isom", false), fragment.clone()].concat(),
            None,
        ),
        // Sizes below the header, past the end, and 64-bit sizes beyond any memory.
        ([&7u32.to_be_bytes()[..], b"ftyp"].concat(), None),
        (
            [&1u32.to_be_bytes()[..], b"ftyp", &8u64.to_be_bytes()].concat(),
            None,
        ),
        (
            [&1u32.to_be_bytes()[..], b"ftyp", &u64::MAX.to_be_bytes()].concat(),
            None,
        ),
        (
            [
                mp4_box(b"ftyp", b"", false),
                [&1000u32.to_be_bytes()[..], b"moov"].concat(),
            ]
            .concat(),
            None,
        ),
        // Size 0 runs to the end: an ftyp swallowing the rest leaves no moov after it.
        ([&0u32.to_be_bytes()[..], b"ftyp", &init[..]].concat(), None),
    ];
    for cut in 0..init.len() {
        cases.push((whole[..cut].to_vec(), None));
    }
    let payloads: Vec<&Vec<u8>> = cases.iter().map(|(p, _)| p).collect();
    let payloads = serde_json::to_string(&payloads).expect("JSON");

    tokio::time::timeout(TEST_TIMEOUT, async {
        // The gateway alone serves the page's modules; nothing here asks control.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let shutdown = tokio_util::sync::CancellationToken::new();
        let gateway = tokio::spawn(gateway::serve(
            listener,
            "http://127.0.0.1:1",
            None,
            shutdown.clone(),
        ));
        let profile = tempfile::tempdir().expect("browser profile");
        let mut browser = Browser::start(binary, profile.path()).await;
        let url = format!("http://{addr}/health");
        let page = browser.open(&url).await;
        // A module loads into a page of its own origin: wait until the page is the gateway's.
        let started = Instant::now();
        while browser.eval(&page, "location.href").await != Value::String(url.clone()) {
            assert!(started.elapsed() < Duration::from_secs(10), "page never opened");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let split = browser
            .eval(
                &page,
                &format!(
                    "import('http://{addr}/app/mp4.js').then(({{ splitInit }}) => {payloads}.map((c) => {{
                       try {{
                         const s = splitInit(new Uint8Array(c));
                         return [s.init && s.init.length, s.fragment.byteOffset, s.fragment.length];
                       }} catch (e) {{
                         return String(e);
                       }}
                     }}))"
                ),
            )
            .await;
        let split = split.as_array().expect("one answer per payload");
        assert_eq!(split.len(), cases.len());
        for ((payload, want), got) in cases.iter().zip(split) {
            let init_len = want.unwrap_or(0);
            let want = serde_json::json!([want, init_len, payload.len() - init_len]);
            assert_eq!(got, &want, "payload {payload:?}");
        }
        println!(
            "browser: mp4.js split {} hand-built payloads as expected",
            cases.len()
        );
        shutdown.cancel();
        gateway.await.expect("join").expect("gateway ran cleanly");
    })
    .await
    .expect("test timed out");
}

/// OBS's way in, a browser's way out: an RTMP publish (x264 with B-frames, AAC) that changes
/// resolution mid-stream plays on the watch page, which re-initialises its decoders at the
/// change and draws the new size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_plays_an_rtmp_stream_through_a_resolution_change() {
    let Some(binary) = common::chromium() else {
        return;
    };
    if !common::ffmpeg_available() {
        return;
    }
    tokio::time::timeout(TEST_TIMEOUT, async {
        let stack = Stack::up(&["--relays", "1"]);
        let rtmp = stack.addr("ingest", api::status::Role::Rtmp).await;
        let small = common::rtmp::encode_flv(stack.dir.path(), "320x180", 4);
        let large = common::rtmp::encode_flv(stack.dir.path(), "640x360", 4);
        let mut publisher = common::rtmp::Publisher::publish(rtmp, "live", "obs")
            .await
            .expect("publish");
        // The small picture goes on (4 s at a time, as one continuous stream) until the page
        // has drawn it, however long the browser takes to start; then the large one.
        let (drawn_small, mut go) = tokio::sync::oneshot::channel::<()>();
        let feeding = tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            let mut offset = 0;
            loop {
                common::rtmp::replay(&mut publisher, &small, offset, start).await?;
                offset += 4_000;
                if !matches!(
                    go.try_recv(),
                    Err(tokio::sync::oneshot::error::TryRecvError::Empty)
                ) {
                    break;
                }
            }
            common::rtmp::replay(&mut publisher, &large, offset, start).await?;
            publisher.stop().await
        });
        assert!(
            stack
                .wait_listed("obs", true, Duration::from_secs(5))
                .await
                .is_some()
        );
        let mut browser = Browser::start(binary, &stack.dir.path().join("browser")).await;
        let page = browser
            .open(&format!("{}/watch/obs", stack.file.gateway_url))
            .await;
        until(
            &mut browser,
            &page,
            Duration::from_secs(15),
            "no picture",
            |v| n(v, "rendered") > 0.0,
        )
        .await;
        let width = "document.querySelector('canvas').width";
        let before = browser.eval(&page, width).await;
        let _ = drawn_small.send(());
        until(
            &mut browser,
            &page,
            Duration::from_secs(10),
            "no new codec setup",
            |v| n(v, "setups") >= 1.0,
        )
        .await;
        let at_change = n(&measured(&mut browser, &page).await, "rendered");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = measured(&mut browser, &page).await;
        let after_width = browser.eval(&page, width).await;
        feeding.await.expect("join").expect("send media");
        let drawn = n(&after, "rendered") - at_change;
        println!(
            "browser (RTMP, resolution change): canvas {before} then {after_width} pixels wide, {} setup change(s), {drawn} frames drawn in the 2 s after the change, {} audio frames",
            after["setups"], after["audio"]
        );
        assert_eq!(before, serde_json::json!(320), "{after}");
        assert_eq!(after_width, serde_json::json!(640), "{after}");
        assert!(drawn >= 0.8 * 2.0 * f64::from(FPS), "{drawn} frames drawn: {after}");
        assert!(n(&after, "audio") > 0.0, "no sound: {after}");
        until(
            &mut browser,
            &page,
            Duration::from_secs(3),
            "not ended",
            |v| v["state"] == "ended",
        )
        .await;
    })
    .await
    .expect("test timed out");
}

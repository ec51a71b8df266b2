//! The pages in a real browser: headless Chromium renders the status page's relays, streams
//! (with the protocol each is published over), the event timeline and the charts, with no
//! script error; and the watch page, opened over plain http at a name other than 127.0.0.1
//! (where browsers hide WebTransport and WebCodecs), says to open it over https instead of
//! blaming the browser.

mod common;

use std::time::{Duration, Instant};

use common::browser::Browser;
use common::{Stack, TEST_TIMEOUT};
use serde_json::{Value, json};
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

/// The opening tag of the element of `dom` with id `id`.
fn tag<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id}:\n{dom}"));
    let start = dom[..at].rfind('<').expect("tag start");
    let end = at + dom[at..].find('>').expect("tag end");
    &dom[start..=end]
}

fn hidden(dom: &str, id: &str) -> bool {
    tag(dom, id).contains(" hidden")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_page_over_http_at_a_public_name_asks_for_https() {
    let Some(browser) = common::chromium() else {
        return;
    };
    tokio::time::timeout(TEST_TIMEOUT, async {
        let stack = Stack::up(&["--relays", "1"]);
        let stop = CancellationToken::new();
        let (_, publisher) = stack
            .publish("over-http", 30, 2000, 30, None, stop.clone())
            .await;
        let gateway = &stack.file.gateway_url;
        let port = url::Url::parse(gateway)
            .expect("gateway URL")
            .port()
            .expect("gateway port");

        // A name that is not this machine's own, over plain http: not a secure context.
        let public = stack
            .dump_dom_with(
                browser,
                &format!("http://ghost.test:{port}/watch/over-http"),
                3000,
                &["--host-resolver-rules=MAP ghost.test 127.0.0.1"],
            )
            .await;
        assert!(
            public.contains("data-state=\"insecure\""),
            "page not insecure:\n{public}"
        );
        for needle in [
            "This page must be opened over https to play.",
            "only on pages opened over https",
            // Same host and path, on https's own port: where a public stack serves it.
            "href=\"https://ghost.test/watch/over-http\">https://ghost.test/watch/over-http</a>",
            &format!(
                "ghost watch over-http --gateway http://ghost.test:{port} --output - | ffplay -"
            ),
        ] {
            assert!(public.contains(needle), "page lacks {needle:?}:\n{public}");
        }
        for wrong in [
            "cannot play",
            "This browser",
            "Safari",
            "needs WebTransport",
        ] {
            assert!(!public.contains(wrong), "page says {wrong:?}:\n{public}");
        }
        // Nothing over the words: the picture's box is hidden, the message and the command
        // line shown, and the style sheet lets `hidden` win over the canvas's own display.
        assert!(hidden(&public, "picture"), "picture box shown:\n{public}");
        for shown in ["state", "detail", "secure", "fallback"] {
            assert!(!hidden(&public, shown), "#{shown} hidden:\n{public}");
        }
        let css = stack
            .http
            .get(format!("{gateway}/app/app.css"))
            .send()
            .await
            .expect("style sheet")
            .text()
            .await
            .expect("style sheet text");
        assert!(
            css.contains("[hidden] { display: none !important; }"),
            "`hidden` does not hide a block:\n{css}"
        );

        // The same page at 127.0.0.1, a secure context: it joins, reaches its relay over
        // WebTransport and receives the stream as ever, and asks for nothing. Watched in real
        // time: a virtual time budget runs out before a WebTransport handshake ends.
        let mut chromium = Browser::start(browser, &stack.dir.path().join("devtools")).await;
        let page = chromium.open(&format!("{gateway}/watch/over-http")).await;
        let started = Instant::now();
        let local = loop {
            let seen = chromium
                .eval(
                    &page,
                    "window.ghost && {
                       state: ghost.state,
                       frames: ghost.frames,
                       text: document.querySelector('main').innerText,
                       picture: getComputedStyle(document.getElementById('picture')).display,
                       secure: document.getElementById('secure').hidden,
                       fallback: document.getElementById('fallback').hidden,
                     }",
                )
                .await;
            if seen["state"] == "live" && seen["frames"].as_u64() >= Some(30) {
                break seen;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "page never played: {seen}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let text = local["text"].as_str().unwrap_or_default();
        assert!(!text.contains("https"), "page asks for https: {local}");
        assert!(!text.contains("cannot play"), "{local}");
        assert_eq!(local["picture"], json!("block"), "{local}");
        assert_eq!(local["secure"], json!(true), "{local}");
        assert_eq!(local["fallback"], json!(true), "{local}");
        println!(
            "watch page: over http at ghost.test it asks for https://ghost.test/watch/over-http \
             with the picture box hidden; at 127.0.0.1 it is live with {} frames received \
             after {:.0} ms",
            local["frames"],
            common::ms(started.elapsed())
        );
        stop.cancel();
        let _ = publisher.await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_page_names_what_a_browser_lacks_and_where_https_is() {
    let Some(binary) = common::chromium() else {
        return;
    };
    tokio::time::timeout(TEST_TIMEOUT, async {
        let stack = Stack::up(&["--relays", "1"]);
        // Chromium has all the page needs; its words for a browser that lacks a part come
        // from the page's own module, asked about such browsers. A page of a stream that
        // does not exist sits still once it has said so.
        let profile = stack.dir.path().join("devtools");
        let mut browser = Browser::start(binary, &profile).await;
        let url = format!("{}/watch/no-such-stream", stack.file.gateway_url);
        let page = browser.open(&url).await;
        let started = Instant::now();
        while browser.eval(&page, "ghost.state").await != json!("missing") {
            assert!(started.elapsed() < Duration::from_secs(10), "page never said missing");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let said = browser
            .eval(
                &page,
                &format!(
                    "import('{}/app/watch.js').then((m) => {{
                       const at = 'http://ghost.test:8080/watch/a%20show?at=1';
                       const said = (env) => m.message(m.obstacle(env), at, null);
                       return {{
                         both: said({{ secure: true }}),
                         transport: said({{ secure: true, VideoDecoder: true }}),
                         decoder: said({{ secure: true, WebSocket: true }}),
                         insecure: said({{ secure: false, WebSocket: true, VideoDecoder: true }}),
                         plays: m.obstacle({{ secure: true, WebSocket: true, VideoDecoder: true }}),
                         // Without WebTransport, or on Safari, the page goes to WebSocket.
                         bothCarriers: m.carriers({{ WebTransport: true }}),
                         noWebTransport: m.carriers({{ WebTransport: false }}),
                         safari: m.carriers({{ WebTransport: true, stalls: true }}),
                         rememberedWebSocket: m.carriers({{ WebTransport: true, remembered: 'websocket' }}),
                         meta: m.httpsAddress(at, 'https://watch.example.com:8443'),
                         metaDefaultPort: m.httpsAddress(at, 'https://watch.example.com'),
                         metaNotHttps: m.httpsAddress(at, 'http://watch.example.com:81'),
                         metaGarbage: m.httpsAddress(at, 'not a URL'),
                         ipv6: m.httpsAddress('http://[::1]:8080/watch/x', null),
                       }};
                     }})",
                    stack.file.gateway_url
                ),
            )
            .await;
        let text = |case: &str, field: &str| said[case][field].as_str().unwrap_or("").to_owned();
        for case in ["both", "transport", "decoder"] {
            assert_eq!(
                text(case, "text"),
                "This browser cannot play Ghost Stream.",
                "{said:#}"
            );
            assert_eq!(said[case]["https"], Value::Null, "{said:#}");
            assert_eq!(
                text(case, "command"),
                "ghost watch a show --gateway http://ghost.test:8080 --output - | ffplay -",
                "{said:#}"
            );
        }
        let websocket = "WebSocket, which every browser of the last decade has";
        let decoder = "WebCodecs' VideoDecoder or Media Source Extensions, which current Chrome, \
                       Edge, Firefox and Safari have";
        assert_eq!(
            text("both", "detail"),
            format!("It needs {websocket}, and {decoder}."),
            "{said:#}"
        );
        assert_eq!(text("transport", "detail"), format!("It needs {websocket}."));
        assert_eq!(text("decoder", "detail"), format!("It needs {decoder}."));
        assert_eq!(
            text("insecure", "text"),
            "This page must be opened over https to play."
        );
        assert!(!text("insecure", "detail").contains("cannot"), "{said:#}");
        assert_eq!(
            text("insecure", "https"),
            "https://ghost.test/watch/a%20show?at=1"
        );
        assert_eq!(said["plays"], Value::Null, "{said:#}");
        assert_eq!(said["bothCarriers"], json!(["webtransport", "websocket"]));
        for case in ["noWebTransport", "safari", "rememberedWebSocket"] {
            assert_eq!(said[case], json!(["websocket"]), "{case}: {said:#}");
        }
        // The gateway's `ghost-https` origin, when it names one, else port 443.
        for (case, want) in [
            ("meta", "https://watch.example.com:8443/watch/a%20show?at=1"),
            ("metaDefaultPort", "https://watch.example.com/watch/a%20show?at=1"),
            ("metaNotHttps", "https://ghost.test/watch/a%20show?at=1"),
            ("metaGarbage", "https://ghost.test/watch/a%20show?at=1"),
            ("ipv6", "https://[::1]/watch/x"),
        ] {
            assert_eq!(said[case], json!(want), "{case}: {said:#}");
        }
        println!("watch page: names what a browser lacks; https address: {said:#}");
    })
    .await
    .expect("test timed out");
}

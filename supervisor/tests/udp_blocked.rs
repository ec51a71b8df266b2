//! A viewer on a network that blocks UDP, as some offices, hotels and mobile carriers do:
//! headless Chromium in a network namespace of the test's own, which reaches the stack only
//! through ports the test forwards into it (the gateway over TCP; the relay over TCP and UDP),
//! and where an nftables rule drops every UDP datagram to the relay, silently, as such a
//! firewall does. The watch page falls back to WebSocket and plays; with the rule gone, the
//! same setup plays over WebTransport, so the block is what made the difference.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::browser::{Browser, Options, Page};
use common::netns::Namespace;
use common::{Stack, TEST_TIMEOUT};
use serde_json::Value;

const FPS: u32 = 30;
/// How long the page may take to show a picture over WebSocket when UDP is blocked.
const FALLBACK_WITHIN: Duration = Duration::from_secs(2);
/// How long the frames the page draws over the fallback are counted.
const WATCH: Duration = Duration::from_secs(5);
/// The nftables table that holds the block, in the namespace alone.
const TABLE: &str = "ghost_udp_blocked";

/// What the page measured (`window.ghost`).
async fn measured(browser: &mut Browser, page: &Page) -> Value {
    browser
        .eval(page, "JSON.parse(JSON.stringify(window.ghost || {}))")
        .await
}

fn n(v: &Value, field: &str) -> f64 {
    v[field].as_f64().unwrap_or(0.0)
}

/// Drops every UDP datagram to `port` as it arrives, counting them. Dropped on arrival (the
/// input hook), a datagram vanishes after the browser sent it, as on a network whose firewall
/// drops UDP: nothing tells the browser, and WebTransport waits in vain. Dropped as it leaves
/// (the output hook), the kernel would refuse the send itself (`EPERM`), and WebTransport
/// would fail at once: the easier case.
fn block_udp(namespace: &Namespace, port: u16) {
    let rules = format!(
        "table inet {TABLE} {{
           counter dropped {{}}
           chain input {{
             type filter hook input priority filter; policy accept;
             udp dport {port} counter name dropped drop
           }}
         }}"
    );
    namespace.command("nft", &["-f", "-"], Some(&rules));
}

/// UDP datagrams the block dropped so far.
fn dropped(namespace: &Namespace) -> u64 {
    let listed = namespace.command(
        "nft",
        &["--json", "list", "counter", "inet", TABLE, "dropped"],
        None,
    );
    let listed: Value = serde_json::from_str(&listed).expect("nft JSON");
    listed["nftables"]
        .as_array()
        .and_then(|items| items.iter().find_map(|i| i["counter"]["packets"].as_u64()))
        .unwrap_or_else(|| panic!("no counter in {listed}"))
}

fn unblock(namespace: &Namespace) {
    namespace.command("nft", &["delete", "table", "inet", TABLE], None);
}

/// Times from opening the watch page.
struct Opened {
    /// To a carrier connected to the relay (the race won).
    connected: Duration,
    /// To the first picture drawn.
    first_picture: Duration,
}

/// A fresh browser (profile `profile`, so no carrier remembered) in `namespace` opens the
/// gateway's home page, then the watch page of `id`.
async fn open_watch(
    stack: &Stack,
    binary: &str,
    namespace: &Namespace,
    profile: &str,
    id: &str,
) -> (Browser, Page, Opened) {
    let mut browser = Browser::start_in(
        binary,
        &stack.dir.path().join(profile),
        &Options::default(),
        namespace,
    )
    .await;
    let page = browser.open("about:blank").await;
    browser
        .navigate(&page, &format!("{}/", stack.file.gateway_url))
        .await
        .expect("home page");
    let started = Instant::now();
    browser
        .navigate(&page, &format!("{}/watch/{id}", stack.file.gateway_url))
        .await
        .expect("watch page");
    let mut connected = None;
    loop {
        let v = measured(&mut browser, &page).await;
        if connected.is_none() && v["carrier"].is_string() {
            connected = Some(started.elapsed());
        }
        if n(&v, "rendered") > 0.0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no picture in 10 s: the page shows {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first_picture = started.elapsed();
    let opened = Opened {
        connected: connected.unwrap_or(first_picture),
        first_picture,
    };
    (browser, page, opened)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_udp_to_the_relay_blocked_the_page_falls_back_to_websocket_and_plays() {
    let Some(binary) = common::chromium() else {
        return;
    };
    if !common::ffmpeg_available() {
        return;
    }
    let Some(namespace) = common::netns::with_nftables() else {
        return;
    };
    tokio::time::timeout(TEST_TIMEOUT, async {
        let stack = Stack::up(&["--relays", "1"]);
        let (id, mut ffmpeg, mut publisher) = stack.go_live("udp-blocked", "libopus", None).await;
        // The browser's network: the gateway, and the relay the gateway sends viewers to, at
        // the loopback addresses the stack gives (so the page is a secure context, as at
        // home), forwarded to the host's loopback.
        let gateway = url::Url::parse(&stack.file.gateway_url)
            .expect("gateway URL")
            .port()
            .expect("gateway port");
        let join = clients::watch::join(&stack.http, &stack.file.gateway_url, &id)
            .await
            .expect("join");
        let relay: SocketAddr = join.relay_addr.parse().unwrap_or_else(|e| {
            panic!("relay address {}: {e}", join.relay_addr);
        });
        assert!(relay.ip().is_loopback(), "relay at {relay}");
        let _forwards = [
            namespace.forward_tcp(gateway),
            namespace.forward_tcp(relay.port()),
            namespace.forward_udp(relay.port()),
        ];

        block_udp(&namespace, relay.port());
        let (mut browser, page, opened) =
            open_watch(&stack, binary, &namespace, "blocked", &id).await;
        let v = measured(&mut browser, &page).await;
        let tried = dropped(&namespace);
        println!(
            "udp blocked: {} connected {:.0} ms and first picture {:.0} ms after opening the \
             watch page; {tried} UDP datagrams to the relay dropped",
            v["carrier"],
            common::ms(opened.connected),
            common::ms(opened.first_picture),
        );
        assert_eq!(v["carrier"], "websocket", "{v}");
        assert!(
            tried > 0,
            "the page never tried UDP, so nothing was blocked"
        );
        assert!(
            opened.first_picture < FALLBACK_WITHIN,
            "first picture {:?} after opening the page, over {FALLBACK_WITHIN:?}",
            opened.first_picture
        );

        // Past the decoders' start-up burst, a few seconds of frames drawn and delay.
        tokio::time::sleep(Duration::from_secs(1)).await;
        browser.eval(&page, "window.ghost.reset()").await;
        let before = measured(&mut browser, &page).await;
        tokio::time::sleep(WATCH).await;
        let after = measured(&mut browser, &page).await;
        let drawn = n(&after, "rendered") - n(&before, "rendered");
        let sent = WATCH.as_secs_f64() * f64::from(FPS);
        println!(
            "udp blocked: {drawn} of {sent} video frames drawn in {} s over WebSocket; \
             capture-to-render delay p50 {} ms, p99 {} ms",
            WATCH.as_secs(),
            after["delay"]["p50"],
            after["delay"]["p99"],
        );
        assert_eq!(after["state"], "live", "{after}");
        assert_eq!(after["carrier"], "websocket", "{after}");
        assert!(
            drawn >= 0.9 * sent,
            "{drawn} of {sent} frames drawn: {after}"
        );
        assert!(after["delay"]["p50"].is_number(), "no delay shown: {after}");
        drop(browser);

        // The control: the same namespace, forwarders and stack without the rule, and a
        // fresh profile (the first browser's profile remembers WebSocket winning).
        unblock(&namespace);
        let (mut browser, page, opened) =
            open_watch(&stack, binary, &namespace, "unblocked", &id).await;
        let v = measured(&mut browser, &page).await;
        println!(
            "udp open: {} connected {:.0} ms and first picture {:.0} ms after opening the \
             watch page",
            v["carrier"],
            common::ms(opened.connected),
            common::ms(opened.first_picture),
        );
        assert_eq!(v["carrier"], "webtransport", "{v}");
        drop(browser);

        let _ = ffmpeg.start_kill();
        let _ = ffmpeg.wait().await;
        let _ = publisher.wait().await;
    })
    .await
    .expect("test timed out");
}

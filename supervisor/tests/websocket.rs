//! The TCP carrier: a relay serves viewers over WebSocket on the TCP port of its QUIC port's
//! number, with the same ticket check, admission cap (all carriers counted together),
//! groups, skipping and close codes; and its listener holds against strangers.

mod common;

use std::time::Duration;

use api::client::EndReason;
use api::status::Role;
use clients::watch::Transport;
use common::{Stack, TEST_TIMEOUT};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_util::sync::CancellationToken;
use transport::peer::Peer;
use transport::quic::{Closed, Session};
use wire::Code;

const FPS: u32 = 30;
const GROUP: u32 = 15;

/// Relay-1's WebSocket address: its QUIC port's number, over TCP.
async fn websocket_addr(stack: &Stack) -> std::net::SocketAddr {
    stack.addr("relay-1", Role::Quic).await
}

/// A WebSocket request to `addr` asking for the relay's subprotocol, as a viewer's is, for
/// a raw client that then misbehaves.
fn ghost_ws_request(addr: std::net::SocketAddr) -> tungstenite::handshake::client::Request {
    let mut request =
        tungstenite::client::IntoClientRequest::into_client_request(format!("ws://{addr}/"))
            .expect("request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        transport::ws::PROTOCOL.parse().expect("header"),
    );
    request
}

/// A hand-driven WebSocket viewer presenting `ticket` for `stream`: how the relay closed it.
async fn websocket_join(stack: &Stack, stream: &str, ticket: Vec<u8>) -> Closed {
    let addr = websocket_addr(stack).await;
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let session = transport::ws::connect(tcp, &format!("ws://{addr}/"))
        .await
        .expect("WebSocket handshake");
    common::join_until_closed(&session, stream, ticket, Duration::from_secs(8)).await
}

/// The relay's metric `ghost_relay_{name}` (a gauge or counter's value), 0 when absent.
async fn metric(stack: &Stack, name: &str) -> u64 {
    let value = stack
        .metric("relay-1", &format!("ghost_relay_{name}"))
        .await;
    value.map_or(0, |v| v as u64)
}

/// Polls the relay's `ghost_relay_{name}` until it reads `want`.
async fn wait_metric(stack: &Stack, name: &str, want: u64) {
    let name = format!("ghost_relay_{name}");
    stack
        .wait_metric("relay-1", &name, want as f64, Duration::from_secs(8))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_viewer_gets_what_the_other_carriers_get() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let stack = Stack::up(&["--relays", "1", "--relay-capacity", "3"]);
        let stop = CancellationToken::new();
        let (id, publisher) = stack
            .publish(
                "tcp-carrier",
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
        let forged = websocket_join(&stack, &id, forged).await;
        println!("forged ticket over WebSocket: {forged:?}");
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
        wait_metric(&stack, "viewers", 0).await;
        // One stream is native QUIC's alone (a WebSocket is one already): refused before
        // the ticket is spent or a seat taken.
        let addr = websocket_addr(&stack).await;
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let session = transport::ws::connect(tcp, &format!("ws://{addr}/"))
            .await
            .expect("WebSocket handshake");
        let ticket = stack.relay_ticket(&id);
        let asked = common::join_asking_until_closed(
            &session,
            &id,
            ticket,
            wire::Delivery::OneStream,
            Duration::from_secs(8),
        )
        .await;
        println!("one stream asked over WebSocket: {asked:?}");
        assert!(
            matches!(
                asked,
                Closed::ByPeer {
                    code: Code::Protocol,
                    ..
                }
            ),
            "{asked:?}"
        );
        wait_metric(&stack, "viewers", 0).await;

        let native = stack.watch(&id, None, None, stop.clone());
        let browser = stack.watch_on(Transport::WebTransport, &id, None, None, stop.clone());
        let tcp = stack.watch_on(Transport::WebSocket, &id, None, None, stop.clone());
        wait_metric(&stack, "viewers", 3).await;
        wait_metric(&stack, "websocket_viewers", 1).await;
        // The cap counts every carrier: a fourth viewer, over WebSocket, is refused.
        let full = websocket_join(&stack, &id, stack.relay_ticket(&id)).await;
        println!("relay full: fourth (WebSocket) viewer closed: {full:?}");
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
        let tcp = tcp.await.expect("join").expect("WebSocket viewer");
        for (who, s) in [("native", &native), ("WebTransport", &browser), ("WebSocket", &tcp)] {
            println!(
                "{who}: {} frames, {} groups from group {:?}, delay p50 {:.1} ms p99 {:.1} ms, {:?}",
                s.frames, s.groups, s.first_group, s.latency_ms.p50, s.latency_ms.p99, s.end_reason
            );
            assert_eq!(s.end_reason, EndReason::Ended, "{who}: {s:?}");
            common::lost_nothing(who, s, report.frames, GROUP);
        }
        wait_metric(&stack, "websocket_viewers", 0).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_websocket_viewer_skips_whole_groups_and_nobody_else_notices() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let stack = Stack::up(&["--relays", "1"]);
        let stop = CancellationToken::new();
        let (fps, group) = (30u32, 30u32);
        // Frames big enough (8 kB, about 2 Mbit/s) that a reader at a tenth of the rate
        // fills the socket buffers and the relay's queue within a group.
        let (id, publisher) = stack
            .publish("slow-tcp", fps, 8000, group, None, stop.clone())
            .await;
        let watch_for = Duration::from_secs(6);
        let slow_delay = Duration::from_secs_f64(10.0 / f64::from(fps));
        let slow = stack.watch_on(
            Transport::WebSocket,
            &id,
            Some(watch_for + Duration::from_secs(2)),
            Some(slow_delay),
            stop.clone(),
        );
        let native = stack.watch(&id, Some(watch_for), None, stop.clone());
        let browser = stack.watch_on(
            Transport::WebTransport,
            &id,
            Some(watch_for),
            None,
            stop.clone(),
        );
        let native = native.await.expect("join").expect("native viewer");
        let browser = browser.await.expect("join").expect("WebTransport viewer");
        let slow = slow.await.expect("join").expect("slow WebSocket viewer");
        let group_ms = f64::from(group) / f64::from(fps) * 1e3;
        println!(
            "slow WebSocket viewer: skipped {} groups of {}, max delay {:.0} ms; beside it: \
             native skipped {}, p99 {:.1} ms; WebTransport skipped {}, p99 {:.1} ms",
            slow.skipped_groups,
            slow.groups + slow.skipped_groups,
            slow.latency_ms.max,
            native.skipped_groups,
            native.latency_ms.p99,
            browser.skipped_groups,
            browser.latency_ms.p99,
        );
        assert!(slow.skipped_groups > 0, "{slow:?}");
        // At most 2 groups behind, plus a generous second for a loaded machine.
        assert!(
            slow.latency_ms.max < 2.0 * group_ms + 1000.0,
            "the slow viewer fell {:.0} ms behind",
            slow.latency_ms.max
        );
        assert_eq!(native.skipped_groups, 0, "{native:?}");
        assert_eq!(browser.skipped_groups, 0, "{browser:?}");
        stop.cancel();
        let _ = publisher.await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_on_the_websocket_port_take_no_seat_and_disturb_nobody() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        // Loopback is exempt from per-source caps unless asked: the flood comes from
        // 127.0.0.2, the viewer from 127.0.0.1, two addresses as two machines would be.
        let stack = Stack::up_with_env(
            "process",
            &["--relays", "1"],
            &[("GHOST_QUIC_LIMIT_LOOPBACK", "1")],
        );
        let addr = websocket_addr(&stack).await;
        let stop = CancellationToken::new();
        let (id, publisher) = stack
            .publish("strangers", FPS, 2000, GROUP, None, stop.clone())
            .await;

        // Garbage before the upgrade: an HTTP error or a plain close, never a seat.
        let mut garbage = tokio::net::TcpStream::connect(addr).await.expect("connect");
        garbage
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\xff garbage")
            .await
            .expect("write");
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(8), garbage.read_to_end(&mut answer))
            .await
            .expect("closed in time");
        let answer = String::from_utf8_lossy(&answer);
        println!(
            "garbage before the upgrade: {:?}",
            answer.lines().next().unwrap_or("(closed)")
        );
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
            "{answer}"
        );

        // A page of another site may not open the relay's WebSocket.
        let mut request = ghost_ws_request(addr);
        request
            .headers_mut()
            .insert("Origin", "https://evil.example".parse().expect("header"));
        let refused = tokio_tungstenite::connect_async(request).await;
        println!("foreign origin: {:?}", refused.as_ref().map(|_| ()));
        assert!(
            matches!(&refused, Err(tungstenite::Error::Http(r)) if r.status() == 403),
            "{refused:?}"
        );

        // No subprotocol: refused with the reason.
        let plain = tokio_tungstenite::connect_async(format!("ws://{addr}/")).await;
        assert!(
            matches!(&plain, Err(tungstenite::Error::Http(r)) if r.status() == 400),
            "{plain:?}"
        );

        // An oversized message (1 MiB where a join is a few hundred bytes): closed.
        let request = ghost_ws_request(addr);
        let (mut big, _) = tokio_tungstenite::connect_async(request.clone())
            .await
            .expect("handshake");
        let _ = big.send(WsMessage::Binary(vec![0u8; 1 << 20].into())).await;
        let ended = tokio::time::timeout(Duration::from_secs(8), async {
            loop {
                match big.next().await {
                    None | Some(Err(_)) | Some(Ok(WsMessage::Close(_))) => return,
                    Some(Ok(_)) => {}
                }
            }
        })
        .await;
        assert!(
            ended.is_ok(),
            "an oversized message left the connection open"
        );

        // A frame of no known type: closed with `protocol_error`.
        let (mut odd, _) = tokio_tungstenite::connect_async(request.clone())
            .await
            .expect("handshake");
        odd.send(WsMessage::Binary(vec![9u8, 0, 0, 0, 0].into()))
            .await
            .expect("send");
        let mut told = None;
        let _ = tokio::time::timeout(Duration::from_secs(8), async {
            while let Some(Ok(m)) = odd.next().await {
                if let WsMessage::Binary(b) = m
                    && b.first() == Some(&4)
                {
                    told = Some(u32::from_be_bytes([b[5], b[6], b[7], b[8]]));
                }
            }
        })
        .await;
        assert_eq!(told, Some(u32::from(Code::Protocol)), "close code");

        // A client that never sends its join: closed with `timeout`, holding no seat.
        let addr_ = addr;
        let silent = async move {
            let tcp = tokio::net::TcpStream::connect(addr_)
                .await
                .expect("connect");
            let session = transport::ws::connect(tcp, &format!("ws://{addr_}/"))
                .await
                .expect("handshake");
            let _messages = Session::open(&session).await.expect("session stream");
            let lost = tokio::time::timeout(Duration::from_secs(10), Peer::closed(&session))
                .await
                .expect("closed in time");
            Closed::from(&lost)
        };
        // Thousands of idle connections from one address, reopened as they are cut.
        let flood_stop = CancellationToken::new();
        let flood = tokio::spawn(common::idle_flood(
            [127, 0, 0, 2].into(),
            addr,
            2000,
            flood_stop.clone(),
        ));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let viewer = stack.watch_on(
            Transport::WebSocket,
            &id,
            Some(Duration::from_secs(3)),
            None,
            stop.clone(),
        );
        let silent = silent.await;
        println!("silent client: {silent:?}");
        assert!(
            matches!(
                silent,
                Closed::ByPeer {
                    code: Code::Timeout,
                    ..
                }
            ),
            "{silent:?}"
        );
        let viewer = viewer
            .await
            .expect("join")
            .expect("viewer through the flood");
        flood_stop.cancel();
        let (opened, closed) = flood.await.expect("flood");
        let refused = metric(&stack, "websocket_refused_total").await;
        println!(
            "websocket flood: one address opened {opened} connections, {closed} closed by the \
             relay ({refused} refused at once); a viewer beside it: {} frames, p99 {:.1} ms",
            viewer.frames, viewer.latency_ms.p99
        );
        assert_eq!(viewer.end_reason, EndReason::Duration, "{viewer:?}");
        assert!(viewer.frames >= u64::from(FPS), "{viewer:?}");
        assert!(refused > 0, "no connection of the flood was refused");
        assert!(
            closed > 100,
            "the flood kept its connections: {closed} closed"
        );
        // Nobody of these took a seat: only the viewer was ever seated.
        assert_eq!(metric(&stack, "seated_total").await, 1);
        stop.cancel();
        let _ = publisher.await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_whose_clock_is_off_still_reads_its_true_delay() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let stack = Stack::up(&["--relays", "1"]);
        let stop = CancellationToken::new();
        let (id, publisher) = stack
            .publish("skewed", FPS, 2000, GROUP, None, stop.clone())
            .await;
        // Two viewers whose clocks are 2 s off either way (a phone set by hand), on two
        // carriers; without the relay's clock, one would read 2 s of delay, the other none.
        let skewed = |transport, skew_us: i64| {
            let options = clients::watch::Options {
                gateway: stack.file.gateway_url.clone(),
                stream: id.clone(),
                ca: stack.state.ca(),
                duration: Some(Duration::from_secs(3)),
                read_delay: None,
                output: None,
                transport,
                endpoint: None,
                http: stack.http.clone(),
                measure_from_us: None,
                clock_skew_us: skew_us,
            };
            tokio::spawn(clients::watch::watch(options, stop.clone()))
        };
        let ahead = skewed(Transport::WebSocket, 2_000_000);
        let behind = skewed(Transport::Native, -2_000_000);
        let ahead = ahead.await.expect("join").expect("viewer ahead");
        let behind = behind.await.expect("join").expect("viewer behind");
        for (who, s, want) in [("2 s ahead", &ahead, -2000.0), ("2 s behind", &behind, 2000.0)] {
            let offset = s.clock_offset_ms.expect("a clock offset");
            println!(
                "viewer {who}: clock offset {offset:.1} ms, delay p50 {:.1} ms p99 {:.1} ms over {} frames",
                s.latency_ms.p50, s.latency_ms.p99, s.frames
            );
            assert!((offset - want).abs() < 100.0, "{who}: offset {offset} ms");
            assert!(s.frames >= u64::from(FPS), "{who}: {s:?}");
            assert!(
                s.latency_ms.p50 > 0.0 && s.latency_ms.p50 < 500.0,
                "{who}: delay {:?}",
                s.latency_ms
            );
        }
        stop.cancel();
        let _ = publisher.await;
    })
    .await
    .expect("test timed out");
}

//! Failure behaviour: garbage on every port, control restarts, relay crashes, up and down.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use api::client::EndReason;
use api::status::Role;
use bytes::BufMut;
use common::{Stack, TEST_TIMEOUT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use transport::quic::{self, Closed, Session, Windows};
use wire::{Code, Message};

async fn connect(
    stack: &Stack,
    addr: SocketAddr,
    alpn: &[u8],
    name: &str,
) -> anyhow::Result<(quinn::Endpoint, quinn::Connection)> {
    // Ingest serves subscriptions only to a relay's client certificate: present it, as a
    // relay does.
    let endpoint = if alpn == quic::ALPN_SUBSCRIBE {
        let relay = stack.state.pki().files(identity::Role::Relay);
        quic::client_as(
            &stack.state.ca(),
            alpn,
            &relay.client_identity()?,
            Windows::PUBLISHER,
        )?
    } else {
        quic::client(&stack.state.ca(), alpn, Windows::PUBLISHER)?
    };
    let conn = endpoint.connect(addr, name)?.await?;
    Ok((endpoint, conn))
}

/// How the server closed `conn`, waiting at most 3 s.
async fn closed_with(conn: &quinn::Connection) -> Option<Code> {
    let e = tokio::time::timeout(Duration::from_secs(3), conn.closed())
        .await
        .ok()?;
    match Closed::from(&e) {
        Closed::ByPeer { code, .. } => Some(code),
        _ => None,
    }
}

async fn garbage_udp(addr: SocketAddr) {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("udp");
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for i in 0..400 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = 1 + (seed as usize % 1400);
        let mut buf: Vec<u8> = (0..len).map(|j| (seed >> (j % 56)) as u8).collect();
        if i % 3 == 0 {
            // Looks like a QUIC long header, then nonsense.
            buf[0] = 0xc3;
        }
        let _ = sock.send_to(&buf, addr).await;
    }
}

async fn raw_tcp(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return Vec::new();
    };
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut out)).await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_and_harms_nothing() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let stack = Stack::up(&["--relays", "1"]);
        let stop = CancellationToken::new();
        let (id, publisher) = stack
            .publish("steady", 30, 4000, 30, None, stop.clone())
            .await;
        let viewer = stack.watch(&id, Some(Duration::from_secs(8)), None, stop.clone());
        tokio::time::sleep(Duration::from_millis(500)).await;

        let ingest = stack.addr("ingest", Role::Quic).await;
        let relay = stack.addr("relay-1", Role::Quic).await;
        let gateway = stack.addr("gateway", Role::Http).await;
        let control = stack.addr("control", Role::Grpc).await;

        // Garbage datagrams on every QUIC port.
        garbage_udp(ingest).await;
        garbage_udp(relay).await;

        // A wrong ALPN does not even get a connection.
        assert!(
            connect(&stack, ingest, b"nonsense/1", identity::INGEST_NAME)
                .await
                .is_err()
        );

        // Garbage on the session stream: closed with PROTOCOL.
        let (_e, conn) = connect(&stack, ingest, quic::ALPN_PUBLISH, identity::INGEST_NAME)
            .await
            .expect("connect");
        let (mut send, _recv) = conn.open_bi().await.expect("bi");
        send.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        assert_eq!(closed_with(&conn).await, Some(Code::Protocol));

        // An oversized length: closed with TOO_LARGE, before the body is sent.
        let (_e, conn) = connect(&stack, ingest, quic::ALPN_PUBLISH, identity::INGEST_NAME)
            .await
            .expect("connect");
        let (mut send, _recv) = conn.open_bi().await.expect("bi");
        send.write_all(&[1, 0xff, 0xff, 0xff, 0xf0])
            .await
            .expect("write");
        assert_eq!(closed_with(&conn).await, Some(Code::TooLarge));

        // Subscribing to an unknown stream at ingest: NOT_FOUND with a reason.
        let (_e, conn) = connect(&stack, ingest, quic::ALPN_SUBSCRIBE, identity::INGEST_NAME)
            .await
            .expect("connect");
        let mut session = Session::open(&conn).await.expect("session");
        session
            .send(&Message::Subscribe {
                stream_id: "nope".into(),
            })
            .await
            .expect("send");
        match session.recv().await {
            Ok(Some(Message::Error { code: c, reason })) => {
                assert_eq!(c, Code::NotFound);
                assert!(reason.contains("nope"), "{reason}");
            }
            other => panic!("expected a NOT_FOUND error, got {other:?}"),
        }

        // A join without a valid ticket at the relay: UNAUTHORIZED.
        let (_e, conn) = connect(&stack, relay, quic::ALPN_VIEW, identity::RELAY_NAME)
            .await
            .expect("connect");
        let mut session = Session::open(&conn).await.expect("session");
        session
            .send(&Message::Join {
                stream_id: id.clone(),
                ticket: bytes::Bytes::from_static(b"forged"),
                delivery: wire::Delivery::StreamPerGroup,
            })
            .await
            .expect("send");
        assert_eq!(closed_with(&conn).await, Some(Code::Unauthorized));

        // A publisher with a frame longer than the maximum: TOO_LARGE.
        let huge = stack.raw_publisher("huge").await;
        let conn = &huge.conn;
        let mut uni = conn.open_uni().await.expect("uni");
        let mut head = bytes::BytesMut::new();
        head.extend_from_slice(&wire::GroupHeader { sequence: 0 }.to_bytes());
        head.put_u64(1);
        head.put_u32(u32::MAX);
        uni.write_all(&head).await.expect("write");
        assert_eq!(closed_with(conn).await, Some(Code::TooLarge));

        // A publisher that vanishes in the middle of a frame: its stream ends by idle timeout.
        {
            let common::RawPublisher {
                session,
                conn,
                endpoint,
                ..
            } = stack.raw_publisher("vanishing").await;
            let mut uni = conn.open_uni().await.expect("uni");
            let frame = wire::Frame::new(1, &[7u8; 1000]).expect("frame");
            uni.write_all(&wire::GroupHeader { sequence: 0 }.to_bytes())
                .await
                .expect("write");
            uni.write_all(&frame.encoded()[..500]).await.expect("write");
            tokio::time::sleep(Duration::from_millis(100)).await;
            // Gone without a word: no close frame, just silence.
            drop((uni, session, conn));
            drop(endpoint);
        }
        assert!(
            stack
                .wait_listed("vanishing", false, Duration::from_secs(3))
                .await
                .is_some(),
            "a vanished publisher's stream must end"
        );

        // Unknown stream through the gateway: exit code 4.
        let out = stack
            .tokio_ghost()
            .args(["watch", "no-such-stream", "--duration", "1s"])
            .output()
            .await
            .expect("watch");
        assert_eq!(
            out.status.code(),
            Some(4),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );

        // Malformed HTTP on the gateway.
        let answer = raw_tcp(gateway, b"\x00\x01garbage\r\n\r\n").await;
        assert!(
            answer.is_empty() || answer.starts_with(b"HTTP/1.1 400"),
            "{:?}",
            String::from_utf8_lossy(&answer)
        );
        let long = format!(
            "POST /streams/{}/join HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
            "x".repeat(300)
        );
        let answer = raw_tcp(gateway, long.as_bytes()).await;
        assert!(
            String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 400"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
        let answer = raw_tcp(
            gateway,
            b"GET /streams/x/join HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(
            String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 405"),
            "{}",
            String::from_utf8_lossy(&answer)
        );

        // Malformed gRPC on control: raw garbage, then well-formed calls with bad arguments.
        let _ = raw_tcp(
            control,
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\xff\xff\xff",
        )
        .await;
        // As the services that may call these, so that the arguments are what is refused.
        let err = stack
            .control_as(identity::Role::Ingest)
            .await
            .create_stream(proto::control::CreateStreamRequest {
                name: String::new(),
                ingest_id: "x".into(),
                ..Default::default()
            })
            .await
            .expect_err("empty name refused");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        let err = stack
            .control_as(identity::Role::Relay)
            .await
            .relay_heartbeat(proto::control::RelayHeartbeatRequest {
                relay_id: "r".into(),
                addr: "nowhere".into(),
                ..Default::default()
            })
            .await
            .expect_err("bad address refused");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);

        // Nobody else noticed.
        let s = viewer.await.expect("join").expect("viewer");
        println!(
            "bad input: viewer got {} frames, skipped {}, p99 {:.1} ms",
            s.frames, s.skipped_groups, s.latency_ms.p99
        );
        assert_eq!(s.end_reason, EndReason::Duration, "{s:?}");
        assert_eq!(s.skipped_groups, 0, "{s:?}");
        assert!(s.frames >= 7 * 30, "{s:?}");
        let status = stack.status().await;
        assert!(status.ready, "{status:?}");
        assert!(
            stack.restarts().await.values().all(|r| *r == 0),
            "a service restarted: {status:?}"
        );
        stop.cancel();
        let _ = publisher.await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_restart_keeps_streams_flowing() {
    tokio::time::timeout(
        TEST_TIMEOUT,
        common::scenarios::control_restart(Stack::up(&["--relays", "1"])),
    )
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_relay_loses_its_viewers_and_is_replaced() {
    tokio::time::timeout(
        TEST_TIMEOUT,
        common::scenarios::relay_crash(&Stack::up(&["--relays", "2", "--relay-capacity", "2"])),
    )
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_then_down_leaves_nothing_behind() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let stack = Stack::up(&["--relays", "2"]);
        let status = stack.status().await;
        assert!(status.ready);
        let mut pids: Vec<u32> = status
            .services
            .iter()
            .filter_map(|s| s.instance.as_ref()?.pid)
            .collect();
        assert_eq!(pids.len(), 5);
        pids.push(stack.file.supervisor_pid);
        // Scaling past --max-relays is a usage error, and changes nothing.
        let scale = stack
            .ghost()
            .args(["scale", "relays", "99"])
            .output()
            .expect("scale");
        assert_eq!(
            scale.status.code(),
            Some(2),
            "{}",
            String::from_utf8_lossy(&scale.stderr)
        );
        assert!(String::from_utf8_lossy(&scale.stderr).contains("between 1 and 8"));
        // A second `up` is refused while the first runs.
        let again = stack
            .ghost()
            .args(["up", "-d", "--runtime", "process", "--ephemeral-ports"])
            .output()
            .expect("up");
        assert_eq!(again.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&again.stderr).contains("already up"));

        let down = stack.ghost().arg("down").output().expect("down");
        assert!(
            down.status.success(),
            "{}",
            String::from_utf8_lossy(&down.stderr)
        );
        for pid in pids {
            assert!(
                !orchestrator::runtime::process::alive(pid),
                "pid {pid} still alive after down"
            );
        }
        assert!(!stack.state.stack_file().exists());
        let down = stack.ghost().arg("down").output().expect("down");
        assert!(down.status.success());
        assert!(String::from_utf8_lossy(&down.stdout).contains("no stack running"));
        let status = stack.ghost().arg("status").output().expect("status");
        assert_eq!(status.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&status.stderr).contains("ghost up"));
    })
    .await
    .expect("test timed out");
}

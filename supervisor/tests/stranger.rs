//! A stranger on the network against a relay: connections that never join, and a join ticket
//! presented twice. Neither may keep a real viewer out.

mod common;

use std::time::Duration;

use api::client::EndReason;
use api::status::Role;
use common::{Stack, TEST_TIMEOUT};
use tokio_util::sync::CancellationToken;
use transport::quic::{self, Closed, Session, Windows};
use wire::{Code, Message};

/// A native QUIC connection to relay-1 that has done nothing yet.
async fn connect(stack: &Stack) -> (quinn::Endpoint, quinn::Connection) {
    let endpoint =
        quic::client(&stack.state.ca(), quic::ALPN_VIEW, Windows::RECEIVER).expect("endpoint");
    let addr = stack.addr("relay-1", Role::Quic).await;
    let conn = endpoint
        .connect(addr, identity::RELAY_NAME)
        .expect("connect")
        .await
        .expect("QUIC handshake");
    (endpoint, conn)
}

/// Joins `stream` on relay-1 with `ticket`: `Ok` once the relay answers `Init`, else how it
/// closed the connection.
async fn join(stack: &Stack, stream: &str, ticket: &[u8]) -> Result<quinn::Connection, Closed> {
    let (_endpoint, conn) = connect(stack).await;
    let mut session = Session::open(&conn).await.expect("session stream");
    session
        .send(&Message::Join {
            stream_id: stream.to_string(),
            ticket: ticket.to_vec().into(),
            delivery: wire::Delivery::StreamPerGroup,
        })
        .await
        .expect("send join");
    match tokio::time::timeout(Duration::from_secs(3), session.recv()).await {
        Ok(Ok(Some(Message::Init { .. }))) => Ok(conn),
        _ => {
            let lost = tokio::time::timeout(Duration::from_secs(3), conn.closed())
                .await
                .expect("closed in time");
            Err(Closed::from(&lost))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_join_hold_no_seat() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let stack = Stack::up(&["--relays", "1", "--relay-capacity", "3"]);
        let stop = CancellationToken::new();
        let (id, _publisher) = stack
            .publish("idle", 30, 2000, 30, None, stop.clone())
            .await;
        // As many connections as the relay has seats, each with its handshake done and no
        // `Join`, held open.
        let mut idle = Vec::new();
        for _ in 0..3 {
            idle.push(connect(&stack).await);
        }
        let viewer = stack
            .watch(&id, Some(Duration::from_secs(2)), None, stop.clone())
            .await
            .expect("join")
            .expect("a real viewer is admitted beside the idle connections");
        println!(
            "3 idle connections on a relay of capacity 3: the viewer got {} frames, {:?}",
            viewer.frames, viewer.end_reason
        );
        assert_eq!(viewer.end_reason, EndReason::Duration, "{viewer:?}");
        assert!(viewer.frames > 30, "{viewer:?}");
        // The idle ones are closed once their time to join is up.
        for (_endpoint, conn) in &idle {
            let lost = tokio::time::timeout(Duration::from_secs(10), conn.closed())
                .await
                .expect("idle connection closed");
            assert!(
                matches!(
                    Closed::from(&lost),
                    Closed::ByPeer {
                        code: Code::Timeout,
                        ..
                    }
                ),
                "{lost:?}"
            );
        }
        stop.cancel();
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_ticket_seats_one_viewer() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let stack = Stack::up(&["--relays", "1"]);
        let stop = CancellationToken::new();
        let (id, _publisher) = stack
            .publish("once", 30, 2000, 30, None, stop.clone())
            .await;
        // A ticket as the gateway hands it out.
        let answer: serde_json::Value = stack
            .http
            .post(format!("{}/streams/{id}/join", stack.file.gateway_url))
            .send()
            .await
            .expect("join request")
            .json()
            .await
            .expect("join answer");
        let hex = answer["ticket"].as_str().expect("ticket");
        let ticket: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect();
        let first = join(&stack, &id, &ticket).await;
        assert!(first.is_ok(), "the ticket's first use: {first:?}");
        let again = join(&stack, &id, &ticket).await;
        println!("the same ticket again: {again:?}");
        assert!(
            matches!(
                again,
                Err(Closed::ByPeer {
                    code: Code::Unauthorized,
                    ..
                })
            ),
            "{again:?}"
        );
        stop.cancel();
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_actions_are_the_operators_alone() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let stack = Stack::up(&["--relays", "1", "--max-relays", "2"]);
        let stop = CancellationToken::new();
        let (id, _publisher) = stack
            .publish("admin", 30, 2000, 30, None, stop.clone())
            .await;
        let viewer = stack.watch(&id, Some(Duration::from_secs(4)), None, stop.clone());
        let url = &stack.file.supervisor_url;
        // A local process without the token, and a web page's cross-site form post.
        let bare = stack
            .http
            .post(format!("{url}/api/down"))
            .send()
            .await
            .expect("request");
        let form = stack
            .http
            .post(format!("{url}/api/down"))
            .header("origin", "https://attacker.example")
            .header("content-type", "application/x-www-form-urlencoded")
            .body("stop=1")
            .send()
            .await
            .expect("request");
        let token = std::fs::read_to_string(stack.state.admin_token()).expect("token");
        let huge = stack
            .http
            .post(format!("{url}/api/kill"))
            .bearer_auth(token.trim())
            .json(&serde_json::json!({ "target": "relay-1", "hold_ms": u64::MAX }))
            .send()
            .await
            .expect("request");
        println!(
            "no token: {}; cross-site form post: {}; hold_ms u64::MAX with the token: {}",
            bare.status(),
            form.status(),
            huge.status()
        );
        assert_eq!(bare.status(), reqwest::StatusCode::FORBIDDEN);
        assert_eq!(form.status(), reqwest::StatusCode::FORBIDDEN);
        assert_eq!(huge.status(), reqwest::StatusCode::BAD_REQUEST);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(stack.state.admin_token())
                .expect("token")
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "the token is its owner's alone: {mode:o}");
        }
        // The operator's CLI carries the token.
        let scaled = stack
            .ghost()
            .args(["scale", "relays", "2"])
            .output()
            .expect("ghost scale");
        assert!(
            scaled.status.success(),
            "{}",
            String::from_utf8_lossy(&scaled.stderr)
        );
        // Nothing of the above disturbed the viewer.
        let viewer = viewer.await.expect("join").expect("viewer");
        assert_eq!(viewer.end_reason, EndReason::Duration, "{viewer:?}");
        assert!(stack.listed("admin").await, "the stack is still up");
        stop.cancel();
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_goes_away_ends_the_cli_quietly() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let stack = Stack::up(&["--relays", "1"]);
        // pipefail: the pipeline's status is ghost's own, not only head's.
        let out = std::process::Command::new("bash")
            .args(["-o", "pipefail", "-c"])
            .arg(format!(
                "'{}' --state-dir '{}' status | head -1",
                common::GHOST,
                stack.dir.path().display()
            ))
            .output()
            .expect("bash");
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!("ghost status | head -1: {}, stderr {stderr:?}", out.status);
        assert!(out.status.success(), "{}: {stderr}", out.status);
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
        // A reader gone before the first line, every time: the pipe's read end closed before
        // ghost writes.
        for args in [&["status"][..], &["streams"], &["keys", "list"]] {
            let mut child = stack
                .ghost()
                .args(args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("ghost");
            drop(child.stdout.take());
            let out = child.wait_with_output().expect("ghost");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{args:?}: {}: {stderr}", out.status);
            assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        }
    })
    .await
    .expect("test timed out");
}

//! Each stream's ingest protocol, end to end: what control was told when the stream was
//! created comes back in the gateway's `GET /streams`, in `/api/status`, and in
//! `ghost streams` and `ghost status`, as JSON and for people. The synthetic publisher goes
//! through ingest, which names no protocol (QUIC); the RTMP stream is registered at control
//! as an RTMP ingest would register it.

mod common;

use api::Protocol;
use common::{Stack, TEST_TIMEOUT};
use tokio_util::sync::CancellationToken;

const WANT: [(&str, Protocol); 2] = [("over-quic", Protocol::Quic), ("over-rtmp", Protocol::Rtmp)];

fn sorted(mut listed: Vec<(String, Protocol)>) -> Vec<(String, Protocol)> {
    listed.sort();
    listed
}

fn want() -> Vec<(String, Protocol)> {
    WANT.iter().map(|(n, p)| (n.to_string(), *p)).collect()
}

/// The protocol column of the line naming `name` in a table for people, where the name is
/// the second column and the protocol the third.
fn protocol_column<'a>(table: &'a str, name: &str) -> Option<&'a str> {
    table.lines().find_map(|line| {
        let cells: Vec<&str> = line.split_whitespace().collect();
        (cells.get(1) == Some(&name)).then(|| cells.get(2).copied())?
    })
}

fn ghost_stdout(stack: &Stack, args: &[&str]) -> String {
    let out = stack.ghost().args(args).output().expect("run ghost");
    assert!(
        out.status.success(),
        "ghost {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listing_says_how_each_stream_is_published() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let stack = Stack::up(&["--relays", "1"]);
        let stop = CancellationToken::new();
        let (_, publisher) = stack
            .publish("over-quic", 30, 2000, 30, None, stop.clone())
            .await;
        let rtmp = stack.create_at_control("over-rtmp", "rtmp").await;
        assert_eq!(rtmp.protocol, "rtmp");

        let gateway = stack.streams().await.expect("the gateway lists streams");
        let gateway = sorted(gateway.into_iter().map(|s| (s.name, s.protocol)).collect());
        assert_eq!(gateway, want(), "GET /streams");

        let status = stack.status().await;
        let status = sorted(
            status
                .streams
                .into_iter()
                .map(|s| (s.name, s.protocol))
                .collect(),
        );
        assert_eq!(status, want(), "/api/status");

        let json: Vec<api::gateway::Stream> =
            serde_json::from_str(&ghost_stdout(&stack, &["streams", "--json"])).expect("JSON");
        let json = sorted(json.into_iter().map(|s| (s.name, s.protocol)).collect());
        assert_eq!(json, want(), "ghost streams --json");

        let json: api::status::Status =
            serde_json::from_str(&ghost_stdout(&stack, &["status", "--json"])).expect("JSON");
        let json = sorted(
            json.streams
                .into_iter()
                .map(|s| (s.name, s.protocol))
                .collect(),
        );
        assert_eq!(json, want(), "ghost status --json");

        let streams = ghost_stdout(&stack, &["streams"]);
        let status = ghost_stdout(&stack, &["status"]);
        for (name, protocol) in WANT {
            assert_eq!(
                protocol_column(&streams, name),
                Some(protocol.as_str()),
                "ghost streams:\n{streams}"
            );
            assert_eq!(
                protocol_column(&status, name),
                Some(protocol.as_str()),
                "ghost status:\n{status}"
            );
        }
        println!("protocol: listed by the gateway, the status and the CLI:\n{streams}");

        stop.cancel();
        let _ = publisher.await;
    })
    .await
    .expect("test timed out");
}

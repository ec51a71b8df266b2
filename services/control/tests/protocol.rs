//! Control over gRPC, started as its binary starts it, on 127.0.0.1:0: the protocol a stream
//! is created with comes back wherever control lists streams, and the ingest's heartbeats,
//! which name no protocol until ingest sets one, leave it as it was.

use std::time::Duration;

use clap::Parser;
use proto::control as pb;
use tokio_util::sync::CancellationToken;

fn protocols(streams: &[pb::Stream]) -> Vec<(&str, &str)> {
    let mut out: Vec<(&str, &str)> = streams
        .iter()
        .map(|s| (s.name.as_str(), s.protocol.as_str()))
        .collect();
    out.sort_unstable();
    out
}

#[tokio::test]
async fn the_protocol_given_at_create_comes_back_and_survives_heartbeats() {
    let config = control::Config::try_parse_from([
        "ghost-control",
        "--listen",
        "127.0.0.1:0",
        "--ops-listen",
        "127.0.0.1:0",
    ])
    .expect("config");
    let server = control::Server::bind(&config).await.expect("bind");
    let addr = server.grpc_addr().expect("address");
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(server.run(shutdown.clone()));
    let mut client = server::control::client(&format!("http://{addr}"), None).expect("client");

    tokio::time::timeout(Duration::from_secs(20), async {
        let create = |name: &str, protocol: &str| pb::CreateStreamRequest {
            name: name.into(),
            ingest_id: "ingest-1".into(),
            protocol: protocol.into(),
        };
        let obs = client
            .create_stream(create("from-obs", "rtmp"))
            .await
            .expect("create")
            .into_inner()
            .stream
            .expect("stream");
        assert_eq!(obs.protocol, "rtmp");
        let cli = client
            .create_stream(create("from-ghost-publish", ""))
            .await
            .expect("create")
            .into_inner()
            .stream
            .expect("stream");
        assert_eq!(cli.protocol, "quic", "empty, from an older ingest, is QUIC");
        let refused = client
            .create_stream(create("from-elsewhere", "srt"))
            .await
            .expect_err("unknown protocol refused");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);

        let want = vec![("from-ghost-publish", "quic"), ("from-obs", "rtmp")];
        // The ingest lists both streams, naming no protocol (as it does until it sets one).
        for _ in 0..3 {
            client
                .ingest_heartbeat(pb::IngestHeartbeatRequest {
                    ingest_id: "ingest-1".into(),
                    addr: "127.0.0.1:4433".into(),
                    streams: [&obs, &cli]
                        .into_iter()
                        .map(|s| pb::Stream {
                            protocol: String::new(),
                            ..s.clone()
                        })
                        .collect(),
                })
                .await
                .expect("heartbeat");
        }
        let listed = client
            .list_streams(pb::ListStreamsRequest {})
            .await
            .expect("list")
            .into_inner()
            .streams;
        assert_eq!(protocols(&listed), want);
        let status = client
            .status(pb::StatusRequest {})
            .await
            .expect("status")
            .into_inner();
        assert_eq!(protocols(&status.streams), want);
    })
    .await
    .expect("test timed out");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("control stops in time")
        .expect("join")
        .expect("control ran cleanly");
}

//! `ghost bench fanout` in its short form, and the metrics every service exposes.

mod common;

use api::status::Role;
use common::{Stack, TEST_TIMEOUT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_fanout_reports_every_field() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let stack = Stack::up(&["--relays", "1"]);
        // With perf (the test command installs it), a profile of the relay too.
        let perf = std::process::Command::new("perf")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        let profile = stack.dir.path().join("relay.perf");
        let mut bench = stack.tokio_ghost();
        if perf {
            bench
                .arg("bench")
                .arg("fanout")
                .arg("--profile")
                .arg(&profile);
        } else {
            eprintln!("no perf: the relay profile is not tried (the test command installs it)");
            bench.args(["bench", "fanout"]);
        }
        let out = bench
            .args(["--viewers", "6", "--slow-viewers", "1"])
            .args(["--webtransport", "2", "--websocket", "2"])
            .args([
                "--frame-size",
                "2000",
                "--duration",
                "3s",
                "--ramp",
                "1s",
                "--json",
            ])
            .output()
            .await
            .expect("bench");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Every field of the contract must be there: a missing one fails to parse.
        let v: api::client::FanoutReport =
            serde_json::from_slice(&out.stdout).expect("one JSON report");
        println!("bench fanout (short): {v:?}");
        assert_eq!(v.viewers, 6);
        assert_eq!(v.admitted, 7);
        assert_eq!(v.rejected, 0);
        assert!(v.delivered_ratio > 0.99, "{v:?}");
        assert!(v.egress_mbps > 0.0, "{v:?}");
        assert!(
            v.relay_cpu_s > 0.0,
            "relay CPU read through the status API: {v:?}"
        );
        assert!(v.relay_rss_mb > 0.0, "{v:?}");
        // Who had the machine: the relays' share and the bench's own.
        assert!((2.5..6.0).contains(&v.measured_s), "{v:?}");
        assert!(v.relay_share > 0.0 && v.bench_share > 0.0, "{v:?}");
        assert!(v.relay_share + v.bench_share <= 1.05, "{v:?}");
        if perf {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let size = std::fs::metadata(&profile).map(|m| m.len()).unwrap_or(0);
            assert!(size > 0, "no profile written: {stderr}");
            assert!(stderr.contains("relay profile written"), "{stderr}");
            let report = std::process::Command::new("perf")
                .args(["report", "--stdio", "-i"])
                .arg(&profile)
                .output()
                .expect("perf report");
            let text = String::from_utf8_lossy(&report.stdout);
            assert!(
                text.contains("ghost-relay"),
                "the profile is of the relay:\n{text}"
            );
            println!("bench fanout --profile: {size} bytes of perf data of the relay");
        }
        // Browsers' figures apart, and as good as the native ones.
        assert_eq!(v.webtransport_viewers, 2);
        assert_eq!(v.webtransport_admitted, 2, "{v:?}");
        assert!(v.webtransport_delivered_ratio > 0.99, "{v:?}");
        assert_eq!(v.websocket_viewers, 2);
        assert_eq!(v.websocket_admitted, 2, "{v:?}");
        assert!(v.websocket_delivered_ratio > 0.99, "{v:?}");
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bench_whose_viewers_cannot_watch_says_why_and_fails() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let stack = Stack::up(&["--relays", "1"]);
        let out = stack
            .tokio_ghost()
            .args([
                "bench",
                "fanout",
                "--stream",
                "no-such-stream",
                "--viewers",
                "2",
            ])
            .args(["--duration", "1s", "--ramp", "0s"])
            .output()
            .await
            .expect("bench");
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!(
            "bench with no stream to watch: {:?}; {stderr}",
            out.status.code()
        );
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("2 failed: viewer: no such stream"),
            "{stderr}"
        );
        assert!(stderr.contains("no viewer was admitted"), "{stderr}");
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_serves_health_and_metrics() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let stack = Stack::up(&["--relays", "1"]);
        let http = reqwest::Client::new();
        let ops = [
            ("control", Role::Ops, "ghost_control_streams"),
            ("ingest", Role::Ops, "ghost_ingest_publishers"),
            ("relay-1", Role::Ops, "ghost_relay_viewers"),
            ("gateway", Role::Http, "ghost_gateway_joins"),
        ];
        for (service, role, metric) in ops {
            let addr = stack.addr(service, role).await;
            let health = http
                .get(format!("http://{addr}/health"))
                .send()
                .await
                .expect("health");
            assert!(health.status().is_success(), "{service} /health");
            let text = http
                .get(format!("http://{addr}/metrics"))
                .send()
                .await
                .expect("metrics")
                .text()
                .await
                .expect("text");
            assert!(
                text.contains(metric),
                "{service} /metrics lacks {metric}:\n{text}"
            );
        }
        let text = http
            .get(format!("{}/metrics", stack.file.supervisor_url))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        assert!(
            text.contains("ghost_supervisor_services_healthy 4"),
            "{text}"
        );
        // The `health` subcommand images use for HEALTHCHECK.
        let relay_ops = stack.addr("relay-1", Role::Ops).await;
        let bin = std::path::Path::new(common::GHOST).with_file_name("ghost-relay");
        let out = std::process::Command::new(bin)
            .args(["health", &relay_ops.to_string()])
            .output()
            .expect("health subcommand");
        assert!(out.status.success());
        let out = std::process::Command::new(
            std::path::Path::new(common::GHOST).with_file_name("ghost-relay"),
        )
        .args(["health", "127.0.0.1:1"])
        .output()
        .expect("health subcommand");
        assert_eq!(out.status.code(), Some(1));
    })
    .await
    .expect("test timed out");
}

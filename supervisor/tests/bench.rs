//! `ghost bench fanout` in its short form, and the metrics every service exposes.

mod common;

use common::{Stack, TEST_TIMEOUT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_fanout_reports_every_field() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let stack = Stack::up(&["--relays", "1"]);
        let out = stack
            .tokio_ghost()
            .args(["bench", "fanout", "--viewers", "6", "--slow-viewers", "1"])
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
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
        println!("bench fanout (short): {v}");
        for field in [
            "viewers",
            "admitted",
            "rejected",
            "delivered_ratio",
            "skipped_groups",
            "latency_ms",
            "egress_mbps",
            "relay_cpu_s",
            "relay_cpu_s_per_gb",
            "relay_rss_mb",
            "bench_cpu_s",
        ] {
            assert!(!v[field].is_null(), "missing {field}: {v}");
        }
        assert_eq!(v["viewers"], 6);
        assert_eq!(v["admitted"], 7);
        assert_eq!(v["rejected"], 0);
        assert!(v["delivered_ratio"].as_f64().expect("ratio") > 0.99, "{v}");
        assert!(v["egress_mbps"].as_f64().expect("egress") > 0.0, "{v}");
        assert!(v["relay_cpu_s"].as_f64().expect("cpu") > 0.0, "{v}");
        assert!(v["relay_rss_mb"].as_f64().expect("rss") > 0.0, "{v}");
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
            ("control", "ops", "ghost_control_streams"),
            ("ingest", "ops", "ghost_ingest_publishers"),
            ("relay-1", "ops", "ghost_relay_viewers"),
            ("gateway", "http", "ghost_gateway_joins"),
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
        let relay_ops = stack.addr("relay-1", "ops").await;
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

//! The gateway against a stranger, in-process on 127.0.0.1:0: a slowloris client is cut
//! after the header-read timeout while others are served, and a join loop from one address
//! gets 429 with a clear problem body.

#![allow(missing_docs)]

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

async fn start(limits: gateway::Limits) -> (std::net::SocketAddr, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        // Control is nowhere: these tests never get past the gateway's own limits.
        let _ = gateway::serve_with(listener, "http://127.0.0.1:1", None, &limits, stop).await;
    });
    (addr, shutdown)
}

#[tokio::test]
async fn a_slowloris_client_is_cut_after_the_header_read_timeout() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let limits = gateway::Limits {
            header_read_timeout: Duration::from_secs(1).into(),
            ..Default::default()
        };
        let (addr, shutdown) = start(limits).await;
        let mut slow = tokio::net::TcpStream::connect(addr).await.expect("connect");
        slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("write");
        let started = Instant::now();
        // One header line a while, never the blank line that ends them.
        let trickle = async {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if slow.write_all(b"X-Slow: 1\r\n").await.is_err() {
                    return;
                }
                let mut byte = [0u8; 1];
                if let Ok(Ok(0) | Err(_)) =
                    tokio::time::timeout(Duration::from_millis(1), slow.read(&mut byte)).await
                {
                    return;
                }
            }
        };
        // Meanwhile another client is served.
        let health = reqwest::get(format!("http://{addr}/health"))
            .await
            .expect("health");
        assert!(health.status().is_success());
        tokio::time::timeout(Duration::from_secs(10), trickle)
            .await
            .expect("the slow client was cut");
        let cut = started.elapsed();
        println!("slowloris client cut after {:.2} s", cut.as_secs_f64());
        assert!(cut >= Duration::from_millis(900), "cut too early: {cut:?}");
        shutdown.cancel();
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn a_join_loop_from_one_address_gets_429() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let limits = gateway::Limits {
            join_rate: 1.0,
            join_burst: 5,
            join_limit_loopback: true,
            ..Default::default()
        };
        let (addr, shutdown) = start(limits).await;
        let http = reqwest::Client::new();
        let mut statuses = Vec::new();
        let mut body = None;
        for _ in 0..50 {
            let resp = http
                .post(format!("http://{addr}/streams/s/join"))
                .send()
                .await
                .expect("join");
            statuses.push(resp.status().as_u16());
            if resp.status().as_u16() == 429 && body.is_none() {
                let retry = resp.headers().get("retry-after").cloned();
                assert!(retry.is_some(), "429 without Retry-After");
                body = Some(resp.json::<api::Problem>().await.expect("problem body"));
            }
        }
        let limited = statuses.iter().filter(|s| **s == 429).count();
        println!("50 joins: {limited} answered 429; {body:?}");
        // The burst reaches control (here: unavailable, 503), the rest is refused.
        assert!(statuses[..5].iter().all(|s| *s == 503), "{statuses:?}");
        assert!(limited >= 40, "{statuses:?}");
        let body = body.expect("a 429 body");
        assert_eq!(body.error, api::gateway::TOO_MANY_JOINS);
        assert!(body.reason.contains("too many joins"), "{}", body.reason);
        shutdown.cancel();
    })
    .await
    .expect("test timed out");
}

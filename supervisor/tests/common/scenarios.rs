//! Failure scenarios shared by the process, Docker and Swarm runtime tests.

use std::time::{Duration, Instant};

use api::client::EndReason;
use api::status::{EventKind, Kind};
use clients::exit::Outcome as _;
use supervisor::exit;
use tokio_util::sync::CancellationToken;

use super::{Stack, containers, ms};

/// Control killed and held down while a stream plays: existing viewers lose nothing, a new
/// stream is refused clearly, the directory is rebuilt after control returns.
pub async fn control_restart(stack: Stack) {
    {
        let stop = CancellationToken::new();
        let (id, publisher) = stack
            .publish("survivor", 30, 4000, 30, None, stop.clone())
            .await;
        let viewer = stack.watch(&id, Some(Duration::from_secs(7)), None, stop.clone());
        tokio::time::sleep(Duration::from_millis(1000)).await;

        let out = stack
            .ghost()
            .args(["chaos", "kill", "control", "--hold", "2s"])
            .output()
            .expect("chaos");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("killed control"));

        // While control is down, a new stream is refused with a clear message.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let refused = stack
            .tokio_ghost()
            .args([
                "publish",
                "--name",
                "newcomer",
                "--synthetic",
                "--duration",
                "1s",
            ])
            .output()
            .await
            .expect("publish");
        let err = String::from_utf8_lossy(&refused.stderr).to_string();
        assert_eq!(refused.status.code(), Some(1), "{err}");
        assert!(err.contains("control plane unavailable"), "{err}");

        // The supervisor brings it back; the directory is rebuilt from heartbeats.
        let deadline = Instant::now() + Duration::from_secs(10);
        let back = loop {
            let st = stack.status().await;
            let c = st
                .services
                .iter()
                .find(|s| s.name == "control")
                .expect("control");
            if c.restarts == 1 && c.state == api::status::State::Running {
                break Instant::now();
            }
            assert!(
                Instant::now() < deadline,
                "control did not come back: {st:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let listed = stack
            .wait_listed("survivor", true, Duration::from_secs(5))
            .await
            .expect("listed again");
        let rebuilt_ms = ms(listed.duration_since(back));
        let s = viewer.await.expect("join").expect("viewer");
        println!(
            "control restart: stream listed again {rebuilt_ms:.0} ms after control returned; viewer got {} frames, skipped {}",
            s.frames, s.skipped_groups
        );
        assert!(rebuilt_ms < 2000.0, "rebuilt after {rebuilt_ms:.0} ms");
        assert_eq!(s.end_reason, EndReason::Duration, "{s:?}");
        assert_eq!(s.skipped_groups, 0, "frames lost during the outage: {s:?}");
        assert!(s.frames >= 6 * 30, "{s:?}");
        stop.cancel();
        let _ = publisher.await;
    }
}

/// A relay killed while viewers watch (two relays of capacity two, four viewers).
pub async fn relay_crash(stack: &Stack) {
    {
        let stop = CancellationToken::new();
        let (id, publisher) = stack
            .publish("crash", 30, 2000, 30, None, stop.clone())
            .await;
        // Four viewers fill both relays (two each).
        let viewers: Vec<_> = (0..4)
            .map(|_| stack.watch(&id, Some(Duration::from_secs(8)), None, stop.clone()))
            .collect();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let out = stack
            .ghost()
            .args(["chaos", "kill-relay", "--id", "relay-1"])
            .output()
            .expect("chaos");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let killed = Instant::now();
        // A new viewer is admitted once the replacement is up.
        let admitted = loop {
            let probe = stack.watch(&id, Some(Duration::from_millis(300)), None, stop.clone());
            if let Ok(Ok(s)) = probe.await
                && s.frames > 0
                && s.relay_id == "relay-1"
            {
                break Instant::now();
            }
            assert!(
                killed.elapsed() < Duration::from_secs(10),
                "no replacement relay admitted viewers"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let mut lost = 0;
        for v in viewers {
            let s = v.await.expect("join").expect("viewer");
            match s.relay_id.as_str() {
                "relay-1" => {
                    assert_eq!(s.end_reason, EndReason::RelayLost, "{s:?}");
                    lost += 1;
                }
                _ => {
                    assert_eq!(s.end_reason, EndReason::Duration, "{s:?}");
                    assert_eq!(s.skipped_groups, 0, "{s:?}");
                }
            }
        }
        println!(
            "relay crash: {lost} viewers lost their relay; replacement admitted a viewer {:.0} ms after the kill",
            ms(admitted.duration_since(killed))
        );
        assert_eq!(lost, 2);
        stop.cancel();
        let _ = publisher.await;
    }
}

/// The stack of [`spike`]: one relay of four seats, up to three, extras removed after 3 s idle.
pub const SPIKE: &[&str] = &[
    "--relays",
    "1",
    "--max-relays",
    "3",
    "--relay-capacity",
    "4",
    "--scale-down-after",
    "3s",
];

/// A spike on a stack up with [`SPIKE`]: twelve viewers at once. The excess is refused quickly, new
/// relays admit it within the spec's 3 s, and once it is over the extra relays are drained
/// and removed, leaving four containers of the stack.
pub async fn spike(stack: &Stack) {
    const V: usize = 4;
    let stop = CancellationToken::new();
    let (id, publisher) = stack
        .publish("spike", 30, 2000, 30, None, stop.clone())
        .await;
    let t0 = Instant::now();
    // 3V viewers at once; a refused one retries after a short pause, as a player would.
    let mut viewers = tokio::task::JoinSet::new();
    for _ in 0..3 * V {
        let gateway = stack.file.gateway_url.clone();
        let ca = stack.state.ca();
        let id = id.clone();
        let stop = stop.clone();
        viewers.spawn(async move {
            let mut refused_at = None;
            loop {
                let options = clients::watch::Options {
                    gateway: gateway.clone(),
                    stream: id.clone(),
                    ca: ca.clone(),
                    duration: Some(Duration::from_secs(3)),
                    read_delay: None,
                    output: None,
                    transport: clients::watch::Transport::Native,
                    endpoint: None,
                    http: reqwest::Client::new(),
                    measure_from_us: None,
                    clock_skew_us: 0,
                };
                let asked = Instant::now();
                match clients::watch::watch(options, stop.clone()).await {
                    Ok(s) => return (refused_at, s, asked),
                    Err(e) if e.code() == exit::REJECTED => {
                        refused_at.get_or_insert((Instant::now(), ms(asked.elapsed())));
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => panic!("viewer failed: {e:#}"),
                }
            }
        });
    }
    let mut first_refusal: Option<Instant> = None;
    let mut refusal_ms: Vec<f64> = Vec::new();
    let mut first_new_admit: Option<Instant> = None;
    let mut relays_used = std::collections::BTreeSet::new();
    while let Some(done) = viewers.join_next().await {
        let (refused, summary, asked) = done.expect("viewer task");
        assert!(summary.frames > 0, "{summary:?}");
        relays_used.insert(summary.relay_id.clone());
        if let Some((at, took)) = refused {
            refusal_ms.push(took);
            first_refusal = Some(first_refusal.map_or(at, |f| f.min(at)));
        }
        if summary.relay_id != "relay-1" {
            let admitted =
                asked + Duration::from_secs_f64(summary.first_frame_ms.unwrap_or(0.0) / 1e3);
            first_new_admit = Some(first_new_admit.map_or(admitted, |f| f.min(admitted)));
        }
    }
    let first_refusal = first_refusal.expect("the excess was refused");
    let first_new_admit = first_new_admit.expect("a viewer was admitted on new capacity");
    let spike_ms = ms(first_new_admit.saturating_duration_since(first_refusal));
    let worst_refusal = refusal_ms.iter().cloned().fold(0.0, f64::max);
    println!(
        "spike: {} viewers refused at first (slowest refusal {worst_refusal:.0} ms), first admitted on new capacity {spike_ms:.0} ms after the first refusal; relays used {relays_used:?}; all served after {:.1} s",
        refusal_ms.len(),
        t0.elapsed().as_secs_f64()
    );
    assert!(
        worst_refusal < 1000.0,
        "a refusal took {worst_refusal:.0} ms"
    );
    assert!(
        spike_ms < 3000.0,
        "new capacity admitted after {spike_ms:.0} ms"
    );

    // After the spike, the extra relays are drained and removed.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = stack.status().await;
        let relays = status
            .services
            .iter()
            .filter(|s| s.kind == Kind::Relay)
            .count();
        if relays == 1 {
            let kinds: Vec<EventKind> = status.events.iter().map(|e| e.kind).collect();
            for kind in [EventKind::Capacity, EventKind::Drain, EventKind::ScaleDown] {
                assert!(kinds.contains(&kind), "no {kind:?} in {kinds:?}");
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "extra relays were not removed: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        containers(stack).await.len(),
        4,
        "removed relays leave no container"
    );
    stop.cancel();
    let _ = publisher.await;
}

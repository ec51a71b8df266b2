//! Failure scenarios shared by the process and Docker runtime tests.

use std::time::{Duration, Instant};

use api::client::EndReason;
use tokio_util::sync::CancellationToken;

use super::{Stack, ms};

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
pub async fn relay_crash(stack: Stack) {
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

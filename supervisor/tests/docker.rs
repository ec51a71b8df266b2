//! The stack as containers on the real Docker Engine: bring-up and tear-down, crashes,
//! capacity on demand, control outages and supervisor restarts. CI fails these tests when no
//! engine answers; elsewhere they are skipped with a message.

mod common;

use std::time::{Duration, Instant};

use api::client::EndReason;
use api::status::{EventKind, Kind};
use common::{DOCKER, Stack, containers, docker_available, ms};
use supervisor::exit;
use supervisor::runtime::docker::stack_id;
use tokio_util::sync::CancellationToken;

const LONG: Duration = Duration::from_secs(240);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_up_then_down_leaves_nothing() {
    if !docker_available().await {
        return;
    }
    let _one = DOCKER.lock().await;
    tokio::time::timeout(LONG, async {
        let started = Instant::now();
        let stack = Stack::up_on("docker", &["--relays", "2"]);
        println!(
            "docker: stack up in {:.1} s (images built or reused)",
            started.elapsed().as_secs_f64()
        );
        let status = stack.status().await;
        assert_eq!(status.runtime, "docker", "{status:?}");
        assert!(status.ready, "{status:?}");
        assert_eq!(containers(&stack).await.len(), 5);
        let network = format!("ghost-{}", stack_id(&stack.state));
        let docker = supervisor::runtime::docker::connect()
            .await
            .expect("docker");
        assert!(docker.inspect_network(&network, None).await.is_ok());

        let down = stack.ghost().arg("down").output().expect("down");
        assert!(
            down.status.success(),
            "{}",
            String::from_utf8_lossy(&down.stderr)
        );
        assert!(
            containers(&stack).await.is_empty(),
            "containers left behind"
        );
        assert!(
            docker.inspect_network(&network, None).await.is_err(),
            "network left behind"
        );
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_relay_crash() {
    if !docker_available().await {
        return;
    }
    let _one = DOCKER.lock().await;
    let stack = Stack::up_on("docker", &["--relays", "2", "--relay-capacity", "2"]);
    tokio::time::timeout(LONG, common::scenarios::relay_crash(stack))
        .await
        .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_control_outage() {
    if !docker_available().await {
        return;
    }
    let _one = DOCKER.lock().await;
    let stack = Stack::up_on("docker", &["--relays", "1"]);
    tokio::time::timeout(LONG, common::scenarios::control_restart(stack))
        .await
        .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_spike_gets_relays_on_demand_then_scales_back() {
    if !docker_available().await {
        return;
    }
    let _one = DOCKER.lock().await;
    tokio::time::timeout(LONG, async {
        const V: usize = 4;
        let stack = Stack::up_on(
            "docker",
            &["--relays", "1", "--max-relays", "3", "--relay-capacity", "4", "--scale-down-after", "3s"],
        );
        let stop = CancellationToken::new();
        let (id, publisher) = stack.publish("spike", 30, 2000, 30, None, stop.clone()).await;
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
                    let options = supervisor::client::watch::Options {
                        gateway: gateway.clone(),
                        stream: id.clone(),
                        ca: ca.clone(),
                        duration: Some(Duration::from_secs(3)),
                        read_delay: None,
                        output: None,
                        transport: supervisor::client::watch::Transport::Native,
                        endpoint: None,
                        http: reqwest::Client::new(),
                        measure_from_us: None,
                    };
                    let asked = Instant::now();
                    match supervisor::client::watch::watch(options, stop.clone()).await {
                        Ok(s) => return (refused_at, s, asked),
                        Err(e) if exit::code_of(&e) == exit::REJECTED => {
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
                let admitted = asked + Duration::from_secs_f64(summary.first_frame_ms.unwrap_or(0.0) / 1e3);
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
        assert!(worst_refusal < 1000.0, "a refusal took {worst_refusal:.0} ms");
        assert!(spike_ms < 3000.0, "new capacity admitted after {spike_ms:.0} ms");

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
            assert!(Instant::now() < deadline, "extra relays were not removed: {status:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(containers(&stack).await.len(), 4, "removed relays leave no container");
        stop.cancel();
        let _ = publisher.await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_supervisor_crash_is_adopted_not_duplicated() {
    if !docker_available().await {
        return;
    }
    let _one = DOCKER.lock().await;
    tokio::time::timeout(LONG, async {
        let stack = Stack::up_on("docker", &["--relays", "1"]);
        let stop = CancellationToken::new();
        let (id, publisher) = stack
            .publish("orphan", 30, 2000, 30, None, stop.clone())
            .await;
        let viewer = stack.watch(&id, Some(Duration::from_secs(8)), None, stop.clone());
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let before = containers(&stack).await;
        assert_eq!(before.len(), 4);

        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(stack.file.supervisor_pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill supervisor");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(
            containers(&stack).await,
            before,
            "containers keep running without it"
        );

        let again = stack
            .ghost()
            .args([
                "up",
                "-d",
                "--runtime",
                "docker",
                "--ephemeral-ports",
                "--relays",
                "1",
            ])
            .output()
            .expect("up again");
        assert!(
            again.status.success(),
            "{}",
            String::from_utf8_lossy(&again.stderr)
        );
        let mut after = containers(&stack).await;
        let mut before = before;
        after.sort();
        before.sort();
        assert_eq!(after, before, "adopted, not duplicated");
        let status = stack.status().await;
        let adopted = status
            .events
            .iter()
            .filter(|e| e.kind == EventKind::Adopt)
            .count();
        assert_eq!(adopted, 4, "{status:?}");

        let s = viewer.await.expect("join").expect("viewer");
        println!(
            "supervisor crash: {adopted} containers adopted; viewer got {} frames, skipped {}",
            s.frames, s.skipped_groups
        );
        assert_eq!(s.end_reason, EndReason::Duration, "{s:?}");
        assert_eq!(s.skipped_groups, 0, "{s:?}");
        stop.cancel();
        let _ = publisher.await;

        // A supervisor that dies for good: `ghost down` still removes its containers.
        let pid = stack.state.read().expect("stack file").supervisor_pid;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill supervisor");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let down = stack.ghost().arg("down").output().expect("down");
        assert!(
            down.status.success(),
            "{}",
            String::from_utf8_lossy(&down.stderr)
        );
        assert!(
            containers(&stack).await.is_empty(),
            "containers left behind"
        );
    })
    .await
    .expect("test timed out");
}

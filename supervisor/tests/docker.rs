//! The stack as containers on the real Docker Engine: bring-up and tear-down, crashes,
//! capacity on demand, control outages and supervisor restarts. CI fails these tests when no
//! engine answers; elsewhere they are skipped with a message.

mod common;

use std::time::{Duration, Instant};

use api::client::EndReason;
use api::status::EventKind;
use common::{DOCKER, Stack, containers, docker_available};
use orchestrator::runtime::docker::stack_id;
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
        let docker = orchestrator::runtime::docker::connect()
            .await
            .expect("docker");
        assert!(docker.inspect_network(&network, None).await.is_ok());

        // Viewers reach a relay's container over QUIC and over WebSocket: its port is
        // published for UDP and TCP alike.
        let stop = tokio_util::sync::CancellationToken::new();
        let (id, publisher) = stack
            .publish("docker-carriers", 30, 2000, 30, None, stop.clone())
            .await;
        for transport in [
            clients::watch::Transport::Native,
            clients::watch::Transport::WebSocket,
        ] {
            let watched = stack
                .watch_on(
                    transport,
                    &id,
                    Some(Duration::from_secs(2)),
                    None,
                    stop.clone(),
                )
                .await
                .expect("viewer task")
                .expect("viewer");
            println!(
                "docker: a {transport:?} viewer got {} frames in 2 s, delay p50 {:.1} ms",
                watched.frames, watched.latency_ms.p50
            );
            assert!(watched.frames >= 30, "{transport:?}: {watched:?}");
        }
        stop.cancel();
        let _ = publisher.await;

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
    tokio::time::timeout(LONG, common::scenarios::relay_crash(&stack))
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
    let stack = Stack::up_on("docker", common::scenarios::SPIKE);
    tokio::time::timeout(LONG, common::scenarios::spike(&stack))
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

//! How services are run on a host others share: containers confined and bounded (read-only,
//! no capability, limits, rotated logs), a stack that outlives a Docker Engine outage, and
//! the process runtime's logs rotated by size. Docker tests fail in CI without an engine and
//! are skipped elsewhere, like those of `docker.rs`.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use api::client::{EndReason, WatchSummary};
use bollard::query_parameters::{KillContainerOptionsBuilder, UploadToContainerOptionsBuilder};
use clients::exit::Outcome as _;
use clients::watch;
use common::{DOCKER, Stack, containers, docker_available, ms};
use orchestrator::runtime::docker::{LABEL_STACK, stack_id};
use supervisor::exit;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch as signal;
use tokio_util::sync::CancellationToken;

const LONG: Duration = Duration::from_secs(300);

/// A tar holding one file, `name`.
fn tar_of(name: &str) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let data = b"written by a stranger\n";
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, name, &data[..])
        .expect("tar entry");
    tar.into_inner().expect("tar")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_run_read_only_without_capabilities_within_limits() {
    if !docker_available().await {
        return;
    }
    let _one = DOCKER.lock().await;
    tokio::time::timeout(LONG, async {
        let stack = Stack::up_on(
            "docker",
            &[
                "--relays",
                "1",
                "--relay-memory",
                "96MiB",
                "--container-memory",
                "200MiB",
                "--container-pids",
                "128",
                "--log-max-size",
                "5MiB",
                "--log-max-files",
                "2",
            ],
        );
        let docker = orchestrator::runtime::docker::connect()
            .await
            .expect("docker");
        let found = containers(&stack).await;
        assert_eq!(found.len(), 4, "{found:?}");
        for (name, id) in &found {
            let info = docker.inspect_container(id, None).await.expect("inspect");
            let host = info.host_config.expect("host config");
            assert_eq!(host.readonly_rootfs, Some(true), "{name}");
            assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]), "{name}");
            let security = host.security_opt.unwrap_or_default();
            assert!(
                security.iter().any(|o| o.starts_with("no-new-privileges")),
                "{name}: {security:?}"
            );
            let memory = (if name.ends_with("-relay-1") { 96 } else { 200 }) << 20;
            assert_eq!(host.memory, Some(memory), "{name}");
            assert_eq!(host.memory_swap, Some(memory), "{name}: no swap on top");
            assert_eq!(host.pids_limit, Some(128), "{name}");
            let log = host.log_config.expect("log config");
            assert_eq!(log.typ.as_deref(), Some("json-file"), "{name}");
            let options = log.config.unwrap_or_default();
            assert_eq!(
                options.get("max-size").map(String::as_str),
                Some("5242880"),
                "{name}"
            );
            assert_eq!(
                options.get("max-file").map(String::as_str),
                Some("2"),
                "{name}"
            );
            // Nothing can be written into the container: not its root file system, not
            // the state directory's files mounted into it.
            let mounts: Vec<String> = info
                .mounts
                .unwrap_or_default()
                .into_iter()
                .filter_map(|m| m.destination)
                .collect();
            let targets = std::iter::once(("/".to_string(), "root file system"))
                .chain(mounts.into_iter().map(|m| (m, "mount")));
            for (dir, what) in targets {
                let dir = dir.as_str();
                let options = UploadToContainerOptionsBuilder::default().path(dir).build();
                let upload = docker
                    .upload_to_container(
                        id,
                        Some(options),
                        bollard::body_full(tar_of("planted").into()),
                    )
                    .await;
                let Err(e) = upload else {
                    panic!("{name}: a file was written into its {what} ({dir})");
                };
                println!("engine: {name}: writing into {dir} refused: {e}");
                if dir == "/" {
                    assert!(e.to_string().contains("read-only"), "{name}: {e}");
                }
            }
            // What the pids limit leaves room for: the threads each service uses.
            if let Some(pid) = info.state.and_then(|s| s.pid).filter(|p| *p > 0) {
                let status =
                    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                let threads = status
                    .lines()
                    .find_map(|l| l.strip_prefix("Threads:"))
                    .map(str::trim)
                    .unwrap_or("?");
                println!("engine: {name}: {threads} threads");
            }
        }

        // Read-only and without capabilities, the stack still streams.
        let stop = CancellationToken::new();
        let (id, publisher) = stack
            .publish("confined", 30, 4000, 30, None, stop.clone())
            .await;
        let s = stack
            .watch(&id, Some(Duration::from_secs(2)), None, stop.clone())
            .await
            .expect("join")
            .expect("viewer");
        assert_eq!(s.end_reason, EndReason::Duration, "{s:?}");
        assert!(s.frames > 30, "{s:?}");
        stop.cancel();
        let _ = publisher.await;
    })
    .await
    .expect("test timed out");
}

/// A Unix-socket proxy of the engine's socket that the test can cut (closing the open
/// connections, refusing new ones: the socket file is gone) and restore, as an engine
/// restart looks to its clients.
struct Proxy {
    path: PathBuf,
    up: signal::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    fn start(dir: &Path) -> Proxy {
        Proxy::start_with(dir, false)
    }

    /// A proxy that, with `hold_events`, never answers an events subscription: the
    /// supervisor hears of no death, as when an event is lost.
    fn start_with(dir: &Path, hold_events: bool) -> Proxy {
        let upstream = std::env::var("DOCKER_HOST")
            .ok()
            .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"));
        let path = dir.join("docker.sock");
        let (up, rx) = signal::channel(true);
        let listener = UnixListener::bind(&path).expect("bind the proxy");
        let task = tokio::spawn(serve(listener, path.clone(), upstream, rx, hold_events));
        Proxy { path, up, task }
    }

    fn docker_host(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    fn cut(&self) {
        self.up.send_replace(false);
    }

    fn restore(&self) {
        self.up.send_replace(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut listener: UnixListener,
    path: PathBuf,
    upstream: PathBuf,
    mut up: signal::Receiver<bool>,
    hold_events: bool,
) {
    loop {
        let mut open = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((mut client, _)) = accepted else { continue };
                    let upstream = upstream.clone();
                    open.spawn(async move {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        // The request line, to tell an events subscription.
                        let mut head = vec![0u8; 4096];
                        let Ok(n) = client.read(&mut head).await else { return };
                        head.truncate(n);
                        let line_end = head.iter().position(|b| *b == b'\n').unwrap_or(n);
                        if hold_events && String::from_utf8_lossy(&head[..line_end]).contains("/events") {
                            // Held open, never answered, until the client goes.
                            let _ = client.read(&mut [0u8; 1]).await;
                            return;
                        }
                        if let Ok(mut engine) = UnixStream::connect(&upstream).await
                            && engine.write_all(&head).await.is_ok()
                        {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
                        }
                    });
                }
                cut = up.wait_for(|up| !*up) => {
                    let closed = cut.is_err();
                    drop(cut);
                    if closed {
                        return;
                    }
                    break;
                }
                Some(_) = open.join_next() => {}
            }
        }
        drop(listener);
        let _ = std::fs::remove_file(&path);
        open.shutdown().await;
        if up.wait_for(|up| *up).await.is_err() {
            return;
        }
        listener = UnixListener::bind(&path).expect("bind the proxy again");
    }
}

/// A stack on the proxy. On drop (a failed test too), the proxy is restored first so the
/// supervisor can stop its containers, and whatever is left of the stack is removed through
/// the engine's own socket: only this stack's containers and network, by its label.
struct Outage {
    stack: Option<Stack>,
    proxy: Proxy,
}

impl Outage {
    /// A Docker stack, with `extra` flags for `ghost up`, whose supervisor reaches the engine
    /// through `proxy`.
    fn up(proxy: Proxy, extra: &[&str]) -> Outage {
        let host = proxy.docker_host();
        let stack = Stack::up_with_env("docker", extra, &[("DOCKER_HOST", host.as_str())]);
        Outage {
            stack: Some(stack),
            proxy,
        }
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        self.proxy.restore();
        let Some(stack) = self.stack.take() else {
            return;
        };
        let id = stack_id(&stack.state);
        drop(stack);
        let label = format!("label={LABEL_STACK}={id}");
        if let Ok(out) = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter", &label])
            .output()
        {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect();
            if !ids.is_empty() {
                let _ = std::process::Command::new("docker")
                    .args(["rm", "-f"])
                    .args(&ids)
                    .output();
            }
        }
        let _ = std::process::Command::new("docker")
            .args(["network", "rm", &format!("ghost-{id}")])
            .output();
    }
}

/// Watches `stream` until `stop`, joining again through the gateway (as a player would)
/// whenever its relay is lost or it is turned away. Every watch's summary, in order.
async fn keep_watching(
    gateway: String,
    ca: PathBuf,
    stream: String,
    stop: CancellationToken,
) -> Vec<Result<WatchSummary, String>> {
    let mut watches = Vec::new();
    while !stop.is_cancelled() {
        let options = watch::Options {
            gateway: gateway.clone(),
            stream: stream.clone(),
            ca: ca.clone(),
            duration: None,
            read_delay: None,
            output: None,
            transport: watch::Transport::Native,
            endpoint: None,
            http: reqwest::Client::new(),
            measure_from_us: None,
            clock_skew_us: 0,
        };
        match watch::watch(options, stop.clone()).await {
            Ok(s) => {
                let lost = s.end_reason == EndReason::RelayLost;
                watches.push(Ok(s));
                if !lost {
                    continue;
                }
            }
            Err(e) => {
                let code = e.code();
                // Only a refusal for room, or a relay unreachable, is expected here.
                if code != exit::REJECTED && code != exit::LOST {
                    watches.push(Err(format!("{e:#}")));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    watches
}

/// Viewers per relay, as control's directory has them.
async fn viewers(stack: &Stack) -> HashMap<String, u32> {
    stack
        .status()
        .await
        .relays
        .into_iter()
        .map(|r| (r.id, r.viewers))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_outlives_an_engine_outage_and_replaces_what_died_meanwhile() {
    if !docker_available().await {
        return;
    }
    let _one = DOCKER.lock().await;
    let dir = tempfile::Builder::new()
        .prefix("ghost-engine-")
        .tempdir()
        .expect("temp dir");
    let outage = Outage::up(
        Proxy::start(dir.path()),
        &["--relays", "2", "--relay-capacity", "2"],
    );
    let result = tokio::time::timeout(LONG, async {
        let stack = outage.stack.as_ref().expect("stack");
        let docker = orchestrator::runtime::docker::connect()
            .await
            .expect("docker");
        let stop = CancellationToken::new();
        let (id, publisher) = stack
            .publish("outage", 30, 2000, 30, None, stop.clone())
            .await;
        // Three viewers on two relays of two seats: two on the relay that carries the stream
        // first, one on the other.
        let watching = CancellationToken::new();
        let mut all = Vec::new();
        for _ in 0..3 {
            let viewer = tokio::spawn(keep_watching(
                stack.file.gateway_url.clone(),
                stack.state.ca(),
                id.clone(),
                watching.clone(),
            ));
            all.push(viewer);
            let want = all.len() as u32;
            let deadline = Instant::now() + Duration::from_secs(10);
            while viewers(stack).await.values().sum::<u32>() < want {
                assert!(Instant::now() < deadline, "viewer {want} never joined");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let seats = viewers(stack).await;
        let (victim, _) = seats
            .iter()
            .find(|(_, v)| **v == 1)
            .unwrap_or_else(|| panic!("no relay with one viewer: {seats:?}"));
        let victim = victim.clone();
        println!("engine outage: viewers per relay {seats:?}; {victim} will die meanwhile");

        // The engine goes away for 20 s: the supervisor says so.
        let cut = Instant::now();
        outage.proxy.cut();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = stack.status().await;
            if let Some(e) = &status.runtime_error {
                println!(
                    "engine outage: status says unreachable after {:.0} ms: {e}",
                    ms(cut.elapsed())
                );
                break;
            }
            assert!(Instant::now() < deadline, "never shown unreachable: {status:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let shown = stack
            .ghost()
            .arg("status")
            .output()
            .expect("ghost status");
        let text = String::from_utf8_lossy(&shown.stdout);
        assert!(shown.status.success(), "{text}");
        assert!(text.contains("docker unreachable"), "{text}");

        // Meanwhile a relay dies, killed through the engine's own socket.
        let container = format!("ghost-{}-{victim}", stack_id(&stack.state));
        docker
            .kill_container(
                &container,
                Some(
                    KillContainerOptionsBuilder::default()
                        .signal("SIGKILL")
                        .build(),
                ),
            )
            .await
            .expect("kill the relay behind the supervisor's back");
        tokio::time::sleep(Duration::from_secs(20).saturating_sub(cut.elapsed())).await;

        // The engine is back: the supervisor notices, reconciles and replaces the relay.
        outage.proxy.restore();
        let back = Instant::now();
        let replaced = loop {
            let status = stack.status().await;
            let relay = status
                .services
                .iter()
                .find(|s| s.name == victim)
                .expect("the relay is still in the stack");
            if status.runtime_error.is_none()
                && relay.state == api::status::State::Running
                && relay.healthy
                && relay.restarts >= 1
                && status.relays.iter().any(|r| r.id == victim)
            {
                break Instant::now();
            }
            assert!(
                back.elapsed() < Duration::from_secs(30),
                "no working stack 30 s after the engine came back: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let recovery = ms(replaced.duration_since(back));
        // A viewer joins the replacement (the other relay is full).
        let seated = loop {
            let seats = viewers(stack).await;
            if seats.values().sum::<u32>() >= 3 {
                break Instant::now();
            }
            assert!(
                back.elapsed() < Duration::from_secs(30),
                "the lost viewer never got back in: {seats:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        println!(
            "engine outage: relay {victim} replaced {recovery:.0} ms after the engine came back (outage {:.1} s), its viewer back in after {:.0} ms",
            back.duration_since(cut).as_secs_f64(),
            ms(seated.duration_since(back))
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        watching.cancel();

        let mut lost = 0;
        for viewer in all {
            let watches = viewer.await.expect("viewer task");
            let failures: Vec<&String> = watches.iter().filter_map(|w| w.as_ref().err()).collect();
            assert!(failures.is_empty(), "{failures:?}");
            let summaries: Vec<&WatchSummary> = watches.iter().filter_map(|w| w.as_ref().ok()).collect();
            let last = summaries.last().expect("watched");
            assert_eq!(last.end_reason, EndReason::Duration, "{summaries:?}");
            assert!(last.frames > 0, "{summaries:?}");
            if summaries.len() == 1 {
                // Not on the relay that died: nothing lost through the whole outage.
                assert_eq!(last.skipped_groups, 0, "{last:?}");
            } else {
                // On the relay that died: lost it once, then watched again.
                lost += 1;
                assert_eq!(summaries.len(), 2, "{summaries:?}");
                assert_eq!(summaries[0].end_reason, EndReason::RelayLost, "{summaries:?}");
                assert_eq!(summaries[0].relay_id, victim);
            }
        }
        assert_eq!(lost, 1, "one viewer was on the relay that died");
        stop.cancel();
        let _ = publisher.await;
    })
    .await;
    drop(outage);
    result.expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_scaled_away_while_the_engine_is_away_is_removed_once_it_is_back() {
    if !docker_available().await {
        return;
    }
    let _one = DOCKER.lock().await;
    let dir = tempfile::Builder::new()
        .prefix("ghost-engine-")
        .tempdir()
        .expect("temp dir");
    let outage = Outage::up(Proxy::start(dir.path()), &["--relays", "2"]);
    let result = tokio::time::timeout(LONG, async {
        let stack = outage.stack.as_ref().expect("stack");
        let relay_2 = format!("ghost-{}-relay-2", stack_id(&stack.state));
        outage.proxy.cut();
        let deadline = Instant::now() + Duration::from_secs(10);
        while stack.status().await.runtime_error.is_none() {
            assert!(Instant::now() < deadline, "never shown unreachable");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Scaled down while the engine is away: the stop cannot reach it.
        let scaled = stack
            .ghost()
            .args(["scale", "relays", "1"])
            .output()
            .expect("ghost scale");
        assert!(
            scaled.status.success(),
            "{}",
            String::from_utf8_lossy(&scaled.stderr)
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        let names: Vec<String> = containers(stack)
            .await
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert!(names.contains(&relay_2), "{names:?}");

        outage.proxy.restore();
        let back = Instant::now();
        loop {
            let names: Vec<String> = containers(stack)
                .await
                .into_iter()
                .map(|(n, _)| n)
                .collect();
            if !names.contains(&relay_2) {
                break;
            }
            assert!(
                back.elapsed() < Duration::from_secs(30),
                "relay-2 still runs 30 s after the engine came back: {names:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!(
            "engine outage: the relay scaled away meanwhile removed {:.0} ms after the engine came back",
            ms(back.elapsed())
        );
        let status = stack.status().await;
        assert!(status.ready, "{status:?}");
        assert_eq!(
            containers(stack).await.len(),
            4,
            "the stack keeps the rest"
        );
    })
    .await;
    drop(outage);
    result.expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_death_whose_event_is_lost_is_found_by_the_probes_and_replaced() {
    if !docker_available().await {
        return;
    }
    let _one = DOCKER.lock().await;
    let dir = tempfile::Builder::new()
        .prefix("ghost-engine-")
        .tempdir()
        .expect("temp dir");
    let outage = Outage::up(Proxy::start_with(dir.path(), true), &["--relays", "1"]);
    let result = tokio::time::timeout(LONG, async {
        let stack = outage.stack.as_ref().expect("stack");
        let docker = orchestrator::runtime::docker::connect()
            .await
            .expect("docker");
        let container = format!("ghost-{}-relay-1", stack_id(&stack.state));
        let killed = Instant::now();
        docker
            .kill_container(
                &container,
                Some(
                    KillContainerOptionsBuilder::default()
                        .signal("SIGKILL")
                        .build(),
                ),
            )
            .await
            .expect("kill the relay");
        // No `die` event comes: three missed probes, a kill that finds the container
        // gone, and the relay is replaced.
        let replaced = loop {
            let status = stack.status().await;
            let relay = status
                .services
                .iter()
                .find(|s| s.name == "relay-1")
                .expect("relay-1");
            if relay.state == api::status::State::Running && relay.healthy && relay.restarts == 1 {
                let exits: Vec<&str> = status
                    .events
                    .iter()
                    .filter(|e| e.service == "relay-1" && e.kind == api::status::EventKind::Exit)
                    .map(|e| e.detail.as_str())
                    .collect();
                assert_eq!(exits, ["container gone"], "{status:?}");
                break killed.elapsed();
            }
            assert!(
                killed.elapsed() < Duration::from_secs(30),
                "relay-1 was never replaced: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        println!(
            "lost event: relay-1 replaced {:.0} ms after its kill, found by the probes",
            ms(replaced)
        );
    })
    .await;
    drop(outage);
    result.expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_logs_rotate_at_the_size_bound() {
    tokio::time::timeout(common::TEST_TIMEOUT, async {
        const BOUND: u64 = 16 << 10;
        // Debug logging fills logs fast: every heartbeat and probe is a few lines.
        let stack = Stack::up_with_env(
            "process",
            &[
                "--relays",
                "1",
                "--log-max-size",
                "16KiB",
                "--log-max-files",
                "2",
            ],
            &[("RUST_LOG", "debug")],
        );
        let logs = stack.state.logs();
        let deadline = Instant::now() + Duration::from_secs(60);
        for name in ["supervisor", "control", "relay-1"] {
            let rotated = logs.join(format!("{name}.log.1"));
            while !rotated.exists() {
                assert!(Instant::now() < deadline, "{name}.log was never rotated");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        // Let them rotate a few more times.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mut files: Vec<(String, u64)> = std::fs::read_dir(&logs)
            .expect("logs")
            .filter_map(|e| e.ok())
            .map(|e| {
                let size = e.metadata().map(|m| m.len()).unwrap_or(0);
                (e.file_name().to_string_lossy().into_owned(), size)
            })
            .collect();
        files.sort();
        println!("logs: {files:?}");
        for (name, size) in &files {
            assert!(
                !name.ends_with(".log.2"),
                "more than 2 files kept: {files:?}"
            );
            assert!(*size <= BOUND, "{name} is {size} bytes, past {BOUND}");
            if name.ends_with(".log.1") {
                // Rotated at the bound: filled up to within a line of it.
                assert!(*size > BOUND / 2, "{name} rotated early at {size} bytes");
            }
        }
    })
    .await
    .expect("test timed out");
}

//! The stack on a Docker Swarm (`ghost up --runtime swarm`): relays as Swarm services, the
//! rest as containers of the manager. Each test runs on a single-node swarm made for it on
//! loopback (`docker swarm init --advertise-addr 127.0.0.1`) and left again afterwards, also
//! when the test fails; a swarm this engine is already part of is used as it is and left
//! alone. CI fails these tests when no engine answers; elsewhere they are skipped.

mod common;

use std::time::{Duration, Instant};

use api::status::{EventKind, Kind, State};
use common::{Stack, containers, docker_available, ms};
use orchestrator::runtime::docker::{LABEL_STACK, stack_id};

const LONG: Duration = Duration::from_secs(240);

/// A single-node swarm for one test: this process's tests one at a time, and other
/// processes' swarm tests (the Ansible tests take the same lock file) kept out meanwhile.
struct Swarm {
    /// This test made the swarm, so it leaves it.
    made: bool,
    _lock: std::fs::File,
    _one: tokio::sync::MutexGuard<'static, ()>,
}

static SWARM: std::sync::LazyLock<tokio::sync::Mutex<()>> =
    std::sync::LazyLock::new(|| tokio::sync::Mutex::new(()));

impl Swarm {
    /// Joins or makes the swarm; `None` when no engine answers outside CI.
    async fn up() -> Option<Swarm> {
        if !docker_available().await {
            return None;
        }
        let one = SWARM.lock().await;
        let path = std::env::temp_dir().join("ghost-stream-swarm.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .expect("swarm lock file");
        let lock = tokio::task::spawn_blocking(move || {
            lock.lock().expect("swarm lock");
            lock
        })
        .await
        .expect("lock task");
        let state = docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"]);
        let made = match state.trim() {
            "active" => false,
            "inactive" => {
                docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
                true
            }
            other => panic!("this engine's swarm is {other}: neither usable nor free"),
        };
        Some(Swarm {
            made,
            _lock: lock,
            _one: one,
        })
    }

    /// This node's id.
    fn node(&self) -> String {
        docker(&["info", "--format", "{{.Swarm.NodeID}}"])
            .trim()
            .to_string()
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        if self.made {
            let _ = std::process::Command::new("docker")
                .args(["swarm", "leave", "--force"])
                .output();
        }
    }
}

/// Runs `docker ARGS`; its output, or a panic with its error.
fn docker(args: &[&str]) -> String {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The stack's Swarm services, by name.
fn services(stack: &Stack) -> Vec<String> {
    let label = format!("label={LABEL_STACK}={}", stack_id(&stack.state));
    let mut names: Vec<String> =
        docker(&["service", "ls", "--filter", &label, "--format", "{{.Name}}"])
            .lines()
            .map(str::to_string)
            .collect();
    names.sort();
    names
}

/// The stack's Swarm secrets, by name.
fn secrets(stack: &Stack) -> Vec<String> {
    let label = format!("label={LABEL_STACK}={}", stack_id(&stack.state));
    docker(&["secret", "ls", "--filter", &label, "--format", "{{.Name}}"])
        .lines()
        .map(str::to_string)
        .collect()
}

/// `ghost down`, then nothing of the stack is left: no service, container, secret or network.
async fn down_leaves_nothing(stack: &Stack) {
    let down = stack.ghost().arg("down").output().expect("down");
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert!(services(stack).is_empty(), "services left behind");
    assert!(containers(stack).await.is_empty(), "containers left behind");
    assert!(secrets(stack).is_empty(), "secrets left behind");
    let network = format!("ghost-{}", stack_id(&stack.state));
    let networks = docker(&["network", "ls", "--format", "{{.Name}}"]);
    let log =
        std::fs::read_to_string(stack.state.logs().join("supervisor.log")).unwrap_or_default();
    assert!(
        !networks.lines().any(|n| n == network),
        "network left behind; supervisor log:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_up_streams_then_down_leaves_nothing() {
    let Some(swarm) = Swarm::up().await else {
        return;
    };
    tokio::time::timeout(LONG, async {
        let started = Instant::now();
        let stack = Stack::up_on("swarm", &["--relays", "2"]);
        println!(
            "swarm: stack up in {:.1} s (images built or reused)",
            started.elapsed().as_secs_f64()
        );
        let status = stack.status().await;
        assert_eq!(status.runtime, "swarm", "{status:?}");
        assert!(status.ready, "{status:?}");
        let id = stack_id(&stack.state);
        assert_eq!(
            services(&stack),
            [format!("ghost-{id}-relay-1"), format!("ghost-{id}-relay-2")]
        );
        assert_eq!(
            containers(&stack).await.len(),
            5,
            "three of the manager, two tasks"
        );
        assert!(
            !secrets(&stack).is_empty(),
            "the relays' files travel as secrets"
        );
        // The node list, and each relay's node.
        assert_eq!(status.nodes.len(), 1, "{status:?}");
        let node = &status.nodes[0];
        assert_eq!(node.id, swarm.node());
        assert_eq!(
            (node.role.as_str(), node.relays),
            ("manager", 2),
            "{node:?}"
        );
        for relay in status.services.iter().filter(|s| s.kind == Kind::Relay) {
            let instance = relay.instance.as_ref().expect("running");
            assert_eq!(
                instance.node.as_deref(),
                Some(node.hostname.as_str()),
                "{relay:?}"
            );
        }
        // `ghost status` and the status page show the node of each service and the nodes.
        let text = stack.ghost().arg("status").output().expect("status");
        let text = String::from_utf8_lossy(&text.stdout).to_string();
        assert!(text.contains("NODE") && text.contains("manager"), "{text}");
        if let Some(browser) = common::chromium() {
            let dom = stack
                .dump_dom(browser, &stack.file.supervisor_url, 3000)
                .await;
            assert!(!dom.contains("data-script-error"), "script error:\n{dom}");
            let nodes = dom.split("id=\"nodes\"").nth(1).unwrap_or_default();
            for needle in ["<td>manager</td>", "<td>active</td>", "<td>2</td>"] {
                assert!(
                    nodes.contains(needle),
                    "the node list lacks {needle:?}:\n{dom}"
                );
            }
            let hostname = format!("<td>{}</td>", node.hostname);
            let services = dom.split("id=\"services\"").nth(1).unwrap_or_default();
            assert!(services.contains(&hostname), "no node column:\n{dom}");
        }
        // The private listeners of the manager's containers stay on loopback.
        let control = stack.addr("control", api::status::Role::Grpc).await;
        assert!(control.ip().is_loopback(), "{control}");

        // A stream reaches viewers on both relays, over the overlay from ingest.
        let stop = tokio_util::sync::CancellationToken::new();
        let (stream, publisher) = stack
            .publish("swarmed", 30, 2000, 30, None, stop.clone())
            .await;
        let viewers: Vec<_> = (0..4)
            .map(|_| stack.watch(&stream, Some(Duration::from_secs(3)), None, stop.clone()))
            .collect();
        let mut relays = std::collections::BTreeSet::new();
        for viewer in viewers {
            let s = viewer.await.expect("join").expect("viewer");
            assert!(s.frames > 0, "{s:?}");
            assert_eq!(s.skipped_groups, 0, "{s:?}");
            relays.insert(s.relay_id.clone());
        }
        println!("swarm: 4 viewers served by {relays:?}");
        stop.cancel();
        let _ = publisher.await;

        down_leaves_nothing(&stack).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_relay_crash_is_replaced_and_control_told() {
    let Some(_swarm) = Swarm::up().await else {
        return;
    };
    let stack = Stack::up_on("swarm", &["--relays", "2", "--relay-capacity", "2"]);
    tokio::time::timeout(LONG, async {
        common::scenarios::relay_crash(&stack).await;
        // From the kill to the replacement's start, as the supervisor recorded them.
        let status = stack.status().await;
        let at = |kind: EventKind| {
            status
                .events
                .iter()
                .rev()
                .find(|e| e.kind == kind && e.service == "relay-1")
                .map(|e| e.at_ms)
                .unwrap_or_else(|| panic!("no {kind:?} of relay-1: {status:?}"))
        };
        let replaced_ms = at(EventKind::Start).saturating_sub(at(EventKind::Kill));
        println!("swarm: relay-1 killed, its replacement ready {replaced_ms} ms later");
        assert!(replaced_ms < 2000, "replacement took {replaced_ms} ms");
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_spike_gets_relays_on_demand_then_scales_back() {
    let Some(_swarm) = Swarm::up().await else {
        return;
    };
    let stack = Stack::up_on("swarm", common::scenarios::SPIKE);
    tokio::time::timeout(LONG, common::scenarios::spike(&stack))
        .await
        .expect("test timed out");
    assert_eq!(services(&stack).len(), 1, "removed relays leave no service");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_drained_node_takes_no_relay_until_active_again() {
    let Some(swarm) = Swarm::up().await else {
        return;
    };
    let stack = Stack::up_on("swarm", &["--relays", "1"]);
    let node = swarm.node();
    // The node is made active again whatever happens below.
    struct Undrain(String);
    impl Drop for Undrain {
        fn drop(&mut self) {
            let _ = std::process::Command::new("docker")
                .args(["node", "update", "--availability", "active", &self.0])
                .output();
        }
    }
    tokio::time::timeout(LONG, async {
        let undrain = Undrain(node.clone());
        let drained = Instant::now();
        docker(&["node", "update", "--availability", "drain", &node]);
        // Swarm stops the relay's task; the supervisor reports it gone, and places no new
        // relay on a drained node: with no other node, its restarts fail saying why.
        let deadline = Instant::now() + Duration::from_secs(20);
        let (exit_ms, refusal) = loop {
            let status = stack.status().await;
            let exit = status
                .events
                .iter()
                .find(|e| e.kind == EventKind::Exit && e.service == "relay-1");
            let refused = status
                .events
                .iter()
                .find(|e| e.kind == EventKind::StartFailed && e.service == "relay-1");
            if let (Some(exit), Some(refused)) = (exit, refused) {
                let node_view = &status.nodes[0];
                assert_eq!(node_view.availability, "drain", "{node_view:?}");
                assert_eq!(node_view.relays, 0, "{node_view:?}");
                break (exit.at_ms, refused.detail.clone());
            }
            assert!(Instant::now() < deadline, "the drain was not noticed: {status:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(refusal.contains("no Swarm node can take a relay"), "{refusal}");
        assert!(refusal.contains("drain"), "{refusal}");
        assert!(services(&stack).is_empty() || {
            // A refused start leaves no service behind to be scheduled by Swarm.
            let listed = services(&stack);
            panic!("services left on a drained swarm: {listed:?}")
        });
        println!(
            "swarm: drain noticed (relay exit recorded at {exit_ms}), {:.0} ms after the drain; restart refused: {refusal}",
            ms(drained.elapsed())
        );

        drop(undrain);
        let back = Instant::now();
        let deadline = back + Duration::from_secs(60);
        loop {
            let status = stack.status().await;
            let relay = status.services.iter().find(|s| s.name == "relay-1").expect("relay-1");
            if relay.state == State::Running && status.nodes[0].relays == 1 {
                break;
            }
            assert!(Instant::now() < deadline, "relay-1 did not come back: {status:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!(
            "swarm: node active again, relay-1 running on it {:.0} ms later",
            ms(back.elapsed())
        );
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_supervisor_crash_is_adopted_then_down_removes_all() {
    let Some(_swarm) = Swarm::up().await else {
        return;
    };
    let stack = Stack::up_on("swarm", &["--relays", "2"]);
    let kill_supervisor = |stack: &Stack| {
        let pid = stack.state.read().expect("stack file").supervisor_pid;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill supervisor");
    };
    tokio::time::timeout(LONG, async {
        let before = services(&stack);
        let mut containers_before = containers(&stack).await;
        assert_eq!(before.len(), 2);
        kill_supervisor(&stack);
        tokio::time::sleep(Duration::from_millis(1000)).await;

        let again = stack
            .ghost()
            .args([
                "up",
                "-d",
                "--runtime",
                "swarm",
                "--ephemeral-ports",
                "--relays",
                "2",
            ])
            .output()
            .expect("up again");
        assert!(
            again.status.success(),
            "{}",
            String::from_utf8_lossy(&again.stderr)
        );
        let mut containers_after = containers(&stack).await;
        containers_before.sort();
        containers_after.sort();
        assert_eq!(services(&stack), before, "the relay services are adopted");
        assert_eq!(
            containers_after, containers_before,
            "adopted, not duplicated"
        );
        let status = stack.status().await;
        let adopted = status
            .events
            .iter()
            .filter(|e| e.kind == EventKind::Adopt)
            .count();
        assert_eq!(adopted, 5, "{status:?}");
        assert_eq!(status.nodes[0].relays, 2, "{status:?}");
        // The adopted relays serve.
        let stop = tokio_util::sync::CancellationToken::new();
        let (stream, publisher) = stack
            .publish("adopted", 30, 2000, 30, None, stop.clone())
            .await;
        let s = stack
            .watch(&stream, Some(Duration::from_secs(2)), None, stop.clone())
            .await
            .expect("join")
            .expect("viewer");
        assert!(s.frames > 0, "{s:?}");
        stop.cancel();
        let _ = publisher.await;
        println!(
            "swarm: supervisor crash: {adopted} services adopted, a viewer then got {} frames",
            s.frames
        );

        // A supervisor that dies for good: `ghost down` still removes its services, their
        // secrets, its containers and its network.
        kill_supervisor(&stack);
        tokio::time::sleep(Duration::from_millis(300)).await;
        down_leaves_nothing(&stack).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_runtime_outside_a_swarm_says_what_to_do() {
    if !docker_available().await {
        return;
    }
    // The swarm lock, without making a swarm: this test needs the engine in none.
    let _one = SWARM.lock().await;
    if docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"]).trim() != "inactive" {
        eprintln!("skipped: this engine is in a swarm");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let out = std::process::Command::new(common::GHOST)
        .arg("--state-dir")
        .arg(dir.path())
        .args(["up", "-d", "--runtime", "swarm", "--ephemeral-ports"])
        .output()
        .expect("ghost up");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("not a Swarm manager"), "{text}");
    assert!(text.contains("docker swarm init"), "{text}");
    assert!(text.contains("--runtime docker"), "{text}");
    println!(
        "swarm: outside a swarm, `ghost up --runtime swarm` refuses: {}",
        text.lines().last().unwrap_or_default()
    );
}

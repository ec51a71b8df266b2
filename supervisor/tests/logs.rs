//! `ghost logs` under the process and Docker runtimes: `-f` shows a line a relay wrote after
//! the command started, and goes on after the relay is killed and replaced, and when a relay
//! is added; the stack going down ends it. `--tail`, `--since`, `--json` and an unknown
//! service, on the same stack.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use api::status::{Kind, Role};
use common::{DOCKER, Stack, TEST_TIMEOUT, docker_available};
use supervisor::logs::Entry;
use tokio::io::AsyncBufReadExt;
use transport::quic::{self, Session, Windows};

/// How long a line may take to reach `ghost logs -f`, its relay's restart included.
const LINE: Duration = Duration::from_secs(20);

/// A `ghost logs` running in the background, its output read line by line.
struct Follow {
    child: tokio::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    /// Every line so far.
    seen: Vec<String>,
}

impl Follow {
    fn start(stack: &Stack, args: &[&str]) -> Follow {
        let mut child = stack
            .tokio_ghost()
            .arg("logs")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ghost logs");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut out = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = out.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Follow {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line that `wanted` accepts; returns its index in `seen`.
    async fn until(&mut self, what: &str, wanted: impl Fn(&str) -> bool) -> usize {
        let deadline = tokio::time::Instant::now() + LINE;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    self.seen.push(line);
                    if wanted(&self.seen[self.seen.len() - 1]) {
                        return self.seen.len() - 1;
                    }
                }
                Ok(None) => panic!("ghost logs ended before {what}:\n{}", self.seen.join("\n")),
                Err(_) => panic!("no {what} within {LINE:?}:\n{}", self.seen.join("\n")),
            }
        }
    }
}

/// Makes `relay` log a line naming `marker`: a viewer joins with a join ticket signed for
/// stream `marker` but asks for another stream, and the relay logs its refusal, which
/// names the ticket's stream.
async fn probe(stack: &Stack, relay: &str, marker: &str) {
    let addr = stack.addr(relay, Role::Quic).await;
    let key = std::fs::read(stack.state.ticket_key()).expect("ticket key");
    let expires = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
        + 60_000;
    let ticket = wire::ticket::issue(&key, marker, relay, expires, rand::random());
    let endpoint =
        quic::client(&stack.state.ca(), quic::ALPN_VIEW, Windows::RECEIVER).expect("client");
    let conn = endpoint
        .connect(addr, identity::RELAY_NAME)
        .expect("connect")
        .await
        .expect("handshake with the relay");
    let mut session = Session::open(&conn).await.expect("session");
    session
        .send(&wire::Message::Join {
            stream_id: "not-the-tickets".into(),
            ticket,
            delivery: wire::Delivery::StreamPerGroup,
        })
        .await
        .expect("join");
    // Refused and closed: by then the relay has logged it.
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
}

/// The generation of `relay` once it runs healthy after generation `after`.
async fn replaced(stack: &Stack, relay: &str, after: u64) -> u64 {
    let deadline = Instant::now() + LINE;
    loop {
        let status = stack.status().await;
        let generation = status
            .services
            .iter()
            .find(|s| s.name == relay && s.healthy)
            .and_then(|s| s.instance.as_ref())
            .map(|i| i.generation);
        if let Some(g) = generation.filter(|g| *g > after) {
            return g;
        }
        assert!(
            Instant::now() < deadline,
            "{relay} not replaced: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn generation(stack: &Stack, service: &str) -> u64 {
    stack
        .status()
        .await
        .services
        .into_iter()
        .find(|s| s.name == service)
        .and_then(|s| s.instance)
        .map(|i| i.generation)
        .unwrap_or_else(|| panic!("{service} runs no instance"))
}

fn ghost(stack: &Stack, args: &[&str]) -> std::process::Output {
    stack
        .ghost()
        .arg("logs")
        .args(args)
        .output()
        .expect("run ghost logs")
}

fn stdout(out: &std::process::Output) -> Vec<String> {
    assert!(
        out.status.success(),
        "{}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The whole scenario, the same for every runtime.
async fn logs_follow_the_stack(stack: &Stack, runtime: &str) {
    let started = Instant::now();
    // 1. A relay's line written after `ghost logs -f` started, then the lines of the relay
    //    that replaced it.
    let mut follow = Follow::start(stack, &["relay-1", "-f"]);
    // What was written before comes first: once it is there, the command follows.
    follow
        .until("relay-1's start-up line", |l| l.contains("relay listening"))
        .await;
    probe(stack, "relay-1", "logs-probe-1").await;
    let first = follow
        .until("the first probe's line", |l| l.contains("logs-probe-1"))
        .await;
    let line = follow.seen[first].clone();
    assert!(line.starts_with("relay-1 | "), "{line}");
    assert!(line.contains("viewer refused"), "{line}");
    let before = generation(stack, "relay-1").await;
    let chaos = stack
        .ghost()
        .args(["chaos", "kill-relay", "--id", "relay-1"])
        .output()
        .expect("chaos");
    assert!(chaos.status.success(), "{chaos:?}");
    let killed = Instant::now();
    replaced(stack, "relay-1", before).await;
    probe(stack, "relay-1", "logs-probe-2").await;
    let second = follow
        .until("the replacement's probe line", |l| {
            l.contains("logs-probe-2")
        })
        .await;
    let followed = killed.elapsed();
    let restart = follow.seen[first..second]
        .iter()
        .position(|l| l.contains("relay listening"));
    assert!(
        restart.is_some(),
        "the replacement's start-up is followed:\n{}",
        follow.seen.join("\n")
    );
    assert!(
        follow.seen.iter().all(|l| !l.contains('\x1b')),
        "no terminal colours into a pipe:\n{}",
        follow.seen.join("\n")
    );
    println!(
        "{runtime}: ghost logs -f showed the replaced relay's line {:.1} s after the kill ({} lines)",
        followed.as_secs_f64(),
        follow.seen.len()
    );
    let _ = follow.child.start_kill();

    // 2. What was written: the last lines, as JSON, since a time; an unknown service.
    // Under Docker, the lines of the container that runs relay-1 now; the process
    // runtime's file has the earlier instance's too.
    let all = stdout(&ghost(stack, &["relay-1"]));
    assert!(
        all.len() >= 3 && all.iter().any(|l| l.contains("logs-probe-2")),
        "{all:?}"
    );
    let tail = stdout(&ghost(stack, &["relay-1", "--tail", "2"]));
    assert_eq!(tail, all[all.len() - 2..], "the last two lines");
    let json = stdout(&ghost(stack, &["relay-1", "--tail", "1", "--json"]));
    assert_eq!(json.len(), 1, "{json:?}");
    let entry: Entry = serde_json::from_str(&json[0]).expect("one JSON entry a line");
    assert_eq!(entry.service, "relay-1");
    let at = entry.timestamp.as_deref().expect("a timestamp");
    let at = humantime::parse_rfc3339(at).expect("RFC 3339");
    assert!(
        at <= SystemTime::now() && at > SystemTime::now() - Duration::from_secs(300),
        "{entry:?}"
    );
    assert!(!entry.line.contains('\x1b'), "{entry:?}");
    let later = humantime::format_rfc3339(SystemTime::now() + Duration::from_secs(3600));
    let none = stdout(&ghost(stack, &["relay-1", "--since", &later.to_string()]));
    assert!(none.is_empty(), "{none:?}");
    let hour = stdout(&ghost(stack, &["relay-1", "--since", "1h"]));
    assert_eq!(hour, all);
    let every = stdout(&ghost(stack, &["--tail", "2"]));
    for service in ["control", "ingest", "relay-1", "gateway", "supervisor"] {
        let shown = every
            .iter()
            .filter(|l| l.starts_with(&format!("{service:<10} | ")))
            .count();
        assert!((1..=2).contains(&shown), "{service}: {every:#?}");
    }
    let unknown = ghost(stack, &["relay-9"]);
    assert_eq!(unknown.status.code(), Some(2), "{unknown:?}");
    let said = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        said.contains("\"relay-9\"") && said.contains("control, ingest, relay-1, gateway"),
        "{said}"
    );

    // 3. Every service followed: a relay added shows up, and the stack going down ends it.
    let mut everything = Follow::start(stack, &["-f", "--tail", "1"]);
    everything.until("a first line", |_| true).await;
    let scale = stack
        .ghost()
        .args(["scale", "relays", "2"])
        .output()
        .expect("scale");
    assert!(scale.status.success(), "{scale:?}");
    everything
        .until("the added relay's start-up line", |l| {
            l.starts_with("relay-2    | ") && l.contains("relay listening")
        })
        .await;
    assert_eq!(
        stack
            .status()
            .await
            .services
            .iter()
            .filter(|s| s.kind == Kind::Relay)
            .count(),
        2
    );
    let down = stack.ghost().arg("down").output().expect("down");
    assert!(down.status.success(), "{down:?}");
    let ended = tokio::time::timeout(Duration::from_secs(15), everything.child.wait_with_output())
        .await
        .expect("ghost logs -f ends once the stack is down")
        .expect("ghost logs");
    assert!(ended.status.success(), "{ended:?}");
    assert!(
        String::from_utf8_lossy(&ended.stderr).contains("the stack is down"),
        "{ended:?}"
    );
    println!(
        "{runtime}: ghost logs scenario in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_a_process_stack_across_a_relay_replaced_and_added() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let stack = Stack::up(&["--relays", "1"]);
        logs_follow_the_stack(&stack, "process").await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_a_docker_stack_across_a_relay_replaced_and_added() {
    if !docker_available().await {
        return;
    }
    let _one = DOCKER.lock().await;
    tokio::time::timeout(Duration::from_secs(240), async {
        let stack = Stack::up_on("docker", &["--relays", "1"]);
        logs_follow_the_stack(&stack, "docker").await;
    })
    .await
    .expect("test timed out");
}

//! Test harness: a real stack (`ghost up -d --runtime process --ephemeral-ports`) in a
//! temporary state directory, taken down again when dropped, also when a test fails.

#![allow(dead_code, missing_docs)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use clients::{publish, watch};
use orchestrator::stack::{StackFile, StateDir};
use tokio::task::JoinHandle;

pub mod browser;
pub mod firefox;
pub mod netns;
pub mod rtmp;
pub mod scenarios;
pub mod trust;
pub mod webkit;
use tokio_util::sync::CancellationToken;

pub const GHOST: &str = env!("CARGO_BIN_EXE_ghost");

/// A whole test should never take longer than this.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Stack {
    pub dir: tempfile::TempDir,
    pub state: StateDir,
    pub file: StackFile,
    pub http: reqwest::Client,
}

impl Stack {
    /// Brings a stack of local processes up with `extra` flags for `ghost up`.
    pub fn up(extra: &[&str]) -> Stack {
        Stack::up_on("process", extra)
    }

    /// Brings a stack up on `runtime` (`process` or `docker`).
    pub fn up_on(runtime: &str, extra: &[&str]) -> Stack {
        Stack::up_with_env(runtime, extra, &[])
    }

    /// Brings a stack up with `env` set for the supervisor and so for the services it runs
    /// as local processes (every service flag has an environment variable).
    pub fn up_with_env(runtime: &str, extra: &[&str], env: &[(&str, &str)]) -> Stack {
        let dir = tempfile::Builder::new()
            .prefix("ghost-test-")
            .tempdir()
            .expect("temp dir");
        Stack::up_in(dir, runtime, extra, env)
    }

    /// Brings a stack up in the state directory `dir`, which may hold files already (a
    /// state directory of an earlier version, say).
    pub fn up_in(
        dir: tempfile::TempDir,
        runtime: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Stack {
        let bin_dir = PathBuf::from(GHOST)
            .parent()
            .expect("bin dir")
            .to_path_buf();
        for service in [
            "ghost-control",
            "ghost-ingest",
            "ghost-relay",
            "ghost-gateway",
        ] {
            assert!(
                bin_dir.join(service).exists(),
                "{service} is not built; run the tests with `cargo test --workspace`"
            );
        }
        let out = Command::new(GHOST)
            .arg("--state-dir")
            .arg(dir.path())
            .args(["up", "-d", "--runtime", runtime, "--ephemeral-ports"])
            .args(extra)
            .envs(env.iter().copied())
            .output()
            .expect("run ghost up");
        let state = StateDir::new(dir.path());
        if !out.status.success() {
            let log =
                std::fs::read_to_string(state.logs().join("supervisor.log")).unwrap_or_default();
            panic!(
                "ghost up failed: {}\n{}\nsupervisor log:\n{log}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let file = state.read().expect("stack.json");
        Stack {
            dir,
            state,
            file,
            http: reqwest::Client::new(),
        }
    }

    pub fn ghost(&self) -> Command {
        let mut c = Command::new(GHOST);
        c.arg("--state-dir").arg(self.dir.path());
        c
    }

    pub fn tokio_ghost(&self) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(GHOST);
        c.arg("--state-dir").arg(self.dir.path());
        c.kill_on_drop(true);
        c
    }

    pub async fn status(&self) -> api::status::Status {
        self.http
            .get(format!("{}/api/status", self.file.supervisor_url))
            .send()
            .await
            .expect("status")
            .json()
            .await
            .expect("status json")
    }

    /// Live streams as the gateway lists them, or None when the gateway cannot list.
    pub async fn streams(&self) -> Option<Vec<api::gateway::Stream>> {
        let resp = self
            .http
            .get(format!("{}/streams", self.file.gateway_url))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.json().await.ok()
    }

    pub async fn listed(&self, name: &str) -> bool {
        self.streams()
            .await
            .is_some_and(|s| s.iter().any(|x| x.name == name))
    }

    /// Polls until `name` is (or is no longer) listed; returns when it happened.
    pub async fn wait_listed(
        &self,
        name: &str,
        want: bool,
        within: Duration,
    ) -> Option<std::time::Instant> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if self.listed(name).await == want {
                return Some(std::time::Instant::now());
            }
            if tokio::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Starts an in-process synthetic publisher; returns once the stream is live.
    pub async fn publish(
        &self,
        name: &str,
        fps: u32,
        frame_size: usize,
        group: u32,
        duration: Option<Duration>,
        stop: CancellationToken,
    ) -> (String, JoinHandle<Result<publish::Report, publish::Error>>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let options = publish::Options {
            ingest: self.file.ingest_addr.clone(),
            ca: self.state.ca(),
            name: name.to_string(),
            key: None,
            source: publish::Source::Synthetic {
                fps,
                frame_size,
                group,
                duration,
            },
        };
        let task = tokio::spawn(async move {
            publish::publish(options, stop, move |id| {
                let _ = tx.send(id.to_string());
            })
            .await
        });
        let id = tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .expect("publisher live in time")
            .expect("publisher live");
        (id, task)
    }

    /// Starts an in-process viewer.
    pub fn watch(
        &self,
        stream: &str,
        duration: Option<Duration>,
        read_delay: Option<Duration>,
        stop: CancellationToken,
    ) -> JoinHandle<Result<api::client::WatchSummary, watch::Error>> {
        self.watch_on(watch::Transport::Native, stream, duration, read_delay, stop)
    }

    /// Starts an in-process viewer reaching its relay by `transport`.
    pub fn watch_on(
        &self,
        transport: watch::Transport,
        stream: &str,
        duration: Option<Duration>,
        read_delay: Option<Duration>,
        stop: CancellationToken,
    ) -> JoinHandle<Result<api::client::WatchSummary, watch::Error>> {
        let options = watch::Options {
            gateway: self.file.gateway_url.clone(),
            stream: stream.to_string(),
            ca: self.state.ca(),
            duration,
            read_delay,
            output: None,
            transport,
            endpoint: None,
            http: self.http.clone(),
            measure_from_us: None,
            clock_skew_us: 0,
        };
        tokio::spawn(watch::watch(options, stop))
    }

    /// A stream named `name` goes live and a viewer watches it for 2 s to the end, with at
    /// least a second of frames: the stack works end to end.
    pub async fn plays(&self, name: &str) {
        let stop = CancellationToken::new();
        let (id, publisher) = self.publish(name, 30, 2000, 30, None, stop.clone()).await;
        let watched = self
            .watch(&id, Some(Duration::from_secs(2)), None, stop.clone())
            .await
            .expect("viewer task")
            .expect("viewer");
        assert_eq!(
            watched.end_reason,
            api::client::EndReason::Duration,
            "{watched:?}"
        );
        assert!(watched.frames >= 30, "{watched:?}");
        stop.cancel();
        let _ = publisher.await;
    }

    /// A hand-driven publisher (not `ghost publish`, which keeps to the protocol's limits):
    /// connected to ingest over QUIC and announced as `name`.
    pub async fn raw_publisher(&self, name: &str) -> RawPublisher {
        use transport::quic::{self, Session, Windows};
        let endpoint =
            quic::client(&self.state.ca(), quic::ALPN_PUBLISH, Windows::PUBLISHER).expect("client");
        let ingest = quic::resolve(&self.file.ingest_addr).await.expect("ingest");
        let conn = endpoint
            .connect(ingest, identity::INGEST_NAME)
            .expect("connect")
            .await
            .expect("handshake");
        let mut session = Session::open(&conn).await.expect("session");
        session
            .send(&wire::Message::Announce {
                name: name.into(),
                key: String::new(),
                init: bytes::Bytes::from_static(b"init"),
            })
            .await
            .expect("announce");
        let stream_id = match session.recv().await.expect("answer") {
            Some(wire::Message::Announced { stream_id }) => stream_id,
            other => panic!("announce answered with {other:?}"),
        };
        RawPublisher {
            session,
            conn,
            endpoint,
            stream_id,
        }
    }

    /// Relays the supervisor runs now.
    pub async fn relay_count(&self) -> usize {
        self.status()
            .await
            .services
            .iter()
            .filter(|s| s.kind == api::status::Kind::Relay)
            .count()
    }

    /// Restart counts by service name.
    pub async fn restarts(&self) -> std::collections::BTreeMap<String, u64> {
        self.status()
            .await
            .services
            .into_iter()
            .map(|s| (s.name, s.restarts))
            .collect()
    }

    /// Pid of a service.
    pub async fn pid(&self, service: &str) -> Option<u32> {
        self.status()
            .await
            .services
            .into_iter()
            .find(|s| s.name == service)?
            .instance?
            .pid
    }

    /// Registers a live stream at control directly, as an ingest does, published over
    /// `protocol` ("rtmp", say, which no test publisher speaks yet). Its ingest is made up and
    /// never reports, so no heartbeat ends it: it stays listed for the test's length.
    pub async fn create_at_control(&self, name: &str, protocol: &str) -> proto::control::Stream {
        let mut client = self.control_as(identity::Role::Ingest).await;
        client
            .create_stream(proto::control::CreateStreamRequest {
                name: name.into(),
                ingest_id: "made-up-ingest".into(),
                protocol: protocol.into(),
            })
            .await
            .expect("create the stream at control")
            .into_inner()
            .stream
            .expect("the created stream")
    }

    /// A client of control presenting `role`'s client certificate, as that service calls it.
    pub async fn control_as(
        &self,
        role: identity::Role,
    ) -> proto::control::control_client::ControlClient<tonic::transport::Channel> {
        let control = self.addr("control", api::status::Role::Grpc).await;
        server::control::client(
            &format!("http://{control}"),
            Some(&self.state.tls_dir_of(role)),
        )
        .expect("control client")
    }

    /// Address a service announced for `role`.
    /// A join ticket for `stream` on relay-1, signed with the stack's key. Hand-driven viewers
    /// take theirs here rather than from the gateway: a placement reserves a seat in control's
    /// directory until the next heartbeat, which would refuse the viewers under test.
    pub fn relay_ticket(&self, stream: &str) -> Vec<u8> {
        let key = std::fs::read(self.state.ticket_key()).expect("ticket key");
        let expires_ms = server::clock::now_ms() + 60_000;
        wire::ticket::issue(&key, stream, "relay-1", expires_ms, rand::random()).to_vec()
    }

    /// The value of the metric `name` (its full name) on `service`'s `/metrics`, `None`
    /// where it has none.
    pub async fn metric(&self, service: &str, name: &str) -> Option<f64> {
        let ops = self.addr(service, api::status::Role::Ops).await;
        let text = self
            .http
            .get(format!("http://{ops}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        let prefix = format!("{name} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Polls `service`'s metric `name` until it reads `want`; panics after `within`.
    pub async fn wait_metric(&self, service: &str, name: &str, want: f64, within: Duration) {
        tokio::time::timeout(within, async {
            while self.metric(service, name).await != Some(want) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{service}'s {name} never read {want}"));
    }

    pub async fn addr(&self, service: &str, role: api::status::Role) -> std::net::SocketAddr {
        let status = self.status().await;
        let svc = status
            .services
            .iter()
            .find(|x| x.name == service)
            .unwrap_or_else(|| panic!("no service {service}"));
        let a = *svc
            .instance
            .as_ref()
            .and_then(|i| i.addrs.get(&role))
            .unwrap_or_else(|| panic!("{service} has no {role:?} address"));
        if a.ip().is_unspecified() {
            std::net::SocketAddr::new([127, 0, 0, 1].into(), a.port())
        } else {
            a
        }
    }
}

/// A publisher a test drives by hand: [`Stack::raw_publisher`].
pub struct RawPublisher {
    pub session: transport::quic::Session,
    pub conn: quinn::Connection,
    pub endpoint: quinn::Endpoint,
    pub stream_id: String,
}

impl Drop for Stack {
    fn drop(&mut self) {
        let pids: Vec<u32> = std::fs::read_to_string(self.state.stack_file())
            .ok()
            .and_then(|t| serde_json::from_str::<StackFile>(&t).ok())
            .map(|f| vec![f.supervisor_pid])
            .unwrap_or_default();
        let down = self.ghost().arg("down").output();
        if !down.is_ok_and(|o| o.status.success()) {
            // The daemon leads its own process group, which its services share.
            for pid in pids {
                let _ = Command::new("kill")
                    .args(["-9", "--", &format!("-{pid}")])
                    .status();
            }
        }
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Whether a Docker Engine answers. In CI its absence fails the test; elsewhere the test is
/// skipped with a message.
pub async fn docker_available() -> bool {
    match orchestrator::runtime::docker::connect().await {
        Ok(_) => true,
        Err(e) => {
            if std::env::var_os("CI").is_some() {
                panic!("CI needs a Docker Engine for these tests: {e:#}");
            }
            eprintln!("skipped: no Docker Engine answers ({e:#})");
            false
        }
    }
}

/// The stack's containers, running or not: (name without the leading `/`, id).
pub async fn containers(stack: &Stack) -> Vec<(String, String)> {
    use bollard::query_parameters::ListContainersOptionsBuilder;
    use orchestrator::runtime::docker::{LABEL_STACK, stack_id};
    let docker = orchestrator::runtime::docker::connect()
        .await
        .expect("docker");
    let label = format!("{LABEL_STACK}={}", stack_id(&stack.state));
    let filters = std::collections::HashMap::from([("label", vec![label.as_str()])]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    docker
        .list_containers(Some(options))
        .await
        .expect("list")
        .into_iter()
        .map(|c| {
            (
                c.names
                    .and_then(|n| n.first().cloned())
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_string(),
                c.id.unwrap_or_default(),
            )
        })
        .collect()
}

/// Docker tests run one at a time: each brings up a whole stack of containers.
pub static DOCKER: std::sync::LazyLock<tokio::sync::Mutex<()>> =
    std::sync::LazyLock::new(|| tokio::sync::Mutex::new(()));

/// The first of `names` that runs here; `None` lets a test skip on a developer machine
/// without it, and CI (which sets `CI`) fails instead, since the test command installs it.
fn browser(names: &[&'static str], what: &str) -> Option<&'static str> {
    let found = names.iter().copied().find(|b| {
        std::process::Command::new(b)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs {what} (the test command installs it)"
        );
        eprintln!("skipped: no {what} installed (the README's test command installs it)");
    }
    found
}

/// Headless Chromium, where installed (the test command installs Debian's).
pub fn chromium() -> Option<&'static str> {
    browser(
        &["chromium", "chromium-browser", "google-chrome"],
        "Chromium",
    )
}

/// Headless Firefox ESR, where installed (Debian's `firefox-esr`).
pub fn firefox() -> Option<&'static str> {
    browser(&["firefox-esr", "firefox"], "Firefox ESR")
}

impl Stack {
    /// The DOM of `url` after `budget_ms` of the page's (virtual) time, as headless Chromium
    /// renders it, in a browser profile of this stack's own.
    pub async fn dump_dom(&self, browser: &str, url: &str, budget_ms: u32) -> String {
        self.dump_dom_with(browser, url, budget_ms, &[]).await
    }

    /// As `dump_dom`, with `extra_args` for Chromium (`--host-resolver-rules=…` to reach the
    /// stack at a name other than 127.0.0.1, say).
    pub async fn dump_dom_with(
        &self,
        browser: &str,
        url: &str,
        budget_ms: u32,
        extra_args: &[&str],
    ) -> String {
        let profile = self.dir.path().join("browser");
        let out = tokio::process::Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
            ])
            .args(extra_args)
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(format!("--virtual-time-budget={budget_ms}"))
            .arg("--dump-dom")
            .arg(url)
            .kill_on_drop(true)
            .output()
            .await
            .expect("run chromium");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Whether ffmpeg runs here; CI (which sets `CI`) must have it, a developer machine may not.
pub fn ffmpeg_available() -> bool {
    let found = std::process::Command::new("ffmpeg")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "ffmpeg is required in CI (the test command installs it)"
        );
        eprintln!("skipped: ffmpeg not installed (the README's test command installs it)");
    }
    found
}

impl Stack {
    /// Goes live from real media: ffmpeg's test pattern (320x180, 30 fps) with a 440 Hz tone,
    /// H.264 in 1 s groups and `audio_codec`, one fragment per frame in real time, for
    /// `seconds` (else until killed), through `ghost publish --name name`. Returns the stream
    /// id, ffmpeg and the publisher (both killed when dropped).
    pub async fn go_live(
        &self,
        name: &str,
        audio_codec: &str,
        seconds: Option<u32>,
    ) -> (String, tokio::process::Child, tokio::process::Child) {
        self.go_live_with_key(name, audio_codec, seconds, None)
            .await
    }

    /// As `go_live`, presenting the stream key `key` (a stack that requires keys).
    pub async fn go_live_with_key(
        &self,
        name: &str,
        audio_codec: &str,
        seconds: Option<u32>,
        key: Option<&str>,
    ) -> (String, tokio::process::Child, tokio::process::Child) {
        use tokio::io::AsyncBufReadExt;
        let limit = seconds
            .map(|s| format!(":duration={s}"))
            .unwrap_or_default();
        let video = format!("testsrc2=size=320x180:rate=30{limit}");
        let audio = format!("sine=frequency=440{limit}");
        let mut ffmpeg = tokio::process::Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-loglevel",
                "error",
                "-re",
                "-f",
                "lavfi",
                "-i",
                &video,
            ])
            .args(["-f", "lavfi", "-i", &audio])
            .args([
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-tune",
                "zerolatency",
            ])
            .args([
                "-g",
                "30",
                "-sc_threshold",
                "0",
                "-c:a",
                audio_codec,
                "-f",
                "mp4",
            ])
            .args([
                "-movflags",
                "cmaf+separate_moof+delay_moov+skip_trailer+frag_every_frame",
            ])
            .args(["-flush_packets", "1", "pipe:1"])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start ffmpeg");
        let media: std::process::Stdio = ffmpeg
            .stdout
            .take()
            .expect("ffmpeg stdout")
            .try_into()
            .expect("pipe");
        let mut publisher = self
            .tokio_ghost()
            .args(["publish", "--name", name, "--input", "-", "--json"])
            .args(key.map(|k| ["--key", k]).into_iter().flatten())
            .stdin(media)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start ghost publish");
        let mut lines = tokio::io::BufReader::new(publisher.stdout.take().expect("stdout")).lines();
        let live: api::client::Live =
            serde_json::from_str(&lines.next_line().await.expect("read").expect("live line"))
                .expect("json");
        (live.stream_id, ffmpeg, publisher)
    }
}

/// Keeps up to `keep` connections from `source` open to `server`, opening new ones as the
/// server closes them (at most 500 a tenth of a second, 30,000 in all), until `stop`; how
/// many it opened and how many the server closed.
pub async fn idle_flood(
    source: std::net::IpAddr,
    server: std::net::SocketAddr,
    keep: usize,
    stop: CancellationToken,
) -> (usize, usize) {
    let (mut opened, mut closed) = (0usize, 0usize);
    let mut open: Vec<tokio::net::TcpStream> = Vec::new();
    // Counts and forgets the connections the server has closed: end of stream, or any error
    // but "nothing to read yet".
    let sweep = |open: &mut Vec<tokio::net::TcpStream>| {
        let mut byte = [0u8; 1];
        let before = open.len();
        open.retain(|s| match s.try_read(&mut byte) {
            Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
            Ok(n) => n > 0,
        });
        before - open.len()
    };
    while !stop.is_cancelled() && opened < 30_000 {
        closed += sweep(&mut open);
        for _ in 0..500.min(keep.saturating_sub(open.len())) {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket
                .bind((source, 0).into())
                .expect("bind the flood's source");
            if let Ok(Ok(s)) =
                tokio::time::timeout(Duration::from_secs(1), socket.connect(server)).await
            {
                open.push(s);
                opened += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The last batch, opened just before the stop, is counted too once the server has had
    // a moment to answer it: on a busy machine the loop turns only a few times.
    tokio::time::sleep(Duration::from_millis(500)).await;
    closed += sweep(&mut open);
    (opened, closed)
}

/// Every frame from the viewer's first group on arrived (groups of `group` frames): nothing
/// skipped, nothing short.
pub fn lost_nothing(who: &str, s: &api::client::WatchSummary, published: u64, group: u32) {
    let first = s.first_group.expect("a first group");
    assert_eq!(s.skipped_groups, 0, "{who} skipped groups: {s:?}");
    assert_eq!(
        s.frames + first * u64::from(group),
        published,
        "{who} lost frames: {s:?}"
    );
}

/// A hand-driven viewer on `conn`, over any carrier: opens the session stream, presents
/// `ticket` for `stream`, and returns how the relay closed the connection (within `within`).
/// A refused viewer may be closed before its session stream gets anywhere: only the close
/// code matters.
pub async fn join_until_closed<P: transport::peer::Peer>(
    conn: &P,
    stream: &str,
    ticket: Vec<u8>,
    within: Duration,
) -> transport::quic::Closed {
    join_asking_until_closed(conn, stream, ticket, wire::Delivery::StreamPerGroup, within).await
}

/// As [`join_until_closed`], the join asking for `delivery`.
pub async fn join_asking_until_closed<P: transport::peer::Peer>(
    conn: &P,
    stream: &str,
    ticket: Vec<u8>,
    delivery: wire::Delivery,
    within: Duration,
) -> transport::quic::Closed {
    if let Ok(mut messages) = transport::quic::Session::open(conn).await {
        let _ = messages
            .send(&wire::Message::Join {
                stream_id: stream.to_string(),
                ticket: ticket.into(),
                delivery,
            })
            .await;
    }
    let lost = tokio::time::timeout(within, conn.closed())
        .await
        .expect("closed in time");
    transport::quic::Closed::from(&lost)
}

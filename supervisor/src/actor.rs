//! The supervisor: owns the stack's desired state and reconciles it through a [`Runtime`].
//!
//! It starts services in dependency order (control, ingest, relays, gateway), probes their
//! health every second, restarts any that exit or stop answering (with back-off and a
//! crash-loop cap), scales relays on request, and keeps a timeline of what happened. It runs
//! as one actor task; the HTTP API and the capacity gRPC talk to it through [`Handle`].

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::runtime::{Event, Instance, Kind, Runtime, Spec};
use crate::stack::StateDir;

/// Hears each step of a long operation (bring-up, image builds), for the user to see.
pub type Progress = dyn Fn(&str) + Send + Sync;

/// Health probe interval.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Consecutive failed probes before a service is declared hung and restarted.
const PROBE_FAILURES: u32 = 3;
/// More restarts than this within [`CRASH_WINDOW`] is a crash loop: the service is left down.
const CRASH_LOOP: usize = 8;
/// Window for counting restarts.
const CRASH_WINDOW: Duration = Duration::from_secs(60);
/// Events kept for the timeline.
const EVENTS_KEPT: usize = 500;

/// Ports of the stack; 0 everywhere gives ephemeral ports (tests), pinned after first bind.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Ports {
    /// Control gRPC.
    pub control: u16,
    /// Ingest QUIC/UDP.
    pub ingest: u16,
    /// First relay's QUIC/UDP port; relay N uses base + N - 1.
    pub relay_base: u16,
    /// Viewer gateway HTTP.
    pub gateway: u16,
    /// Supervisor HTTP (status page, API, /metrics).
    pub http: u16,
    /// Supervisor gRPC (capacity requests).
    pub grpc: u16,
    /// Ops listeners: control base, ingest base + 1, relay N base + 100 + N.
    pub ops_base: u16,
}

impl Ports {
    /// The documented defaults.
    pub const DEFAULT: Ports = Ports {
        control: 7000,
        ingest: 4433,
        relay_base: 4500,
        gateway: 8080,
        http: 7070,
        grpc: 7071,
        ops_base: 9100,
    };

    /// Every port ephemeral.
    pub const EPHEMERAL: Ports = Ports {
        control: 0,
        ingest: 0,
        relay_base: 0,
        gateway: 0,
        http: 0,
        grpc: 0,
        ops_base: 0,
    };

    fn offset(base: u16, n: u32) -> u16 {
        if base == 0 {
            0
        } else {
            base.saturating_add(n as u16)
        }
    }
}

/// What the supervisor runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// State directory (TLS files, ticket key, logs, stack.json).
    pub state: StateDir,
    /// Relays to start with.
    pub relays: u32,
    /// Relays at most, when scaling on demand.
    pub max_relays: u32,
    /// Viewers per relay, at most.
    pub relay_capacity: u32,
    /// Bind the public services (ingest, relays, gateway, status page read-only) on all
    /// addresses instead of 127.0.0.1.
    pub public: bool,
    /// Host name or address viewers and streamers use to reach this host (for `--public`).
    pub advertise_host: Option<String>,
    /// Ports.
    pub ports: Ports,
    /// Where the service binaries are.
    pub bin_dir: PathBuf,
    /// A relay added on demand that has had no viewer this long is drained and removed.
    pub scale_down_after: Duration,
}

/// One timeline entry.
#[derive(Debug, Clone, Serialize)]
pub struct EventRecord {
    /// Unix milliseconds.
    pub at_ms: u64,
    /// `start`, `exit`, `restart`, `unhealthy`, `kill`, `scale`, `capacity`, `crash_loop`, ...
    pub kind: String,
    /// Service concerned.
    pub service: String,
    /// Details.
    pub detail: String,
}

/// One point of the status page's charts, taken every second.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    /// Unix milliseconds.
    pub at_ms: u64,
    /// Viewers on all relays.
    pub viewers: u32,
    /// Bytes sent by all relays since they started (the page derives egress from it).
    pub bytes_sent: u64,
    /// Viewers refused for capacity since control started.
    pub rejections: u64,
}

/// Samples kept: five minutes.
const HISTORY: usize = 300;

/// A service's state as the status page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: Kind,
    /// `starting`, `running`, `restarting`, `held`, `failed`, `stopped`.
    pub state: String,
    /// Whether the last probe answered.
    pub healthy: bool,
    /// Restarts since the stack came up.
    pub restarts: u64,
    /// The running instance.
    pub instance: Option<Instance>,
    /// How the previous instance ended.
    pub last_exit: Option<String>,
}

/// Everything the status API serves from the supervisor's side.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Snapshot {
    /// `process` or `docker`.
    pub runtime: String,
    /// Whether every service is up and healthy.
    pub ready: bool,
    /// Services in start order.
    pub services: Vec<ServiceStatus>,
    /// Relays wanted now.
    pub relays_wanted: u32,
    /// Relays at most.
    pub max_relays: u32,
    /// Viewers per relay.
    pub relay_capacity: u32,
    /// Timeline, oldest first.
    pub events: Vec<EventRecord>,
    /// Control's gRPC endpoint.
    pub control_url: String,
    /// Chart samples, oldest first.
    pub history: Vec<Sample>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Starting,
    Running,
    Restarting,
    Held,
    Failed,
    Stopped,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Running => "running",
            State::Restarting => "restarting",
            State::Held => "held",
            State::Failed => "failed",
            State::Stopped => "stopped",
        }
    }
}

struct Member {
    name: String,
    kind: Kind,
    index: u32,
    instance: Option<Instance>,
    generation: u64,
    state: State,
    restarts: u64,
    recent: VecDeque<Instant>,
    restart_at: Option<Instant>,
    failures: u32,
    healthy: bool,
    last_exit: Option<String>,
    /// Addresses pinned after the first start, so restarts keep their ports.
    pinned: BTreeMap<String, SocketAddr>,
    /// Since when this relay has had no viewer.
    idle_since: Option<Instant>,
    /// Since when this relay has been draining (no new viewers) before removal.
    draining_since: Option<Instant>,
}

/// A request to the supervisor actor.
pub enum Command {
    /// Set the relay count.
    Scale(u32, oneshot::Sender<Result<u32, String>>),
    /// Kill a service (SIGKILL); hold it down for the duration before restarting.
    Kill {
        /// Service name, or `relay:random`.
        target: String,
        /// Hold-down.
        hold: Option<Duration>,
        /// Reply: what was killed.
        reply: oneshot::Sender<Result<Vec<String>, String>>,
    },
    /// Control turned viewers away; add a relay if below the maximum.
    Capacity {
        /// Viewers refused.
        rejected: u32,
        /// Reply: (starting, total, max).
        reply: oneshot::Sender<(u32, u32, u32)>,
    },
    /// Stop everything and end.
    Down(oneshot::Sender<()>),
}

/// Talks to a running supervisor.
#[derive(Clone)]
pub struct Handle {
    commands: mpsc::Sender<Command>,
    snapshot: watch::Receiver<Snapshot>,
    runtime: std::sync::Arc<dyn Runtime>,
}

impl Handle {
    /// The latest snapshot.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot.borrow().clone()
    }

    /// Waits until every service is up and healthy, or `timeout`.
    pub async fn ready(&self, timeout: Duration) -> Result<()> {
        let mut rx = self.snapshot.clone();
        tokio::time::timeout(timeout, rx.wait_for(|s| s.ready))
            .await
            .context("the stack did not become ready in time")?
            .context("the supervisor stopped")?;
        Ok(())
    }

    /// Sends a command.
    pub async fn send(&self, command: Command) -> Result<()> {
        self.commands
            .send(command)
            .await
            .map_err(|_| anyhow::anyhow!("the supervisor has stopped"))
    }

    /// Resource use of a service's current instance.
    pub async fn usage(&self, name: &str) -> Option<crate::runtime::Usage> {
        let snap = self.snapshot();
        let inst = snap
            .services
            .iter()
            .find(|s| s.name == name)?
            .instance
            .clone()?;
        self.runtime.usage(&inst).await
    }
}

/// The supervisor actor.
pub struct Supervisor {
    settings: Settings,
    runtime: std::sync::Arc<dyn Runtime>,
    members: Vec<Member>,
    relays_wanted: u32,
    events: VecDeque<EventRecord>,
    snapshot: watch::Sender<Snapshot>,
    commands: mpsc::Receiver<Command>,
    exits: mpsc::Receiver<Event>,
    grpc_addr: SocketAddr,
    probe: reqwest::Client,
    control: Option<proto::control::control_client::ControlClient<tonic::transport::Channel>>,
    history: VecDeque<Sample>,
}

impl Supervisor {
    /// A supervisor for `settings` on `runtime` (prepared with the sending half of
    /// `exits`); `grpc_addr` is where its capacity API listens (control is pointed at it).
    pub fn new(
        settings: Settings,
        runtime: std::sync::Arc<dyn Runtime>,
        exits: mpsc::Receiver<Event>,
        grpc_addr: SocketAddr,
    ) -> (Supervisor, Handle) {
        let (commands_tx, commands) = mpsc::channel(16);
        let (snapshot, snapshot_rx) = watch::channel(Snapshot::default());
        let handle = Handle {
            commands: commands_tx,
            snapshot: snapshot_rx,
            runtime: runtime.clone(),
        };
        let relays_wanted = settings.relays;
        let probe = reqwest::Client::builder()
            .timeout(Duration::from_millis(800))
            .build()
            .unwrap_or_default();
        let mut sup = Supervisor {
            settings,
            runtime,
            members: Vec::new(),
            relays_wanted,
            events: VecDeque::new(),
            snapshot,
            commands,
            exits,
            grpc_addr,
            probe,
            control: None,
            history: VecDeque::new(),
        };
        sup.add(Kind::Control, 0);
        sup.add(Kind::Ingest, 0);
        for i in 1..=relays_wanted {
            sup.add(Kind::Relay, i);
        }
        sup.add(Kind::Gateway, 0);
        (sup, handle)
    }

    fn add(&mut self, kind: Kind, index: u32) {
        let name = match kind {
            Kind::Control => "control".to_string(),
            Kind::Ingest => "ingest".to_string(),
            Kind::Gateway => "gateway".to_string(),
            Kind::Relay => format!("relay-{index}"),
        };
        self.members.push(Member {
            name,
            kind,
            index,
            instance: None,
            generation: 0,
            state: State::Stopped,
            restarts: 0,
            recent: VecDeque::new(),
            restart_at: None,
            failures: 0,
            healthy: false,
            last_exit: None,
            pinned: BTreeMap::new(),
            idle_since: None,
            draining_since: None,
        });
    }

    fn record(&mut self, kind: &str, service: &str, detail: impl Into<String>) {
        let detail = detail.into();
        tracing::info!(kind, service, %detail, "event");
        self.events.push_back(EventRecord {
            at_ms: server::clock::now_ms(),
            kind: kind.to_string(),
            service: service.to_string(),
            detail,
        });
        while self.events.len() > EVENTS_KEPT {
            self.events.pop_front();
        }
    }

    fn addr_of(&self, kind: Kind, role: &str) -> Option<SocketAddr> {
        self.members
            .iter()
            .find(|m| m.kind == kind)
            .and_then(|m| m.pinned.get(role).copied())
            .map(loopback_if_unspecified)
    }

    fn control_url(&self) -> String {
        match self.addr_of(Kind::Control, "grpc") {
            Some(a) => format!("http://{a}"),
            None => format!("http://127.0.0.1:{}", self.settings.ports.control),
        }
    }

    fn spec(&self, m: &Member) -> Spec {
        let s = &self.settings;
        let p = s.ports;
        let wanted: u16 = match m.kind {
            Kind::Control => p.control,
            Kind::Ingest => p.ingest,
            Kind::Relay => Ports::offset(p.relay_base, m.index - 1),
            Kind::Gateway => p.gateway,
        };
        let ops: u16 = match m.kind {
            Kind::Control => p.ops_base,
            Kind::Ingest => Ports::offset(p.ops_base, 1),
            _ => Ports::offset(p.ops_base, 100 + m.index),
        };
        let ports = m
            .kind
            .roles()
            .iter()
            .map(|role| {
                let default = if *role == "ops" { ops } else { wanted };
                let port = m.pinned.get(*role).map_or(default, |a| a.port());
                (role.to_string(), port)
            })
            .collect();
        Spec {
            name: m.name.clone(),
            kind: m.kind,
            index: m.index,
            ports,
            public: s.public,
            advertise_host: s.advertise_host.clone(),
            relay_capacity: s.relay_capacity,
            control_port: self
                .addr_of(Kind::Control, "grpc")
                .map_or(p.control, |a| a.port()),
            ingest_port: self
                .addr_of(Kind::Ingest, "quic")
                .map_or(p.ingest, |a| a.port()),
            supervisor: self.grpc_addr,
        }
    }

    async fn start_member(&mut self, i: usize) -> Result<()> {
        let spec = self.spec(&self.members[i]);
        let generation = self.members[i].generation + 1;
        self.members[i].generation = generation;
        self.members[i].state = State::Starting;
        self.publish();
        let started = self.runtime.start(&spec, generation).await;
        let m = &mut self.members[i];
        match started {
            Ok(instance) => {
                for (role, addr) in &instance.addrs {
                    m.pinned.entry(role.clone()).or_insert(*addr);
                }
                m.instance = Some(instance);
                m.state = State::Running;
                m.healthy = true;
                m.failures = 0;
                let name = m.name.clone();
                let detail = format!("generation {generation}");
                self.record("start", &name, detail);
                self.publish();
                Ok(())
            }
            Err(e) => {
                m.state = State::Restarting;
                let name = m.name.clone();
                self.record("start_failed", &name, format!("{e:#}"));
                self.publish();
                Err(e)
            }
        }
    }

    /// Starts every service in order, reporting each step to `progress`. On failure, what
    /// was started is stopped again and the error returned.
    pub async fn bring_up(&mut self, progress: &crate::actor::Progress) -> Result<()> {
        for i in 0..self.members.len() {
            let name = self.members[i].name.clone();
            let generation = self.members[i].generation + 1;
            if let Ok(Some(instance)) = self
                .runtime
                .adopt(&self.spec(&self.members[i]), generation)
                .await
            {
                let m = &mut self.members[i];
                m.generation = generation;
                for (role, addr) in &instance.addrs {
                    m.pinned.insert(role.clone(), *addr);
                }
                m.instance = Some(instance);
                m.state = State::Running;
                m.healthy = true;
                self.record("adopt", &name, "kept the running instance");
                progress(&format!("{name} adopted (already running)"));
                continue;
            }
            progress(&format!("starting {name}"));
            if let Err(e) = self.start_member(i).await {
                self.down().await;
                return Err(e.context(format!("starting {name}")));
            }
            let addrs = self.members[i]
                .instance
                .as_ref()
                .map(|inst| {
                    inst.addrs
                        .iter()
                        .map(|(role, a)| format!("{role} {a}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            progress(&format!("{name} ready ({addrs})"));
        }
        self.publish();
        Ok(())
    }

    /// Where clients reach the stack, once it is up.
    pub fn endpoints(&self) -> Option<(String, String, String)> {
        let gateway = self.addr_of(Kind::Gateway, "http")?;
        let ingest = self.addr_of(Kind::Ingest, "quic")?;
        Some((
            format!("http://{gateway}"),
            ingest.to_string(),
            self.control_url(),
        ))
    }

    fn publish(&self) {
        let services: Vec<ServiceStatus> = self
            .members
            .iter()
            .map(|m| ServiceStatus {
                name: m.name.clone(),
                kind: m.kind,
                state: m.state.as_str().to_string(),
                healthy: m.healthy && m.state == State::Running,
                restarts: m.restarts,
                instance: m.instance.clone(),
                last_exit: m.last_exit.clone(),
            })
            .collect();
        let ready = !services.is_empty() && services.iter().all(|s| s.healthy);
        self.snapshot.send_replace(Snapshot {
            runtime: self.runtime.name().to_string(),
            ready,
            services,
            relays_wanted: self.relays_wanted,
            max_relays: self.settings.max_relays,
            relay_capacity: self.settings.relay_capacity,
            events: self.events.iter().cloned().collect(),
            control_url: self.control_url(),
            history: self.history.iter().copied().collect(),
        });
    }

    fn schedule_restart(&mut self, i: usize, now: Instant) {
        let m = &mut self.members[i];
        while m
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > CRASH_WINDOW)
        {
            m.recent.pop_front();
        }
        if m.recent.len() >= CRASH_LOOP {
            m.state = State::Failed;
            let name = m.name.clone();
            self.record(
                "crash_loop",
                &name,
                format!("{CRASH_LOOP} restarts within {CRASH_WINDOW:?}; left down"),
            );
            return;
        }
        // 0, 250 ms, 500 ms, 1 s, 2 s, then 4 s: a single crash is replaced at once.
        let backoff = match m.recent.len() {
            0 => Duration::ZERO,
            n => Duration::from_millis(250 << (n - 1).min(4)),
        };
        let at = now + backoff;
        m.restart_at = Some(m.restart_at.map_or(at, |held| held.max(at)));
        if m.state != State::Held {
            m.state = State::Restarting;
        }
    }

    fn control_client(
        &mut self,
    ) -> Option<proto::control::control_client::ControlClient<tonic::transport::Channel>> {
        if self.control.is_none() {
            self.control = server::control::client(&self.control_url()).ok();
        }
        self.control.clone()
    }

    /// Tells control a relay died, so no viewer is sent there meanwhile.
    async fn forget_relay(&mut self, relay_id: &str) {
        let Some(mut control) = self.control_client() else {
            return;
        };
        let req = proto::control::ForgetRelayRequest {
            relay_id: relay_id.to_string(),
        };
        let _ = tokio::time::timeout(Duration::from_millis(500), control.forget_relay(req)).await;
    }

    /// Reads control's view (relay loads), records a chart sample, and scales idle relays
    /// added on demand back down: drained first, removed once they hold no viewer.
    async fn observe(&mut self) {
        let Some(mut control) = self.control_client() else {
            return;
        };
        let status = match tokio::time::timeout(
            Duration::from_millis(500),
            control.status(proto::control::StatusRequest {}),
        )
        .await
        {
            Ok(Ok(s)) => s.into_inner(),
            _ => return,
        };
        let now = Instant::now();
        self.history.push_back(Sample {
            at_ms: server::clock::now_ms(),
            viewers: status.relays.iter().map(|r| r.viewers).sum(),
            bytes_sent: status.relays.iter().map(|r| r.bytes_sent).sum(),
            rejections: status.rejections,
        });
        while self.history.len() > HISTORY {
            self.history.pop_front();
        }
        let viewers_of = |name: &str| {
            status
                .relays
                .iter()
                .find(|r| r.relay_id == name)
                .map(|r| r.viewers)
        };
        for m in self.members.iter_mut().filter(|m| m.kind == Kind::Relay) {
            match viewers_of(&m.name) {
                Some(0) => {
                    m.idle_since.get_or_insert(now);
                }
                Some(_) => m.idle_since = None,
                None => {}
            }
        }
        // Only relays above the starting count go, the newest first, one at a time.
        let relays = self
            .members
            .iter()
            .filter(|m| m.kind == Kind::Relay)
            .count() as u32;
        if relays <= self.settings.relays {
            return;
        }
        let Some(i) = self.members.iter().rposition(|m| m.kind == Kind::Relay) else {
            return;
        };
        let m = &self.members[i];
        let idle = m
            .idle_since
            .is_some_and(|t| now.duration_since(t) >= self.settings.scale_down_after);
        match m.draining_since {
            None if idle && m.state == State::Running => {
                if let Some(ops) = m.instance.as_ref().and_then(|inst| inst.addrs.get("ops")) {
                    let url = format!("http://{ops}/drain");
                    if self.probe.post(url).send().await.is_ok() {
                        let name = m.name.clone();
                        self.members[i].draining_since = Some(now);
                        self.record(
                            "drain",
                            &name,
                            format!(
                                "no viewer for {}; draining",
                                humantime::format_duration(self.settings.scale_down_after)
                            ),
                        );
                    }
                }
            }
            // Removed only once control has seen it draining (a heartbeat) and it is empty.
            Some(since)
                if now.duration_since(since) >= Duration::from_secs(1)
                    && viewers_of(&m.name) == Some(0) =>
            {
                let m = self.members.remove(i);
                if let Some(inst) = &m.instance {
                    let _ = self.runtime.stop(inst).await;
                }
                self.relays_wanted = self
                    .relays_wanted
                    .saturating_sub(1)
                    .max(self.settings.relays);
                self.forget_relay(&m.name).await;
                self.record("scale_down", &m.name, "drained and removed");
            }
            _ => {}
        }
    }

    async fn probe(&mut self) {
        let targets: Vec<(usize, SocketAddr)> = self
            .members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.state == State::Running)
            .filter_map(|(i, m)| {
                let inst = m.instance.as_ref()?;
                let addr = inst.addrs.get("ops").or_else(|| inst.addrs.get("http"))?;
                Some((i, loopback_if_unspecified(*addr)))
            })
            .collect();
        let client = self.probe.clone();
        let checks = targets.iter().map(|(i, addr)| {
            let client = client.clone();
            let url = format!("http://{addr}/health");
            async move {
                (
                    *i,
                    client
                        .get(url)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success()),
                )
            }
        });
        // Concurrently: one hung service must not delay the probes of the others.
        let results = futures_util::future::join_all(checks).await;
        let mut hung = Vec::new();
        for (i, ok) in results {
            let m = &mut self.members[i];
            if ok {
                m.failures = 0;
                m.healthy = true;
            } else {
                m.failures += 1;
                m.healthy = false;
                if m.failures >= PROBE_FAILURES {
                    hung.push(i);
                }
            }
        }
        for i in hung {
            let name = self.members[i].name.clone();
            self.record(
                "unhealthy",
                &name,
                format!("{PROBE_FAILURES} probes unanswered; killing it"),
            );
            self.members[i].failures = 0;
            if let Some(inst) = self.members[i].instance.clone() {
                let _ = self.runtime.kill(&inst).await;
            }
        }
        self.publish();
    }

    async fn scale(&mut self, n: u32) -> Result<u32, String> {
        if n == 0 || n > self.settings.max_relays {
            return Err(format!(
                "relay count must be between 1 and {}",
                self.settings.max_relays
            ));
        }
        let before = self.relays_wanted;
        self.relays_wanted = n;
        // Up: add members and start them.
        let present = self
            .members
            .iter()
            .filter(|m| m.kind == Kind::Relay)
            .count() as u32;
        for index in present + 1..=n {
            self.add(Kind::Relay, index);
            let i = self.members.len() - 1;
            if let Err(e) = self.start_member(i).await {
                tracing::warn!(error = %format!("{e:#}"), "relay start failed; will retry");
                self.schedule_restart(i, Instant::now());
            }
        }
        // Down: stop the highest-numbered relays.
        while self
            .members
            .iter()
            .filter(|m| m.kind == Kind::Relay)
            .count() as u32
            > n
        {
            let Some(i) = self.members.iter().rposition(|m| m.kind == Kind::Relay) else {
                break;
            };
            let m = self.members.remove(i);
            if let Some(inst) = &m.instance {
                let _ = self.runtime.stop(inst).await;
            }
            self.record("scale_down", &m.name, "stopped");
        }
        self.record("scale", "relays", format!("{before} -> {n}"));
        self.publish();
        Ok(n)
    }

    async fn kill(&mut self, target: &str, hold: Option<Duration>) -> Result<Vec<String>, String> {
        let indices: Vec<usize> = if target == "relay:random" {
            let relays: Vec<usize> = self
                .members
                .iter()
                .enumerate()
                .filter(|(_, m)| m.kind == Kind::Relay && m.instance.is_some())
                .map(|(i, _)| i)
                .collect();
            if relays.is_empty() {
                return Err("no running relay".into());
            }
            vec![relays[rand::random_range(0..relays.len())]]
        } else {
            match self.members.iter().position(|m| m.name == target) {
                Some(i) => vec![i],
                None => {
                    let names: Vec<&str> = self.members.iter().map(|m| m.name.as_str()).collect();
                    return Err(format!(
                        "no service {target:?}; services: {}",
                        names.join(", ")
                    ));
                }
            }
        };
        let mut killed = Vec::new();
        for i in indices {
            let Some(inst) = self.members[i].instance.clone() else {
                continue;
            };
            if let Some(hold) = hold {
                self.members[i].restart_at = Some(Instant::now() + hold);
                self.members[i].state = State::Held;
            }
            self.runtime
                .kill(&inst)
                .await
                .map_err(|e| format!("{e:#}"))?;
            let name = self.members[i].name.clone();
            self.record(
                "kill",
                &name,
                match hold {
                    Some(h) => format!("SIGKILL, held down for {}", humantime::format_duration(h)),
                    None => "SIGKILL".into(),
                },
            );
            killed.push(name);
        }
        self.publish();
        Ok(killed)
    }

    async fn capacity(&mut self, rejected: u32) -> (u32, u32, u32) {
        let max = self.settings.max_relays;
        let running = self
            .members
            .iter()
            .filter(|m| m.kind == Kind::Relay)
            .count() as u32;
        let starting = self
            .members
            .iter()
            .filter(|m| m.kind == Kind::Relay && m.state == State::Starting)
            .count() as u32;
        self.record(
            "capacity",
            "control",
            format!("{rejected} viewers refused; {running} relays, max {max}"),
        );
        // A draining relay with room is the quickest capacity of all: keep it.
        for m in self.members.iter_mut().filter(|m| m.kind == Kind::Relay) {
            m.idle_since = None;
        }
        if running >= max || starting > 0 {
            self.publish();
            return (0, running, max);
        }
        let wanted = rejected
            .div_ceil(self.settings.relay_capacity.max(1))
            .max(1);
        let target = (running + wanted).min(max);
        match self.scale(target).await {
            Ok(n) => (n - running, n, max),
            Err(_) => (0, running, max),
        }
    }

    async fn down(&mut self) {
        self.record("down", "stack", "stopping every service");
        let order: Vec<usize> = (0..self.members.len()).rev().collect();
        for i in order {
            self.members[i].state = State::Stopped;
            if let Some(inst) = self.members[i].instance.take() {
                let _ = self.runtime.stop(&inst).await;
            }
        }
        let _ = self.runtime.cleanup().await;
        self.publish();
    }

    /// Runs the reconcile loop until `shutdown` or a `Down` command; stops every service
    /// before returning.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut probe = tokio::time::interval(PROBE_INTERVAL);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut down_reply = None;
        loop {
            let next_restart = self
                .members
                .iter()
                .filter(|m| matches!(m.state, State::Restarting | State::Held))
                .filter_map(|m| m.restart_at)
                .min();
            let restart_sleep = async {
                match next_restart {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(event) = self.exits.recv() => {
                    let Event::Exited { name, generation, status } = event;
                    let Some(i) = self.members.iter().position(|m| m.name == name) else { continue };
                    if self.members[i].generation != generation
                        || self.members[i].state == State::Stopped
                    {
                        continue;
                    }
                    self.members[i].instance = None;
                    self.members[i].healthy = false;
                    self.members[i].last_exit = Some(status.clone());
                    self.record("exit", &name, status);
                    if self.members[i].kind == Kind::Relay {
                        self.forget_relay(&name).await;
                    }
                    self.schedule_restart(i, Instant::now());
                    self.publish();
                }
                () = restart_sleep => {
                    let now = Instant::now();
                    let due: Vec<usize> = self
                        .members
                        .iter()
                        .enumerate()
                        .filter(|(_, m)| matches!(m.state, State::Restarting | State::Held))
                        .filter(|(_, m)| m.restart_at.is_some_and(|t| t <= now))
                        .map(|(i, _)| i)
                        .collect();
                    for i in due {
                        self.members[i].restart_at = None;
                        self.members[i].restarts += 1;
                        self.members[i].recent.push_back(now);
                        let name = self.members[i].name.clone();
                        self.record("restart", &name, format!("restart #{}", self.members[i].restarts));
                        if self.start_member(i).await.is_err() {
                            self.schedule_restart(i, Instant::now());
                        }
                    }
                }
                _ = probe.tick() => {
                    self.probe().await;
                    self.observe().await;
                    self.publish();
                }
                Some(command) = self.commands.recv() => match command {
                    Command::Scale(n, reply) => { let _ = reply.send(self.scale(n).await); }
                    Command::Kill { target, hold, reply } => {
                        let _ = reply.send(self.kill(&target, hold).await);
                    }
                    Command::Capacity { rejected, reply } => {
                        let _ = reply.send(self.capacity(rejected).await);
                    }
                    Command::Down(reply) => { down_reply = Some(reply); break; }
                },
                () = shutdown.cancelled() => break,
            }
        }
        self.down().await;
        if let Some(reply) = down_reply {
            let _ = reply.send(());
        }
    }
}

pub(crate) fn loopback_if_unspecified(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
    } else {
        addr
    }
}

//! The supervisor actor: applies the [`Policy`]'s decisions through a [`Runtime`].
//!
//! One task owns the policy. Instance exits, requests (the HTTP API, control's capacity
//! gRPC), probe ticks and restart timers come in through one select loop. Everything that
//! waits on the outside (a start, stop or kill, a round of health probes, a call to control)
//! runs as a task of its own and reports back into the same loop, so a relay that takes 20 s
//! to start holds up no other service's restart, no probe, no `kill` and no `down`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::admin::Target;
use api::status::{Event, Kind, Role, Sample, Status, Usage};
use futures_util::FutureExt;
use proto::control::control_client::ControlClient;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::policy::{self, Action, Policy, Probe, Record};
pub use crate::policy::{Capacity, Refused};
use crate::runtime::{self, Instance, Progress, Runtime};
pub use crate::services::Ports;
use crate::stack::StateDir;

/// Where clients reach a stack that is up.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// The viewer gateway's URL.
    pub gateway_url: String,
    /// Ingest's QUIC address.
    pub ingest_addr: String,
    /// Ingest's RTMP address.
    pub rtmp_addr: String,
    /// Control's gRPC URL.
    pub control_url: String,
    /// The gateway's HTTPS port, on a stack that serves HTTPS.
    pub https_port: Option<u16>,
}

/// Health probe interval.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// A probe slower than this counts as unanswered.
const PROBE_TIMEOUT: Duration = Duration::from_millis(800);
/// Calls to control (its status, forgetting a relay) give up after this.
const CONTROL_TIMEOUT: Duration = Duration::from_millis(500);
/// Events kept for the timeline.
const EVENTS_KEPT: usize = 500;
/// Chart samples kept: five minutes.
const HISTORY: usize = 300;
/// How long `down` waits for starts under way to finish, so it can stop them, before it
/// leaves them to the runtime's cleanup.
const DOWN_GRACE: Duration = Duration::from_secs(30);

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
    /// The relays' congestion controller toward viewers.
    pub relay_congestion: transport::quic::Congestion,
    /// Bind the public services (ingest, relays, gateway, status page read-only) on all
    /// addresses instead of 127.0.0.1.
    pub public: bool,
    /// Host name or address viewers and streamers use to reach this host (for `--public`).
    pub advertise_host: Option<String>,
    /// Publishers need a stream key from the state directory's `keys/` (`--require-keys`,
    /// implied by `--public`).
    pub require_keys: bool,
    /// Where the certificate browsers see comes from (the daemon renews ACME's).
    pub certificate: crate::certificate::Source,
    /// Default host ports of every service (all 0 with `--ephemeral-ports`).
    pub ports: Ports,
    /// Where the service binaries are.
    pub bin_dir: PathBuf,
    /// A relay added on demand that has had no viewer this long is drained and removed.
    pub scale_down_after: Duration,
    /// Bounds on containers and logs.
    pub limits: runtime::Limits,
}

impl Settings {
    /// Whether the gateway serves HTTPS: browsers reach a public stack by a name or a public
    /// address, and need a certificate they trust there (loopback is a secure context
    /// already); plain HTTP from elsewhere is redirected to it.
    pub fn https(&self) -> bool {
        self.public && self.certificate.is_public()
    }
}

/// The supervisor's side of the status, as of its last change.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The status as the supervisor knows it. Control's part (streams, relays, counts) and
    /// each instance's usage are left empty here: they are read when a status is asked for.
    pub status: Status,
    /// Control's gRPC endpoint, once control has started.
    pub control_url: Option<String>,
    /// The supervisor's TLS directory: its client certificate for calls to control.
    pub control_tls: std::path::PathBuf,
    /// The running instances by service name, as their runtime knows them (the status shows
    /// each as [`Instance::status`]).
    pub instances: BTreeMap<String, Instance>,
}

/// Why a request to the supervisor failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The policy turned it down.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// The runtime could not kill the instance.
    #[error("killing {name}: {reason}")]
    KillFailed {
        /// The service.
        name: String,
        /// The runtime's error.
        reason: String,
    },
    /// The supervisor is shutting down.
    #[error("the supervisor is shutting down")]
    Stopped,
}

/// Why bring-up failed: a service did not start. What was started is stopped again.
#[derive(Debug, thiserror::Error)]
pub enum BringUpError {
    /// The runtime could not start the service.
    #[error("starting {name}")]
    Start {
        /// The service.
        name: String,
        /// Why its start failed.
        #[source]
        source: runtime::Error,
    },
    /// Bring-up waited for a start that was never made.
    #[error("starting {name}: {name} was not started")]
    NotStarted {
        /// The service.
        name: String,
    },
}

/// Where the answer to a kill goes: the services killed.
type KillReply = oneshot::Sender<Result<Vec<String>, Error>>;

enum Command {
    Scale(u32, oneshot::Sender<Result<u32, Refused>>),
    Kill {
        target: Target,
        hold: Option<Duration>,
        reply: KillReply,
    },
    Capacity(u32, oneshot::Sender<Capacity>),
    Down(oneshot::Sender<()>),
}

/// Talks to a running supervisor.
#[derive(Clone)]
pub struct Handle {
    commands: mpsc::Sender<Command>,
    snapshot: watch::Receiver<Snapshot>,
    runtime: Arc<dyn Runtime>,
    settings: Arc<Settings>,
}

impl Handle {
    /// The latest snapshot.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot.borrow().clone()
    }

    /// Every snapshot from now on, for a task that follows the stack's changes.
    pub fn snapshots(&self) -> watch::Receiver<Snapshot> {
        self.snapshot.clone()
    }

    /// What the supervisor was started with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(command(tx))
            .await
            .map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)
    }

    /// Sets the relay count; answers at once, with the relays added still starting.
    pub async fn scale(&self, relays: u32) -> Result<u32, Error> {
        Ok(self.ask(|reply| Command::Scale(relays, reply)).await??)
    }

    /// Kills `target` (SIGKILL) and holds it down for `hold`; answers once it is killed.
    pub async fn kill(&self, target: Target, hold: Option<Duration>) -> Result<Vec<String>, Error> {
        self.ask(|reply| Command::Kill {
            target,
            hold,
            reply,
        })
        .await?
    }

    /// Control turned `rejected` viewers away: adds relays if below the maximum.
    pub async fn capacity(&self, rejected: u32) -> Result<Capacity, Error> {
        self.ask(|reply| Command::Capacity(rejected, reply)).await
    }

    /// Stops every service and the supervisor; returns once all is stopped.
    pub async fn down(&self) {
        // A supervisor already gone has nothing left to stop.
        let _ = self.ask(Command::Down).await;
    }

    /// Resource use of a running instance, where the runtime can tell.
    pub async fn usage(&self, instance: &Instance) -> Option<Usage> {
        self.runtime.usage(instance).await
    }

    /// The machines the stack runs on, where the runtime spans several.
    pub async fn nodes(&self) -> Vec<api::status::Node> {
        self.runtime.nodes().await
    }
}

/// What a task reports back to the actor.
enum Report {
    Started {
        name: String,
        generation: u64,
        result: runtime::Result<Instance>,
    },
    Stopped {
        name: String,
        generation: u64,
    },
    Killed {
        name: String,
        generation: u64,
        result: runtime::Result<()>,
    },
    Probed(Vec<Probe>),
    Observed(Option<proto::control::StatusResponse>),
    Drained {
        name: String,
        generation: u64,
        ok: bool,
    },
    Forgot,
}

/// The supervisor actor.
pub struct Supervisor {
    policy: Policy,
    runtime: Arc<dyn Runtime>,
    max_relays: u32,
    relay_capacity: u32,
    events: VecDeque<Event>,
    history: VecDeque<Sample>,
    snapshot: watch::Sender<Snapshot>,
    commands: mpsc::Receiver<Command>,
    exits: mpsc::Receiver<runtime::Event>,
    tasks: JoinSet<Report>,
    http: reqwest::Client,
    control: Option<ControlClient<Channel>>,
    /// The supervisor's TLS directory, for calls to control.
    control_tls: std::path::PathBuf,
    /// Kill requests waiting for their kill to be done, by service.
    kills: HashMap<String, Vec<KillReply>>,
    probing: bool,
    observing: bool,
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl Supervisor {
    /// A supervisor for `settings` on `runtime` (prepared with the sending half of
    /// `exits`); `grpc_addr` is where its capacity API listens (control is pointed at it).
    pub fn new(
        settings: Settings,
        runtime: Arc<dyn Runtime>,
        exits: mpsc::Receiver<runtime::Event>,
        grpc_addr: SocketAddr,
    ) -> (Supervisor, Handle) {
        let (commands_tx, commands) = mpsc::channel(16);
        let (snapshot, snapshot_rx) = watch::channel(Snapshot {
            status: Status::default(),
            control_url: None,
            control_tls: settings.state.tls_dir_of(identity::Role::Supervisor),
            instances: BTreeMap::new(),
        });
        let handle = Handle {
            commands: commands_tx,
            snapshot: snapshot_rx,
            runtime: runtime.clone(),
            settings: Arc::new(settings.clone()),
        };
        let policy = Policy::new(policy::Config {
            relays: settings.relays,
            max_relays: settings.max_relays,
            relay_capacity: settings.relay_capacity,
            relay_congestion: settings.relay_congestion,
            scale_down_after: settings.scale_down_after,
            ports: settings.ports,
            public: settings.public,
            advertise_host: settings.advertise_host.clone(),
            require_keys: settings.require_keys,
            https: settings.https(),
            supervisor: grpc_addr,
            seed: rand::random(),
        });
        let http = reqwest::Client::builder()
            .timeout(PROBE_TIMEOUT)
            .build()
            .unwrap_or_default();
        let sup = Supervisor {
            policy,
            runtime,
            max_relays: settings.max_relays,
            relay_capacity: settings.relay_capacity,
            events: VecDeque::new(),
            history: VecDeque::new(),
            snapshot,
            commands,
            exits,
            tasks: JoinSet::new(),
            http,
            control: None,
            control_tls: settings.state.tls_dir_of(identity::Role::Supervisor),
            kills: HashMap::new(),
            probing: false,
            observing: false,
        };
        sup.publish();
        (sup, handle)
    }

    /// Starts every service in order, each once the one before is ready (it needs their
    /// addresses), and adopts those an earlier supervisor left running. Reports each step
    /// to `progress`. On failure, what was started is stopped again and the error returned.
    pub async fn bring_up(&mut self, progress: &Progress) -> Result<(), BringUpError> {
        for name in self.policy.names() {
            if let Some((spec, generation)) = self.policy.next_start(&name)
                && let Ok(Some(instance)) = self.runtime.adopt(&spec, generation).await
            {
                self.policy.handle_adopted(&name, instance, now());
                self.apply();
                progress(&format!("{name} adopted (already running)"));
                continue;
            }
            progress(&format!("starting {name}"));
            self.policy.handle_bring_up(&name, now());
            self.apply();
            self.publish();
            if let Err(e) = self.wait_started(&name).await {
                self.down().await;
                return Err(e);
            }
            let addrs = self
                .policy
                .services()
                .into_iter()
                .find(|s| s.name == name)
                .and_then(|s| s.instance)
                .map(|inst| {
                    inst.addrs
                        .iter()
                        .map(|(role, a)| format!("{} {a}", role.as_str()))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            progress(&format!("{name} ready ({addrs})"));
        }
        self.publish();
        Ok(())
    }

    /// Handles reports until the start of `name` has reported.
    async fn wait_started(&mut self, name: &str) -> Result<(), BringUpError> {
        loop {
            let Some(done) = self.tasks.join_next().await else {
                return Err(BringUpError::NotStarted { name: name.into() });
            };
            let outcome = match done {
                Ok(Report::Started {
                    name: started,
                    generation,
                    result,
                }) if started == name => Some(self.started(&started, generation, result).map_err(
                    |source| BringUpError::Start {
                        name: started,
                        source,
                    },
                )),
                done => {
                    self.report(done);
                    None
                }
            };
            self.apply();
            self.publish();
            if let Some(outcome) = outcome {
                return outcome;
            }
        }
    }

    /// Where clients reach the stack, once it is up.
    pub fn endpoints(&self) -> Option<Endpoints> {
        let gateway = self.policy.addr(Kind::Gateway, Role::Http)?;
        let ingest = self.policy.addr(Kind::Ingest, Role::Quic)?;
        let rtmp = self.policy.addr(Kind::Ingest, Role::Rtmp)?;
        let control = self.policy.addr(Kind::Control, Role::Grpc)?;
        Some(Endpoints {
            gateway_url: format!("http://{gateway}"),
            ingest_addr: ingest.to_string(),
            rtmp_addr: rtmp.to_string(),
            control_url: format!("http://{control}"),
            https_port: self
                .policy
                .addr(Kind::Gateway, Role::Https)
                .map(|a| a.port()),
        })
    }

    /// Runs the reconcile loop until `shutdown` or a `down` request; stops every service
    /// before returning.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut probe = tokio::time::interval(PROBE_INTERVAL);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let down_reply = loop {
            let wake = self.policy.poll_timeout();
            let restart_due = async move {
                match wake {
                    Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(event) = self.exits.recv() => self.runtime_event(event),
                Some(done) = self.tasks.join_next() => self.report(done),
                () = restart_due => self.policy.handle_timeout(now()),
                _ = probe.tick() => self.probe(),
                Some(command) = self.commands.recv() => {
                    if let Some(reply) = self.command(command) {
                        break Some(reply);
                    }
                }
                () = shutdown.cancelled() => break None,
            }
            self.apply();
            self.publish();
        };
        self.down().await;
        if let Some(reply) = down_reply {
            let _ = reply.send(());
        }
    }

    fn runtime_event(&mut self, event: runtime::Event) {
        match event {
            runtime::Event::Exited {
                name,
                generation,
                status,
            } => self.policy.handle_exit(&name, generation, &status, now()),
            runtime::Event::Unreachable { reason } => {
                self.policy.handle_runtime_lost(&reason, now())
            }
            runtime::Event::Reachable => self.policy.handle_runtime_back(now()),
        }
    }

    /// Answers a request; a `down` request is handed back, for the loop to end with it.
    fn command(&mut self, command: Command) -> Option<oneshot::Sender<()>> {
        match command {
            Command::Scale(n, reply) => {
                let _ = reply.send(self.policy.handle_scale(n, now()));
            }
            Command::Kill {
                target,
                hold,
                reply,
            } => match self.policy.handle_kill(&target, hold, now()) {
                Ok(Some(name)) => self.kills.entry(name).or_default().push(reply),
                Ok(None) => {
                    let _ = reply.send(Ok(Vec::new()));
                }
                Err(refused) => {
                    let _ = reply.send(Err(refused.into()));
                }
            },
            Command::Capacity(rejected, reply) => {
                let _ = reply.send(self.policy.handle_capacity(rejected, now()));
            }
            Command::Down(reply) => return Some(reply),
        }
        None
    }

    /// Performs what the policy decided; whatever waits on the outside becomes a task.
    fn apply(&mut self) {
        while let Some(action) = self.policy.poll_action() {
            match action {
                Action::Start { spec, generation } => {
                    let runtime = self.runtime.clone();
                    self.tasks.spawn(async move {
                        // A panic must still come back as a failed start, or the service
                        // would stay `starting` for ever.
                        let result = AssertUnwindSafe(runtime.start(&spec, generation))
                            .catch_unwind()
                            .await
                            .unwrap_or_else(|_| Err(runtime::Error::Panicked));
                        Report::Started {
                            name: spec.name,
                            generation,
                            result,
                        }
                    });
                }
                Action::Stop(instance) => {
                    let runtime = self.runtime.clone();
                    self.tasks.spawn(async move {
                        if let Err(e) = runtime.stop(&instance).await {
                            tracing::warn!(service = %instance.name, error = %server::telemetry::Chain(&e), "stop failed");
                        }
                        Report::Stopped {
                            name: instance.name,
                            generation: instance.generation,
                        }
                    });
                }
                Action::Kill(instance) => {
                    let runtime = self.runtime.clone();
                    self.tasks.spawn(async move {
                        let result = runtime.kill(&instance).await;
                        Report::Killed {
                            name: instance.name,
                            generation: instance.generation,
                            result,
                        }
                    });
                }
                Action::Drain {
                    name,
                    generation,
                    ops,
                } => {
                    let request = self.http.post(format!("http://{ops}/drain"));
                    self.tasks.spawn(async move {
                        // Any answer will do: the relay heard it.
                        let ok = request.send().await.is_ok();
                        Report::Drained {
                            name,
                            generation,
                            ok,
                        }
                    });
                }
                Action::ForgetRelay(name) => {
                    if let Some(mut control) = self.control_client() {
                        self.tasks.spawn(async move {
                            let request = proto::control::ForgetRelayRequest { relay_id: name };
                            let _ = tokio::time::timeout(
                                CONTROL_TIMEOUT,
                                control.forget_relay(request),
                            )
                            .await;
                            Report::Forgot
                        });
                    }
                }
                Action::Record(record) => self.record(record),
            }
        }
    }

    fn report(&mut self, done: Result<Report, JoinError>) {
        let report = match done {
            Ok(report) => report,
            Err(e) => {
                tracing::error!(error = %e, "a supervisor task failed");
                return;
            }
        };
        let now = now();
        match report {
            Report::Started {
                name,
                generation,
                result,
            } => {
                // A failure is logged and on the timeline already; nobody else waits for it.
                let _ = self.started(&name, generation, result);
            }
            Report::Killed {
                name,
                generation,
                result,
            } => {
                let answer = match result {
                    Ok(()) => Ok(vec![name.clone()]),
                    Err(e) => {
                        self.policy.handle_kill_failed(&name, generation, now);
                        Err(server::telemetry::Chain(&e).to_string())
                    }
                };
                for reply in self.kills.remove(&name).unwrap_or_default() {
                    let _ = reply.send(answer.clone().map_err(|reason| Error::KillFailed {
                        name: name.clone(),
                        reason,
                    }));
                }
            }
            Report::Probed(results) => {
                self.probing = false;
                self.policy.handle_probe(&results, now);
            }
            Report::Observed(status) => {
                self.observing = false;
                if let Some(status) = status {
                    self.observed(status, now);
                }
            }
            Report::Drained {
                name,
                generation,
                ok,
            } => self.policy.handle_drained(&name, generation, ok, now),
            Report::Stopped { name, generation } => {
                self.policy.handle_stopped(&name, generation, now)
            }
            Report::Forgot => {}
        }
    }

    /// Tells the policy how the start of `name` ended; a failure is logged and handed back.
    fn started(
        &mut self,
        name: &str,
        generation: u64,
        result: runtime::Result<Instance>,
    ) -> runtime::Result<()> {
        match result {
            Ok(instance) => {
                self.policy
                    .handle_started(name, generation, instance, now());
                Ok(())
            }
            Err(e) => {
                let error = server::telemetry::Chain(&e).to_string();
                tracing::warn!(service = %name, %error, "start failed");
                self.policy
                    .handle_start_failed(name, generation, &error, now());
                Err(e)
            }
        }
    }

    /// A chart sample and the relays' loads from control's view.
    fn observed(&mut self, status: proto::control::StatusResponse, now: Instant) {
        self.history.push_back(Sample {
            at_ms: server::clock::now_ms(),
            viewers: status.relays.iter().map(|r| r.viewers).sum(),
            bytes_sent: status.relays.iter().map(|r| r.bytes_sent).sum(),
            rejections: status.rejections,
        });
        while self.history.len() > HISTORY {
            self.history.pop_front();
        }
        let viewers: BTreeMap<String, u32> = status
            .relays
            .into_iter()
            .map(|r| (r.relay_id, r.viewers))
            .collect();
        self.policy.handle_relay_load(&viewers, now);
    }

    /// Starts a round of health probes and a look at control's view, unless the last ones
    /// are still under way.
    fn probe(&mut self) {
        let targets = self.policy.probe_targets();
        if !self.probing && !targets.is_empty() {
            self.probing = true;
            let http = self.http.clone();
            self.tasks.spawn(async move {
                // Concurrently: one hung service must not delay the probes of the others.
                let probes = targets.into_iter().map(|t| {
                    let request = http.get(format!("http://{}/health", t.addr));
                    async move {
                        let healthy = request.send().await.is_ok_and(|r| r.status().is_success());
                        Probe {
                            name: t.name,
                            generation: t.generation,
                            healthy,
                        }
                    }
                });
                Report::Probed(futures_util::future::join_all(probes).await)
            });
        }
        if !self.observing
            && let Some(mut control) = self.control_client()
        {
            self.observing = true;
            self.tasks.spawn(async move {
                let status = tokio::time::timeout(
                    CONTROL_TIMEOUT,
                    control.status(proto::control::StatusRequest {}),
                )
                .await;
                Report::Observed(match status {
                    Ok(Ok(s)) => Some(s.into_inner()),
                    _ => None,
                })
            });
        }
    }

    fn control_client(&mut self) -> Option<ControlClient<Channel>> {
        if self.control.is_none() {
            let addr = self.policy.addr(Kind::Control, Role::Grpc)?;
            self.control =
                server::control::client(&format!("http://{addr}"), Some(&self.control_tls)).ok();
        }
        self.control.clone()
    }

    fn record(&mut self, record: Record) {
        tracing::info!(kind = ?record.kind, service = %record.service, detail = %record.detail, "event");
        self.events.push_back(Event {
            at_ms: server::clock::now_ms(),
            kind: record.kind,
            service: record.service,
            detail: record.detail,
        });
        while self.events.len() > EVENTS_KEPT {
            self.events.pop_front();
        }
    }

    fn publish(&self) {
        self.snapshot.send_replace(Snapshot {
            status: Status {
                runtime: self.runtime.backend().to_string(),
                ready: self.policy.ready(),
                services: self.policy.services(),
                relays_wanted: self.policy.relays_wanted(),
                max_relays: self.max_relays,
                relay_capacity: self.relay_capacity,
                streams: Vec::new(),
                relays: Vec::new(),
                joins: 0,
                rejections: 0,
                control_error: None,
                runtime_error: self.policy.runtime_lost().map(str::to_string),
                gateway_url: self
                    .policy
                    .addr(Kind::Gateway, Role::Http)
                    .map(|a| format!("http://{a}")),
                nodes: Vec::new(),
                events: self.events.iter().cloned().collect(),
                history: self.history.iter().copied().collect(),
            },
            control_url: self
                .policy
                .addr(Kind::Control, Role::Grpc)
                .map(|a| format!("http://{a}")),
            control_tls: self.control_tls.clone(),
            instances: self.policy.instances(),
        });
    }

    /// Stops every service, the last started first, and those whose start is under way
    /// once it reports; then removes what the runtime made.
    async fn down(&mut self) {
        self.policy.handle_down(now());
        let deadline = tokio::time::Instant::now() + DOWN_GRACE;
        let mut stops: VecDeque<Instance> = VecDeque::new();
        loop {
            loop {
                while let Some(action) = self.policy.poll_action() {
                    match action {
                        Action::Stop(instance) => stops.push_back(instance),
                        Action::Record(record) => self.record(record),
                        // Nothing else is wanted of a stack going down.
                        _ => {}
                    }
                }
                // In order, kind by kind: the gateway before the relays, the relays before
                // ingest and control, so no service outlives what it serves for long. The
                // instances of one kind (the relays) stop together: a Swarm service takes
                // seconds to go, and one after another they added up.
                let Some(kind) = stops.front().map(|i| i.kind) else {
                    break;
                };
                let mut batch = Vec::new();
                while let Some(instance) = stops.pop_front_if(|i| i.kind == kind) {
                    batch.push(instance);
                }
                let runtime = &self.runtime;
                let stopping = batch.iter().map(|instance| async move {
                    if let Err(e) = runtime.stop(instance).await {
                        tracing::warn!(service = %instance.name, error = %server::telemetry::Chain(&e), "stop failed");
                    }
                });
                futures_util::future::join_all(stopping).await;
                for instance in &batch {
                    self.policy
                        .handle_stopped(&instance.name, instance.generation, now());
                }
            }
            self.publish();
            match tokio::time::timeout_at(deadline, self.tasks.join_next()).await {
                Ok(Some(done)) => self.report(done),
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!("starts still under way after {DOWN_GRACE:?}; abandoned");
                    self.tasks.shutdown().await;
                    break;
                }
            }
        }
        // Kill requests still waiting answer as the supervisor stopping.
        self.kills.clear();
        if let Err(e) = self.runtime.cleanup().await {
            tracing::warn!(error = %server::telemetry::Chain(&e), "cleanup failed");
        }
        self.publish();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Mutex;

    use api::status::{EventKind, State};
    use tokio::time::Instant as TokioInstant;

    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Call {
        Start(&'static str, u64),
        Ready(&'static str, u64),
        Stop(&'static str, u64),
        Kill(&'static str, u64),
        Cleanup,
    }

    /// A runtime that runs nothing: it records each call, and its starts take as long as a
    /// test says. A kill reports the exit, as a real one would.
    struct Fake {
        calls: mpsc::UnboundedSender<(TokioInstant, Call)>,
        slow: Mutex<HashMap<String, Duration>>,
        /// How long each stop takes.
        stop_takes: Mutex<Duration>,
        failing: Mutex<HashSet<String>>,
        exits: mpsc::Sender<runtime::Event>,
    }

    /// Names live as long as the test: leaked once each, so calls compare as plain values.
    fn name(s: &str) -> &'static str {
        Box::leak(s.to_string().into_boxed_str())
    }

    impl Fake {
        fn call(&self, call: Call) {
            let _ = self.calls.send((TokioInstant::now(), call));
        }

        fn slow(&self, service: &str, delay: Duration) {
            self.slow
                .lock()
                .expect("lock")
                .insert(service.into(), delay);
        }
    }

    #[async_trait::async_trait]
    impl Runtime for Fake {
        fn backend(&self) -> runtime::Backend {
            runtime::Backend::Process
        }

        async fn prepare(
            &self,
            _events: mpsc::Sender<runtime::Event>,
            _progress: &Progress,
        ) -> runtime::Result<()> {
            Ok(())
        }

        fn internal_ip(&self) -> std::net::IpAddr {
            std::net::Ipv4Addr::LOCALHOST.into()
        }

        async fn adopt(
            &self,
            _spec: &crate::services::Spec,
            _generation: u64,
        ) -> runtime::Result<Option<Instance>> {
            Ok(None)
        }

        async fn start(
            &self,
            spec: &crate::services::Spec,
            generation: u64,
        ) -> runtime::Result<Instance> {
            self.call(Call::Start(name(&spec.name), generation));
            let delay = self.slow.lock().expect("lock").get(&spec.name).copied();
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            if self.failing.lock().expect("lock").contains(&spec.name) {
                return Err(runtime::Error::Unexpected(format!(
                    "{} would not start",
                    spec.name
                )));
            }
            self.call(Call::Ready(name(&spec.name), generation));
            // No address: the actor then neither probes nor calls control, so nothing here
            // touches the network.
            Ok(Instance::for_tests(spec, generation, BTreeMap::new()))
        }

        async fn stop(&self, instance: &Instance) -> runtime::Result<()> {
            self.call(Call::Stop(name(&instance.name), instance.generation));
            let takes = *self.stop_takes.lock().expect("lock");
            tokio::time::sleep(takes).await;
            Ok(())
        }

        async fn kill(&self, instance: &Instance) -> runtime::Result<()> {
            self.call(Call::Kill(name(&instance.name), instance.generation));
            let _ = self
                .exits
                .send(runtime::Event::Exited {
                    name: instance.name.clone(),
                    generation: instance.generation,
                    status: "signal: 9 (SIGKILL)".into(),
                })
                .await;
            Ok(())
        }

        async fn usage(&self, _instance: &Instance) -> Option<Usage> {
            None
        }

        async fn cleanup(&self) -> runtime::Result<()> {
            self.call(Call::Cleanup);
            Ok(())
        }
    }

    struct Stack {
        fake: Arc<Fake>,
        handle: Handle,
        calls: mpsc::UnboundedReceiver<(TokioInstant, Call)>,
        exits: mpsc::Sender<runtime::Event>,
        shutdown: CancellationToken,
        actor: tokio::task::JoinHandle<()>,
    }

    fn settings(relays: u32, max_relays: u32) -> Settings {
        Settings {
            state: StateDir::new("state"),
            relays,
            max_relays,
            relay_capacity: 2,
            relay_congestion: transport::quic::Congestion::Cubic,
            public: false,
            advertise_host: None,
            require_keys: false,
            certificate: crate::certificate::Source::Stack,
            ports: Ports::EPHEMERAL,
            bin_dir: "bin".into(),
            scale_down_after: Duration::from_secs(30),
            limits: runtime::Limits::for_capacity(2),
        }
    }

    fn supervisor(relays: u32, max_relays: u32) -> (Supervisor, Handle, Stack) {
        let (exits, exits_rx) = mpsc::channel(64);
        let (calls_tx, calls) = mpsc::unbounded_channel();
        let fake = Arc::new(Fake {
            calls: calls_tx,
            slow: Mutex::new(HashMap::new()),
            stop_takes: Mutex::new(Duration::ZERO),
            failing: Mutex::new(HashSet::new()),
            exits: exits.clone(),
        });
        let grpc = "127.0.0.1:7071".parse().expect("addr");
        let (sup, handle) =
            Supervisor::new(settings(relays, max_relays), fake.clone(), exits_rx, grpc);
        let stack = Stack {
            fake,
            handle: handle.clone(),
            calls,
            exits,
            shutdown: CancellationToken::new(),
            actor: tokio::spawn(async {}),
        };
        (sup, handle, stack)
    }

    /// A stack brought up on the fake runtime, its actor running.
    async fn up(relays: u32, max_relays: u32) -> Stack {
        let (mut sup, _, mut stack) = supervisor(relays, max_relays);
        sup.bring_up(&|_| {}).await.expect("bring-up");
        stack.actor = tokio::spawn(sup.run(stack.shutdown.clone()));
        stack.drain_calls();
        stack
    }

    impl Stack {
        /// Waits (on the paused clock) for `call`, passing over others; returns when it was
        /// made.
        async fn wait_for(&mut self, call: Call) -> TokioInstant {
            let wait = async {
                loop {
                    let (at, seen) = self.calls.recv().await.expect("the fake runtime is gone");
                    if seen == call {
                        return at;
                    }
                }
            };
            tokio::time::timeout(Duration::from_secs(600), wait)
                .await
                .unwrap_or_else(|_| panic!("{call:?} never came"))
        }

        fn drain_calls(&mut self) -> Vec<Call> {
            std::iter::from_fn(|| self.calls.try_recv().ok())
                .map(|(_, c)| c)
                .collect()
        }

        fn state(&self, service: &str) -> Option<State> {
            self.handle
                .snapshot()
                .status
                .services
                .into_iter()
                .find(|s| s.name == service)
                .map(|s| s.state)
        }

        async fn crash(&self, service: &str, generation: u64) {
            self.exits
                .send(runtime::Event::Exited {
                    name: service.into(),
                    generation,
                    status: "signal: 11 (SIGSEGV)".into(),
                })
                .await
                .expect("actor listening");
        }
    }

    /// Lets every task run until all wait on something: the actor has handled all there was.
    async fn settle() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_start_holds_up_no_other_relays_restart() {
        let mut s = up(1, 3).await;
        s.fake.slow("relay-2", Duration::from_secs(20));
        let t0 = TokioInstant::now();
        assert_eq!(
            s.handle.scale(2).await.expect("scale"),
            2,
            "answered at once"
        );
        s.wait_for(Call::Start("relay-2", 1)).await;

        s.crash("relay-1", 1).await;
        let replaced = s.wait_for(Call::Ready("relay-1", 2)).await;
        assert!(
            replaced - t0 < Duration::from_millis(10),
            "relay-1 replaced after {:?}",
            replaced - t0
        );
        settle().await;
        assert_eq!(s.state("relay-1"), Some(State::Running));
        assert_eq!(s.state("relay-2"), Some(State::Starting));

        let ready = s.wait_for(Call::Ready("relay-2", 1)).await;
        assert!(ready - t0 >= Duration::from_secs(20));
        settle().await;
        assert_eq!(s.state("relay-2"), Some(State::Running));
        assert!(s.handle.snapshot().status.ready);
    }

    #[tokio::test(start_paused = true)]
    async fn kill_and_down_answer_while_a_start_is_under_way() {
        let mut s = up(1, 3).await;
        s.fake.slow("relay-2", Duration::from_secs(20));
        s.handle.scale(2).await.expect("scale");
        s.wait_for(Call::Start("relay-2", 1)).await;
        let t0 = TokioInstant::now();

        let killed = s
            .handle
            .kill(Target::Service("relay-1".into()), None)
            .await
            .expect("kill");
        assert_eq!(killed, ["relay-1"]);
        assert!(TokioInstant::now() - t0 < Duration::from_millis(10));
        s.wait_for(Call::Ready("relay-1", 2)).await;

        // Down stops every service, and relay-2 once its start ends, then cleans up.
        s.handle.down().await;
        assert!(TokioInstant::now() - t0 >= Duration::from_secs(20));
        let calls = s.drain_calls();
        assert_eq!(
            calls,
            [
                Call::Stop("gateway", 1),
                Call::Stop("relay-1", 2),
                Call::Stop("ingest", 1),
                Call::Stop("control", 1),
                Call::Ready("relay-2", 1),
                Call::Stop("relay-2", 1),
                Call::Cleanup,
            ]
        );
        (&mut s.actor).await.expect("actor ended");
        assert!(
            s.handle
                .snapshot()
                .status
                .services
                .iter()
                .all(|s| s.state == State::Stopped)
        );
    }

    /// Down stops kind by kind, in order, and the relays together: with stops of 5 s each,
    /// gateway, relays, ingest and control take 20 s, not the 35 s of one after another.
    #[tokio::test(start_paused = true)]
    async fn down_stops_the_relays_together_between_the_gateway_and_ingest() {
        let mut s = up(4, 4).await;
        *s.fake.stop_takes.lock().expect("lock") = Duration::from_secs(5);
        let t0 = TokioInstant::now();
        s.handle.down().await;
        let took = TokioInstant::now() - t0;
        assert!(
            took >= Duration::from_secs(20) && took < Duration::from_secs(21),
            "down took {took:?}"
        );
        let calls = s.drain_calls();
        let at = |c: Call| calls.iter().position(|x| *x == c).expect("stopped");
        let relays: Vec<usize> = (1..=4)
            .map(|i| at(Call::Stop(name(&format!("relay-{i}")), 1)))
            .collect();
        assert!(relays.iter().all(|r| *r > at(Call::Stop("gateway", 1))));
        assert!(relays.iter().all(|r| *r < at(Call::Stop("ingest", 1))));
        assert!(at(Call::Stop("ingest", 1)) < at(Call::Stop("control", 1)));
        assert_eq!(calls.last(), Some(&Call::Cleanup));
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_kill_restarts_after_the_hold() {
        let mut s = up(1, 1).await;
        let t0 = TokioInstant::now();
        let hold = Duration::from_secs(2);
        s.handle
            .kill(Target::Service("control".into()), Some(hold))
            .await
            .expect("kill");
        settle().await;
        assert_eq!(s.state("control"), Some(State::Held));
        let back = s.wait_for(Call::Ready("control", 2)).await;
        assert!(back - t0 >= hold && back - t0 < hold + Duration::from_millis(10));
        let events = s.handle.snapshot().status.events;
        let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
        assert!(
            kinds.ends_with(&[
                EventKind::Kill,
                EventKind::Exit,
                EventKind::Restart,
                EventKind::Start
            ]),
            "{kinds:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_come_back_as_errors() {
        let s = up(1, 2).await;
        let e = s
            .handle
            .kill(Target::Service("nope".into()), None)
            .await
            .expect_err("unknown service");
        assert!(
            matches!(e, Error::Refused(Refused::UnknownService { .. })),
            "{e}"
        );
        let e = s.handle.scale(3).await.expect_err("above max");
        assert_eq!(e.to_string(), "relay count must be between 1 and 2");
    }

    #[tokio::test(start_paused = true)]
    async fn capacity_answers_at_once_and_once_while_relays_start() {
        let mut s = up(1, 4).await;
        s.fake.slow("relay-2", Duration::from_secs(20));
        let first = s.handle.capacity(1).await.expect("capacity");
        assert_eq!(
            first,
            Capacity {
                starting: 1,
                total: 2,
                max: 4
            }
        );
        let again = s.handle.capacity(9).await.expect("capacity");
        assert_eq!(again.starting, 0, "relay-2 is the capacity on its way");
        s.wait_for(Call::Ready("relay-2", 1)).await;
        settle().await;
        assert_eq!(s.handle.capacity(1).await.expect("capacity").starting, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_old_instances_exit_is_ignored() {
        let mut s = up(1, 1).await;
        s.crash("ingest", 7).await;
        s.crash("relay-1", 0).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(s.drain_calls(), []);
        assert!(s.handle.snapshot().status.ready);
        s.shutdown.cancel();
        (&mut s.actor).await.expect("actor ended");
        assert_eq!(s.drain_calls().last(), Some(&Call::Cleanup));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_bring_up_stops_what_it_started() {
        let (mut sup, handle, mut s) = supervisor(1, 1);
        s.fake
            .failing
            .lock()
            .expect("lock")
            .insert("relay-1".into());
        let e = sup.bring_up(&|_| {}).await.expect_err("relay-1 fails");
        assert!(
            matches!(&e, BringUpError::Start { name, .. } if name == "relay-1"),
            "{e}"
        );
        assert_eq!(
            server::telemetry::Chain(&e).to_string(),
            "starting relay-1: relay-1 would not start"
        );
        assert_eq!(
            s.drain_calls(),
            [
                Call::Start("control", 1),
                Call::Ready("control", 1),
                Call::Start("ingest", 1),
                Call::Ready("ingest", 1),
                Call::Start("relay-1", 1),
                Call::Stop("ingest", 1),
                Call::Stop("control", 1),
                Call::Cleanup,
            ]
        );
        let kinds: Vec<EventKind> = handle
            .snapshot()
            .status
            .events
            .iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(
            kinds,
            [
                EventKind::Start,
                EventKind::Start,
                EventKind::StartFailed,
                EventKind::Down
            ]
        );
    }
}

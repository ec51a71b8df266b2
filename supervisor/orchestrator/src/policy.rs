//! The supervisor's policy as a state machine: restart back-off, the crash-loop cap, health
//! misses, scale-up on control's capacity requests, drain-then-remove scale-down, and kills
//! with a hold-down.
//!
//! It does no I/O and reads no clock. What happens comes in through `handle_*` with the
//! current time; what to do leaves as [`Action`]s through [`Policy::poll_action`], and
//! [`Policy::poll_timeout`] says when the next restart falls due. The supervisor actor
//! ([`crate::actor`]) performs the actions and reports their outcome back, so every rule here
//! is tested by feeding events and reading actions, with no process, container or timer.
//!
//! Every start gets a new generation number, and every report names the generation it is
//! about: a report about an instance the policy has moved on from (an exit of the previous
//! instance, a start that finished after a scale-down) is recognised as stale.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use api::admin::Target;
use api::status::{EventKind, Kind, Role, Service, State};

use crate::instance::Instance;

use crate::services::Spec;
use crate::services::{self, Ports, loopback_if_unspecified};

pub mod placement;
mod scaling;

/// Consecutive unanswered health probes before a service is declared hung and killed.
pub const PROBE_FAILURES: u32 = 3;
/// Restarts within [`CRASH_WINDOW`] that make a crash loop: the service is left down for
/// [`FAILED_RETRY`], then tried again.
pub const CRASH_LOOP: usize = 8;
/// How long a service in a crash loop is left down before it is tried again; each further
/// crash loop in a row doubles it, up to [`FAILED_RETRY_MAX`]. Long enough that a service
/// that cannot run costs next to nothing, short enough that one whose cause went away (a
/// full disk, a port taken, an engine restarted) comes back without the operator.
pub const FAILED_RETRY: Duration = Duration::from_secs(30);
/// The longest a failed service waits for its next try.
pub const FAILED_RETRY_MAX: Duration = Duration::from_secs(300);
/// Window for counting restarts.
pub const CRASH_WINDOW: Duration = Duration::from_secs(60);
/// A draining relay is removed only once control has had this long to see it draining (its
/// heartbeat says so), lest a viewer be placed there in between.
pub const DRAIN_SEEN: Duration = Duration::from_secs(1);

/// What the policy needs to know about the stack.
#[derive(Debug, Clone)]
pub struct Config {
    /// Relays to start with; scale-down on idleness never goes below it.
    pub relays: u32,
    /// Relays at most.
    pub max_relays: u32,
    /// Viewers per relay, at most.
    pub relay_capacity: u32,
    /// The relays' congestion controller toward viewers.
    pub relay_congestion: transport::quic::Congestion,
    /// A relay added on demand that has had no viewer this long is drained and removed.
    pub scale_down_after: Duration,
    /// Default host ports.
    pub ports: Ports,
    /// Publish the public listeners on all addresses.
    pub public: bool,
    /// Host name viewers use to reach relays.
    pub advertise_host: Option<String>,
    /// Publishers need a stream key (ingest's `--require-keys`).
    pub require_keys: bool,
    /// The gateway serves HTTPS with the stack's public certificate.
    pub https: bool,
    /// The supervisor's capacity API, as the services reach it.
    pub supervisor: SocketAddr,
    /// Seeds the choice of `relay:random`, so tests can repeat it.
    pub seed: u64,
}

/// Something for the actor to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start an instance; report with [`Policy::handle_started`] or
    /// [`Policy::handle_start_failed`].
    Start {
        /// What to start.
        spec: Spec,
        /// Its generation, to be named in the report and in the instance's exit.
        generation: u64,
    },
    /// Stop an instance gracefully; report with [`Policy::handle_stopped`]. Its exit is not
    /// reported: the policy no longer wants it.
    Stop(Instance),
    /// Kill an instance (SIGKILL). Its exit comes back through [`Policy::handle_exit`]; a kill
    /// that fails is reported with [`Policy::handle_kill_failed`].
    Kill(Instance),
    /// Ask a relay to take no new viewer (`POST /drain` on its ops listener); report with
    /// [`Policy::handle_drained`], naming the relay and generation given here.
    Drain {
        /// The relay's service name.
        name: String,
        /// The generation asked, so a late answer about a replaced instance is ignored.
        generation: u64,
        /// Where to ask: the relay's ops listener.
        ops: SocketAddr,
    },
    /// Tell control this relay is gone, so no viewer is sent there meanwhile.
    ForgetRelay(String),
    /// Add an entry to the timeline.
    Record(Record),
}

/// A timeline entry, stamped with the wall clock when the actor records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// What happened.
    pub kind: EventKind,
    /// To which service (`stack`, `relays` for the stack as a whole).
    pub service: String,
    /// Details for people.
    pub detail: String,
}

/// The answer to a capacity request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// Relays this request started.
    pub starting: u32,
    /// Relays in the stack, those starting included.
    pub total: u32,
    /// Relays at most.
    pub max: u32,
}

/// A request the policy turns down.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// `ghost scale` outside 1..=max.
    #[error("relay count must be between 1 and {max}")]
    ScaleOutOfRange {
        /// `--max-relays`.
        max: u32,
    },
    /// `relay:random` with no relay running.
    #[error("no running relay")]
    NoRunningRelay,
    /// A kill naming no service of the stack.
    #[error("no service {name:?}; services: {services}")]
    UnknownService {
        /// The name asked for.
        name: String,
        /// The stack's services, comma-separated.
        services: String,
    },
}

/// Where to probe a running instance's health; its name and generation go back in the
/// [`Probe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTarget {
    /// Service name.
    pub name: String,
    /// The instance's generation.
    pub generation: u64,
    /// `/health` is served there: the ops listener, or the gateway's HTTP one.
    pub addr: SocketAddr,
}

/// The outcome of one health probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Service name, from the [`ProbeTarget`].
    pub name: String,
    /// Generation, from the [`ProbeTarget`]: a probe of a replaced instance counts for nothing.
    pub generation: u64,
    /// Whether `/health` answered with success in time.
    pub healthy: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drain {
    No,
    /// Asked; the relay has not answered yet.
    Asked,
    Since(Instant),
}

#[derive(Debug)]
struct Member {
    name: String,
    kind: Kind,
    index: u32,
    state: State,
    generation: u64,
    instance: Option<Instance>,
    healthy: bool,
    restarts: u64,
    /// When recent restarts happened, within [`CRASH_WINDOW`].
    recent: VecDeque<Instant>,
    /// Crash loops in a row: each doubles the wait before the next try. Back to 0 once a
    /// whole [`CRASH_WINDOW`] passed without a restart.
    crash_loops: u32,
    restart_at: Option<Instant>,
    /// Consecutive unanswered probes.
    failures: u32,
    last_exit: Option<String>,
    /// The current generation's exit, when it came before the report of its start.
    early_exit: Option<String>,
    /// Addresses of the first start, kept by restarts: peers and viewers hold them.
    pinned: BTreeMap<Role, SocketAddr>,
    /// Since when this relay has had no viewer.
    idle_since: Option<Instant>,
    drain: Drain,
    /// Scaled away: listed as stopped until its stop has ended, then dropped.
    leaving: bool,
}

impl Member {
    fn new(kind: Kind, index: u32) -> Member {
        Member {
            name: services::name(kind, index),
            kind,
            index,
            state: State::Stopped,
            generation: 0,
            instance: None,
            healthy: false,
            restarts: 0,
            recent: VecDeque::new(),
            crash_loops: 0,
            restart_at: None,
            failures: 0,
            last_exit: None,
            early_exit: None,
            pinned: BTreeMap::new(),
            idle_since: None,
            drain: Drain::No,
            leaving: false,
        }
    }

    fn is_active_relay(&self) -> bool {
        self.kind == Kind::Relay && !self.leaving
    }
}

/// The supervisor's decisions. See the module documentation.
#[derive(Debug)]
pub struct Policy {
    config: Config,
    /// In start order: control, ingest, the first relays, gateway, then relays added later.
    members: Vec<Member>,
    relays_wanted: u32,
    /// The last generation of every name ever started, so a relay removed and added again
    /// never reuses a generation its old instance's exit could be mistaken for.
    generations: BTreeMap<String, u64>,
    actions: VecDeque<Action>,
    random: u64,
    /// Why the runtime cannot be reached (the Docker Engine restarting), while it cannot:
    /// no start is tried then, since none could succeed.
    runtime_lost: Option<String>,
}

impl Policy {
    /// The stack of `config`, nothing started yet.
    pub fn new(config: Config) -> Policy {
        let mut members = vec![Member::new(Kind::Control, 0), Member::new(Kind::Ingest, 0)];
        members.extend((1..=config.relays).map(|i| Member::new(Kind::Relay, i)));
        members.push(Member::new(Kind::Gateway, 0));
        Policy {
            relays_wanted: config.relays,
            random: config.seed | 1,
            config,
            members,
            generations: BTreeMap::new(),
            actions: VecDeque::new(),
            runtime_lost: None,
        }
    }

    /// The next action to perform.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Policy::handle_timeout`] is next due: the earliest restart. None while the
    /// runtime is unreachable: restarts wait for [`Policy::handle_runtime_back`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.runtime_lost.is_some() {
            return None;
        }
        self.members
            .iter()
            .filter(|m| matches!(m.state, State::Restarting | State::Held | State::Failed))
            .filter_map(|m| m.restart_at)
            .min()
    }

    /// The services' names, in start order.
    pub fn names(&self) -> Vec<String> {
        self.members.iter().map(|m| m.name.clone()).collect()
    }

    /// Relays the supervisor keeps running.
    pub fn relays_wanted(&self) -> u32 {
        self.relays_wanted
    }

    /// Where a service of `kind` listens for `role`, once it has started.
    pub fn addr(&self, kind: Kind, role: Role) -> Option<SocketAddr> {
        self.members
            .iter()
            .find(|m| m.kind == kind)
            .and_then(|m| m.pinned.get(&role).copied())
            .map(loopback_if_unspecified)
    }

    /// The running instances, by service name.
    pub fn instances(&self) -> BTreeMap<String, Instance> {
        self.members
            .iter()
            .filter_map(|m| Some((m.name.clone(), m.instance.clone()?)))
            .collect()
    }

    /// The services as the status shows them.
    pub fn services(&self) -> Vec<Service> {
        self.members
            .iter()
            .map(|m| Service {
                name: m.name.clone(),
                kind: m.kind,
                state: m.state,
                healthy: m.healthy && m.state == State::Running,
                restarts: m.restarts,
                instance: m.instance.as_ref().map(Instance::status),
                usage: None,
                last_exit: m.last_exit.clone(),
            })
            .collect()
    }

    /// Whether every service is up and healthy (relays on their way out aside).
    pub fn ready(&self) -> bool {
        !self.members.is_empty()
            && self
                .members
                .iter()
                .filter(|m| !m.leaving)
                .all(|m| m.healthy && m.state == State::Running)
    }

    /// The running instances to probe now.
    pub fn probe_targets(&self) -> Vec<ProbeTarget> {
        self.members
            .iter()
            .filter(|m| m.state == State::Running)
            .filter_map(|m| {
                let inst = m.instance.as_ref()?;
                let addr = inst
                    .addrs
                    .get(&Role::Ops)
                    .or_else(|| inst.addrs.get(&Role::Http))?;
                Some(ProbeTarget {
                    name: m.name.clone(),
                    generation: m.generation,
                    addr: loopback_if_unspecified(*addr),
                })
            })
            .collect()
    }

    /// What the next start of `name` would run, and as which generation: what an instance
    /// left running by an earlier supervisor is looked for as.
    pub fn next_start(&self, name: &str) -> Option<(Spec, u64)> {
        let m = self.members.iter().find(|m| m.name == name)?;
        Some((self.spec(m), self.next_generation(name)))
    }

    /// Bring-up: starts `name` (services come up one by one, each once those it connects to
    /// are running, so it knows their addresses).
    pub fn handle_bring_up(&mut self, name: &str, _now: Instant) {
        if let Some(i) = self.position(name) {
            self.start(i);
        }
    }

    /// Bring-up found `name` already running, left by an earlier supervisor.
    pub fn handle_adopted(&mut self, name: &str, instance: Instance, _now: Instant) {
        let Some(i) = self.position(name) else {
            return;
        };
        let generation = instance.generation;
        self.note_generation(name, generation);
        let m = &mut self.members[i];
        m.generation = generation;
        m.pinned
            .extend(instance.addrs.iter().map(|(r, a)| (*r, *a)));
        m.instance = Some(instance);
        m.state = State::Running;
        m.healthy = true;
        m.failures = 0;
        self.record(EventKind::Adopt, name, "kept the running instance");
    }

    /// A start announced readiness.
    pub fn handle_started(
        &mut self,
        name: &str,
        generation: u64,
        instance: Instance,
        now: Instant,
    ) {
        let Some(i) = self
            .current(name, generation)
            .filter(|i| self.members[*i].state == State::Starting)
        else {
            // Scaled down or going down while it started: nobody wants it any more.
            self.actions.push_back(Action::Stop(instance));
            return;
        };
        let m = &mut self.members[i];
        for (role, addr) in &instance.addrs {
            m.pinned.entry(*role).or_insert(*addr);
        }
        m.instance = Some(instance);
        m.state = State::Running;
        m.healthy = true;
        m.failures = 0;
        let early_exit = m.early_exit.take();
        self.record(EventKind::Start, name, format!("generation {generation}"));
        if let Some(status) = early_exit {
            self.exited(i, status, now);
        }
    }

    /// A start failed; it is retried after back-off.
    pub fn handle_start_failed(&mut self, name: &str, generation: u64, error: &str, now: Instant) {
        let Some(i) = self
            .current(name, generation)
            .filter(|i| self.members[*i].state == State::Starting)
        else {
            return;
        };
        let m = &mut self.members[i];
        m.state = State::Restarting;
        if let Some(status) = m.early_exit.take() {
            m.last_exit = Some(status);
        }
        self.record(EventKind::StartFailed, name, error);
        self.schedule_restart(i, now);
    }

    /// An instance exited: a crash, a kill, or a stop the policy asked for.
    pub fn handle_exit(&mut self, name: &str, generation: u64, status: &str, now: Instant) {
        let Some(i) = self.current(name, generation) else {
            return;
        };
        let m = &mut self.members[i];
        match m.state {
            // Its start has not been reported yet: the report will find this.
            State::Starting => m.early_exit = Some(status.to_string()),
            State::Running | State::Held if m.instance.is_some() => {
                self.exited(i, status.to_string(), now)
            }
            // Stopped on purpose, or already known dead.
            _ => {}
        }
    }

    /// Why the runtime cannot be reached, while it cannot.
    pub fn runtime_lost(&self) -> Option<&str> {
        self.runtime_lost.as_deref()
    }

    /// The runtime stopped answering (the Docker Engine went away): restarts wait until it
    /// is back, since every start would fail and count towards a crash loop that is not the
    /// service's.
    pub fn handle_runtime_lost(&mut self, reason: &str, _now: Instant) {
        if self.runtime_lost.is_none() {
            self.record(EventKind::RuntimeLost, "stack", reason);
        }
        self.runtime_lost = Some(reason.to_string());
    }

    /// The runtime answers again (and has reported as exited whatever went while it was
    /// away): every service waiting for a restart, failed ones included, is tried at once,
    /// with its crash-loop count forgotten.
    pub fn handle_runtime_back(&mut self, now: Instant) {
        if self.runtime_lost.take().is_none() {
            return;
        }
        self.record(
            EventKind::RuntimeBack,
            "stack",
            "reconciled; restarting what is gone",
        );
        for m in &mut self.members {
            if matches!(m.state, State::Restarting | State::Failed) {
                m.state = State::Restarting;
                m.recent.clear();
                m.crash_loops = 0;
                m.restart_at = Some(m.restart_at.map_or(now, |at| at.min(now)));
            }
        }
    }

    /// Restarts that have fallen due by `now`, crash-looped services' retries included.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.runtime_lost.is_some() {
            return;
        }
        for i in 0..self.members.len() {
            let m = &mut self.members[i];
            let due = matches!(m.state, State::Restarting | State::Held | State::Failed)
                && m.restart_at.is_some_and(|t| t <= now);
            if !due {
                continue;
            }
            m.restart_at = None;
            m.restarts += 1;
            m.recent.push_back(now);
            let (name, detail) = (m.name.clone(), format!("restart #{}", m.restarts));
            self.record(EventKind::Restart, &name, detail);
            self.start(i);
        }
    }

    /// One round of health probes: [`PROBE_FAILURES`] misses in a row and the instance is
    /// killed, as hung; its exit then restarts it.
    pub fn handle_probe(&mut self, results: &[Probe], _now: Instant) {
        for probe in results {
            let Some(i) = self
                .current(&probe.name, probe.generation)
                .filter(|i| self.members[*i].state == State::Running)
            else {
                continue;
            };
            let m = &mut self.members[i];
            if probe.healthy {
                m.failures = 0;
                m.healthy = true;
                continue;
            }
            m.failures += 1;
            m.healthy = false;
            if m.failures < PROBE_FAILURES {
                continue;
            }
            m.failures = 0;
            let instance = m.instance.clone();
            self.record(
                EventKind::Unhealthy,
                &probe.name,
                format!("{PROBE_FAILURES} probes unanswered; killing it"),
            );
            if let Some(instance) = instance {
                self.actions.push_back(Action::Kill(instance));
            }
        }
    }

    /// `ghost chaos kill`: kills the target as a crash would and, with `hold`, keeps it down
    /// that long before its restart. Answers with the service killed: none when the target
    /// has no running instance.
    pub fn handle_kill(
        &mut self,
        target: &Target,
        hold: Option<Duration>,
        now: Instant,
    ) -> Result<Option<String>, Refused> {
        let i = match target {
            Target::RandomRelay => {
                let relays: Vec<usize> = self
                    .members
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| m.is_active_relay() && m.instance.is_some())
                    .map(|(i, _)| i)
                    .collect();
                if relays.is_empty() {
                    return Err(Refused::NoRunningRelay);
                }
                relays[self.pick(relays.len())]
            }
            Target::Service(name) => {
                self.position(name).ok_or_else(|| Refused::UnknownService {
                    name: name.clone(),
                    services: self.names().join(", "),
                })?
            }
        };
        let m = &mut self.members[i];
        let Some(instance) = m.instance.clone() else {
            return Ok(None);
        };
        if let Some(hold) = hold {
            m.restart_at = Some(now + hold);
            m.state = State::Held;
        }
        let name = m.name.clone();
        let detail = match hold {
            Some(h) => format!("SIGKILL, held down for {}", humantime::format_duration(h)),
            None => "SIGKILL".into(),
        };
        self.record(EventKind::Kill, &name, detail);
        self.actions.push_back(Action::Kill(instance));
        Ok(Some(name))
    }

    /// A kill failed: the instance runs on, so a hold-down no longer applies.
    pub fn handle_kill_failed(&mut self, name: &str, generation: u64, _now: Instant) {
        if let Some(i) = self.current(name, generation) {
            let m = &mut self.members[i];
            if m.state == State::Held && m.instance.is_some() {
                m.state = State::Running;
                m.restart_at = None;
            }
        }
    }

    /// A stop has ended: a relay scaled away leaves the list.
    pub fn handle_stopped(&mut self, name: &str, generation: u64, _now: Instant) {
        if let Some(i) = self
            .current(name, generation)
            .filter(|i| self.members[*i].leaving)
        {
            self.members.remove(i);
        }
    }

    /// `ghost down`: stops every instance, the last started first. Starts still under way
    /// are stopped when they report ([`Policy::handle_started`]).
    pub fn handle_down(&mut self, _now: Instant) {
        self.record(EventKind::Down, "stack", "stopping every service");
        for m in self.members.iter_mut().rev() {
            m.state = State::Stopped;
            m.restart_at = None;
            // A relay on its way out is being stopped already.
            if m.leaving {
                continue;
            }
            if let Some(instance) = m.instance.take() {
                self.actions.push_back(Action::Stop(instance));
            }
        }
    }

    fn record(&mut self, kind: EventKind, service: &str, detail: impl Into<String>) {
        self.actions.push_back(Action::Record(Record {
            kind,
            service: service.to_string(),
            detail: detail.into(),
        }));
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.members.iter().position(|m| m.name == name)
    }

    /// The member `name` if `generation` is its current one.
    fn current(&self, name: &str, generation: u64) -> Option<usize> {
        self.position(name)
            .filter(|i| self.members[*i].generation == generation)
    }

    fn relay_count(&self) -> u32 {
        self.members.iter().filter(|m| m.is_active_relay()).count() as u32
    }

    /// Takes relay `i` out of the stack. It stays listed, stopped, until its stop has ended
    /// ([`Policy::handle_stopped`]), so the status never shows a relay gone that still runs.
    fn remove(&mut self, i: usize) {
        let m = &mut self.members[i];
        m.state = State::Stopped;
        m.restart_at = None;
        m.healthy = false;
        m.leaving = true;
        match m.instance.clone() {
            Some(instance) => self.actions.push_back(Action::Stop(instance)),
            None => {
                self.members.remove(i);
            }
        }
    }

    fn next_generation(&self, name: &str) -> u64 {
        self.generations.get(name).copied().unwrap_or(0) + 1
    }

    fn note_generation(&mut self, name: &str, generation: u64) {
        let last = self.generations.entry(name.to_string()).or_insert(0);
        *last = (*last).max(generation);
    }

    fn start(&mut self, i: usize) {
        let name = self.members[i].name.clone();
        let generation = self.next_generation(&name);
        self.note_generation(&name, generation);
        let spec = self.spec(&self.members[i]);
        let m = &mut self.members[i];
        m.generation = generation;
        m.state = State::Starting;
        m.early_exit = None;
        m.drain = Drain::No;
        self.actions.push_back(Action::Start { spec, generation });
    }

    fn exited(&mut self, i: usize, status: String, now: Instant) {
        let m = &mut self.members[i];
        m.instance = None;
        m.healthy = false;
        m.last_exit = Some(status.clone());
        let (name, kind) = (m.name.clone(), m.kind);
        self.record(EventKind::Exit, &name, status);
        if kind == Kind::Relay {
            self.actions.push_back(Action::ForgetRelay(name));
        }
        self.schedule_restart(i, now);
    }

    /// Back-off of 0, 250 ms, 500 ms, 1 s, 2 s, then 4 s by restarts in the last minute (a
    /// single crash is replaced at once); [`CRASH_LOOP`] of them and it is left down for
    /// [`FAILED_RETRY`], doubling with each crash loop in a row up to [`FAILED_RETRY_MAX`].
    fn schedule_restart(&mut self, i: usize, now: Instant) {
        let m = &mut self.members[i];
        while m
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > CRASH_WINDOW)
        {
            m.recent.pop_front();
        }
        if m.recent.is_empty() {
            m.crash_loops = 0;
        }
        if m.recent.len() >= CRASH_LOOP {
            m.crash_loops = m.crash_loops.saturating_add(1);
            let wait = FAILED_RETRY
                .saturating_mul(1 << (m.crash_loops - 1).min(16))
                .min(FAILED_RETRY_MAX);
            m.state = State::Failed;
            m.restart_at = Some(now + wait);
            let name = m.name.clone();
            self.record(
                EventKind::CrashLoop,
                &name,
                format!(
                    "{CRASH_LOOP} restarts within {}; left down, next try in {}",
                    humantime::format_duration(CRASH_WINDOW),
                    humantime::format_duration(wait)
                ),
            );
            return;
        }
        let backoff = match m.recent.len() {
            0 => Duration::ZERO,
            n => Duration::from_millis(250 << (n - 1).min(4)),
        };
        let at = now + backoff;
        // A hold-down still running keeps it down longer.
        m.restart_at = Some(m.restart_at.map_or(at, |held| held.max(at)));
        if m.state != State::Held {
            m.state = State::Restarting;
        }
    }

    fn spec(&self, m: &Member) -> Spec {
        let service = services::service(m.kind);
        let peer_ports = service
            .peers()
            .map(|(kind, role)| {
                let port = self.addr(kind, role).map_or_else(
                    || {
                        services::service(kind)
                            .listen(role)
                            .map_or(0, |l| l.port.resolve(&self.config.ports, 0))
                    },
                    |a| a.port(),
                );
                (kind, port)
            })
            .collect();
        let mut spec = Spec {
            name: m.name.clone(),
            kind: m.kind,
            index: m.index,
            ports: BTreeMap::new(),
            peer_ports,
            public: self.config.public,
            advertise_host: self.config.advertise_host.clone(),
            relay_capacity: self.config.relay_capacity,
            relay_congestion: self.config.relay_congestion,
            require_keys: self.config.require_keys,
            https: self.config.https,
            supervisor: self.config.supervisor,
        };
        // The listeners the stack's settings give this service, as the runtimes see them.
        spec.ports = service
            .listens_for(&spec)
            .map(|l| {
                let port = m
                    .pinned
                    .get(&l.role)
                    .map_or_else(|| l.port.resolve(&self.config.ports, m.index), |a| a.port());
                (l.role, port)
            })
            .collect();
        spec
    }

    /// A number below `n` (xorshift64*: enough to spread chaos kills, and repeatable).
    fn pick(&mut self, n: usize) -> usize {
        let mut x = self.random;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.random = x;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_millis(1);

    fn config(relays: u32, max_relays: u32) -> Config {
        Config {
            relays,
            max_relays,
            relay_capacity: 2,
            relay_congestion: transport::quic::Congestion::Cubic,
            scale_down_after: Duration::from_secs(30),
            ports: Ports::EPHEMERAL,
            public: false,
            advertise_host: None,
            require_keys: false,
            https: false,
            supervisor: "127.0.0.1:7071".parse().expect("addr"),
            seed: 7,
        }
    }

    /// The instance a runtime would report for a start of `spec`: ports as asked, or made
    /// up for ephemeral ones.
    fn instance(spec: &Spec, generation: u64) -> Instance {
        let addrs = spec
            .ports
            .iter()
            .map(|(role, port)| {
                let port = if *port == 0 {
                    20_000 + 10 * spec.index as u16 + *role as u16
                } else {
                    *port
                };
                (*role, SocketAddr::from(([127, 0, 0, 1], port)))
            })
            .collect();
        Instance::for_tests(spec, generation, addrs)
    }

    fn actions(p: &mut Policy) -> Vec<Action> {
        std::iter::from_fn(|| p.poll_action()).collect()
    }

    fn records(actions: &[Action]) -> Vec<(EventKind, String)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Record(r) => Some((r.kind, r.service.clone())),
                _ => None,
            })
            .collect()
    }

    fn starts(actions: &[Action]) -> Vec<(Spec, u64)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Start { spec, generation } => Some((spec.clone(), *generation)),
                _ => None,
            })
            .collect()
    }

    fn stopped(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Stop(instance) => Some(instance.name.clone()),
                _ => None,
            })
            .collect()
    }

    fn killed(actions: &[Action]) -> Vec<(String, u64)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Kill(instance) => Some((instance.name.clone(), instance.generation)),
                _ => None,
            })
            .collect()
    }

    /// Reports every start among `actions` as done; returns what that led to.
    fn start_all(p: &mut Policy, done: &[Action], now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        for (spec, generation) in starts(done) {
            p.handle_started(&spec.name, generation, instance(&spec, generation), now);
            out.extend(actions(p));
        }
        out
    }

    /// A stack of `relays` (at most `max`) brought up at `now`.
    fn up(relays: u32, max: u32, now: Instant) -> Policy {
        let mut p = Policy::new(config(relays, max));
        for name in p.names() {
            p.handle_bring_up(&name, now);
            let a = actions(&mut p);
            assert_eq!(starts(&a).len(), 1, "{name}: {a:?}");
            start_all(&mut p, &a, now);
        }
        assert!(p.ready());
        p
    }

    fn state(p: &Policy, name: &str) -> Option<State> {
        p.services()
            .into_iter()
            .find(|s| s.name == name)
            .map(|s| s.state)
    }

    fn service(p: &Policy, name: &str) -> Service {
        p.services()
            .into_iter()
            .find(|s| s.name == name)
            .expect("service")
    }

    fn generation(p: &Policy, name: &str) -> u64 {
        service(p, name).instance.expect("instance").generation
    }

    #[test]
    fn bring_up_starts_in_order_and_pins_ports_for_restarts() {
        let t0 = Instant::now();
        let mut p = Policy::new(config(2, 4));
        assert_eq!(
            p.names(),
            ["control", "ingest", "relay-1", "relay-2", "gateway"]
        );
        p.handle_bring_up("control", t0);
        let a = actions(&mut p);
        let (spec, generation) = &starts(&a)[0];
        assert_eq!((spec.name.as_str(), *generation), ("control", 1));
        assert_eq!(
            spec.ports,
            BTreeMap::from([(Role::Grpc, 0), (Role::Ops, 0)])
        );
        let a = start_all(&mut p, &a, t0);
        assert_eq!(records(&a), [(EventKind::Start, "control".into())]);
        let control = p.addr(Kind::Control, Role::Grpc).expect("control pinned");

        // Ingest is pointed at control's real port.
        p.handle_bring_up("ingest", t0);
        let a = actions(&mut p);
        assert_eq!(starts(&a)[0].0.peer_ports[&Kind::Control], control.port());

        // A restart asks for the ports of the first start.
        start_all(&mut p, &a, t0);
        let pinned = service(&p, "ingest").instance.expect("instance").addrs;
        p.handle_exit("ingest", 1, "killed", t0);
        p.handle_timeout(t0);
        let a = actions(&mut p);
        let (spec, generation) = &starts(&a)[0];
        assert_eq!(*generation, 2);
        for (role, addr) in pinned {
            assert_eq!(spec.port(role), addr.port());
        }
    }

    #[test]
    fn default_ports_go_to_the_services() {
        let mut c = config(1, 2);
        c.ports = Ports::DEFAULT;
        let mut p = Policy::new(c);
        let (relay, _) = p.next_start("relay-1").expect("relay-1");
        assert_eq!(relay.port(Role::Quic), 4500);
        assert_eq!(relay.port(Role::Ops), 9201);
        assert_eq!(relay.peer_ports[&Kind::Control], 7000);
        assert_eq!(relay.peer_ports[&Kind::Ingest], 4433);
        p.handle_scale(2, Instant::now()).expect("scale");
        let a = actions(&mut p);
        let (relay2, _) = &starts(&a)[0];
        assert_eq!(relay2.port(Role::Quic), 4501);
        assert_eq!(relay2.port(Role::Ops), 9202);
    }

    #[test]
    fn restarts_back_off_then_a_crash_loop_is_left_down() {
        let t0 = Instant::now();
        let mut p = up(1, 2, t0);
        let mut now = t0;
        let mut backoffs = Vec::new();
        for restart in 1..=8 {
            p.handle_exit(
                "relay-1",
                generation(&p, "relay-1"),
                "signal: 9 (SIGKILL)",
                now,
            );
            let a = actions(&mut p);
            assert!(a.contains(&Action::ForgetRelay("relay-1".into())), "{a:?}");
            assert_eq!(state(&p, "relay-1"), Some(State::Restarting));
            let due = p.poll_timeout().expect("a restart is due");
            backoffs.push(due - now);
            // Not a moment early.
            if due > now {
                p.handle_timeout(due - T);
                assert!(starts(&actions(&mut p)).is_empty());
            }
            now = due;
            p.handle_timeout(now);
            let a = actions(&mut p);
            assert_eq!(records(&a)[0], (EventKind::Restart, "relay-1".into()));
            assert_eq!(starts(&a).len(), 1);
            start_all(&mut p, &a, now);
            assert_eq!(service(&p, "relay-1").restarts, restart);
        }
        let ms = Duration::from_millis;
        assert_eq!(
            backoffs,
            [
                ms(0),
                ms(250),
                ms(500),
                ms(1000),
                ms(2000),
                ms(4000),
                ms(4000),
                ms(4000)
            ]
        );
        // The ninth exit within the minute: left down.
        p.handle_exit(
            "relay-1",
            generation(&p, "relay-1"),
            "signal: 9 (SIGKILL)",
            now,
        );
        let a = actions(&mut p);
        assert!(
            records(&a).contains(&(EventKind::CrashLoop, "relay-1".into())),
            "{a:?}"
        );
        assert_eq!(state(&p, "relay-1"), Some(State::Failed));
        assert!(!p.ready());
        // Left down for the long back-off, not for ever.
        assert_eq!(p.poll_timeout(), Some(now + FAILED_RETRY));
        p.handle_timeout(now + FAILED_RETRY - T);
        assert!(starts(&actions(&mut p)).is_empty());
    }

    /// Crashes `name` until it is left down; returns when that happened.
    fn crash_loop(p: &mut Policy, name: &str, mut now: Instant) -> Instant {
        loop {
            p.handle_exit(name, generation(p, name), "exit status: 1", now);
            actions(p);
            if state(p, name) == Some(State::Failed) {
                return now;
            }
            now = p.poll_timeout().expect("a restart is due");
            p.handle_timeout(now);
            let a = actions(p);
            start_all(p, &a, now);
        }
    }

    #[test]
    fn a_failed_service_is_tried_again_after_a_long_back_off() {
        let t0 = Instant::now();
        let mut p = up(1, 1, t0);
        let failed = crash_loop(&mut p, "ingest", t0);

        // Tried again after FAILED_RETRY: a start, counted as a restart.
        let retry = failed + FAILED_RETRY;
        assert_eq!(p.poll_timeout(), Some(retry));
        p.handle_timeout(retry);
        let a = actions(&mut p);
        assert_eq!(starts(&a).len(), 1, "{a:?}");
        assert_eq!(records(&a)[0], (EventKind::Restart, "ingest".into()));
        assert_eq!(state(&p, "ingest"), Some(State::Starting));

        // Failing again at once: the next wait doubles.
        let (_, generation) = starts(&a)[0];
        p.handle_start_failed("ingest", generation, "exit status: 1", retry);
        let a = actions(&mut p);
        assert!(
            records(&a).contains(&(EventKind::CrashLoop, "ingest".into())),
            "{a:?}"
        );
        assert_eq!(state(&p, "ingest"), Some(State::Failed));
        assert_eq!(p.poll_timeout(), Some(retry + 2 * FAILED_RETRY));

        // Once it starts and stays up, it is running again and the stack is ready.
        let back = retry + 2 * FAILED_RETRY;
        p.handle_timeout(back);
        let a = actions(&mut p);
        start_all(&mut p, &a, back);
        assert_eq!(state(&p, "ingest"), Some(State::Running));
        assert!(p.ready());
    }

    #[test]
    fn the_wait_of_a_failed_service_doubles_up_to_the_maximum_and_resets_once_it_is_stable() {
        let mut now = Instant::now();
        let mut p = up(1, 1, now);
        let mut waits = Vec::new();
        for _ in 0..6 {
            now = crash_loop(&mut p, "control", now);
            let at = p.poll_timeout().expect("a retry is due");
            waits.push(at - now);
            now = at;
            p.handle_timeout(now);
            let a = actions(&mut p);
            start_all(&mut p, &a, now);
        }
        let s = Duration::from_secs;
        assert_eq!(waits, [s(30), s(60), s(120), s(240), s(300), s(300)]);
        // A whole crash window without a restart: the next crash loop waits the least again.
        now += CRASH_WINDOW + T;
        now = crash_loop(&mut p, "control", now);
        assert_eq!(p.poll_timeout(), Some(now + FAILED_RETRY));
    }

    #[test]
    fn restarts_wait_for_the_runtime_and_go_at_once_when_it_is_back() {
        let t0 = Instant::now();
        let mut p = up(2, 2, t0);
        // A service that had crash-looped before the outage is not left waiting either.
        let failed = crash_loop(&mut p, "relay-2", t0);
        assert_eq!(state(&p, "relay-2"), Some(State::Failed));

        p.handle_runtime_lost("the Docker Engine does not answer", failed);
        let a = actions(&mut p);
        assert_eq!(records(&a), [(EventKind::RuntimeLost, "stack".into())]);
        assert_eq!(p.runtime_lost(), Some("the Docker Engine does not answer"));

        // A relay gone meanwhile is not started while no start can succeed, nor is the
        // failed one retried.
        p.handle_exit(
            "relay-1",
            generation(&p, "relay-1"),
            "container gone",
            failed,
        );
        actions(&mut p);
        assert_eq!(state(&p, "relay-1"), Some(State::Restarting));
        assert_eq!(p.poll_timeout(), None);
        p.handle_timeout(failed + 2 * FAILED_RETRY);
        assert!(starts(&actions(&mut p)).is_empty());

        let back = failed + Duration::from_secs(1);
        p.handle_runtime_back(back);
        let a = actions(&mut p);
        assert_eq!(records(&a), [(EventKind::RuntimeBack, "stack".into())]);
        assert_eq!(p.runtime_lost(), None);
        assert!(p.poll_timeout().is_some_and(|at| at <= back));
        p.handle_timeout(back);
        let a = actions(&mut p);
        let mut started: Vec<String> = starts(&a).into_iter().map(|(s, _)| s.name).collect();
        started.sort();
        assert_eq!(started, ["relay-1", "relay-2"]);
        start_all(&mut p, &a, back);
        assert!(p.ready());
        // Its crash loop is forgotten: one more crash counts as the second restart in the
        // window (250 ms), not as a ninth.
        p.handle_exit("relay-2", generation(&p, "relay-2"), "exit status: 1", back);
        assert_eq!(state(&p, "relay-2"), Some(State::Restarting));
        assert_eq!(p.poll_timeout(), Some(back + Duration::from_millis(250)));
    }

    #[test]
    fn crashes_a_minute_apart_restart_at_once_for_ever() {
        let mut now = Instant::now();
        let mut p = up(1, 1, now);
        for _ in 0..20 {
            now += CRASH_WINDOW + T;
            p.handle_exit("control", generation(&p, "control"), "exit status: 1", now);
            assert_eq!(p.poll_timeout(), Some(now));
            p.handle_timeout(now);
            let a = actions(&mut p);
            start_all(&mut p, &a, now);
        }
        assert_eq!(state(&p, "control"), Some(State::Running));
        assert_eq!(service(&p, "control").restarts, 20);
    }

    #[test]
    fn a_failed_start_is_retried_after_back_off() {
        let t0 = Instant::now();
        let mut p = up(1, 1, t0);
        p.handle_exit("ingest", 1, "exit status: 1", t0);
        p.handle_timeout(t0);
        let a = actions(&mut p);
        let (_, generation) = starts(&a)[0];
        p.handle_start_failed("ingest", generation, "port in use", t0);
        let a = actions(&mut p);
        assert_eq!(records(&a), [(EventKind::StartFailed, "ingest".into())]);
        assert_eq!(state(&p, "ingest"), Some(State::Restarting));
        // One restart in the window so far: 250 ms.
        assert_eq!(p.poll_timeout(), Some(t0 + Duration::from_millis(250)));
    }

    #[test]
    fn a_kill_with_hold_keeps_the_service_down_until_the_hold_ends() {
        let t0 = Instant::now();
        let mut p = up(1, 1, t0);
        let hold = Duration::from_secs(2);
        let killed_name = p
            .handle_kill(&Target::Service("control".into()), Some(hold), t0)
            .expect("kill");
        assert_eq!(killed_name.as_deref(), Some("control"));
        let a = actions(&mut p);
        assert_eq!(killed(&a), [("control".to_string(), 1)]);
        assert_eq!(records(&a), [(EventKind::Kill, "control".into())]);
        assert_eq!(state(&p, "control"), Some(State::Held));

        // It dies at once, but the hold outlasts the back-off.
        p.handle_exit("control", 1, "signal: 9 (SIGKILL)", t0 + T);
        let a = actions(&mut p);
        assert_eq!(records(&a), [(EventKind::Exit, "control".into())]);
        assert_eq!(state(&p, "control"), Some(State::Held));
        assert_eq!(p.poll_timeout(), Some(t0 + hold));
        p.handle_timeout(t0 + hold - T);
        assert!(actions(&mut p).is_empty());
        p.handle_timeout(t0 + hold);
        let a = actions(&mut p);
        assert_eq!(starts(&a)[0].1, 2);
        start_all(&mut p, &a, t0 + hold);
        assert_eq!(state(&p, "control"), Some(State::Running));
        assert_eq!(service(&p, "control").restarts, 1);
    }

    #[test]
    fn a_kill_without_hold_is_a_crash_replaced_at_once() {
        let t0 = Instant::now();
        let mut p = up(2, 2, t0);
        p.handle_kill(&Target::Service("relay-2".into()), None, t0)
            .expect("kill");
        actions(&mut p);
        assert_eq!(state(&p, "relay-2"), Some(State::Running));
        p.handle_exit("relay-2", 1, "signal: 9 (SIGKILL)", t0);
        assert_eq!(p.poll_timeout(), Some(t0));
    }

    #[test]
    fn a_failed_kill_lifts_the_hold() {
        let t0 = Instant::now();
        let mut p = up(1, 1, t0);
        p.handle_kill(
            &Target::Service("ingest".into()),
            Some(Duration::from_secs(5)),
            t0,
        )
        .expect("kill");
        actions(&mut p);
        p.handle_kill_failed("ingest", 1, t0);
        assert_eq!(state(&p, "ingest"), Some(State::Running));
        assert_eq!(p.poll_timeout(), None);
    }

    #[test]
    fn kill_refuses_an_unknown_service_and_a_stack_without_relays() {
        let t0 = Instant::now();
        let mut p = up(1, 1, t0);
        let e = p
            .handle_kill(&Target::Service("relay-9".into()), None, t0)
            .expect_err("unknown");
        assert_eq!(
            e.to_string(),
            r#"no service "relay-9"; services: control, ingest, relay-1, gateway"#
        );
        assert!(actions(&mut p).is_empty());

        // A relay that is not running is no candidate for a random kill.
        p.handle_exit("relay-1", 1, "signal: 9 (SIGKILL)", t0);
        actions(&mut p);
        assert_eq!(
            p.handle_kill(&Target::RandomRelay, None, t0),
            Err(Refused::NoRunningRelay)
        );
        // Nor for a named one: nothing to kill.
        assert_eq!(
            p.handle_kill(&Target::Service("relay-1".into()), None, t0),
            Ok(None)
        );
    }

    #[test]
    fn a_random_kill_picks_a_running_relay() {
        let t0 = Instant::now();
        let mut p = up(3, 3, t0);
        let mut picked = std::collections::BTreeSet::new();
        for _ in 0..30 {
            let name = p
                .handle_kill(&Target::RandomRelay, None, t0)
                .expect("kill")
                .expect("a relay");
            assert!(name.starts_with("relay-"), "{name}");
            let a = actions(&mut p);
            assert_eq!(killed(&a)[0].0, name);
            picked.insert(name);
        }
        assert_eq!(picked.len(), 3, "{picked:?}");
    }

    #[test]
    fn three_missed_probes_kill_a_hung_service() {
        let t0 = Instant::now();
        let mut p = up(1, 1, t0);
        let targets = p.probe_targets();
        assert_eq!(targets.len(), 4);
        let probe = |healthy| Probe {
            name: "ingest".into(),
            generation: 1,
            healthy,
        };
        p.handle_probe(&[probe(false), probe(false)], t0);
        assert!(actions(&mut p).is_empty());
        assert!(!service(&p, "ingest").healthy);
        // An answer resets the count.
        p.handle_probe(&[probe(true)], t0);
        assert!(service(&p, "ingest").healthy);
        p.handle_probe(&[probe(false)], t0);
        p.handle_probe(&[probe(false)], t0);
        assert!(actions(&mut p).is_empty());
        p.handle_probe(&[probe(false)], t0);
        let a = actions(&mut p);
        assert_eq!(records(&a), [(EventKind::Unhealthy, "ingest".into())]);
        assert_eq!(killed(&a), [("ingest".to_string(), 1)]);
        // A probe of an earlier instance counts for nothing.
        let stale = Probe {
            name: "ingest".into(),
            generation: 0,
            healthy: false,
        };
        for _ in 0..5 {
            p.handle_probe(std::slice::from_ref(&stale), t0);
        }
        assert!(actions(&mut p).is_empty());
    }

    #[test]
    fn capacity_adds_relays_for_the_refused_viewers_up_to_the_maximum() {
        let t0 = Instant::now();
        let mut p = up(1, 3, t0);
        // Three refused, two per relay: two more relays.
        let c = p.handle_capacity(3, t0);
        assert_eq!(
            c,
            Capacity {
                starting: 2,
                total: 3,
                max: 3
            }
        );
        let a = actions(&mut p);
        let names: Vec<String> = starts(&a).into_iter().map(|(s, _)| s.name).collect();
        assert_eq!(names, ["relay-2", "relay-3"]);
        assert_eq!(
            records(&a),
            [
                (EventKind::Capacity, "control".into()),
                (EventKind::Scale, "relays".into())
            ]
        );
        assert_eq!(p.relays_wanted(), 3);
        start_all(&mut p, &a, t0);
        // At the maximum: nothing more.
        let c = p.handle_capacity(10, t0);
        assert_eq!(
            c,
            Capacity {
                starting: 0,
                total: 3,
                max: 3
            }
        );
        assert!(starts(&actions(&mut p)).is_empty());
    }

    #[test]
    fn capacity_waits_for_a_relay_already_starting() {
        let t0 = Instant::now();
        let mut p = up(1, 4, t0);
        let c = p.handle_capacity(1, t0);
        assert_eq!(c.starting, 1);
        let a = actions(&mut p);
        assert_eq!(starts(&a).len(), 1);
        // Still starting: more refusals add nothing until it is up.
        let c = p.handle_capacity(5, t0 + T);
        assert_eq!(
            c,
            Capacity {
                starting: 0,
                total: 2,
                max: 4
            }
        );
        assert!(starts(&actions(&mut p)).is_empty());
        start_all(&mut p, &a, t0 + T);
        let c = p.handle_capacity(5, t0 + 2 * T);
        assert_eq!(c.starting, 2);
    }

    fn loads(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
        pairs.iter().map(|(n, v)| (n.to_string(), *v)).collect()
    }

    #[test]
    fn an_idle_relay_added_on_demand_is_drained_then_removed_once_empty() {
        let t0 = Instant::now();
        let mut p = up(1, 3, t0);
        p.handle_capacity(1, t0);
        let a = actions(&mut p);
        start_all(&mut p, &a, t0);
        let after = config(1, 3).scale_down_after;

        p.handle_relay_load(&loads(&[("relay-1", 4), ("relay-2", 0)]), t0);
        p.handle_relay_load(&loads(&[("relay-1", 4), ("relay-2", 0)]), t0 + after - T);
        assert!(actions(&mut p).is_empty(), "not idle long enough yet");
        let t1 = t0 + after;
        p.handle_relay_load(&loads(&[("relay-1", 4), ("relay-2", 0)]), t1);
        let a = actions(&mut p);
        let Some(Action::Drain {
            name, generation, ..
        }) = a.first()
        else {
            panic!("expected a drain: {a:?}");
        };
        assert_eq!((name.as_str(), *generation), ("relay-2", 1));
        // Asked once, not again while the answer is on its way.
        p.handle_relay_load(&loads(&[("relay-2", 0)]), t1 + T);
        assert!(actions(&mut p).is_empty());
        p.handle_drained("relay-2", 1, true, t1);
        assert_eq!(
            records(&actions(&mut p)),
            [(EventKind::Drain, "relay-2".into())]
        );

        // Control has not seen it draining yet.
        p.handle_relay_load(&loads(&[("relay-2", 0)]), t1 + DRAIN_SEEN - T);
        assert!(actions(&mut p).is_empty());
        // A viewer placed just before: kept until it leaves.
        p.handle_relay_load(&loads(&[("relay-2", 1)]), t1 + DRAIN_SEEN);
        assert!(actions(&mut p).is_empty());
        p.handle_relay_load(&loads(&[("relay-2", 0)]), t1 + DRAIN_SEEN + T);
        let a = actions(&mut p);
        assert_eq!(stopped(&a), ["relay-2"]);
        assert!(a.contains(&Action::ForgetRelay("relay-2".into())));
        assert_eq!(records(&a), [(EventKind::ScaleDown, "relay-2".into())]);
        assert_eq!(p.relays_wanted(), 1);
        // Listed as stopped until its stop has ended; the stack is ready meanwhile.
        assert_eq!(state(&p, "relay-2"), Some(State::Stopped));
        assert!(p.ready());
        p.handle_stopped("relay-2", 1, t1 + DRAIN_SEEN + T);
        assert_eq!(state(&p, "relay-2"), None);
    }

    #[test]
    fn the_starting_relays_are_never_drained() {
        let t0 = Instant::now();
        let mut p = up(2, 4, t0);
        let idle = loads(&[("relay-1", 0), ("relay-2", 0)]);
        p.handle_relay_load(&idle, t0);
        p.handle_relay_load(&idle, t0 + Duration::from_secs(3600));
        assert!(actions(&mut p).is_empty());
    }

    #[test]
    fn a_capacity_request_keeps_an_idle_relay() {
        let t0 = Instant::now();
        let mut p = up(1, 2, t0);
        p.handle_scale(2, t0).expect("scale");
        let a = actions(&mut p);
        start_all(&mut p, &a, t0);
        let after = config(1, 2).scale_down_after;
        p.handle_relay_load(&loads(&[("relay-2", 0)]), t0);
        // At the maximum, so nothing starts; but the idle clock starts again.
        p.handle_capacity(1, t0 + after - T);
        actions(&mut p);
        p.handle_relay_load(&loads(&[("relay-2", 0)]), t0 + after);
        assert!(actions(&mut p).is_empty());
        p.handle_relay_load(&loads(&[("relay-2", 0)]), t0 + 2 * after);
        assert!(matches!(
            actions(&mut p).first(),
            Some(Action::Drain { .. })
        ));
    }

    #[test]
    fn a_refused_drain_is_asked_again() {
        let t0 = Instant::now();
        let mut p = up(1, 2, t0);
        p.handle_scale(2, t0).expect("scale");
        let a = actions(&mut p);
        start_all(&mut p, &a, t0);
        let late = t0 + config(1, 2).scale_down_after;
        p.handle_relay_load(&loads(&[("relay-2", 0)]), t0);
        p.handle_relay_load(&loads(&[("relay-2", 0)]), late);
        assert_eq!(actions(&mut p).len(), 1);
        p.handle_drained("relay-2", 1, false, late);
        assert!(actions(&mut p).is_empty());
        p.handle_relay_load(&loads(&[("relay-2", 0)]), late + T);
        assert!(matches!(
            actions(&mut p).first(),
            Some(Action::Drain { .. })
        ));
    }

    #[test]
    fn scale_stays_within_bounds_and_removes_the_newest_relays() {
        let t0 = Instant::now();
        let mut p = up(1, 3, t0);
        assert_eq!(
            p.handle_scale(0, t0),
            Err(Refused::ScaleOutOfRange { max: 3 })
        );
        let e = p.handle_scale(4, t0).expect_err("above max");
        assert_eq!(e.to_string(), "relay count must be between 1 and 3");
        assert!(actions(&mut p).is_empty());
        assert_eq!(p.relays_wanted(), 1);

        assert_eq!(p.handle_scale(3, t0), Ok(3));
        let a = actions(&mut p);
        start_all(&mut p, &a, t0);
        assert_eq!(p.handle_scale(1, t0), Ok(1));
        let a = actions(&mut p);
        assert_eq!(stopped(&a), ["relay-3", "relay-2"]);
        assert_eq!(
            records(&a),
            [
                (EventKind::ScaleDown, "relay-3".into()),
                (EventKind::ScaleDown, "relay-2".into()),
                (EventKind::Scale, "relays".into())
            ]
        );
        assert_eq!(state(&p, "relay-3"), Some(State::Stopped));
        p.handle_stopped("relay-3", 1, t0);
        assert_eq!(state(&p, "relay-3"), None);

        // Up again while relay-2 is still stopping: a new relay-2 takes its place, and the
        // old one's stop, when it ends, leaves the new one be.
        assert_eq!(p.handle_scale(2, t0), Ok(2));
        let a = actions(&mut p);
        assert_eq!(starts(&a)[0].1, 2);
        assert_eq!(
            p.names(),
            ["control", "ingest", "relay-1", "gateway", "relay-2"]
        );
        p.handle_stopped("relay-2", 1, t0);
        assert_eq!(state(&p, "relay-2"), Some(State::Starting));
    }

    #[test]
    fn stale_reports_are_recognised_by_their_generation() {
        let t0 = Instant::now();
        let mut p = up(1, 3, t0);
        p.handle_scale(2, t0).expect("scale");
        let a = actions(&mut p);
        let (spec, generation) = starts(&a)[0].clone();
        // Scaled back down while relay-2 was still starting: its start, when it ends, is
        // undone.
        p.handle_scale(1, t0).expect("scale");
        actions(&mut p);
        p.handle_started(&spec.name, generation, instance(&spec, generation), t0);
        assert_eq!(stopped(&actions(&mut p)), ["relay-2"]);

        // Added again, it gets a generation its old instance never had.
        p.handle_scale(2, t0).expect("scale");
        let a = actions(&mut p);
        let (_, again) = starts(&a)[0];
        assert!(again > generation);
        start_all(&mut p, &a, t0);
        // The old instance's exit changes nothing.
        p.handle_exit("relay-2", generation, "signal: 15 (SIGTERM)", t0);
        assert!(actions(&mut p).is_empty());
        assert_eq!(state(&p, "relay-2"), Some(State::Running));
    }

    #[test]
    fn an_exit_reported_before_its_start_still_restarts() {
        let t0 = Instant::now();
        let mut p = up(1, 1, t0);
        p.handle_exit("relay-1", 1, "signal: 9 (SIGKILL)", t0);
        p.handle_timeout(t0);
        let a = actions(&mut p);
        let (spec, generation) = starts(&a)[0].clone();
        // The new instance died at once, and its exit overtook the start's report.
        p.handle_exit("relay-1", generation, "exit status: 101", t0);
        assert!(actions(&mut p).is_empty());
        p.handle_started("relay-1", generation, instance(&spec, generation), t0);
        let a = actions(&mut p);
        assert_eq!(
            records(&a),
            [
                (EventKind::Start, "relay-1".into()),
                (EventKind::Exit, "relay-1".into())
            ]
        );
        assert_eq!(state(&p, "relay-1"), Some(State::Restarting));
        assert_eq!(
            service(&p, "relay-1").last_exit.as_deref(),
            Some("exit status: 101")
        );
    }

    #[test]
    fn down_stops_everything_last_first_and_starts_under_way_when_they_end() {
        let t0 = Instant::now();
        let mut p = up(1, 2, t0);
        p.handle_scale(2, t0).expect("scale");
        let a = actions(&mut p);
        let (spec, generation) = starts(&a)[0].clone();
        p.handle_exit("ingest", 1, "exit status: 1", t0);
        actions(&mut p);
        p.handle_down(t0);
        let a = actions(&mut p);
        assert_eq!(records(&a), [(EventKind::Down, "stack".into())]);
        assert_eq!(stopped(&a), ["gateway", "relay-1", "control"]);
        assert!(p.services().iter().all(|s| s.state == State::Stopped));
        assert_eq!(p.poll_timeout(), None);
        // The start under way ends after: stopped in turn, and nothing restarts.
        p.handle_started(&spec.name, generation, instance(&spec, generation), t0);
        assert_eq!(stopped(&actions(&mut p)), ["relay-2"]);
        p.handle_exit("relay-1", 1, "signal: 15 (SIGTERM)", t0);
        p.handle_timeout(t0 + Duration::from_secs(60));
        assert!(actions(&mut p).is_empty());
    }

    #[test]
    fn an_adopted_instance_keeps_its_generation() {
        let t0 = Instant::now();
        let mut p = Policy::new(config(1, 1));
        let (spec, _) = p.next_start("control").expect("control");
        p.handle_adopted("control", instance(&spec, 4), t0);
        assert_eq!(
            records(&actions(&mut p)),
            [(EventKind::Adopt, "control".into())]
        );
        assert_eq!(state(&p, "control"), Some(State::Running));
        // Its death is noticed, and the replacement comes after it.
        p.handle_exit("control", 4, "container died (exit code 137)", t0);
        p.handle_timeout(t0);
        assert_eq!(starts(&actions(&mut p))[0].1, 5);
    }
}

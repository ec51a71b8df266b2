//! Where services run: the [`Runtime`] trait, implemented by local processes
//! ([`process::ProcessRuntime`]) and by Docker containers ([`docker::DockerRuntime`]).

pub mod docker;
pub mod process;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::Result;
use api::status::{Instance, Kind, Role, Usage};
use tokio::sync::mpsc;

use crate::services::When;

/// Everything needed to start one service instance. Each runtime turns it into a command
/// line through [`crate::services::args`]: host addresses for processes, service names
/// inside a container network for Docker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// Unique name in the stack: `control`, `ingest`, `gateway`, `relay-1`, ...
    pub name: String,
    /// What it is.
    pub kind: Kind,
    /// Relay number (1-based), 0 for the others.
    pub index: u32,
    /// Host port wanted for each role it listens on; 0 for any free port.
    pub ports: BTreeMap<Role, u16>,
    /// Host port of each service it connects to, at the role it connects to.
    pub peer_ports: BTreeMap<Kind, u16>,
    /// Publish the public roles (QUIC, the gateway's HTTP) on all addresses, not loopback.
    pub public: bool,
    /// Host name viewers use to reach relays.
    pub advertise_host: Option<String>,
    /// Viewers a relay admits.
    pub relay_capacity: u32,
    /// Publishers need a stream key.
    pub require_keys: bool,
    /// The supervisor's capacity API, as the services reach it.
    pub supervisor: SocketAddr,
}

impl Spec {
    /// A spec for the runtimes' command-line tests: control on 7000 and ingest on 4433,
    /// a relay capacity of 50.
    #[cfg(test)]
    pub(crate) fn for_tests(
        kind: Kind,
        index: u32,
        ports: &[(Role, u16)],
        public: bool,
        supervisor: SocketAddr,
    ) -> Spec {
        Spec {
            name: crate::services::name(kind, index),
            kind,
            index,
            ports: ports.iter().copied().collect(),
            peer_ports: BTreeMap::from([(Kind::Control, 7000), (Kind::Ingest, 4433)]),
            public,
            advertise_host: None,
            relay_capacity: 50,
            require_keys: false,
            supervisor,
        }
    }
}

impl Spec {
    /// The host port wanted for `role` (0 when unset: any free port).
    pub fn port(&self, role: Role) -> u16 {
        self.ports.get(&role).copied().unwrap_or(0)
    }

    /// The host port of peer `kind` (0 when unknown).
    pub fn peer_port(&self, kind: Kind) -> u16 {
        self.peer_ports.get(&kind).copied().unwrap_or(0)
    }

    /// Whether the stack's setting `when` holds, which turns its flag on.
    pub fn holds(&self, when: When) -> bool {
        match when {
            When::KeysRequired => self.require_keys,
        }
    }
}

/// Something that happened to an instance, outside the supervisor's own calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The instance exited (crash, kill, or stop).
    Exited {
        /// Service name.
        name: String,
        /// Which start of it.
        generation: u64,
        /// Exit status as text.
        status: String,
    },
    /// The runtime stopped answering (the Docker Engine restarting, its socket gone):
    /// nothing it runs can be started, stopped or watched until [`Event::Reachable`].
    Unreachable {
        /// What failed, for the status and the timeline.
        reason: String,
    },
    /// The runtime answers again. Every instance that went while it was away has been
    /// reported as [`Event::Exited`] before this.
    Reachable,
}

/// Starts, stops and watches service instances.
///
/// Calls may overlap: the supervisor runs each start, stop and kill as a task of its own, so
/// one slow start never holds up another service's restart.
#[async_trait::async_trait]
pub trait Runtime: Send + Sync {
    /// `process` or `docker`.
    fn name(&self) -> &'static str;
    /// One-time set-up before the first start (networks, images); exits of instances are
    /// reported on `events`. `progress` hears each step.
    async fn prepare(
        &self,
        events: mpsc::Sender<Event>,
        progress: &crate::actor::Progress,
    ) -> Result<()>;
    /// The address on which the services reach the supervisor's host.
    fn internal_ip(&self) -> std::net::IpAddr;
    /// An instance of `spec` already running from an earlier supervisor, if any.
    async fn adopt(&self, spec: &Spec, generation: u64) -> Result<Option<Instance>>;
    /// Starts `spec` and returns once it announced readiness.
    async fn start(&self, spec: &Spec, generation: u64) -> Result<Instance>;
    /// Stops gracefully (SIGTERM, then SIGKILL after a grace period).
    async fn stop(&self, instance: &Instance) -> Result<()>;
    /// Kills at once (SIGKILL), as a crash would.
    async fn kill(&self, instance: &Instance) -> Result<()>;
    /// Resource use now, where the runtime can tell.
    async fn usage(&self, instance: &Instance) -> Option<Usage>;
    /// Removes whatever `prepare` made.
    async fn cleanup(&self) -> Result<()>;
}

//! Where services run: the [`Runtime`] trait, implemented by local processes
//! ([`process::ProcessRuntime`]) and by Docker containers.

pub mod docker;
pub mod process;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::Result;
use serde::Serialize;
use tokio::sync::mpsc;

/// Which service a spec is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The control plane.
    Control,
    /// The ingest gateway.
    Ingest,
    /// A relay.
    Relay,
    /// The viewer gateway.
    Gateway,
}

impl Kind {
    /// The service binary's name.
    pub fn binary(self) -> &'static str {
        match self {
            Kind::Control => "ghost-control",
            Kind::Ingest => "ghost-ingest",
            Kind::Relay => "ghost-relay",
            Kind::Gateway => "ghost-gateway",
        }
    }
}

impl Kind {
    /// The roles of the addresses this kind listens on.
    pub fn roles(self) -> &'static [&'static str] {
        match self {
            Kind::Control => &["grpc", "ops"],
            Kind::Ingest | Kind::Relay => &["quic", "ops"],
            Kind::Gateway => &["http"],
        }
    }

    /// Lower-case name, as in image names and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Control => "control",
            Kind::Ingest => "ingest",
            Kind::Relay => "relay",
            Kind::Gateway => "gateway",
        }
    }
}

/// Everything needed to start one service instance. Each runtime turns it into command-line
/// arguments of its own: host addresses for processes, service names inside a container
/// network for Docker.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Unique name in the stack: `control`, `ingest`, `gateway`, `relay-1`, ...
    pub name: String,
    /// What it is.
    pub kind: Kind,
    /// Relay number (1-based), 0 for the others.
    pub index: u32,
    /// Host port wanted for each role (`grpc`, `ops`, `quic`, `http`); 0 for any free port.
    pub ports: BTreeMap<String, u16>,
    /// Publish public roles (`quic`, `http`) on all addresses instead of loopback.
    pub public: bool,
    /// Host name viewers use to reach relays.
    pub advertise_host: Option<String>,
    /// Viewers a relay admits.
    pub relay_capacity: u32,
    /// Host port of control's gRPC.
    pub control_port: u16,
    /// Host port of ingest's QUIC.
    pub ingest_port: u16,
    /// The supervisor's capacity API, as the services reach it.
    pub supervisor: SocketAddr,
}

impl Spec {
    /// The host port wanted for `role` (0 when unset).
    pub fn port(&self, role: &str) -> u16 {
        self.ports.get(role).copied().unwrap_or(0)
    }
}

/// A running instance, as started by a runtime.
#[derive(Debug, Clone, Serialize)]
pub struct Instance {
    /// Service name.
    pub name: String,
    /// Process id (process runtime) or container's main pid.
    pub pid: Option<u32>,
    /// Container id (Docker runtime).
    pub container: Option<String>,
    /// Addresses the service announced, by role (`quic`, `ops`, `grpc`, `http`), as reachable
    /// from this host.
    pub addrs: BTreeMap<String, SocketAddr>,
    /// Which start of this service this is (1 for the first), to tell old exits from new.
    pub generation: u64,
}

/// Something that happened to an instance, outside the supervisor's own calls.
#[derive(Debug, Clone)]
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
}

/// Resource use of an instance.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Usage {
    /// CPU seconds used since start (user + system).
    pub cpu_s: f64,
    /// Resident memory, bytes.
    pub rss_bytes: u64,
}

/// Starts, stops and watches service instances.
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

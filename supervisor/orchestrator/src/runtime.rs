//! Where services run: the [`Runtime`] trait, implemented by local processes
//! ([`process::ProcessRuntime`]), by Docker containers ([`docker::DockerRuntime`]) and by
//! Swarm services across several machines ([`swarm::SwarmRuntime`]).

pub mod docker;
pub mod process;
pub mod swarm;

use anyhow::Result;
use api::status::{Instance, Kind, Usage};
use tokio::sync::mpsc;

use crate::services::Spec;

/// Hears each step of a long operation (bring-up, image builds), for the user to see.
pub type Progress = dyn Fn(&str) + Send + Sync;

/// Bounds on what the services may take of the host: memory and processes of each
/// container, and the size of every log. See the README's "Limits" for how the defaults
/// were sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Memory of a relay's container, bytes.
    pub relay_memory: u64,
    /// Memory of each other service's container (control, ingest, gateway), bytes.
    pub memory: u64,
    /// Processes and threads of each container.
    pub pids: u32,
    /// Each log file is rotated at this many bytes.
    pub log_max_size: u64,
    /// Files kept of each log, the one being written included.
    pub log_max_files: u32,
}

impl Limits {
    /// Base memory of a relay: the process, its runtime, and the current group of each
    /// stream it carries.
    pub const RELAY_BASE: u64 = 64 << 20;
    /// Memory per viewer seat: what a viewer costs measured (about 100 KiB, 117 KiB over
    /// WebTransport) plus a full receive window of unacknowledged media held for a slow
    /// viewer (320 KiB).
    pub const RELAY_PER_VIEWER: u64 = 512 << 10;
    /// Memory of control, ingest and the gateway.
    pub const MEMORY: u64 = 256 << 20;
    /// Processes and threads per container.
    pub const PIDS: u32 = 256;
    /// Size at which a log is rotated.
    pub const LOG_MAX_SIZE: u64 = 10 << 20;
    /// Files kept per log.
    pub const LOG_MAX_FILES: u32 = 3;

    /// The defaults for relays admitting `relay_capacity` viewers each.
    pub fn for_capacity(relay_capacity: u32) -> Limits {
        Limits {
            relay_memory: Limits::relay_memory_for(relay_capacity),
            memory: Limits::MEMORY,
            pids: Limits::PIDS,
            log_max_size: Limits::LOG_MAX_SIZE,
            log_max_files: Limits::LOG_MAX_FILES,
        }
    }

    /// A relay's default memory for `relay_capacity` viewers.
    pub fn relay_memory_for(relay_capacity: u32) -> u64 {
        Limits::RELAY_BASE + Limits::RELAY_PER_VIEWER * u64::from(relay_capacity)
    }

    /// The memory of a `kind` container.
    pub fn memory_of(&self, kind: Kind) -> u64 {
        match kind {
            Kind::Relay => self.relay_memory,
            _ => self.memory,
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
    /// `process`, `docker` or `swarm`.
    fn name(&self) -> &'static str;
    /// One-time set-up before the first start (networks, images); exits of instances are
    /// reported on `events`. `progress` hears each step.
    async fn prepare(
        &self,
        events: mpsc::Sender<Event>,
        progress: &crate::runtime::Progress,
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
    /// The machines services run on, where the runtime spans several (Swarm).
    async fn nodes(&self) -> Vec<api::status::Node> {
        Vec::new()
    }
    /// Removes whatever `prepare` made.
    async fn cleanup(&self) -> Result<()>;
}

//! Where services run: the [`Runtime`] trait, implemented by local processes
//! ([`process::ProcessRuntime`]), by Docker containers ([`docker::DockerRuntime`]) and by
//! Swarm services across several machines ([`swarm::SwarmRuntime`]).

pub mod docker;
pub mod process;
pub mod swarm;

use std::path::PathBuf;
use std::time::Duration;

use api::status::{Kind, Usage};
use tokio::sync::mpsc;

pub use crate::instance::{Container, Handle, Instance, Replica};
use crate::services::Spec;
pub use crate::stack::Backend;

/// A result of a runtime's call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a runtime could not start, stop or reach an instance, or set itself up. The text says
/// what was being done; the source, kept chained, says why.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The service's binary is not where the runtime looks for it.
    #[error(
        "{binary} not found in {}; build the services first: cargo build --release --workspace",
        dir.display()
    )]
    MissingBinary {
        /// The binary's file name.
        binary: &'static str,
        /// The directory searched.
        dir: PathBuf,
    },
    /// Neither the service's binary nor an image made from it is on this host.
    #[error(
        "neither {} nor the image {image} exists; build the services \
         (cargo build --release --workspace) or load the images",
        binary.display()
    )]
    MissingImage {
        /// Where the binary was looked for.
        binary: PathBuf,
        /// The image looked for instead.
        image: String,
        /// The engine's answer about the image.
        #[source]
        source: Box<bollard::errors::Error>,
    },
    /// The service exited before it announced readiness.
    #[error(
        "{name} exited during start-up{}{output}",
        status.as_deref().map(|s| format!(" ({s})")).unwrap_or_default()
    )]
    Exited {
        /// The service.
        name: String,
        /// Its exit status, where the runtime knows it.
        status: Option<String>,
        /// Where to read why.
        output: Output,
    },
    /// The service did not announce readiness in time (it was stopped).
    #[error("{name} did not become ready within {timeout:?}{output}")]
    NotReady {
        /// The service.
        name: String,
        /// How long it was given.
        timeout: Duration,
        /// Where to read why.
        output: Output,
    },
    /// The Docker Engine refused a call, or failed it.
    #[error("{doing}")]
    Engine {
        /// What was being done (`creating container ghost-1a2b-relay-1`).
        doing: String,
        /// The engine's error.
        #[source]
        source: Box<bollard::errors::Error>,
    },
    /// The Docker Engine did not answer in time.
    #[error("{doing}")]
    Timeout {
        /// What was asked, in words that say it went unanswered.
        doing: &'static str,
        /// The timer's error.
        #[source]
        source: tokio::time::error::Elapsed,
    },
    /// The service's command line could not be made from the service table.
    #[error("the command line of {name}")]
    CommandLine {
        /// The service.
        name: String,
        /// Why.
        #[source]
        source: crate::services::Error,
    },
    /// The engine failed to build a service's image.
    #[error("building {image}: {message}")]
    Build {
        /// The image's reference.
        image: String,
        /// The build's own message.
        message: String,
    },
    /// The stack's network outlived its removal.
    #[error("network {network} still listed after its removal")]
    NetworkRemains {
        /// The network's name.
        network: String,
    },
    /// A file operation failed.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done (`opening`, `reading`, `starting`, ...).
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Building an image's context in memory failed.
    #[error("{doing}")]
    BuildContext {
        /// What was being done.
        doing: String,
        /// The archive's error.
        #[source]
        source: std::io::Error,
    },
    /// No free port could be found for a service asked to take any.
    #[error(transparent)]
    FreePort(std::io::Error),
    /// A signal could not be sent.
    #[error("sending {signal} to {pid}")]
    Signal {
        /// The process.
        pid: i32,
        /// The signal.
        signal: nix::sys::signal::Signal,
        /// The system's error.
        #[source]
        source: nix::errno::Errno,
    },
    /// A process id this system cannot address.
    #[error("pid out of range")]
    PidOutOfRange(#[source] std::num::TryFromIntError),
    /// An answer lacked what it always holds (a child's pid, a network's gateway, an id).
    #[error("{0}")]
    Unexpected(String),
    /// The supervisor stopped listening to the runtime's events.
    #[error("the supervisor stopped")]
    SupervisorGone(#[source] mpsc::error::SendError<Event>),
    /// A start was asked of a runtime that was not prepared.
    #[error("runtime not prepared")]
    NotPrepared,
    /// The runtime's start panicked.
    #[error("the start panicked")]
    Panicked,
    /// What only the Swarm runtime meets.
    #[error(transparent)]
    Swarm(#[from] swarm::error::Error),
}

impl Error {
    /// The engine failed while doing `doing`.
    pub(crate) fn engine(doing: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> Error {
        let doing = doing.into();
        move |source| Error::Engine {
            doing,
            source: Box::new(source),
        }
    }

    /// The file operation `action` on `path` failed.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }
}

/// What a service that failed to start left for the user to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Its log file (the process runtime).
    Log(PathBuf),
    /// Its last lines of output (a container, a Swarm task).
    Tail(String),
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Output::Log(path) => write!(f, "; see {}", path.display()),
            Output::Tail(lines) => write!(f, ":\n{lines}"),
        }
    }
}

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
    /// Which runtime this is.
    fn backend(&self) -> Backend;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_start_says_where_to_read_why() {
        let log = || Output::Log("state/logs/relay-1.log".into());
        let exited = Error::Exited {
            name: "relay-1".into(),
            status: Some("exit status: 1".into()),
            output: log(),
        };
        assert_eq!(
            exited.to_string(),
            "relay-1 exited during start-up (exit status: 1); see state/logs/relay-1.log"
        );
        let slow = Error::NotReady {
            name: "relay-1".into(),
            timeout: Duration::from_secs(15),
            output: log(),
        };
        assert_eq!(
            slow.to_string(),
            "relay-1 did not become ready within 15s; see state/logs/relay-1.log"
        );
        let container = Error::Exited {
            name: "relay-1".into(),
            status: None,
            output: Output::Tail("first\nlast".into()),
        };
        assert_eq!(
            container.to_string(),
            "relay-1 exited during start-up:\nfirst\nlast"
        );
    }

    #[test]
    fn a_chain_shows_each_cause_once() {
        let io = Error::io("opening", "relay-1.log")(std::io::Error::other("denied"));
        assert_eq!(
            server::telemetry::Chain(&io).to_string(),
            "opening relay-1.log: denied"
        );
        let placement = Error::from(swarm::Error::from(crate::policy::placement::NoMachine {
            machines: "w1 (down, active)".into(),
        }));
        assert_eq!(
            server::telemetry::Chain(&placement).to_string(),
            "no Swarm node can take a relay: none is both ready and active (nodes: w1 (down, active))"
        );
    }
}

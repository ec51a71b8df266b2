//! The Docker runtime: one container per service on the local Docker Engine, through
//! bollard.
//!
//! - A bridge network of the stack's own; services reach each other by name (`control:7000`,
//!   `ingest:4433`) and the supervisor on the network's gateway address.
//! - Images `ghost-stream/<service>` are built from `images/<service>.Dockerfile` and the
//!   service's static binary, sent as an in-memory tar context: nothing is pulled.
//! - Containers carry labels naming the stack, the service and the generation, run with
//!   restart policy `no` (the supervisor restarts them itself) and publish their ports on
//!   127.0.0.1, or on all addresses for the public ones with `--public`.
//! - Containers run with a read-only root file system, every capability dropped,
//!   `no-new-privileges`, memory and pids limits, and size-rotated JSON logs
//!   ([`host_config`]). The services write nothing but their output, so nothing in a
//!   container is writable; the state directory's files are mounted read-only.
//! - Docker events report a container's death within milliseconds. When the engine goes
//!   away (a restart of the Docker daemon), the watcher reports it, waits for the engine with
//!   back-off, reconciles the stack's containers against the instances it started (any that
//!   went is reported as exited, so the supervisor restarts it) and subscribes again.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, HostConfigLogConfig, NetworkCreateRequest,
    NetworkingConfig, PortBinding, PortMap, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, EventsOptionsBuilder,
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, StatsOptionsBuilder, StopContainerOptionsBuilder,
};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use api::ready::Ready;
use api::status::{Kind, Role, Usage};

use super::{Container, Error, Event, Handle, Instance, Limits, Output, Result, Runtime};
use crate::services::Spec;
use crate::services::{self, Audience, File, Listen, Site, Transport};
use crate::stack::StateDir;

mod events;
mod images;
mod spec;

use events::*;
pub use images::build_images;
use spec::*;
pub(in crate::runtime) use spec::{Network, args, labels, log_options, mount_point, user};

/// Label marking a container or network as a stack's, with the stack's id as value.
pub const LABEL_STACK: &str = "ghost-stream.stack";
/// Label naming the service (`relay-2`) a container or Swarm service runs.
const LABEL_SERVICE: &str = "ghost-stream.service";
/// Label naming which start of the service a container is.
pub(super) const LABEL_GENERATION: &str = "ghost-stream.generation";
/// Label Docker puts on the containers of Swarm tasks: those belong to the Swarm runtime's
/// services, never to this runtime's reconciliation.
const LABEL_SWARM_TASK: &str = "com.docker.swarm.task.id";
/// Where the state directory's files appear inside containers.
pub(super) const MOUNT: &str = "/run/ghost";
/// How long a container may take to announce readiness.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// The first wait before asking a lost engine again; it doubles up to [`ENGINE_RETRY_MAX`].
const ENGINE_RETRY: Duration = Duration::from_millis(250);
/// The longest wait between two attempts to reach a lost engine: how late, at most, the
/// supervisor notices it is back.
const ENGINE_RETRY_MAX: Duration = Duration::from_secs(2);

/// Connects to the local engine (`DOCKER_HOST` or the default socket) and checks it answers.
pub async fn connect() -> Result<Docker> {
    const NO_ANSWER: &str = "the Docker Engine did not answer";
    let timeout = |source| Error::Timeout {
        doing: NO_ANSWER,
        source,
    };
    let docker = Docker::connect_with_local_defaults()
        .map_err(Error::engine("no Docker Engine configured"))?;
    let docker = tokio::time::timeout(Duration::from_secs(3), docker.negotiate_version())
        .await
        .map_err(timeout)?
        .map_err(Error::engine(NO_ANSWER))?;
    tokio::time::timeout(Duration::from_secs(3), docker.ping())
        .await
        .map_err(timeout)?
        .map_err(Error::engine(NO_ANSWER))?;
    Ok(docker)
}

/// The stack id: a short hash of the state directory, so stacks on one host never share
/// containers or networks.
pub fn stack_id(state: &StateDir) -> String {
    let path = std::fs::canonicalize(state.root()).unwrap_or_else(|_| state.root().to_path_buf());
    let hash = Sha256::digest(path.to_string_lossy().as_bytes());
    hash[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// The name of the container (or, under Swarm, of the service) that runs `service` of stack
/// `stack`: `ghost-<stack>-relay-2`.
pub fn object_name(stack: &str, service: &str) -> String {
    format!("ghost-{stack}-{service}")
}

/// Waits for the readiness line in `logs`, the output of `name` (a container, or a Swarm
/// task's container on any node); its last lines on failure.
pub(super) async fn wait_ready(
    name: &str,
    logs: impl futures_util::Stream<
        Item = Result<bollard::container::LogOutput, bollard::errors::Error>,
    >,
) -> Result<()> {
    let mut logs = std::pin::pin!(logs);
    let mut tail: Vec<String> = Vec::new();
    let ready = async {
        while let Some(chunk) = logs.next().await {
            let text = chunk.map(|c| c.to_string()).unwrap_or_default();
            for line in text.lines() {
                if Ready::parse(line).is_some() {
                    return true;
                }
                tail.push(line.to_string());
                if tail.len() > 20 {
                    tail.remove(0);
                }
            }
        }
        false
    };
    match tokio::time::timeout(READY_TIMEOUT, ready).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(Error::Exited {
            name: name.to_string(),
            status: None,
            output: Output::Tail(tail.join("\n")),
        }),
        Err(_) => Err(Error::NotReady {
            name: name.to_string(),
            timeout: READY_TIMEOUT,
            output: Output::Tail(tail.join("\n")),
        }),
    }
}

/// Runs services as containers.
pub struct DockerRuntime {
    pub(super) docker: Docker,
    pub(super) stack: String,
    pub(super) network: String,
    state: StateDir,
    bin_dir: PathBuf,
    pub(super) images: std::sync::Mutex<HashMap<Kind, String>>,
    gateway_ip: std::sync::Mutex<IpAddr>,
    watcher: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    pub(super) limits: Limits,
    /// The stack's network is an attachable Swarm overlay, which relays on other nodes join
    /// (the Swarm runtime), rather than a bridge of this host.
    overlay: bool,
    /// The instances started or adopted and not stopped since: what reconciliation after an
    /// engine outage expects to find running. Shared with the watcher.
    running: Running,
    events: std::sync::Mutex<Option<mpsc::Sender<Event>>>,
}

/// Service name to the generation and container id of its instance.
type Running = std::sync::Arc<std::sync::Mutex<HashMap<String, (u64, String)>>>;

impl DockerRuntime {
    /// A runtime on `docker` for the stack whose files are in `state`.
    pub fn new(docker: Docker, state: StateDir, bin_dir: PathBuf) -> DockerRuntime {
        let stack = stack_id(&state);
        DockerRuntime {
            docker,
            network: format!("ghost-{stack}"),
            stack,
            state,
            bin_dir,
            images: std::sync::Mutex::new(HashMap::new()),
            gateway_ip: std::sync::Mutex::new(Ipv4Addr::LOCALHOST.into()),
            watcher: std::sync::Mutex::new(None),
            limits: Limits::for_capacity(200),
            overlay: false,
            running: Running::default(),
            events: std::sync::Mutex::new(None),
        }
    }

    /// The same runtime on an attachable overlay network of the swarm this engine manages,
    /// so that Swarm services on any node reach its containers by name.
    pub(super) fn on_overlay(mut self) -> DockerRuntime {
        self.overlay = true;
        self
    }

    /// The same runtime, its containers bounded by `limits`.
    pub fn with_limits(mut self, limits: Limits) -> DockerRuntime {
        self.limits = limits;
        self
    }

    fn track(&self, instance: &Instance) {
        if let Some(container) = instance.container() {
            self.running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(
                    instance.name.clone(),
                    (instance.generation, container.id.clone()),
                );
        }
    }

    fn untrack(&self, instance: &Instance) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if running
            .get(&instance.name)
            .is_some_and(|(generation, _)| *generation == instance.generation)
        {
            running.remove(&instance.name);
        }
    }

    /// The state directory as mounts name it.
    pub(super) fn state_root(&self) -> PathBuf {
        std::fs::canonicalize(self.state.root()).unwrap_or_else(|_| self.state.root().to_path_buf())
    }

    pub(super) fn container_name(&self, service: &str) -> String {
        object_name(&self.stack, service)
    }

    /// The container of `instance`: by id when known, since a stop still under way must not
    /// reach the next generation's container, which has the same name.
    fn container_of(&self, instance: &Instance) -> String {
        instance
            .container()
            .map(|c| c.id.clone())
            .unwrap_or_else(|| self.container_name(&instance.name))
    }

    /// Host ports for `spec`, picking free ones for roles asked as 0 (the relay must know its
    /// published port before it starts, to advertise it).
    pub(super) fn host_ports(spec: &Spec) -> Result<BTreeMap<Role, u16>> {
        let mut out = BTreeMap::new();
        for listen in services::service(spec.kind).listens_for(spec) {
            let mut port = spec.port(listen.role);
            if port == 0 {
                port = free_port(listen.transport).map_err(Error::FreePort)?;
            }
            out.insert(listen.role, port);
        }
        Ok(out)
    }

    async fn remove(&self, name: &str) {
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        let _ = self.docker.remove_container(name, Some(options)).await;
    }

    /// Waits for the readiness line in the container's output; the last lines on failure.
    async fn wait_ready(&self, name: &str) -> Result<()> {
        let options = LogsOptionsBuilder::default()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .build();
        wait_ready(name, self.docker.logs(name, Some(options))).await
    }

    async fn instance(&self, name: &str, spec: &Spec, generation: u64) -> Result<Instance> {
        let info = self
            .docker
            .inspect_container(name, None)
            .await
            .map_err(Error::engine(format!("inspecting {name}")))?;
        let pid = info
            .state
            .as_ref()
            .and_then(|s| s.pid)
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p > 0);
        let mut addrs = BTreeMap::new();
        let ports = info
            .network_settings
            .as_ref()
            .and_then(|n| n.ports.clone())
            .unwrap_or_default();
        for listen in services::service(spec.kind).listens_for(spec) {
            let binding = ports
                .get(&port_keys(listen).next().unwrap_or_default())
                .and_then(|b| b.as_ref())
                .and_then(|b| b.first())
                .and_then(|b| b.host_port.as_deref())
                .and_then(|p| p.parse::<u16>().ok());
            if let Some(port) = binding {
                addrs.insert(
                    listen.role,
                    SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port),
                );
            }
        }
        Ok(Instance {
            name: spec.name.clone(),
            kind: spec.kind,
            addrs,
            generation,
            handle: Handle::Container(Container {
                id: info.id.unwrap_or_else(|| name.to_string()),
                pid,
            }),
        })
    }
}

#[async_trait::async_trait]
impl Runtime for DockerRuntime {
    fn backend(&self) -> super::Backend {
        super::Backend::Docker
    }

    async fn prepare(
        &self,
        events: mpsc::Sender<Event>,
        progress: &crate::runtime::Progress,
    ) -> Result<()> {
        let images = build_images(&self.docker, &self.bin_dir, progress).await?;
        *self.images.lock().unwrap_or_else(|e| e.into_inner()) = images;

        let network = match self.docker.inspect_network(&self.network, None).await {
            Ok(n) => n,
            Err(_) => {
                progress(&format!("creating network {}", self.network));
                self.docker
                    .create_network(NetworkCreateRequest {
                        name: self.network.clone(),
                        driver: Some(if self.overlay { "overlay" } else { "bridge" }.into()),
                        // Containers of this host join an overlay only when it says so.
                        attachable: self.overlay.then_some(true),
                        labels: Some(HashMap::from([(
                            LABEL_STACK.to_string(),
                            self.stack.clone(),
                        )])),
                        ..Default::default()
                    })
                    .await
                    .map_err(Error::engine(format!("creating network {}", self.network)))?;
                self.docker
                    .inspect_network(&self.network, None)
                    .await
                    .map_err(Error::engine(format!(
                        "inspecting network {}",
                        self.network
                    )))?
            }
        };
        let gateway = if self.overlay {
            // An overlay's gateway is no address of this host: containers on it reach the
            // host, and the host's connections to their published ports arrive, through
            // the bridge Swarm gives each node for that.
            swarm_bridge_gateway(&self.docker).await?
        } else {
            gateway_of(network).ok_or_else(|| {
                Error::Unexpected("the stack's network has no gateway address".into())
            })?
        };
        *self.gateway_ip.lock().unwrap_or_else(|e| e.into_inner()) = gateway;

        *self.events.lock().unwrap_or_else(|e| e.into_inner()) = Some(events.clone());
        let watcher = tokio::spawn(watch(
            self.docker.clone(),
            self.stack.clone(),
            self.running.clone(),
            events,
        ));
        if let Some(old) = self
            .watcher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(watcher)
        {
            old.abort();
        }
        Ok(())
    }

    fn internal_ip(&self) -> IpAddr {
        *self.gateway_ip.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn adopt(&self, spec: &Spec, _generation: u64) -> Result<Option<Instance>> {
        let name = self.container_name(&spec.name);
        let Ok(info) = self.docker.inspect_container(&name, None).await else {
            return Ok(None);
        };
        let labels = info
            .config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default();
        let running = info.state.as_ref().and_then(|s| s.running).unwrap_or(false);
        if !running || labels.get(LABEL_STACK) != Some(&self.stack) {
            return Ok(None);
        }
        let mounted = info
            .host_config
            .as_ref()
            .and_then(|h| h.binds.clone())
            .unwrap_or_default();
        if !mounts_as_now(&mounted, spec.kind, &self.state_root()) {
            // Started with other mounts (an earlier layout that mounted every secret):
            // replaced, not adopted, so no container keeps more than its own.
            tracing::info!(container = %name, ?mounted, "not adopted: its mounts are not this version's");
            return Ok(None);
        }
        let generation = labels
            .get(LABEL_GENERATION)
            .and_then(|g| g.parse().ok())
            .unwrap_or(1);
        let instance = self.instance(&name, spec, generation).await?;
        self.track(&instance);
        Ok(Some(instance))
    }

    async fn start(&self, spec: &Spec, generation: u64) -> Result<Instance> {
        let image = self
            .images
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&spec.kind)
            .cloned()
            .ok_or(Error::NotPrepared)?;
        let name = self.container_name(&spec.name);
        self.remove(&name).await;
        let host_ports = Self::host_ports(spec)?;
        let mut spec = spec.clone();
        spec.ports = host_ports.clone();
        let mut bindings = HashMap::new();
        let mut exposed = Vec::new();
        for listen in services::service(spec.kind).listens {
            let Some(port) = host_ports.get(&listen.role) else {
                continue;
            };
            let public = spec.public && listen.public;
            for key in port_keys(listen) {
                exposed.push(key.clone());
                bindings.insert(
                    key,
                    Some(vec![PortBinding {
                        host_ip: Some(if public { "0.0.0.0" } else { "127.0.0.1" }.to_string()),
                        host_port: Some(port.to_string()),
                    }]),
                );
            }
        }
        let binds = binds(spec.kind, &self.state_root());
        let network = Network {
            gateway: self.internal_ip(),
        };
        let body = ContainerCreateBody {
            image: Some(image),
            cmd: Some(args(&spec, &network)?),
            labels: Some(labels(&self.stack, &spec.name, generation)),
            user: Some(user()),
            exposed_ports: Some(exposed),
            host_config: Some(host_config(spec.kind, &self.limits, bindings, binds)),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    self.network.clone(),
                    EndpointSettings {
                        aliases: Some(vec![spec.name.clone()]),
                        ..Default::default()
                    },
                )])),
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(Error::engine(format!("creating container {name}")))?;
        // Tracked before it runs, so reconciliation never takes it for a stray.
        let instance = Instance {
            name: spec.name.clone(),
            kind: spec.kind,
            addrs: BTreeMap::new(),
            generation,
            handle: Handle::Container(Container {
                id: created.id,
                pid: None,
            }),
        };
        self.track(&instance);
        let started = async {
            self.docker
                .start_container(&name, None)
                .await
                .map_err(Error::engine(format!("starting container {name}")))?;
            self.wait_ready(&name).await?;
            self.instance(&name, &spec, generation).await
        };
        match started.await {
            Ok(instance) => Ok(instance),
            Err(e) => {
                self.untrack(&instance);
                self.remove(&name).await;
                Err(e)
            }
        }
    }

    async fn stop(&self, instance: &Instance) -> Result<()> {
        self.untrack(instance);
        let name = self.container_of(instance);
        let options = StopContainerOptionsBuilder::default().t(3).build();
        let _ = self.docker.stop_container(&name, Some(options)).await;
        self.remove(&name).await;
        Ok(())
    }

    async fn kill(&self, instance: &Instance) -> Result<()> {
        let name = self.container_of(instance);
        let options = KillContainerOptionsBuilder::default()
            .signal("SIGKILL")
            .build();
        let Err(error) = self.docker.kill_container(&name, Some(options)).await else {
            return Ok(());
        };
        // A container that is not running any more died without its `die` event reaching
        // the supervisor (the engine was away meanwhile): report that exit, or the service
        // would stay "running" for ever, its kills failing.
        let gone = match self.docker.inspect_container(&name, None).await {
            Ok(info) => !info.state.and_then(|s| s.running).unwrap_or(false),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => true,
            Err(_) => false,
        };
        if !gone {
            return Err(Error::engine(format!("killing {name}"))(error));
        }
        let events = self
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(events) = events {
            let _ = events
                .send(Event::Exited {
                    name: instance.name.clone(),
                    generation: instance.generation,
                    status: "container gone".into(),
                })
                .await;
        }
        Ok(())
    }

    async fn usage(&self, instance: &Instance) -> Option<Usage> {
        if let Some(u) = instance.pid().and_then(super::process::proc_usage) {
            return Some(u);
        }
        let name = self.container_of(instance);
        let options = StatsOptionsBuilder::default()
            .stream(false)
            .one_shot(true)
            .build();
        let stats = self.docker.stats(&name, Some(options)).next().await?.ok()?;
        Some(Usage {
            cpu_s: stats.cpu_stats?.cpu_usage?.total_usage? as f64 / 1e9,
            rss_bytes: stats.memory_stats?.usage?,
        })
    }

    async fn cleanup(&self) -> Result<()> {
        if let Some(w) = self
            .watcher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            w.abort();
        }
        let label = format!("{LABEL_STACK}={}", self.stack);
        let filters = HashMap::from([("label", vec![label.as_str()])]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        for c in self
            .docker
            .list_containers(Some(options))
            .await
            .unwrap_or_default()
        {
            if let Some(id) = c.id {
                self.remove(&id).await;
            }
        }
        // An overlay's endpoints are released a moment after their containers go, and a
        // removed overlay stays listed on this node a moment longer: done once the engine
        // no longer knows it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let error = match self.docker.remove_network(&self.network).await {
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => return Ok(()),
                Ok(()) => match self.docker.inspect_network(&self.network, None).await {
                    Err(bollard::errors::Error::DockerResponseServerError {
                        status_code: 404,
                        ..
                    }) => return Ok(()),
                    _ => Error::NetworkRemains {
                        network: self.network.clone(),
                    },
                },
                Err(e) => Error::engine(format!("removing network {}", self.network))(e),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(error);
            }
            tracing::debug!(error = %server::telemetry::Chain(&error), "network not removed yet");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: Kind, index: u32, ports: &[(Role, u16)]) -> Spec {
        let supervisor = "172.18.0.1:7071".parse().expect("addr");
        Spec::for_tests(kind, index, ports, true, supervisor)
    }

    #[test]
    fn command_lines_are_the_services_flags_inside_the_network() {
        let json = ["--log-format", "json"];
        let gw: IpAddr = "172.18.0.1".parse().expect("addr");
        let control = spec(Kind::Control, 0, &[(Role::Grpc, 7000), (Role::Ops, 9100)]);
        assert_eq!(
            args(&control, &Network { gateway: gw }).expect("a command line"),
            [
                &[
                    "--listen",
                    "0.0.0.0:7000",
                    "--ops-listen",
                    "0.0.0.0:9100",
                    "--ticket-key-file",
                    "/run/ghost/ticket.key",
                    "--supervisor",
                    "http://172.18.0.1:7071",
                    "--tls-dir",
                    "/run/ghost/tls",
                ][..],
                &json
            ]
            .concat()
        );
        let ingest = spec(
            Kind::Ingest,
            0,
            &[(Role::Quic, 0), (Role::Rtmp, 0), (Role::Ops, 0)],
        );
        assert_eq!(
            args(&ingest, &Network { gateway: gw }).expect("a command line"),
            [
                &[
                    "--listen",
                    "0.0.0.0:4433",
                    "--rtmp-listen",
                    "0.0.0.0:1935",
                    "--ops-listen",
                    "0.0.0.0:9101",
                    "--control",
                    "http://control:7000",
                    "--tls-dir",
                    "/run/ghost/tls",
                    "--advertise",
                    "ingest:4433",
                    "--keys-dir",
                    "/run/ghost/keys",
                    "--local-source",
                    "172.18.0.1",
                ][..],
                &json
            ]
            .concat()
        );
        let relay = spec(Kind::Relay, 3, &[(Role::Quic, 40123), (Role::Ops, 40124)]);
        assert_eq!(
            args(&relay, &Network { gateway: gw }).expect("a command line"),
            [
                &[
                    "--listen",
                    "0.0.0.0:4500",
                    "--ops-listen",
                    "0.0.0.0:9200",
                    "--control",
                    "http://control:7000",
                    "--ingest",
                    "ingest:4433",
                    "--id",
                    "relay-3",
                    "--capacity",
                    "50",
                    "--congestion",
                    "cubic",
                    "--tls-dir",
                    "/run/ghost/tls",
                    "--ticket-key-file",
                    "/run/ghost/ticket.key",
                    "--advertise",
                    "127.0.0.1:40123",
                    "--local-source",
                    "172.18.0.1",
                ][..],
                &json
            ]
            .concat()
        );
        let gateway = spec(Kind::Gateway, 0, &[(Role::Http, 8080)]);
        assert_eq!(
            args(&gateway, &Network { gateway: gw }).expect("a command line"),
            [
                &[
                    "--listen",
                    "0.0.0.0:8080",
                    "--control",
                    "http://control:7000",
                    "--tls-dir",
                    "/run/ghost/tls",
                    "--local-source",
                    "172.18.0.1",
                ][..],
                &json
            ]
            .concat()
        );
    }

    #[test]
    fn each_container_mounts_the_files_its_flags_name_read_only() {
        let root = std::path::Path::new("/state");
        assert_eq!(
            binds(Kind::Control, root),
            [
                "/state/ticket.key:/run/ghost/ticket.key:ro",
                "/state/tls/control:/run/ghost/tls:ro"
            ]
        );
        assert_eq!(
            binds(Kind::Ingest, root),
            [
                "/state/tls/ingest:/run/ghost/tls:ro",
                "/state/keys:/run/ghost/keys:ro"
            ]
        );
        assert_eq!(
            binds(Kind::Relay, root),
            [
                "/state/tls/relay:/run/ghost/tls:ro",
                "/state/ticket.key:/run/ghost/ticket.key:ro"
            ]
        );
        assert_eq!(
            binds(Kind::Gateway, root),
            [
                "/state/acme/challenges:/run/ghost/acme-challenges:ro",
                "/state/tls/gateway:/run/ghost/tls:ro"
            ]
        );
    }

    #[test]
    fn a_container_with_an_earlier_layouts_mounts_is_not_adopted() {
        let root = std::path::Path::new("/state");
        let earlier = [
            "/state/tls:/run/ghost/tls:ro".to_string(),
            "/state/ticket.key:/run/ghost/ticket.key:ro".to_string(),
        ];
        assert!(!mounts_as_now(&earlier, Kind::Relay, root));
        let mut now = binds(Kind::Relay, root);
        now.reverse();
        assert!(mounts_as_now(&now, Kind::Relay, root));
        assert!(!mounts_as_now(&now, Kind::Ingest, root));
    }

    #[test]
    fn a_stack_requiring_keys_tells_ingest() {
        let mut ingest = spec(Kind::Ingest, 0, &[(Role::Quic, 0), (Role::Ops, 0)]);
        ingest.require_keys = true;
        let site = Network {
            gateway: "172.18.0.1".parse().expect("addr"),
        };
        let args = args(&ingest, &site).expect("a command line");
        assert!(
            args.windows(3)
                .any(|w| w == ["--keys-dir", "/run/ghost/keys", "--require-keys"]),
            "{args:?}"
        );
    }

    #[test]
    fn containers_are_confined_and_bounded() {
        let limits = Limits {
            relay_memory: 100 << 20,
            memory: 200 << 20,
            pids: 64,
            log_max_size: 5 << 20,
            log_max_files: 4,
        };
        for kind in [Kind::Control, Kind::Ingest, Kind::Relay, Kind::Gateway] {
            let binds = binds(kind, std::path::Path::new("/state"));
            let config = host_config(kind, &limits, PortMap::new(), binds.clone());
            assert_eq!(config.readonly_rootfs, Some(true), "{kind:?}");
            assert_eq!(config.cap_drop, Some(vec!["ALL".to_string()]));
            assert_eq!(
                config.security_opt,
                Some(vec!["no-new-privileges".to_string()])
            );
            let memory = if kind == Kind::Relay {
                100 << 20
            } else {
                200 << 20
            };
            assert_eq!(config.memory, Some(memory), "{kind:?}");
            assert_eq!(config.memory_swap, Some(memory), "no swap on top");
            assert_eq!(config.pids_limit, Some(64));
            let log = config.log_config.expect("log config");
            assert_eq!(log.typ.as_deref(), Some("json-file"));
            let options = log.config.expect("log options");
            assert_eq!(options["max-size"], (5u64 << 20).to_string());
            assert_eq!(options["max-file"], "4");
            assert_eq!(
                config.restart_policy.and_then(|p| p.name),
                Some(RestartPolicyNameEnum::NO)
            );
            // Every mount is read-only: with the root file system, nothing is writable.
            assert_eq!(config.binds, Some(binds.clone()));
            assert!(binds.iter().all(|b| b.ends_with(":ro")), "{binds:?}");
        }
    }

    #[test]
    fn ports_are_keyed_as_docker_spells_them() {
        let relay = services::service(Kind::Relay);
        let keys: Vec<String> = relay.listens.iter().flat_map(port_keys).collect();
        assert_eq!(keys, ["4500/udp", "4500/tcp", "9200/tcp"]);
    }
}

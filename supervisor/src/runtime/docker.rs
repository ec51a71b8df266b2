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

use anyhow::{Context, Result};
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
use api::status::{Instance, Kind, Role, Usage};

use super::{Event, Limits, Runtime, Spec};
use crate::services::{self, Audience, File, Listen, Site, Transport};
use crate::stack::StateDir;

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

fn dockerfile(kind: Kind) -> &'static str {
    match kind {
        Kind::Control => include_str!("../../../images/control.Dockerfile"),
        Kind::Ingest => include_str!("../../../images/ingest.Dockerfile"),
        Kind::Relay => include_str!("../../../images/relay.Dockerfile"),
        Kind::Gateway => include_str!("../../../images/gateway.Dockerfile"),
    }
}

/// Docker's keys for a listener's port inside the container (`4433/udp`; a relay's port
/// both as `4500/udp` and `4500/tcp`).
fn port_keys(listen: &Listen) -> impl Iterator<Item = String> + '_ {
    listen
        .transport
        .protocols()
        .iter()
        .map(|protocol| format!("{}/{protocol}", listen.container_port))
}

/// A host port free for every protocol of `transport`.
fn free_port(transport: Transport) -> std::io::Result<u16> {
    let mut last = None;
    for _ in 0..32 {
        let port = match transport {
            Transport::Tcp => std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port(),
            Transport::Udp => std::net::UdpSocket::bind("127.0.0.1:0")?
                .local_addr()?
                .port(),
            Transport::UdpAndTcp => {
                let udp = std::net::UdpSocket::bind("127.0.0.1:0")?;
                let port = udp.local_addr()?.port();
                match std::net::TcpListener::bind(("127.0.0.1", port)) {
                    Ok(_) => port,
                    Err(e) => {
                        last = Some(e);
                        continue;
                    }
                }
            }
        };
        return Ok(port);
    }
    Err(last.unwrap_or_else(|| std::io::ErrorKind::AddrInUse.into()))
}

/// Connects to the local engine (`DOCKER_HOST` or the default socket) and checks it answers.
pub async fn connect() -> Result<Docker> {
    let docker = Docker::connect_with_local_defaults().context("no Docker Engine configured")?;
    let docker = tokio::time::timeout(Duration::from_secs(3), docker.negotiate_version())
        .await
        .context("the Docker Engine did not answer")?
        .context("the Docker Engine did not answer")?;
    tokio::time::timeout(Duration::from_secs(3), docker.ping())
        .await
        .context("the Docker Engine did not answer")?
        .context("the Docker Engine did not answer")?;
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

/// Builds (where missing) the four service images from the binaries in `bin_dir`, reporting
/// each step. Returns the image reference to run for each kind.
pub async fn build_images(
    docker: &Docker,
    bin_dir: &std::path::Path,
    progress: &crate::actor::Progress,
) -> Result<HashMap<Kind, String>> {
    let mut images = HashMap::new();
    for service in &services::SERVICES {
        let kind = service.kind;
        let repo = format!("ghost-stream/{}", kind.as_str());
        let binary_path = bin_dir.join(service.binary);
        let Ok(binary) = std::fs::read(&binary_path) else {
            // No binary here (a host that only loaded the images): run what is loaded.
            let latest = format!("{repo}:latest");
            docker.inspect_image(&latest).await.with_context(|| {
                format!(
                    "neither {} nor the image {latest} exists; build the services \
                     (cargo build --release --workspace) or load the images",
                    binary_path.display()
                )
            })?;
            images.insert(kind, latest);
            continue;
        };
        let mut hash = Sha256::new();
        hash.update(&binary);
        hash.update(dockerfile(kind).as_bytes());
        let tag: String = hash.finalize()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let reference = format!("{repo}:{tag}");
        let latest = bollard::query_parameters::TagImageOptionsBuilder::default()
            .repo(&repo)
            .tag("latest")
            .build();
        if docker.inspect_image(&reference).await.is_ok() {
            // `:latest` follows the binaries in use, so a shipped tarball of it is current.
            docker
                .tag_image(&reference, Some(latest))
                .await
                .with_context(|| format!("tagging {reference} as latest"))?;
            images.insert(kind, reference);
            continue;
        }
        progress(&format!(
            "building image {reference} ({} MB binary)",
            binary.len() / 1_000_000
        ));
        let context = tar_context(kind, &binary)?;
        let options = BuildImageOptionsBuilder::default()
            .dockerfile("Dockerfile")
            .t(&reference)
            .rm(true)
            .forcerm(true)
            .build();
        let mut build = docker.build_image(options, None, Some(bollard::body_full(context.into())));
        while let Some(step) = build.next().await {
            let info = step.with_context(|| format!("building {reference}"))?;
            if let Some(detail) = info.error_detail {
                anyhow::bail!(
                    "building {reference}: {}",
                    detail.message.unwrap_or_default()
                );
            }
        }
        docker
            .tag_image(&reference, Some(latest))
            .await
            .with_context(|| format!("tagging {reference} as latest"))?;
        images.insert(kind, reference);
    }
    Ok(images)
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
        Ok(false) => anyhow::bail!("{name} exited during start-up:\n{}", tail.join("\n")),
        Err(_) => anyhow::bail!(
            "{name} did not become ready within {READY_TIMEOUT:?}:\n{}",
            tail.join("\n")
        ),
    }
}

fn tar_context(kind: Kind, binary: &[u8]) -> Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8], mode: u32| -> Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, name, data)
            .with_context(|| format!("adding {name} to the build context"))
    };
    add("Dockerfile", dockerfile(kind).as_bytes(), 0o644)?;
    add(services::service(kind).binary, binary, 0o755)?;
    tar.into_inner().context("finishing the build context")
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
        if let Some(id) = &instance.container {
            self.running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(instance.name.clone(), (instance.generation, id.clone()));
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
            .container
            .clone()
            .unwrap_or_else(|| self.container_name(&instance.name))
    }

    /// Host ports for `spec`, picking free ones for roles asked as 0 (the relay must know its
    /// published port before it starts, to advertise it).
    pub(super) fn host_ports(spec: &Spec) -> Result<BTreeMap<Role, u16>> {
        let mut out = BTreeMap::new();
        for listen in services::service(spec.kind).listens_for(spec) {
            let mut port = spec.port(listen.role);
            if port == 0 {
                port = free_port(listen.transport)?;
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
            .with_context(|| format!("inspecting {name}"))?;
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
            pid,
            container: info.id,
            addrs,
            generation,
            node: None,
        })
    }
}

/// The host side of a `kind` container: its ports and mounts, restart policy `no` (the
/// supervisor restarts it), and what confines it: a read-only root file system (the
/// services write nothing; the mounts are read-only too), no capability at all (every port
/// inside a container is above 1024, and the service runs as the operator's uid),
/// `no-new-privileges`, memory without swap, a pids limit, and JSON logs rotated by size.
fn host_config(
    kind: Kind,
    limits: &Limits,
    port_bindings: PortMap,
    binds: Vec<String>,
) -> HostConfig {
    let memory = i64::try_from(limits.memory_of(kind)).unwrap_or(i64::MAX);
    HostConfig {
        port_bindings: Some(port_bindings),
        binds: Some(binds),
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::NO),
            maximum_retry_count: None,
        }),
        readonly_rootfs: Some(true),
        cap_drop: Some(vec!["ALL".into()]),
        security_opt: Some(vec!["no-new-privileges".into()]),
        memory: Some(memory),
        // The same as the memory: no swap on top of it.
        memory_swap: Some(memory),
        pids_limit: Some(i64::from(limits.pids)),
        log_config: Some(HostConfigLogConfig {
            typ: Some("json-file".into()),
            config: Some(log_options(limits)),
        }),
        ..Default::default()
    }
}

/// Watches the engine for the stack's containers' deaths, and for the engine itself: when
/// its event stream breaks, reports [`Event::Unreachable`], asks again with back-off until
/// it answers, reconciles ([`reconcile`]), reports [`Event::Reachable`] and subscribes
/// again. Ends when the supervisor stops listening.
async fn watch(docker: Docker, stack: String, running: Running, events: mpsc::Sender<Event>) {
    let label = format!("{LABEL_STACK}={stack}");
    let mut since: Option<String> = None;
    loop {
        let filters: HashMap<&str, Vec<&str>> = HashMap::from([
            ("type", vec!["container"]),
            ("event", vec!["die"]),
            ("label", vec![label.as_str()]),
        ]);
        let mut options = EventsOptionsBuilder::default().filters(&filters);
        if let Some(since) = &since {
            // Deaths from the moment reconciliation began are delivered again, so none
            // falls between the list it read and this subscription.
            options = options.since(since);
        }
        let mut stream = docker.events(Some(options.build()));
        let reason = loop {
            match stream.next().await {
                Some(Ok(event)) => {
                    let attrs = event.actor.and_then(|a| a.attributes).unwrap_or_default();
                    let (Some(name), Some(generation)) = (
                        attrs.get(LABEL_SERVICE).cloned(),
                        attrs.get(LABEL_GENERATION).and_then(|g| g.parse().ok()),
                    ) else {
                        continue;
                    };
                    let code = attrs.get("exitCode").cloned().unwrap_or_default();
                    let status = format!("container died (exit code {code})");
                    let exited = Event::Exited {
                        name,
                        generation,
                        status,
                    };
                    if events.send(exited).await.is_err() {
                        return;
                    }
                }
                Some(Err(e)) => break format!("{e}"),
                None => break "the engine closed its event stream".to_string(),
            }
        };
        tracing::warn!(%reason, "the Docker Engine is unreachable; waiting for it");
        let lost = Event::Unreachable {
            reason: format!("the Docker Engine does not answer ({reason})"),
        };
        if events.send(lost).await.is_err() {
            return;
        }
        let mut wait = ENGINE_RETRY;
        loop {
            tokio::time::sleep(wait).await;
            let started = std::time::SystemTime::now();
            match reconcile(&docker, &label, &running, &events).await {
                Ok(()) => {
                    let from = started
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_secs()
                        .saturating_sub(1);
                    since = Some(from.to_string());
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %format!("{e:#}"), "the Docker Engine is still unreachable");
                    wait = (wait * 2).min(ENGINE_RETRY_MAX);
                }
            }
        }
        tracing::info!("the Docker Engine answers again; reconciled");
        if events.send(Event::Reachable).await.is_err() {
            return;
        }
    }
}

/// Lists the stack's containers (by its label), reports as exited every instance the
/// runtime started that no longer runs, and removes every running container that is no
/// instance of the stack's.
async fn reconcile(
    docker: &Docker,
    label: &str,
    running: &Running,
    events: &mpsc::Sender<Event>,
) -> Result<()> {
    let filters = HashMap::from([("label", vec![label])]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let listed = tokio::time::timeout(
        Duration::from_secs(5),
        docker.list_containers(Some(options)),
    )
    .await
    .context("listing the stack's containers timed out")?
    .context("listing the stack's containers")?;
    let alive: std::collections::HashSet<String> = listed
        .into_iter()
        .filter(|c| c.state == Some(bollard::models::ContainerSummaryStateEnum::RUNNING))
        .filter(|c| {
            !c.labels
                .as_ref()
                .is_some_and(|l| l.contains_key(LABEL_SWARM_TASK))
        })
        .filter_map(|c| c.id)
        .collect();
    let (gone, unwanted) = {
        let running = running.lock().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<(String, u64)> = running
            .iter()
            .filter(|(_, (_, id))| !alive.contains(id))
            .map(|(name, (generation, _))| (name.clone(), *generation))
            .collect();
        let wanted: std::collections::HashSet<&String> =
            running.values().map(|(_, id)| id).collect();
        let unwanted: Vec<String> = alive
            .iter()
            .filter(|id| !wanted.contains(id))
            .cloned()
            .collect();
        (gone, unwanted)
    };
    // Running, but no instance of the stack: a stop the engine never got (a relay scaled
    // away while it was unreachable). Left running, it would go on taking viewers.
    for id in unwanted {
        tracing::info!(container = %id, "removing a container the stack no longer runs");
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        docker
            .remove_container(&id, Some(options))
            .await
            .with_context(|| format!("removing container {id}"))?;
    }
    for (name, generation) in gone {
        tracing::info!(service = %name, generation, "container gone while the engine was away");
        let exited = Event::Exited {
            name,
            generation,
            status: "container gone while the Docker Engine was unreachable".into(),
        };
        events
            .send(exited)
            .await
            .context("the supervisor stopped")?;
    }
    Ok(())
}

/// The name of the bridge through which containers on Swarm overlays reach their host.
const SWARM_BRIDGE: &str = "docker_gwbridge";

/// This host's address on [`SWARM_BRIDGE`], which the engine creates when it joins a swarm.
async fn swarm_bridge_gateway(docker: &Docker) -> Result<IpAddr> {
    let bridge = docker
        .inspect_network(SWARM_BRIDGE, None)
        .await
        .with_context(|| format!("inspecting {SWARM_BRIDGE}, Swarm's bridge of this node"))?;
    gateway_of(bridge).with_context(|| format!("{SWARM_BRIDGE} has no gateway address"))
}

/// The gateway address of a Docker network: the host's address on it.
fn gateway_of(network: bollard::models::NetworkInspect) -> Option<IpAddr> {
    network
        .ipam
        .and_then(|i| i.config)
        .and_then(|c| c.into_iter().find_map(|c| c.gateway))
        .and_then(|g| g.parse::<IpAddr>().ok())
}

/// `spec`'s command line inside its container at `site`; logs as JSON, which `docker logs`
/// (and `docker service logs`) keep.
pub(super) fn args(spec: &Spec, site: &dyn Site) -> Vec<String> {
    let mut args = services::args(spec, site);
    args.extend(["--log-format".to_string(), "json".to_string()]);
    args
}

/// The labels of instance `generation` of service `name` of stack `stack`: what the event
/// watcher, reconciliation and `ghost down` find it by.
pub(super) fn labels(stack: &str, name: &str, generation: u64) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_STACK.to_string(), stack.to_string()),
        (LABEL_SERVICE.to_string(), name.to_string()),
        (LABEL_GENERATION.to_string(), generation.to_string()),
    ])
}

/// The user services run as: the operator's uid and gid, so they read the state directory's
/// files and own nothing else.
pub(super) fn user() -> String {
    format!(
        "{}:{}",
        nix::unistd::Uid::current(),
        nix::unistd::Gid::current()
    )
}

/// Options of the json-file log driver: rotated at `limits`' size, so many files kept.
pub(super) fn log_options(limits: &Limits) -> HashMap<String, String> {
    HashMap::from([
        ("max-size".to_string(), limits.log_max_size.to_string()),
        ("max-file".to_string(), limits.log_max_files.to_string()),
    ])
}

/// Where `file` of the state directory appears inside a container.
pub(super) fn mount_point(file: File) -> String {
    match file {
        File::Tls(_) => format!("{MOUNT}/tls"),
        File::TicketKey => format!("{MOUNT}/ticket.key"),
        File::KeysDir => format!("{MOUNT}/keys"),
        File::AcmeChallenges => format!("{MOUNT}/acme-challenges"),
    }
}

/// The bind mounts of a `kind` container: each file of the state directory (at
/// `state_root`) that its flags name, read-only, and nothing else: a service sees its own
/// TLS directory and no other's, none sees the CA key, relays never see the stream keys.
fn binds(kind: Kind, state_root: &std::path::Path) -> Vec<String> {
    let state = StateDir::new(state_root);
    services::service(kind)
        .files()
        .map(|file| {
            format!(
                "{}:{}:ro",
                file.path_in(&state).display(),
                mount_point(file)
            )
        })
        .collect()
}

/// Whether a running `kind` container with bind mounts `mounted` mounts exactly what this
/// version would give it.
fn mounts_as_now(mounted: &[String], kind: Kind, state_root: &std::path::Path) -> bool {
    let mut mounted = mounted.to_vec();
    let mut now = binds(kind, state_root);
    mounted.sort();
    now.sort();
    mounted == now
}

/// The stack's container network: services reach each other by service name at the ports
/// inside their containers, and read the state directory where it is mounted. Connections
/// the host makes to a published port on its own loopback arrive through Docker's port
/// proxy from the network's `gateway`.
pub(super) struct Network {
    pub(super) gateway: IpAddr,
}

impl Site for Network {
    fn bind(&self, _spec: &Spec, listen: &Listen) -> String {
        format!("{}:{}", Ipv4Addr::UNSPECIFIED, listen.container_port)
    }

    fn peer(&self, _spec: &Spec, kind: Kind, listen: &Listen) -> String {
        format!("{}:{}", services::name(kind, 0), listen.container_port)
    }

    fn file(&self, file: File) -> String {
        mount_point(file)
    }

    fn advertise(&self, spec: &Spec, listen: &Listen, audience: Audience) -> Option<String> {
        Some(match audience {
            Audience::Services => format!("{}:{}", spec.name, listen.container_port),
            // The host port: picked before the start, so known here even when asked as 0.
            Audience::Viewers => format!(
                "{}:{}",
                spec.advertise_host.as_deref().unwrap_or("127.0.0.1"),
                spec.port(listen.role)
            ),
        })
    }

    fn local_source(&self) -> Option<IpAddr> {
        Some(self.gateway)
    }
}

#[async_trait::async_trait]
impl Runtime for DockerRuntime {
    fn name(&self) -> &'static str {
        "docker"
    }

    async fn prepare(
        &self,
        events: mpsc::Sender<Event>,
        progress: &crate::actor::Progress,
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
                    .with_context(|| format!("creating network {}", self.network))?;
                self.docker
                    .inspect_network(&self.network, None)
                    .await
                    .with_context(|| format!("inspecting network {}", self.network))?
            }
        };
        let gateway = if self.overlay {
            // An overlay's gateway is no address of this host: containers on it reach the
            // host, and the host's connections to their published ports arrive, through
            // the bridge Swarm gives each node for that.
            swarm_bridge_gateway(&self.docker).await?
        } else {
            gateway_of(network).context("the stack's network has no gateway address")?
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
            .context("runtime not prepared")?;
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
            cmd: Some(args(&spec, &network)),
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
            .with_context(|| format!("creating container {name}"))?;
        // Tracked before it runs, so reconciliation never takes it for a stray.
        let instance = Instance {
            name: spec.name.clone(),
            pid: None,
            container: Some(created.id),
            addrs: BTreeMap::new(),
            generation,
            node: None,
        };
        self.track(&instance);
        let started = async {
            self.docker
                .start_container(&name, None)
                .await
                .with_context(|| format!("starting container {name}"))?;
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
            return Err(anyhow::Error::new(error).context(format!("killing {name}")));
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
        if let Some(u) = instance.pid.and_then(super::process::proc_usage) {
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
                    _ => anyhow::anyhow!("network {} still listed after its removal", self.network),
                },
                Err(e) => {
                    anyhow::Error::new(e).context(format!("removing network {}", self.network))
                }
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(error);
            }
            tracing::debug!(error = %format!("{error:#}"), "network not removed yet");
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
            args(&control, &Network { gateway: gw }),
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
            args(&ingest, &Network { gateway: gw }),
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
            args(&relay, &Network { gateway: gw }),
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
            args(&gateway, &Network { gateway: gw }),
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
        let args = args(&ingest, &site);
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

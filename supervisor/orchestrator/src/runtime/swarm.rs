//! The Swarm runtime: relays on every node of a Docker Swarm, the rest of the stack on the
//! manager this supervisor runs on (`supervisor/docs/scaling.md` has the why).
//!
//! - Control, ingest and the viewer gateway are containers of this manager, made by the
//!   Docker runtime exactly as there ([`DockerRuntime`]), on an attachable overlay network
//!   of the stack's own instead of a bridge. So their private ports stay on loopback: a Swarm
//!   service's published ports open on every address of its node, and control's gRPC or an
//!   ops listener must never face the internet.
//! - Each relay is a Swarm service of its own with one replica (`ghost-<stack>-relay-N`), so
//!   it keeps its name and its port. Its ports are published in host mode on the node it
//!   runs on; viewers reach that node directly, never through Swarm's routing mesh.
//! - The supervisor places each relay itself: on the ready, active node with the fewest relays
//!   per CPU, pinned there by a placement constraint. Swarm never moves a relay; its restart
//!   policy is `none`, as the supervisor restarts what dies.
//! - A relay's files (its TLS directory and the ticket key) travel as Swarm secrets, named
//!   after their content, so a node needs nothing but the images.
//! - Deaths: a relay on this node is reported by the Docker runtime's event watcher within
//!   milliseconds; every [`POLL`] the tasks and nodes of the swarm are read, and a relay whose
//!   task ended, whose service went, or whose node is down or disconnected is reported as
//!   exited, which makes the supervisor forget it at control and start a replacement.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bollard::Docker;
use bollard::models::{
    EndpointPortConfig, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum,
    EndpointSpec, EndpointSpecModeEnum, HealthConfig, Limit, LocalNodeState,
    NetworkAttachmentConfig, Node, NodeSpecAvailabilityEnum, NodeSpecRoleEnum, NodeState,
    SecretSpec, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated, Task, TaskSpec,
    TaskSpecContainerSpec, TaskSpecContainerSpecFile, TaskSpecContainerSpecSecrets,
    TaskSpecLogDriver, TaskSpecPlacement, TaskSpecResources, TaskSpecRestartPolicy,
    TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNodesOptions, ListSecretsOptionsBuilder,
    ListServicesOptionsBuilder, ListTasksOptionsBuilder, LogsOptionsBuilder,
};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use api::status::{Kind, Usage};

use super::docker::{self, DockerRuntime, LABEL_GENERATION, LABEL_STACK};
use super::{Container, Event, Handle, Instance, Replica, Result, Runtime};
use crate::services::Spec;
use crate::services::{self, Audience, File, Listen, Site};
use crate::stack::StateDir;

mod nodes;
mod secrets;

use crate::policy::placement::Machine;
use nodes::*;
use secrets::*;

/// How often the swarm's tasks and nodes are read.
const POLL: Duration = Duration::from_millis(250);
/// Node label naming the address viewers reach that node's relays at (set by the operator,
/// or by the Ansible deployment, to the node's public address).
pub const LABEL_PUBLIC_ADDRESS: &str = "ghost.public-address";
/// How long a relay's task may take from its service's creation to running: scheduling,
/// secrets, network attachment and the container's start.
const TASK_TIMEOUT: Duration = Duration::from_secs(20);
/// Label Docker puts on a Swarm task's container: the id of its service.
const LABEL_SWARM_SERVICE: &str = "com.docker.swarm.service.id";
/// How long a relay gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// What only the Swarm runtime meets: a swarm this engine does not manage, and relays
/// Swarm would not place or run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// This engine is no manager of an active swarm.
    #[error(
        "this Docker Engine is not a Swarm manager (swarm state: {state}); run `docker swarm init` \
         here (or join the swarm as a manager) first, or use --runtime docker"
    )]
    NotManager {
        /// The engine's swarm state (`inactive`, `pending`, ...).
        state: String,
    },
    /// No node can take a relay.
    #[error(transparent)]
    NoMachine(#[from] crate::policy::placement::NoMachine),
    /// A relay's task ended before it ran.
    #[error("{name} did not start: {reason}")]
    TaskEnded {
        /// The relay.
        name: String,
        /// Swarm's reason.
        reason: String,
    },
    /// A relay's task did not run in time.
    #[error("{name} did not run within {timeout:?}: {last}")]
    TaskTimeout {
        /// The relay.
        name: String,
        /// How long it was given.
        timeout: Duration,
        /// The last reason Swarm gave for waiting.
        last: String,
    },
}

/// Runs relays as Swarm services and the rest of the stack as containers of this manager.
pub struct SwarmRuntime {
    local: DockerRuntime,
    shared: Arc<Shared>,
    poller: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// What the runtime's calls and its poller share.
#[derive(Default)]
struct Shared {
    /// Relays being started, started or adopted, and not stopped since.
    relays: Mutex<HashMap<String, Placed>>,
    /// The swarm's nodes as last read.
    nodes: Mutex<Vec<NodeView>>,
    /// This manager's node id.
    self_id: Mutex<String>,
    /// The node each relay was last lost on (it died there, or never ran), which its
    /// replacement avoids.
    lost_on: Mutex<HashMap<String, String>>,
}

impl Shared {
    fn relays(&self) -> std::sync::MutexGuard<'_, HashMap<String, Placed>> {
        self.relays.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn self_id(&self) -> String {
        self.self_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Forgets `name`'s relay if it is still generation `generation`.
    /// Notes that relay `name` was lost on `node`.
    fn lost(&self, name: &str, node: String) {
        self.lost_on
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), node);
    }

    fn forget(&self, name: &str, generation: u64) -> Option<Placed> {
        let mut relays = self.relays();
        if relays.get(name).is_some_and(|p| p.generation == generation) {
            relays.remove(name)
        } else {
            None
        }
    }
}

/// A relay's site: inside the stack's overlay like the Docker runtime's containers, but
/// advertised to viewers at its node's address.
struct RelaySite {
    network: docker::Network,
    viewers_host: String,
}

impl Site for RelaySite {
    fn bind(&self, spec: &Spec, listen: &Listen) -> String {
        self.network.bind(spec, listen)
    }

    fn peer(&self, spec: &Spec, kind: Kind, listen: &Listen) -> String {
        self.network.peer(spec, kind, listen)
    }

    fn file(&self, file: File) -> String {
        self.network.file(file)
    }

    fn advertise(&self, spec: &Spec, listen: &Listen, audience: Audience) -> Option<String> {
        match audience {
            Audience::Services => self.network.advertise(spec, listen, audience),
            Audience::Viewers => Some(format!("{}:{}", self.viewers_host, spec.port(listen.role))),
        }
    }

    fn local_source(&self) -> Option<IpAddr> {
        self.network.local_source()
    }
}

/// Checks that `docker` is a manager of an active swarm; returns this node's id.
pub async fn manager_node(docker: &Docker) -> Result<String> {
    let info = docker
        .info()
        .await
        .map_err(super::Error::engine("asking the Docker Engine"))?;
    let swarm = info.swarm.unwrap_or_default();
    if swarm.local_node_state != Some(LocalNodeState::ACTIVE)
        || swarm.control_available != Some(true)
    {
        return Err(Error::NotManager {
            state: swarm
                .local_node_state
                .map(|s| s.to_string())
                .unwrap_or_else(|| "unknown".into()),
        }
        .into());
    }
    swarm
        .node_id
        .filter(|id| !id.is_empty())
        .ok_or_else(|| super::Error::Unexpected("the swarm did not name this node".into()))
}

/// The Swarm services carrying the stack label `label` (`ghost-stream.stack=<id>`).
async fn stack_services(
    docker: &Docker,
    label: &str,
) -> Result<Vec<bollard::models::Service>, bollard::errors::Error> {
    let filters = HashMap::from([("label", vec![label])]);
    let options = ListServicesOptionsBuilder::default()
        .filters(&filters)
        .build();
    docker.list_services(Some(options)).await
}

/// The Swarm secrets carrying the stack label `label`.
async fn stack_secrets(
    docker: &Docker,
    label: &str,
) -> Result<Vec<bollard::models::Secret>, bollard::errors::Error> {
    let filters = HashMap::from([("label", vec![label])]);
    let options = ListSecretsOptionsBuilder::default()
        .filters(&filters)
        .build();
    docker.list_secrets(Some(options)).await
}

/// The tasks of the Swarm services `ids`.
async fn tasks_of(docker: &Docker, ids: Vec<&str>) -> Result<Vec<Task>, bollard::errors::Error> {
    let filters = HashMap::from([("service", ids)]);
    let options = ListTasksOptionsBuilder::default().filters(&filters).build();
    docker.list_tasks(Some(options)).await
}

impl SwarmRuntime {
    /// A runtime on the manager `docker` for the stack whose files are in `state`.
    pub fn new(docker: Docker, state: StateDir, bin_dir: PathBuf) -> SwarmRuntime {
        SwarmRuntime {
            local: DockerRuntime::new(docker, state, bin_dir).on_overlay(),
            shared: Arc::new(Shared::default()),
            poller: Mutex::new(None),
        }
    }

    /// The same runtime, its containers and tasks bounded by `limits`.
    pub fn with_limits(mut self, limits: super::Limits) -> SwarmRuntime {
        self.local = self.local.with_limits(limits);
        self
    }

    fn docker(&self) -> &Docker {
        &self.local.docker
    }

    fn label(&self) -> String {
        format!("{LABEL_STACK}={}", self.local.stack)
    }

    async fn read_nodes(&self) -> Result<Vec<NodeView>> {
        let nodes = self
            .docker()
            .list_nodes(None::<ListNodesOptions>)
            .await
            .map_err(super::Error::engine("listing the swarm's nodes"))?;
        let views: Vec<NodeView> = nodes.iter().filter_map(NodeView::from_node).collect();
        *self.shared.nodes.lock().unwrap_or_else(|e| e.into_inner()) = views.clone();
        Ok(views)
    }

    /// Creates the secrets for `files` that do not exist yet; returns their references.
    async fn secrets(&self, files: &[SecretFile]) -> Result<Vec<TaskSpecContainerSpecSecrets>> {
        let existing: HashMap<String, String> = stack_secrets(self.docker(), &self.label())
            .await
            .map_err(super::Error::engine("listing the stack's secrets"))?
            .into_iter()
            .filter_map(|s| Some((s.spec?.name?, s.id?)))
            .collect();
        let uid = nix::unistd::Uid::current().to_string();
        let gid = nix::unistd::Gid::current().to_string();
        let mut out = Vec::new();
        for file in files {
            let name = file.name(&self.local.stack);
            let id = match existing.get(&name) {
                Some(id) => id.clone(),
                None => {
                    self.docker()
                        .create_secret(SecretSpec {
                            name: Some(name.clone()),
                            labels: Some(HashMap::from([(
                                LABEL_STACK.to_string(),
                                self.local.stack.clone(),
                            )])),
                            data: Some(
                                base64::engine::general_purpose::STANDARD.encode(&file.data),
                            ),
                            ..Default::default()
                        })
                        .await
                        .map_err(super::Error::engine(format!("creating secret {name}")))?
                        .id
                }
            };
            out.push(TaskSpecContainerSpecSecrets {
                file: Some(TaskSpecContainerSpecFile {
                    name: Some(file.target.clone()),
                    uid: Some(uid.clone()),
                    gid: Some(gid.clone()),
                    mode: Some(0o400),
                }),
                secret_id: Some(id),
                secret_name: Some(name),
            });
        }
        Ok(out)
    }

    /// Removes the stack's secrets no service uses any more (earlier certificates); those in
    /// use refuse, which is what keeps them.
    async fn prune_secrets(&self, keep: &[TaskSpecContainerSpecSecrets]) {
        let Ok(secrets) = stack_secrets(self.docker(), &self.label()).await else {
            return;
        };
        for id in secrets.into_iter().filter_map(|s| s.id) {
            if keep
                .iter()
                .any(|k| k.secret_id.as_deref() == Some(id.as_str()))
            {
                continue;
            }
            let _ = self.docker().delete_secret(&id).await;
        }
    }

    /// The service spec of relay `spec` (its host ports decided), generation `generation`,
    /// pinned to `node`.
    fn relay_service(
        &self,
        spec: &Spec,
        generation: u64,
        node: &NodeView,
        image: String,
        secrets: Vec<TaskSpecContainerSpecSecrets>,
    ) -> Result<ServiceSpec> {
        let self_id = self.shared.self_id();
        let viewers_host = if node.machine.id == self_id {
            spec.advertise_host
                .clone()
                .unwrap_or_else(|| Ipv4Addr::LOCALHOST.to_string())
        } else {
            node.public.clone().unwrap_or_else(|| node.addr.clone())
        };
        let site = RelaySite {
            network: docker::Network {
                gateway: self.local.internal_ip(),
            },
            viewers_host,
        };
        let labels = docker::labels(&self.local.stack, &spec.name, generation);
        let ports = services::service(spec.kind)
            .listens_for(spec)
            .flat_map(|listen| {
                listen
                    .transport
                    .protocols()
                    .iter()
                    .map(|protocol| EndpointPortConfig {
                        protocol: Some(if *protocol == "udp" {
                            EndpointPortConfigProtocolEnum::UDP
                        } else {
                            EndpointPortConfigProtocolEnum::TCP
                        }),
                        target_port: Some(i64::from(listen.container_port)),
                        published_port: Some(i64::from(spec.port(listen.role))),
                        publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
                        ..Default::default()
                    })
            })
            .collect();
        let limits = &self.local.limits;
        Ok(ServiceSpec {
            name: Some(self.local.container_name(&spec.name)),
            labels: Some(labels.clone()),
            task_template: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    image: Some(image),
                    labels: Some(labels),
                    args: Some(docker::args(spec, &site)?),
                    user: Some(docker::user()),
                    read_only: Some(true),
                    capability_drop: Some(vec!["ALL".into()]),
                    secrets: Some(secrets),
                    // Swarm holds a task in `starting` until the image's health check first
                    // passes (5 s), and would kill it on its own when it fails. The
                    // supervisor probes every relay each second and decides itself.
                    health_check: Some(HealthConfig {
                        test: Some(vec!["NONE".into()]),
                        ..Default::default()
                    }),
                    stop_grace_period: Some(
                        i64::try_from(STOP_GRACE.as_nanos()).unwrap_or(i64::MAX),
                    ),
                    ..Default::default()
                }),
                resources: Some(TaskSpecResources {
                    limits: Some(Limit {
                        memory_bytes: Some(
                            i64::try_from(limits.memory_of(spec.kind)).unwrap_or(i64::MAX),
                        ),
                        pids: Some(i64::from(limits.pids)),
                        nano_cpus: None,
                    }),
                    ..Default::default()
                }),
                restart_policy: Some(TaskSpecRestartPolicy {
                    condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
                    ..Default::default()
                }),
                placement: Some(TaskSpecPlacement {
                    constraints: Some(vec![format!("node.id=={}", node.machine.id)]),
                    ..Default::default()
                }),
                networks: Some(vec![NetworkAttachmentConfig {
                    target: Some(self.local.network.clone()),
                    aliases: Some(vec![spec.name.clone()]),
                    driver_opts: None,
                }]),
                log_driver: Some(TaskSpecLogDriver {
                    name: Some("json-file".into()),
                    options: Some(docker::log_options(limits)),
                }),
                ..Default::default()
            }),
            mode: Some(ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
                ..Default::default()
            }),
            endpoint_spec: Some(EndpointSpec {
                mode: Some(EndpointSpecModeEnum::DNSRR),
                ports: Some(ports),
            }),
            ..Default::default()
        })
    }

    /// The tasks of service `service`.
    async fn tasks_of(&self, service: &str) -> Result<Vec<Task>> {
        tasks_of(self.docker(), vec![service])
            .await
            .map_err(super::Error::engine(format!(
                "listing the tasks of {service}"
            )))
    }

    /// Waits until the task of service `service` (named `name`) runs; returns it. Fails
    /// with Swarm's reason when it ends first, or with the last reason it gave for waiting.
    async fn wait_running(&self, name: &str, service: &str) -> Result<Task> {
        let deadline = tokio::time::Instant::now() + TASK_TIMEOUT;
        let mut last = String::from("no task yet");
        loop {
            for task in self.tasks_of(service).await? {
                let Some(state) = task_state(&task) else {
                    continue;
                };
                if state == TaskState::RUNNING {
                    return Ok(task);
                }
                if terminal(state) {
                    return Err(Error::TaskEnded {
                        name: name.to_string(),
                        reason: task_end(&task, state),
                    }
                    .into());
                }
                last = task_end(&task, state);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::TaskTimeout {
                    name: name.to_string(),
                    timeout: TASK_TIMEOUT,
                    last,
                }
                .into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The instance of relay `spec`, generation `generation`: Swarm service `service`, whose
    /// running task is `task` on `node`.
    fn relay_instance(
        &self,
        spec: &Spec,
        generation: u64,
        service: &str,
        task: &Task,
        node: &NodeView,
    ) -> Instance {
        let local = node.machine.id == self.shared.self_id();
        let host: IpAddr = if local {
            Ipv4Addr::LOCALHOST.into()
        } else {
            node.addr
                .parse()
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
        };
        let container = task
            .status
            .as_ref()
            .and_then(|s| s.container_status.as_ref());
        let addrs = services::service(spec.kind)
            .listens_for(spec)
            .map(|listen| (listen.role, SocketAddr::new(host, spec.port(listen.role))))
            .collect();
        Instance {
            name: spec.name.clone(),
            kind: spec.kind,
            addrs,
            generation,
            handle: Handle::Replica(Replica {
                service: service.to_string(),
                node: if node.machine.hostname.is_empty() {
                    node.machine.id.clone()
                } else {
                    node.machine.hostname.clone()
                },
                // Only this engine's containers are reached by signals and usage.
                container: container.filter(|_| local).and_then(|c| {
                    Some(Container {
                        id: c.container_id.clone()?,
                        pid: c.pid.and_then(|p| u32::try_from(p).ok()).filter(|p| *p > 0),
                    })
                }),
            }),
        }
    }

    async fn start_relay(&self, spec: &Spec, generation: u64) -> Result<Instance> {
        let image = self
            .local
            .images
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&Kind::Relay)
            .cloned()
            .ok_or(super::Error::NotPrepared)?;
        let service_name = self.local.container_name(&spec.name);
        // An earlier generation's service goes first (a crash leaves it, with its ended
        // task; a drain leaves it with a task Swarm queued): were this start to fail, Swarm
        // must have nothing of it to run later on its own.
        let _ = self.docker().delete_service(&service_name).await;
        self.shared
            .relays()
            .retain(|name, p| *name != spec.name || p.generation >= generation);
        let nodes = self.read_nodes().await?;
        // Chosen and recorded under one lock, so starts at once spread over the nodes.
        let node = {
            let mut relays = self.shared.relays();
            let mut load: HashMap<String, u32> = HashMap::new();
            for (name, placed) in relays.iter() {
                if *name != spec.name {
                    *load.entry(placed.node.clone()).or_default() += 1;
                }
            }
            let machines: Vec<Machine> = nodes.iter().map(|n| n.machine.clone()).collect();
            let avoid = self
                .shared
                .lost_on
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&spec.name);
            let chosen = crate::policy::placement::choose(&machines, &load, avoid.as_deref())
                .map_err(Error::from)?;
            let node = nodes
                .iter()
                .find(|n| n.machine.id == chosen.id)
                .cloned()
                .ok_or_else(|| super::Error::Unexpected("the chosen node is listed".into()))?;
            relays.insert(
                spec.name.clone(),
                Placed {
                    generation,
                    service: String::new(),
                    node: node.machine.id.clone(),
                    running: false,
                },
            );
            node
        };
        let started = async {
            let mut spec = spec.clone();
            spec.ports = DockerRuntime::host_ports(&spec)?;
            let files = secret_files(spec.kind, &self.local.state_root())?;
            let secrets = self.secrets(&files).await?;
            let service_spec =
                self.relay_service(&spec, generation, &node, image, secrets.clone())?;
            let created = self
                .docker()
                .create_service(service_spec, None)
                .await
                .map_err(super::Error::engine(format!(
                    "creating Swarm service {service_name}"
                )))?;
            let id = created.id.ok_or_else(|| {
                super::Error::Unexpected("the engine gave the new service no id".into())
            })?;
            if let Some(placed) = self.shared.relays().get_mut(&spec.name)
                && placed.generation == generation
            {
                placed.service = id.clone();
            }
            let task = self.wait_running(&spec.name, &id).await?;
            let task_id = task
                .id
                .clone()
                .ok_or_else(|| super::Error::Unexpected("a task without an id".into()))?;
            let options = LogsOptionsBuilder::default()
                .follow(true)
                .stdout(true)
                .stderr(true)
                .build();
            docker::wait_ready(&spec.name, self.docker().task_logs(&task_id, Some(options)))
                .await?;
            self.prune_secrets(&secrets).await;
            Ok::<_, super::Error>((
                self.relay_instance(&spec, generation, &id, &task, &node),
                id,
            ))
        };
        match started.await {
            Ok((instance, id)) => {
                if let Some(placed) = self.shared.relays().get_mut(&spec.name)
                    && placed.generation == generation
                {
                    placed.service = id;
                    placed.running = true;
                }
                Ok(instance)
            }
            Err(e) => {
                if let Some(placed) = self.shared.forget(&spec.name, generation) {
                    self.shared.lost(&spec.name, placed.node);
                }
                let _ = self
                    .docker()
                    .delete_service(&self.local.container_name(&spec.name))
                    .await;
                Err(e)
            }
        }
    }

    /// Removes relay `instance`'s service and waits (a grace period at most) until its
    /// task has ended, so its port is free for the next one.
    async fn remove_relay(&self, instance: &Instance) {
        let placed = self.shared.forget(&instance.name, instance.generation);
        let Some(service) = placed.map(|p| p.service).filter(|s| !s.is_empty()) else {
            return;
        };
        let _ = self.docker().delete_service(&service).await;
        self.wait_removed(&[service]).await;
    }

    /// Waits, a grace period and a little more at most, until the services `ids` (removed)
    /// have no task left that runs and, on this node, no container left: Swarm removes
    /// them shortly after the service, and until then the overlay network cannot go.
    async fn wait_removed(&self, ids: &[String]) {
        let deadline = tokio::time::Instant::now() + STOP_GRACE + Duration::from_secs(5);
        for id in ids {
            let label = format!("{LABEL_SWARM_SERVICE}={id}");
            let filters = HashMap::from([("label", vec![label.as_str()])]);
            while tokio::time::Instant::now() < deadline {
                let running = match self.tasks_of(id).await {
                    Ok(tasks) => tasks.iter().any(|t| !task_state(t).is_none_or(terminal)),
                    Err(_) => false,
                };
                let options = ListContainersOptionsBuilder::default()
                    .all(true)
                    .filters(&filters)
                    .build();
                let left = self
                    .docker()
                    .list_containers(Some(options))
                    .await
                    .map(|c| !c.is_empty())
                    .unwrap_or(false);
                if !running && !left {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads the swarm every [`POLL`] and reports relays that are gone (see [`gone`]). Ends
/// when the supervisor stops listening.
async fn poll(docker: Docker, stack: String, shared: Arc<Shared>, events: mpsc::Sender<Event>) {
    let label = format!("{LABEL_STACK}={stack}");
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        if events.is_closed() {
            return;
        }
        let watched: Vec<(String, Placed)> = shared
            .relays()
            .iter()
            .filter(|(_, p)| p.running)
            .map(|(n, p)| (n.clone(), p.clone()))
            .collect();
        let read = async {
            let nodes = docker.list_nodes(None::<ListNodesOptions>).await?;
            let services = stack_services(&docker, &label).await?;
            // Tasks of the services that still exist: the engine refuses a filter naming a
            // removed one (404), and a removed service is a gone relay in its own right.
            let ids: Vec<&str> = watched
                .iter()
                .map(|(_, p)| p.service.as_str())
                .filter(|id| services.iter().any(|s| s.id.as_deref() == Some(*id)))
                .collect();
            let tasks = if ids.is_empty() {
                Vec::new()
            } else {
                tasks_of(&docker, ids).await?
            };
            Ok::<_, bollard::errors::Error>((nodes, services, tasks))
        };
        // An engine that does not answer: the Docker runtime's watcher reports that. Any
        // other failure is logged once until reads succeed again.
        let (nodes, services, tasks) = match read.await {
            Ok(read) => {
                failing = false;
                read
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(error = %server::telemetry::Chain(&error), "reading the swarm failed");
                    failing = true;
                }
                continue;
            }
        };
        let nodes: Vec<NodeView> = nodes.iter().filter_map(NodeView::from_node).collect();
        let services: std::collections::HashSet<String> =
            services.into_iter().filter_map(|s| s.id).collect();
        for (name, placed) in watched {
            let Some(status) = gone(&placed, &services, &tasks, &nodes) else {
                continue;
            };
            if shared.forget(&name, placed.generation).is_none() {
                continue;
            }
            shared.lost(&name, placed.node.clone());
            tracing::info!(service = %name, generation = placed.generation, %status, "relay gone from the swarm");
            let exited = Event::Exited {
                name,
                generation: placed.generation,
                status,
            };
            if events.send(exited).await.is_err() {
                return;
            }
        }
        *shared.nodes.lock().unwrap_or_else(|e| e.into_inner()) = nodes;
    }
}

#[async_trait::async_trait]
impl Runtime for SwarmRuntime {
    fn backend(&self) -> super::Backend {
        super::Backend::Swarm
    }

    async fn prepare(
        &self,
        events: mpsc::Sender<Event>,
        progress: &crate::runtime::Progress,
    ) -> Result<()> {
        let self_id = manager_node(self.docker()).await?;
        *self
            .shared
            .self_id
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = self_id;
        self.local.prepare(events.clone(), progress).await?;
        let nodes = self.read_nodes().await?;
        progress(&format!(
            "swarm of {} node(s): {}",
            nodes.len(),
            nodes
                .iter()
                .map(|n| format!(
                    "{} ({}, {})",
                    n.machine.hostname, n.machine.state, n.machine.availability
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let poller = tokio::spawn(poll(
            self.docker().clone(),
            self.local.stack.clone(),
            self.shared.clone(),
            events,
        ));
        if let Some(old) = self
            .poller
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(poller)
        {
            old.abort();
        }
        Ok(())
    }

    fn internal_ip(&self) -> IpAddr {
        self.local.internal_ip()
    }

    async fn adopt(&self, spec: &Spec, generation: u64) -> Result<Option<Instance>> {
        if spec.kind != Kind::Relay {
            return self.local.adopt(spec, generation).await;
        }
        let name = self.local.container_name(&spec.name);
        let Ok(service) = self.docker().inspect_service(&name, None).await else {
            return Ok(None);
        };
        let labels = service
            .spec
            .as_ref()
            .and_then(|s| s.labels.clone())
            .unwrap_or_default();
        let (Some(id), Some(stack)) = (service.id.clone(), labels.get(LABEL_STACK)) else {
            return Ok(None);
        };
        if *stack != self.local.stack {
            return Ok(None);
        }
        let generation = labels
            .get(LABEL_GENERATION)
            .and_then(|g| g.parse().ok())
            .unwrap_or(generation);
        let tasks = self.tasks_of(&id).await?;
        let Some(task) = tasks
            .into_iter()
            .find(|t| task_state(t) == Some(TaskState::RUNNING))
        else {
            return Ok(None);
        };
        let nodes = self.read_nodes().await?;
        let Some(node) = nodes
            .iter()
            .find(|n| Some(&n.machine.id) == task.node_id.as_ref())
            .cloned()
        else {
            return Ok(None);
        };
        // The ports it publishes are the ones it advertises.
        let mut spec = spec.clone();
        for port in service.endpoint.and_then(|e| e.ports).unwrap_or_default() {
            let listen = services::service(Kind::Relay)
                .listens
                .iter()
                .find(|l| Some(i64::from(l.container_port)) == port.target_port);
            if let (Some(listen), Some(published)) = (
                listen,
                port.published_port.and_then(|p| u16::try_from(p).ok()),
            ) {
                spec.ports.insert(listen.role, published);
            }
        }
        let instance = self.relay_instance(&spec, generation, &id, &task, &node);
        self.shared.relays().insert(
            spec.name.clone(),
            Placed {
                generation,
                service: id,
                node: node.machine.id,
                running: true,
            },
        );
        Ok(Some(instance))
    }

    async fn start(&self, spec: &Spec, generation: u64) -> Result<Instance> {
        if spec.kind == Kind::Relay {
            self.start_relay(spec, generation).await
        } else {
            self.local.start(spec, generation).await
        }
    }

    async fn stop(&self, instance: &Instance) -> Result<()> {
        match instance.handle {
            Handle::Replica(_) => {
                self.remove_relay(instance).await;
                Ok(())
            }
            _ => self.local.stop(instance).await,
        }
    }

    async fn kill(&self, instance: &Instance) -> Result<()> {
        match &instance.handle {
            // On another node: no signal reaches it from here; its service goes, which
            // ends its task at once, and the poller reports the exit.
            Handle::Replica(Replica {
                service,
                container: None,
                ..
            }) => self
                .docker()
                .delete_service(service)
                .await
                .map_err(super::Error::engine(format!("removing {}", instance.name))),
            // A container of this engine: SIGKILL, as a crash would.
            _ => self.local.kill(instance).await,
        }
    }

    async fn usage(&self, instance: &Instance) -> Option<Usage> {
        match &instance.handle {
            // Another node's: this engine cannot read it.
            Handle::Replica(Replica {
                container: None, ..
            }) => None,
            _ => self.local.usage(instance).await,
        }
    }

    async fn nodes(&self) -> Vec<api::status::Node> {
        let nodes = self
            .shared
            .nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let relays = self.shared.relays();
        nodes
            .into_iter()
            .map(|n| api::status::Node {
                relays: u32::try_from(relays.values().filter(|p| p.node == n.machine.id).count())
                    .unwrap_or(u32::MAX),
                address: n.public.clone().unwrap_or_else(|| n.addr.clone()),
                role: if n.manager { "manager" } else { "worker" }.into(),
                id: n.machine.id,
                hostname: n.machine.hostname,
                availability: n.machine.availability,
                state: n.machine.state,
                cpus: n.machine.cpus,
            })
            .collect()
    }

    async fn cleanup(&self) -> Result<()> {
        if let Some(p) = self.poller.lock().unwrap_or_else(|e| e.into_inner()).take() {
            p.abort();
        }
        self.shared.relays().clear();
        let services = stack_services(self.docker(), &self.label())
            .await
            .unwrap_or_default();
        let ids: Vec<String> = services.into_iter().filter_map(|s| s.id).collect();
        for id in &ids {
            let _ = self.docker().delete_service(id).await;
        }
        // Their tasks end within the grace period; until then the secrets and the network
        // they use cannot be removed.
        self.wait_removed(&ids).await;
        self.local.cleanup().await?;
        self.prune_secrets(&[]).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, state: &str) -> NodeView {
        NodeView {
            machine: Machine {
                id: id.into(),
                hostname: format!("host-{id}"),
                availability: "active".into(),
                state: state.into(),
                cpus: 2.0,
            },
            manager: false,
            addr: "10.0.0.1".into(),
            public: None,
        }
    }

    fn task(service: &str, state: TaskState, index: u64, err: Option<&str>) -> Task {
        Task {
            service_id: Some(service.into()),
            version: Some(bollard::models::ObjectVersion { index: Some(index) }),
            status: Some(bollard::models::TaskStatus {
                state: Some(state),
                err: err.map(str::to_string),
                container_status: Some(bollard::models::ContainerStatus {
                    exit_code: Some(137),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_relay_is_gone_when_its_task_ends_its_service_goes_or_its_node_is_lost() {
        let placed = Placed {
            generation: 1,
            service: "s1".into(),
            node: "b".into(),
            running: true,
        };
        let services = std::collections::HashSet::from(["s1".to_string()]);
        let nodes = [node("b", "ready")];
        let running = [task("s1", TaskState::RUNNING, 5, None)];
        assert_eq!(gone(&placed, &services, &running, &nodes), None);

        let failed = [task(
            "s1",
            TaskState::FAILED,
            6,
            Some("task: non-zero exit (137)"),
        )];
        let why = gone(&placed, &services, &failed, &nodes).expect("gone");
        assert!(why.contains("failed") && why.contains("137"), "{why}");

        assert_eq!(
            gone(&placed, &Default::default(), &running, &nodes).as_deref(),
            Some("its Swarm service was removed")
        );

        let down = [node("b", "down")];
        assert_eq!(
            gone(&placed, &services, &running, &down).as_deref(),
            Some("its node host-b is down")
        );

        // Drained: Swarm shuts its task down and queues another, which cannot run.
        let drained = [
            task("s1", TaskState::SHUTDOWN, 7, None),
            task("s1", TaskState::PENDING, 8, None),
        ];
        let why = gone(&placed, &services, &drained, &nodes).expect("gone");
        assert!(why.starts_with("task shutdown"), "{why}");
    }

    #[test]
    fn secret_names_follow_the_content_and_fit_swarms_limit() {
        let a = SecretFile {
            target: format!("{}/tls/relay.pem", docker::MOUNT),
            data: b"one".to_vec(),
        };
        let b = SecretFile {
            data: b"two".to_vec(),
            ..a.clone()
        };
        assert!(
            a.name("0a1b2c3d")
                .starts_with("ghost-0a1b2c3d-tls-relay-pem-")
        );
        assert_ne!(a.name("0a1b2c3d"), b.name("0a1b2c3d"));
        let long = SecretFile {
            target: format!("{}/{}", docker::MOUNT, "x".repeat(100)),
            data: Vec::new(),
        };
        assert!(long.name("0a1b2c3d").len() <= 64);
    }

    #[test]
    fn a_relay_reads_its_tls_directory_and_the_ticket_key_and_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::new(dir.path());
        let tls = state.tls_dir_of(identity::Role::Relay);
        std::fs::create_dir_all(&tls).expect("mkdir");
        std::fs::write(tls.join("relay.pem"), b"cert").expect("write");
        std::fs::write(tls.join("ca.pem"), b"ca").expect("write");
        std::fs::write(state.ticket_key(), b"key").expect("write");
        let control = state.tls_dir_of(identity::Role::Control);
        std::fs::create_dir_all(&control).expect("mkdir");
        std::fs::write(control.join("control.pem"), b"no").expect("write");
        let files = secret_files(Kind::Relay, dir.path()).expect("files");
        let targets: Vec<&str> = files.iter().map(|f| f.target.as_str()).collect();
        assert_eq!(
            targets,
            [
                "/run/ghost/tls/ca.pem",
                "/run/ghost/tls/relay.pem",
                "/run/ghost/ticket.key"
            ]
        );
    }

    #[test]
    fn a_relay_service_is_pinned_to_the_chosen_node_by_its_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The client connects lazily: nothing here talks to an engine.
        let engine =
            Docker::connect_with_http("http://127.0.0.1:9", 1, bollard::API_DEFAULT_VERSION)
                .expect("a client");
        let runtime = SwarmRuntime::new(engine, StateDir::new(dir.path()), dir.path().into());
        let spec = Spec::for_tests(
            Kind::Relay,
            1,
            &[],
            false,
            SocketAddr::from(([127, 0, 0, 1], 7071)),
        );
        let service = runtime
            .relay_service(&spec, 1, &node("n1", "ready"), "image".into(), vec![])
            .expect("a service spec");
        let constraints = service
            .task_template
            .and_then(|t| t.placement)
            .and_then(|p| p.constraints);
        assert_eq!(constraints, Some(vec!["node.id==n1".to_string()]));
    }
}

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
//!   milliseconds; the [`poller`] reports the others as exited, which makes the supervisor
//!   forget them at control and start replacements.
//!
//! Each concern is a module of its own: the [`error`] type, the [`nodes`] as placement reads
//! them, the [`relays`] placed (state the calls and the poller share), the [`poller`], the
//! relay's Swarm [`service`], its [`secrets`], the [`tasks`] the engine reports, and the
//! [`usage`] of relays on other nodes, which they report themselves.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use bollard::models::{LocalNodeState, Task, TaskState};
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNodesOptions, LogsOptionsBuilder,
};
use tokio::sync::mpsc;

use api::status::{Kind, Role, Usage};

use super::docker::{self, DockerRuntime, LABEL_GENERATION, LABEL_STACK};
use super::{Container, Event, Handle, Instance, Replica, Result, Runtime};
use crate::policy::placement::Machine;
use crate::services::{self, Spec};
use crate::stack::StateDir;

pub mod error;
mod nodes;
mod poller;
mod relays;
mod secrets;
mod service;
mod tasks;
mod usage;

pub use error::Error;
pub use nodes::LABEL_PUBLIC_ADDRESS;
use nodes::NodeView;
use relays::{Placed, Shared};
use service::STOP_GRACE;
use tasks::{task_end, task_state, terminal};

/// How long a relay's task may take from its service's creation to running: scheduling,
/// secrets, network attachment and the container's start.
const TASK_TIMEOUT: Duration = Duration::from_secs(20);
/// Label Docker puts on a Swarm task's container: the id of its service.
const LABEL_SWARM_SERVICE: &str = "com.docker.swarm.service.id";

/// Runs relays as Swarm services and the rest of the stack as containers of this manager.
pub struct SwarmRuntime {
    local: DockerRuntime,
    shared: Arc<Shared>,
    poller: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Reads the usage of relays on other nodes.
    http: reqwest::Client,
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

impl SwarmRuntime {
    /// A runtime on the manager `docker` for the stack whose files are in `state`.
    pub fn new(docker: Docker, state: StateDir, bin_dir: PathBuf) -> SwarmRuntime {
        SwarmRuntime {
            local: DockerRuntime::new(docker, state, bin_dir).on_overlay(),
            shared: Arc::new(Shared::default()),
            poller: Mutex::new(None),
            http: usage::client(),
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
        self.shared.set_nodes(views.clone());
        Ok(views)
    }

    /// The tasks of service `service`.
    async fn tasks_of(&self, service: &str) -> Result<Vec<Task>> {
        tasks::tasks_of(self.docker(), vec![service])
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
            let avoid = self.shared.take_lost(&spec.name);
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
            let files = secrets::secret_files(spec.kind, &self.local.state_root())?;
            let secrets = secrets::create(self.docker(), &self.local.stack, &files).await?;
            let service_spec = service::relay_service(
                &self.local,
                &self.shared.self_id(),
                &spec,
                generation,
                &node,
                image,
                secrets.clone(),
            )?;
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
            secrets::prune(self.docker(), &self.local.stack, &secrets).await;
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
        self.shared.set_self_id(self_id);
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
        let poller = tokio::spawn(poller::poll(
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
            // Another node's: this engine cannot read it; the relay reports its own.
            Handle::Replica(Replica {
                container: None, ..
            }) => usage::scrape(&self.http, *instance.addrs.get(&Role::Ops)?).await,
            _ => self.local.usage(instance).await,
        }
    }

    async fn nodes(&self) -> Vec<api::status::Node> {
        let nodes = self.shared.nodes();
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
        let services = tasks::stack_services(self.docker(), &self.label())
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
        secrets::prune(self.docker(), &self.local.stack, &[]).await;
        Ok(())
    }
}

//! A running instance of a service as the runtime that started it knows it: each runtime's
//! own kind of handle, and the service's kind, so nothing tells a relay by its name.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use api::status::{Kind, Role};

#[cfg(test)]
use crate::services::Spec;

/// A running instance of a service, as the runtime that started it knows it; the status
/// shows it as [`api::status::Instance`] ([`Instance::status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// The service's name in the stack (`relay-2`).
    pub name: String,
    /// What it is: a runtime tells a relay from the rest by this, never by its name.
    pub kind: Kind,
    /// Where it listens, by role, as reachable from this host.
    pub addrs: BTreeMap<Role, SocketAddr>,
    /// Which start of the service this is (1 for the first), to tell an old instance's exit
    /// from the current one's.
    pub generation: u64,
    /// How its runtime reaches it.
    pub handle: Handle,
}

/// How a runtime reaches one of its instances: each runtime's own kind of handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handle {
    /// A child process of this host ([`crate::runtime::process::ProcessRuntime`]).
    Process {
        /// Its process id.
        pid: u32,
    },
    /// A container of this host's engine ([`crate::runtime::docker::DockerRuntime`], and the services other
    /// than relays under [`crate::runtime::swarm::SwarmRuntime`]).
    Container(Container),
    /// A relay as a Swarm service, its task on some node ([`crate::runtime::swarm::SwarmRuntime`]).
    Replica(Replica),
}

/// A container of this host's engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// The engine's container id (or its name, which the engine takes as well).
    pub id: String,
    /// Its main process, as this host sees it, once it runs.
    pub pid: Option<u32>,
}

/// A relay's Swarm service and the task that runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    /// Swarm's id of the service.
    pub service: String,
    /// The node its task runs on: the host name where known, else the node id.
    pub node: String,
    /// The task's container, when it runs on this host's engine (the manager): signals and
    /// usage reach it only then.
    pub container: Option<Container>,
}

impl Instance {
    /// The instance's container on this host's engine, if it is one.
    pub fn container(&self) -> Option<&Container> {
        match &self.handle {
            Handle::Process { .. } => None,
            Handle::Container(c) => Some(c),
            Handle::Replica(r) => r.container.as_ref(),
        }
    }

    /// Its main process on this host, where there is one.
    pub fn pid(&self) -> Option<u32> {
        match &self.handle {
            Handle::Process { pid } => Some(*pid),
            _ => self.container().and_then(|c| c.pid),
        }
    }

    /// As the status page and `/api/status` show it.
    pub fn status(&self) -> api::status::Instance {
        api::status::Instance {
            name: self.name.clone(),
            pid: self.pid(),
            container: self.container().map(|c| c.id.clone()),
            addrs: self.addrs.clone(),
            generation: self.generation,
            node: match &self.handle {
                Handle::Replica(r) => Some(r.node.clone()),
                _ => None,
            },
        }
    }

    /// An instance of `spec` that no runtime runs, for tests of the policy and the actor.
    #[cfg(test)]
    pub(crate) fn for_tests(
        spec: &Spec,
        generation: u64,
        addrs: BTreeMap<Role, SocketAddr>,
    ) -> Instance {
        Instance {
            name: spec.name.clone(),
            kind: spec.kind,
            addrs,
            generation,
            handle: Handle::Container(Container {
                id: format!("test-{}", spec.name),
                pid: None,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay(handle: Handle) -> Instance {
        Instance {
            name: "relay-1".into(),
            kind: Kind::Relay,
            addrs: BTreeMap::new(),
            generation: 3,
            handle,
        }
    }

    #[test]
    fn the_status_shows_what_each_handle_knows() {
        let process = relay(Handle::Process { pid: 42 }).status();
        assert_eq!(
            (process.pid, process.container, process.node),
            (Some(42), None, None)
        );

        let container = relay(Handle::Container(Container {
            id: "c1".into(),
            pid: Some(7),
        }))
        .status();
        assert_eq!(container.pid, Some(7));
        assert_eq!(container.container.as_deref(), Some("c1"));
        assert_eq!(container.node, None);

        // Another node's task: no pid or container this host could reach.
        let remote = relay(Handle::Replica(Replica {
            service: "s1".into(),
            node: "worker-1".into(),
            container: None,
        }));
        assert_eq!(remote.container(), None);
        let status = remote.status();
        assert_eq!((status.pid, status.container), (None, None));
        assert_eq!(status.node.as_deref(), Some("worker-1"));
        assert_eq!(status.generation, 3);
    }
}

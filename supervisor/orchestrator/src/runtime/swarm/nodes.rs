//! Swarm's nodes as the placement rule ([`crate::policy::placement`]) and the status page
//! read them: a pure function of what the engine reported, unit-tested apart from any engine.

use bollard::models::{Node, NodeSpecAvailabilityEnum, NodeSpecRoleEnum, NodeState};

use crate::policy::placement::Machine;

/// Node label naming the address viewers reach that node's relays at (set by the operator,
/// or by the Ansible deployment, to the node's public address).
pub const LABEL_PUBLIC_ADDRESS: &str = "ghost.public-address";

/// A node as placement and the status page need it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct NodeView {
    /// What the placement rule reads.
    pub(super) machine: Machine,
    pub(super) manager: bool,
    /// The address Swarm knows it by (the manager reaches its relays' ops ports there).
    pub(super) addr: String,
    /// [`LABEL_PUBLIC_ADDRESS`], when set.
    pub(super) public: Option<String>,
}

impl NodeView {
    pub(super) fn from_node(node: &Node) -> Option<NodeView> {
        let spec = node.spec.as_ref();
        let description = node.description.as_ref();
        let status = node.status.as_ref();
        Some(NodeView {
            machine: Machine {
                id: node.id.clone()?,
                hostname: description
                    .and_then(|d| d.hostname.clone())
                    .unwrap_or_default(),
                availability: spec
                    .and_then(|s| s.availability)
                    .unwrap_or(NodeSpecAvailabilityEnum::ACTIVE)
                    .to_string(),
                state: status
                    .and_then(|s| s.state)
                    .unwrap_or(NodeState::UNKNOWN)
                    .to_string(),
                cpus: description
                    .and_then(|d| d.resources.as_ref())
                    .and_then(|r| r.nano_cpus)
                    .map(|n| n as f64 / 1e9)
                    .unwrap_or(1.0),
            },
            manager: spec.and_then(|s| s.role) == Some(NodeSpecRoleEnum::MANAGER),
            addr: status.and_then(|s| s.addr.clone()).unwrap_or_default(),
            public: spec
                .and_then(|s| s.labels.as_ref())
                .and_then(|l| l.get(LABEL_PUBLIC_ADDRESS))
                .filter(|a| !a.is_empty())
                .cloned(),
        })
    }
}

/// A node for tests: `id`, in `state`, two CPUs, active.
#[cfg(test)]
pub(super) fn for_tests(id: &str, state: &str) -> NodeView {
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

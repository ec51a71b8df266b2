//! Swarm's nodes as the placement rule ([`crate::policy::placement`]) reads them, the relay
//! each holds, and why a relay is gone: pure functions of what the engine reported,
//! unit-tested apart from any engine.

use super::*;

/// Where one relay runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Placed {
    pub(super) generation: u64,
    /// Swarm's service id; empty until created.
    pub(super) service: String,
    /// The node it is pinned to.
    pub(super) node: String,
    /// Started and ready: from now on, its end is an exit the poller reports.
    pub(super) running: bool,
}

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

/// Why a relay placed as `placed` is gone, if it is, from the swarm's `services` (ids),
/// its `tasks` and its `nodes`.
pub(super) fn gone(
    placed: &Placed,
    services: &std::collections::HashSet<String>,
    tasks: &[Task],
    nodes: &[NodeView],
) -> Option<String> {
    if !services.contains(&placed.service) {
        return Some("its Swarm service was removed".into());
    }
    if let Some(node) = nodes.iter().find(|n| n.machine.id == placed.node)
        && node.machine.lost()
    {
        return Some(format!(
            "its node {} is {}",
            node.machine.hostname, node.machine.state
        ));
    }
    let mine: Vec<&Task> = tasks
        .iter()
        .filter(|t| t.service_id.as_deref() == Some(placed.service.as_str()))
        .collect();
    if mine
        .iter()
        .any(|t| task_state(t) == Some(TaskState::RUNNING))
    {
        return None;
    }
    // It ran, and no task of it runs now: the newest that ended says why. (A task Swarm
    // queued to replace it, after a drain say, is not the relay: the supervisor places
    // relays, not Swarm.)
    let (last, state) = mine
        .iter()
        .filter_map(|t| Some((*t, task_state(t).filter(|s| terminal(*s))?)))
        .max_by_key(|(t, _)| t.version.as_ref().and_then(|v| v.index).unwrap_or(0))?;
    Some(task_end(last, state))
}

pub(super) fn task_state(task: &Task) -> Option<TaskState> {
    task.status.as_ref().and_then(|s| s.state)
}

/// Whether a task in `state` will never run again.
pub(super) fn terminal(state: TaskState) -> bool {
    matches!(
        state,
        TaskState::COMPLETE
            | TaskState::SHUTDOWN
            | TaskState::FAILED
            | TaskState::REJECTED
            | TaskState::REMOVE
            | TaskState::ORPHANED
    )
}

/// A task's end for people: its state, Swarm's reason and the exit code.
pub(super) fn task_end(task: &Task, state: TaskState) -> String {
    let status = task.status.as_ref();
    let reason = status
        .and_then(|s| s.err.clone().or_else(|| s.message.clone()))
        .unwrap_or_default();
    let code = status
        .and_then(|s| s.container_status.as_ref())
        .and_then(|c| c.exit_code);
    match code {
        Some(code) => format!("task {state}: {reason} (exit code {code})"),
        None => format!("task {state}: {reason}"),
    }
}

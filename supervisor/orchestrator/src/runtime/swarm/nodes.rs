//! Swarm as the placement rule reads it: nodes, the relay each holds, and why a relay is
//! gone. Pure functions of what the engine reported, unit-tested apart from any engine.

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
    pub(super) id: String,
    pub(super) hostname: String,
    pub(super) manager: bool,
    pub(super) availability: String,
    pub(super) state: String,
    /// The address Swarm knows it by (the manager reaches its relays' ops ports there).
    pub(super) addr: String,
    /// [`LABEL_PUBLIC_ADDRESS`], when set.
    pub(super) public: Option<String>,
    pub(super) cpus: f64,
}

impl NodeView {
    pub(super) fn from_node(node: &Node) -> Option<NodeView> {
        let spec = node.spec.as_ref();
        let description = node.description.as_ref();
        let status = node.status.as_ref();
        Some(NodeView {
            id: node.id.clone()?,
            hostname: description
                .and_then(|d| d.hostname.clone())
                .unwrap_or_default(),
            manager: spec.and_then(|s| s.role) == Some(NodeSpecRoleEnum::MANAGER),
            availability: spec
                .and_then(|s| s.availability)
                .unwrap_or(NodeSpecAvailabilityEnum::ACTIVE)
                .to_string(),
            state: status
                .and_then(|s| s.state)
                .unwrap_or(NodeState::UNKNOWN)
                .to_string(),
            addr: status.and_then(|s| s.addr.clone()).unwrap_or_default(),
            public: spec
                .and_then(|s| s.labels.as_ref())
                .and_then(|l| l.get(LABEL_PUBLIC_ADDRESS))
                .filter(|a| !a.is_empty())
                .cloned(),
            cpus: description
                .and_then(|d| d.resources.as_ref())
                .and_then(|r| r.nano_cpus)
                .map(|n| n as f64 / 1e9)
                .unwrap_or(1.0),
        })
    }

    /// Whether new relays may go there.
    pub(super) fn schedulable(&self) -> bool {
        self.state == "ready" && self.availability == "active"
    }

    /// Whether its relays are lost: Swarm no longer hears from it.
    pub(super) fn lost(&self) -> bool {
        self.state == "down" || self.state == "disconnected"
    }
}

/// The node for a new relay: among the ready, active nodes, the one with the fewest relays
/// per CPU (`load` counts the relays on each), so an empty node always wins and relays
/// spread before any node takes a second; ties go to the node with fewer relays, then by
/// host name, so the choice is stable.
pub(super) fn choose<'a>(
    nodes: &'a [NodeView],
    load: &HashMap<String, u32>,
) -> Result<&'a NodeView> {
    let relays = |n: &NodeView| load.get(&n.id).copied().unwrap_or(0);
    nodes
        .iter()
        .filter(|n| n.schedulable())
        .min_by(|a, b| {
            let per_cpu = |n: &NodeView| f64::from(relays(n)) / n.cpus.max(0.1);
            per_cpu(a)
                .total_cmp(&per_cpu(b))
                .then(relays(a).cmp(&relays(b)))
                .then(a.hostname.cmp(&b.hostname))
                .then(a.id.cmp(&b.id))
        })
        .with_context(|| {
            let listed: Vec<String> = nodes
                .iter()
                .map(|n| format!("{} ({}, {})", n.hostname, n.state, n.availability))
                .collect();
            format!(
                "no Swarm node can take a relay: none is both ready and active (nodes: {})",
                listed.join(", ")
            )
        })
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
    if let Some(node) = nodes.iter().find(|n| n.id == placed.node)
        && node.lost()
    {
        return Some(format!("its node {} is {}", node.hostname, node.state));
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

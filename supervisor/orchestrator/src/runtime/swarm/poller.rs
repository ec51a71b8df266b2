//! The poller: reads the swarm's tasks and nodes every [`POLL`] and reports each relay that
//! is gone (its task ended, its service went, or its node is down or disconnected) as an
//! exit, which makes the supervisor forget it at control and start a replacement. Why a
//! relay is gone is [`gone`], a pure function of what the engine reported.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{Task, TaskState};
use bollard::query_parameters::ListNodesOptions;
use tokio::sync::mpsc;

use super::nodes::NodeView;
use super::relays::{Placed, Shared};
use super::tasks::{stack_services, task_end, task_state, tasks_of, terminal};
use crate::runtime::Event;
use crate::runtime::docker::LABEL_STACK;

/// How often the swarm's tasks and nodes are read.
pub(super) const POLL: Duration = Duration::from_millis(250);

/// Reads the swarm every [`POLL`] and reports relays that are gone (see [`gone`]). Ends
/// when the supervisor stops listening.
pub(super) async fn poll(
    docker: Docker,
    stack: String,
    shared: Arc<Shared>,
    events: mpsc::Sender<Event>,
) {
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
        let services: HashSet<String> = services.into_iter().filter_map(|s| s.id).collect();
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
        shared.set_nodes(nodes);
    }
}

/// Why a relay placed as `placed` is gone, if it is, from the swarm's `services` (ids),
/// its `tasks` and its `nodes`.
pub(super) fn gone(
    placed: &Placed,
    services: &HashSet<String>,
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

#[cfg(test)]
mod tests {
    use super::super::nodes::for_tests as node;
    use super::*;

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
        let services = HashSet::from(["s1".to_string()]);
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
}

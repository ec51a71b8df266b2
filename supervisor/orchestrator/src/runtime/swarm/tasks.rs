//! What the engine reports of a stack's Swarm services and their tasks: the listings, a
//! task's state, and its end in words for people.

use std::collections::HashMap;

use bollard::Docker;
use bollard::models::{Service, Task, TaskState};
use bollard::query_parameters::{ListServicesOptionsBuilder, ListTasksOptionsBuilder};

/// The Swarm services carrying the stack label `label` (`ghost-stream.stack=<id>`).
pub(super) async fn stack_services(
    docker: &Docker,
    label: &str,
) -> Result<Vec<Service>, bollard::errors::Error> {
    let filters = HashMap::from([("label", vec![label])]);
    let options = ListServicesOptionsBuilder::default()
        .filters(&filters)
        .build();
    docker.list_services(Some(options)).await
}

/// The tasks of the Swarm services `ids`.
pub(super) async fn tasks_of(
    docker: &Docker,
    ids: Vec<&str>,
) -> Result<Vec<Task>, bollard::errors::Error> {
    let filters = HashMap::from([("service", ids)]);
    let options = ListTasksOptionsBuilder::default().filters(&filters).build();
    docker.list_tasks(Some(options)).await
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

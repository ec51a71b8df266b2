//! Following the engine: its event stream, read again after an outage, and the
//! reconciliation of the stack's containers once it answers.

use super::*;

/// Watches the engine for the stack's containers' deaths, and for the engine itself: when
/// its event stream breaks, reports [`Event::Unreachable`], asks again with back-off until
/// it answers, reconciles ([`reconcile`]), reports [`Event::Reachable`] and subscribes
/// again. Ends when the supervisor stops listening.
pub(super) async fn watch(
    docker: Docker,
    stack: String,
    running: Running,
    events: mpsc::Sender<Event>,
) {
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
                    tracing::debug!(error = %server::telemetry::Chain(&e), "the Docker Engine is still unreachable");
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
pub(super) async fn reconcile(
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
    .map_err(|source| Error::Timeout {
        doing: "listing the stack's containers timed out",
        source,
    })?
    .map_err(Error::engine("listing the stack's containers"))?;
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
            .map_err(Error::engine(format!("removing container {id}")))?;
    }
    for (name, generation) in gone {
        tracing::info!(service = %name, generation, "container gone while the engine was away");
        let exited = Event::Exited {
            name,
            generation,
            status: "container gone while the Docker Engine was unreachable".into(),
        };
        events.send(exited).await.map_err(Error::SupervisorGone)?;
    }
    Ok(())
}

/// The name of the bridge through which containers on Swarm overlays reach their host.
pub(super) const SWARM_BRIDGE: &str = "docker_gwbridge";

/// This host's address on [`SWARM_BRIDGE`], which the engine creates when it joins a swarm.
pub(super) async fn swarm_bridge_gateway(docker: &Docker) -> Result<IpAddr> {
    let bridge = docker
        .inspect_network(SWARM_BRIDGE, None)
        .await
        .map_err(Error::engine(format!(
            "inspecting {SWARM_BRIDGE}, Swarm's bridge of this node"
        )))?;
    gateway_of(bridge)
        .ok_or_else(|| Error::Unexpected(format!("{SWARM_BRIDGE} has no gateway address")))
}

/// The gateway address of a Docker network: the host's address on it.
pub(super) fn gateway_of(network: bollard::models::NetworkInspect) -> Option<IpAddr> {
    network
        .ipam
        .and_then(|i| i.config)
        .and_then(|c| c.into_iter().find_map(|c| c.gateway))
        .and_then(|g| g.parse::<IpAddr>().ok())
}

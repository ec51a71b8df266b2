//! The Swarm service a relay runs as: its task pinned to the node the supervisor chose, its
//! ports published in host mode on that node, its files as secrets, and Swarm's own
//! restarts and health checks off, as the supervisor does both.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use api::status::Kind;
use bollard::models::{
    EndpointPortConfig, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum,
    EndpointSpec, EndpointSpecModeEnum, HealthConfig, Limit, NetworkAttachmentConfig, ServiceSpec,
    ServiceSpecMode, ServiceSpecModeReplicated, TaskSpec, TaskSpecContainerSpec,
    TaskSpecContainerSpecSecrets, TaskSpecLogDriver, TaskSpecPlacement, TaskSpecResources,
    TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum,
};

use super::nodes::NodeView;
use crate::runtime::Runtime as _;
use crate::runtime::docker::{self, DockerRuntime};
use crate::services::{self, Audience, File, Listen, Site, Spec};

/// How long a relay gets between SIGTERM and SIGKILL.
pub(super) const STOP_GRACE: Duration = Duration::from_secs(3);

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

/// The service spec of relay `spec` (its host ports decided), generation `generation`,
/// pinned to `node`, made with `local`'s stack, network and limits; `self_id` is this
/// manager's node id.
pub(super) fn relay_service(
    local: &DockerRuntime,
    self_id: &str,
    spec: &Spec,
    generation: u64,
    node: &NodeView,
    image: String,
    secrets: Vec<TaskSpecContainerSpecSecrets>,
) -> Result<ServiceSpec, crate::runtime::Error> {
    let viewers_host = if node.machine.id == self_id {
        spec.advertise_host
            .clone()
            .unwrap_or_else(|| Ipv4Addr::LOCALHOST.to_string())
    } else {
        node.public.clone().unwrap_or_else(|| node.addr.clone())
    };
    let site = RelaySite {
        network: docker::Network {
            gateway: local.internal_ip(),
        },
        viewers_host,
    };
    let labels = docker::labels(&local.stack, &spec.name, generation);
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
    let limits = &local.limits;
    Ok(ServiceSpec {
        name: Some(local.container_name(&spec.name)),
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
                stop_grace_period: Some(i64::try_from(STOP_GRACE.as_nanos()).unwrap_or(i64::MAX)),
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
                target: Some(local.network.clone()),
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

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use bollard::Docker;

    use super::super::nodes::for_tests as node;
    use super::*;
    use crate::stack::StateDir;

    #[test]
    fn a_relay_service_is_pinned_to_the_chosen_node_by_its_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The client connects lazily: nothing here talks to an engine.
        let engine =
            Docker::connect_with_http("http://127.0.0.1:9", 1, bollard::API_DEFAULT_VERSION)
                .expect("a client");
        let local =
            DockerRuntime::new(engine, StateDir::new(dir.path()), dir.path().into()).on_overlay();
        let spec = Spec::for_tests(
            Kind::Relay,
            1,
            &[],
            false,
            SocketAddr::from(([127, 0, 0, 1], 7071)),
        );
        let service = relay_service(
            &local,
            "manager",
            &spec,
            1,
            &node("n1", "ready"),
            "image".into(),
            vec![],
        )
        .expect("a service spec");
        let constraints = service
            .task_template
            .and_then(|t| t.placement)
            .and_then(|p| p.constraints);
        assert_eq!(constraints, Some(vec!["node.id==n1".to_string()]));
    }
}

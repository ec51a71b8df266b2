//! The supervisor's `/metrics`: what only the supervisor knows about the stack, read afresh
//! at every scrape from its snapshot, the runtime and the state directory.
//!
//! Series about one service carry that service's `service` and `kind` labels, the same
//! values the scrape configuration gives the service's own target (see
//! `ghost monitoring` (the `ghost` package's `monitoring`), whose job keeps them with `honor_labels`), so a rule can join a
//! relay's restarts to its own figures by `service`.

use std::path::Path;
use std::sync::atomic::AtomicU64;

use api::status::{Service, State};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::actor::Handle;
use crate::stack::StateDir;

/// The states a service is reported in, one series each (1 for the current one), so that a
/// rule can ask how long a service has been `failed` without knowing the others.
const STATES: [State; 6] = [
    State::Stopped,
    State::Starting,
    State::Running,
    State::Restarting,
    State::Held,
    State::Failed,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
    kind: String,
}

impl ServiceLabels {
    fn of(service: &Service) -> ServiceLabels {
        ServiceLabels {
            service: service.name.clone(),
            kind: service.kind.as_str().to_string(),
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    service: String,
    kind: String,
    state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuntimeLabels {
    runtime: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertificateLabels {
    certificate: String,
}

/// The supervisor's metrics as of now. Each instance's resource use is read from the runtime
/// (all at once: one slow answer delays the scrape by its own time only).
pub async fn registry(handle: &Handle) -> Registry {
    let crate::actor::Snapshot {
        status, instances, ..
    } = handle.snapshot();
    let settings = handle.settings();
    let mut registry = Registry::with_prefix("ghost_supervisor");

    let healthy = Gauge::<i64>::default();
    healthy.set(status.services.iter().filter(|s| s.healthy).count() as i64);
    registry.register("services_healthy", "Services up and healthy", healthy);

    let wanted = Gauge::<i64>::default();
    wanted.set(i64::from(status.relays_wanted));
    registry.register(
        "relays_wanted",
        "Relays the supervisor keeps running",
        wanted,
    );
    let max = Gauge::<i64>::default();
    max.set(i64::from(status.max_relays));
    registry.register(
        "relays_max",
        "Relays at most (--max-relays): no relay is added on demand beyond it",
        max,
    );
    let capacity = Gauge::<i64>::default();
    capacity.set(i64::from(status.relay_capacity));
    registry.register(
        "relay_capacity",
        "Viewers each relay admits at most (--relay-capacity)",
        capacity,
    );

    let runtime_up = Family::<RuntimeLabels, Gauge>::default();
    runtime_up
        .get_or_create(&RuntimeLabels {
            runtime: status.runtime.clone(),
        })
        .set(i64::from(status.runtime_error.is_none()));
    registry.register(
        "runtime_up",
        "Whether the runtime (the Docker Engine, under Docker or Swarm) answers; while it \
         does not, nothing can be restarted",
        runtime_up,
    );

    let service_healthy = Family::<ServiceLabels, Gauge>::default();
    let states = Family::<StateLabels, Gauge>::default();
    let restarts = Family::<ServiceLabels, Counter>::default();
    let memory_limit = Family::<ServiceLabels, Gauge>::default();
    for service in &status.services {
        let labels = ServiceLabels::of(service);
        service_healthy
            .get_or_create(&labels)
            .set(i64::from(service.healthy));
        restarts.get_or_create(&labels).inc_by(service.restarts);
        let limit = settings.limits.memory_of(service.kind);
        memory_limit
            .get_or_create(&labels)
            .set(i64::try_from(limit).unwrap_or(i64::MAX));
        for state in STATES {
            states
                .get_or_create(&StateLabels {
                    service: labels.service.clone(),
                    kind: labels.kind.clone(),
                    state: state.as_str().to_string(),
                })
                .set(i64::from(service.state == state));
        }
    }
    registry.register(
        "service_healthy",
        "Whether the service's last health probe answered",
        service_healthy,
    );
    registry.register(
        "service_state",
        "1 for the state the service is in (stopped, starting, running, restarting, held, \
         failed: restarted too often and left down for a while), 0 for the others",
        states,
    );
    registry.register(
        "service_restarts",
        "Restarts of the service (a dead relay replaced included) since the supervisor started",
        restarts,
    );
    registry.register(
        "service_memory_limit_bytes",
        "The service's memory budget: its container's limit under Docker, the same figure \
         for local processes (--relay-memory, --container-memory)",
        memory_limit,
    );

    let instances = &instances;
    let usages = futures_util::future::join_all(status.services.iter().map(|s| async move {
        match instances.get(&s.name) {
            Some(instance) => handle.usage(instance).await.map(|u| (s, u)),
            None => None,
        }
    }))
    .await;
    let resident = Family::<ServiceLabels, Gauge>::default();
    let cpu = Family::<ServiceLabels, Counter<f64, AtomicU64>>::default();
    for (service, usage) in usages.into_iter().flatten() {
        let labels = ServiceLabels::of(service);
        resident
            .get_or_create(&labels)
            .set(i64::try_from(usage.rss_bytes).unwrap_or(i64::MAX));
        cpu.get_or_create(&labels).inc_by(usage.cpu_s);
    }
    registry.register(
        "service_resident_memory_bytes",
        "Memory the service's running instance holds (its container's, under Docker)",
        resident,
    );
    registry.register(
        "service_cpu_seconds",
        "CPU time of the service's running instance, user and system",
        cpu,
    );

    let expiry = Family::<CertificateLabels, Gauge>::default();
    for (certificate, not_after) in certificates(&settings.state) {
        expiry
            .get_or_create(&CertificateLabels { certificate })
            .set(not_after);
    }
    registry.register(
        "certificate_expiry_timestamp_seconds",
        "When each certificate of the state directory ends, Unix seconds: the stack's CA \
         (`ca`) and each service's (`relay/relay.pem`: what viewers see, the operator's or \
         ACME's on a public stack; `gateway/https.pem`: the gateway's HTTPS)",
        expiry,
    );

    registry
}

/// Each certificate the stack serves or presents, named by its path under `tls/`, with its
/// end (Unix seconds). A file that cannot be read is left out: the services that need it
/// fail loudly on their own.
fn certificates(state: &StateDir) -> Vec<(String, i64)> {
    let tls = state.tls_dir();
    let mut found = Vec::new();
    if let Some(end) = not_after(&state.ca()) {
        found.push(("ca".to_string(), end));
    }
    for role in identity::Role::ALL {
        let dir = state.tls_dir_of(role);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|e| e == "pem")
                    && p.file_name().is_some_and(|n| n != "ca.pem")
            })
            .collect();
        files.sort();
        for file in files {
            if let Some(end) = not_after(&file) {
                let name = file.strip_prefix(&tls).unwrap_or(&file);
                found.push((name.display().to_string(), end));
            }
        }
    }
    found
}

/// The end of the first certificate in the PEM file at `path`, Unix seconds.
fn not_after(path: &Path) -> Option<i64> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let pem = std::fs::read(path).ok()?;
    let leaf = CertificateDer::pem_slice_iter(&pem).next()?.ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf).ok()?;
    Some(cert.validity().not_after.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_certificate_of_a_state_directory_is_reported_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = StateDir::new(dir.path());
        state.prepare().expect("state directory");
        let found = certificates(&state);
        let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"ca"), "{names:?}");
        assert!(names.contains(&"relay/relay.pem"), "{names:?}");
        assert!(names.contains(&"control/server.pem"), "{names:?}");
        assert!(
            !names.iter().any(|n| n.ends_with("/ca.pem")),
            "the CA's copies count once: {names:?}"
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64;
        let relay = found
            .iter()
            .find(|(n, _)| n == "relay/relay.pem")
            .map(|(_, end)| *end)
            .expect("relay certificate");
        let lifetime = identity::RELAY_CERT_LIFETIME.as_secs() as i64;
        assert!(
            relay > now && relay <= now + lifetime,
            "the relays' certificate ends within its lifetime: {relay} vs {now}"
        );
    }
}

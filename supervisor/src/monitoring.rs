//! `ghost monitoring`: what an operator needs to watch the stack with Prometheus and Grafana.
//!
//! - Targets: the supervisor keeps a file-based service discovery file
//!   ([`targets_file`], Prometheus' `file_sd_configs` JSON) current in the state directory,
//!   rewritten whole (temporary file, then rename) whenever a service starts, moves or goes:
//!   relays added by `ghost scale` or on demand appear without touching Prometheus.
//! - `ghost monitoring prometheus`: a scrape configuration that reads that file.
//! - `ghost monitoring rules`: the alert rules (`monitoring/alerts.yml` in this crate,
//!   exercised by `monitoring/alerts_test.yml` with `promtool test rules`).
//! - `ghost monitoring grafana`: a dashboard of the stack's figures (`monitoring/dashboard.json`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use api::status::{Role, State, Status};
use clap::Subcommand;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::exit;
use orchestrator::actor::Snapshot;
use orchestrator::services::loopback_if_unspecified;
use orchestrator::stack::StateDir;

/// The alert rules, as `ghost monitoring rules` prints them.
pub const ALERTS: &str = include_str!("../monitoring/alerts.yml");

/// The Grafana dashboard, as `ghost monitoring grafana` prints it.
pub const DASHBOARD: &str = include_str!("../monitoring/dashboard.json");

/// The scrape job's name in the configuration `ghost monitoring prometheus` prints.
pub const JOB: &str = "ghost";

/// `ghost monitoring` subcommands.
#[derive(Debug, Subcommand)]
pub enum MonitoringCmd {
    /// Prints a Prometheus configuration that scrapes the stack of this state directory:
    /// every service's /metrics, relays added later included, found through the targets file
    /// the supervisor keeps current (`monitoring/targets.json` in the state directory).
    Prometheus {
        /// Alert rule files for Prometheus to load (`ghost monitoring rules > FILE`).
        #[arg(long = "rules", value_name = "FILE")]
        rules: Vec<PathBuf>,
        /// How often Prometheus scrapes each target and evaluates the rules.
        #[arg(long, default_value = "15s")]
        scrape_interval: humantime::Duration,
    },
    /// Prints the alert rules (Prometheus rule file, YAML).
    Rules,
    /// Prints the Grafana dashboard (JSON, for Dashboards > Import or provisioning).
    Grafana,
}

/// Runs `ghost monitoring`.
pub fn run(state: &StateDir, command: MonitoringCmd) -> Result<i32> {
    match command {
        MonitoringCmd::Prometheus {
            rules,
            scrape_interval,
        } => {
            let targets =
                std::path::absolute(targets_file(state)).context("locating the state directory")?;
            let rules = rules
                .iter()
                .map(|r| {
                    std::path::absolute(r).with_context(|| format!("locating {}", r.display()))
                })
                .collect::<Result<Vec<_>>>()?;
            if state.read().is_err() {
                eprintln!(
                    "ghost: no stack is up in {} yet; its supervisor writes {} when it starts",
                    state.root().display(),
                    targets.display()
                );
            }
            out!("{}", prometheus_config(&targets, &rules, *scrape_interval));
        }
        MonitoringCmd::Rules => out!("{}", ALERTS.trim_end()),
        MonitoringCmd::Grafana => out!("{}", DASHBOARD.trim_end()),
    }
    Ok(exit::OK)
}

/// The file-based service discovery file the supervisor keeps current.
pub fn targets_file(state: &StateDir) -> PathBuf {
    state.root().join("monitoring").join("targets.json")
}

/// A Prometheus configuration whose one job scrapes the targets listed in `targets`, and
/// loads `rules`.
pub fn prometheus_config(targets: &Path, rules: &[PathBuf], interval: Duration) -> String {
    let interval = prometheus_duration(interval);
    // JSON strings are YAML's double-quoted scalars: any path is quoted right.
    let quote = |p: &Path| {
        serde_json::to_string(&p.display().to_string()).unwrap_or_else(|_| String::from("\"\""))
    };
    let rule_files = if rules.is_empty() {
        "# rule_files: [/etc/prometheus/ghost-alerts.yml]  # from `ghost monitoring rules`\n"
            .to_string()
    } else {
        let files: Vec<String> = rules.iter().map(|r| quote(r)).collect();
        format!("rule_files: [{}]\n", files.join(", "))
    };
    format!(
        "# Prometheus configuration for the Ghost Stream stack (`ghost monitoring prometheus`).\n\
         # Its targets come from a file the supervisor rewrites whenever a service starts, moves\n\
         # or goes (relays added later included), so nothing here changes with the stack. To\n\
         # scrape it from an existing Prometheus, copy the `{JOB}` job into its scrape_configs.\n\
         global:\n  \
           scrape_interval: {interval}\n  \
           evaluation_interval: {interval}\n\
         {rule_files}\
         scrape_configs:\n  \
           - job_name: {JOB}\n    \
             # The supervisor's series about a service carry that service's own `service` and\n    \
             # `kind` labels: kept, not renamed to exported_service.\n    \
             honor_labels: true\n    \
             metrics_path: /metrics\n    \
             file_sd_configs:\n      \
               - files: [{targets}]\n        \
                 refresh_interval: 30s\n",
        targets = quote(targets),
    )
}

/// `d` as Prometheus writes durations (`15s`, `1m`, `1500ms`).
fn prometheus_duration(d: Duration) -> String {
    let ms = d.as_millis().max(1);
    if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// One entry of a file-based service discovery file: its targets and their labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetGroup {
    /// `host:port` of each target's /metrics.
    pub targets: Vec<String>,
    /// Labels every series of these targets gets.
    pub labels: Labels,
}

/// The labels of a service's target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Labels {
    /// The service's name in the stack (`relay-2`), or `supervisor`.
    pub service: String,
    /// Its kind (`relay`), or `supervisor`.
    pub kind: String,
}

/// What the targets file should say, kept from one status to the next: no I/O here.
///
/// A service keeps its target while it is restarted, held or left down after a crash loop
/// (its address is pinned across restarts), so Prometheus records it as down rather than
/// forgetting it; it loses it once stopped (`ghost down`, a relay scaled away).
#[derive(Debug)]
pub struct Targets {
    supervisor: SocketAddr,
    /// Each service's last known metrics address.
    known: BTreeMap<String, SocketAddr>,
    /// What was last written, to write only changes.
    written: Option<Vec<TargetGroup>>,
}

impl Targets {
    /// Targets of a stack whose supervisor serves /metrics at `supervisor`.
    pub fn new(supervisor: SocketAddr) -> Targets {
        Targets {
            supervisor: loopback_if_unspecified(supervisor),
            known: BTreeMap::new(),
            written: None,
        }
    }

    /// The targets for `status`, when they differ from those last written.
    pub fn handle_status(&mut self, status: &Status) -> Option<Vec<TargetGroup>> {
        self.known
            .retain(|name, _| status.services.iter().any(|s| &s.name == name));
        let mut groups = vec![TargetGroup {
            targets: vec![self.supervisor.to_string()],
            labels: Labels {
                service: "supervisor".into(),
                kind: "supervisor".into(),
            },
        }];
        for service in &status.services {
            // The gateway serves /metrics on its HTTP listener, which the Docker runtime
            // reports under that role only.
            let current = service.instance.as_ref().and_then(|i| {
                i.addrs
                    .get(&Role::Ops)
                    .or_else(|| i.addrs.get(&Role::Http))
                    .copied()
                    .map(loopback_if_unspecified)
            });
            if let Some(addr) = current {
                self.known.insert(service.name.clone(), addr);
            }
            if service.state == State::Stopped {
                continue;
            }
            if let Some(addr) = self.known.get(&service.name) {
                groups.push(TargetGroup {
                    targets: vec![addr.to_string()],
                    labels: Labels {
                        service: service.name.clone(),
                        kind: service.kind.as_str().to_string(),
                    },
                });
            }
        }
        if self.written.as_ref() == Some(&groups) {
            return None;
        }
        self.written = Some(groups.clone());
        Some(groups)
    }

    /// The last write failed: the next status writes again.
    pub fn handle_write_failed(&mut self) {
        self.written = None;
    }
}

/// Keeps `path` listing the stack's targets as `snapshots` change, until their sender goes.
/// A failed write is logged and tried again at the next change (the supervisor publishes a
/// snapshot every second).
pub async fn keep_targets(
    path: PathBuf,
    supervisor: SocketAddr,
    mut snapshots: watch::Receiver<Snapshot>,
) {
    let mut targets = Targets::new(supervisor);
    loop {
        let groups = targets.handle_status(&snapshots.borrow_and_update().status);
        if let Some(groups) = groups
            && let Err(error) = write_targets(&path, &groups)
        {
            tracing::warn!(path = %path.display(), error = %format!("{error:#}"), "writing the Prometheus targets failed");
            targets.handle_write_failed();
        }
        if snapshots.changed().await.is_err() {
            return;
        }
    }
}

/// Writes `groups` to `path` whole: a temporary file beside it, then renamed over it, so
/// Prometheus never reads half a file.
pub fn write_targets(path: &Path, groups: &[TargetGroup]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut text = serde_json::to_vec_pretty(groups).context("encoding the targets")?;
    text.push(b'\n');
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use api::status::{Instance, Kind, Service};

    use super::*;

    fn service(name: &str, kind: Kind, state: State, addrs: &[(Role, &str)]) -> Service {
        Service {
            name: name.into(),
            kind,
            state,
            healthy: state == State::Running,
            restarts: 0,
            instance: (!addrs.is_empty()).then(|| Instance {
                name: name.into(),
                pid: None,
                container: None,
                addrs: addrs
                    .iter()
                    .map(|(r, a)| (*r, a.parse().expect("addr")))
                    .collect(),
                generation: 1,
                node: None,
            }),
            usage: None,
            last_exit: None,
        }
    }

    fn status(services: Vec<Service>) -> Status {
        Status {
            services,
            ..Status::default()
        }
    }

    fn names(groups: &[TargetGroup]) -> Vec<(String, String)> {
        groups
            .iter()
            .map(|g| (g.labels.service.clone(), g.targets.join(",")))
            .collect()
    }

    #[test]
    fn every_service_is_a_target_at_its_metrics_address() {
        let mut targets = Targets::new("0.0.0.0:7070".parse().expect("addr"));
        let groups = targets
            .handle_status(&status(vec![
                service(
                    "control",
                    Kind::Control,
                    State::Running,
                    &[
                        (Role::Grpc, "127.0.0.1:7000"),
                        (Role::Ops, "127.0.0.1:9100"),
                    ],
                ),
                service(
                    "gateway",
                    Kind::Gateway,
                    State::Running,
                    &[(Role::Http, "0.0.0.0:8080")],
                ),
                service(
                    "relay-1",
                    Kind::Relay,
                    State::Running,
                    &[
                        (Role::Quic, "127.0.0.1:4500"),
                        (Role::Ops, "127.0.0.1:9201"),
                    ],
                ),
            ]))
            .expect("targets");
        assert_eq!(
            names(&groups),
            [
                ("supervisor".into(), "127.0.0.1:7070".into()),
                ("control".into(), "127.0.0.1:9100".into()),
                ("gateway".into(), "127.0.0.1:8080".into()),
                ("relay-1".into(), "127.0.0.1:9201".into()),
            ]
        );
        assert_eq!(groups[3].labels.kind, "relay");
        let json = serde_json::to_string(&groups[3]).expect("json");
        assert_eq!(
            json,
            r#"{"targets":["127.0.0.1:9201"],"labels":{"service":"relay-1","kind":"relay"}}"#
        );
    }

    #[test]
    fn a_restarting_relay_stays_a_target_and_a_removed_one_goes() {
        let mut targets = Targets::new("127.0.0.1:7070".parse().expect("addr"));
        let relay = |name: &str, state: State, ops: Option<&str>| {
            let addrs: Vec<(Role, &str)> = ops.map(|a| (Role::Ops, a)).into_iter().collect();
            service(name, Kind::Relay, state, &addrs)
        };
        let first = targets.handle_status(&status(vec![
            relay("relay-1", State::Running, Some("127.0.0.1:9201")),
            relay("relay-2", State::Starting, None),
        ]));
        assert_eq!(
            first.map(|g| g.len()),
            Some(2),
            "relay-2 has no address yet"
        );
        assert_eq!(
            targets.handle_status(&status(vec![
                relay("relay-1", State::Running, Some("127.0.0.1:9201")),
                relay("relay-2", State::Starting, None),
            ])),
            None,
            "nothing changed: nothing to write"
        );
        let crashed = targets
            .handle_status(&status(vec![
                relay("relay-1", State::Restarting, None),
                relay("relay-2", State::Running, Some("127.0.0.1:9202")),
            ]))
            .expect("relay-2 appeared");
        assert_eq!(
            names(&crashed)[1..],
            [
                ("relay-1".into(), "127.0.0.1:9201".into()),
                ("relay-2".into(), "127.0.0.1:9202".into()),
            ]
        );
        let scaled = targets
            .handle_status(&status(vec![relay(
                "relay-1",
                State::Running,
                Some("127.0.0.1:9201"),
            )]))
            .expect("relay-2 went");
        assert_eq!(names(&scaled).len(), 2);
        let down = targets
            .handle_status(&status(vec![relay("relay-1", State::Stopped, None)]))
            .expect("stopped");
        assert_eq!(
            names(&down),
            [("supervisor".into(), "127.0.0.1:7070".into())]
        );
    }

    #[test]
    fn a_failed_write_is_tried_again() {
        let mut targets = Targets::new("127.0.0.1:7070".parse().expect("addr"));
        let s = status(Vec::new());
        assert!(targets.handle_status(&s).is_some());
        assert!(targets.handle_status(&s).is_none());
        targets.handle_write_failed();
        assert!(targets.handle_status(&s).is_some());
    }

    #[test]
    fn the_targets_file_is_replaced_whole() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("monitoring/targets.json");
        let groups = vec![TargetGroup {
            targets: vec!["127.0.0.1:9100".into()],
            labels: Labels {
                service: "control".into(),
                kind: "control".into(),
            },
        }];
        write_targets(&path, &groups).expect("write");
        write_targets(&path, &groups[..0]).expect("rewrite");
        let read: Vec<TargetGroup> =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        assert!(read.is_empty());
        let left: Vec<_> = std::fs::read_dir(path.parent().expect("dir"))
            .expect("list")
            .collect();
        assert_eq!(left.len(), 1, "no temporary file left behind");
    }

    #[test]
    fn the_configuration_quotes_paths_and_lists_rules() {
        let config = prometheus_config(
            Path::new("/var/lib/ghost \"stream\"/monitoring/targets.json"),
            &[PathBuf::from("/etc/prometheus/ghost.yml")],
            Duration::from_secs(15),
        );
        assert!(
            config.contains(r#"- files: ["/var/lib/ghost \"stream\"/monitoring/targets.json"]"#),
            "{config}"
        );
        assert!(
            config.contains(r#"rule_files: ["/etc/prometheus/ghost.yml"]"#),
            "{config}"
        );
        assert!(config.contains("scrape_interval: 15s"), "{config}");
        assert_eq!(prometheus_duration(Duration::from_secs(120)), "2m");
        assert_eq!(prometheus_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn the_dashboard_is_json_and_every_panel_queries_the_chosen_prometheus() {
        let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).expect("JSON");
        let panels = dashboard["panels"].as_array().expect("panels");
        let mut ids = std::collections::BTreeSet::new();
        for panel in panels {
            assert!(ids.insert(panel["id"].as_u64()), "ids are unique: {panel}");
            if panel["type"] == "row" {
                continue;
            }
            assert_eq!(panel["datasource"]["uid"], "${datasource}", "{panel}");
            let targets = panel["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{panel}");
            for target in targets {
                assert!(
                    target["expr"].as_str().is_some_and(|e| !e.is_empty()),
                    "{target}"
                );
            }
        }
    }
}

//! Monitoring checked in a real Prometheus (Debian's `prometheus`, with `promtool`): it
//! scrapes a running stack through the configuration `ghost monitoring prometheus` prints,
//! every target up, a relay added by `ghost scale` included; the alert rules pass `promtool
//! check rules` and their unit tests; every metric the rules and the dashboard name exists.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{GHOST, Stack, TEST_TIMEOUT};
use serde::Deserialize;

const MONITORING: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/monitoring");

/// How long Prometheus may take to see a change (its first scrapes, a new target).
const SETTLE: Duration = Duration::from_secs(30);

/// Whether Prometheus and promtool run here; CI (which sets `CI`) must have them, a
/// developer machine may not.
fn prometheus_available() -> bool {
    let runs = |tool: &str| {
        std::process::Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let found = runs("prometheus") && runs("promtool");
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs Prometheus and promtool (the test command installs Debian's prometheus)"
        );
        eprintln!(
            "skipped: prometheus or promtool not installed (the README's test command installs them)"
        );
    }
    found
}

fn monitoring_file(name: &str) -> PathBuf {
    Path::new(MONITORING).join(name)
}

fn run_ok(command: &mut std::process::Command) -> String {
    let out = command.output().expect("run");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{command:?} failed: {text}");
    text
}

#[test]
fn the_rules_pass_promtool_and_each_alert_fires_only_where_it_should() {
    if !prometheus_available() {
        return;
    }
    let rules = monitoring_file("alerts.yml");
    let checked = run_ok(
        std::process::Command::new("promtool")
            .arg("check")
            .arg("rules")
            .arg(&rules),
    );
    eprintln!("promtool check rules: {}", checked.trim());
    let tested = run_ok(
        std::process::Command::new("promtool")
            .arg("test")
            .arg("rules")
            .arg(monitoring_file("alerts_test.yml")),
    );
    eprintln!("promtool test rules: {}", tested.trim());
    // The unit tests cover every alert of the file.
    let text = std::fs::read_to_string(&rules).expect("alerts.yml");
    let tests = std::fs::read_to_string(monitoring_file("alerts_test.yml")).expect("tests");
    for line in text.lines() {
        if let Some(name) = line.trim().strip_prefix("- alert: ") {
            assert!(
                tests.contains(&format!("alertname: {name}")),
                "{name} has no unit test"
            );
        }
    }
    // What `ghost monitoring` prints is the checked file.
    let printed = std::process::Command::new(GHOST)
        .args(["monitoring", "rules"])
        .output()
        .expect("ghost monitoring rules");
    assert!(printed.status.success());
    assert_eq!(
        String::from_utf8_lossy(&printed.stdout).trim_end(),
        text.trim_end()
    );
    let dashboard = std::process::Command::new(GHOST)
        .args(["monitoring", "grafana"])
        .output()
        .expect("ghost monitoring grafana");
    let dashboard: serde_json::Value =
        serde_json::from_slice(&dashboard.stdout).expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "ghost-stream");
}

/// Prometheus, run for one test in a directory of its own; killed when dropped.
struct Prometheus {
    child: tokio::process::Child,
    url: String,
    log: PathBuf,
    http: reqwest::Client,
}

impl Prometheus {
    /// Starts Prometheus on `config` and waits until it is ready. It needs a port of its
    /// own: one the system just handed out is tried, and another if that was taken meanwhile.
    async fn start(config: &Path, dir: &Path) -> Prometheus {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("client");
        let log = dir.join("prometheus.log");
        for _ in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let out = std::fs::File::create(&log).expect("log file");
            let mut child = tokio::process::Command::new("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdin(std::process::Stdio::null())
                .stdout(out.try_clone().expect("log file"))
                .stderr(out)
                .kill_on_drop(true)
                .spawn()
                .expect("start prometheus");
            let url = format!("http://127.0.0.1:{port}");
            let deadline = tokio::time::Instant::now() + SETTLE;
            while tokio::time::Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                let ready = http
                    .get(format!("{url}/-/ready"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ready {
                    return Prometheus {
                        child,
                        url,
                        log,
                        http,
                    };
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let _ = child.kill().await;
        }
        panic!(
            "Prometheus did not start:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str, query: &[(&str, &str)]) -> T {
        let answer: Answer<T> = self
            .http
            .get(format!("{}{path}", self.url))
            .query(query)
            .send()
            .await
            .expect("ask Prometheus")
            .json()
            .await
            .expect("Prometheus' JSON");
        assert_eq!(
            answer.status, "success",
            "{path} {query:?}: {:?}",
            answer.error
        );
        answer.data.expect("data")
    }

    async fn targets(&self) -> Vec<Target> {
        self.get::<TargetsData>("/api/v1/targets", &[("state", "active")])
            .await
            .active_targets
    }

    /// Series of an instant query (its result's length).
    async fn series(&self, query: &str) -> usize {
        self.get::<QueryData>("/api/v1/query", &[("query", query)])
            .await
            .result
            .as_array()
            .map_or(0, Vec::len)
    }

    /// Polls `check` until it holds; panics with what it last saw and Prometheus' log.
    async fn wait_for<T: std::fmt::Debug>(
        &self,
        what: &str,
        mut check: impl AsyncFnMut(&Prometheus) -> (bool, T),
    ) -> T {
        let deadline = tokio::time::Instant::now() + SETTLE;
        loop {
            let (done, seen) = check(self).await;
            if done {
                return seen;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "{what}: not within {SETTLE:?}; last seen {seen:#?}\nPrometheus log:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

#[derive(Debug, Deserialize)]
struct Answer<T> {
    status: String,
    data: Option<T>,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TargetsData {
    #[serde(rename = "activeTargets")]
    active_targets: Vec<Target>,
}

#[derive(Debug, Clone, Deserialize)]
struct Target {
    labels: BTreeMap<String, String>,
    health: String,
    #[serde(rename = "lastError")]
    last_error: String,
}

impl Target {
    fn label(&self, name: &str) -> &str {
        self.labels.get(name).map_or("", String::as_str)
    }
}

#[derive(Debug, Deserialize)]
struct QueryData {
    result: serde_json::Value,
}

#[derive(Debug, Deserialize)]
struct RulesData {
    groups: Vec<RuleGroup>,
}

#[derive(Debug, Deserialize)]
struct RuleGroup {
    rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
struct Rule {
    name: String,
    health: String,
    #[serde(rename = "type")]
    kind: String,
}

/// Every target up, and the services they are for by name.
fn up(targets: &[Target]) -> (bool, BTreeMap<String, String>) {
    let all_up = !targets.is_empty() && targets.iter().all(|t| t.health == "up");
    let seen = targets
        .iter()
        .map(|t| {
            (
                t.label("service").to_string(),
                format!("{} {} {}", t.label("instance"), t.health, t.last_error),
            )
        })
        .collect();
    (all_up, seen)
}

/// Every metric name `text` mentions.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("ghost_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_every_service_and_a_relay_added_later() {
    if !prometheus_available() {
        return;
    }
    tokio::time::timeout(TEST_TIMEOUT, async {
        let stack = Stack::up(&["--relays", "2", "--max-relays", "4"]);
        let dir = tempfile::Builder::new()
            .prefix("ghost-prometheus-")
            .tempdir()
            .expect("temp dir");
        let config = dir.path().join("prometheus.yml");
        let rules = monitoring_file("alerts.yml");
        let printed = stack
            .tokio_ghost()
            .args(["monitoring", "prometheus", "--scrape-interval", "1s", "--rules"])
            .arg(&rules)
            .output()
            .await
            .expect("ghost monitoring prometheus");
        assert!(
            printed.status.success(),
            "{}",
            String::from_utf8_lossy(&printed.stderr)
        );
        std::fs::write(&config, &printed.stdout).expect("write the configuration");
        run_ok(
            std::process::Command::new("promtool")
                .arg("check")
                .arg("config")
                .arg(&config),
        );
        let prometheus = Prometheus::start(&config, dir.path()).await;

        // Every service and the supervisor, at the addresses `ghost status` reports.
        let seen = prometheus
            .wait_for("every target up", async |p: &Prometheus| up(&p.targets().await))
            .await;
        let services: BTreeSet<&str> = seen.keys().map(String::as_str).collect();
        assert_eq!(
            services,
            BTreeSet::from(["control", "gateway", "ingest", "relay-1", "relay-2", "supervisor"])
        );
        let status = stack.status().await;
        let targets = prometheus.targets().await;
        for service in &status.services {
            let addrs = &service.instance.as_ref().expect("running").addrs;
            let metrics = addrs
                .get(&api::status::Role::Ops)
                .or_else(|| addrs.get(&api::status::Role::Http))
                .expect("a metrics address");
            let target = targets
                .iter()
                .find(|t| t.label("service") == service.name)
                .expect("a target");
            assert_eq!(target.label("instance"), metrics.to_string());
            assert_eq!(target.label("kind"), service.kind.as_str());
            assert_eq!(target.label("job"), "ghost");
        }

        // A relay added later becomes a target of its own, with no change to Prometheus.
        let scaled = stack
            .tokio_ghost()
            .args(["scale", "relays", "3"])
            .output()
            .await
            .expect("ghost scale");
        assert!(scaled.status.success(), "{}", String::from_utf8_lossy(&scaled.stderr));
        let seen = prometheus
            .wait_for("relay-3 a target, every target up", async |p: &Prometheus| {
                let targets = p.targets().await;
                let (all_up, seen) = up(&targets);
                (all_up && seen.contains_key("relay-3") && targets.len() == 7, seen)
            })
            .await;
        eprintln!("Prometheus' targets for a stack with three relays (job instance health):");
        let mut targets = prometheus.targets().await;
        targets.sort_by(|a, b| a.label("service").cmp(b.label("service")));
        for t in &targets {
            eprintln!(
                "  {} {} {} (service={}, kind={})",
                t.label("job"),
                t.label("instance"),
                t.health,
                t.label("service"),
                t.label("kind")
            );
        }
        assert_eq!(seen.len(), 7, "{seen:#?}");

        // The supervisor's series about a service keep that service's labels.
        prometheus
            .wait_for("relay-3's restarts under its own labels", async |p: &Prometheus| {
                let n = p
                    .series(r#"ghost_supervisor_service_restarts_total{service="relay-3",kind="relay"}"#)
                    .await;
                (n == 1, n)
            })
            .await;

        // Every metric the rules and the dashboard name is one the stack exports.
        let rules_text = std::fs::read_to_string(&rules).expect("alerts.yml");
        let dashboard_text =
            std::fs::read_to_string(monitoring_file("dashboard.json")).expect("dashboard.json");
        let names = metric_names(&format!("{rules_text}\n{dashboard_text}"));
        assert!(names.len() > 15, "{names:?}");
        let missing = prometheus
            .wait_for("every metric named in the rules and the dashboard", async |p: &Prometheus| {
                let mut missing = Vec::new();
                for name in &names {
                    if p.series(&format!(r#"count({{__name__="{name}"}})"#)).await == 0 {
                        missing.push(name.clone());
                    }
                }
                (missing.is_empty(), missing)
            })
            .await;
        assert!(missing.is_empty());

        // Prometheus loaded the rules and evaluates each without error; none fires on a
        // healthy stack.
        let rules_seen = prometheus
            .wait_for("every rule evaluated", async |p: &Prometheus| {
                let data: RulesData = p.get("/api/v1/rules", &[]).await;
                let rules: Vec<(String, String, String)> = data
                    .groups
                    .into_iter()
                    .flat_map(|g| g.rules)
                    .map(|r| (r.name, r.kind, r.health))
                    .collect();
                let ok = rules.len() == 6 && rules.iter().all(|(_, _, health)| health == "ok");
                (ok, rules)
            })
            .await;
        assert!(rules_seen.iter().all(|(_, kind, _)| kind == "alerting"));
        assert_eq!(prometheus.series("ALERTS").await, 0, "an alert fires on a healthy stack");

        // Each of the dashboard's queries is one Prometheus answers.
        let dashboard: serde_json::Value =
            serde_json::from_str(&dashboard_text).expect("dashboard JSON");
        let mut queries = 0;
        for panel in dashboard["panels"].as_array().expect("panels") {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().expect("expr");
                let expr = expr.replace("$__rate_interval", "1m");
                prometheus.series(&expr).await;
                queries += 1;
            }
        }
        eprintln!(
            "monitoring: {} targets up, {} metrics named by rules and dashboard all exported, 6 rules evaluated, {queries} dashboard queries answered",
            targets.len(),
            names.len()
        );
    })
    .await
    .expect("test timed out");
}

//! The process runtime: each service is a child process of the supervisor. The default
//! where no Docker engine answers, and what tests of the supervisor's logic use.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;

use api::ready::Ready;
use api::status::{Kind, Usage};

use super::{Error, Event, Handle, Instance, Limits, Output, Result, Runtime};
use crate::logfile::{self, Log, LogFile, Rotation};
use crate::services::Spec;
use crate::services::{self, Audience, File, Listen, Site};
use crate::stack::StateDir;

/// How long a service may take to announce readiness.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a stopped service gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// Runs services as local processes, binaries from `bin_dir`, logs into the state
/// directory's `logs/`.
pub struct ProcessRuntime {
    bin_dir: PathBuf,
    state: StateDir,
    events: std::sync::Mutex<Option<mpsc::Sender<Event>>>,
    rotation: Rotation,
}

impl ProcessRuntime {
    /// A runtime taking binaries from `bin_dir`, with the stack's files in `state`.
    pub fn new(bin_dir: PathBuf, state: StateDir) -> ProcessRuntime {
        ProcessRuntime {
            bin_dir,
            state,
            events: std::sync::Mutex::new(None),
            rotation: Rotation {
                max_size: Limits::LOG_MAX_SIZE,
                max_files: Limits::LOG_MAX_FILES,
            },
        }
    }

    /// The same runtime, each service's log rotated by `limits`' log bounds.
    pub fn with_limits(mut self, limits: Limits) -> ProcessRuntime {
        self.rotation = Rotation {
            max_size: limits.log_max_size,
            max_files: limits.log_max_files,
        };
        self
    }
}

/// Processes share the host's network: services reach each other on loopback at their host
/// ports, and read the state directory where it is.
impl Site for ProcessRuntime {
    fn bind(&self, spec: &Spec, listen: &Listen) -> String {
        let ip = if spec.public && listen.public {
            Ipv4Addr::UNSPECIFIED
        } else {
            Ipv4Addr::LOCALHOST
        };
        format!("{ip}:{}", spec.port(listen.role))
    }

    fn peer(&self, spec: &Spec, kind: Kind, _listen: &Listen) -> String {
        format!("{}:{}", Ipv4Addr::LOCALHOST, spec.peer_port(kind))
    }

    fn file(&self, file: File) -> String {
        file.path_in(&self.state).display().to_string()
    }

    fn advertise(&self, spec: &Spec, listen: &Listen, audience: Audience) -> Option<String> {
        let host = match audience {
            Audience::Services => None,
            Audience::Viewers => spec.advertise_host.as_deref(),
        };
        // An ephemeral port is only known once bound: the service announces it itself,
        // with the host viewers use when there is one.
        let port = spec.port(listen.role);
        if port == 0 {
            return host.map(str::to_string);
        }
        let loopback = Ipv4Addr::LOCALHOST.to_string();
        Some(format!("{}:{port}", host.unwrap_or(&loopback)))
    }
}

/// Where the output of `service` goes (`logs/relay-2.log`, rotated into `relay-2.log.1` and
/// on, see [`logfile`]); `supervisor` names the daemon's own log.
pub fn log_path(state: &StateDir, service: &str) -> PathBuf {
    state.logs().join(format!("{service}.log"))
}

fn signal(pid: u32, sig: Signal) -> Result<()> {
    let pid = i32::try_from(pid).map_err(Error::PidOutOfRange)?;
    kill(Pid::from_raw(pid), sig).map_err(|source| Error::Signal {
        pid,
        signal: sig,
        source,
    })
}

/// Whether process `pid` exists and has not exited (a zombie nobody reaped yet is dead).
pub fn alive(pid: u32) -> bool {
    if !i32::try_from(pid).is_ok_and(|p| kill(Pid::from_raw(p), None).is_ok()) {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => true,
    }
}

/// CPU seconds and RSS of a process, from /proc.
pub fn proc_usage(pid: u32) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start past the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let rss_pages: u64 = fields.get(21)?.parse().ok()?;
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u64;
    Some(Usage {
        cpu_s: (utime + stime) / ticks,
        rss_bytes: rss_pages * page,
    })
}

#[async_trait::async_trait]
impl Runtime for ProcessRuntime {
    fn backend(&self) -> super::Backend {
        super::Backend::Process
    }

    async fn prepare(
        &self,
        events: mpsc::Sender<Event>,
        _progress: &crate::runtime::Progress,
    ) -> Result<()> {
        let logs = self.state.logs();
        std::fs::create_dir_all(&logs).map_err(Error::io("creating", &logs))?;
        *self.events.lock().unwrap_or_else(|e| e.into_inner()) = Some(events);
        Ok(())
    }

    fn internal_ip(&self) -> std::net::IpAddr {
        std::net::Ipv4Addr::LOCALHOST.into()
    }

    async fn adopt(&self, _spec: &Spec, _generation: u64) -> Result<Option<Instance>> {
        // Local processes are not adopted: `ghost down` stops what an earlier supervisor left.
        Ok(None)
    }

    async fn start(&self, spec: &Spec, generation: u64) -> Result<Instance> {
        let events = self
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(Error::NotPrepared)?;
        let binary_name = services::service(spec.kind).binary;
        let binary = self.bin_dir.join(binary_name);
        if !binary.exists() {
            return Err(Error::MissingBinary {
                binary: binary_name,
                dir: self.bin_dir.clone(),
            });
        }
        // The service's output goes through the supervisor into a log rotated by size; its
        // stderr (the log lines) is copied from the start, its stdout once it is ready.
        let log_path = log_path(&self.state, &spec.name);
        let log = Log::new(
            LogFile::open(&log_path, self.rotation).map_err(Error::io("opening", &log_path))?,
        );
        let mut child = Command::new(&binary)
            .args(
                services::args(spec, self).map_err(|source| Error::CommandLine {
                    name: spec.name.clone(),
                    source,
                })?,
            )
            .env("GHOST_LOG_FORMAT", "text")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(Error::io("starting", &binary))?;
        let unexpected = |what: &str| Error::Unexpected(what.to_string());
        let pid = child.id().ok_or_else(|| unexpected("child has no pid"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| unexpected("child has no stdout"))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| unexpected("child has no stderr"))?;
        tokio::spawn(logfile::copy_lines(stderr, log.clone()));
        let mut lines = BufReader::new(stdout).lines();

        let ready = async {
            while let Some(line) = lines.next_line().await? {
                if let Some(ready) = Ready::parse(&line) {
                    return Ok::<_, std::io::Error>(Some(ready));
                }
            }
            Ok(None)
        };
        let ready = tokio::select! {
            r = tokio::time::timeout(READY_TIMEOUT, ready) => r,
            status = child.wait() => {
                let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                return Err(Error::Exited {
                    name: spec.name.clone(),
                    status: Some(status),
                    output: Output::Log(log_path),
                });
            }
        };
        let Ok(Ok(Some(ready))) = ready else {
            let _ = child.start_kill();
            return Err(Error::NotReady {
                name: spec.name.clone(),
                timeout: READY_TIMEOUT,
                output: Output::Log(log_path),
            });
        };
        let addrs = ready
            .addrs
            .into_iter()
            .map(|(role, addr)| (role, services::loopback_if_unspecified(addr)))
            .collect();
        let name = spec.name.clone();
        // Keep draining stdout (into the log) so the child never blocks on it.
        tokio::spawn(logfile::copy_lines(lines.into_inner(), log));
        tokio::spawn(async move {
            let status = match child.wait().await {
                Ok(s) => s.to_string(),
                Err(e) => e.to_string(),
            };
            let _ = events
                .send(Event::Exited {
                    name,
                    generation,
                    status,
                })
                .await;
        });
        Ok(Instance {
            name: spec.name.clone(),
            kind: spec.kind,
            addrs,
            generation,
            handle: Handle::Process { pid },
        })
    }

    async fn stop(&self, instance: &Instance) -> Result<()> {
        let Handle::Process { pid } = instance.handle else {
            return Ok(());
        };
        if signal(pid, Signal::SIGTERM).is_err() {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + STOP_GRACE;
        while alive(pid) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if alive(pid) {
            let _ = signal(pid, Signal::SIGKILL);
        }
        Ok(())
    }

    async fn kill(&self, instance: &Instance) -> Result<()> {
        match instance.handle {
            Handle::Process { pid } => signal(pid, Signal::SIGKILL),
            _ => Ok(()),
        }
    }

    async fn usage(&self, instance: &Instance) -> Option<Usage> {
        proc_usage(instance.pid()?)
    }

    async fn cleanup(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {

    use api::status::Role;

    use super::*;

    fn spec(kind: Kind, index: u32, ports: &[(Role, u16)]) -> Spec {
        let supervisor = "127.0.0.1:7071".parse().expect("addr");
        Spec::for_tests(kind, index, ports, false, supervisor)
    }

    fn args(spec: &Spec) -> Vec<String> {
        let runtime = ProcessRuntime::new("bin".into(), StateDir::new("state"));
        services::args(spec, &runtime).expect("a command line")
    }

    #[test]
    fn command_lines_are_the_services_flags() {
        let control = spec(Kind::Control, 0, &[(Role::Grpc, 7000), (Role::Ops, 9100)]);
        assert_eq!(
            args(&control),
            [
                "--listen",
                "127.0.0.1:7000",
                "--ops-listen",
                "127.0.0.1:9100",
                "--ticket-key-file",
                "state/ticket.key",
                "--supervisor",
                "http://127.0.0.1:7071",
                "--tls-dir",
                "state/tls/control",
            ]
        );
        let ingest = spec(
            Kind::Ingest,
            0,
            &[(Role::Quic, 4433), (Role::Rtmp, 1935), (Role::Ops, 9101)],
        );
        assert_eq!(
            args(&ingest),
            [
                "--listen",
                "127.0.0.1:4433",
                "--rtmp-listen",
                "127.0.0.1:1935",
                "--ops-listen",
                "127.0.0.1:9101",
                "--control",
                "http://127.0.0.1:7000",
                "--tls-dir",
                "state/tls/ingest",
                "--advertise",
                "127.0.0.1:4433",
                "--keys-dir",
                "state/keys",
            ]
        );
        let mut relay = spec(Kind::Relay, 2, &[(Role::Quic, 4501), (Role::Ops, 9202)]);
        relay.public = true;
        relay.advertise_host = Some("live.example".into());
        assert_eq!(
            args(&relay),
            [
                "--listen",
                "0.0.0.0:4501",
                "--ops-listen",
                "127.0.0.1:9202",
                "--control",
                "http://127.0.0.1:7000",
                "--ingest",
                "127.0.0.1:4433",
                "--id",
                "relay-2",
                "--capacity",
                "50",
                "--congestion",
                "cubic",
                "--tls-dir",
                "state/tls/relay",
                "--ticket-key-file",
                "state/ticket.key",
                "--advertise",
                "live.example:4501",
            ]
        );
        let gateway = spec(Kind::Gateway, 0, &[(Role::Http, 8080)]);
        assert_eq!(
            args(&gateway),
            [
                "--listen",
                "127.0.0.1:8080",
                "--control",
                "http://127.0.0.1:7000",
                "--tls-dir",
                "state/tls/gateway",
            ]
        );
    }

    #[test]
    fn ingest_requires_keys_when_the_stack_does() {
        let mut ingest = spec(Kind::Ingest, 0, &[(Role::Quic, 4433), (Role::Ops, 9101)]);
        ingest.require_keys = true;
        let args = args(&ingest);
        assert_eq!(args.last().map(String::as_str), Some("--require-keys"));
        assert_eq!(args.iter().filter(|a| *a == "--require-keys").count(), 1);
        // Only ingest takes publishers.
        for (kind, index) in [(Kind::Control, 0), (Kind::Relay, 1), (Kind::Gateway, 0)] {
            let mut other = spec(kind, index, &[]);
            other.require_keys = true;
            let args = self::args(&other);
            assert!(
                !args.iter().any(|a| a.contains("keys")),
                "{kind:?}: {args:?}"
            );
        }
    }

    #[test]
    fn the_gateway_serves_https_only_on_a_stack_with_a_public_certificate() {
        let mut gateway = spec(Kind::Gateway, 0, &[(Role::Http, 80), (Role::Https, 443)]);
        gateway.public = true;
        gateway.advertise_host = Some("ghost.example.com".into());
        let plain = args(&gateway);
        assert!(
            !plain
                .iter()
                .any(|a| a.contains("https") || a.contains("acme")),
            "{plain:?}"
        );
        gateway.https = true;
        let secure = args(&gateway);
        for pair in [
            ["--https-listen", "0.0.0.0:443"],
            ["--https-advertise", "ghost.example.com:443"],
            ["--acme-challenges", "state/acme/challenges"],
        ] {
            assert!(
                secure.windows(2).any(|w| w == pair),
                "{pair:?} in {secure:?}"
            );
        }
        // An ephemeral HTTPS port: the gateway adds the port it bound to the name.
        gateway.ports.insert(Role::Https, 0);
        let ephemeral = args(&gateway);
        assert!(
            ephemeral
                .windows(2)
                .any(|w| w == ["--https-advertise", "ghost.example.com"]),
            "{ephemeral:?}"
        );
    }

    #[test]
    fn an_ephemeral_port_is_left_for_the_service_to_announce() {
        let relay = spec(Kind::Relay, 1, &[(Role::Quic, 0), (Role::Ops, 0)]);
        let args = args(&relay);
        assert!(!args.iter().any(|a| a == "--advertise"), "{args:?}");
        assert!(args.windows(2).any(|w| w == ["--listen", "127.0.0.1:0"]));
    }
}

//! The `ghost` command line's flags and subcommands (clap), a stable interface, and the
//! supervisor's settings they make. [`crate::config`] layers ghost.toml and `GHOST_*` under
//! them; [`crate::cli`] runs them.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};

use crate::daemon::RuntimeChoice;
use crate::exit::{self, Exit};
use crate::keys::KeysCmd;
use clients::bench;
use orchestrator::actor::{Ports, Settings};
use orchestrator::runtime;
use orchestrator::stack::StateDir;

/// Ghost Stream: live streams that exist only while they are live.
#[derive(Debug, Parser)]
#[command(name = "ghost", version, about)]
pub struct Cli {
    /// The stack's state directory (certificates, keys, logs, stack.json).
    #[arg(long, global = true, env = "GHOST_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// The stack's CA certificate, to verify ingest and relays (default: the state
    /// directory's tls/ca.pem). From another machine, copy the server's one; without it,
    /// `watch` verifies the relay by the certificate hash the viewer gateway gives.
    #[arg(long, global = true, env = "GHOST_CA")]
    pub ca: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Cmd,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Brings the stack up (foreground; -d to return once it is ready).
    Up(UpArgs),
    /// The supervisor daemon itself (what `ghost up -d` starts).
    #[command(hide = true)]
    Daemon(UpArgs),
    /// Stops everything `ghost up` started.
    Down,
    /// Services, relays and streams.
    Status {
        /// JSON, as /api/status serves it.
        #[arg(long)]
        json: bool,
    },
    /// Live streams.
    Streams {
        /// JSON array.
        #[arg(long)]
        json: bool,
        /// Viewer gateway URL (default: the running stack's).
        #[arg(long, env = "GHOST_GATEWAY")]
        gateway: Option<String>,
    },
    /// Every service's log, whatever the runtime, prefixed by service (-f follows).
    Logs(crate::logs::Args),
    /// Goes live.
    Publish(PublishArgs),
    /// Watches a stream.
    Watch(WatchArgs),
    /// Sets the number of relays.
    Scale {
        /// What to scale.
        #[arg(value_enum)]
        what: ScaleTarget,
        /// How many.
        count: u32,
    },
    /// Stream keys for publishing (required on a --public stack).
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Breaks things on purpose.
    #[command(subcommand)]
    Chaos(ChaosCmd),
    /// Load tests against the running stack.
    #[command(subcommand)]
    Bench(BenchCmd),
    /// Service images.
    #[command(subcommand)]
    Images(ImagesCmd),
    /// Prints a completion script for SHELL: `ghost completions bash >
    /// /usr/share/bash-completion/completions/ghost` (zsh: `_ghost` in a directory of
    /// `$fpath`; fish: `ghost.fish` in `vendor_completions.d`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Prints the manual page (roff): `ghost man > ghost.1 && man ./ghost.1`.
    Man,
    /// ghost.toml: the settings `ghost up` runs with, and a file of the defaults.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Monitoring: a Prometheus scrape configuration for the stack, alert rules, a Grafana
    /// dashboard.
    #[command(subcommand)]
    Monitoring(crate::monitoring::MonitoringCmd),
}

/// What `ghost scale` scales. Relays are the one service with more than one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScaleTarget {
    /// The relays, from 1 to the stack's `--max-relays`.
    Relays,
}

/// `ghost images` subcommands.
#[derive(Debug, Subcommand)]
pub enum ImagesCmd {
    /// Builds the four service images into the local Docker Engine, from the static binaries
    /// beside `ghost` (nothing is pulled). Prints the image references.
    Build {
        /// Directory of the service binaries (default: beside `ghost`).
        #[arg(long, env = "GHOST_BIN_DIR")]
        bin_dir: Option<PathBuf>,
    },
}

/// `ghost up` flags.
#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// Return once the stack is ready (the supervisor keeps running in the background).
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// The settings file (default: ghost.toml in the state directory, where there is one).
    /// Every flag below is also a key there, and a GHOST_* variable; flags win over
    /// variables, variables over the file.
    #[arg(short = 'c', long, env = "GHOST_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where services run: Docker containers when an engine answers (auto), or local
    /// processes.
    #[arg(long, value_enum, default_value = "auto")]
    pub runtime: RuntimeChoice,
    /// Relays to start.
    #[arg(long, default_value_t = 2)]
    pub relays: u32,
    /// Relays at most, when scaling on demand.
    #[arg(long, default_value_t = 8)]
    pub max_relays: u32,
    /// Viewers each relay admits at most.
    #[arg(long, default_value_t = 200)]
    pub relay_capacity: u32,
    /// Congestion controller of the relays' QUIC connections to viewers: bbr, cubic or
    /// newreno (see the README's "QUIC or TCP" for why bbr is the default).
    #[arg(long, value_enum, default_value_t = transport::quic::Congestion::FOR_VIEWERS)]
    pub relay_congestion: transport::quic::Congestion,
    /// Bind ingest, relays, the gateway and the status page on all addresses (internal APIs
    /// stay on loopback; admin actions stay loopback-only), and require stream keys.
    #[arg(long)]
    pub public: bool,
    /// Host name viewers use to reach relays (with --public).
    #[arg(long)]
    pub advertise_host: Option<String>,
    /// Admit only publishers presenting the stream key of their stream name (`ghost keys
    /// add NAME`). Implied by --public.
    #[arg(long)]
    pub require_keys: bool,
    /// Use ephemeral ports everywhere instead of the defaults (several stacks on one host).
    #[arg(long)]
    pub ephemeral_ports: bool,
    /// A relay added on demand is drained and removed after having no viewer this long.
    #[arg(long, default_value = "60s")]
    pub scale_down_after: humantime::Duration,
    /// Directory of the service binaries (default: beside `ghost`).
    #[arg(long, env = "GHOST_BIN_DIR")]
    pub bin_dir: Option<PathBuf>,
    /// The relays' certificate chain (PEM), from a public CA such as Let's Encrypt, for the
    /// host name viewers use: browsers then verify relays by name. Without it, relays get
    /// short-lived certificates from the stack's own CA, which browsers verify by hash.
    #[arg(long, requires = "tls_key", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The key of `--tls-cert` (PEM).
    #[arg(long, requires = "tls_cert", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Obtain a certificate browsers trust for --advertise-host (a DNS name or a bare IP
    /// address) from an ACME CA by the http-01 challenge on port 80, before the stack starts,
    /// and renew it with a third of its lifetime left. With --public.
    #[arg(long, requires = "advertise_host", conflicts_with = "tls_cert")]
    pub acme: bool,
    /// The ACME CA's directory URL.
    #[arg(long, requires = "acme", value_name = "URL", default_value = orchestrator::acme::LETS_ENCRYPT)]
    pub acme_directory: String,
    /// A contact e-mail address for the ACME account (expiry notices).
    #[arg(long, requires = "acme", value_name = "ADDRESS")]
    pub acme_email: Option<String>,
    /// The certificate profile to ask for. Default: `shortlived` for an IP address (how Let's
    /// Encrypt issues those, about 160 hours), the CA's default for a name; "" for none.
    #[arg(long, requires = "acme", value_name = "NAME")]
    pub acme_profile: Option<String>,
    /// An extra root certificate (PEM) to trust for the ACME CA's own API: a test CA.
    #[arg(long, requires = "acme", value_name = "FILE")]
    pub acme_root: Option<PathBuf>,
    /// The viewer gateway's plain-HTTP port. Default 8080; 80 on a public stack with a
    /// certificate (--acme, --tls-cert), where it answers ACME challenges and sends browsers
    /// to HTTPS.
    #[arg(long, value_name = "PORT")]
    pub http_port: Option<u16>,
    /// The viewer gateway's HTTPS port, on a public stack with a certificate (default 443).
    #[arg(long, value_name = "PORT")]
    pub https_port: Option<u16>,
    /// Bounds on containers and logs.
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// `ghost up` flags bounding what the services take of the host. Sizes are bytes with a
/// unit: `256MiB`, `10MB`, `1GiB`.
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Memory of each relay's container (Docker); past it the kernel kills the relay and
    /// the supervisor replaces it. Default: 64 MiB plus 512 KiB per viewer of
    /// --relay-capacity (164 MiB at 200).
    #[arg(long, value_parser = size, value_name = "SIZE")]
    pub relay_memory: Option<u64>,
    /// Memory of each other container: control, ingest, gateway (Docker).
    #[arg(long, default_value = "256MiB", value_parser = size, value_name = "SIZE")]
    pub container_memory: u64,
    /// Processes and threads in each container (Docker).
    #[arg(long, default_value_t = runtime::Limits::PIDS)]
    pub container_pids: u32,
    /// Each log (every service's and the supervisor's; Docker's json-file logs too) is
    /// rotated at this size.
    #[arg(long, default_value = "10MiB", value_parser = size, value_name = "SIZE")]
    pub log_max_size: u64,
    /// Files kept of each log, the one being written included.
    #[arg(long, default_value_t = runtime::Limits::LOG_MAX_FILES)]
    pub log_max_files: u32,
}

impl LimitArgs {
    /// These flags as `ghost up` takes them, for the daemon's own command line.
    pub fn to_args(&self) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(m) = self.relay_memory {
            a.extend(["--relay-memory".into(), format!("{m}B")]);
        }
        a.extend([
            "--container-memory".into(),
            format!("{}B", self.container_memory),
            "--container-pids".into(),
            self.container_pids.to_string(),
            "--log-max-size".into(),
            format!("{}B", self.log_max_size),
            "--log-max-files".into(),
            self.log_max_files.to_string(),
        ]);
        a
    }

    /// The limits, checked: a clear usage error for a bound no service could run within.
    pub fn limits(&self, relay_capacity: u32) -> Result<runtime::Limits> {
        const MIN_MEMORY: u64 = 32 << 20;
        let relay_memory = self
            .relay_memory
            .unwrap_or_else(|| runtime::Limits::relay_memory_for(relay_capacity));
        for (flag, value) in [
            ("--relay-memory", relay_memory),
            ("--container-memory", self.container_memory),
        ] {
            if value < MIN_MEMORY {
                return Err(Exit::new(
                    exit::USAGE,
                    format!("{flag} must be at least 32MiB (a service's own runtime needs that)"),
                )
                .into());
            }
        }
        if self.container_pids < 32 {
            return Err(Exit::new(exit::USAGE, "--container-pids must be at least 32").into());
        }
        if self.log_max_size < 1024 {
            return Err(Exit::new(exit::USAGE, "--log-max-size must be at least 1KiB").into());
        }
        if self.log_max_files == 0 {
            return Err(Exit::new(exit::USAGE, "--log-max-files must be at least 1").into());
        }
        Ok(runtime::Limits {
            relay_memory,
            memory: self.container_memory,
            pids: self.container_pids,
            log_max_size: self.log_max_size,
            log_max_files: self.log_max_files,
        })
    }
}

/// A size with a unit (`256MiB`, `10MB`, `1GiB`; a bare number is bytes).
fn size(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("{e} (a size such as 256MiB, 10MB or 1GiB)"))
}

impl UpArgs {
    /// These flags as `ghost up` takes them, for the daemon's own command line.
    pub fn to_args(&self) -> Vec<String> {
        let mut a = vec![
            "--runtime".to_string(),
            format!("{:?}", self.runtime).to_lowercase(),
            "--relays".into(),
            self.relays.to_string(),
            "--max-relays".into(),
            self.max_relays.to_string(),
            "--relay-capacity".into(),
            self.relay_capacity.to_string(),
            "--relay-congestion".into(),
            self.relay_congestion.to_string(),
        ];
        if self.public {
            a.push("--public".into());
        }
        if let Some(h) = &self.advertise_host {
            a.extend(["--advertise-host".into(), h.clone()]);
        }
        if self.require_keys {
            a.push("--require-keys".into());
        }
        if self.ephemeral_ports {
            a.push("--ephemeral-ports".into());
        }
        a.extend([
            "--scale-down-after".into(),
            self.scale_down_after.to_string(),
        ]);
        if let Some(b) = &self.bin_dir {
            a.extend(["--bin-dir".into(), b.display().to_string()]);
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            a.extend([
                "--tls-cert".into(),
                cert.display().to_string(),
                "--tls-key".into(),
                key.display().to_string(),
            ]);
        }
        if self.acme {
            a.extend([
                "--acme".into(),
                "--acme-directory".into(),
                self.acme_directory.clone(),
            ]);
            if let Some(e) = &self.acme_email {
                a.extend(["--acme-email".into(), e.clone()]);
            }
            if let Some(p) = &self.acme_profile {
                a.extend(["--acme-profile".into(), p.clone()]);
            }
            if let Some(r) = &self.acme_root {
                a.extend(["--acme-root".into(), r.display().to_string()]);
            }
        }
        for (flag, port) in [
            ("--http-port", self.http_port),
            ("--https-port", self.https_port),
        ] {
            if let Some(port) = port {
                a.extend([flag.into(), port.to_string()]);
            }
        }
        a.extend(self.limits.to_args());
        a
    }

    /// Where the certificate browsers see comes from.
    pub fn certificate(&self) -> orchestrator::certificate::Source {
        if self.acme {
            orchestrator::certificate::Source::Acme(orchestrator::acme::Settings::new(
                self.advertise_host.as_deref().unwrap_or_default(),
                Some(&self.acme_directory),
                self.acme_email.as_deref(),
                self.acme_profile.as_deref(),
                self.acme_root.as_deref(),
            ))
        } else if self.tls_cert.is_some() {
            orchestrator::certificate::Source::Operator
        } else {
            orchestrator::certificate::Source::Stack
        }
    }
}

/// `ghost publish` flags.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Stream name.
    #[arg(long)]
    pub name: String,
    /// Fragmented MP4 input: a file, or `-` for stdin.
    #[arg(
        long,
        conflicts_with = "synthetic",
        required_unless_present = "synthetic"
    )]
    pub input: Option<String>,
    /// Made-up frames instead of media.
    #[arg(long)]
    pub synthetic: bool,
    /// Synthetic frames per second.
    #[arg(long, default_value_t = 30, requires = "synthetic")]
    pub fps: u32,
    /// Synthetic frame size, bytes.
    #[arg(long, default_value_t = 8000, requires = "synthetic")]
    pub frame_size: usize,
    /// Synthetic frames per group.
    #[arg(long, default_value_t = 60, requires = "synthetic")]
    pub group: u32,
    /// Stop after this long (synthetic).
    #[arg(long, requires = "synthetic")]
    pub duration: Option<humantime::Duration>,
    /// Print one JSON line `{"stream_id":..,"name":..}` once live.
    #[arg(long)]
    pub json: bool,
    /// Ingest address (default: the running stack's).
    #[arg(long, env = "GHOST_INGEST")]
    pub ingest: Option<String>,
    /// The stream key the operator made for NAME (`ghost keys add NAME`), where ingest
    /// requires one. GHOST_STREAM_KEY keeps it out of the process list, where a flag shows.
    #[arg(long, env = "GHOST_STREAM_KEY", hide_env_values = true)]
    pub key: Option<String>,
}

/// `ghost watch` flags.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Stream id or name.
    pub stream: String,
    /// Where the media goes: a file, or `-` for stdout.
    #[arg(long)]
    pub output: Option<String>,
    /// Stop after this long.
    #[arg(long)]
    pub duration: Option<humantime::Duration>,
    /// Print a one-line JSON summary at exit (to stderr when the media goes to stdout).
    #[arg(long)]
    pub json: bool,
    /// Viewer gateway URL (default: the running stack's).
    #[arg(long, env = "GHOST_GATEWAY")]
    pub gateway: Option<String>,
    /// How to reach the relay: `quic` (native), `webtransport` (HTTP/3, as a browser does),
    /// or `websocket` (TCP, as a browser without WebTransport or behind a UDP block does).
    #[arg(long, value_enum, default_value = "quic")]
    pub transport: TransportChoice,
    /// Same as `--transport webtransport` (kept for scripts that use it).
    #[arg(long, conflicts_with = "transport")]
    pub webtransport: bool,
    /// Sleep this long after each frame: a deliberately slow reader (tests).
    #[arg(long, hide = true)]
    pub read_delay: Option<humantime::Duration>,
}

/// How `ghost watch` reaches the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TransportChoice {
    /// Native QUIC (`ghost-view/1`).
    Quic,
    /// WebTransport over HTTP/3.
    Webtransport,
    /// WebSocket over TCP (`ghost-ws.1`).
    Websocket,
}

/// `ghost chaos` subcommands.
#[derive(Debug, Subcommand)]
pub enum ChaosCmd {
    /// Kills relays with SIGKILL, as a crash would.
    KillRelay {
        /// Relay id (e.g. relay-2).
        #[arg(long, conflicts_with = "random")]
        id: Option<String>,
        /// A random relay.
        #[arg(long)]
        random: bool,
        /// How many (with --random).
        #[arg(long, default_value_t = 1)]
        count: u32,
    },
    /// Kills one service with SIGKILL.
    Kill {
        /// Service name: control, ingest, gateway, relay-N.
        service: String,
        /// Keep it down this long before the supervisor may restart it.
        #[arg(long)]
        hold: Option<humantime::Duration>,
    },
}

/// `ghost bench` subcommands.
#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// Many viewers on one stream.
    Fanout(bench::FanoutArgs),
    /// The fan-out benchmark over a matrix of network paths: each carrier, RTT 20 and 100
    /// ms, loss 0 to 5% (and bursty), and a rate cap just above the stream's. Prints a table
    /// and writes lab.json and SVG charts. Needs root (CAP_NET_ADMIN) for the network lab.
    Lab(clients::lab::LabArgs),
}

/// `ghost config` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ConfigCmd {
    /// Prints the settings `ghost up` would run with (given the same flags, environment and
    /// file), and where each value came from: default, file PATH:LINE, env GHOST_X or flag.
    Show(Box<ShowArgs>),
    /// Writes a ghost.toml of the defaults, every key with its help (default: the state
    /// directory's).
    Init {
        /// Where to write it; `-` for standard output.
        #[arg(short = 'c', long, env = "GHOST_CONFIG", value_name = "FILE")]
        config: Option<PathBuf>,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
}

/// `ghost config show` flags: `ghost up`'s, and `--json`.
#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// One JSON object: `file`, and `settings` as `[{"key","value","source"}]`.
    #[arg(long)]
    pub json: bool,
    /// The settings, as `ghost up` takes them.
    #[command(flatten)]
    pub up: UpArgs,
    /// Where each value came from, filled in by [`crate::config::parse`].
    #[arg(skip)]
    pub effective: Effective,
}

/// The settings in effect and where each came from: what `ghost config show --json` prints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Effective {
    /// The file that was read, if any.
    pub file: Option<PathBuf>,
    /// Every key, in the order of `ghost up --help`.
    pub settings: Vec<Setting>,
}

/// One setting in effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Setting {
    /// The key, as in ghost.toml (`relay_capacity`).
    pub key: String,
    /// The value as `ghost up` parses it (`200`, `256MiB`, `true`); none when unset.
    pub value: Option<String>,
    /// Where it came from.
    pub source: Source,
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum Source {
    /// Nothing set it: `ghost up`'s default (or unset).
    Default,
    /// The config file, at this line.
    File {
        /// The file.
        path: PathBuf,
        /// Its line (from 1).
        line: usize,
    },
    /// An environment variable.
    Env {
        /// Its name, `GHOST_…`.
        var: String,
    },
    /// A flag on the command line.
    Flag {
        /// Its name, `--…`.
        flag: String,
    },
}

/// The supervisor's settings from `ghost up`'s flags, or the usage error they make.
pub fn settings(state: &StateDir, args: &UpArgs) -> Result<Settings> {
    if args.relays == 0 || args.relays > args.max_relays {
        return Err(Exit::new(
            exit::USAGE,
            format!(
                "--relays must be between 1 and --max-relays ({})",
                args.max_relays
            ),
        )
        .into());
    }
    if args.relay_capacity == 0 {
        return Err(Exit::new(exit::USAGE, "--relay-capacity must be at least 1").into());
    }
    if args.acme && !args.public {
        return Err(Exit::new(
            exit::USAGE,
            "--acme needs --public: the CA must reach this host, and viewers too",
        )
        .into());
    }
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => beside_ghost()?,
    };
    let mut settings = Settings {
        state: state.clone(),
        relays: args.relays,
        max_relays: args.max_relays,
        relay_capacity: args.relay_capacity,
        relay_congestion: args.relay_congestion,
        public: args.public,
        advertise_host: args.advertise_host.clone(),
        // Strangers reach a public stack: nobody goes live there without a key.
        require_keys: args.require_keys || args.public,
        certificate: args.certificate(),
        ports: if args.ephemeral_ports {
            Ports::EPHEMERAL
        } else {
            Ports::DEFAULT
        },
        bin_dir,
        scale_down_after: *args.scale_down_after,
        limits: args.limits.limits(args.relay_capacity)?,
    };
    // A gateway serving HTTPS keeps plain HTTP where browsers and CAs look for it.
    if settings.https() && !args.ephemeral_ports {
        settings.ports.gateway = Ports::PUBLIC_HTTP;
    }
    if let Some(p) = args.http_port {
        settings.ports.gateway = p;
    }
    if let Some(p) = args.https_port {
        settings.ports.https = p;
    }
    Ok(settings)
}

/// The directory of the running `ghost` binary, where the service binaries are found by
/// default.
pub fn beside_ghost() -> Result<PathBuf> {
    Ok(std::env::current_exe()
        .context("locating the ghost binary")?
        .parent()
        .context("ghost binary has no directory")?
        .to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(args: &[&str]) -> Result<UpArgs, clap::Error> {
        let cli = Cli::try_parse_from([&["ghost", "up"][..], args].concat())?;
        match cli.command {
            Cmd::Up(up) => Ok(up),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn limits_default_from_the_relay_capacity_and_parse_sizes_with_units() {
        let args = up(&[]).expect("parse");
        let limits = args.limits.limits(args.relay_capacity).expect("limits");
        assert_eq!(limits, runtime::Limits::for_capacity(200));
        assert_eq!(limits.relay_memory, (64 << 20) + 200 * (512 << 10));
        assert_eq!(limits.memory, 256 << 20);
        assert_eq!(limits.log_max_size, 10 << 20);

        let args = up(&["--relay-capacity", "400"]).expect("parse");
        let limits = args.limits.limits(args.relay_capacity).expect("limits");
        assert_eq!(limits.relay_memory, (64 << 20) + 400 * (512 << 10));

        let args = up(&[
            "--relay-memory",
            "96MiB",
            "--container-memory",
            "1GiB",
            "--container-pids",
            "100",
            "--log-max-size",
            "64KiB",
            "--log-max-files",
            "2",
        ])
        .expect("parse");
        let limits = args.limits.limits(args.relay_capacity).expect("limits");
        assert_eq!(
            limits,
            runtime::Limits {
                relay_memory: 96 << 20,
                memory: 1 << 30,
                pids: 100,
                log_max_size: 64 << 10,
                log_max_files: 2,
            }
        );
        // The daemon gets the very same limits through its command line.
        let again =
            Cli::try_parse_from([vec!["ghost".to_string(), "up".into()], args.to_args()].concat())
                .expect("the daemon's arguments parse");
        let Cmd::Up(again) = again.command else {
            panic!("not up");
        };
        assert_eq!(
            again.limits.limits(again.relay_capacity).expect("limits"),
            limits
        );
    }

    #[test]
    fn a_bad_limit_is_a_usage_error() {
        let e = up(&["--relay-memory", "lots"]).expect_err("not a size");
        assert!(e.to_string().contains("256MiB"), "{e}");
        for bad in [
            &["--relay-memory", "8MiB"][..],
            &["--container-memory", "1MB"],
            &["--container-pids", "4"],
            &["--log-max-size", "100B"],
            &["--log-max-files", "0"],
        ] {
            let args = up(bad).expect("parse");
            let e = args
                .limits
                .limits(args.relay_capacity)
                .expect_err("refused");
            assert_eq!(exit::code_of(&e), exit::USAGE, "{bad:?}: {e:#}");
        }
    }

    #[test]
    fn the_relays_congestion_controller_reaches_the_daemons_command_line() {
        let args = up(&["--relay-congestion", "bbr"]).expect("parses");
        assert_eq!(args.relay_congestion, transport::quic::Congestion::Bbr);
        let line = args.to_args();
        let again = up(&line.iter().map(String::as_str).collect::<Vec<_>>()).expect("again");
        assert_eq!(again.relay_congestion, transport::quic::Congestion::Bbr);
        assert_eq!(
            up(&[]).expect("default").relay_congestion,
            transport::quic::Congestion::Bbr
        );
        assert!(up(&["--relay-congestion", "vegas"]).is_err());
    }
}

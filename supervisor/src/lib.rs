//! The `ghost` CLI and supervisor daemon.
//!
//! - [`daemon`]: the supervisor, which brings the stack up through a [`runtime`] (local
//!   processes, or Docker), health-checks, restarts and scales it ([`actor`] applies what
//!   [`policy`] decides; [`services`] is the table of services and ports), and serves the
//!   status page and APIs ([`http`]);
//! - [`client`]: the streamer, viewer and load generator;
//! - [`keys`]: `ghost keys`, the operator's stream keys;
//! - [`config`]: ghost.toml and `GHOST_*`, the settings of `ghost up` beside its flags;
//! - [`logfile`]: log files rotated by size (the process runtime's and the daemon's);
//! - [`logs`]: `ghost logs`, every service's log whatever the runtime;
//! - [`monitoring`]: `ghost monitoring`, Prometheus targets, alert rules and a Grafana
//!   dashboard ([`metrics`] is the supervisor's own /metrics);
//! - [`cli`]: the command line, a stable interface ([`exit`] lists its exit codes).

#![forbid(unsafe_code)]

/// `println!` for the CLI's output, which returns the write's error from the enclosing
/// function instead of panicking: a reader that went away (`ghost status | head -1`) ends the
/// command quietly ([`exit::StdoutClosed`]).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*).map_err($crate::exit::stdout_error)?
    }};
}

pub mod acme;
pub mod actor;
pub mod certificate;
pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod exit;
pub mod http;
pub mod keys;
pub mod logfile;
pub mod logs;
pub mod metrics;
pub mod monitoring;
pub mod policy;
pub mod runtime;
pub mod services;
pub mod stack;

//! The `ghost` CLI and supervisor daemon.
//!
//! - [`daemon`]: the supervisor daemon's entry: it runs the [`orchestrator`] (policy, actor,
//!   runtimes, the service table) and serves the status page and APIs ([`http`]);
//! - the streamer, viewer and load generator are the [`clients`] package;
//! - [`keys`]: `ghost keys`, the operator's stream keys;
//! - [`config`]: ghost.toml and `GHOST_*`, the settings of `ghost up` beside its flags;
//! - [`logs`]: `ghost logs`, every service's log whatever the runtime;
//! - [`monitoring`]: `ghost monitoring`, Prometheus targets, alert rules and a Grafana
//!   dashboard;
//! - [`cli`]: the command line, a stable interface ([`args`] are its flags, [`exit`] lists its
//!   exit codes).

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

pub mod args;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod exit;
pub mod http;
pub mod keys;
pub mod logs;
pub mod monitoring;

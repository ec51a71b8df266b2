//! Flags that several service binaries share, declared once and flattened into each
//! service's `Config` (`#[command(flatten)]`), so a flag keeps one name, one environment
//! variable and one meaning across the stack.

use std::path::PathBuf;

use crate::telemetry::LogFormat;

/// Logging, for every service.
#[derive(Debug, Clone, clap::Args)]
pub struct Logging {
    /// Log format: text for people, json (one object per line) for containers and shippers.
    #[arg(long, env = "GHOST_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
}

/// Where control is, for the services that ask it or report to it.
#[derive(Debug, Clone, clap::Args)]
pub struct Control {
    /// Control's gRPC endpoint, http://host:port.
    #[arg(
        long = "control",
        env = "GHOST_CONTROL",
        default_value = "http://127.0.0.1:7000"
    )]
    pub url: String,
}

/// How often ingest and relays report to control; control asks for this interval too.
#[derive(Debug, Clone, clap::Args)]
pub struct Heartbeat {
    /// Heartbeat interval. Control rebuilds its directory from heartbeats after a restart,
    /// so this bounds how long that takes.
    #[arg(
        long = "heartbeat-interval",
        env = "GHOST_HEARTBEAT_INTERVAL",
        default_value = "500ms"
    )]
    pub interval: humantime::Duration,
}

/// The key join tickets are signed with (control) and checked with (relays).
#[derive(Debug, Clone, clap::Args)]
pub struct TicketKey {
    /// File holding the key, shared by control and relays. Without it, control issues empty
    /// tickets and relays check none: both must run with it or both without.
    #[arg(long = "ticket-key-file", env = "GHOST_TICKET_KEY_FILE")]
    pub file: Option<PathBuf>,
}

/// The stack's TLS files, for the QUIC services.
#[derive(Debug, Clone, clap::Args)]
pub struct Tls {
    /// Directory holding the stack's TLS files (ca.pem, server.pem, server.key), made by
    /// `ghost up`.
    #[arg(long = "tls-dir", env = "GHOST_TLS_DIR")]
    pub dir: PathBuf,
}

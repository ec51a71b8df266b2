//! Flags that several service binaries share, declared once and flattened into each
//! service's `Config` (`#[command(flatten)]`), so a flag keeps one name, one environment
//! variable and one meaning across the stack.

use std::net::SocketAddr;
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
#[derive(Debug, Clone, PartialEq, Eq, clap::Args, serde::Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, clap::Args, serde::Serialize)]
pub struct TicketKey {
    /// File holding the key, shared by control and relays. Without it, control issues empty
    /// tickets and relays check none: both must run with it or both without.
    #[arg(long = "ticket-key-file", env = "GHOST_TICKET_KEY_FILE")]
    pub file: Option<PathBuf>,
}

/// The service's TLS files, for the QUIC services.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args, serde::Serialize)]
pub struct Tls {
    /// Directory holding this service's TLS files (ca.pem and its own certificates and
    /// keys), made by `ghost up`. Its client certificate also authenticates its calls to
    /// control.
    #[arg(long = "tls-dir", env = "GHOST_TLS_DIR")]
    pub dir: PathBuf,
}

/// The service's TLS files where they are optional: control and the viewer gateway, which
/// a stack always gives them, and their own tests run without.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args, serde::Serialize)]
pub struct OptionalTls {
    /// Directory holding this service's TLS files (ca.pem and its own certificates and
    /// keys), made by `ghost up`. Without it, calls to and from control are plain and
    /// unauthenticated: only for tests.
    #[arg(long = "tls-dir", env = "GHOST_TLS_DIR")]
    pub dir: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use streamkeys::Flags as Keys;

    use super::*;

    /// Every shared struct flattened into one command, as services combine them: their
    /// argument ids must not collide.
    #[derive(Debug, Parser)]
    struct Config {
        #[command(flatten)]
        logging: Logging,
        #[command(flatten)]
        control: Control,
        #[command(flatten)]
        heartbeat: Heartbeat,
        #[command(flatten)]
        ticket_key: TicketKey,
        #[command(flatten)]
        keys: Keys,
    }

    /// Ingest's combination: the TLS directory and the keys directory side by side.
    #[derive(Debug, Parser)]
    struct WithTls {
        #[command(flatten)]
        tls: Tls,
        #[command(flatten)]
        keys: Keys,
    }

    #[test]
    fn the_shared_flags_fit_in_one_command() {
        use clap::CommandFactory;
        Config::command().debug_assert();
        WithTls::command().debug_assert();
        let c = WithTls::try_parse_from(["t", "--tls-dir", "/t", "--keys-dir", "/k"])
            .expect("both directories");
        assert_eq!(c.tls.dir, PathBuf::from("/t"));
        assert_eq!(c.keys.dir, Some(PathBuf::from("/k")));
    }

    #[test]
    fn keys_flags() {
        let c = Config::try_parse_from(["t"]).expect("no flags");
        assert_eq!(c.keys.dir, None);
        assert!(!c.keys.require);
        let c = Config::try_parse_from(["t", "--keys-dir", "/k", "--require-keys"])
            .expect("both flags");
        assert_eq!(c.keys.dir, Some(PathBuf::from("/k")));
        assert!(c.keys.require);
        let c = Config::try_parse_from(["t", "--keys-dir", "/k"]).expect("dir alone");
        assert!(!c.keys.require);
    }

    #[test]
    fn requiring_keys_needs_a_keys_dir() {
        let err = Config::try_parse_from(["t", "--require-keys"]).expect_err("no dir");
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    }
}

/// The address to announce for a listener bound at `bound`: `advertise` as given when it
/// names a port (`HOST:PORT`, `[V6]:PORT`), `advertise` with the bound port when it is a bare
/// host (a runtime that learns the port only once the service has bound it), else the bound
/// address itself. IPv6 hosts come back in brackets.
pub fn advertised(advertise: Option<&str>, bound: SocketAddr) -> String {
    let Some(advertise) = advertise.map(str::trim).filter(|a| !a.is_empty()) else {
        return bound.to_string();
    };
    if advertise.parse::<SocketAddr>().is_ok() {
        return advertise.to_string();
    }
    if let Ok(ip) = advertise
        .trim_matches(['[', ']'])
        .parse::<std::net::IpAddr>()
    {
        return SocketAddr::new(ip, bound.port()).to_string();
    }
    match advertise.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.parse::<u16>().is_ok() => {
            advertise.to_string()
        }
        _ => format!("{advertise}:{}", bound.port()),
    }
}

/// The address viewers open for an HTTPS listener bound at `bound` and announced as
/// `advertise` (see [`advertised`]): `https://HOST`, with `:PORT` unless it is 443.
pub fn https_url(advertise: Option<&str>, bound: SocketAddr) -> String {
    let addr = advertised(advertise, bound);
    match addr.strip_suffix(":443") {
        Some(host) => format!("https://{host}"),
        None => format!("https://{addr}"),
    }
}

#[cfg(test)]
mod advertised_tests {
    use super::{SocketAddr, advertised, https_url};

    #[test]
    fn an_https_url_names_the_port_unless_it_is_443() {
        let bound: SocketAddr = "0.0.0.0:8443".parse().expect("addr");
        assert_eq!(
            https_url(Some("ghost.test"), bound),
            "https://ghost.test:8443"
        );
        assert_eq!(
            https_url(Some("ghost.test:443"), bound),
            "https://ghost.test"
        );
        assert_eq!(
            https_url(Some("2001:db8::7"), "[::]:443".parse().expect("addr")),
            "https://[2001:db8::7]"
        );
    }

    #[test]
    fn a_bare_host_takes_the_bound_port() {
        let bound = "0.0.0.0:4501".parse().expect("addr");
        assert_eq!(advertised(None, bound), "0.0.0.0:4501");
        assert_eq!(advertised(Some("ghost.test"), bound), "ghost.test:4501");
        assert_eq!(
            advertised(Some("ghost.test:4600"), bound),
            "ghost.test:4600"
        );
        assert_eq!(advertised(Some("203.0.113.7"), bound), "203.0.113.7:4501");
        assert_eq!(advertised(Some("203.0.113.7:9"), bound), "203.0.113.7:9");
        assert_eq!(advertised(Some("2001:db8::1"), bound), "[2001:db8::1]:4501");
        assert_eq!(
            advertised(Some("[2001:db8::1]:9"), bound),
            "[2001:db8::1]:9"
        );
    }
}

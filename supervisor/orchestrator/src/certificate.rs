//! Which certificate a stack serves to browsers, as its `ghost up` said: the stack's own CA
//! (relays pinned by hash, the gateway on plain HTTP at loopback), the operator's
//! (`--tls-cert`), or one from an ACME CA (`--acme`). Nothing of an earlier `ghost up`
//! carries over: a plain `ghost up` after a `--tls-cert` one goes back to the stack's own.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::acme;
use crate::stack::StateDir;

/// Why the certificate a stack is to serve could not be put in place.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operator's certificate files (`--tls-cert`, `--tls-key`) cannot be used: a usage
    /// error, not a failure of the stack ([`Error::is_usage`]).
    #[error("--tls-cert/--tls-key")]
    OperatorFiles(#[source] identity::Error),
    /// An operator's certificate was asked for without its files.
    #[error("an operator's certificate needs its files")]
    NoOperatorFiles,
    /// The plain-HTTP port cannot be bound for the ACME challenge: below 1024, without the
    /// right to.
    #[error(
        "binding port {port}/tcp for the ACME http-01 challenge: {error}. Ports below 1024 \
         need root or the capability to bind them: run `ghost up` as root, give the \
         binary the right (`sudo setcap cap_net_bind_service=+ep $(command -v ghost)`), \
         or, under systemd, AmbientCapabilities=CAP_NET_BIND_SERVICE"
    )]
    PortDenied {
        /// The port.
        port: u16,
        /// The system's error.
        error: std::io::Error,
    },
    /// The plain-HTTP port is held by another program.
    #[error(
        "binding port {port}/tcp for the ACME http-01 challenge: {error}: another program (a \
         web server?) holds it; stop it, or choose the gateway's ports with --http-port \
         and --https-port (a public CA checks port 80 only)"
    )]
    PortTaken {
        /// The port.
        port: u16,
        /// The system's error.
        error: std::io::Error,
    },
    /// The plain-HTTP port cannot be bound for another reason.
    #[error("binding port {port}/tcp for ACME")]
    Bind {
        /// The port.
        port: u16,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// Obtaining or storing ACME's certificate failed.
    #[error(transparent)]
    Acme(#[from] acme::Error),
    /// Installing the certificate for the relays and the gateway failed.
    #[error(transparent)]
    Pki(#[from] identity::Error),
}

impl Error {
    /// Whether the operator named something that cannot be used: a usage error.
    pub fn is_usage(&self) -> bool {
        matches!(self, Error::OperatorFiles(_))
    }

    /// Whether the ACME CA refused or failed the issuance: what asking again later may get
    /// past (see [`acme::Error::is_issuance`]).
    pub fn is_issuance(&self) -> bool {
        matches!(self, Error::Acme(e) if e.is_issuance())
    }
}

/// Where the certificate browsers see comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum Source {
    /// The stack's own CA: relays verified by hash, no HTTPS at the gateway.
    Stack,
    /// The operator's files (`--tls-cert`, `--tls-key`), never renewed here.
    Operator,
    /// An ACME CA, renewed by the supervisor.
    Acme(acme::Settings),
}

impl Source {
    /// A public certificate, which browsers verify by name: the gateway serves HTTPS with
    /// it when the stack is public.
    pub fn is_public(&self) -> bool {
        !matches!(self, Source::Stack)
    }

    /// In words, for `ghost up` and `ghost status`.
    pub fn describe(&self) -> String {
        match self {
            Source::Stack => "the stack's own CA (relays verified by hash)".into(),
            Source::Operator => "the operator's (--tls-cert), verified by name".into(),
            Source::Acme(s) => format!("ACME ({}) for {}", s.directory, s.identifier),
        }
    }
}

/// Puts in place the certificate `source` names, before any service starts: the
/// operator's files, ACME's (obtained now unless one for the same name and CA is held and
/// not yet due for renewal), or the stack's own. For ACME, the challenge is served on
/// `http_port` (all addresses on a public stack) by this process, since nothing else runs
/// yet. Returns the certificate's end, where known.
pub async fn prepare(
    state: &StateDir,
    source: &Source,
    operator: Option<(&Path, &Path)>,
    public: bool,
    http_port: u16,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Result<Option<SystemTime>, Error> {
    let pki = state.pki();
    match source {
        Source::Stack => {
            pki.use_own(SystemTime::now())?;
            Ok(None)
        }
        Source::Operator => {
            let (cert, key) = operator.ok_or(Error::NoOperatorFiles)?;
            pki.install_relay(cert, key).map_err(Error::OperatorFiles)?;
            Ok(None)
        }
        Source::Acme(settings) => {
            let files = state.acme();
            let held = files
                .current(settings)
                .filter(|c| !c.due(SystemTime::now()));
            let certificate = match held {
                Some(c) => {
                    progress(&format!(
                        "certificate for {} held, valid until {}",
                        settings.identifier,
                        humantime::format_rfc3339_seconds(c.not_after)
                    ));
                    c
                }
                None => {
                    let ip = if public {
                        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
                    } else {
                        IpAddr::V4(Ipv4Addr::LOCALHOST)
                    };
                    let listener = bind_challenge_port(ip, http_port).await?;
                    files.create()?;
                    let stop = tokio_util::sync::CancellationToken::new();
                    let serving = tokio::spawn(acme::serve_challenges(
                        listener,
                        files.challenges(),
                        stop.clone(),
                    ));
                    let started = std::time::Instant::now();
                    let obtained = acme::obtain(settings, &files, http_port, progress).await;
                    stop.cancel();
                    let _ = tokio::time::timeout(Duration::from_secs(2), serving).await;
                    let c = obtained?;
                    progress(&format!(
                        "certificate for {} issued in {:.1} s, valid until {}",
                        settings.identifier,
                        started.elapsed().as_secs_f64(),
                        humantime::format_rfc3339_seconds(c.not_after)
                    ));
                    c
                }
            };
            pki.install_public(&certificate.cert_pem, &certificate.key_pem)?;
            Ok(Some(certificate.not_after))
        }
    }
}

/// The plain-HTTP port, bound for the challenge: a clear word when it cannot be.
async fn bind_challenge_port(ip: IpAddr, port: u16) -> Result<tokio::net::TcpListener, Error> {
    tokio::net::TcpListener::bind((ip, port))
        .await
        .map_err(|error| match error.kind() {
            std::io::ErrorKind::PermissionDenied => Error::PortDenied { port, error },
            std::io::ErrorKind::AddrInUse => Error::PortTaken { port, error },
            _ => Error::Bind {
                port,
                source: error,
            },
        })
}

/// Renews an ACME certificate for as long as the daemon runs: once a third of its lifetime
/// is left, through the gateway, which serves the challenge on the plain-HTTP port; the new
/// pair goes to the relays and the gateway, which take it for new connections while those
/// open go on. A failure is retried with back-off, long before the certificate ends.
pub async fn renew(state: StateDir, settings: acme::Settings, http_port: u16) {
    let files = state.acme();
    let mut failures = 0u32;
    loop {
        let now = SystemTime::now();
        let wait = match files.current(&settings) {
            Some(c) if !c.due(now) => {
                failures = 0;
                c.renew_at().duration_since(now).unwrap_or_default()
            }
            held => {
                let quiet = |line: &str| tracing::info!("{line}");
                match acme::obtain(&settings, &files, http_port, &quiet).await {
                    Ok(c) => match state.pki().install_public(&c.cert_pem, &c.key_pem) {
                        Ok(()) => {
                            failures = 0;
                            tracing::info!(
                                identifier = %settings.identifier,
                                until = %humantime::format_rfc3339_seconds(c.not_after),
                                "certificate renewed; relays and the gateway take it for new connections"
                            );
                            continue;
                        }
                        Err(error) => {
                            tracing::warn!(error = %server::telemetry::Chain(&error), "installing the renewed certificate failed");
                        }
                    },
                    Err(error) => tracing::warn!(
                        error = %server::telemetry::Chain(&error),
                        "certificate renewal failed; retrying"
                    ),
                }
                failures += 1;
                let lifetime = held.map_or(Duration::from_secs(3600), |c| c.lifetime());
                retry_after(lifetime, failures)
            }
        };
        // Wake at least hourly: a clock that jumped or a suspended host is noticed.
        tokio::time::sleep(wait.min(Duration::from_secs(3600))).await;
    }
}

/// The wait before retrying a renewal that failed `failures` times: from a 1/100 of the
/// lifetime (at least 5 s), doubling, at most an hour.
fn retry_after(lifetime: Duration, failures: u32) -> Duration {
    let first = (lifetime / 100).max(Duration::from_secs(5));
    first
        .saturating_mul(1 << failures.saturating_sub(1).min(10))
        .min(Duration::from_secs(3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_renewal_is_retried_sooner_than_the_certificate_ends() {
        let short = Duration::from_secs(160 * 3600);
        assert_eq!(retry_after(short, 1), Duration::from_secs(3600));
        assert_eq!(retry_after(short, 9), Duration::from_secs(3600));
        let test = Duration::from_secs(60);
        assert_eq!(retry_after(test, 1), Duration::from_secs(5));
        assert_eq!(retry_after(test, 2), Duration::from_secs(10));
    }
}

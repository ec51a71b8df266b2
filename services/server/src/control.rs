//! The control plane as seen by the services that call it: a lazily connected gRPC client,
//! the heartbeat loop, and how to read what control lists.
//!
//! In a stack, control takes calls only over mutual TLS: each caller presents its client
//! certificate from the stack's CA, which names its role, and control checks that role per
//! call (a relay's heartbeat only from a relay, and so on; see the `control` crate).

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use proto::control::control_client::ControlClient;
use tokio_util::sync::CancellationToken;
use tonic::transport::{
    Certificate, Channel, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig,
};

/// Why a gRPC client or server of the stack could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The address is not a URL tonic can connect to.
    #[error("bad address of {name} {url:?} (expected http://host:port)")]
    Address {
        /// The server's name.
        name: String,
        /// The address given.
        url: String,
        /// tonic's error.
        #[source]
        source: tonic::transport::Error,
    },
    /// The TLS settings were refused.
    #[error("setting up TLS to {name}")]
    Tls {
        /// The server's name.
        name: String,
        /// tonic's error.
        #[source]
        source: tonic::transport::Error,
    },
    /// A file of the TLS directory cannot be read.
    #[error("reading {}", path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

/// How long any call to control may take. Control being slow or down must never hold up
/// the data plane.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// A client that connects on first use and reconnects by itself after control restarts.
///
/// With `tls_dir` (a service's TLS directory: `ca.pem`, `client.pem`, `client.key`) it
/// speaks TLS whatever scheme `url` spells, verifies control against the stack's CA by its
/// name, and presents the client certificate; without, plain HTTP/2 (a control started
/// without TLS, as in control's own tests).
pub fn client(url: &str, tls_dir: Option<&Path>) -> Result<ControlClient<Channel>, Error> {
    let endpoint = endpoint(url, tls_dir, identity::CONTROL_NAME)?
        .connect_timeout(Duration::from_millis(500))
        .timeout(CALL_TIMEOUT);
    Ok(ControlClient::new(endpoint.connect_lazy()))
}

/// A gRPC endpoint of the stack's server called `name` at `url`. With `tls_dir` (the
/// caller's TLS directory) it speaks TLS whatever scheme `url` spells: it verifies the
/// server against the stack's CA by `name` and presents the caller's client certificate.
pub fn endpoint(url: &str, tls_dir: Option<&Path>, name: &str) -> Result<Endpoint, Error> {
    let url = match (tls_dir, url.strip_prefix("http://")) {
        (Some(_), Some(rest)) => format!("https://{rest}"),
        _ => url.to_string(),
    };
    let endpoint = Endpoint::from_shared(url.clone()).map_err(|source| Error::Address {
        name: name.to_string(),
        url,
        source,
    })?;
    let Some(dir) = tls_dir else {
        return Ok(endpoint);
    };
    let files = identity::Files::in_dir(dir);
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&files.ca)?))
        .identity(Identity::from_pem(
            read(&files.client_cert)?,
            read(&files.client_key)?,
        ))
        .domain_name(name);
    endpoint.tls_config(tls).map_err(|source| Error::Tls {
        name: name.to_string(),
        source,
    })
}

/// Mutual TLS for a gRPC server of the stack from its TLS directory `dir`: its server
/// certificate, and callers' client certificates verified against the stack's CA. A caller
/// without one still completes the handshake, so that it is told in words
/// (`UNAUTHENTICATED`) rather than by a TLS alert; [`caller`] tells who called.
pub fn server_tls(dir: &Path) -> Result<ServerTlsConfig, Error> {
    let files = identity::Files::in_dir(dir);
    Ok(ServerTlsConfig::new()
        .identity(Identity::from_pem(read(&files.cert)?, read(&files.key)?))
        .client_ca_root(Certificate::from_pem(read(&files.ca)?))
        .client_auth_optional(true)
        .timeout(Duration::from_secs(5)))
}

/// The role of a gRPC request's caller, from the client certificate the stack's CA vouched
/// for during the handshake; `None` without one (or over plain HTTP/2).
pub fn caller<T>(request: &tonic::Request<T>) -> Option<identity::Role> {
    request
        .peer_certs()
        .and_then(|chain| identity::peer::peer_role(&chain))
}

/// Lets the call `rpc` through only from a caller whose verified client certificate names
/// one of `allowed`: `UNAUTHENTICATED` without one, `PERMISSION_DENIED` for another role,
/// each saying who may call. The refused caller's role comes with the refusal, for the log.
pub fn authorize<T>(
    request: &tonic::Request<T>,
    rpc: &str,
    allowed: &[identity::Role],
) -> Result<(), (Option<identity::Role>, tonic::Status)> {
    let role = caller(request);
    match role {
        Some(role) if allowed.contains(&role) => Ok(()),
        Some(role) => Err((
            Some(role),
            tonic::Status::permission_denied(format!(
                "{rpc} is not for {role}: only {} may call it",
                allowed
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        )),
        None => Err((
            None,
            tonic::Status::unauthenticated(format!(
                "{rpc} takes calls only from the stack's services: present a service's client \
                 certificate from the stack's CA"
            )),
        )),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// How a stream listed by control is published. Control takes only the names it knows, so
/// a name this binary does not know comes from a newer control: it reads as the default
/// rather than failing the whole listing.
pub fn protocol(stream: &proto::control::Stream) -> api::Protocol {
    api::Protocol::from_name(&stream.protocol).unwrap_or_default()
}

/// Calls `beat` every interval until `shutdown`. `beat` returns the interval control asks
/// for next. Failures are logged once when they start and once when they stop, not on every
/// beat, and the loop goes on at `default_interval`.
pub async fn heartbeat_loop<F, Fut>(
    default_interval: Duration,
    shutdown: CancellationToken,
    mut beat: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Duration, tonic::Status>>,
{
    let mut failing = false;
    loop {
        let interval = match beat().await {
            Ok(next) => {
                if failing {
                    tracing::info!("control reachable again; heartbeats resumed");
                    failing = false;
                }
                if next.is_zero() {
                    default_interval
                } else {
                    next
                }
            }
            Err(status) => {
                if !failing {
                    tracing::warn!(error = %status.message(), code = ?status.code(), "heartbeat to control failed; retrying");
                    failing = true;
                }
                default_interval
            }
        };
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

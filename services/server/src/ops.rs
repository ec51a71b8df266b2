//! The ops listener every service runs beside its public one: `GET /health` and
//! `GET /metrics` (Prometheus text). Kept apart from the media and API ports so an operator
//! can scrape and probe without touching the data plane.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// `/health` and `/metrics` for `registry`.
pub fn routes(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .with_state(registry)
}

async fn metrics(State(registry): State<Arc<Registry>>) -> axum::response::Response {
    metrics_response(&registry)
}

/// `registry` in Prometheus text, as an HTTP answer.
pub fn metrics_response(registry: &Registry) -> axum::response::Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Binds the ops listener (before any task is spawned, so tests can use port 0 race-free).
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, Error> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

/// Serves `router` on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    axum::serve(nodelay(listener), router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(Error::Serve)
}

/// The `health` subcommand of every service binary: GET `/health` on `addr`, for an image's
/// HEALTHCHECK (images have no shell and no curl). Succeeds on HTTP 200 within `timeout`.
pub async fn probe(addr: &str, timeout: Duration) -> Result<(), ProbeError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let check = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|source| ProbeError::Connect {
                addr: addr.to_string(),
                source,
            })?;
        stream
            .write_all(b"GET /health HTTP/1.0\r\nHost: health\r\n\r\n")
            .await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        if &head[9..12] == b"200" {
            Ok(())
        } else {
            Err(ProbeError::Unhealthy {
                addr: addr.to_string(),
                answer: String::from_utf8_lossy(&head).trim().to_string(),
            })
        }
    };
    tokio::time::timeout(timeout, check)
        .await
        .map_err(|source| ProbeError::Timeout {
            addr: addr.to_string(),
            timeout,
            source,
        })?
}

/// Why the ops listener could not be set up or serve.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The address could not be bound (taken, or not this host's).
    #[error("binding the ops listener on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("ops listener failed")]
    Serve(#[source] std::io::Error),
    /// The bound address could not be read back.
    #[error("reading the bound address")]
    LocalAddr(#[source] std::io::Error),
}

/// Why a health probe failed: what `health` prints before it exits 1.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Nothing answers at the address.
    #[error("connecting to {addr}")]
    Connect {
        /// The address probed.
        addr: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The connection failed while asking or reading the answer.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The service answered with another status than 200.
    #[error("{addr} answered {answer:?}")]
    Unhealthy {
        /// The address probed.
        addr: String,
        /// The start of its answer.
        answer: String,
    },
    /// No answer in time.
    #[error("{addr} did not answer within {timeout:?}")]
    Timeout {
        /// The address probed.
        addr: String,
        /// How long it was given.
        timeout: Duration,
        /// tokio's timer error.
        #[source]
        source: tokio::time::error::Elapsed,
    },
}

/// The address a listener actually bound, for the readiness line.
pub fn local(listener: &tokio::net::TcpListener) -> Result<SocketAddr, Error> {
    listener.local_addr().map_err(Error::LocalAddr)
}

/// A listener's accepted connections with Nagle's algorithm off, for tonic servers: small
/// request/answer exchanges otherwise wait on delayed ACKs, about 40 ms each.
pub fn nodelay_incoming(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|stream| {
            let _ = stream.set_nodelay(true);
        })
    })
}

/// A listener for axum whose accepted connections have Nagle's algorithm off.
pub fn nodelay(
    listener: tokio::net::TcpListener,
) -> axum::serve::TapIo<tokio::net::TcpListener, fn(&mut tokio::net::TcpStream)> {
    use axum::serve::ListenerExt;
    fn no_delay(stream: &mut tokio::net::TcpStream) {
        let _ = stream.set_nodelay(true);
    }
    listener.tap_io(no_delay as fn(&mut tokio::net::TcpStream))
}

//! The ops listener every service runs beside its public one: `GET /health` and
//! `GET /metrics` (Prometheus text). Kept apart from the media and API ports so an operator
//! can scrape and probe without touching the data plane.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
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
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the ops listener on {addr}"))
}

/// Serves `router` on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> Result<()> {
    axum::serve(nodelay(listener), router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("ops listener failed")
}

/// The `health` subcommand of every service binary: GET `/health` on `addr`, for an image's
/// HEALTHCHECK (images have no shell and no curl). Succeeds on HTTP 200 within `timeout`.
pub async fn probe(addr: &str, timeout: Duration) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let check = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream
            .write_all(b"GET /health HTTP/1.0\r\nHost: health\r\n\r\n")
            .await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        if &head[9..12] == b"200" {
            Ok(())
        } else {
            anyhow::bail!(
                "{addr} answered {:?}",
                String::from_utf8_lossy(&head).trim()
            )
        }
    };
    tokio::time::timeout(timeout, check)
        .await
        .with_context(|| format!("{addr} did not answer within {timeout:?}"))?
}

/// The address a listener actually bound, for the readiness line.
pub fn local(listener: &tokio::net::TcpListener) -> Result<SocketAddr> {
    listener.local_addr().context("reading the bound address")
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

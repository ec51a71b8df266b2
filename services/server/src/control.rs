//! The control plane as seen by the services that call it: a lazily connected gRPC client,
//! the heartbeat loop, and how to read what control lists.

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result};
use proto::control::control_client::ControlClient;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

/// How long any call to control may take. Control being slow or down must never hold up
/// the data plane.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// A client that connects on first use and reconnects by itself after control restarts.
pub fn client(url: &str) -> Result<ControlClient<Channel>> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .with_context(|| format!("bad control address {url:?} (expected http://host:port)"))?
        .connect_timeout(Duration::from_millis(500))
        .timeout(CALL_TIMEOUT);
    Ok(ControlClient::new(endpoint.connect_lazy()))
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

//! Ghost Stream's viewer gateway: the HTTP front door for viewers. It holds nothing of its
//! own; every answer comes from control.
//!
//! | route | answer |
//! |---|---|
//! | `GET /streams` | [`api::gateway::Stream`]s, newest first |
//! | `POST /streams/{id or name}/join` | `200` [`api::gateway::Join`]; `404` unknown stream; `503` with `Retry-After` when no relay has room or control is down |
//! | `GET /health`, `GET /metrics` | liveness; Prometheus text |
//! | `GET /`, `GET /watch/{id or name}`, `GET /app/{file}` | the web app ([`web`]) |
//!
//! Errors are an [`api::Problem`]: `{"error": "<kind>", "reason": "<text>"}`.

#![forbid(unsafe_code)]

pub mod web;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, Result};
use api::status::{Kind, Role};
use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use proto::control as pb;
use proto::control::control_client::ControlClient;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// The gateway's configuration. Every flag is also an environment variable.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "ghost-gateway", version, about = "Ghost Stream viewer gateway")]
pub struct Config {
    /// HTTP listen address.
    #[arg(long, env = "GHOST_GATEWAY_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Where control is.
    #[command(flatten)]
    pub control: server::args::Control,
    /// The gateway's TLS directory: its client certificate for calls to control.
    #[command(flatten)]
    pub tls: server::args::OptionalTls,
    /// Log output.
    #[command(flatten)]
    pub logging: server::args::Logging,
}

#[derive(Debug, Default, Clone)]
struct Metrics {
    joins: Counter,
    rejections: Counter,
    not_found: Counter,
    control_errors: Counter,
}

#[derive(Clone)]
struct AppState {
    control: ControlClient<Channel>,
    metrics: Metrics,
}

/// An error answer: status, kind and reason; `Retry-After` on 503.
struct ApiError {
    status: StatusCode,
    kind: &'static str,
    reason: String,
    retry_after: Option<u32>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(api::Problem::new(self.kind, self.reason));
        let mut resp = (self.status, body).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// The one place control's gRPC statuses become HTTP answers.
fn api_error(status: tonic::Status, metrics: &Metrics) -> ApiError {
    match status.code() {
        tonic::Code::NotFound => {
            metrics.not_found.inc();
            ApiError {
                status: StatusCode::NOT_FOUND,
                kind: api::gateway::NOT_FOUND,
                reason: status.message().to_string(),
                retry_after: None,
            }
        }
        tonic::Code::ResourceExhausted => {
            metrics.rejections.inc();
            ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                kind: api::gateway::NO_CAPACITY,
                reason: status.message().to_string(),
                retry_after: Some(1),
            }
        }
        tonic::Code::InvalidArgument => ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "bad_request",
            reason: status.message().to_string(),
            retry_after: None,
        },
        _ => {
            metrics.control_errors.inc();
            ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                kind: "control_unavailable",
                reason: format!("control plane unavailable: {}", status.message()),
                retry_after: Some(2),
            }
        }
    }
}

/// The gateway's routes, apart from serving, so tests call them directly.
pub fn routes(control: ControlClient<Channel>) -> Router {
    let metrics = Metrics::default();
    let mut registry = Registry::with_prefix("ghost_gateway");
    registry.register(
        "joins",
        "Joins answered with a relay",
        metrics.joins.clone(),
    );
    registry.register(
        "rejections",
        "Joins refused: no relay had room",
        metrics.rejections.clone(),
    );
    registry.register(
        "not_found",
        "Joins for an unknown stream",
        metrics.not_found.clone(),
    );
    registry.register(
        "control_errors",
        "Requests that failed because control was unavailable",
        metrics.control_errors.clone(),
    );
    let registry = Arc::new(registry);
    Router::new()
        .route("/", get(web::index))
        .route("/watch/{stream}", get(web::watch))
        .route("/app/{file}", get(web::asset))
        .route("/streams", get(list))
        .route("/streams/{id}/join", post(join))
        .route("/health", get(|| async { "ok\n" }))
        .with_state(AppState { control, metrics })
        .merge(
            Router::new()
                .route("/metrics", get(metrics_text))
                .with_state(registry),
        )
        .fallback(|| async {
            ApiError {
                status: StatusCode::NOT_FOUND,
                kind: "no_route",
                reason: "no such route; see GET /streams and POST /streams/{id}/join".into(),
                retry_after: None,
            }
        })
        .layer(tower_http::trace::TraceLayer::new_for_http())
}

async fn metrics_text(State(registry): State<Arc<Registry>>) -> Response {
    server::ops::metrics_response(&registry)
}

async fn list(State(state): State<AppState>) -> Result<Json<Vec<api::gateway::Stream>>, ApiError> {
    let streams = state
        .control
        .clone()
        .list_streams(pb::ListStreamsRequest {})
        .await
        .map_err(|s| api_error(s, &state.metrics))?
        .into_inner()
        .streams;
    Ok(Json(streams.into_iter().map(stream_view).collect()))
}

fn stream_view(s: pb::Stream) -> api::gateway::Stream {
    let at = UNIX_EPOCH + Duration::from_micros(s.started_at_us);
    api::gateway::Stream {
        protocol: server::control::protocol(&s),
        id: s.id,
        name: s.name,
        started_at: humantime::format_rfc3339_millis(at).to_string(),
        started_at_us: s.started_at_us,
        viewers: s.viewers,
    }
}

async fn join(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<api::gateway::Join>, ApiError> {
    if id.is_empty() || id.len() > 128 {
        return Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "bad_request",
            reason: "stream id or name must be 1 to 128 bytes".into(),
            retry_after: None,
        });
    }
    let placed = state
        .control
        .clone()
        .join(pb::JoinRequest { stream: id })
        .await
        .map_err(|s| api_error(s, &state.metrics))?
        .into_inner();
    state.metrics.joins.inc();
    Ok(Json(api::gateway::Join {
        stream_id: placed.stream_id,
        relay_id: placed.relay_id,
        relay_addr: placed.relay_addr,
        server_name: placed.server_name,
        cert_sha256: placed.cert_sha256,
        cert_public: placed.cert_public,
        ticket: placed.ticket.iter().map(|b| format!("{b:02x}")).collect(),
    }))
}

/// Runs the gateway until SIGINT/SIGTERM: the whole `ghost-gateway` binary.
pub async fn main(config: Config) -> Result<()> {
    server::telemetry::init(config.logging.log_format, "info");
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding HTTP on {}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(http = %addr, "viewer gateway listening");
    server::ready::announce(Kind::Gateway, &[(Role::Http, addr), (Role::Ops, addr)]);
    serve(
        listener,
        &config.control.url,
        config.tls.dir.as_deref(),
        server::shutdown::on_signal(),
    )
    .await
}

/// Serves the gateway on a bound listener until `shutdown`, calling control at `control`
/// with the client certificate in `tls_dir`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    control: &str,
    tls_dir: Option<&std::path::Path>,
    shutdown: CancellationToken,
) -> Result<()> {
    let router = routes(server::control::client(control, tls_dir)?);
    axum::serve(server::ops::nodelay(listener), router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("HTTP server failed")
}

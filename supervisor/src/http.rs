//! The supervisor's HTTP side (status page, JSON API, /metrics) and its capacity gRPC.
//!
//! Read-only routes are open wherever the listener is bound; admin routes (scale, chaos,
//! down) answer only to clients on loopback, so a public bind never exposes them.

use std::net::SocketAddr;
use std::time::Duration;

use api::Problem;
use api::admin::{Down, Kill, Killed, Scale};
use api::status::{Relay, RelayStream, Status, Stream};
use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use proto::control as pb;
use proto::supervisor as sup;

use crate::actor::{Error, Handle};

#[derive(Clone)]
struct AppState {
    handle: Handle,
}

/// The supervisor's HTTP routes.
pub fn routes(handle: Handle) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/status", get(status))
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { "ok\n" }))
        .route("/api/scale", post(scale))
        .route("/api/kill", post(kill))
        .route("/api/down", post(down))
        .with_state(AppState { handle })
}

fn problem(status: StatusCode, kind: &str, reason: impl Into<String>) -> Response {
    (status, Json(Problem::new(kind, reason))).into_response()
}

/// The one mapping of the supervisor's errors to HTTP answers.
fn refusal(e: Error) -> Response {
    let reason = e.to_string();
    match e {
        Error::Refused(_) => problem(StatusCode::BAD_REQUEST, "bad_request", reason),
        Error::KillFailed { .. } => {
            problem(StatusCode::INTERNAL_SERVER_ERROR, "kill_failed", reason)
        }
        Error::Stopped => problem(StatusCode::SERVICE_UNAVAILABLE, "stopping", reason),
    }
}

/// The refusal for an admin request from off the host, `None` when it may proceed.
fn forbidden(peer: SocketAddr) -> Option<Response> {
    if peer.ip().is_loopback() {
        None
    } else {
        Some(problem(
            StatusCode::FORBIDDEN,
            "forbidden",
            "admin actions are only served on loopback",
        ))
    }
}

fn bad_body(rejection: JsonRejection) -> Response {
    problem(
        StatusCode::BAD_REQUEST,
        "bad_request",
        rejection.body_text(),
    )
}

/// The full status: the supervisor's snapshot, each instance's resource use read now, and
/// control's view (streams, relays).
pub async fn full_status(handle: &Handle) -> Status {
    let snap = handle.snapshot();
    let control = async {
        match &snap.control_url {
            Some(url) => control_status(url).await,
            None => Err("control has not started".to_string()),
        }
    };
    let usages = futures_util::future::join_all(snap.services.iter().map(|s| async {
        match &s.instance {
            Some(instance) => handle.usage(instance).await,
            None => None,
        }
    }));
    let (control, usages) = tokio::join!(control, usages);
    let mut services = snap.services;
    for (service, usage) in services.iter_mut().zip(usages) {
        service.usage = usage;
    }
    let mut status = Status {
        runtime: snap.runtime,
        ready: snap.ready,
        services,
        relays_wanted: snap.relays_wanted,
        max_relays: snap.max_relays,
        relay_capacity: snap.relay_capacity,
        streams: Vec::new(),
        relays: Vec::new(),
        joins: 0,
        rejections: 0,
        control_error: None,
        events: snap.events,
        history: snap.history,
    };
    match control {
        Ok(c) => {
            status.streams = c
                .streams
                .into_iter()
                .map(|s| Stream {
                    id: s.id,
                    name: s.name,
                    started_at_us: s.started_at_us,
                    viewers: s.viewers,
                })
                .collect();
            status.relays = c
                .relays
                .into_iter()
                .map(|r| Relay {
                    id: r.relay_id,
                    addr: r.addr,
                    capacity: r.capacity,
                    viewers: r.viewers,
                    bytes_sent: r.bytes_sent,
                    groups_skipped: r.groups_skipped,
                    accepting: r.accepting,
                    last_seen_ms: u64::from(r.last_seen_ms),
                    streams: r
                        .streams
                        .into_iter()
                        .map(|l| RelayStream {
                            stream_id: l.stream_id,
                            viewers: l.viewers,
                        })
                        .collect(),
                })
                .collect();
            status.joins = c.joins;
            status.rejections = c.rejections;
        }
        Err(e) => status.control_error = Some(e),
    }
    status
}

async fn control_status(url: &str) -> Result<pb::StatusResponse, String> {
    let mut client = server::control::client(url).map_err(|e| format!("{e:#}"))?;
    tokio::time::timeout(Duration::from_secs(1), client.status(pb::StatusRequest {}))
        .await
        .map_err(|_| "control did not answer in time".to_string())?
        .map(|r| r.into_inner())
        .map_err(|s| format!("control unavailable: {}", s.message()))
}

async fn status(State(state): State<AppState>) -> Json<Status> {
    Json(full_status(&state.handle).await)
}

async fn metrics(State(state): State<AppState>) -> Response {
    use prometheus_client::metrics::gauge::Gauge;
    let snap = state.handle.snapshot();
    let mut registry = prometheus_client::registry::Registry::with_prefix("ghost_supervisor");
    let up = Gauge::<i64>::default();
    up.set(snap.services.iter().filter(|s| s.healthy).count() as i64);
    registry.register("services_healthy", "Services up and healthy", up);
    let restarts = Gauge::<i64>::default();
    restarts.set(snap.services.iter().map(|s| s.restarts as i64).sum());
    registry.register(
        "restarts",
        "Service restarts since the stack came up",
        restarts,
    );
    let relays = Gauge::<i64>::default();
    relays.set(i64::from(snap.relays_wanted));
    registry.register(
        "relays_wanted",
        "Relays the supervisor keeps running",
        relays,
    );
    server::ops::metrics_response(&registry)
}

async fn scale(
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    State(state): State<AppState>,
    body: Result<Json<Scale>, JsonRejection>,
) -> Response {
    if let Some(r) = forbidden(peer) {
        return r;
    }
    let Json(body) = match body {
        Ok(body) => body,
        Err(rejection) => return bad_body(rejection),
    };
    match state.handle.scale(body.relays).await {
        Ok(relays) => Json(Scale { relays }).into_response(),
        Err(e) => refusal(e),
    }
}

async fn kill(
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    State(state): State<AppState>,
    body: Result<Json<Kill>, JsonRejection>,
) -> Response {
    if let Some(r) = forbidden(peer) {
        return r;
    }
    let Json(body) = match body {
        Ok(body) => body,
        Err(rejection) => return bad_body(rejection),
    };
    let hold = body.hold_ms.map(Duration::from_millis);
    match state.handle.kill(body.target, hold).await {
        Ok(killed) => Json(Killed {
            killed,
            at_ms: server::clock::now_ms(),
        })
        .into_response(),
        Err(e) => refusal(e),
    }
}

async fn down(
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    State(state): State<AppState>,
) -> Response {
    if let Some(r) = forbidden(peer) {
        return r;
    }
    state.handle.down().await;
    Json(Down { down: true }).into_response()
}

async fn page() -> Html<&'static str> {
    Html(include_str!("status.html"))
}

/// The capacity gRPC service control calls when it refuses viewers.
pub struct Capacity {
    /// The supervisor.
    pub handle: Handle,
}

#[tonic::async_trait]
impl sup::supervisor_server::Supervisor for Capacity {
    async fn request_capacity(
        &self,
        request: tonic::Request<sup::CapacityRequest>,
    ) -> Result<tonic::Response<sup::CapacityResponse>, tonic::Status> {
        let rejected = request.into_inner().rejected_viewers;
        let capacity = self
            .handle
            .capacity(rejected)
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        Ok(tonic::Response::new(sup::CapacityResponse {
            relays_starting: capacity.starting,
            relays_total: capacity.total,
            max_relays: capacity.max,
        }))
    }
}

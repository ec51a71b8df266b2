//! The supervisor's HTTP side (status page, JSON API, /metrics) and its capacity gRPC.
//!
//! Read-only routes are open wherever the listener is bound; admin routes (scale, chaos,
//! down) answer only to clients on loopback, so a public bind never exposes them.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use proto::control as pb;
use proto::supervisor as sup;
use serde::Deserialize;
use tokio::sync::oneshot;

use crate::actor::{Command, Handle};

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

/// The refusal for an admin request from off the host, `None` when it may proceed.
fn forbidden(peer: SocketAddr) -> Option<Response> {
    if peer.ip().is_loopback() {
        None
    } else {
        Some((
            StatusCode::FORBIDDEN,
            Json(serde_json::json!({"error": "forbidden", "reason": "admin actions are only served on loopback"})),
        )
            .into_response())
    }
}

/// The full status: the supervisor's snapshot plus control's view (streams, relays).
pub async fn full_status(handle: &Handle) -> serde_json::Value {
    let snap = handle.snapshot();
    let control = control_status(&snap.control_url).await;
    let (streams, relays, joins, rejections, control_error) = match control {
        Ok(s) => (
            s.streams
                .iter()
                .map(|st| {
                    serde_json::json!({
                        "id": st.id, "name": st.name, "started_at_us": st.started_at_us,
                        "viewers": st.viewers,
                    })
                })
                .collect::<Vec<_>>(),
            s.relays
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "id": r.relay_id, "addr": r.addr, "capacity": r.capacity,
                        "viewers": r.viewers, "bytes_sent": r.bytes_sent,
                        "groups_skipped": r.groups_skipped, "accepting": r.accepting,
                        "last_seen_ms": r.last_seen_ms,
                        "streams": r.streams.iter().map(|l| serde_json::json!({"stream_id": l.stream_id, "viewers": l.viewers})).collect::<Vec<_>>(),
                    })
                })
                .collect::<Vec<_>>(),
            s.joins,
            s.rejections,
            None,
        ),
        Err(e) => (Vec::new(), Vec::new(), 0, 0, Some(e)),
    };
    serde_json::json!({
        "runtime": snap.runtime,
        "ready": snap.ready,
        "services": snap.services,
        "relays_wanted": snap.relays_wanted,
        "max_relays": snap.max_relays,
        "relay_capacity": snap.relay_capacity,
        "streams": streams,
        "relays": relays,
        "joins": joins,
        "rejections": rejections,
        "control_error": control_error,
        "events": snap.events,
        "history": snap.history,
    })
}

async fn control_status(url: &str) -> Result<pb::StatusResponse, String> {
    let mut client = server::control::client(url).map_err(|e| e.to_string())?;
    tokio::time::timeout(Duration::from_secs(1), client.status(pb::StatusRequest {}))
        .await
        .map_err(|_| "control did not answer in time".to_string())?
        .map(|r| r.into_inner())
        .map_err(|s| format!("control unavailable: {}", s.message()))
}

async fn status(State(state): State<AppState>) -> Json<serde_json::Value> {
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

#[derive(Deserialize)]
struct ScaleBody {
    relays: u32,
}

async fn scale(
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    State(state): State<AppState>,
    Json(body): Json<ScaleBody>,
) -> Response {
    if let Some(r) = forbidden(peer) {
        return r;
    }
    let (tx, rx) = oneshot::channel();
    if state
        .handle
        .send(Command::Scale(body.relays, tx))
        .await
        .is_err()
    {
        return gone();
    }
    match rx.await {
        Ok(Ok(n)) => Json(serde_json::json!({"relays": n})).into_response(),
        Ok(Err(reason)) => (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": "bad_request", "reason": reason})),
        )
            .into_response(),
        Err(_) => gone(),
    }
}

#[derive(Deserialize)]
struct KillBody {
    target: String,
    hold_ms: Option<u64>,
}

async fn kill(
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    State(state): State<AppState>,
    Json(body): Json<KillBody>,
) -> Response {
    if let Some(r) = forbidden(peer) {
        return r;
    }
    let (tx, rx) = oneshot::channel();
    let cmd = Command::Kill {
        target: body.target,
        hold: body.hold_ms.map(Duration::from_millis),
        reply: tx,
    };
    if state.handle.send(cmd).await.is_err() {
        return gone();
    }
    match rx.await {
        Ok(Ok(killed)) => Json(serde_json::json!({
            "killed": killed, "at_ms": server::clock::now_ms(),
        }))
        .into_response(),
        Ok(Err(reason)) => (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": "bad_request", "reason": reason})),
        )
            .into_response(),
        Err(_) => gone(),
    }
}

async fn down(
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    State(state): State<AppState>,
) -> Response {
    if let Some(r) = forbidden(peer) {
        return r;
    }
    let (tx, rx) = oneshot::channel();
    if state.handle.send(Command::Down(tx)).await.is_err() {
        return Json(serde_json::json!({"down": true})).into_response();
    }
    let _ = rx.await;
    Json(serde_json::json!({"down": true})).into_response()
}

fn gone() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({"error": "stopping", "reason": "the supervisor is shutting down"})),
    )
        .into_response()
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
        let req = request.into_inner();
        let (tx, rx) = oneshot::channel();
        self.handle
            .send(Command::Capacity {
                rejected: req.rejected_viewers,
                reply: tx,
            })
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let (starting, total, max) = rx
            .await
            .map_err(|_| tonic::Status::unavailable("the supervisor is shutting down"))?;
        Ok(tonic::Response::new(sup::CapacityResponse {
            relays_starting: starting,
            relays_total: total,
            max_relays: max,
        }))
    }
}

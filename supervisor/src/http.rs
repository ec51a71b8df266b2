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
use axum::extract::{ConnectInfo, FromRequest, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
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
    let admin = Router::new()
        .route("/api/scale", post(scale))
        .route("/api/kill", post(kill))
        .route("/api/down", post(down))
        .route_layer(axum::middleware::from_fn(loopback_only));
    Router::new()
        .route("/", get(page))
        .route("/api/status", get(status))
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { "ok\n" }))
        .merge(admin)
        .with_state(AppState { handle })
}

/// Admin actions answer only to clients on loopback, so a public bind exposes the page and
/// the status read-only.
async fn loopback_only(
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if peer.ip().is_loopback() {
        next.run(request).await
    } else {
        problem(
            StatusCode::FORBIDDEN,
            "forbidden",
            "admin actions are only served on loopback",
        )
    }
}

/// An admin request's JSON body; a malformed one is answered with a [`Problem`] (400).
struct Body<T>(T);

impl<S, T> FromRequest<S> for Body<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(body)) => Ok(Body(body)),
            Err(rejection) => Err(problem(
                StatusCode::BAD_REQUEST,
                "bad_request",
                rejection.body_text(),
            )),
        }
    }
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
    let mut status = snap.status;
    let usages = futures_util::future::join_all(status.services.iter().map(|s| async {
        match &s.instance {
            Some(instance) => handle.usage(instance).await,
            None => None,
        }
    }));
    let (control, usages) = tokio::join!(control, usages);
    for (service, usage) in status.services.iter_mut().zip(usages) {
        service.usage = usage;
    }
    match control {
        Ok(c) => {
            status.streams = c
                .streams
                .into_iter()
                .map(|s| Stream {
                    protocol: server::control::protocol(&s),
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
    let snap = state.handle.snapshot().status;
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

async fn scale(State(state): State<AppState>, Body(body): Body<Scale>) -> Response {
    match state.handle.scale(body.relays).await {
        Ok(relays) => Json(Scale { relays }).into_response(),
        Err(e) => refusal(e),
    }
}

async fn kill(State(state): State<AppState>, Body(body): Body<Kill>) -> Response {
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

async fn down(State(state): State<AppState>) -> Response {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body as HttpBody;
    use tower::ServiceExt;

    use super::*;
    use crate::actor::{Settings, Supervisor};
    use crate::runtime::process::ProcessRuntime;
    use crate::services::Ports;
    use crate::stack::StateDir;

    /// The routes of a supervisor whose actor is not running: requests that get past the
    /// checks reach a handle with nobody behind it, and say so.
    fn app() -> Router {
        let state = StateDir::new(std::env::temp_dir().join("ghost-http-test"));
        let settings = Settings {
            state: state.clone(),
            relays: 1,
            max_relays: 2,
            relay_capacity: 10,
            public: true,
            advertise_host: None,
            require_keys: true,
            ports: Ports::EPHEMERAL,
            bin_dir: std::env::temp_dir(),
            scale_down_after: Duration::from_secs(60),
            limits: crate::runtime::Limits::for_capacity(10),
        };
        let runtime = Arc::new(ProcessRuntime::new(std::env::temp_dir(), state));
        let (_exits_tx, exits) = tokio::sync::mpsc::channel(1);
        let grpc = "127.0.0.1:7071".parse().expect("addr");
        let (supervisor, handle) = Supervisor::new(settings, runtime, exits, grpc);
        drop(supervisor);
        routes(handle)
    }

    async fn post(peer: &str, path: &str, body: &str) -> (StatusCode, Problem) {
        let mut request = Request::post(path)
            .header("content-type", "application/json")
            .body(HttpBody::from(body.to_string()))
            .expect("request");
        let peer: SocketAddr = peer.parse().expect("peer");
        request.extensions_mut().insert(ConnectInfo(peer));
        let response = app().oneshot(request).await.expect("answer");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024)
            .await
            .expect("body");
        let problem = serde_json::from_slice(&bytes).expect("a Problem body");
        (status, problem)
    }

    #[tokio::test]
    async fn admin_routes_refuse_anyone_off_the_host() {
        for path in ["/api/down", "/api/scale", "/api/kill"] {
            let (status, problem) = post("203.0.113.9:40000", path, r#"{"relays":2}"#).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
            assert_eq!(problem.error, "forbidden", "{path}");
        }
    }

    #[tokio::test]
    async fn a_malformed_admin_body_is_a_bad_request() {
        let (status, problem) = post("127.0.0.1:40000", "/api/kill", r#"{"target":"#).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(problem.error, "bad_request");
        let (status, _) = post("127.0.0.1:40000", "/api/kill", r#"{"target":""}"#).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "an empty target names no service"
        );
        let (status, _) = post("127.0.0.1:40000", "/api/scale", r#"{"relays":-1}"#).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn a_good_request_from_loopback_reaches_the_supervisor() {
        let (status, problem) = post("[::1]:40000", "/api/scale", r#"{"relays":2}"#).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem:?}");
        assert_eq!(problem.error, "stopping");
    }
}

//! The supervisor's HTTP side (status page, JSON API, /metrics) and its capacity gRPC.
//!
//! Read-only routes are open wherever the listener is bound. Admin routes (scale, chaos,
//! down) answer only to the host's operator: a client on loopback, addressing the host by a
//! loopback name (no DNS rebinding), from no other web origin (no cross-site form post), with
//! the token the supervisor wrote into the state directory at start.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use api::Problem;
use api::admin::{Down, Kill, Killed, Scale};
use api::status::{Relay, RelayStream, Status, Stream};
use axum::Json;
use axum::Router;
use axum::extract::{ConnectInfo, FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use proto::control as pb;
use proto::supervisor as sup;

use orchestrator::actor::{Error, Handle};

#[derive(Clone)]
struct AppState {
    handle: Handle,
}

/// The admin routes' secret: the holder of the state directory's `admin.token`.
#[derive(Clone)]
pub struct AdminToken(Arc<str>);

impl AdminToken {
    /// Wraps the token the supervisor wrote at start.
    pub fn new(token: impl Into<Arc<str>>) -> AdminToken {
        AdminToken(token.into())
    }

    fn matches(&self, presented: &str) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(self.0.as_bytes().ct_eq(presented.as_bytes()))
    }
}

/// The supervisor's HTTP routes; admin routes need `token`.
pub fn routes(handle: Handle, token: AdminToken) -> Router {
    let admin = Router::new()
        .route("/api/scale", post(scale))
        .route("/api/kill", post(kill))
        .route("/api/down", post(down))
        .route_layer(axum::middleware::from_fn_with_state(token, operator_only));
    Router::new()
        .route("/", get(page))
        .route("/api/status", get(status))
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { "ok\n" }))
        .merge(admin)
        .with_state(AppState { handle })
}

/// Admin actions answer only to the host's operator; everything else gets 403 with the
/// reason, and reaches nothing.
async fn operator_only(
    State(token): State<AdminToken>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    match operator_check(&token, peer, request.headers(), request.uri()) {
        Ok(()) => next.run(request).await,
        Err(reason) => problem(StatusCode::FORBIDDEN, "forbidden", reason),
    }
}

fn operator_check(
    token: &AdminToken,
    peer: SocketAddr,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
) -> Result<(), &'static str> {
    if !peer.ip().is_loopback() {
        return Err("admin actions are only served on loopback");
    }
    // A web page can make a browser send requests to 127.0.0.1 under a name of its own (DNS
    // rebinding): the name the request was sent to must be a loopback one.
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<axum::http::uri::Authority>().ok())
        .or_else(|| uri.authority().cloned());
    if !host.is_some_and(|a| is_loopback_name(a.host())) {
        return Err("admin actions must address the host as localhost or a loopback address");
    }
    // A browser says where a request comes from; the CLI sends neither header.
    if let Some(origin) = headers.get(header::ORIGIN) {
        let same_host = origin
            .to_str()
            .ok()
            .and_then(|o| o.parse::<axum::http::Uri>().ok())
            .is_some_and(|o| o.host().is_some_and(is_loopback_name));
        if !same_host {
            return Err("cross-site admin requests are refused");
        }
    }
    if let Some(site) = headers.get("sec-fetch-site")
        && !matches!(site.as_bytes(), b"same-origin" | b"none")
    {
        return Err("cross-site admin requests are refused");
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !token.matches(presented.trim()) {
        return Err(
            "admin actions need the operator's token (`Authorization: Bearer` with the state \
             directory's admin.token, which the ghost CLI sends)",
        );
    }
    Ok(())
}

/// `localhost` or a loopback address (IPv6 in brackets or not).
fn is_loopback_name(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
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
            Some(url) => control_status(url, &snap.control_tls).await,
            None => Err("control has not started".to_string()),
        }
    };
    let mut status = snap.status;
    let usages = futures_util::future::join_all(status.services.iter().map(|s| async {
        match snap.instances.get(&s.name) {
            Some(instance) => handle.usage(instance).await,
            None => None,
        }
    }));
    let (control, usages, nodes) = tokio::join!(control, usages, handle.nodes());
    status.nodes = nodes;
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

async fn control_status(url: &str, tls: &std::path::Path) -> Result<pb::StatusResponse, String> {
    let mut client = server::control::client(url, Some(tls)).map_err(|e| format!("{e:#}"))?;
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
    server::ops::metrics_response(&orchestrator::metrics::registry(&state.handle).await)
}

async fn scale(State(state): State<AppState>, Body(body): Body<Scale>) -> Response {
    match state.handle.scale(body.relays).await {
        Ok(relays) => Json(Scale { relays }).into_response(),
        Err(e) => refusal(e),
    }
}

async fn kill(State(state): State<AppState>, Body(body): Body<Kill>) -> Response {
    if let Some(ms) = body.hold_ms
        && ms > api::admin::MAX_HOLD_MS
    {
        return problem(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!(
                "hold_ms {ms} is out of range: at most {} (10 minutes)",
                api::admin::MAX_HOLD_MS
            ),
        );
    }
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

/// The capacity gRPC service control calls when it refuses viewers. Served over mutual TLS,
/// it takes calls from control's client certificate only.
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
        server::control::authorize(
            &request,
            "RequestCapacity",
            &[identity::Role::Control],
        )
        .map_err(|(role, refused)| {
            tracing::warn!(role = ?role, peer = ?request.remote_addr(), "capacity request refused");
            refused
        })?;
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
    use orchestrator::actor::{Settings, Supervisor};
    use orchestrator::runtime::process::ProcessRuntime;
    use orchestrator::services::Ports;
    use orchestrator::stack::StateDir;

    /// The routes of a supervisor whose actor is not running: requests that get past the
    /// checks reach a handle with nobody behind it, and say so.
    fn app() -> Router {
        let state = StateDir::new(std::env::temp_dir().join("ghost-http-test"));
        let settings = Settings {
            state: state.clone(),
            relays: 1,
            max_relays: 2,
            relay_capacity: 10,
            relay_congestion: transport::quic::Congestion::Cubic,
            public: true,
            advertise_host: None,
            require_keys: true,
            certificate: orchestrator::certificate::Source::Stack,
            ports: Ports::EPHEMERAL,
            bin_dir: std::env::temp_dir(),
            scale_down_after: Duration::from_secs(60),
            limits: orchestrator::runtime::Limits::for_capacity(10),
        };
        let runtime = Arc::new(ProcessRuntime::new(std::env::temp_dir(), state));
        let (_exits_tx, exits) = tokio::sync::mpsc::channel(1);
        let grpc = "127.0.0.1:7071".parse().expect("addr");
        let (supervisor, handle) = Supervisor::new(settings, runtime, exits, grpc);
        drop(supervisor);
        routes(handle, AdminToken::new(TOKEN))
    }

    const TOKEN: &str = "0123456789abcdef";

    /// A request as the CLI sends it: to a loopback host, with the token.
    fn request(path: &str) -> axum::http::request::Builder {
        Request::post(path)
            .header("content-type", "application/json")
            .header("host", "127.0.0.1:7070")
            .header("authorization", format!("Bearer {TOKEN}"))
    }

    /// `request` with `name` set to `value` in place of what it had.
    fn with(
        mut request: axum::http::request::Builder,
        name: &'static str,
        value: &'static str,
    ) -> axum::http::request::Builder {
        if let Some(headers) = request.headers_mut() {
            headers.insert(
                name,
                axum::http::HeaderValue::from_str(value).expect("header value"),
            );
        }
        request
    }

    async fn send(
        peer: &str,
        request: axum::http::request::Builder,
        body: &str,
    ) -> (StatusCode, Problem) {
        let mut request = request
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

    async fn post(peer: &str, path: &str, body: &str) -> (StatusCode, Problem) {
        send(peer, request(path), body).await
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
    async fn admin_routes_need_the_operators_token() {
        for path in ["/api/down", "/api/scale", "/api/kill"] {
            let without = Request::post(path)
                .header("content-type", "application/json")
                .header("host", "localhost:7070");
            let (status, problem) = send("127.0.0.1:40000", without, r#"{"relays":2}"#).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {problem:?}");
            assert!(problem.reason.contains("token"), "{problem:?}");
            let wrong = with(request(path), "authorization", "Bearer 0123456789abcdeF");
            let (status, _) = send("127.0.0.1:40000", wrong, r#"{"relays":2}"#).await;
            assert_eq!(
                status,
                StatusCode::FORBIDDEN,
                "{path}: a token that differs"
            );
        }
    }

    #[tokio::test]
    async fn a_cross_site_form_post_is_refused() {
        // What a web page opened on the host makes the browser send: no token, a form body,
        // the page's origin.
        let form = Request::post("/api/down")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("host", "127.0.0.1:7070")
            .header("origin", "https://attacker.example")
            .header("sec-fetch-site", "cross-site");
        let (status, _) = send("127.0.0.1:40000", form, "x=1").await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        // Even with the token, another origin is refused.
        for (name, value) in [
            ("origin", "https://attacker.example"),
            ("origin", "null"),
            ("sec-fetch-site", "cross-site"),
        ] {
            let (status, problem) = send(
                "127.0.0.1:40000",
                with(request("/api/down"), name, value),
                "",
            )
            .await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{name}: {value}");
            assert!(problem.reason.contains("cross-site"), "{problem:?}");
        }
        // A page of the status page's own origin is not cross-site.
        let (status, _) = send(
            "127.0.0.1:40000",
            with(request("/api/scale"), "origin", "http://127.0.0.1:7070"),
            r#"{"relays":2}"#,
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn a_rebound_host_name_is_refused() {
        // DNS rebinding: the browser thinks it talks to attacker.example, which now resolves
        // to 127.0.0.1.
        for host in ["attacker.example:7070", "10.0.0.1:7070", ""] {
            let (status, problem) = send(
                "127.0.0.1:40000",
                with(request("/api/down"), "host", host),
                "",
            )
            .await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{host}: {problem:?}");
        }
        for host in ["localhost:7070", "[::1]:7070", "127.0.0.1"] {
            let (status, _) = send(
                "127.0.0.1:40000",
                with(request("/api/scale"), "host", host),
                r#"{"relays":2}"#,
            )
            .await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{host}");
        }
    }

    #[tokio::test]
    async fn every_number_in_an_admin_request_is_range_checked() {
        let body = format!(r#"{{"target":"relay-1","hold_ms":{}}}"#, u64::MAX);
        let (status, problem) = post("127.0.0.1:40000", "/api/kill", &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{problem:?}");
        assert!(problem.reason.contains("out of range"), "{problem:?}");
        let body = format!(
            r#"{{"target":"relay-1","hold_ms":{}}}"#,
            api::admin::MAX_HOLD_MS + 1
        );
        let (status, _) = post("127.0.0.1:40000", "/api/kill", &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let body = format!(r#"{{"relays":{}}}"#, u64::from(u32::MAX) + 1);
        let (status, _) = post("127.0.0.1:40000", "/api/scale", &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
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

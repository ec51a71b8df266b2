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
//!
//! A stranger cannot pin it: each client address gets a limited number of joins
//! ([`limit`], `429` past it), a connection must send its request headers within
//! [`Limits::header_read_timeout`] (also between requests on a kept-alive connection), and
//! at most [`Limits::max_connections`] are open at once (more are closed at once).

#![forbid(unsafe_code)]

pub mod https;
pub mod limit;
pub mod web;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use api::status::{Kind, Role};
use axum::Json;
use axum::Router;
use axum::extract::{ConnectInfo, Path, State};
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
    /// Where it listens, whom it reaches and how it serves HTTPS: what the supervisor sets.
    #[command(flatten)]
    pub wiring: Wiring,
    /// How often the HTTPS certificate's files are checked for a new pair.
    #[arg(long, env = "GHOST_GATEWAY_CERT_CHECK", default_value = "30s")]
    pub cert_check: humantime::Duration,
    /// What one client may do.
    #[command(flatten)]
    pub limits: Limits,
    /// Log output.
    #[command(flatten)]
    pub logging: server::args::Logging,
}

/// The gateway's flags that the supervisor sets: declared once, here, parsed by the gateway
/// and rendered by the supervisor from a value of this type (`server::flags::render`), so
/// the two cannot disagree.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args, serde::Serialize)]
pub struct Wiring {
    /// HTTP listen address.
    #[arg(long, env = "GHOST_GATEWAY_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// HTTPS at a public name or address, and ACME challenges.
    #[command(flatten)]
    pub https: https::Https,
    /// Where control is.
    #[command(flatten)]
    pub control: server::args::Control,
    /// The gateway's TLS directory: its client certificate for calls to control.
    #[command(flatten)]
    pub tls: server::args::OptionalTls,
    /// The host's own connections besides loopback, exempt from join limits and from the
    /// redirect to HTTPS as loopback is.
    #[command(flatten)]
    pub local: identity::peer::LocalSource,
}

/// What one client may do, so that no client can pin the gateway or flood placement.
#[derive(Debug, Clone, clap::Args)]
pub struct Limits {
    /// Joins per second one client address may make, sustained (an IPv6 client counts by
    /// its /64). A viewer joins once per watch, and again after a refusal.
    #[arg(long, env = "GHOST_GATEWAY_JOIN_RATE", default_value_t = 10.0)]
    pub join_rate: f64,
    /// Joins one client address may make at once after a quiet spell.
    #[arg(long, env = "GHOST_GATEWAY_JOIN_BURST", default_value_t = 30)]
    pub join_burst: u32,
    /// Limit joins from loopback too. Off by default: loopback is the host's own operator
    /// (`ghost bench` joins hundreds of viewers from it), never a stranger, unless a reverse
    /// proxy on the host forwards to the gateway.
    #[arg(long, env = "GHOST_GATEWAY_JOIN_LIMIT_LOOPBACK", value_parser = clap::builder::BoolishValueParser::new())]
    pub join_limit_loopback: bool,
    /// The host's own connections besides loopback, exempt from join limits as loopback is
    /// (the `--local-source` flag, which [`Wiring`] holds).
    #[arg(skip)]
    pub local: identity::peer::LocalSource,
    /// Time a connection has to send a request's headers (the first request's, and each
    /// next one's on a kept-alive connection); past it the connection is closed.
    #[arg(long, env = "GHOST_GATEWAY_HEADER_READ_TIMEOUT", default_value = "5s")]
    pub header_read_timeout: humantime::Duration,
    /// HTTP connections open at once, at most; more are closed as soon as accepted.
    #[arg(long, env = "GHOST_GATEWAY_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            join_rate: 10.0,
            join_burst: 30,
            join_limit_loopback: false,
            local: identity::peer::LocalSource::default(),
            header_read_timeout: Duration::from_secs(5).into(),
            max_connections: 1024,
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Metrics {
    joins: Counter,
    rejections: Counter,
    not_found: Counter,
    control_errors: Counter,
    joins_limited: Counter,
    connections_refused: Counter,
}

#[derive(Clone)]
struct AppState {
    control: ControlClient<Channel>,
    metrics: Metrics,
    joins: Arc<limit::Limiter>,
    limit_loopback: bool,
    local: Option<std::net::IpAddr>,
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

/// The gateway's routes, apart from serving, so tests call them directly. Joins need the
/// client's address ([`ConnectInfo`]), which [`serve`] provides.
pub fn routes(control: ControlClient<Channel>) -> Router {
    routes_with(
        control,
        &Limits::default(),
        Metrics::default(),
        &Public::default(),
    )
}

fn routes_with(
    control: ControlClient<Channel>,
    limits: &Limits,
    metrics: Metrics,
    public: &Public,
) -> Router {
    let challenges = public.acme_challenges.as_deref();
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
    registry.register(
        "joins_limited",
        "Joins refused (429): the client address made too many",
        metrics.joins_limited.clone(),
    );
    registry.register(
        "connections_refused",
        "HTTP connections closed at once: too many open",
        metrics.connections_refused.clone(),
    );
    let joins = Arc::new(limit::Limiter::new(limit::JoinRate {
        rate: limits.join_rate,
        burst: limits.join_burst,
    }));
    let registry = Arc::new(registry);
    let challenges = challenges.map_or_else(Router::new, |dir| {
        server::challenge::routes(dir.to_path_buf())
    });
    Router::new()
        .route("/", get(web::index))
        .route(
            "/watch/{stream}",
            match &public.https_url {
                Some(url) => web::watch_at(url),
                None => get(web::watch),
            },
        )
        .route("/app/{file}", get(web::asset))
        .route("/streams", get(list))
        .route("/streams/{id}/join", post(join))
        .route("/health", get(|| async { "ok\n" }))
        .with_state(AppState {
            control,
            metrics,
            joins,
            limit_loopback: limits.join_limit_loopback,
            local: limits.local.local_source,
        })
        .merge(
            Router::new()
                .route("/metrics", get(metrics_text))
                .with_state(registry),
        )
        .merge(challenges)
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
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
) -> Result<Json<api::gateway::Join>, ApiError> {
    let ip = client.ip();
    if (state.limit_loopback || !identity::peer::from_host(ip, state.local.as_slice()))
        && let Err(wait) = state.joins.check(ip, Instant::now())
    {
        state.metrics.joins_limited.inc();
        let secs = u32::try_from(wait.as_secs()).unwrap_or(u32::MAX).max(1);
        tracing::debug!(client = %ip, "join refused: too many from this address");
        return Err(ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            kind: api::gateway::TOO_MANY_JOINS,
            reason: format!(
                "too many joins from {ip}: at most {} at once, then {} per second; retry after {secs} s",
                state.joins_burst(),
                state.joins_rate()
            ),
            retry_after: Some(secs),
        });
    }
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

impl AppState {
    fn joins_burst(&self) -> u32 {
        self.joins.limit().burst
    }
    fn joins_rate(&self) -> f64 {
        self.joins.limit().rate
    }
}

/// Runs the gateway until SIGINT/SIGTERM: the whole `ghost-gateway` binary.
pub async fn main(config: Config) -> Result<(), Error> {
    server::telemetry::init(config.logging.log_format, "info");
    let listener = tokio::net::TcpListener::bind(config.wiring.listen)
        .await
        .map_err(|e| Error::Bind {
            what: "HTTP",
            addr: config.wiring.listen,
            source: privileged(e, config.wiring.listen),
        })?;
    let addr = listener.local_addr()?;
    let mut announced = vec![(Role::Http, addr), (Role::Ops, addr)];
    let mut public = Public {
        acme_challenges: config.wiring.https.acme_challenges.clone(),
        ..Public::default()
    };
    let mut follow = None;
    if let Some(https_addr) = config.wiring.https.https_listen {
        let dir = config.wiring.tls.dir.as_deref().ok_or(Error::NoTlsDir)?;
        let certificate = https::certificate(dir)?;
        let tls = identity::https_server_config(certificate.clone())?;
        let https = tokio::net::TcpListener::bind(https_addr)
            .await
            .map_err(|e| Error::Bind {
                what: "HTTPS",
                addr: https_addr,
                source: privileged(e, https_addr),
            })?;
        let bound = https.local_addr()?;
        let url = server::args::https_url(config.wiring.https.https_advertise.as_deref(), bound);
        tracing::info!(https = %bound, %url, sha256 = %certificate.leaf_sha256(), "serving HTTPS");
        announced.push((Role::Https, bound));
        public.https_url = Some(url);
        public.https = Some((https, Arc::new(tls)));
        let every = *config.cert_check;
        follow = Some(async move {
            certificate
                .follow(every, |c| {
                    tracing::info!(
                        sha256 = %c.leaf_sha256(),
                        "HTTPS certificate renewed: new connections get the new one"
                    );
                })
                .await;
        });
    }
    tracing::info!(http = %addr, "viewer gateway listening");
    server::ready::announce(Kind::Gateway, &announced);
    let limits = Limits {
        local: config.wiring.local.clone(),
        ..config.limits.clone()
    };
    let serving = serve_public(
        listener,
        public,
        &config.wiring.control.url,
        config.wiring.tls.dir.as_deref(),
        &limits,
        server::shutdown::on_signal(),
    );
    match follow {
        Some(follow) => tokio::select! {
            r = serving => r,
            () = follow => Ok(()),
        },
        None => serving.await,
    }
}

/// A refused bind of a port below 1024, with what grants the right.
fn privileged(error: std::io::Error, addr: SocketAddr) -> BindError {
    if error.kind() == std::io::ErrorKind::PermissionDenied && addr.port() < 1024 {
        BindError::Privileged(error)
    } else {
        BindError::Os(error)
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener's address could not be bound.
    #[error("binding {what} on {addr}")]
    Bind {
        /// Which listener: `HTTP` or `HTTPS`.
        what: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: BindError,
    },
    /// HTTPS was asked for without the directory its certificate is in.
    #[error("--https-listen needs --tls-dir, which holds the certificate")]
    NoTlsDir,
    /// The HTTPS certificate is missing or unusable.
    #[error(
        "loading the HTTPS certificate from {} (`ghost up --acme` or --tls-cert puts it there)",
        dir.display()
    )]
    Certificate {
        /// The TLS directory.
        dir: std::path::PathBuf,
        /// Why.
        #[source]
        source: Box<identity::Error>,
    },
    /// The HTTPS configuration was refused.
    #[error(transparent)]
    Tls(#[from] identity::Error),
    /// A bound listener's address could not be read back.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Control's address, or a file of the TLS directory, is unusable.
    #[error(transparent)]
    Setup(#[from] server::control::Error),
}

/// Why a listener's address could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// A port below 1024 without the right to bind it: the text says what grants it.
    #[error(
        "{0}: ports below 1024 need root or the right to bind them (`sudo setcap \
         cap_net_bind_service=+ep ghost-gateway`, AmbientCapabilities=CAP_NET_BIND_SERVICE \
         under systemd), or other ports (`ghost up --http-port`, `--https-port`)"
    )]
    Privileged(std::io::Error),
    /// Any other refusal (the port is taken, the address is not this host's).
    #[error(transparent)]
    Os(std::io::Error),
}

/// Serves the gateway on a bound listener until `shutdown`, calling control at `control`
/// with the client certificate in `tls_dir`, with the default [`Limits`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    control: &str,
    tls_dir: Option<&std::path::Path>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    serve_with(listener, control, tls_dir, &Limits::default(), shutdown).await
}

/// Serves plain HTTP only, on a bound listener, until `shutdown`: [`serve_public`] without
/// HTTPS.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    control: &str,
    tls_dir: Option<&std::path::Path>,
    limits: &Limits,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    serve_public(
        listener,
        Public::default(),
        control,
        tls_dir,
        limits,
        shutdown,
    )
    .await
}

/// What a gateway at a public name serves beside plain HTTP.
#[derive(Default)]
pub struct Public {
    /// A bound HTTPS listener and its TLS configuration.
    pub https: Option<(tokio::net::TcpListener, Arc<rustls::ServerConfig>)>,
    /// Where plain HTTP sends strangers: `https://HOST[:PORT]`.
    pub https_url: Option<String>,
    /// ACME http-01 challenge responses, one file per token.
    pub acme_challenges: Option<std::path::PathBuf>,
}

/// Serves the gateway until `shutdown`, calling control with the client certificate in
/// `tls_dir`: plain HTTP on `http` and, with `public.https`, HTTPS; one task per
/// connection, at most `limits.max_connections` at once over both, each closed when it takes
/// longer than `limits.header_read_timeout` to finish its TLS handshake or to send a
/// request's headers. On shutdown, connections finish the request they are on (bounded).
pub async fn serve_public(
    http: tokio::net::TcpListener,
    public: Public,
    control: &str,
    tls_dir: Option<&std::path::Path>,
    limits: &Limits,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let metrics = Metrics::default();
    let router = routes_with(
        server::control::client(control, tls_dir)?,
        limits,
        metrics.clone(),
        &public,
    );
    let plain = match &public.https_url {
        Some(url) => router.clone().layer(axum::middleware::from_fn_with_state(
            https::Redirect {
                url: url.clone(),
                local: limits.local.local_source,
            },
            https::redirect_strangers,
        )),
        None => router.clone(),
    };
    let accepting = Accepting {
        slots: Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1))),
        header_timeout: *limits.header_read_timeout,
        metrics,
        tasks: tokio_util::task::TaskTracker::new(),
        shutdown: shutdown.clone(),
    };
    match public.https {
        Some((listener, tls)) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls);
            let secure = https::secure(router);
            tokio::join!(
                accepting.run(http, plain, None),
                accepting.run(listener, secure, Some(acceptor)),
            );
        }
        None => accepting.run(http, plain, None).await,
    }
    accepting.tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), accepting.tasks.wait()).await;
    Ok(())
}

/// What the accept loops share: the connection slots, the deadlines, the tasks.
struct Accepting {
    slots: Arc<tokio::sync::Semaphore>,
    header_timeout: Duration,
    metrics: Metrics,
    tasks: tokio_util::task::TaskTracker,
    shutdown: CancellationToken,
}

impl Accepting {
    /// Accepts on `listener` until shutdown, serving each connection with `router`, through
    /// TLS when `tls` is given.
    async fn run(
        &self,
        listener: tokio::net::TcpListener,
        router: Router,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) {
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: wait, never spin.
                        tracing::warn!(%error, "HTTP accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = self.shutdown.cancelled() => break,
            };
            let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                self.metrics.connections_refused.inc();
                tracing::debug!(%peer, "HTTP connection refused: too many open");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let router = router.clone();
            let shutdown = self.shutdown.clone();
            let header_timeout = self.header_timeout;
            let tls = tls.clone();
            self.tasks.spawn(async move {
                match tls {
                    None => {
                        serve_connection(tcp, false, peer, router, header_timeout, shutdown).await;
                    }
                    Some(acceptor) => {
                        let handshake =
                            tokio::time::timeout(header_timeout, acceptor.accept(tcp)).await;
                        match handshake {
                            Ok(Ok(stream)) => {
                                serve_connection(
                                    stream,
                                    true,
                                    peer,
                                    router,
                                    header_timeout,
                                    shutdown,
                                )
                                .await;
                            }
                            Ok(Err(error)) => {
                                tracing::debug!(%peer, %error, "TLS handshake failed");
                            }
                            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                        }
                    }
                }
                drop(slot);
            });
        }
    }
}

/// `router` as one connection from `peer` serves it: with the client's address.
fn service_for(
    router: Router,
    peer: SocketAddr,
) -> hyper_util::service::TowerToHyperService<
    tower::util::MapRequest<
        Router,
        impl FnMut(
            axum::http::Request<hyper::body::Incoming>,
        ) -> axum::http::Request<hyper::body::Incoming>
        + Clone,
    >,
> {
    use tower::ServiceExt;
    let service = router.map_request(move |mut req: axum::http::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        req
    });
    hyper_util::service::TowerToHyperService::new(service)
}

/// Serves one connection to its end: HTTP/1.1 only on the plain port, HTTP/2 or HTTP/1.1
/// as ALPN chose on the HTTPS port.
async fn serve_connection<I>(
    io: I,
    http2: bool,
    peer: SocketAddr,
    router: Router,
    header_timeout: Duration,
    shutdown: CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_concurrent_streams(64)
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(10));
    let builder = if http2 { builder } else { builder.http1_only() };
    let conn =
        builder.serve_connection(hyper_util::rt::TokioIo::new(io), service_for(router, peer));
    tokio::pin!(conn);
    let served = tokio::select! {
        r = conn.as_mut() => r,
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(Duration::from_secs(1), conn.as_mut()).await {
                Ok(r) => r,
                Err(_) => Ok(()),
            }
        }
    };
    if let Err(error) = served {
        // A header-read timeout, a client gone mid-request, garbage: this client's affair.
        tracing::debug!(%peer, %error, "HTTP connection ended");
    }
}

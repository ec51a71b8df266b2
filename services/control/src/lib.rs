//! Ghost Stream's control plane (gRPC, tonic): creates, ends and lists streams, keeps the
//! relay directory and places viewers on relays. In memory only; it never touches media.
//!
//! The data plane never waits for control: relays check join tickets themselves, and streams
//! keep flowing while control is down. A restarted control rebuilds its directory from the
//! next heartbeats of ingest and relays (see [`directory`]).
//!
//! In a stack, control's gRPC takes only mutual TLS, and each RPC only from the roles that
//! have a reason to call it ([`callers`]): a client certificate from the stack's CA names
//! the caller's role. Anyone else who reaches the port is refused with `UNAUTHENTICATED`
//! (no service certificate) or `PERMISSION_DENIED` (a service that may not call this).

#![forbid(unsafe_code)]

pub mod directory;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::status::{Kind, Role};
use identity::Role as Caller;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use proto::control as pb;
use proto::control::control_server::{Control, ControlServer};
use proto::supervisor as sup;
use proto::supervisor::supervisor_client::SupervisorClient;
use server::clock;
use server::ops;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use directory::{Directory, Refusal, Timeouts};

/// Largest gRPC message control accepts.
const MAX_GRPC_MESSAGE: usize = 256 * 1024;

/// Control's configuration. Every flag is also an environment variable.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "ghost-control", version, about = "Ghost Stream control plane")]
pub struct Config {
    /// Where it listens, its files and the supervisor: what the supervisor sets.
    #[command(flatten)]
    pub wiring: Wiring,
    /// How long a join ticket stays valid.
    #[arg(long, env = "GHOST_TICKET_TTL", default_value = "10s")]
    pub ticket_ttl: humantime::Duration,
    /// Reports to control.
    #[command(flatten)]
    pub heartbeat: server::args::Heartbeat,
    /// A relay silent this long gets no more viewers.
    #[arg(long, env = "GHOST_RELAY_TIMEOUT", default_value = "1500ms")]
    pub relay_timeout: humantime::Duration,
    /// An ingest silent this long is gone, with its streams.
    #[arg(long, env = "GHOST_INGEST_TIMEOUT", default_value = "3s")]
    pub ingest_timeout: humantime::Duration,
    /// Log output.
    #[command(flatten)]
    pub logging: server::args::Logging,
}

/// Control's flags that the supervisor sets: declared once, here, parsed by control and
/// rendered by the supervisor from a value of this type (`server::flags::render`), so the
/// two cannot disagree.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args, serde::Serialize)]
pub struct Wiring {
    /// gRPC listen address. Internal: keep it off public addresses.
    #[arg(long, env = "GHOST_CONTROL_LISTEN", default_value = "127.0.0.1:7000")]
    pub listen: SocketAddr,
    /// Ops listener (/health, /metrics).
    #[arg(long, env = "GHOST_CONTROL_OPS", default_value = "127.0.0.1:9100")]
    pub ops_listen: SocketAddr,
    /// The join-ticket key.
    #[command(flatten)]
    pub ticket_key: server::args::TicketKey,
    /// Supervisor gRPC endpoint (http://host:port) to ask for relays when viewers are refused.
    #[arg(long, env = "GHOST_SUPERVISOR")]
    pub supervisor: Option<String>,
    /// Control's TLS directory (its server certificate, the stack's CA, which callers'
    /// client certificates must come from).
    #[command(flatten)]
    pub tls: server::args::OptionalTls,
}

/// Who may call which RPC: the roles whose client certificate control takes for it.
pub mod callers {
    use super::Caller::{self, Gateway, Ingest, Relay, Supervisor};

    /// Streams are created by the ingest that holds the publisher.
    pub const CREATE_STREAM: &[Caller] = &[Ingest];
    /// A stream is ended by its ingest, or by the supervisor.
    pub const END_STREAM: &[Caller] = &[Ingest, Supervisor];
    /// Any service may read what is live.
    pub const LIST_STREAMS: &[Caller] = &[Gateway, Supervisor, Ingest, Relay];
    /// Viewers are placed (and handed tickets) only through the viewer gateway, which
    /// answers them.
    pub const JOIN: &[Caller] = &[Gateway];
    /// Ingest reports what it carries.
    pub const INGEST_HEARTBEAT: &[Caller] = &[Ingest];
    /// Relays report what they carry, where viewers reach them and their certificate hash.
    pub const RELAY_HEARTBEAT: &[Caller] = &[Relay];
    /// Counters and the relay directory, for the supervisor (and any service).
    pub const STATUS: &[Caller] = &[Supervisor, Gateway, Ingest, Relay];
    /// Only the supervisor sees a relay die.
    pub const FORGET_RELAY: &[Caller] = &[Supervisor];
}

#[derive(Debug, Default, Clone)]
struct Metrics {
    streams: Gauge,
    relays: Gauge,
    joins: Counter,
    rejections: Counter,
    no_show_rejections: Counter,
    capacity_requests: Counter,
    refused_callers: Counter,
}

impl Metrics {
    fn register(&self, registry: &mut Registry) {
        registry.register("streams", "Live streams", self.streams.clone());
        registry.register("relays", "Relays in the directory", self.relays.clone());
        registry.register("joins", "Viewers placed on a relay", self.joins.clone());
        registry.register(
            "rejections",
            "Viewers refused because no relay had room",
            self.rejections.clone(),
        );
        registry.register(
            "no_show_rejections",
            "Viewers refused while relays were held by unused reservations (not demand)",
            self.no_show_rejections.clone(),
        );
        registry.register(
            "capacity_requests",
            "Requests for relays sent to the supervisor",
            self.capacity_requests.clone(),
        );
        registry.register(
            "refused_callers",
            "Calls refused: no service certificate, or one of a role that may not call",
            self.refused_callers.clone(),
        );
    }
}

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct Service {
    dir: Arc<Mutex<Directory>>,
    ticket_key: Option<Arc<Vec<u8>>>,
    ticket_ttl: Duration,
    heartbeat_ms: u32,
    started_at_us: u64,
    metrics: Metrics,
    capacity: Option<tokio::sync::mpsc::Sender<String>>,
    /// Whether callers must show a service certificate (control serves mutual TLS).
    authenticate: bool,
}

impl Service {
    /// Lets the call `rpc` through only from a caller whose verified client certificate
    /// names one of `allowed`.
    fn authorize<T>(
        &self,
        request: &Request<T>,
        rpc: &str,
        allowed: &[Caller],
    ) -> Result<(), Status> {
        if !self.authenticate {
            return Ok(());
        }
        server::control::authorize(request, rpc, allowed).map_err(|(role, refused)| {
            self.metrics.refused_callers.inc();
            tracing::warn!(rpc, role = ?role, peer = ?request.remote_addr(), "call refused");
            refused
        })
    }

    fn dir(&self) -> std::sync::MutexGuard<'_, Directory> {
        // A panic while holding the lock would be a bug; the state is still usable soft state.
        self.dir.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn refresh_gauges(&self, dir: &Directory) {
        self.metrics
            .relays
            .set(dir.relays(Instant::now()).len() as i64);
    }
}

/// The one place control's refusals become gRPC statuses.
fn status(refusal: Refusal) -> Status {
    match refusal {
        Refusal::NotFound(s) => Status::not_found(format!("no live stream {s:?}")),
        Refusal::NameInUse(n) => {
            Status::already_exists(format!("a live stream is already named {n:?}"))
        }
        Refusal::NoCapacity(reason) => Status::resource_exhausted(reason),
        Refusal::Invalid(reason) => Status::invalid_argument(reason),
    }
}

fn new_stream_id() -> String {
    let n: u64 = rand::random();
    format!("{n:016x}")
}

#[tonic::async_trait]
impl Control for Service {
    async fn create_stream(
        &self,
        request: Request<pb::CreateStreamRequest>,
    ) -> Result<Response<pb::CreateStreamResponse>, Status> {
        self.authorize(&request, "CreateStream", callers::CREATE_STREAM)?;
        let req = request.into_inner();
        let mut dir = self.dir();
        let stream = dir
            .create_stream(
                &req.name,
                &req.ingest_id,
                &req.protocol,
                new_stream_id(),
                Instant::now(),
                clock::now_us(),
            )
            .map_err(status)?;
        tracing::info!(
            stream = %stream.id,
            name = %stream.name,
            ingest = %req.ingest_id,
            protocol = %stream.protocol,
            "stream live"
        );
        self.metrics
            .streams
            .set(dir.list(Instant::now()).len() as i64);
        Ok(Response::new(pb::CreateStreamResponse {
            stream: Some(stream),
        }))
    }

    async fn end_stream(
        &self,
        request: Request<pb::EndStreamRequest>,
    ) -> Result<Response<pb::EndStreamResponse>, Status> {
        self.authorize(&request, "EndStream", callers::END_STREAM)?;
        let req = request.into_inner();
        let mut dir = self.dir();
        let existed = dir.end_stream(&req.id, Instant::now());
        if existed {
            tracing::info!(stream = %req.id, "stream ended");
        }
        self.metrics
            .streams
            .set(dir.list(Instant::now()).len() as i64);
        Ok(Response::new(pb::EndStreamResponse { existed }))
    }

    async fn list_streams(
        &self,
        request: Request<pb::ListStreamsRequest>,
    ) -> Result<Response<pb::ListStreamsResponse>, Status> {
        self.authorize(&request, "ListStreams", callers::LIST_STREAMS)?;
        let streams = self.dir().list(Instant::now());
        Ok(Response::new(pb::ListStreamsResponse { streams }))
    }

    async fn join(
        &self,
        request: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        self.authorize(&request, "Join", callers::JOIN)?;
        let req = request.into_inner();
        let placed = {
            let mut dir = self.dir();
            let now = Instant::now();
            let placed = dir.join(&req.stream, now);
            if let Err(Refusal::NoCapacity(reason)) = &placed {
                self.metrics.rejections.inc();
                if dir.refusal_is_demand(now) {
                    tracing::warn!(stream = %req.stream, %reason, "viewer refused: no relay has room");
                    if let Some(tx) = &self.capacity {
                        // Full queue: a request is already on its way.
                        let _ = tx.try_send(reason.clone());
                    }
                } else {
                    // Seats held for join answers nobody used (a join flood): released
                    // within seconds, and no reason to start relays.
                    self.metrics.no_show_rejections.inc();
                    tracing::debug!(stream = %req.stream, %reason, "viewer refused: seats reserved for viewers that did not come");
                }
            }
            placed
        }
        .map_err(status)?;
        self.metrics.joins.inc();
        let ticket = match &self.ticket_key {
            Some(key) => wire::ticket::issue(
                key,
                &placed.stream_id,
                &placed.relay_id,
                clock::now_ms() + self.ticket_ttl.as_millis() as u64,
                rand::random(),
            )
            .to_vec(),
            None => Vec::new(),
        };
        Ok(Response::new(pb::JoinResponse {
            stream_id: placed.stream_id,
            relay_id: placed.relay_id,
            relay_addr: placed.relay_addr,
            server_name: placed.server_name,
            cert_sha256: placed.cert_sha256,
            cert_public: placed.cert_public,
            ticket,
        }))
    }

    async fn ingest_heartbeat(
        &self,
        request: Request<pb::IngestHeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        self.authorize(&request, "IngestHeartbeat", callers::INGEST_HEARTBEAT)?;
        let mut dir = self.dir();
        dir.ingest_heartbeat(request.into_inner(), Instant::now())
            .map_err(status)?;
        self.metrics
            .streams
            .set(dir.list(Instant::now()).len() as i64);
        Ok(Response::new(pb::HeartbeatResponse {
            interval_ms: self.heartbeat_ms,
        }))
    }

    async fn relay_heartbeat(
        &self,
        request: Request<pb::RelayHeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        self.authorize(&request, "RelayHeartbeat", callers::RELAY_HEARTBEAT)?;
        let mut dir = self.dir();
        dir.relay_heartbeat(request.into_inner(), Instant::now())
            .map_err(status)?;
        self.refresh_gauges(&dir);
        Ok(Response::new(pb::HeartbeatResponse {
            interval_ms: self.heartbeat_ms,
        }))
    }

    async fn forget_relay(
        &self,
        request: Request<pb::ForgetRelayRequest>,
    ) -> Result<Response<pb::ForgetRelayResponse>, Status> {
        self.authorize(&request, "ForgetRelay", callers::FORGET_RELAY)?;
        let req = request.into_inner();
        let mut dir = self.dir();
        let existed = dir.forget_relay(&req.relay_id);
        if existed {
            tracing::info!(relay = %req.relay_id, "relay forgotten: it died");
        }
        self.refresh_gauges(&dir);
        Ok(Response::new(pb::ForgetRelayResponse { existed }))
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.authorize(&request, "Status", callers::STATUS)?;
        let now = Instant::now();
        let mut dir = self.dir();
        Ok(Response::new(pb::StatusResponse {
            streams: dir.list(now),
            relays: dir.relays(now),
            joins: dir.joins,
            rejections: dir.rejections,
            started_at_us: self.started_at_us,
        }))
    }
}

/// Why control could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The ticket key file cannot be read.
    #[error("reading the ticket key {}", path.display())]
    TicketKey {
        /// The file.
        path: std::path::PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC address could not be bound.
    #[error("binding gRPC on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The ops listener failed.
    #[error(transparent)]
    Ops(#[from] ops::Error),
    /// The supervisor's address, or a file of the TLS directory, is unusable.
    #[error(transparent)]
    Setup(#[from] server::control::Error),
    /// tonic refused the TLS settings.
    #[error("setting up gRPC's TLS")]
    GrpcTls(#[source] tonic::transport::Error),
    /// The gRPC server failed.
    #[error("gRPC server failed")]
    Grpc(#[source] tonic::transport::Error),
}

/// Control with its listeners bound, ready to run.
pub struct Server {
    grpc: tokio::net::TcpListener,
    ops: tokio::net::TcpListener,
    service: Service,
    registry: Registry,
    supervisor: Option<(
        SupervisorClient<Channel>,
        tokio::sync::mpsc::Receiver<String>,
    )>,
    tls: Option<tonic::transport::ServerTlsConfig>,
}

impl Server {
    /// Binds both listeners and loads the ticket key.
    pub async fn bind(config: &Config) -> Result<Server, Error> {
        let ticket_key = match &config.wiring.ticket_key.file {
            Some(path) => Some(Arc::new(std::fs::read(path).map_err(|source| {
                Error::TicketKey {
                    path: path.clone(),
                    source,
                }
            })?)),
            None => None,
        };
        let grpc = tokio::net::TcpListener::bind(config.wiring.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: config.wiring.listen,
                source,
            })?;
        let ops = ops::bind(config.wiring.ops_listen).await?;
        let (capacity, supervisor) = match &config.wiring.supervisor {
            Some(url) => {
                // With a TLS directory, over mutual TLS: the supervisor takes capacity
                // requests from control's identity only.
                let endpoint = server::control::endpoint(
                    url,
                    config.wiring.tls.dir.as_deref(),
                    identity::SUPERVISOR_NAME,
                )?
                .connect_timeout(Duration::from_secs(1))
                .timeout(Duration::from_secs(2));
                let client = SupervisorClient::new(endpoint.connect_lazy());
                let (tx, rx) = tokio::sync::mpsc::channel(1);
                (Some(tx), Some((client, rx)))
            }
            None => (None, None),
        };
        let tls = config
            .wiring
            .tls
            .dir
            .as_deref()
            .map(server::control::server_tls)
            .transpose()?;
        if tls.is_none() {
            tracing::warn!(
                "no --tls-dir: gRPC is plain and takes calls from anyone who reaches it"
            );
        }
        let metrics = Metrics::default();
        let mut registry = Registry::with_prefix("ghost_control");
        metrics.register(&mut registry);
        let service = Service {
            dir: Arc::new(Mutex::new(Directory::new(Timeouts {
                relay: *config.relay_timeout,
                ingest: *config.ingest_timeout,
            }))),
            ticket_key,
            ticket_ttl: *config.ticket_ttl,
            heartbeat_ms: config.heartbeat.interval.as_millis() as u32,
            started_at_us: clock::now_us(),
            metrics,
            capacity,
            authenticate: tls.is_some(),
        };
        Ok(Server {
            grpc,
            ops,
            service,
            registry,
            supervisor,
            tls,
        })
    }

    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> Result<SocketAddr, Error> {
        Ok(ops::local(&self.grpc)?)
    }

    /// The bound ops address.
    pub fn ops_addr(&self) -> Result<SocketAddr, Error> {
        Ok(ops::local(&self.ops)?)
    }

    /// Serves until `shutdown`; an error if any part fails.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let incoming = ops::nodelay_incoming(self.grpc);
        let svc = ControlServer::new(self.service.clone())
            .max_decoding_message_size(MAX_GRPC_MESSAGE)
            .max_encoding_message_size(4 * MAX_GRPC_MESSAGE);
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = self.tls {
            builder = builder.tls_config(tls).map_err(Error::GrpcTls)?;
        }
        let grpc = builder
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned());
        let ops = ops::serve(
            self.ops,
            ops::routes(Arc::new(self.registry)),
            shutdown.clone(),
        );
        let capacity = async {
            match self.supervisor {
                Some((client, rx)) => {
                    ask_for_capacity(client, rx, self.service.dir.clone(), self.service.metrics)
                        .await
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = grpc => r.map_err(Error::Grpc),
            r = ops => Ok(r?),
            () = capacity => Ok(()),
        }
    }
}

/// Forwards refusals to the supervisor as capacity requests, at most one in flight; refusals
/// that arrive meanwhile are folded into the next request.
async fn ask_for_capacity(
    mut client: SupervisorClient<Channel>,
    mut rx: tokio::sync::mpsc::Receiver<String>,
    dir: Arc<Mutex<Directory>>,
    metrics: Metrics,
) {
    while let Some(reason) = rx.recv().await {
        let mut rejected = 1;
        while rx.try_recv().is_ok() {
            rejected += 1;
        }
        let relays = dir.lock().map_or(0, |d| d.accepting_relays()) as u32;
        metrics.capacity_requests.inc();
        match client
            .request_capacity(sup::CapacityRequest {
                rejected_viewers: rejected,
                relays,
                reason,
            })
            .await
        {
            Ok(resp) => {
                let r = resp.into_inner();
                tracing::info!(
                    starting = r.relays_starting,
                    total = r.relays_total,
                    max = r.max_relays,
                    "supervisor answered capacity request"
                );
            }
            Err(error) => tracing::warn!(%error, "capacity request failed"),
        }
    }
}

/// Runs control with `config` until SIGINT/SIGTERM: the whole `ghost-control` binary.
pub async fn main(config: Config) -> Result<(), Error> {
    server::telemetry::init(config.logging.log_format, "info");
    let server = Server::bind(&config).await?;
    let grpc = server.grpc_addr()?;
    let ops_addr = server.ops_addr()?;
    tracing::info!(%grpc, ops = %ops_addr, "control listening");
    server::ready::announce(Kind::Control, &[(Role::Grpc, grpc), (Role::Ops, ops_addr)]);
    server.run(server::shutdown::on_signal()).await
}

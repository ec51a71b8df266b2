//! Ghost Stream's relay: fans streams out to viewers.
//!
//! A viewer connects over QUIC with a join ticket from control, in one of two ways on the
//! same UDP port, told apart by ALPN:
//! - `ghost-view/1`: the native viewer (`ghost watch`), the session stream on QUIC itself;
//! - `h3`: WebTransport, what a browser speaks: `new WebTransport("https://HOST:PORT/")`
//!   (any path), then the session stream is the session's first bidirectional stream.
//!   HTTP/3 itself is left to `web_transport_quinn`.
//!
//! - WebSocket (RFC 6455), the TCP carrier, on the TCP port of the same number: for browsers
//!   without WebTransport (Safari) and networks that block UDP. `ws://HOST:PORT/` on a
//!   loopback stack, `wss://` (told apart by the first byte, a TLS handshake's) with the
//!   relay's certificate; the subprotocol `ghost-ws.1` carries the same streams
//!   ([`transport::ws`]).
//!
//! A native viewer's join may ask for [`wire::Delivery::OneStream`], a benchmark's control
//! case: the same service with every group on its session stream, in the WebSocket carrier's
//! framing ([`transport::one_stream`]); the other carriers are refused it.
//!
//! All three get exactly the same service and the same close codes (a browser reads them as the
//! session's `closeCode`; group streams are reset with the same `group_skipped` code). A
//! connection takes a seat only once its `Join` carries a valid ticket that was not used
//! before (each ticket seats one viewer); idle or ticketless connections hold none and are
//! closed after [`quic::SESSION_TIMEOUT`]. The relay seats at most `capacity` viewers; past
//! it, a joining viewer is closed at once with [`Code::Capacity`]. A relay that does not carry the stream yet subscribes to it at ingest
//! (pull on demand: the relay holds no state a restart would lose). Each viewer gets the
//! init segment, the current group from its keyframe, then live groups; one that falls
//! behind skips whole groups (see [`transport::fanout`]). When the publisher goes, viewers
//! get `End` and the connection closes with [`Code::Ended`].

#![forbid(unsafe_code)]

mod metrics;
mod report;
mod seats;
mod upstream;
mod viewer;
mod websocket;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::status::{Kind, Role};
use prometheus_client::registry::Registry;
use server::ops;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use transport::admit::Admission;
use transport::quic::{self, Windows};
use transport::track::Track;
use wire::Code;

use crate::metrics::Metrics;
use crate::report::{Certificate, Report, follow_certificate};
use crate::seats::{Seats, UsedTickets};
use crate::viewer::viewer;
use crate::websocket::{Carriage, bind_carriers, host_of, websocket_loop};

/// The relay's configuration. Every flag is also an environment variable.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "ghost-relay", version, about = "Ghost Stream relay")]
pub struct Config {
    /// Where it listens, whom it reaches and who it is: what the supervisor sets.
    #[command(flatten)]
    pub wiring: Wiring,
    /// How often to look for a renewed certificate (`relay.pem` in the TLS directory). The
    /// supervisor renews a week before the end, so any interval far below that would do; a
    /// short one gets the new hash to the gateway's join answers soon after a renewal.
    #[arg(long, env = "GHOST_RELAY_CERT_CHECK", default_value = "30s")]
    pub cert_check: humantime::Duration,
    /// Reports to control.
    #[command(flatten)]
    pub heartbeat: server::args::Heartbeat,
    /// Per-source limits on QUIC connections (WebSocket connections count toward the same
    /// per-source cap).
    #[command(flatten)]
    pub quic_limits: transport::admit::QuicLimits,
    /// Web origins besides the relay's own host whose pages may open its WebSocket
    /// (`https://example.com`); repeatable, or comma-separated in the environment.
    #[arg(
        long = "websocket-origin",
        env = "GHOST_RELAY_WEBSOCKET_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGIN"
    )]
    pub websocket_origins: Vec<String>,
    /// Log output.
    #[command(flatten)]
    pub logging: server::args::Logging,
}

/// The relay's flags that the supervisor sets for each relay it starts: declared once, here,
/// parsed by the relay and rendered by the supervisor from a value of this type
/// (`server::flags::render`), so the two cannot disagree.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args, serde::Serialize)]
pub struct Wiring {
    /// QUIC (UDP) listen address for viewers.
    #[arg(long, env = "GHOST_RELAY_LISTEN", default_value = "0.0.0.0:4500")]
    pub listen: SocketAddr,
    /// Ops listener (/health, /metrics).
    #[arg(long, env = "GHOST_RELAY_OPS", default_value = "127.0.0.1:9200")]
    pub ops_listen: SocketAddr,
    /// Where control is.
    #[command(flatten)]
    pub control: server::args::Control,
    /// Ingest's QUIC address (host:port).
    #[arg(long, env = "GHOST_INGEST", default_value = "127.0.0.1:4433")]
    pub ingest: String,
    /// This relay's id in control's directory.
    #[arg(long, env = "GHOST_RELAY_ID", default_value = "relay-1")]
    pub id: String,
    /// Viewers admitted at once, at most.
    #[arg(long, env = "GHOST_RELAY_CAPACITY", default_value_t = 200)]
    pub capacity: u32,
    /// The congestion controller of viewers' QUIC connections (WebTransport included):
    /// `bbr` (see `Congestion::FOR_VIEWERS` for why), `cubic` or `newreno`. WebSocket viewers
    /// use the kernel's TCP controller.
    #[arg(long, env = "GHOST_RELAY_CONGESTION", default_value = "bbr")]
    pub congestion: quic::Congestion,
    /// The stack's certificate and key.
    #[command(flatten)]
    pub tls: server::args::Tls,
    /// The join-ticket key.
    #[command(flatten)]
    pub ticket_key: server::args::TicketKey,
    /// Address viewers use to reach this relay: `HOST:PORT`, or a bare `HOST` with the bound
    /// port (defaults to the bound address).
    #[arg(long, env = "GHOST_RELAY_ADVERTISE")]
    pub advertise: Option<String>,
    /// The host's own connections besides loopback, exempt from the per-source limits.
    #[command(flatten)]
    pub local: identity::peer::LocalSource,
}

type Slot = Arc<OnceCell<Track>>;

struct State {
    id: String,
    /// Viewers seated, at most the capacity; none while draining.
    seats: Seats,
    /// Tickets already used, so none seats a second connection.
    used_tickets: UsedTickets,
    ticket_key: Option<Vec<u8>>,
    ingest: upstream::Ingest,
    upstream: quinn::Endpoint,
    streams: Mutex<HashMap<String, Slot>>,
    metrics: Metrics,
    tasks: tokio_util::task::TaskTracker,
    shutdown: CancellationToken,
}

impl State {
    fn streams(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The relay with its sockets bound, ready to run.
pub struct Server {
    endpoint: quinn::Endpoint,
    websocket: tokio::net::TcpListener,
    origins: transport::ws::Origins,
    admission: Arc<Admission>,
    ops: tokio::net::TcpListener,
    registry: Registry,
    state: Arc<State>,
    control: proto::control::control_client::ControlClient<tonic::transport::Channel>,
    advertise: String,
    certs: Arc<identity::Reloading>,
    cert_public: Arc<std::sync::atomic::AtomicBool>,
    files: identity::Files,
    cert_check: Duration,
    heartbeat: Duration,
}

/// Why a relay could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The TLS files are missing or unusable.
    #[error(transparent)]
    Identity(#[from] identity::Error),
    /// A QUIC endpoint could not be set up.
    #[error(transparent)]
    Quic(#[from] quic::EndpointError),
    /// The ticket key file cannot be read.
    #[error("reading the ticket key {}", path.display())]
    TicketKey {
        /// The file.
        path: std::path::PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The WebSocket carrier's TCP port (the QUIC port's number) could not be bound.
    #[error("binding the WebSocket carrier on {addr}/tcp (the QUIC port's number)")]
    BindWebSocket {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A bound socket's address could not be read back.
    #[error("reading the {what} address")]
    Address {
        /// Which socket.
        what: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The ops listener failed.
    #[error(transparent)]
    Ops(#[from] ops::Error),
    /// Control's address, or a file of the TLS directory, is unusable.
    #[error(transparent)]
    Setup(#[from] server::control::Error),
}

/// A closure making an [`Error::Address`] for the `what` socket, for `map_err`.
pub(crate) fn address(what: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Address { what, source }
}

impl Server {
    /// Loads TLS files and the ticket key, binds the QUIC and ops sockets.
    pub async fn bind(config: &Config) -> Result<Server, Error> {
        let files = identity::Files::in_dir(&config.wiring.tls.dir);
        let certs = Arc::new(identity::Reloading::load(
            &files.relay_cert,
            &files.relay_key,
        )?);
        let cert_public = Arc::new(std::sync::atomic::AtomicBool::new(
            files.relay_cert_is_public()?,
        ));
        let (endpoint, websocket) =
            bind_carriers(config.wiring.listen, &certs, config.wiring.congestion).await?;
        // Ingest serves subscriptions only to a relay's client certificate.
        let upstream = quic::client_as(
            &files.ca,
            quic::ALPN_SUBSCRIBE,
            &files.client_identity()?,
            Windows::RECEIVER,
        )?;
        let ops = ops::bind(config.wiring.ops_listen).await?;
        let ticket_key = match &config.wiring.ticket_key.file {
            Some(p) => Some(std::fs::read(p).map_err(|source| Error::TicketKey {
                path: p.clone(),
                source,
            })?),
            None => None,
        };
        let bound = endpoint.local_addr().map_err(address("QUIC"))?;
        let metrics = Metrics::default();
        let mut registry = Registry::with_prefix("ghost_relay");
        metrics.register(&mut registry);
        let admission = Admission::new(config.quic_limits.limits(&config.wiring.local));
        admission.register(&mut registry);
        let advertise = server::args::advertised(config.wiring.advertise.as_deref(), bound);
        Ok(Server {
            origins: transport::ws::Origins {
                host: host_of(&advertise).to_string(),
                extra: config.websocket_origins.clone(),
            },
            websocket,
            advertise,
            certs,
            cert_public,
            files,
            cert_check: *config.cert_check,
            endpoint,
            admission,
            ops,
            registry,
            control: server::control::client(
                &config.wiring.control.url,
                Some(&config.wiring.tls.dir),
            )?,
            heartbeat: *config.heartbeat.interval,
            state: Arc::new(State {
                id: config.wiring.id.clone(),
                seats: Seats::new(config.wiring.capacity),
                used_tickets: UsedTickets::default(),
                ticket_key,
                ingest: upstream::Ingest::new(config.wiring.ingest.clone()),
                upstream,
                streams: Mutex::new(HashMap::new()),
                metrics,
                tasks: tokio_util::task::TaskTracker::new(),
                shutdown: CancellationToken::new(),
            }),
        })
    }

    /// The bound QUIC address.
    pub fn quic_addr(&self) -> Result<SocketAddr, Error> {
        self.endpoint.local_addr().map_err(address("QUIC"))
    }

    /// The bound WebSocket (TCP) address: the QUIC port's number.
    pub fn websocket_addr(&self) -> Result<SocketAddr, Error> {
        self.websocket.local_addr().map_err(address("WebSocket"))
    }

    /// The bound ops address.
    pub fn ops_addr(&self) -> Result<SocketAddr, Error> {
        Ok(ops::local(&self.ops)?)
    }

    /// Serves until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let state = self.state.clone();
        let websocket = websocket_loop(
            self.websocket,
            Carriage {
                state: self.state.clone(),
                admission: self.admission.clone(),
                tls: tokio_rustls::TlsAcceptor::from(Arc::new(identity::websocket_server_config(
                    self.certs.clone(),
                )?)),
                origins: Arc::new(self.origins),
            },
            shutdown.clone(),
        );
        let accept = quic::accept_loop(
            self.endpoint,
            self.admission,
            shutdown.clone(),
            move |conn| viewer(state.clone(), conn),
        );
        let drain_state = self.state.clone();
        let routes = ops::routes(Arc::new(self.registry)).route(
            "/drain",
            axum::routing::post(move || {
                let state = drain_state.clone();
                async move {
                    state.seats.drain();
                    tracing::info!("draining: no new viewers");
                    format!("draining; {} viewers left\n", state.metrics.viewers.get())
                }
            }),
        );
        let ops = ops::serve(self.ops, routes, shutdown.clone());
        let report = Report {
            state: self.state.clone(),
            control: self.control,
            addr: self.advertise,
            certs: self.certs.clone(),
            cert_public: self.cert_public.clone(),
        };
        let renewals = follow_certificate(
            Certificate {
                reloading: self.certs,
                public: self.cert_public,
                files: self.files,
            },
            self.cert_check,
            shutdown.clone(),
        );
        let heartbeat =
            server::control::heartbeat_loop(self.heartbeat, shutdown.clone(), move || {
                let report = report.clone();
                async move { report.beat().await }
            });
        let result = tokio::select! {
            () = accept => Ok(()),
            () = websocket => Ok(()),
            r = ops => r.map_err(Error::from),
            () = heartbeat => Ok(()),
            () = renewals => Ok(()),
        };
        self.state.shutdown.cancel();
        self.state.tasks.close();
        self.state.upstream.close(
            quinn::VarInt::from_u32(Code::Normal.into()),
            b"relay shutting down",
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), self.state.tasks.wait()).await;
        result
    }
}

/// Runs the relay with `config` until SIGINT/SIGTERM: the whole `ghost-relay` binary.
pub async fn main(config: Config) -> Result<(), Error> {
    server::telemetry::init(config.logging.log_format, "info");
    let server = Server::bind(&config).await?;
    let quic_addr = server.quic_addr()?;
    let ops_addr = server.ops_addr()?;
    tracing::info!(quic = %quic_addr, ops = %ops_addr, id = %config.wiring.id, capacity = config.wiring.capacity, "relay listening");
    tracing::info!(websocket = %server.websocket_addr()?, "WebSocket carrier listening");
    server::ready::announce(
        Kind::Relay,
        &[(Role::Quic, quic_addr), (Role::Ops, ops_addr)],
    );
    server.run(server::shutdown::on_signal()).await
}

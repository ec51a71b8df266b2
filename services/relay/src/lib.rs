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

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use api::status::{Kind, Role};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use proto::control as pb;
use quinn::Connection;
use server::clock;
use server::ops;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use transport::admit::Admission;
use transport::fanout;
use transport::peer::{self, Peer};
use transport::quic::{self, Session, Windows};
use transport::tls;
use transport::track::{Track, TrackInfo};
use wire::{Code, Message};

/// How long a relay keeps a stream with no viewer before dropping its subscription.
const LINGER: Duration = Duration::from_secs(3);

/// The relay's configuration. Every flag is also an environment variable.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "ghost-relay", version, about = "Ghost Stream relay")]
pub struct Config {
    /// QUIC (UDP) listen address for viewers.
    #[arg(long, env = "GHOST_RELAY_LISTEN", default_value = "0.0.0.0:4500")]
    pub listen: SocketAddr,
    /// Address viewers use to reach this relay: `HOST:PORT`, or a bare `HOST` with the bound
    /// port (defaults to the bound address).
    #[arg(long, env = "GHOST_RELAY_ADVERTISE")]
    pub advertise: Option<String>,
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
    /// The stack's certificate and key.
    #[command(flatten)]
    pub tls: server::args::Tls,
    /// How often to look for a renewed certificate (`relay.pem` in the TLS directory). The
    /// supervisor renews a week before the end, so any interval far below that would do; a
    /// short one gets the new hash to the gateway's join answers soon after a renewal.
    #[arg(long, env = "GHOST_RELAY_CERT_CHECK", default_value = "30s")]
    pub cert_check: humantime::Duration,
    /// The join-ticket key.
    #[command(flatten)]
    pub ticket_key: server::args::TicketKey,
    /// Reports to control.
    #[command(flatten)]
    pub heartbeat: server::args::Heartbeat,
    /// Per-source limits on QUIC connections (WebSocket connections count toward the same
    /// per-source cap).
    #[command(flatten)]
    pub quic_limits: server::args::QuicLimits,
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

#[derive(Debug, Default, Clone)]
struct Metrics {
    viewers: Gauge,
    /// The part of `viewers` on WebTransport: how many are browsers.
    webtransport_viewers: Gauge,
    /// The part of `viewers` on WebSocket, the TCP carrier.
    websocket_viewers: Gauge,
    /// WebSocket connections that never completed their handshake (timeout, not a
    /// WebSocket, refused origin or subprotocol).
    websocket_handshake_failures: Counter,
    /// WebSocket connections refused at the connection cap.
    websocket_refused: Counter,
    streams: Gauge,
    rejections: Counter,
    joins: Counter,
    /// Viewers seated on a valid ticket, since start (control's reservations, used).
    seated: Counter,
    fanout: fanout::Metrics,
}

impl Metrics {
    fn register(&self, registry: &mut Registry) {
        registry.register("viewers", "Viewers connected", self.viewers.clone());
        registry.register(
            "webtransport_viewers",
            "Viewers connected over WebTransport (included in viewers)",
            self.webtransport_viewers.clone(),
        );
        registry.register(
            "websocket_viewers",
            "Viewers connected over WebSocket (included in viewers)",
            self.websocket_viewers.clone(),
        );
        registry.register(
            "websocket_handshake_failures",
            "WebSocket connections closed before a complete handshake",
            self.websocket_handshake_failures.clone(),
        );
        registry.register(
            "websocket_refused",
            "WebSocket connections refused: too many from one address, or in all",
            self.websocket_refused.clone(),
        );
        registry.register("streams", "Streams carried", self.streams.clone());
        registry.register(
            "rejections",
            "Viewers refused: at capacity, bad ticket or unknown stream",
            self.rejections.clone(),
        );
        registry.register("joins", "Viewers admitted", self.joins.clone());
        registry.register(
            "seated",
            "Viewers seated on a valid ticket",
            self.seated.clone(),
        );
        self.fanout.register(registry);
    }
}

type Slot = Arc<OnceCell<Track>>;

struct State {
    id: String,
    capacity: u32,
    /// False once draining: viewers stay, new ones are refused and control stops placing.
    accepting: std::sync::atomic::AtomicBool,
    seats: Arc<tokio::sync::Semaphore>,
    /// Tickets already used, so none seats a second connection.
    used_tickets: UsedTickets,
    ticket_key: Option<Vec<u8>>,
    ingest: String,
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
    certs: Arc<tls::Reloading>,
    cert_public: Arc<std::sync::atomic::AtomicBool>,
    files: tls::Files,
    cert_check: Duration,
    heartbeat: Duration,
}

impl Server {
    /// Loads TLS files and the ticket key, binds the QUIC and ops sockets.
    pub async fn bind(config: &Config) -> Result<Server> {
        let files = tls::Files::in_dir(&config.tls.dir);
        let certs = Arc::new(tls::Reloading::load(&files.relay_cert, &files.relay_key)?);
        let cert_public = Arc::new(std::sync::atomic::AtomicBool::new(
            files.relay_cert_is_public()?,
        ));
        let (endpoint, websocket) = bind_carriers(config.listen, &certs).await?;
        // Ingest serves subscriptions only to a relay's client certificate.
        let upstream = quic::client_as(
            &files.ca,
            quic::ALPN_SUBSCRIBE,
            &files.client_identity()?,
            Windows::RECEIVER,
        )?;
        let ops = ops::bind(config.ops_listen).await?;
        let ticket_key = match &config.ticket_key.file {
            Some(p) => Some(
                std::fs::read(p)
                    .with_context(|| format!("reading the ticket key {}", p.display()))?,
            ),
            None => None,
        };
        let bound = endpoint.local_addr().context("reading the QUIC address")?;
        let metrics = Metrics::default();
        let mut registry = Registry::with_prefix("ghost_relay");
        metrics.register(&mut registry);
        let admission = Admission::new(config.quic_limits.limits());
        admission.register(&mut registry);
        let advertise = server::args::advertised(config.advertise.as_deref(), bound);
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
            control: server::control::client(&config.control.url, Some(&config.tls.dir))?,
            heartbeat: *config.heartbeat.interval,
            state: Arc::new(State {
                id: config.id.clone(),
                capacity: config.capacity,
                accepting: std::sync::atomic::AtomicBool::new(true),
                seats: Arc::new(tokio::sync::Semaphore::new(config.capacity as usize)),
                used_tickets: UsedTickets::default(),
                ticket_key,
                ingest: config.ingest.clone(),
                upstream,
                streams: Mutex::new(HashMap::new()),
                metrics,
                tasks: tokio_util::task::TaskTracker::new(),
                shutdown: CancellationToken::new(),
            }),
        })
    }

    /// The bound QUIC address.
    pub fn quic_addr(&self) -> Result<SocketAddr> {
        self.endpoint
            .local_addr()
            .context("reading the QUIC address")
    }

    /// The bound WebSocket (TCP) address: the QUIC port's number.
    pub fn websocket_addr(&self) -> Result<SocketAddr> {
        self.websocket
            .local_addr()
            .context("reading the WebSocket address")
    }

    /// The bound ops address.
    pub fn ops_addr(&self) -> Result<SocketAddr> {
        ops::local(&self.ops)
    }

    /// Serves until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let state = self.state.clone();
        let websocket = websocket_loop(
            self.websocket,
            Carriage {
                state: self.state.clone(),
                admission: self.admission.clone(),
                tls: tokio_rustls::TlsAcceptor::from(Arc::new(tls::websocket_server_config(
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
                    state
                        .accepting
                        .store(false, std::sync::atomic::Ordering::Relaxed);
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
            r = ops => r,
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

/// Takes the renewed certificate for new connections (the heartbeat then reports its hash,
/// which the gateway hands to browsers) until `shutdown`.
/// The certificate a relay serves, and whether it is the operator's (from a public CA).
struct Certificate {
    reloading: Arc<tls::Reloading>,
    public: Arc<std::sync::atomic::AtomicBool>,
    files: tls::Files,
}

async fn follow_certificate(cert: Certificate, every: Duration, shutdown: CancellationToken) {
    let follow = cert.reloading.follow(every, |certs| {
        // An operator may swap their certificate in, or take it out, while we run.
        let public = cert.files.relay_cert_is_public().unwrap_or(false);
        cert.public
            .store(public, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(cert_sha256 = %certs.leaf_sha256(), public, "certificate renewed");
    });
    tokio::select! {
        () = follow => {}
        () = shutdown.cancelled() => {}
    }
}

#[derive(Clone)]
struct Report {
    state: Arc<State>,
    control: proto::control::control_client::ControlClient<tonic::transport::Channel>,
    addr: String,
    certs: Arc<tls::Reloading>,
    cert_public: Arc<std::sync::atomic::AtomicBool>,
}

impl Report {
    async fn beat(&self) -> Result<Duration, tonic::Status> {
        let state = &self.state;
        let streams: Vec<pb::StreamLoad> = state
            .streams()
            .iter()
            .filter_map(|(id, slot)| {
                slot.get().map(|t| pb::StreamLoad {
                    stream_id: id.clone(),
                    viewers: t.readers() as u32,
                })
            })
            .collect();
        let m = &state.metrics;
        let req = pb::RelayHeartbeatRequest {
            relay_id: state.id.clone(),
            addr: self.addr.clone(),
            server_name: tls::RELAY_NAME.to_string(),
            cert_sha256: self.certs.leaf_sha256(),
            cert_public: self.cert_public.load(std::sync::atomic::Ordering::Relaxed),
            capacity: state.capacity,
            viewers: m.viewers.get().max(0) as u32,
            streams,
            bytes_sent: m.fanout.bytes_sent.get(),
            groups_sent: m.fanout.groups_sent.get(),
            groups_skipped: m.fanout.groups_skipped.get(),
            rejected: m.rejections.get(),
            seated: m.seated.get(),
            accepting: state.accepting.load(std::sync::atomic::Ordering::Relaxed),
        };
        let resp = self.control.clone().relay_heartbeat(req).await?;
        Ok(Duration::from_millis(u64::from(
            resp.into_inner().interval_ms,
        )))
    }
}

/// Why a viewer could not join.
struct Refusal {
    code: Code,
    reason: String,
}

/// How a viewer reached the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Carrier {
    /// QUIC, `ghost-view/1`.
    Native,
    /// WebTransport over HTTP/3.
    WebTransport,
    /// WebSocket over TCP.
    WebSocket,
}

impl Carrier {
    /// The gauge counting this carrier's part of the viewers, if it has one.
    fn gauge(self, metrics: &Metrics) -> Option<&Gauge> {
        match self {
            Carrier::Native => None,
            Carrier::WebTransport => Some(&metrics.webtransport_viewers),
            Carrier::WebSocket => Some(&metrics.websocket_viewers),
        }
    }
}

async fn viewer(state: Arc<State>, conn: Connection) {
    // A connection holds no seat until it presents a valid ticket: idle or ticketless
    // connections cannot lock viewers out, nor count as viewers (and so as demand).
    if quic::alpn(&conn).as_deref() != Some(quic::ALPN_H3) {
        return viewer_on(&state, &conn, Carrier::Native).await;
    }
    let handshake = peer::accept_webtransport(conn.clone());
    match tokio::time::timeout(quic::SESSION_TIMEOUT, handshake).await {
        Ok(Ok(session)) => viewer_on(&state, &session, Carrier::WebTransport).await,
        Ok(Err(error)) => {
            // No session yet, so no capsule to carry our code in: a plain QUIC close.
            tracing::info!(%error, "WebTransport handshake failed");
            quic::close(&conn, Code::Protocol, "WebTransport handshake failed");
        }
        Err(_) => quic::close(&conn, Code::Timeout, "no WebTransport session in time"),
    }
}

/// A seat for one more viewer, held while it is served; both kinds of viewer count.
fn admit(state: &State) -> Result<tokio::sync::OwnedSemaphorePermit, Refusal> {
    if !state.accepting.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(refusal(
            Code::Capacity,
            "relay draining: join again for another relay",
        ));
    }
    state.seats.clone().try_acquire_owned().map_err(|_| {
        refusal(
            Code::Capacity,
            &format!("relay at capacity ({} viewers)", state.capacity),
        )
    })
}

async fn viewer_on<P: Peer>(state: &Arc<State>, conn: &P, carrier: Carrier) {
    if let Err(refusal) = serve_viewer(state, conn, carrier).await {
        state.metrics.rejections.inc();
        tracing::info!(code = refusal.code.name(), reason = %refusal.reason, "viewer refused");
        quic::close(conn, refusal.code, &refusal.reason);
    }
}

async fn serve_viewer<P: Peer>(
    state: &Arc<State>,
    conn: &P,
    carrier: Carrier,
) -> Result<(), Refusal> {
    let join = async {
        let mut session = Session::accept(conn).await?;
        let msg = session.recv().await?;
        Ok::<_, quic::SessionError>((session, msg))
    };
    let (mut session, stream_id, ticket) =
        match tokio::time::timeout(quic::SESSION_TIMEOUT, join).await {
            Ok(Ok((session, Some(Message::Join { stream_id, ticket })))) => {
                (session, stream_id, ticket)
            }
            Ok(Ok(_)) => return Err(refusal(Code::Protocol, "expected a join")),
            Ok(Err(error)) => return Err(refusal(error.code(), &error.to_string())),
            Err(_) => return Err(refusal(Code::Timeout, "no join in time")),
        };
    if let Some(key) = &state.ticket_key {
        let now = clock::now_ms();
        let verified = wire::ticket::verify(key, &ticket, &stream_id, &state.id, now)
            .map_err(|e| refusal(Code::Unauthorized, &e.to_string()))?;
        if !state.used_tickets.take(verified, now) {
            return Err(refusal(
                Code::Unauthorized,
                "join ticket already used: join again through the gateway",
            ));
        }
    }
    // Only now, with a valid ticket, does the viewer take a seat.
    let _seat = admit(state)?;
    state.metrics.seated.inc();
    state.metrics.viewers.inc();
    if let Some(gauge) = carrier.gauge(&state.metrics) {
        gauge.inc();
    }
    let served = async {
        let track = track(state, &stream_id).await?;
        state.metrics.joins.inc();
        tracing::info!(stream = %stream_id, "viewer joined");
        match fanout::serve(conn, &mut session, &track, &state.metrics.fanout).await {
            Ok(()) => tracing::info!(stream = %stream_id, "viewer told the stream ended"),
            Err(error) => tracing::info!(stream = %stream_id, %error, "viewer left"),
        }
        Ok(())
    }
    .await;
    state.metrics.viewers.dec();
    if let Some(gauge) = carrier.gauge(&state.metrics) {
        gauge.dec();
    }
    served
}

/// Binds QUIC (UDP) and the WebSocket carrier (TCP) on one port number, so a firewall or a
/// port mapping names each relay once. With port 0, the number the UDP socket got is tried
/// for TCP, and another pair is drawn while that one is taken.
async fn bind_carriers(
    listen: SocketAddr,
    certs: &Arc<tls::Reloading>,
) -> Result<(quinn::Endpoint, tokio::net::TcpListener)> {
    let mut attempts = 0;
    loop {
        let endpoint = quic::server_reloading(
            listen,
            certs.clone(),
            &[quic::ALPN_VIEW, quic::ALPN_H3],
            Windows::SENDER,
        )?;
        let bound = endpoint.local_addr().context("reading the QUIC address")?;
        match tokio::net::TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((endpoint, tcp)),
            Err(e) if listen.port() == 0 && attempts < 32 => {
                tracing::debug!(%bound, error = %e, "TCP port of the QUIC port's number taken; drawing another");
                attempts += 1;
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("binding the WebSocket carrier on {bound}/tcp (the QUIC port's number)")
                });
            }
        }
    }
}

/// The host part of `HOST:PORT` (brackets of an IPv6 address kept off).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// What the WebSocket listener needs to seat viewers.
struct Carriage {
    state: Arc<State>,
    admission: Arc<Admission>,
    tls: tokio_rustls::TlsAcceptor,
    origins: Arc<transport::ws::Origins>,
}

/// The first byte of a TLS handshake record: a `wss://` client.
const TLS_HANDSHAKE: u8 = 0x16;

/// Accepts WebSocket viewers until `shutdown`. Each address may hold as many connections as
/// the QUIC per-source cap allows, counted together with its QUIC ones; the listener holds
/// at most twice the relay's capacity plus 256 at once; a connection must complete its
/// handshake (TLS included) within [`transport::ws::HANDSHAKE_TIMEOUT`] and present its
/// ticket within [`quic::SESSION_TIMEOUT`], as over QUIC.
async fn websocket_loop(
    listener: tokio::net::TcpListener,
    carriage: Carriage,
    shutdown: CancellationToken,
) {
    let carriage = Arc::new(carriage);
    let most = (carriage.state.capacity as usize)
        .saturating_mul(2)
        .saturating_add(256);
    let slots = Arc::new(tokio::sync::Semaphore::new(most));
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait, never spin.
                    tracing::warn!(%error, "WebSocket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => return,
        };
        let held = match carriage.admission.decide(peer.ip(), true) {
            transport::admit::Decision::Accept(held) => held,
            _ => {
                carriage.state.metrics.websocket_refused.inc();
                tracing::debug!(%peer, "WebSocket connection refused: too many from this address");
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            carriage.state.metrics.websocket_refused.inc();
            tracing::warn!(%peer, "WebSocket connection refused: too many connections");
            continue;
        };
        let carriage = carriage.clone();
        let span = tracing::info_span!("websocket", %peer);
        carriage
            .state
            .tasks
            .clone()
            .spawn(tracing::Instrument::instrument(
                async move {
                    websocket_viewer(&carriage, tcp, held).await;
                    drop(slot);
                },
                span,
            ));
    }
}

async fn websocket_viewer(
    carriage: &Carriage,
    tcp: tokio::net::TcpStream,
    mut held: transport::admit::Slot,
) {
    if let Err(error) = transport::ws::tune(&tcp) {
        tracing::debug!(%error, "cannot tune the socket");
    }
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(transport::ws::HANDSHAKE_TIMEOUT, tcp.peek(&mut first)).await;
    let handshake = match peeked {
        Ok(Ok(1)) if first[0] == TLS_HANDSHAKE => {
            let opened =
                tokio::time::timeout(transport::ws::HANDSHAKE_TIMEOUT, carriage.tls.accept(tcp))
                    .await;
            match opened {
                Ok(Ok(tls)) => transport::ws::accept(tls, &carriage.origins)
                    .await
                    .map_err(|e| e.to_string()),
                Ok(Err(e)) => Err(format!("TLS handshake failed: {e}")),
                Err(_) => Err("no TLS handshake in time".to_string()),
            }
        }
        Ok(Ok(1)) => transport::ws::accept(tcp, &carriage.origins)
            .await
            .map_err(|e| e.to_string()),
        Ok(_) => Err("closed before its handshake".to_string()),
        Err(_) => Err("nothing sent in time".to_string()),
    };
    held.established();
    match handshake {
        Ok(session) => viewer_on(&carriage.state, &session, Carrier::WebSocket).await,
        Err(error) => {
            carriage.state.metrics.websocket_handshake_failures.inc();
            tracing::debug!(%error, "WebSocket handshake failed");
        }
    }
    drop(held);
}

/// Tickets already taken, until they expire: each one seats a single viewer.
#[derive(Debug, Default)]
struct UsedTickets {
    seen: std::sync::Mutex<(std::collections::HashSet<wire::ticket::Verified>, usize)>,
}

impl UsedTickets {
    /// Marks `ticket` used; false when it already was. Forgets expired ones when the set has
    /// doubled since the last sweep, so it holds about the tickets of one ticket lifetime at
    /// an amortised constant cost per join.
    fn take(&self, ticket: wire::ticket::Verified, now_ms: u64) -> bool {
        let mut guard = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let (seen, sweep_at) = &mut *guard;
        if seen.len() >= (*sweep_at).max(1024) {
            seen.retain(|t| t.expires_ms >= now_ms);
            *sweep_at = seen.len() * 2;
        }
        seen.insert(ticket)
    }
}

fn refusal(code: Code, reason: &str) -> Refusal {
    Refusal {
        code,
        reason: reason.to_string(),
    }
}

/// The track of `stream_id`, subscribing at ingest on the first viewer. Concurrent first
/// viewers share one subscription.
async fn track(state: &Arc<State>, stream_id: &str) -> Result<Track, Refusal> {
    let slot = state
        .streams()
        .entry(stream_id.to_string())
        .or_default()
        .clone();
    let subscribed = slot
        .get_or_try_init(|| subscribe(state.clone(), stream_id.to_string()))
        .await
        .cloned();
    if subscribed.is_err() {
        let mut streams = state.streams();
        if streams
            .get(stream_id)
            .is_some_and(|s| Arc::ptr_eq(s, &slot) && s.get().is_none())
        {
            streams.remove(stream_id);
        }
    }
    subscribed
}

async fn subscribe(state: Arc<State>, stream_id: String) -> Result<Track, Refusal> {
    let unavailable = |what: &str, e: &dyn std::fmt::Display| {
        tracing::warn!(stream = %stream_id, error = %e, "{what}");
        refusal(Code::Unavailable, &format!("{what}: {e}"))
    };
    let addr = quic::resolve(&state.ingest)
        .await
        .map_err(|e| unavailable("cannot resolve ingest", &e))?;
    let connecting = state
        .upstream
        .connect(addr, tls::INGEST_NAME)
        .map_err(|e| unavailable("cannot reach ingest", &e))?;
    let conn = tokio::time::timeout(quic::SESSION_TIMEOUT, connecting)
        .await
        .map_err(|e| unavailable("ingest did not answer", &e))?
        .map_err(|e| unavailable("cannot reach ingest", &e))?;
    let mut session = Session::open(&conn)
        .await
        .map_err(|e| unavailable("ingest session failed", &e))?;
    let reply = async {
        session
            .send(&Message::Subscribe {
                stream_id: stream_id.clone(),
            })
            .await?;
        session.recv().await
    };
    let info = match tokio::time::timeout(quic::SESSION_TIMEOUT, reply).await {
        Ok(Ok(Some(Message::Init {
            stream_id: id,
            name,
            init,
        }))) => TrackInfo { id, name, init },
        Ok(Ok(Some(Message::Error { code, reason }))) => return Err(refusal(code, &reason)),
        Ok(Ok(_)) => return Err(refusal(Code::Internal, "ingest sent no init")),
        Ok(Err(e)) => return Err(unavailable("ingest session failed", &e)),
        Err(e) => return Err(unavailable("ingest did not answer", &e)),
    };
    let track = Track::new(info);
    state.metrics.streams.inc();
    tracing::info!(stream = %stream_id, "subscribed at ingest");
    let task_state = state.clone();
    let task_track = track.clone();
    state.tasks.spawn(async move {
        carry(&task_state, conn, session, &task_track).await;
        task_track.end();
        let mut streams = task_state.streams();
        if streams
            .get(&stream_id)
            .and_then(|s| s.get())
            .is_some_and(|t| t.info().id == task_track.info().id)
        {
            streams.remove(&stream_id);
        }
        task_state.metrics.streams.dec();
    });
    Ok(track)
}

/// Receives the stream from ingest until it ends, ingest goes away, or nobody has watched
/// for [`LINGER`].
async fn carry(state: &State, conn: Connection, mut session: Session, track: &Track) {
    let stream = track.info().id.clone();
    let idle = async {
        let mut since: Option<tokio::time::Instant> = None;
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if track.readers() > 0 {
                since = None;
            } else if since
                .get_or_insert_with(tokio::time::Instant::now)
                .elapsed()
                >= LINGER
            {
                return;
            }
        }
    };
    tokio::select! {
        r = fanout::receive_track(&conn, &mut session, track, &state.metrics.fanout) => match r {
            Ok(()) => tracing::info!(%stream, "stream ended at ingest"),
            Err(error) => {
                tracing::warn!(%stream, %error, "lost the stream from ingest");
                if let Some(code) = error.code() {
                    quic::close(&conn, code, &error.to_string());
                }
            }
        },
        () = idle => {
            tracing::info!(%stream, "no viewer left; unsubscribing");
            quic::close(&conn, Code::Normal, "no viewers");
        }
        () = state.shutdown.cancelled() => quic::close(&conn, Code::Shutdown, "relay shutting down"),
    }
}

/// Runs the relay with `config` until SIGINT/SIGTERM: the whole `ghost-relay` binary.
pub async fn main(config: Config) -> Result<()> {
    server::telemetry::init(config.logging.log_format, "info");
    let server = Server::bind(&config).await?;
    let quic_addr = server.quic_addr()?;
    let ops_addr = server.ops_addr()?;
    tracing::info!(quic = %quic_addr, ops = %ops_addr, id = %config.id, capacity = config.capacity, "relay listening");
    tracing::info!(websocket = %server.websocket_addr()?, "WebSocket carrier listening");
    server::ready::announce(
        Kind::Relay,
        &[(Role::Quic, quic_addr), (Role::Ops, ops_addr)],
    );
    server.run(server::shutdown::on_signal()).await
}

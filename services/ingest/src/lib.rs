//! Ghost Stream's ingest gateway.
//!
//! A streamer connects over QUIC (ALPN `ghost-publish/1`) and announces a stream; ingest asks
//! control to create it and confirms. Groups then arrive one per unidirectional stream and go
//! into the stream's [`Track`], which holds only the newest group. Relays connect (ALPN
//! `ghost-subscribe/1`) and subscribe to a stream on their first viewer; ingest sends them
//! the current group from its keyframe, then everything new.
//!
//! When the streamer closes cleanly, or its connection times out (about one second with
//! keep-alives), the track ends: subscribers get `End`, and control is told at once.

#![forbid(unsafe_code)]

pub mod remux;
mod rtmp;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::Protocol;
use api::status::{Kind, Role};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use proto::control as pb;
use quinn::Connection;
use server::ops;
use tokio_util::sync::CancellationToken;
use transport::admit::Admission;
use transport::fanout::{self, ReceiveError};
use transport::quic::{self, Session, Windows};
use transport::track::{Track, TrackInfo};
use wire::{Code, Message};

/// Ingest's configuration. Every flag is also an environment variable.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "ghost-ingest", version, about = "Ghost Stream ingest gateway")]
pub struct Config {
    /// Where it listens, whom it reaches and who may publish: what the supervisor sets.
    #[command(flatten)]
    pub wiring: Wiring,
    /// RTMP connections open at once, at most (publishing or not yet).
    #[arg(long, env = "GHOST_INGEST_MAX_RTMP_CONNECTIONS", default_value_t = 256)]
    pub max_rtmp_connections: usize,
    /// RTMP connections one client address (an IPv6 /64) may hold at once; past it, new
    /// ones are closed at once. An encoder holds one.
    #[arg(long, env = "GHOST_INGEST_RTMP_PER_SOURCE", default_value_t = rtmp::PER_SOURCE)]
    pub rtmp_per_source: u32,
    /// Apply the RTMP per-source limit to loopback and the local source too (by default the
    /// host's own connections are exempt).
    #[arg(long, env = "GHOST_INGEST_RTMP_LIMIT_LOOPBACK", value_parser = clap::builder::BoolishValueParser::new())]
    pub rtmp_limit_loopback: bool,
    /// This gateway's id in control's directory.
    #[arg(long, env = "GHOST_INGEST_ID", default_value = "ingest-1")]
    pub id: String,
    /// Streamers connected at once, at most.
    #[arg(long, env = "GHOST_INGEST_MAX_PUBLISHERS", default_value_t = 64)]
    pub max_publishers: usize,
    /// Reports to control.
    #[command(flatten)]
    pub heartbeat: server::args::Heartbeat,
    /// Per-source limits on QUIC connections.
    #[command(flatten)]
    pub quic_limits: transport::admit::QuicLimits,
    /// Log output.
    #[command(flatten)]
    pub logging: server::args::Logging,
}

/// Ingest's flags that the supervisor sets: declared once, here, parsed by ingest and
/// rendered by the supervisor from a value of this type (`server::flags::render`), so the
/// two cannot disagree.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args, serde::Serialize)]
pub struct Wiring {
    /// QUIC (UDP) listen address for streamers and relays.
    #[arg(long, env = "GHOST_INGEST_LISTEN", default_value = "0.0.0.0:4433")]
    pub listen: SocketAddr,
    /// RTMP (TCP) listen address for encoders such as OBS (`rtmp://HOST/live/STREAM_KEY`).
    #[arg(long, env = "GHOST_INGEST_RTMP_LISTEN", default_value = "0.0.0.0:1935")]
    pub rtmp_listen: SocketAddr,
    /// Ops listener (/health, /metrics).
    #[arg(long, env = "GHOST_INGEST_OPS", default_value = "127.0.0.1:9101")]
    pub ops_listen: SocketAddr,
    /// Where control is.
    #[command(flatten)]
    pub control: server::args::Control,
    /// Ingest's TLS directory: its server and client certificates, the stack's CA.
    #[command(flatten)]
    pub tls: server::args::Tls,
    /// Address relays use to reach this ingest (defaults to the bound address).
    #[arg(long, env = "GHOST_INGEST_ADVERTISE")]
    pub advertise: Option<String>,
    /// Who may publish: stream keys.
    #[command(flatten)]
    pub keys: streamkeys::Flags,
    /// The host's own connections besides loopback, exempt from the per-source limits
    /// (QUIC and RTMP).
    #[command(flatten)]
    pub local: identity::peer::LocalSource,
}

#[derive(Debug, Default, Clone)]
struct Metrics {
    publishers: Gauge,
    subscribers: Gauge,
    streams_started: Counter,
    publishers_refused: Counter,
    subscribers_refused: Counter,
    rtmp_connections: Gauge,
    rtmp_refused: Counter,
    rtmp_handshake_timeouts: Counter,
    fanout: fanout::Metrics,
}

impl Metrics {
    fn register(&self, registry: &mut Registry) {
        registry.register("publishers", "Streamers connected", self.publishers.clone());
        registry.register(
            "subscribers",
            "Relays subscribed to a stream",
            self.subscribers.clone(),
        );
        registry.register(
            "streams_started",
            "Streams that went live",
            self.streams_started.clone(),
        );
        registry.register(
            "publishers_refused",
            "Announces refused (control down, name in use, limit)",
            self.publishers_refused.clone(),
        );
        registry.register(
            "subscribers_refused",
            "Subscriptions refused: no relay client certificate",
            self.subscribers_refused.clone(),
        );
        registry.register(
            "rtmp_connections",
            "RTMP connections open (publishing or not yet)",
            self.rtmp_connections.clone(),
        );
        registry.register(
            "rtmp_refused",
            "RTMP connections closed at once: too many open",
            self.rtmp_refused.clone(),
        );
        registry.register(
            "rtmp_handshake_timeouts",
            "RTMP connections closed: no handshake in time, or not RTMP",
            self.rtmp_handshake_timeouts.clone(),
        );
        self.fanout.register(registry);
    }
}

/// A stream live here, as ingest lists it to control and to relays.
struct Listed {
    track: Track,
    started_at_us: u64,
    protocol: Protocol,
}

struct State {
    id: String,
    /// Streams created at control whose publisher has not sent its codec setup yet (an RTMP
    /// publish between `publish` and its sequence headers): subscribers wait for the track.
    pending: Mutex<HashMap<String, tokio::sync::watch::Sender<Option<Track>>>>,
    keys: streamkeys::Gate,
    streams: Mutex<HashMap<String, Listed>>,
    control: proto::control::control_client::ControlClient<tonic::transport::Channel>,
    publishers: Arc<tokio::sync::Semaphore>,
    metrics: Metrics,
}

impl State {
    fn streams(&self) -> std::sync::MutexGuard<'_, HashMap<String, Listed>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pending(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, tokio::sync::watch::Sender<Option<Track>>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The live track `id`, waiting up to [`PENDING_WAIT`] for one whose publisher has not
    /// sent its codec setup yet.
    async fn track(&self, id: &str) -> Option<Track> {
        if let Some(listed) = self.streams().get(id) {
            return Some(listed.track.clone());
        }
        let mut rx = self.pending().get(id)?.subscribe();
        let ready = tokio::time::timeout(PENDING_WAIT, rx.wait_for(Option::is_some)).await;
        match ready {
            Ok(Ok(track)) => track.clone(),
            _ => None,
        }
    }
}

/// How long a relay's subscription waits for a stream that is created but has no media yet.
/// Shorter than the relay's own wait for an answer ([`quic::SESSION_TIMEOUT`]).
const PENDING_WAIT: Duration = Duration::from_secs(3);

/// Ingest with its sockets bound, ready to run.
pub struct Server {
    endpoint: quinn::Endpoint,
    admission: Arc<Admission>,
    rtmp: tokio::net::TcpListener,
    max_rtmp_connections: usize,
    rtmp_admission: Arc<Admission>,
    ops: tokio::net::TcpListener,
    registry: Registry,
    state: Arc<State>,
    advertise: String,
    heartbeat: Duration,
}

/// Why ingest could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The TLS files are missing or unusable.
    #[error(transparent)]
    Identity(#[from] identity::Error),
    /// A QUIC endpoint could not be set up.
    #[error(transparent)]
    Quic(#[from] quic::EndpointError),
    /// The RTMP address could not be bound.
    #[error("binding the RTMP listener on {addr}")]
    BindRtmp {
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
fn address(what: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Address { what, source }
}

impl Server {
    /// Loads the TLS identity and binds the QUIC and ops sockets.
    pub async fn bind(config: &Config) -> Result<Server, Error> {
        let files = identity::Files::in_dir(&config.wiring.tls.dir);
        let identity = files.server_identity()?;
        // Publishers present no certificate; relays present theirs, which `handle` requires
        // for a subscription.
        let endpoint = quic::server_verifying_clients(
            config.wiring.listen,
            &identity,
            &[quic::ALPN_PUBLISH, quic::ALPN_SUBSCRIBE],
            &files.ca,
            Windows::RECEIVER,
        )?;
        let rtmp = tokio::net::TcpListener::bind(config.wiring.rtmp_listen)
            .await
            .map_err(|source| Error::BindRtmp {
                addr: config.wiring.rtmp_listen,
                source,
            })?;
        let ops = ops::bind(config.wiring.ops_listen).await?;
        let bound = endpoint.local_addr().map_err(address("QUIC"))?;
        let metrics = Metrics::default();
        let mut registry = Registry::with_prefix("ghost_ingest");
        metrics.register(&mut registry);
        let admission = Admission::new(config.quic_limits.limits(&config.wiring.local));
        admission.register(&mut registry);
        // RTMP connections per address, counted as QUIC's are (no Retry: TCP proves the
        // address).
        let rtmp_admission = Admission::new(transport::admit::Limits {
            per_source: config.rtmp_per_source.max(1),
            retry_above: u32::MAX,
            local: config.wiring.local.local_source.into_iter().collect(),
            limit_loopback: config.rtmp_limit_loopback,
        });
        registry.register(
            "rtmp_refused_per_source",
            "RTMP connections closed at once: their address held its limit",
            rtmp_admission.metrics().refused.clone(),
        );
        Ok(Server {
            advertise: config
                .wiring
                .advertise
                .clone()
                .unwrap_or_else(|| bound.to_string()),
            endpoint,
            admission,
            rtmp,
            max_rtmp_connections: config.max_rtmp_connections.max(1),
            rtmp_admission,
            ops,
            registry,
            heartbeat: *config.heartbeat.interval,
            state: Arc::new(State {
                id: config.id.clone(),
                keys: streamkeys::Gate::from(&config.wiring.keys),
                pending: Mutex::new(HashMap::new()),
                streams: Mutex::new(HashMap::new()),
                control: server::control::client(
                    &config.wiring.control.url,
                    Some(&config.wiring.tls.dir),
                )?,
                publishers: Arc::new(tokio::sync::Semaphore::new(config.max_publishers)),
                metrics,
            }),
        })
    }

    /// The bound QUIC address.
    pub fn quic_addr(&self) -> Result<SocketAddr, Error> {
        self.endpoint.local_addr().map_err(address("QUIC"))
    }

    /// The bound RTMP address.
    pub fn rtmp_addr(&self) -> Result<SocketAddr, Error> {
        self.rtmp.local_addr().map_err(address("RTMP"))
    }

    /// The bound ops address.
    pub fn ops_addr(&self) -> Result<SocketAddr, Error> {
        Ok(ops::local(&self.ops)?)
    }

    /// Serves until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let state = self.state.clone();
        let accept = quic::accept_loop(
            self.endpoint,
            self.admission,
            shutdown.clone(),
            move |conn| handle(state.clone(), conn),
        );
        let rtmp = rtmp::serve(
            self.rtmp,
            self.state.clone(),
            self.max_rtmp_connections,
            self.rtmp_admission,
            shutdown.clone(),
        );
        let ops = ops::serve(
            self.ops,
            ops::routes(Arc::new(self.registry)),
            shutdown.clone(),
        );
        let state = self.state.clone();
        let advertise = self.advertise.clone();
        let heartbeat =
            server::control::heartbeat_loop(self.heartbeat, shutdown.clone(), move || {
                let state = state.clone();
                let advertise = advertise.clone();
                async move { beat(&state, advertise).await }
            });
        tokio::select! {
            () = accept => Ok(()),
            () = rtmp => Ok(()),
            r = ops => Ok(r?),
            () = heartbeat => Ok(()),
        }
    }
}

async fn beat(state: &State, addr: String) -> Result<Duration, tonic::Status> {
    let streams = state
        .streams()
        .values()
        .map(|listed| pb::Stream {
            id: listed.track.info().id.clone(),
            name: listed.track.info().name.clone(),
            started_at_us: listed.started_at_us,
            viewers: 0,
            ingest_id: state.id.clone(),
            protocol: listed.protocol.as_str().to_string(),
        })
        .collect();
    let resp = state
        .control
        .clone()
        .ingest_heartbeat(pb::IngestHeartbeatRequest {
            ingest_id: state.id.clone(),
            addr,
            streams,
        })
        .await?;
    Ok(Duration::from_millis(u64::from(
        resp.into_inner().interval_ms,
    )))
}

async fn handle(state: Arc<State>, conn: Connection) {
    let alpn = quic::alpn(&conn).unwrap_or_default();
    if alpn == quic::ALPN_SUBSCRIBE {
        // Media leaves ingest only for the stack's relays: anyone else would bypass the
        // relays' tickets and admission cap.
        let role = quic::peer_role(&conn);
        if role != Some(identity::Role::Relay) {
            let reason = match role {
                None => "subscriptions are for the stack's relays: no relay client certificate"
                    .to_string(),
                Some(role) => format!(
                    "subscriptions are for the stack's relays, not for {role}'s certificate"
                ),
            };
            tracing::warn!(peer = %conn.remote_address(), role = ?role, "subscription refused: not a relay");
            state.metrics.subscribers_refused.inc();
            quic::close(&conn, Code::Unauthorized, &reason);
            return;
        }
    }
    let session = match tokio::time::timeout(quic::SESSION_TIMEOUT, Session::accept(&conn)).await {
        Ok(Ok(s)) => s,
        Ok(Err(error)) => {
            tracing::debug!(%error, "no session stream");
            quic::close(&conn, error.code(), &error.to_string());
            return;
        }
        Err(_) => {
            quic::close(&conn, Code::Timeout, "no session opened in time");
            return;
        }
    };
    if alpn == quic::ALPN_PUBLISH {
        publish(state, conn, session).await;
    } else {
        subscribe(state, conn, session).await;
    }
}

/// Refuses a request on the session stream, then closes with the same code once the peer
/// has had a moment to read it (closing at once could discard the message in flight).
async fn refuse(conn: &Connection, session: &mut Session, code: Code, reason: &str) {
    let _ = session
        .send(&Message::Error {
            code,
            reason: reason.to_string(),
        })
        .await;
    session.finish();
    let _ = tokio::time::timeout(fanout::END_LINGER, conn.closed()).await;
    quic::close(conn, code, reason);
}

async fn publish(state: Arc<State>, conn: Connection, mut session: Session) {
    let Ok(_permit) = state.publishers.clone().try_acquire_owned() else {
        state.metrics.publishers_refused.inc();
        refuse(
            &conn,
            &mut session,
            Code::Capacity,
            "ingest has no room for more streamers",
        )
        .await;
        return;
    };
    let (name, init, key) = match tokio::time::timeout(quic::SESSION_TIMEOUT, session.recv()).await
    {
        Ok(Ok(Some(Message::Announce { name, init, key }))) => (name, init, key),
        Ok(Ok(_)) => {
            refuse(&conn, &mut session, Code::Protocol, "expected an announce").await;
            return;
        }
        Ok(Err(error)) => {
            refuse(&conn, &mut session, error.code(), &error.to_string()).await;
            return;
        }
        Err(_) => {
            refuse(&conn, &mut session, Code::Timeout, "no announce in time").await;
            return;
        }
    };
    let name = match authorize(&state, Some(&name), Some(&key)) {
        Ok(name) => name,
        Err(refusal) => {
            refuse(&conn, &mut session, refusal.code(), &refusal.to_string()).await;
            return;
        }
    };
    let stream = match create(&state, &name, Protocol::Quic).await {
        Ok(stream) => stream,
        Err((code, reason)) => {
            refuse(&conn, &mut session, code, &reason).await;
            return;
        }
    };
    let track = Track::new(TrackInfo {
        id: stream.id.clone(),
        name: name.clone(),
        init,
    });
    go_live(&state, &track, stream.started_at_us, Protocol::Quic);

    let received = match session
        .send(&Message::Announced {
            stream_id: stream.id.clone(),
        })
        .await
    {
        Ok(()) => fanout::receive_track(&conn, &mut session, &track, &state.metrics.fanout).await,
        Err(e) => Err(e.into()),
    };

    finish(&state, &track).await;
    match received {
        Ok(()) => {
            tracing::info!(stream = %stream.id, "publisher finished");
            quic::close(&conn, Code::Normal, "stream ended");
        }
        Err(ReceiveError::Lost(error)) => {
            tracing::info!(stream = %stream.id, %error, "publisher gone");
        }
        Err(error) => {
            tracing::warn!(stream = %stream.id, %error, "publisher broke the protocol");
            quic::close(
                &conn,
                error.code().unwrap_or(Code::Protocol),
                &error.to_string(),
            );
        }
    }
}

/// Asks the stream keys who may publish: the name to publish as, or why not (logged here).
pub(crate) fn authorize(
    state: &State,
    name: Option<&str>,
    key: Option<&str>,
) -> Result<String, streamkeys::Refusal> {
    state.keys.authorize(name, key).inspect_err(|refusal| {
        state.metrics.publishers_refused.inc();
        match refusal {
            streamkeys::Refusal::Unavailable(error) => {
                tracing::error!(%error, "stream keys unreadable: refusing publishers");
            }
            refusal => {
                tracing::warn!(name = name.unwrap_or_default(), %refusal, "publisher refused")
            }
        }
    })
}

/// Asks control to create stream `name`: the stream's id and start time, or the code and
/// reason to refuse the streamer with.
pub(crate) async fn create(
    state: &State,
    name: &str,
    protocol: Protocol,
) -> Result<pb::Stream, (Code, String)> {
    let created = state
        .control
        .clone()
        .create_stream(pb::CreateStreamRequest {
            name: name.to_string(),
            ingest_id: state.id.clone(),
            protocol: protocol.as_str().to_string(),
        })
        .await;
    let refused = match created.map(|r| r.into_inner().stream) {
        Ok(Some(stream)) => return Ok(stream),
        Ok(None) => (Code::Internal, "control answered no stream".to_string()),
        Err(status) => match status.code() {
            tonic::Code::AlreadyExists => (Code::NameInUse, status.message().to_string()),
            tonic::Code::InvalidArgument => (Code::Protocol, status.message().to_string()),
            _ => (
                Code::Unavailable,
                format!(
                    "control plane unavailable, new streams cannot start now: {}",
                    status.message()
                ),
            ),
        },
    };
    state.metrics.publishers_refused.inc();
    tracing::warn!(%name, reason = %refused.1, "announce refused");
    Err(refused)
}

/// Lists `track` as live here: relays can subscribe to it from now on.
pub(crate) fn go_live(state: &State, track: &Track, started_at_us: u64, protocol: Protocol) {
    let info = track.info();
    if let Some(waiting) = state.pending().remove(&info.id) {
        waiting.send_replace(Some(track.clone()));
    }
    state.streams().insert(
        info.id.clone(),
        Listed {
            track: track.clone(),
            started_at_us,
            protocol,
        },
    );
    state.metrics.streams_started.inc();
    state.metrics.publishers.inc();
    tracing::info!(stream = %info.id, name = %info.name, "publisher live");
}

/// Ends `track`, however its publisher stopped: subscribers first, then control, at once.
pub(crate) async fn finish(state: &State, track: &Track) {
    let id = &track.info().id;
    track.end();
    state.pending().remove(id);
    if state.streams().remove(id).is_some() {
        state.metrics.publishers.dec();
    }
    let ended = state
        .control
        .clone()
        .end_stream(pb::EndStreamRequest {
            id: id.clone(),
            ingest_id: state.id.clone(),
        })
        .await;
    if let Err(status) = ended {
        // The next heartbeat no longer lists it, so control catches up anyway.
        tracing::warn!(stream = %id, error = %status.message(), "could not tell control the stream ended");
    }
}

async fn subscribe(state: Arc<State>, conn: Connection, mut session: Session) {
    let stream_id = match tokio::time::timeout(quic::SESSION_TIMEOUT, session.recv()).await {
        Ok(Ok(Some(Message::Subscribe { stream_id }))) => stream_id,
        Ok(Ok(_)) => {
            refuse(&conn, &mut session, Code::Protocol, "expected a subscribe").await;
            return;
        }
        Ok(Err(error)) => {
            refuse(&conn, &mut session, error.code(), &error.to_string()).await;
            return;
        }
        Err(_) => {
            refuse(&conn, &mut session, Code::Timeout, "no subscribe in time").await;
            return;
        }
    };
    let track = state.track(&stream_id).await;
    let Some(track) = track else {
        refuse(
            &conn,
            &mut session,
            Code::NotFound,
            &format!("no live stream {stream_id:?} here"),
        )
        .await;
        return;
    };
    state.metrics.subscribers.inc();
    tracing::info!(stream = %stream_id, "relay subscribed");
    let served = fanout::serve(&conn, &mut session, &track, &state.metrics.fanout).await;
    state.metrics.subscribers.dec();
    if let Err(error) = served {
        tracing::info!(stream = %stream_id, %error, "relay subscription ended early");
    }
}

/// Runs ingest with `config` until SIGINT/SIGTERM: the whole `ghost-ingest` binary.
pub async fn main(config: Config) -> Result<(), Error> {
    server::telemetry::init(config.logging.log_format, "info");
    let server = Server::bind(&config).await?;
    let quic_addr = server.quic_addr()?;
    let rtmp_addr = server.rtmp_addr()?;
    let ops_addr = server.ops_addr()?;
    tracing::info!(quic = %quic_addr, rtmp = %rtmp_addr, ops = %ops_addr, id = %config.id, "ingest listening");
    server::ready::announce(
        Kind::Ingest,
        &[
            (Role::Quic, quic_addr),
            (Role::Rtmp, rtmp_addr),
            (Role::Ops, ops_addr),
        ],
    );
    server.run(server::shutdown::on_signal()).await
}

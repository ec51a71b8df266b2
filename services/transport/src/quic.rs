//! QUIC set-up shared by every service and client: ALPNs, transport settings, endpoints,
//! the session stream and close codes.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use quinn::{Connection, ConnectionError, VarInt};
use wire::{Code, Message, WireError};

use crate::admit::{Admission, Decision};
use crate::peer::{self, Peer};

/// ALPN of a publisher's connection to ingest.
pub const ALPN_PUBLISH: &[u8] = b"ghost-publish/1";
/// ALPN of a relay's subscription connection to ingest.
pub const ALPN_SUBSCRIBE: &[u8] = b"ghost-subscribe/1";
/// ALPN of a viewer's connection to a relay.
pub const ALPN_VIEW: &[u8] = b"ghost-view/1";
/// ALPN of HTTP/3, which a browser's WebTransport viewer offers to a relay.
pub const ALPN_H3: &[u8] = web_transport_quinn::ALPN.as_bytes();

/// How long a peer may stay silent before its connection is declared dead. Short, so a
/// killed publisher ends its stream (and a crashed relay loses its viewers) within about a
/// second. Keep-alives every [`KEEP_ALIVE`] keep healthy idle connections open.
pub const IDLE_TIMEOUT: Duration = Duration::from_millis(800);
/// Keep-alive interval (a quarter of the idle timeout: three may be lost).
pub const KEEP_ALIVE: Duration = Duration::from_millis(200);
/// How long a new connection may take to open its session stream.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(5);

/// Flow-control and buffer sizes of one side of a connection.
#[derive(Debug, Clone, Copy)]
pub struct Windows {
    /// Bytes the peer may send on one stream before we read them.
    pub stream_receive: u32,
    /// Bytes the peer may send on all streams before we read them.
    pub receive: u32,
    /// Unacknowledged bytes we buffer for the peer.
    pub send: u64,
    /// Unidirectional streams the peer may have open at once.
    pub uni_streams: u32,
    /// Ack-eliciting packets the peer may receive before it must acknowledge them, asked of
    /// it with QUIC's ACK-frequency extension ([`ACK_DELAY`] late at most); `None` leaves the
    /// peer at QUIC's default, an acknowledgement for every second packet. Peers without the
    /// extension (browsers) keep their default either way.
    pub peer_ack_threshold: Option<u32>,
    /// How the sender paces itself against loss and queueing on the path.
    pub congestion: Congestion,
}

/// A QUIC congestion controller, as quinn implements them. A relay's choice decides how each
/// viewer's connection reacts to loss and to a path slower than the stream.
/// Its serde form is its flag value (`bbr`), so it renders as the relay parses it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Congestion {
    /// CUBIC (RFC 9438): loss-based, the default of quinn and of Linux TCP.
    #[default]
    Cubic,
    /// NewReno (RFC 9002's reference controller): loss-based, halves on each loss event.
    #[value(name = "newreno")]
    NewReno,
    /// BBR (model-based: bandwidth and round-trip estimates, not loss, set the rate);
    /// quinn marks its implementation experimental.
    Bbr,
}

impl Congestion {
    /// The relays' choice toward viewers unless told otherwise: BBR. In the network lab
    /// (`ghost bench lab`, README "QUIC or TCP"), a viewer 100 ms away behind 0.5 % loss got
    /// 66 % of the frames under CUBIC and 62 % under NewReno, whose loss response caps one
    /// connection below the stream's rate at that round trip, and all of them under BBR (p99
    /// 172 ms); at 2 % loss BBR still delivered every frame, and on clean paths the three do
    /// the same.
    pub const FOR_VIEWERS: Congestion = Congestion::Bbr;

    /// Its name, as the flag takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Congestion::Cubic => "cubic",
            Congestion::NewReno => "newreno",
            Congestion::Bbr => "bbr",
        }
    }

    fn factory(self) -> Arc<dyn quinn::congestion::ControllerFactory + Send + Sync> {
        match self {
            Congestion::Cubic => Arc::new(quinn::congestion::CubicConfig::default()),
            Congestion::NewReno => Arc::new(quinn::congestion::NewRenoConfig::default()),
            Congestion::Bbr => Arc::new(quinn::congestion::BbrConfig::default()),
        }
    }
}

impl std::fmt::Display for Congestion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How late a peer asked for fewer acknowledgements ([`Windows::peer_ack_threshold`]) may
/// send one: QUIC's default `max_ack_delay`, below a frame's interval at 30 fps, so a viewer
/// still acknowledges every frame, once, between frames rather than during the fan-out.
pub const ACK_DELAY: Duration = Duration::from_millis(25);

/// The threshold media senders ask of their receivers: a 30 fps frame of 8 KB is six
/// packets, so a receiver acknowledges it once, [`ACK_DELAY`] after it arrived, instead of
/// at once (when the sender is still fanning the same frame out to other viewers). Two
/// packets out of order still bring one at once (the extension's reordering threshold, one
/// below quinn's loss threshold of three), so loss recovery is not delayed.
pub const MEDIA_ACK_THRESHOLD: u32 = 10;

impl Windows {
    /// Windows of a media receiver (viewer, relay as a subscriber, ingest as a receiver):
    /// about a second of a 2 Mbit/s stream may wait unread. A reader that falls further
    /// behind stops granting credit, the sender notices and skips groups. (Credit grows back
    /// as the reader consumes, so this caps what is in flight, not the rate: 256 KiB per
    /// 100 ms round trip is still 20 Mbit/s.)
    pub const RECEIVER: Windows = Windows {
        stream_receive: 256 * 1024,
        receive: 320 * 1024,
        send: 256 * 1024,
        uni_streams: 64,
        peer_ack_threshold: None,
        congestion: Congestion::Cubic,
    };

    /// Windows of a media sender (relay, ingest).
    pub const SENDER: Windows = Windows {
        stream_receive: 64 * 1024,
        receive: 128 * 1024,
        send: 2 * 1024 * 1024,
        uni_streams: 4,
        peer_ack_threshold: Some(MEDIA_ACK_THRESHOLD),
        congestion: Congestion::Cubic,
    };

    /// Windows of a publisher's side: it sends, and receives nothing but session messages.
    pub const PUBLISHER: Windows = Windows {
        stream_receive: 64 * 1024,
        receive: 128 * 1024,
        send: 8 * 1024 * 1024,
        uni_streams: 4,
        peer_ack_threshold: Some(MEDIA_ACK_THRESHOLD),
        congestion: Congestion::Cubic,
    };
}

/// Transport settings: short idle timeout with keep-alives, the given windows, and the
/// acknowledgement frequency asked of the peer.
pub fn transport(windows: Windows) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    // IDLE_TIMEOUT is far below the varint maximum.
    t.max_idle_timeout(quinn::IdleTimeout::try_from(IDLE_TIMEOUT).ok());
    t.keep_alive_interval(Some(KEEP_ALIVE));
    t.stream_receive_window(VarInt::from_u32(windows.stream_receive));
    t.receive_window(VarInt::from_u32(windows.receive));
    t.send_window(windows.send);
    t.max_concurrent_uni_streams(VarInt::from_u32(windows.uni_streams));
    t.max_concurrent_bidi_streams(VarInt::from_u32(1));
    t.congestion_controller_factory(windows.congestion.factory());
    if let Some(threshold) = windows.peer_ack_threshold {
        let mut acks = quinn::AckFrequencyConfig::default();
        acks.ack_eliciting_threshold(VarInt::from_u32(threshold))
            .max_ack_delay(Some(ACK_DELAY));
        t.ack_frequency_config(Some(acks));
    }
    t
}

/// Socket buffer size asked of the kernel for every QUIC socket. A relay's fan-out sends a
/// burst of one frame to every viewer at once; with the kernel's default (about 208 KiB)
/// the receiving side overflows and drops datagrams, and each loss costs a retransmission
/// timeout of delay. The kernel caps it at `net.core.rmem_max` / `wmem_max`.
pub const SOCKET_BUFFER: usize = 4 << 20;

/// Why a QUIC endpoint could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The TLS configuration could not be built (files, keys; see [`identity::Error`]).
    #[error(transparent)]
    Tls(#[from] identity::Error),
    /// The TLS configuration has no cipher suite QUIC can use.
    #[error("TLS config unusable for QUIC")]
    Crypto(#[source] quinn::crypto::rustls::NoInitialCipherSuite),
    /// No UDP socket could be made.
    #[error("creating a UDP socket")]
    Socket(#[source] std::io::Error),
    /// The UDP socket could not be bound (the port is taken, the address is not ours).
    #[error("binding UDP {addr}")]
    BindUdp {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Called outside a tokio runtime.
    #[error("no async runtime for QUIC")]
    NoRuntime,
    /// quinn could not start on the socket.
    #[error("starting QUIC on {addr}")]
    Start {
        /// The socket's address.
        addr: SocketAddr,
        /// quinn's error.
        #[source]
        source: std::io::Error,
    },
    /// A server endpoint could not be set up on its address.
    #[error("binding QUIC on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: Box<EndpointError>,
    },
    /// A client endpoint found no UDP socket, IPv6 or IPv4.
    #[error("binding a UDP socket for QUIC")]
    ClientSocket(#[source] Box<EndpointError>),
}

/// A UDP socket on `addr` with large kernel buffers, for quinn.
fn udp_socket(addr: SocketAddr) -> Result<std::net::UdpSocket, EndpointError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .map_err(EndpointError::Socket)?;
    if addr.is_ipv6() {
        // Dual stack where the address is unspecified: IPv4 peers too.
        let _ = socket.set_only_v6(false);
    }
    // Best effort: a smaller buffer than asked still works, only with more loss under bursts.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket
        .bind(&addr.into())
        .map_err(|source| EndpointError::BindUdp { addr, source })?;
    Ok(socket.into())
}

fn endpoint(
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
) -> Result<quinn::Endpoint, EndpointError> {
    let socket = udp_socket(addr)?;
    let runtime = quinn::default_runtime().ok_or(EndpointError::NoRuntime)?;
    quinn::Endpoint::new(quinn::EndpointConfig::default(), server, socket, runtime)
        .map_err(|source| EndpointError::Start { addr, source })
}

/// A server endpoint on `addr` offering `alpns`.
pub fn server(
    addr: SocketAddr,
    identity: &identity::Identity,
    alpns: &[&[u8]],
    windows: Windows,
) -> Result<quinn::Endpoint, EndpointError> {
    server_with(addr, identity::server_config(identity, alpns)?, windows)
}

/// A server endpoint on `addr` offering `alpns` that asks clients for a certificate from
/// the CA in `ca` without requiring one ([`identity::server_config_verifying_clients`]); each
/// connection's [`peer_role`] tells who presented which.
pub fn server_verifying_clients(
    addr: SocketAddr,
    identity: &identity::Identity,
    alpns: &[&[u8]],
    ca: &Path,
    windows: Windows,
) -> Result<quinn::Endpoint, EndpointError> {
    server_with(
        addr,
        identity::server_config_verifying_clients(identity, alpns, ca)?,
        windows,
    )
}

/// A server endpoint on `addr` whose certificate follows `certs` (relays: theirs is renewed
/// while they run).
pub fn server_reloading(
    addr: SocketAddr,
    certs: Arc<identity::Reloading>,
    alpns: &[&[u8]],
    windows: Windows,
) -> Result<quinn::Endpoint, EndpointError> {
    server_with(
        addr,
        identity::reloading_server_config(certs, alpns)?,
        windows,
    )
}

fn server_with(
    addr: SocketAddr,
    crypto: rustls::ServerConfig,
    windows: Windows,
) -> Result<quinn::Endpoint, EndpointError> {
    let crypto =
        quinn::crypto::rustls::QuicServerConfig::try_from(crypto).map_err(EndpointError::Crypto)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport(windows)));
    endpoint(addr, Some(config)).map_err(|source| EndpointError::Bind {
        addr,
        source: Box::new(source),
    })
}

/// A client endpoint that trusts the stack's CA and offers `alpn`.
pub fn client(ca: &Path, alpn: &[u8], windows: Windows) -> Result<quinn::Endpoint, EndpointError> {
    client_with(identity::client_config(ca, alpn)?, windows)
}

/// A client endpoint that trusts the stack's CA, offers `alpn` and presents `identity` (a
/// client certificate naming its role) to servers that ask.
pub fn client_as(
    ca: &Path,
    alpn: &[u8],
    identity: &identity::Identity,
    windows: Windows,
) -> Result<quinn::Endpoint, EndpointError> {
    client_with(identity::client_config_as(ca, alpn, identity)?, windows)
}

/// A client endpoint that trusts only the server certificate with SHA-256 `sha256` (hex).
pub fn client_pinned(
    sha256: &str,
    alpn: &[u8],
    windows: Windows,
) -> Result<quinn::Endpoint, EndpointError> {
    client_with(identity::pinned_client_config(sha256, alpn)?, windows)
}

fn client_with(
    crypto: rustls::ClientConfig,
    windows: Windows,
) -> Result<quinn::Endpoint, EndpointError> {
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(crypto).map_err(EndpointError::Crypto)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport(windows)));
    let bind: SocketAddr = (std::net::Ipv6Addr::UNSPECIFIED, 0).into();
    let mut endpoint = endpoint(bind, None)
        .or_else(|_| endpoint((std::net::Ipv4Addr::UNSPECIFIED, 0).into(), None))
        .map_err(|source| EndpointError::ClientSocket(Box::new(source)))?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// Resolves `host:port` (a name or an address) to one socket address.
pub async fn resolve(addr: &str) -> Result<SocketAddr, ResolveError> {
    tokio::net::lookup_host(addr)
        .await
        .map_err(|source| ResolveError::Lookup {
            addr: addr.to_string(),
            source,
        })?
        .next()
        .ok_or_else(|| ResolveError::NoAddress(addr.to_string()))
}

/// Why a `host:port` did not resolve.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The lookup failed (no such name, no resolver).
    #[error("resolving {addr}")]
    Lookup {
        /// What was looked up.
        addr: String,
        /// The resolver's error.
        #[source]
        source: std::io::Error,
    },
    /// The name exists and has no address.
    #[error("{0} resolves to no address")]
    NoAddress(String),
}

/// Closes `conn` with an application code and reason.
pub fn close<P: Peer>(conn: &P, code: Code, reason: &str) {
    Peer::close(conn, code, reason);
}

/// How a connection ended, as seen by the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// The peer closed with an application code.
    ByPeer {
        /// Why.
        code: Code,
        /// Reason text.
        reason: String,
    },
    /// We closed it ourselves.
    Locally,
    /// The peer went silent past the idle timeout, or the network failed.
    Lost(String),
}

impl From<&ConnectionError> for Closed {
    fn from(e: &ConnectionError) -> Closed {
        match e {
            ConnectionError::ApplicationClosed(c) => Closed::ByPeer {
                code: u32::try_from(c.error_code.into_inner())
                    .map_or(Code::Unknown(u32::MAX), Code::from),
                reason: String::from_utf8_lossy(&c.reason).into_owned(),
            },
            ConnectionError::LocallyClosed => Closed::Locally,
            other => Closed::Lost(other.to_string()),
        }
    }
}

/// Errors on a session stream.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The peer sent bytes that are not a valid message.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// Reading failed (connection lost or stream reset).
    #[error("reading the session stream: {0}")]
    Read(#[from] quinn::ReadError),
    /// Writing failed.
    #[error("writing the session stream: {0}")]
    Write(#[from] quinn::WriteError),
    /// The session stream could not be opened or accepted.
    #[error("opening the session stream: {0}")]
    Connection(#[from] ConnectionError),
    /// The peer finished the stream in the middle of a message.
    #[error("session stream ended inside a message")]
    Truncated,
    /// The peer sent a message that makes no sense at this point.
    #[error("unexpected {0} message")]
    Unexpected(&'static str),
}

impl SessionError {
    /// The close code that tells the peer what went wrong.
    pub fn code(&self) -> Code {
        match self {
            SessionError::Wire(e) => e.code(),
            _ => Code::Protocol,
        }
    }
}

/// The session stream: the first bidirectional stream of a connection (over WebTransport,
/// the first one of the session).
pub struct Session<P: Peer = Connection> {
    send: P::Send,
    recv: P::Recv,
    buf: BytesMut,
}

impl<P: Peer> std::fmt::Debug for Session<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("buffered", &self.buf.len())
            .finish_non_exhaustive()
    }
}

impl<P: Peer> Session<P> {
    /// Opens the session stream (client side).
    pub async fn open(conn: &P) -> Result<Session<P>, SessionError> {
        let (send, recv) = conn.open_bi().await?;
        Ok(Session::new(send, recv))
    }

    /// Accepts the session stream (server side).
    pub async fn accept(conn: &P) -> Result<Session<P>, SessionError> {
        let (send, recv) = conn.accept_bi().await?;
        Ok(Session::new(send, recv))
    }

    fn new(send: P::Send, recv: P::Recv) -> Session<P> {
        Session {
            send,
            recv,
            buf: BytesMut::new(),
        }
    }

    /// Writes one message.
    pub async fn send(&mut self, msg: &Message) -> Result<(), SessionError> {
        peer::SendStream::write_chunk(&mut self.send, msg.to_bytes()).await?;
        Ok(())
    }

    /// Reads the next message; `Ok(None)` when the peer finished the stream cleanly.
    ///
    /// Cancel safe: bytes already read stay buffered for the next call.
    pub async fn recv(&mut self) -> Result<Option<Message>, SessionError> {
        loop {
            if let Some(msg) = Message::decode(&mut self.buf)? {
                return Ok(Some(msg));
            }
            match peer::RecvStream::read_chunk(&mut self.recv, 64 * 1024).await? {
                Some(chunk) => self.buf.extend_from_slice(&chunk),
                None if self.buf.is_empty() => return Ok(None),
                None => return Err(SessionError::Truncated),
            }
        }
    }

    /// The stream's two halves, and the bytes read past the last message taken: what a
    /// peer sends after its last message, when what follows is no longer messages.
    pub fn into_parts(self) -> (P::Send, P::Recv, Bytes) {
        (self.send, self.recv, self.buf.freeze())
    }

    /// Finishes our side of the stream.
    pub fn finish(&mut self) {
        // Already finished or reset: nothing more to say either way.
        peer::SendStream::finish(&mut self.send);
    }
}

/// The ALPN a connection negotiated.
pub fn alpn(conn: &Connection) -> Option<Vec<u8>> {
    conn.handshake_data()?
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?
        .protocol
}

/// The role the peer's client certificate names, verified against the stack's CA during
/// the handshake; `None` when it presented none, or one naming no role.
pub fn peer_role(conn: &Connection) -> Option<identity::Role> {
    let chain = conn
        .peer_identity()?
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    identity::peer::peer_role(&chain)
}

/// Accepts connections until `shutdown`, running `handle` for each in its own task under a
/// span with the connection's id and peer. `admission` decides first: a source at its cap
/// is refused, and under a handshake flood clients must answer a Retry. A failed handshake
/// or a failing connection is logged and never stops the loop. On shutdown the endpoint
/// closes with [`Code::Shutdown`] and waits (bounded) until its connections are gone.
pub async fn accept_loop<F, Fut>(
    endpoint: quinn::Endpoint,
    admission: Arc<Admission>,
    shutdown: tokio_util::sync::CancellationToken,
    handle: F,
) where
    F: Fn(Connection) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    use tracing::Instrument;
    let handle = Arc::new(handle);
    let tasks = tokio_util::task::TaskTracker::new();
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
            () = shutdown.cancelled() => break,
        };
        let peer = incoming.remote_address();
        let mut slot = match admission.decide(peer.ip(), incoming.remote_address_validated()) {
            Decision::Accept(slot) => slot,
            Decision::Retry => {
                if let Err(error) = incoming.retry() {
                    // Only for a client that already answered one: not ours to retry again.
                    tracing::debug!(%peer, %error, "retry not possible");
                    error.into_incoming().ignore();
                }
                continue;
            }
            Decision::Refuse => {
                tracing::debug!(%peer, "refused: this source holds all the connections it may");
                incoming.refuse();
                continue;
            }
        };
        let handle = handle.clone();
        tasks.spawn(async move {
            let connecting = match incoming.accept() {
                Ok(c) => c,
                Err(error) => {
                    tracing::debug!(%peer, %error, "incoming connection dropped");
                    return;
                }
            };
            let conn = connecting.await;
            slot.established();
            let conn = match conn {
                Ok(conn) => conn,
                Err(error) => {
                    tracing::debug!(%peer, %error, "handshake failed");
                    return;
                }
            };
            let span = tracing::info_span!("conn", id = conn.stable_id(), %peer);
            handle(conn).instrument(span).await;
            drop(slot);
        });
    }
    tasks.close();
    endpoint.close(
        VarInt::from_u32(Code::Shutdown.into()),
        b"server shutting down",
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), tasks.wait()).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
}

//! `ghost watch`: joins a stream through the viewer gateway, then receives it from the relay,
//! natively (ALPN `ghost-view/1`) or over WebTransport (`h3`, what a browser speaks). Both
//! run the same receiving code ([`Peer`]), so their summaries compare like for like.
//!
//! A benchmark's viewer may instead ask for every group on its session stream
//! ([`Transport::QuicOneStream`], [`transport::one_stream`]): TCP's head-of-line blocking
//! inside QUIC, received by the same code as a WebSocket viewer's.
//!
//! Groups arrive on their own streams and are written out in order: the init segment, then
//! frames from the first group's keyframe on. A group the relay skipped (reset, or never
//! sent) is counted and passed over; output always resumes at a keyframe.
//!
//! A stream's codec setup may change mid-stream (an RTMP publisher changing resolution): from
//! then on the first frame of a group may carry the new init segment inline, before its
//! moof+mdat. A demuxer reading a pipe takes one moov only, so the output keeps its first
//! init segment and gets the fragments alone; the new parameter sets reach the decoder
//! in-band, with the keyframes (which ffmpeg follows).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use api::client::{EndReason, Latency, WatchSummary};
use api::gateway::Join;
use bytes::BytesMut;
use server::clock;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use transport::peer::{Peer, RecvStream};
use transport::quic::{self, Closed, Session, Windows};
use wire::{Code, Delivery, Frame, GroupDecoder, GroupEvent, Message, Reset};

use crate::exit::{self, Exit};
use crate::timing::Timing;

mod error;
mod init;
mod offset;

pub use error::Error;
use init::split_inline_init;
pub use offset::ClockOffset;
use offset::ping_after;

type Result<T, E = Error> = std::result::Result<T, E>;

/// Asks the gateway for a relay. Maps 404 to exit 4, and 503 (no room) and 429 (too many
/// joins from this address) to exit 3.
pub async fn join(http: &reqwest::Client, gateway: &str, stream: &str) -> Result<Join> {
    let url = format!(
        "{}/streams/{}/join",
        gateway.trim_end_matches('/'),
        urlencode(stream)
    );
    let resp = http
        .post(&url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|source| Error::Gateway {
            gateway: gateway.to_string(),
            source,
        })?;
    let status = resp.status();
    if status.is_success() {
        return resp.json().await.map_err(Error::GatewayAnswer);
    }
    let problem = resp
        .json::<api::Problem>()
        .await
        .unwrap_or_else(|_| api::Problem::new("unknown", "no reason given"));
    let reason = &problem.reason;
    Err(match status.as_u16() {
        404 => Exit::new(
            exit::NOT_FOUND,
            format!("no such stream: {stream} ({reason})"),
        ),
        429 => Exit::new(
            exit::REJECTED,
            format!("rejected: too many joins from this address: {reason}"),
        ),
        503 if problem.error == api::gateway::NO_CAPACITY => {
            Exit::new(exit::REJECTED, format!("rejected for capacity: {reason}"))
        }
        _ => Exit::new(
            exit::FAILURE,
            format!("gateway answered {status}: {reason}"),
        ),
    }
    .into())
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

fn unhex(s: &str) -> Result<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return Err(Error::TicketNotHex(None));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|e| Error::TicketNotHex(Some(e))))
        .collect()
}

/// The exit code of `ghost watch` for the way watching ended.
pub fn exit_code(reason: EndReason) -> i32 {
    match reason {
        EndReason::Ended | EndReason::Duration => exit::OK,
        EndReason::RelayLost => exit::LOST,
        EndReason::Rejected => exit::REJECTED,
    }
}

/// What `watch` needs.
pub struct Options {
    /// Viewer gateway URL.
    pub gateway: String,
    /// Stream id or name.
    pub stream: String,
    /// CA certificate of the stack; where the file does not exist, the relay is verified by
    /// the certificate hash the gateway returns instead.
    pub ca: PathBuf,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Sleep this long after taking each frame: a deliberately slow reader.
    pub read_delay: Option<Duration>,
    /// Where the media goes (init segment, then frames), if anywhere.
    pub output: Option<Box<dyn AsyncWrite + Unpin + Send>>,
    /// How to reach the relay.
    pub transport: Transport,
    /// QUIC endpoint to use (a new one when `None`); load tests share a few. It must offer
    /// the ALPN of `transport` ([`endpoint`] does).
    pub endpoint: Option<quinn::Endpoint>,
    /// HTTP client to use.
    pub http: reqwest::Client,
    /// Count delay and `measured_bytes` only from this wall-clock time on (Unix
    /// microseconds): load tests leave their ramp out of the figures.
    pub measure_from_us: Option<u64>,
    /// Microseconds added to this machine's clock: a viewer whose clock is off, on purpose
    /// (tests). The relay's clock, asked by `Ping`, corrects it back.
    pub clock_skew_us: i64,
}

/// How a viewer reaches its relay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Transport {
    /// QUIC with ALPN `ghost-view/1`.
    #[default]
    Native,
    /// WebTransport over HTTP/3 (ALPN `h3`), as a browser does.
    WebTransport,
    /// WebSocket over TCP (subprotocol `ghost-ws.1`), as a browser without WebTransport or
    /// behind a network that blocks UDP does: `wss://` when the gateway is reached over
    /// https, `ws://` otherwise.
    WebSocket,
    /// QUIC with ALPN `ghost-view/1`, every group on the session stream in the WebSocket
    /// carrier's framing ([`Delivery::OneStream`]): a benchmark's control case, TCP's
    /// head-of-line blocking with QUIC's loss recovery.
    QuicOneStream,
}

impl Transport {
    fn alpn(self) -> &'static [u8] {
        match self {
            Transport::Native | Transport::QuicOneStream => quic::ALPN_VIEW,
            Transport::WebTransport => quic::ALPN_H3,
            Transport::WebSocket => b"http/1.1",
        }
    }
}

/// Opens the relay's WebSocket for `assignment`: TLS, pinned to the certificate hash the
/// gateway gave, when the gateway itself was reached over https (as a page served over
/// https must use `wss://`).
async fn websocket(
    gateway: &str,
    assignment: &Join,
    lab: Option<&netlab::Lab>,
) -> Result<transport::ws::Session> {
    let lost = |e: &dyn std::fmt::Display| {
        Exit::new(
            exit::LOST,
            format!(
                "cannot connect to relay {} over WebSocket: {e}",
                assignment.relay_addr
            ),
        )
    };
    let tcp = match lab {
        Some(lab) => {
            let addr = quic::resolve(&assignment.relay_addr).await?;
            lab.tcp_connect(addr).await
        }
        None => tokio::net::TcpStream::connect(&assignment.relay_addr).await,
    }
    .map_err(|e| lost(&e))?;
    let _ = tcp.set_nodelay(true);
    if gateway.starts_with("https://") {
        let config = identity::pinned_client_config(&assignment.cert_sha256, b"http/1.1")?;
        let name = rustls_pki_types::ServerName::try_from(assignment.server_name.clone()).map_err(
            |source| Error::ServerName {
                name: assignment.server_name.clone(),
                source,
            },
        )?;
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| lost(&e))?;
        let url = format!("wss://{}/", assignment.relay_addr);
        transport::ws::connect(tls, &url)
            .await
            .map_err(|e| lost(&e).into())
    } else {
        let url = format!("ws://{}/", assignment.relay_addr);
        transport::ws::connect(tcp, &url)
            .await
            .map_err(|e| lost(&e).into())
    }
}

/// A client endpoint for viewers on `transport`.
pub fn endpoint(ca: &std::path::Path, transport: Transport) -> Result<quinn::Endpoint> {
    Ok(quic::client(ca, transport.alpn(), Windows::RECEIVER)?)
}

/// A client endpoint for viewers on `transport` whose socket is in `lab`: their packets
/// cross the lab's impaired path to reach the stack. Otherwise as [`endpoint`].
pub fn endpoint_in(
    ca: &std::path::Path,
    transport: Transport,
    lab: &netlab::Lab,
) -> Result<quinn::Endpoint> {
    let socket = lab
        .run(lab_udp_socket)
        .map_err(Error::LabEnter)?
        .map_err(Error::LabSocket)?;
    let crypto = identity::client_config(ca, transport.alpn())?;
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(crypto).map_err(Error::QuicConfig)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(quic::transport(Windows::RECEIVER)));
    let runtime = quinn::default_runtime().ok_or(Error::NoRuntime)?;
    let mut endpoint =
        quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket, runtime)
            .map_err(Error::LabEndpoint)?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// A UDP socket for a shared viewers' endpoint, made on a thread in the lab's namespace.
/// Its kernel buffers are as large as the stack's own, so bursts of many viewers' packets
/// are lost on the impaired path only, not in this socket's queue.
fn lab_udp_socket() -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: a smaller buffer than asked still works.
    let _ = socket.set_recv_buffer_size(quic::SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(quic::SOCKET_BUFFER);
    // Loopback is down in the lab: the unspecified address, not 127.0.0.1.
    let bind: std::net::SocketAddr = (std::net::Ipv4Addr::UNSPECIFIED, 0).into();
    socket.bind(&bind.into())?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// What a load test adds to a viewer, which `ghost watch` itself needs none of.
#[derive(Debug, Default)]
pub struct Probe {
    /// The network lab a WebSocket viewer connects from, across its impaired path. (A QUIC
    /// viewer's path is that of its endpoint: make it with [`endpoint_in`].)
    pub lab: Option<Arc<netlab::Lab>>,
    /// Frame timing to fill in as frames arrive.
    pub timing: Option<Timing>,
    /// The viewer runs on the stack's own machine and reads its clock: no offset is
    /// estimated. An estimate could only add error there, and does when the `Pong` that
    /// carries it waits behind a join's catch-up burst (on a WebSocket, in the same TCP
    /// stream), which makes delays read too short.
    pub shared_clock: bool,
}

enum Event {
    /// A group stream opened; cancelling the token abandons it.
    Started(u64, CancellationToken),
    Frame(u64, Frame),
    /// The group stream ended: complete (`true`) or reset/broken (`false`).
    Done(u64, bool),
}

/// Watches until the stream ends, `duration` elapses, `stop` fires or the relay is lost.
pub async fn watch(options: Options, stop: CancellationToken) -> Result<WatchSummary> {
    watch_probed(options, stop, Probe::default())
        .await
        .map(|(summary, _)| summary)
}

/// Watches as [`watch`] does, through `probe`'s lab if any, and gives back the probe's
/// frame timing filled in.
pub async fn watch_probed(
    mut options: Options,
    stop: CancellationToken,
    probe: Probe,
) -> Result<(WatchSummary, Option<Timing>)> {
    let started = tokio::time::Instant::now();
    let Probe {
        lab,
        mut timing,
        shared_clock,
    } = probe;
    let assignment = join(&options.http, &options.gateway, &options.stream).await?;
    let webtransport = match options.transport {
        Transport::WebSocket => {
            let conn = websocket(&options.gateway, &assignment, lab.as_deref()).await?;
            let joined = open_and_join(conn, &assignment, Delivery::StreamPerGroup).await?;
            let summary = receive(
                joined,
                options,
                assignment,
                started,
                stop,
                timing.as_mut(),
                shared_clock,
            )
            .await?;
            return Ok((summary, timing));
        }
        Transport::Native | Transport::QuicOneStream => false,
        Transport::WebTransport => true,
    };
    let endpoint = match options.endpoint.take() {
        Some(e) => e,
        None if options.ca.exists() && !assignment.cert_public => {
            endpoint(&options.ca, options.transport)?
        }
        // No copy of the stack's CA here (a viewer on another machine), or a relay with the
        // operator's certificate, which that CA did not issue: trust the relay by the
        // certificate hash the gateway gave (what a browser's `serverCertificateHashes` does).
        None => quic::client_pinned(
            &assignment.cert_sha256,
            options.transport.alpn(),
            Windows::RECEIVER,
        )?,
    };
    let addr = quic::resolve(&assignment.relay_addr).await?;
    let conn = endpoint
        .connect(addr, &assignment.server_name)
        .map_err(Error::Connect)?
        .await
        .map_err(|e| {
            Exit::new(
                exit::LOST,
                format!("cannot connect to relay {}: {e}", assignment.relay_addr),
            )
        })?;
    let summary = if options.transport == Transport::QuicOneStream {
        let Joined { session, .. } =
            open_and_join(conn.clone(), &assignment, Delivery::OneStream).await?;
        let carried = transport::one_stream::viewer_side(session).await;
        // The relay opens the inner session stream with its `Init`; a refusal closes the
        // QUIC connection, whose code says why.
        let inner =
            match tokio::time::timeout(quic::SESSION_TIMEOUT, Session::accept(&carried)).await {
                Ok(Ok(inner)) => inner,
                Ok(Err(_)) | Err(_) => {
                    let closed = conn.close_reason().map(|c| Closed::from(&c));
                    return Err(refused(closed, &assignment).into());
                }
            };
        let summary = receive(
            Joined {
                conn: carried,
                session: inner,
            },
            options,
            assignment,
            started,
            stop,
            timing.as_mut(),
            shared_clock,
        )
        .await;
        transport::quic::close(&conn, Code::Normal, "viewer done");
        summary?
    } else if !webtransport {
        let joined = open_and_join(conn, &assignment, Delivery::StreamPerGroup).await?;
        receive(
            joined,
            options,
            assignment,
            started,
            stop,
            timing.as_mut(),
            shared_clock,
        )
        .await?
    } else {
        // Any path will do: the relay serves one thing. The ticket travels in `Join`, as
        // for a native viewer.
        let url =
            url::Url::parse(&format!("https://{}/", assignment.relay_addr)).map_err(|source| {
                Error::RelayAddress {
                    addr: assignment.relay_addr.clone(),
                    source,
                }
            })?;
        let session = tokio::time::timeout(
            quic::SESSION_TIMEOUT,
            web_transport_quinn::Session::connect(conn.clone(), url),
        )
        .await
        .map_err(|_| {
            Exit::new(
                exit::LOST,
                format!("relay {} did not answer WebTransport", assignment.relay_id),
            )
        })?
        .map_err(|e| {
            let closed = conn.close_reason().map(|c| Closed::from(&c));
            match closed {
                Some(closed) => refused(Some(closed), &assignment),
                None => Exit::new(exit::LOST, format!("WebTransport session refused: {e}")),
            }
        })?;
        let joined = open_and_join(session, &assignment, Delivery::StreamPerGroup).await?;
        receive(
            joined,
            options,
            assignment,
            started,
            stop,
            timing.as_mut(),
            shared_clock,
        )
        .await?
    };
    Ok((summary, timing))
}

/// A connection whose session stream carried the join: groups come on the one, messages on
/// the other.
struct Joined<P: Peer> {
    conn: P,
    session: Session<P>,
}

/// Opens the session stream on `conn` and sends the join, asking for `delivery`.
async fn open_and_join<P: Peer>(
    conn: P,
    assignment: &Join,
    delivery: Delivery,
) -> Result<Joined<P>> {
    let mut session = Session::open(&conn).await?;
    session
        .send(&Message::Join {
            stream_id: assignment.stream_id.clone(),
            ticket: unhex(&assignment.ticket)?.into(),
            delivery,
        })
        .await?;
    Ok(Joined { conn, session })
}

/// Receives the stream once joined: groups until the end.
async fn receive<P: Peer>(
    joined: Joined<P>,
    mut options: Options,
    assignment: Join,
    started: tokio::time::Instant,
    stop: CancellationToken,
    mut timing: Option<&mut Timing>,
    shared_clock: bool,
) -> Result<WatchSummary> {
    let Joined { conn, mut session } = joined;
    let mut summary = WatchSummary {
        stream_id: assignment.stream_id.clone(),
        relay_id: assignment.relay_id.clone(),
        frames: 0,
        groups: 0,
        bytes: 0,
        skipped_groups: 0,
        latency_ms: Latency::default(),
        end_reason: EndReason::Duration,
        first_group: None,
        first_frame_ms: None,
        catch_up_frames: 0,
        measured_bytes: 0,
        ended_at_us: 0,
        detail: String::new(),
        clock_offset_ms: None,
    };
    // This machine's clock as the viewer lives by it (skewed in tests), and its offset to
    // the relay's, which frames' capture times are on.
    let skew = options.clock_skew_us;
    let viewer_now = move || clock::now_us().saturating_add_signed(skew);
    let mut offset = ClockOffset::default();
    let mut pings_sent = 0u32;
    let mut next_ping = tokio::time::Instant::now();
    let joined_us = viewer_now();
    let init = match tokio::time::timeout(quic::SESSION_TIMEOUT, session.recv()).await {
        Ok(Ok(Some(Message::Init { init, .. }))) => init,
        Ok(Ok(_)) => return Err(Error::UnexpectedAnswer),
        Ok(Err(_)) | Err(_) => {
            let closed = conn.close_reason().map(|c| Closed::from(&c));
            return Err(refused(closed, &assignment).into());
        }
    };
    let mut output = options.output.take();
    if let Some(out) = output.as_mut()
        && !init.is_empty()
    {
        out.write_all(&init).await.map_err(Error::Output)?;
    }
    // The codec setup the stream has now: the init segment written, or the newest inline one.
    let mut setup = init;

    let (tx, mut rx) = mpsc::channel::<Event>(64);
    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)
        .map_err(Error::Histogram)?;
    let mut pending: BTreeMap<u64, (std::collections::VecDeque<Frame>, Option<bool>)> =
        BTreeMap::new();
    let mut current: Option<u64> = None;
    let mut last_done: Option<u64> = None;
    let mut end_last: Option<Option<u64>> = None;
    let deadline = options.duration.map(|d| started + d);
    let sleep_until = async move {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(sleep_until);
    let mut readers = tokio::task::JoinSet::new();
    let mut open: BTreeMap<u64, CancellationToken> = BTreeMap::new();
    let mut drain_deadline: Option<tokio::time::Instant> = None;

    loop {
        // Write out what is ready, in group order.
        loop {
            if current.is_none() {
                current = pending
                    .keys()
                    .copied()
                    .find(|s| last_done.is_none_or(|l| *s > l));
                if let (Some(c), Some(l)) = (current, last_done) {
                    summary.skipped_groups += c.saturating_sub(l + 1);
                }
            }
            let Some(cur) = current else { break };
            let Some((frames, done)) = pending.get_mut(&cur) else {
                break;
            };
            while let Some(f) = frames.pop_front() {
                if let Some(out) = output.as_mut() {
                    let payload = f.payload();
                    let media = match split_inline_init(&payload) {
                        Some((inline, media)) => {
                            if inline != &setup[..] {
                                tracing::info!(
                                    stream = %summary.stream_id,
                                    group = cur,
                                    init_bytes = inline.len(),
                                    "the stream's codec setup changed; the output keeps its \
                                     first init segment and the new parameter sets travel \
                                     in-band with the keyframes"
                                );
                                setup = payload.slice_ref(inline);
                            }
                            media
                        }
                        None => &payload[..],
                    };
                    out.write_all(media).await.map_err(Error::Output)?;
                }
            }
            match *done {
                Some(complete) => {
                    if !complete {
                        summary.skipped_groups += 1;
                    }
                    pending.remove(&cur);
                    last_done = Some(cur);
                    current = None;
                }
                None => break,
            }
        }
        // Everything before the end is in.
        if let Some(last) = end_last {
            let drained = readers.is_empty()
                && pending.is_empty()
                && last.is_none_or(|l| last_done.is_some_and(|d| d >= l));
            if drained || drain_deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                summary.end_reason = EndReason::Ended;
                break;
            }
        }
        if end_last.is_none() && tokio::time::Instant::now() >= next_ping {
            // Small and rare: sent here rather than raced against the reads below.
            let sent_us = viewer_now();
            if session.send(&Message::Ping { sent_us }).await.is_ok() {
                pings_sent += 1;
            }
            next_ping = tokio::time::Instant::now() + ping_after(pings_sent);
        }
        tokio::select! {
            () = tokio::time::sleep_until(next_ping), if end_last.is_none() => {}
            stream = conn.accept_uni() => match stream {
                Ok(recv) => { readers.spawn(read_group(recv, tx.clone(), options.read_delay)); }
                Err(e) => {
                    if end_last.is_some() {
                        summary.end_reason = EndReason::Ended;
                    } else {
                        summary.end_reason = reason_for(&Closed::from(&e));
                        summary.detail = format!("{e}");
                    }
                    break;
                }
            },
            Some(event) = rx.recv() => match event {
                Event::Started(seq, skip) => {
                    // A newer group supersedes older unfinished ones after a grace.
                    for (older, token) in open.range(..seq) {
                        let token = token.clone();
                        let older = *older;
                        readers.spawn(async move {
                            tokio::time::sleep(SKIP_GRACE).await;
                            if !token.is_cancelled() {
                                tracing::debug!(group = older, "behind: abandoning group");
                                token.cancel();
                            }
                        });
                    }
                    if last_done.is_some_and(|l| seq <= l) {
                        skip.cancel();
                    } else {
                        open.insert(seq, skip);
                    }
                }
                Event::Frame(seq, frame) => {
                    if last_done.is_some_and(|l| seq <= l) {
                        continue;
                    }
                    // The stack's clock, as well as this viewer can tell it.
                    let now = viewer_now().saturating_add_signed(offset.us());
                    let measuring = options.measure_from_us.is_none_or(|t| now >= t);
                    // Delay is read on the stack's clock once the relay has told it (a relay
                    // that never answers is taken to share ours after three pings).
                    let clock_known = shared_clock || offset.ms().is_some() || pings_sent >= 3;
                    let mut delay_us = None;
                    if frame.capture_us() < joined_us.saturating_add_signed(offset.us()) {
                        summary.catch_up_frames += 1;
                    } else if measuring && clock_known {
                        let delay = now.saturating_sub(frame.capture_us()).max(1);
                        let _ = hist.record(delay);
                        delay_us = Some(delay);
                    }
                    if let Some(timing) = timing.as_deref_mut() {
                        timing.handle_frame(
                            std::time::Instant::now(),
                            delay_us.map(Duration::from_micros),
                        );
                    }
                    if measuring {
                        summary.measured_bytes += frame.payload_len() as u64;
                    }
                    if summary.first_frame_ms.is_none() {
                        summary.first_frame_ms = Some(started.elapsed().as_secs_f64() * 1e3);
                        summary.first_group = Some(seq);
                    }
                    summary.frames += 1;
                    summary.bytes += frame.payload_len() as u64;
                    let entry = pending.entry(seq).or_insert_with(|| {
                        summary.groups += 1;
                        (Default::default(), None)
                    });
                    entry.0.push_back(frame);
                }
                Event::Done(seq, complete) => {
                    open.remove(&seq);
                    if let Some(e) = pending.get_mut(&seq) {
                        e.1 = Some(complete);
                    } else if !complete && last_done.is_none_or(|l| seq > l) {
                        // Reset before its first frame reached us.
                        pending.insert(seq, (Default::default(), Some(false)));
                    } else if last_done.is_none_or(|l| seq > l) {
                        pending.insert(seq, (Default::default(), Some(true)));
                    }
                }
            },
            Some(_) = readers.join_next(), if !readers.is_empty() => {}
            msg = session.recv(), if end_last.is_none() => match msg {
                Ok(Some(Message::End { last_group })) => {
                    end_last = Some(last_group);
                    drain_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                }
                Ok(Some(Message::Pong { sent_us, relay_us })) => {
                    if !shared_clock {
                        offset.sample(sent_us, relay_us, viewer_now());
                    }
                }
                Ok(_) => {
                    end_last = Some(None);
                    drain_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                }
                Err(_) => {
                    let closed = conn.close_reason().map(|c| Closed::from(&c));
                    summary.end_reason = closed.as_ref().map_or(EndReason::RelayLost, reason_for);
                    summary.detail = closed.map(|c| format!("{c:?}")).unwrap_or_default();
                    break;
                }
            },
            () = &mut sleep_until => {
                summary.end_reason = EndReason::Duration;
                break;
            }
            () = stop.cancelled() => {
                summary.end_reason = EndReason::Duration;
                break;
            }
            () = async {
                match drain_deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
    }
    summary.ended_at_us = clock::now_us();
    summary.clock_offset_ms = offset.ms();
    if let Some(timing) = timing {
        timing.handle_end(std::time::Instant::now());
    }
    readers.abort_all();
    if let Some(out) = output.as_mut() {
        out.flush().await.map_err(Error::Output)?;
    }
    transport::quic::close(&conn, Code::Normal, "viewer done");
    summary.latency_ms = Latency {
        p50: hist.value_at_quantile(0.5) as f64 / 1e3,
        p99: hist.value_at_quantile(0.99) as f64 / 1e3,
        max: hist.max() as f64 / 1e3,
    };
    Ok(summary)
}

fn reason_for(closed: &Closed) -> EndReason {
    match closed {
        Closed::ByPeer {
            code: Code::Ended, ..
        }
        | Closed::ByPeer {
            code: Code::Normal, ..
        } => EndReason::Ended,
        Closed::ByPeer {
            code: Code::Capacity,
            ..
        } => EndReason::Rejected,
        Closed::Locally => EndReason::Duration,
        _ => EndReason::RelayLost,
    }
}

fn refused(closed: Option<Closed>, a: &Join) -> Exit {
    match closed {
        Some(Closed::ByPeer { code: c, reason }) => {
            let exit_code = match c {
                Code::Capacity => exit::REJECTED,
                Code::NotFound | Code::Ended => exit::NOT_FOUND,
                _ => exit::FAILURE,
            };
            Exit::new(
                exit_code,
                format!(
                    "relay {} refused the join ({}): {reason}",
                    a.relay_id,
                    c.name()
                ),
            )
        }
        Some(other) => Exit::new(exit::LOST, format!("relay {} lost: {other:?}", a.relay_id)),
        None => Exit::new(
            exit::LOST,
            format!("relay {} did not answer the join", a.relay_id),
        ),
    }
}

/// How long an older group may go on once a newer one has started, before this viewer
/// abandons it (its last frames are normally in flight; a viewer still on it is behind).
const SKIP_GRACE: Duration = transport::fanout::SKIP_GRACE;

async fn read_group<R: RecvStream>(
    mut recv: R,
    tx: mpsc::Sender<Event>,
    read_delay: Option<Duration>,
) {
    let mut decoder = GroupDecoder::new();
    let mut buf = BytesMut::new();
    let seq = loop {
        match decoder.decode(&mut buf) {
            Ok(Some(GroupEvent::Header(h))) => break h.sequence,
            Ok(None) => {}
            Ok(Some(GroupEvent::Frame(_))) | Err(_) => return,
        }
        match recv.read_chunk(wire::frame::GROUP_HEADER_LEN).await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
            Ok(None) | Err(_) => return,
        }
    };
    let skip = CancellationToken::new();
    if tx.send(Event::Started(seq, skip.clone())).await.is_err() {
        return;
    }
    let read = async {
        loop {
            loop {
                match decoder.decode(&mut buf) {
                    Ok(Some(GroupEvent::Frame(f))) => {
                        if tx.send(Event::Frame(seq, f)).await.is_err() {
                            return None;
                        }
                        if let Some(d) = read_delay {
                            tokio::time::sleep(d).await;
                        }
                    }
                    Ok(Some(GroupEvent::Header(_))) | Err(_) => return Some(false),
                    Ok(None) => break,
                }
            }
            match recv.read_chunk(64 * 1024).await {
                Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
                Ok(None) => return Some(decoder.finish(&buf).is_ok()),
                Err(_) => return Some(false),
            }
        }
    };
    let complete = tokio::select! {
        r = read => r,
        () = skip.cancelled() => {
            recv.stop(Reset::GroupSkipped.into());
            Some(false)
        }
    };
    if let Some(complete) = complete {
        let _ = tx.send(Event::Done(seq, complete)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut out = ((8 + body.len()) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(body);
        out
    }

    fn large(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut out = 1u32.to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(&((16 + body.len()) as u64).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn fragment() -> Vec<u8> {
        [boxed(b"moof", &[1; 24]), boxed(b"mdat", &[2; 40])].concat()
    }

    fn init() -> Vec<u8> {
        [
            boxed(b"ftyp", b"isom\0\0\x02\0isomiso6"),
            boxed(b"moov", &boxed(b"mvhd", &[3; 20])),
        ]
        .concat()
    }

    #[test]
    fn an_inline_init_is_split_off_the_fragment() {
        let payload = [init(), fragment()].concat();
        let (inline, media) = split_inline_init(&payload).expect("an inline init");
        assert_eq!(inline, init());
        assert_eq!(media, fragment());
    }

    #[test]
    fn boxes_between_ftyp_and_moov_and_64_bit_sizes_are_part_of_it() {
        let init = [
            large(b"ftyp", b"cmfc\0\0\0\0"),
            boxed(b"free", &[]),
            large(b"moov", &boxed(b"trak", &[4; 12])),
        ]
        .concat();
        let payload = [init.clone(), fragment()].concat();
        assert_eq!(
            split_inline_init(&payload),
            Some((&init[..], &fragment()[..]))
        );
        // An init and nothing after it: an empty fragment, not a panic.
        assert_eq!(split_inline_init(&init), Some((&init[..], &[][..])));
    }

    #[test]
    fn the_clock_offset_is_the_shortest_round_trips() {
        let mut offset = ClockOffset::default();
        assert_eq!((offset.us(), offset.ms()), (0, None));
        // The viewer is 2 s behind the relay; one-way times 10 ms each way.
        offset.sample(1_000_000, 3_010_000, 1_020_000);
        assert_eq!(offset.us(), 2_000_000);
        // A slower exchange, its two legs unequal, says less: it is not taken.
        offset.sample(2_000_000, 4_300_000, 2_400_000);
        assert_eq!(offset.us(), 2_000_000);
        // A faster one is: a viewer 2 s ahead, read from a 2 ms round trip.
        offset.sample(5_000_000, 3_001_000, 5_002_000);
        assert_eq!(offset.us(), -2_000_000);
        assert_eq!(offset.ms(), Some(-2000.0));
        // An answer from before its question (a clock stepped back meanwhile) is dropped.
        offset.sample(9_000_000, 1, 8_000_000);
        assert_eq!(offset.us(), -2_000_000);
    }

    #[test]
    fn a_usual_fragment_has_no_inline_init() {
        assert_eq!(split_inline_init(&fragment()), None);
        assert_eq!(split_inline_init(&[]), None);
        // An ftyp without a moov before the fragment is no init segment.
        let payload = [boxed(b"ftyp", b"isom"), fragment()].concat();
        assert_eq!(split_inline_init(&payload), None);
    }

    #[test]
    fn garbage_is_no_inline_init_and_never_a_panic() {
        let whole = [init(), fragment()].concat();
        // Every truncation of a real one that cuts into the init.
        for cut in 0..init().len() {
            assert_eq!(split_inline_init(&whole[..cut]), None, "cut at {cut}");
        }
        let bad = [
            // Sizes smaller than the header, past the end, and 64-bit sizes beyond any memory.
            [&7u32.to_be_bytes()[..], b"ftyp"].concat(),
            [&1u32.to_be_bytes()[..], b"ftyp", &8u64.to_be_bytes()].concat(),
            [&1u32.to_be_bytes()[..], b"ftyp", &u64::MAX.to_be_bytes()].concat(),
            [&boxed(b"ftyp", b"")[..], &1000u32.to_be_bytes(), b"moov"].concat(),
            [
                &boxed(b"ftyp", b"")[..],
                &1u32.to_be_bytes(),
                b"moov",
                &u64::MAX.to_be_bytes(),
            ]
            .concat(),
            // Size 0 runs to the end: an ftyp that swallows the rest has no moov after it.
            [&0u32.to_be_bytes()[..], b"ftyp", &init()[..]].concat(),
        ];
        for payload in &bad {
            assert_eq!(split_inline_init(payload), None, "{payload:?}");
        }
        // Pseudo-random bytes behind an ftyp header, by a fixed linear congruential sequence.
        let mut x: u32 = 0x2545_f491;
        for len in 0..512 {
            let mut payload = boxed(b"ftyp", b"isom");
            for _ in 0..len {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                payload.push((x >> 24) as u8);
            }
            if let Some((inline, media)) = split_inline_init(&payload) {
                assert_eq!(inline.len() + media.len(), payload.len());
            }
        }
    }
}

//! The TCP carrier: a viewer's connection over WebSocket (RFC 6455), for browsers without
//! WebTransport (Safari) and networks that block UDP.
//!
//! [`Session`] implements [`Peer`] over one WebSocket, so the session stream and the fan-out
//! run unchanged on it: it carries QUIC-style streams in a small framing of its own,
//! `ghost-ws.1` (the WebSocket subprotocol), one frame per binary message:
//!
//! ```text
//! type (u8) | stream id (u32, big-endian) | body
//! 0 DATA   body: bytes of the stream, in order
//! 1 FIN    the sender finished the stream
//! 2 RESET  body: code (u32); the sender abandoned the stream
//! 3 STOP   body: code (u32); the receiver asks the sender to stop
//! 4 CLOSE  stream id 0, body: code (u32) then a UTF-8 reason; the connection is over
//! ```
//!
//! Stream ids are numbered as QUIC numbers them: bit 0 is who opened it (0 the client, 1
//! the server), bit 1 its direction (0 both ways, 1 one way), the rest counts up. A frame
//! for a stream id above the last one the peer opened opens it; one for a stream already
//! gone is dropped, as QUIC drops frames for a stream after a reset.
//!
//! **A slow viewer skips, and nobody else notices.** Bytes handed to the kernel cannot be
//! taken back, so the kernel may hold only [`NOTSENT_LOWAT`] unsent bytes; the rest waits
//! here, per connection, at most [`Limits::send_buffer`] of it, where newer groups (higher
//! priority) go first and a reset stream's waiting bytes are dropped. A write past the
//! budget waits, exactly as a QUIC write waits for flow control, so the fan-out's group rule
//! (skip a group still unsent [`SKIP_GRACE`](crate::fanout::SKIP_GRACE) after a newer one
//! began) applies as it is.
//!
//! A receiver never buffers more than [`Limits::recv_buffer`]: past it, it stops reading the
//! socket, and TCP's own flow control pushes back on the sender.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use quinn::{ApplicationClose, ConnectionError, VarInt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use wire::Code;

use crate::peer::Peer;

mod handshake;
mod io;
mod stream;

pub use handshake::{AcceptError, Origins, accept, connect, tune};
pub use stream::{WsRecv, WsSend};

/// The WebSocket subprotocol a client asks for and the server answers with.
pub const PROTOCOL: &str = "ghost-ws.1";

/// Unsent bytes the kernel may hold for one connection (`TCP_NOTSENT_LOWAT`): a few
/// packets, so what waits to be sent waits here, where it can still be skipped.
pub const NOTSENT_LOWAT: u32 = 16 << 10;

/// The largest DATA frame sent: bigger writes go as several.
pub const MAX_DATA: usize = 64 << 10;

/// The largest WebSocket message a relay accepts from a viewer, which only ever sends its
/// join and small control frames.
pub const MAX_INCOMING_SERVER: usize = 64 << 10;

/// How long a WebSocket handshake (TLS included) may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

const DATA: u8 = 0;
const FIN: u8 = 1;
const RESET: u8 = 2;
const STOP: u8 = 3;
const CLOSE: u8 = 4;
const HEADER: usize = 5;

/// Bounds of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes waiting to be sent, over all streams, before a write waits.
    pub send_buffer: usize,
    /// Bytes received and not yet read, over all streams, before reading the socket pauses.
    pub recv_buffer: usize,
    /// The largest WebSocket message (and frame) accepted.
    pub max_message: usize,
    /// Streams both ways the peer may have open at once.
    pub peer_bidi: usize,
    /// Streams one way the peer may have open at once.
    pub peer_uni: usize,
    /// A ping goes out after this long without sending anything.
    pub keep_alive: Duration,
    /// The connection is lost after this long without hearing from the peer, or with a
    /// write stuck this long.
    pub idle_timeout: Duration,
    /// The socket is read this much at a time (the WebSocket library's buffer, held for the
    /// connection's life).
    pub read_buffer: usize,
}

impl Limits {
    /// A relay's side of a viewer: the viewer opens its session stream and nothing else,
    /// and sends little; media waits at most 256 KiB per viewer.
    pub const SERVER: Limits = Limits {
        send_buffer: 256 << 10,
        recv_buffer: 64 << 10,
        max_message: MAX_INCOMING_SERVER,
        peer_bidi: 1,
        peer_uni: 0,
        keep_alive: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(5),
        // A viewer sends its join, pongs and the odd ping: 128 KiB (the library's default)
        // per viewer would be most of what a viewer costs the relay.
        read_buffer: 4 << 10,
    };
    /// A viewer's side: groups arrive on streams of their own.
    pub const CLIENT: Limits = Limits {
        send_buffer: 64 << 10,
        recv_buffer: 8 << 20,
        max_message: MAX_DATA + HEADER,
        peer_bidi: 0,
        peer_uni: 64,
        keep_alive: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(5),
        read_buffer: 128 << 10,
    };
}

/// The WebSocket protocol settings for `limits`: messages and frames bounded both ways.
pub fn config(limits: &Limits) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(limits.max_message))
        .max_frame_size(Some(limits.max_message))
        .read_buffer_size(limits.read_buffer)
        .write_buffer_size(0)
        .max_write_buffer_size(limits.send_buffer.max(MAX_DATA * 2))
}

/// Which end of the connection this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The one that opened the WebSocket.
    Client,
    /// The relay.
    Server,
}

impl Side {
    fn bit(self) -> u32 {
        match self {
            Side::Client => 0,
            Side::Server => 1,
        }
    }
}

const UNI: u32 = 2;

/// One viewer connection over WebSocket, shared by its streams.
#[derive(Clone)]
pub struct Session {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ws::Session")
            .field("side", &self.shared.side)
            .field("closed", &self.shared.reason.get())
            .finish_non_exhaustive()
    }
}

struct Shared {
    side: Side,
    limits: Limits,
    state: Mutex<State>,
    /// Something was queued for the writer.
    queued: Notify,
    /// Room was made in the send buffer, or a send stream changed.
    sent: Notify,
    /// Something arrived for a receive stream, or a stream was opened by the peer.
    arrived: Notify,
    /// Room was made in the receive buffer.
    read: Notify,
    /// Cancelled once the connection is over; `reason` says why.
    closed: CancellationToken,
    reason: OnceLock<ConnectionError>,
}

#[derive(Default)]
struct State {
    sends: HashMap<u32, Outgoing>,
    /// RESET and STOP frames, which go before any data.
    control: VecDeque<Bytes>,
    /// Bytes of DATA frames waiting in `sends`.
    waiting: usize,
    /// The CLOSE frame, once we close: the last thing sent.
    closing: Option<Bytes>,
    next_bidi: u32,
    next_uni: u32,
    recvs: HashMap<u32, Incoming>,
    /// Bytes received and not yet read.
    unread: usize,
    accept_bidi: VecDeque<u32>,
    accept_uni: VecDeque<u32>,
    /// The next stream ordinal the peer may open, per direction (0 both ways, 1 one way).
    peer_next: [u32; 2],
    /// Peer-opened streams not yet over, per direction.
    peer_open: [usize; 2],
}

#[derive(Default)]
struct Outgoing {
    priority: i32,
    frames: VecDeque<Bytes>,
    /// Set once finished or reset here: no more writes.
    done: bool,
    /// The peer asked us to stop, with this code.
    stopped: Option<u32>,
}

#[derive(Default)]
struct Incoming {
    chunks: VecDeque<Bytes>,
    fin: bool,
    reset: Option<u32>,
}

fn frame(kind: u8, id: u32, body: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(HEADER + body.len());
    out.put_u8(kind);
    out.put_u32(id);
    out.put_slice(body);
    out.freeze()
}

fn coded(kind: u8, id: u32, code: u32) -> Bytes {
    frame(kind, id, &code.to_be_bytes())
}

fn protocol_violation(reason: &str) -> ConnectionError {
    // quinn does not export the error type by name; build it from its code, as peer.rs does.
    let mut lost =
        ConnectionError::TransportError(quinn::TransportErrorCode::PROTOCOL_VIOLATION.into());
    if let ConnectionError::TransportError(e) = &mut lost {
        e.reason = reason.to_string();
    }
    lost
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lost(&self) -> ConnectionError {
        self.reason
            .get()
            .cloned()
            .unwrap_or(ConnectionError::LocallyClosed)
    }

    /// Ends the connection with `reason` (the first reason given stays) and wakes everyone.
    fn end(&self, reason: ConnectionError) {
        let _ = self.reason.set(reason);
        self.closed.cancel();
        self.queued.notify_waiters();
        self.queued.notify_one();
        self.sent.notify_waiters();
        self.arrived.notify_waiters();
        self.read.notify_waiters();
    }

    /// Whether a stream id was opened by the peer.
    fn peer_opened(&self, id: u32) -> bool {
        id & 1 != self.side.bit()
    }

    /// Handles one frame from the peer.
    fn receive(&self, mut msg: Bytes) -> Result<(), ConnectionError> {
        if msg.len() < HEADER {
            return Err(protocol_violation("frame shorter than its header"));
        }
        let kind = msg.get_u8();
        let id = msg.get_u32();
        let mut state = self.lock();
        match kind {
            DATA | FIN | RESET => {
                let code = if kind == RESET {
                    Some(code_of(&msg)?)
                } else {
                    None
                };
                if self.peer_opened(id) {
                    self.open_by_peer(&mut state, id)?;
                } else if id & UNI != 0 {
                    return Err(protocol_violation("data on a stream of our own one way"));
                }
                let Some(incoming) = state.recvs.get_mut(&id) else {
                    // A stream already stopped or over: what was on the way is dropped.
                    return Ok(());
                };
                if incoming.fin || incoming.reset.is_some() {
                    return Err(protocol_violation("frame on a stream after its end"));
                }
                match kind {
                    DATA => {
                        let len = msg.len();
                        incoming.chunks.push_back(msg);
                        state.unread += len;
                    }
                    FIN => incoming.fin = true,
                    _ => {
                        let dropped: usize = incoming.chunks.drain(..).map(|c| c.len()).sum();
                        incoming.reset = code;
                        state.unread -= dropped;
                    }
                }
                drop(state);
                self.arrived.notify_waiters();
            }
            STOP => {
                let code = code_of(&msg)?;
                let Some(outgoing) = state.sends.get_mut(&id) else {
                    return Ok(());
                };
                if outgoing.stopped.is_none() {
                    outgoing.stopped = Some(code);
                    let dropped: usize = outgoing.frames.drain(..).map(|f| f.len()).sum();
                    let was_done = std::mem::replace(&mut outgoing.done, true);
                    state.waiting -= dropped;
                    if !was_done {
                        // As QUIC asks of a stopped sender: reset with the peer's code.
                        state.control.push_back(coded(RESET, id, code));
                    }
                }
                drop(state);
                self.sent.notify_waiters();
                self.queued.notify_one();
            }
            CLOSE => {
                let code = code_of(&msg)?;
                let reason = msg.get(4..).map(Bytes::copy_from_slice).unwrap_or_default();
                drop(state);
                return Err(ConnectionError::ApplicationClosed(ApplicationClose {
                    error_code: VarInt::from_u32(code),
                    reason,
                }));
            }
            _ => return Err(protocol_violation("unknown frame type")),
        }
        Ok(())
    }

    /// Makes sure the peer's stream `id` exists, opening it (and any skipped ids before it,
    /// as QUIC does) when it is new.
    fn open_by_peer(&self, state: &mut State, id: u32) -> Result<(), ConnectionError> {
        let dir = usize::from(id & UNI != 0);
        let ordinal = id >> 2;
        if ordinal < state.peer_next[dir] {
            return Ok(());
        }
        let allowed = if dir == 0 {
            self.limits.peer_bidi
        } else {
            self.limits.peer_uni
        };
        if state.peer_open[dir] >= allowed {
            return Err(protocol_violation("too many streams opened"));
        }
        state.peer_next[dir] = ordinal + 1;
        state.peer_open[dir] += 1;
        state.recvs.insert(id, Incoming::default());
        if dir == 0 {
            state.sends.insert(id, Outgoing::default());
            state.accept_bidi.push_back(id);
        } else {
            state.accept_uni.push_back(id);
        }
        Ok(())
    }

    /// A peer-opened stream is over in both directions: its slot frees.
    fn release(&self, state: &mut State, id: u32) {
        if !self.peer_opened(id) {
            return;
        }
        let dir = usize::from(id & UNI != 0);
        let recv_open = state.recvs.contains_key(&id);
        let send_open = state.sends.contains_key(&id);
        if !recv_open && !send_open {
            state.peer_open[dir] = state.peer_open[dir].saturating_sub(1);
        }
    }

    /// The next frame to send: control first, then the highest-priority stream's oldest
    /// frame (streams both ways first, the older stream first on a tie). `None` when
    /// nothing waits.
    fn next_frame(&self, state: &mut State) -> Option<Bytes> {
        if let Some(f) = state.control.pop_front() {
            return Some(f);
        }
        let id = state
            .sends
            .iter()
            .filter(|(_, s)| !s.frames.is_empty())
            .max_by_key(|(id, s)| (**id & UNI == 0, s.priority, std::cmp::Reverse(**id)))
            .map(|(id, _)| *id)?;
        let outgoing = state.sends.get_mut(&id)?;
        let f = outgoing.frames.pop_front()?;
        let finished = outgoing.done && outgoing.frames.is_empty();
        if f.first() == Some(&DATA) {
            state.waiting -= f.len();
        }
        if finished {
            state.sends.remove(&id);
            self.release(state, id);
        }
        Some(f)
    }
}

fn code_of(body: &Bytes) -> Result<u32, ConnectionError> {
    body.get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| protocol_violation("frame without its code"))
}

impl Session {
    /// Runs the framing over `ws`, an open WebSocket, as `side`; its reading and writing
    /// tasks end with the connection.
    pub fn new<S>(ws: WebSocketStream<S>, side: Side, limits: Limits) -> Session
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let shared = Arc::new(Shared {
            side,
            limits,
            state: Mutex::new(State::default()),
            queued: Notify::new(),
            sent: Notify::new(),
            arrived: Notify::new(),
            read: Notify::new(),
            closed: CancellationToken::new(),
            reason: OnceLock::new(),
        });
        let (sink, stream) = ws.split();
        tokio::spawn(io::write_loop(shared.clone(), sink));
        tokio::spawn(io::read_loop(shared.clone(), stream));
        Session { shared }
    }

    /// Runs the framing over `io`, a byte stream open end to end on which both ends know,
    /// from what came before on it, that WebSocket frames follow with no handshake: the
    /// session stream of a native viewer that asked for one stream ([`crate::one_stream`]).
    pub async fn over<S>(io: S, side: Side, limits: Limits) -> Session
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let role = match side {
            Side::Client => tokio_tungstenite::tungstenite::protocol::Role::Client,
            Side::Server => tokio_tungstenite::tungstenite::protocol::Role::Server,
        };
        let ws = WebSocketStream::from_raw_socket(io, role, Some(config(&limits))).await;
        Session::new(ws, side, limits)
    }

    fn open(&self, uni: bool) -> Result<u32, ConnectionError> {
        if let Some(e) = self.shared.reason.get() {
            return Err(e.clone());
        }
        let mut state = self.shared.lock();
        let ordinal = if uni {
            &mut state.next_uni
        } else {
            &mut state.next_bidi
        };
        let id = (*ordinal << 2) | if uni { UNI } else { 0 } | self.shared.side.bit();
        *ordinal = ordinal
            .checked_add(1)
            .filter(|n| *n < 1 << 30)
            .ok_or_else(|| protocol_violation("stream ids used up"))?;
        state.sends.insert(id, Outgoing::default());
        if !uni {
            state.recvs.insert(id, Incoming::default());
        }
        Ok(id)
    }

    async fn accept(&self, uni: bool) -> Result<u32, ConnectionError> {
        loop {
            let notified = self.shared.arrived.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.shared.lock();
                let queue = if uni {
                    &mut state.accept_uni
                } else {
                    &mut state.accept_bidi
                };
                if let Some(id) = queue.pop_front() {
                    return Ok(id);
                }
            }
            if let Some(e) = self.shared.reason.get() {
                return Err(e.clone());
            }
            notified.await;
        }
    }

    fn send_half(&self, id: u32) -> WsSend {
        WsSend::new(self.shared.clone(), id)
    }

    fn recv_half(&self, id: u32) -> WsRecv {
        WsRecv::new(self.shared.clone(), id)
    }
}

impl Peer for Session {
    type Send = WsSend;
    type Recv = WsRecv;

    async fn open_uni(&self) -> Result<WsSend, ConnectionError> {
        Ok(self.send_half(self.open(true)?))
    }

    async fn accept_uni(&self) -> Result<WsRecv, ConnectionError> {
        Ok(self.recv_half(self.accept(true).await?))
    }

    async fn open_bi(&self) -> Result<(WsSend, WsRecv), ConnectionError> {
        let id = self.open(false)?;
        Ok((self.send_half(id), self.recv_half(id)))
    }

    async fn accept_bi(&self) -> Result<(WsSend, WsRecv), ConnectionError> {
        let id = self.accept(false).await?;
        Ok((self.send_half(id), self.recv_half(id)))
    }

    fn closed(&self) -> impl Future<Output = ConnectionError> + Send {
        let shared = self.shared.clone();
        async move {
            shared.closed.cancelled().await;
            shared.lost()
        }
    }

    fn close_reason(&self) -> Option<ConnectionError> {
        self.shared.reason.get().cloned()
    }

    fn close(&self, code: Code, reason: &str) {
        let mut body = Vec::with_capacity(4 + reason.len());
        body.extend_from_slice(&u32::from(code).to_be_bytes());
        // A reason is a short sentence; keep it within one small message whatever it is.
        let mut cut = reason.len().min(1024);
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        body.extend_from_slice(&reason.as_bytes()[..cut]);
        {
            let mut state = self.shared.lock();
            if self.shared.reason.get().is_some() {
                return;
            }
            state.closing = Some(frame(CLOSE, 0, &body));
        }
        self.shared.end(ConnectionError::LocallyClosed);
    }
}

//! [`Delivery::OneStream`](wire::Delivery::OneStream): every message and group of a native
//! viewer's stream on its one session stream, in order, as the WebSocket carrier sends them
//! on a TCP connection.
//!
//! A benchmark's control case (`ghost bench fanout --transport quic-one-stream`). With the
//! same media, congestion controller and loss recovery as a stream per group, a lost packet
//! holds up everything behind it, as on TCP: against a stream per group, the difference is
//! what streams per group buy; against WebSocket, what QUIC's loss recovery buys.
//!
//! After its join the session stream carries the WebSocket carrier's framing ([`crate::ws`],
//! `ghost-ws.1`), with no HTTP handshake: both ends switch once the join is sent. The relay
//! opens the inner session stream (its `Init` is the first thing on it) and the fan-out runs
//! on the [`ws::Session`] unchanged, exactly as for a WebSocket viewer, so the slow-viewer
//! rule holds as there: at most [`Limits::SERVER`]'s send buffer waits in the framing, newer
//! groups first, and a skipped group's waiting bytes are dropped. What the framing has
//! handed to QUIC cannot be taken back; the viewer's stream window bounds it
//! ([`Windows::RECEIVER`](crate::quic::Windows::RECEIVER), 256 KiB), where TCP's is bounded
//! by what is in flight plus [`ws::NOTSENT_LOWAT`]. A viewer that falls behind is thus
//! up to that window later than a WebSocket one before it skips, and never slows anyone else.

use std::future::Future;

use quinn::Connection;
use tokio::io::AsyncReadExt;

use crate::peer::Peer;
use crate::quic::Session;
use crate::ws::{self, Limits, Side};

/// A viewer's side of the framing: a WebSocket viewer's, and the relay opens the inner
/// session stream.
pub const VIEWER: Limits = Limits {
    peer_bidi: 1,
    ..Limits::CLIENT
};

/// A carrier a relay can serve [`Delivery::OneStream`](wire::Delivery::OneStream) on.
pub trait OneStream: Peer {
    /// The relay's side of the framing over the joined session stream; `None` where the
    /// session stream is not a QUIC stream of the viewer's own connection (only native QUIC
    /// viewers ask for one stream: a WebSocket is one already).
    fn relay_side(session: Session<Self>) -> impl Future<Output = Option<ws::Session>> + Send;
}

impl OneStream for Connection {
    async fn relay_side(session: Session<Connection>) -> Option<ws::Session> {
        Some(over(session, Side::Server, Limits::SERVER).await)
    }
}

impl OneStream for web_transport_quinn::Session {
    async fn relay_side(_: Session<Self>) -> Option<ws::Session> {
        None
    }
}

impl OneStream for ws::Session {
    async fn relay_side(_: Session<Self>) -> Option<ws::Session> {
        None
    }
}

/// The viewer's side of the framing over its session stream, once its join is sent.
pub async fn viewer_side(session: Session<Connection>) -> ws::Session {
    over(session, Side::Client, VIEWER).await
}

async fn over(session: Session<Connection>, side: Side, limits: Limits) -> ws::Session {
    // Bytes the session read past the join are the framing's first.
    let (send, recv, read) = session.into_parts();
    let io = tokio::io::join(std::io::Cursor::new(read).chain(recv), send);
    ws::Session::over(io, side, limits).await
}

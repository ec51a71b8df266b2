//! What the data path needs of a connection, so one session-stream and fan-out code serves
//! both native QUIC viewers (`ghost-view/1`) and browsers over WebTransport (`h3`).
//!
//! [`Peer`] is implemented for [`quinn::Connection`] and for [`web_transport_quinn::Session`];
//! callers are generic over it, so each carrier gets its own monomorphised copy and the native
//! path pays nothing for the other (no boxing, no dynamic dispatch per frame).
//!
//! One vocabulary of errors: quinn's. WebTransport carries our `u32` codes inside the HTTP/3
//! error space (and a session close as a capsule); the WebTransport impls unwrap them, so a
//! close by [`Code::Capacity`] or a reset by [`Reset::GroupSkipped`](wire::Reset) reads the
//! same over either carrier, and [`Closed`](crate::quic::Closed) needs no second mapping.

use std::future::Future;

use bytes::Bytes;
use quinn::{ApplicationClose, ConnectionError, ReadError, VarInt, WriteError};
use wire::Code;

/// A connection as the data path uses it: streams, closing, and how it ended.
pub trait Peer: Clone + Send + Sync + 'static {
    /// The sending half of a stream.
    type Send: SendStream;
    /// The receiving half of a stream.
    type Recv: RecvStream;

    /// Opens a unidirectional stream to the peer.
    fn open_uni(&self) -> impl Future<Output = Result<Self::Send, ConnectionError>> + Send;
    /// Accepts the next unidirectional stream the peer opened.
    fn accept_uni(&self) -> impl Future<Output = Result<Self::Recv, ConnectionError>> + Send;
    /// Opens a bidirectional stream (the session stream, client side).
    fn open_bi(
        &self,
    ) -> impl Future<Output = Result<(Self::Send, Self::Recv), ConnectionError>> + Send;
    /// Accepts a bidirectional stream (the session stream, server side).
    fn accept_bi(
        &self,
    ) -> impl Future<Output = Result<(Self::Send, Self::Recv), ConnectionError>> + Send;
    /// Resolves when the connection is gone, with why.
    fn closed(&self) -> impl Future<Output = ConnectionError> + Send;
    /// Why the connection is gone, `None` while it is open.
    fn close_reason(&self) -> Option<ConnectionError>;
    /// Closes with an application code the peer reads as is.
    fn close(&self, code: Code, reason: &str);
}

/// The sending half of a stream.
pub trait SendStream: Send + 'static {
    /// Writes one shared buffer, without copying it.
    fn write_chunk(&mut self, chunk: Bytes) -> impl Future<Output = Result<(), WriteError>> + Send;
    /// Sets the stream's priority: higher goes first.
    fn set_priority(&self, priority: i32);
    /// Finishes the stream; a no-op when it is already finished or reset.
    fn finish(&mut self);
    /// Abandons the stream with `code`; a no-op when it is already finished or reset.
    fn reset(&mut self, code: u32);
}

/// The receiving half of a stream.
pub trait RecvStream: Send + 'static {
    /// Reads the next chunk in order, `None` at the end of the stream.
    fn read_chunk(
        &mut self,
        max: usize,
    ) -> impl Future<Output = Result<Option<Bytes>, ReadError>> + Send;
    /// Asks the peer to stop sending, with `code`.
    fn stop(&mut self, code: u32);
}

impl Peer for quinn::Connection {
    type Send = quinn::SendStream;
    type Recv = quinn::RecvStream;

    fn open_uni(&self) -> impl Future<Output = Result<Self::Send, ConnectionError>> + Send {
        quinn::Connection::open_uni(self)
    }

    fn accept_uni(&self) -> impl Future<Output = Result<Self::Recv, ConnectionError>> + Send {
        quinn::Connection::accept_uni(self)
    }

    fn open_bi(
        &self,
    ) -> impl Future<Output = Result<(Self::Send, Self::Recv), ConnectionError>> + Send {
        quinn::Connection::open_bi(self)
    }

    fn accept_bi(
        &self,
    ) -> impl Future<Output = Result<(Self::Send, Self::Recv), ConnectionError>> + Send {
        quinn::Connection::accept_bi(self)
    }

    fn closed(&self) -> impl Future<Output = ConnectionError> + Send {
        quinn::Connection::closed(self)
    }

    fn close_reason(&self) -> Option<ConnectionError> {
        quinn::Connection::close_reason(self)
    }

    fn close(&self, code: Code, reason: &str) {
        quinn::Connection::close(self, VarInt::from_u32(code.into()), reason.as_bytes());
    }
}

impl SendStream for quinn::SendStream {
    fn write_chunk(&mut self, chunk: Bytes) -> impl Future<Output = Result<(), WriteError>> + Send {
        quinn::SendStream::write_chunk(self, chunk)
    }

    fn set_priority(&self, priority: i32) {
        // Only fails on a stream already closed, which is then past caring.
        let _ = quinn::SendStream::set_priority(self, priority);
    }

    fn finish(&mut self) {
        let _ = quinn::SendStream::finish(self);
    }

    fn reset(&mut self, code: u32) {
        let _ = quinn::SendStream::reset(self, VarInt::from_u32(code));
    }
}

impl RecvStream for quinn::RecvStream {
    async fn read_chunk(&mut self, max: usize) -> Result<Option<Bytes>, ReadError> {
        Ok(quinn::RecvStream::read_chunk(self, max, true)
            .await?
            .map(|c| c.bytes))
    }

    fn stop(&mut self, code: u32) {
        let _ = quinn::RecvStream::stop(self, VarInt::from_u32(code));
    }
}

/// Completes the WebTransport handshake on a connection that negotiated ALPN `h3` (server
/// side): HTTP/3 settings, then the CONNECT request, answered 200 whatever its path.
pub async fn accept_webtransport(
    conn: quinn::Connection,
) -> Result<web_transport_quinn::Session, web_transport_quinn::ServerError> {
    // HTTP/3 opens the CONNECT request's bidirectional stream before the session stream;
    // our transport settings allow one at a time, all a native peer may open.
    conn.set_max_concurrent_bi_streams(VarInt::from_u32(2));
    web_transport_quinn::Request::accept(conn).await?.ok().await
}

/// A WebTransport session error in quinn's terms. A session closed with a code (by a
/// capsule, or by a QUIC close in the HTTP/3 error space) becomes an application close with
/// that code unwrapped; a failure on a stream's WebTransport header, which only a broken
/// peer causes, becomes a protocol violation.
fn lost(e: web_transport_quinn::SessionError) -> ConnectionError {
    use web_transport_quinn::{SessionError, WebTransportError};
    match e {
        SessionError::ConnectionError(e) => e,
        SessionError::WebTransportError(WebTransportError::Closed(code, reason)) => {
            ConnectionError::ApplicationClosed(ApplicationClose {
                error_code: VarInt::from_u32(code),
                reason: reason.into(),
            })
        }
        SessionError::SendDatagramError(quinn::SendDatagramError::ConnectionLost(e)) => e,
        other => {
            // quinn does not export the error type by name; build it from its code.
            let mut lost = ConnectionError::TransportError(
                quinn::TransportErrorCode::PROTOCOL_VIOLATION.into(),
            );
            if let ConnectionError::TransportError(e) = &mut lost {
                e.reason = other.to_string();
            }
            lost
        }
    }
}

impl Peer for web_transport_quinn::Session {
    type Send = web_transport_quinn::SendStream;
    type Recv = web_transport_quinn::RecvStream;

    async fn open_uni(&self) -> Result<Self::Send, ConnectionError> {
        web_transport_quinn::Session::open_uni(self)
            .await
            .map_err(lost)
    }

    async fn accept_uni(&self) -> Result<Self::Recv, ConnectionError> {
        web_transport_quinn::Session::accept_uni(self)
            .await
            .map_err(lost)
    }

    async fn open_bi(&self) -> Result<(Self::Send, Self::Recv), ConnectionError> {
        web_transport_quinn::Session::open_bi(self)
            .await
            .map_err(lost)
    }

    async fn accept_bi(&self) -> Result<(Self::Send, Self::Recv), ConnectionError> {
        web_transport_quinn::Session::accept_bi(self)
            .await
            .map_err(lost)
    }

    async fn closed(&self) -> ConnectionError {
        lost(web_transport_quinn::Session::closed(self).await)
    }

    fn close_reason(&self) -> Option<ConnectionError> {
        web_transport_quinn::Session::close_reason(self).map(lost)
    }

    fn close(&self, code: Code, reason: &str) {
        // Sends a CloseWebTransportSession capsule with the code as is (what a browser shows
        // as `closeCode`), then closes QUIC with the code mapped into the HTTP/3 space.
        web_transport_quinn::Session::close(self, code.into(), reason.as_bytes());
    }
}

impl SendStream for web_transport_quinn::SendStream {
    async fn write_chunk(&mut self, chunk: Bytes) -> Result<(), WriteError> {
        use web_transport_quinn::WriteError as E;
        web_transport_quinn::SendStream::write_chunk(self, chunk)
            .await
            .map_err(|e| match e {
                E::Stopped(code) => WriteError::Stopped(VarInt::from_u32(code)),
                E::InvalidStopped(code) => WriteError::Stopped(code),
                E::SessionError(e) => WriteError::ConnectionLost(lost(e)),
                E::ClosedStream => WriteError::ClosedStream,
            })
    }

    fn set_priority(&self, priority: i32) {
        let _ = web_transport_quinn::SendStream::set_priority(self, priority);
    }

    fn finish(&mut self) {
        let _ = web_transport_quinn::SendStream::finish(self);
    }

    fn reset(&mut self, code: u32) {
        let _ = web_transport_quinn::SendStream::reset(self, code);
    }
}

impl RecvStream for web_transport_quinn::RecvStream {
    async fn read_chunk(&mut self, max: usize) -> Result<Option<Bytes>, ReadError> {
        use web_transport_quinn::ReadError as E;
        match web_transport_quinn::RecvStream::read_chunk(self, max, true).await {
            Ok(chunk) => Ok(chunk.map(|c| c.bytes)),
            Err(E::Reset(code)) => Err(ReadError::Reset(VarInt::from_u32(code))),
            Err(E::InvalidReset(code)) => Err(ReadError::Reset(code)),
            Err(E::SessionError(e)) => Err(ReadError::ConnectionLost(lost(e))),
            Err(E::ClosedStream) => Err(ReadError::ClosedStream),
            Err(E::IllegalOrderedRead) => Err(ReadError::IllegalOrderedRead),
        }
    }

    fn stop(&mut self, code: u32) {
        let _ = web_transport_quinn::RecvStream::stop(self, code);
    }
}

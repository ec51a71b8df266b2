//! The connection's two tasks: one writes what the streams queue, the other reads the peer's
//! frames.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use quinn::ConnectionError;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, Message};
use wire::Code;

use super::{CLOSE, Shared, frame, protocol_violation};

type Sink<S> = futures_util::stream::SplitSink<WebSocketStream<S>, Message>;
type Source<S> = futures_util::stream::SplitStream<WebSocketStream<S>>;

/// Sends what the streams queue, in priority order, a ping every keep-alive period, and the
/// CLOSE frame last. A write stuck past the idle timeout (a peer that stopped reading) loses
/// the connection.
pub(super) async fn write_loop<S>(shared: Arc<Shared>, mut sink: Sink<S>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let idle = shared.limits.idle_timeout;
    // A ping every keep-alive period, busy or not: the peer's answers are what tell our
    // reader the connection lives, and a browser sends nothing of its own while it watches.
    let mut ping_at = tokio::time::Instant::now() + shared.limits.keep_alive;
    loop {
        let notified = shared.queued.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let message = if shared.closed.is_cancelled() {
            let closing = shared.lock().closing.take();
            if let Some(close) = closing {
                let _ = tokio::time::timeout(idle, async {
                    sink.send(Message::Binary(close)).await?;
                    sink.close().await
                })
                .await;
            } else {
                let _ = tokio::time::timeout(Duration::from_millis(100), sink.close()).await;
            }
            return;
        } else if tokio::time::Instant::now() >= ping_at {
            ping_at = tokio::time::Instant::now() + shared.limits.keep_alive;
            Message::Ping(Bytes::new())
        } else {
            let next = shared.next_frame(&mut shared.lock());
            match next {
                Some(f) => Message::Binary(f),
                None => {
                    tokio::select! {
                        () = &mut notified => {}
                        () = tokio::time::sleep_until(ping_at) => {}
                    }
                    continue;
                }
            }
        };
        match tokio::time::timeout(idle, sink.send(message)).await {
            Ok(Ok(())) => shared.sent.notify_waiters(),
            Ok(Err(error)) => {
                shared.end(lost(&error));
                return;
            }
            Err(_) => {
                shared.end(ConnectionError::TimedOut);
                return;
            }
        }
    }
}

/// Reads the peer's frames until the connection ends, pausing while what was received and
/// not read fills the receive buffer.
pub(super) async fn read_loop<S>(shared: Arc<Shared>, mut source: Source<S>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let idle = shared.limits.idle_timeout;
    let error = loop {
        // Wait for room to read into.
        loop {
            let notified = shared.read.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if shared.lock().unread < shared.limits.recv_buffer || shared.closed.is_cancelled() {
                break;
            }
            notified.await;
        }
        if shared.closed.is_cancelled() {
            return linger(source).await;
        }
        let next = tokio::select! {
            next = tokio::time::timeout(idle, source.next()) => next,
            () = shared.closed.cancelled() => return linger(source).await,
        };
        match next {
            Err(_) => break ConnectionError::TimedOut,
            Ok(None) => break ConnectionError::Reset,
            Ok(Some(Err(error))) => break lost(&error),
            Ok(Some(Ok(Message::Binary(msg)))) => {
                if let Err(error) = shared.receive(msg) {
                    if matches!(error, ConnectionError::TransportError(_)) {
                        // Tell the peer why before going.
                        let reason = error.to_string();
                        let mut body = u32::from(Code::Protocol).to_be_bytes().to_vec();
                        body.extend_from_slice(reason.as_bytes());
                        shared.lock().closing = Some(frame(CLOSE, 0, &body));
                    }
                    break error;
                }
            }
            Ok(Some(Ok(Message::Close(_)))) => break ConnectionError::Reset,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)))) => {}
            Ok(Some(Ok(Message::Text(_)))) => {
                let mut body = u32::from(Code::Protocol).to_be_bytes().to_vec();
                body.extend_from_slice(b"text messages are not part of ghost-ws.1");
                shared.lock().closing = Some(frame(CLOSE, 0, &body));
                break protocol_violation("a text message");
            }
        }
    };
    shared.end(error);
    linger(source).await;
}

/// How long a connection closed on this side still reads what its peer sends.
const LINGER: Duration = Duration::from_secs(2);

/// After this side has closed: reads and drops what the peer still sends until it closes
/// too ([`LINGER`] at most), while the writer sends the CLOSE frame. A socket dropped with
/// unread bytes makes the kernel answer with a reset, and a reset can destroy the CLOSE
/// frame (the reason a viewer was refused) before the peer reads it.
async fn linger<S>(mut source: Source<S>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _ = tokio::time::timeout(LINGER, async {
        while let Some(Ok(_)) = source.next().await {}
    })
    .await;
}

fn lost(error: &tungstenite::Error) -> ConnectionError {
    match error {
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            ConnectionError::Reset
        }
        tungstenite::Error::Io(_) => ConnectionError::Reset,
        other => protocol_violation(&other.to_string()),
    }
}

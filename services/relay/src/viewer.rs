//! A viewer's connection, whatever its carrier: the join, the ticket checked and spent, a
//! seat, then the stream through the fan-out.

use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;
use quinn::Connection;
use server::clock;
use transport::fanout::{self, ServeError};
use transport::one_stream::OneStream;
use transport::peer;
use transport::quic::{self, Session};
use transport::track::Track;
use transport::ws;
use wire::{Code, Delivery, Message};

use crate::State;
use crate::metrics::Metrics;
use crate::seats::{Refusal, refusal};
use crate::upstream::track;

/// How a viewer reached the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Carrier {
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

pub(crate) async fn viewer(state: Arc<State>, conn: Connection) {
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

/// The session stream a viewer is served on, as its join asked.
enum Served<P: OneStream> {
    /// A group per stream on the viewer's connection.
    StreamPerGroup(Session<P>),
    /// Everything on the session stream, in the WebSocket carrier's framing.
    OneStream(ws::Session),
}

pub(crate) async fn viewer_on<P: OneStream>(state: &Arc<State>, conn: &P, carrier: Carrier) {
    if let Err(refusal) = serve_viewer(state, conn, carrier).await {
        state.metrics.rejections.inc();
        tracing::info!(code = refusal.code.name(), reason = %refusal.reason, "viewer refused");
        quic::close(conn, refusal.code, &refusal.reason);
    }
}

async fn serve_viewer<P: OneStream>(
    state: &Arc<State>,
    conn: &P,
    carrier: Carrier,
) -> Result<(), Refusal> {
    let join = async {
        let mut session = Session::accept(conn).await?;
        let msg = session.recv().await?;
        Ok::<_, quic::SessionError>((session, msg))
    };
    let (session, stream_id, ticket, delivery) =
        match tokio::time::timeout(quic::SESSION_TIMEOUT, join).await {
            Ok(Ok((
                session,
                Some(Message::Join {
                    stream_id,
                    ticket,
                    delivery,
                }),
            ))) => (session, stream_id, ticket, delivery),
            Ok(Ok(_)) => return Err(refusal(Code::Protocol, "expected a join")),
            Ok(Err(error)) => return Err(refusal(error.code(), &error.to_string())),
            Err(_) => return Err(refusal(Code::Timeout, "no join in time")),
        };
    // The viewer switched its session stream to the framing as soon as it sent the join.
    let joined = match delivery {
        Delivery::StreamPerGroup => Served::StreamPerGroup(session),
        Delivery::OneStream => match P::relay_side(session).await {
            Some(carried) => Served::OneStream(carried),
            None => {
                return Err(refusal(
                    Code::Protocol,
                    "one-stream delivery is for native QUIC viewers",
                ));
            }
        },
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
    let _seat = state.seats.admit()?;
    state.metrics.seated.inc();
    state.metrics.viewers.inc();
    if let Some(gauge) = carrier.gauge(&state.metrics) {
        gauge.inc();
    }
    let served = async {
        let track = track(state, &stream_id).await?;
        state.metrics.joins.inc();
        tracing::info!(stream = %stream_id, delivery = delivery.name(), "viewer joined");
        let outcome = match joined {
            Served::StreamPerGroup(mut session) => {
                fanout::serve(conn, &mut session, &track, &state.metrics.fanout).await
            }
            Served::OneStream(carried) => {
                serve_one_stream(conn, &carried, &track, &state.metrics.fanout).await
            }
        };
        match outcome {
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

/// Serves a viewer on the framing over its session stream, as a WebSocket viewer is served,
/// then closes the QUIC connection under it the same way: with [`Code::Ended`] once the
/// viewer has had [`fanout::END_LINGER`] to close first.
async fn serve_one_stream<P: OneStream>(
    conn: &P,
    carried: &ws::Session,
    track: &Track,
    metrics: &fanout::Metrics,
) -> Result<(), ServeError> {
    let served = async {
        let mut session = Session::open(carried).await?;
        fanout::serve(carried, &mut session, track, metrics).await
    }
    .await;
    match &served {
        Ok(()) => {
            // The framing's close goes out on the stream: give it the same time to arrive.
            let _ = tokio::time::timeout(fanout::END_LINGER, conn.closed()).await;
            quic::close(conn, Code::Ended, "stream ended");
        }
        Err(_) => quic::close(conn, Code::Normal, "viewer left"),
    }
    served
}

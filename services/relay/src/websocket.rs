//! The WebSocket carrier's listener: TCP on the QUIC port's number, `wss://` told from
//! `ws://` by its first byte, per-source caps shared with QUIC, then the viewer served as any.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use transport::admit::Admission;
use transport::quic::{self, Windows};

use crate::viewer::{Carrier, viewer_on};
use crate::{Error, State, address};

/// Binds QUIC (UDP) and the WebSocket carrier (TCP) on one port number, so a firewall or a
/// port mapping names each relay once. With port 0, the number the UDP socket got is tried
/// for TCP, and another pair is drawn while that one is taken.
pub(crate) async fn bind_carriers(
    listen: SocketAddr,
    certs: &Arc<identity::Reloading>,
    congestion: quic::Congestion,
) -> Result<(quinn::Endpoint, tokio::net::TcpListener), Error> {
    let mut attempts = 0;
    loop {
        let endpoint = quic::server_reloading(
            listen,
            certs.clone(),
            &[quic::ALPN_VIEW, quic::ALPN_H3],
            Windows {
                congestion,
                ..Windows::SENDER
            },
        )?;
        let bound = endpoint.local_addr().map_err(address("QUIC"))?;
        match tokio::net::TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((endpoint, tcp)),
            Err(e) if listen.port() == 0 && attempts < 32 => {
                tracing::debug!(%bound, error = %e, "TCP port of the QUIC port's number taken; drawing another");
                attempts += 1;
            }
            Err(source) => {
                return Err(Error::BindWebSocket {
                    addr: bound,
                    source,
                });
            }
        }
    }
}

/// The host part of `HOST:PORT` (brackets of an IPv6 address kept off).
pub(crate) fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// What the WebSocket listener needs to seat viewers.
pub(crate) struct Carriage {
    pub(crate) state: Arc<State>,
    pub(crate) admission: Arc<Admission>,
    pub(crate) tls: tokio_rustls::TlsAcceptor,
    pub(crate) origins: Arc<transport::ws::Origins>,
}

/// The first byte of a TLS handshake record: a `wss://` client.
const TLS_HANDSHAKE: u8 = 0x16;

/// Accepts WebSocket viewers until `shutdown`. Each address may hold as many connections as
/// the QUIC per-source cap allows, counted together with its QUIC ones; the listener holds
/// at most twice the relay's capacity plus 256 at once; a connection must complete its
/// handshake (TLS included) within [`transport::ws::HANDSHAKE_TIMEOUT`] and present its
/// ticket within [`quic::SESSION_TIMEOUT`], as over QUIC.
pub(crate) async fn websocket_loop(
    listener: tokio::net::TcpListener,
    carriage: Carriage,
    shutdown: CancellationToken,
) {
    let carriage = Arc::new(carriage);
    let most = (carriage.state.seats.capacity() as usize)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_of_an_advertised_address() {
        assert_eq!(host_of("relay.example.com:4500"), "relay.example.com");
        assert_eq!(host_of("203.0.113.7:4501"), "203.0.113.7");
        assert_eq!(host_of("[2001:db8::1]:4500"), "2001:db8::1");
        assert_eq!(host_of("localhost"), "localhost");
    }
}

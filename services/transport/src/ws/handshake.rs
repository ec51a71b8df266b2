//! Opening a viewer's WebSocket: the relay's answer (subprotocol, `Origin` policy, time
//! limit) and a client's request.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};

use super::{HANDSHAKE_TIMEOUT, Limits, NOTSENT_LOWAT, PROTOCOL, Session, Side, config};

/// Who may open a viewer's WebSocket from a web page: its `Origin` header must name the
/// relay's own host (the page and the relays share the stack's public name), a loopback
/// name when the relay is reached at one, or one of `extra`. Clients outside a browser send
/// no `Origin` and are let through: the join ticket is what admits a viewer.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    /// The host viewers reach the relay at (its advertised host).
    pub host: String,
    /// Further allowed origins (`https://example.com`).
    pub extra: Vec<String>,
}

fn is_loopback_name(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Origins {
    /// Whether a page of `origin` may connect.
    pub fn allows(&self, origin: &str) -> bool {
        if self.extra.iter().any(|o| o.eq_ignore_ascii_case(origin)) {
            return true;
        }
        let Ok(url) = url::Url::parse(origin) else {
            return false;
        };
        let Some(host) = url.host_str() else {
            return false;
        };
        let own = self.host.trim_start_matches('[').trim_end_matches(']');
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .eq_ignore_ascii_case(own)
            || (is_loopback_name(host) && is_loopback_name(own))
    }
}

/// Why a WebSocket handshake was refused.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// The handshake took longer than [`HANDSHAKE_TIMEOUT`].
    #[error("no WebSocket handshake in time")]
    Timeout,
    /// Not a WebSocket request we serve, or the connection failed during it.
    #[error("WebSocket handshake failed: {0}")]
    Handshake(#[from] tungstenite::Error),
}

fn refuse(status: u16, why: &str) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(why.to_string()));
    *response.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_REQUEST);
    response
}

/// Answers the WebSocket handshake on `io` as a relay (subprotocol [`PROTOCOL`], `origins`
/// checked) within [`HANDSHAKE_TIMEOUT`], and starts the framing over it.
pub async fn accept<S>(io: S, origins: &Origins) -> Result<Session, AcceptError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The callback's types are tungstenite's: its error is the whole HTTP answer.
    #[allow(clippy::result_large_err)]
    let check = |request: &Request, mut response: Response| {
        if let Some(origin) = request.headers().get(http::header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("");
            if !origins.allows(origin) {
                return Err(refuse(403, "this origin may not watch here"));
            }
        }
        let offered = request
            .headers()
            .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim() == PROTOCOL);
        if !offered {
            return Err(refuse(
                400,
                "ask for the WebSocket subprotocol ghost-ws.1 (Sec-WebSocket-Protocol)",
            ));
        }
        response.headers_mut().insert(
            http::header::SEC_WEBSOCKET_PROTOCOL,
            http::HeaderValue::from_static(PROTOCOL),
        );
        Ok(response)
    };
    let config = config(&Limits::SERVER);
    let ws = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        tokio_tungstenite::accept_hdr_async_with_config(io, check, Some(config)),
    )
    .await
    .map_err(|_| AcceptError::Timeout)??;
    Ok(Session::new(ws, Side::Server, Limits::SERVER))
}

/// Opens the WebSocket at `url` over `io` (already connected, TLS included for `wss`) as a
/// viewer, and starts the framing over it.
pub async fn connect<S>(io: S, url: &str) -> Result<Session, tungstenite::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request()?;
    request.headers_mut().insert(
        http::header::SEC_WEBSOCKET_PROTOCOL,
        http::HeaderValue::from_static(PROTOCOL),
    );
    let (ws, _) = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        tokio_tungstenite::client_async_with_config(request, io, Some(config(&Limits::CLIENT))),
    )
    .await
    .map_err(|_| tungstenite::Error::Io(std::io::ErrorKind::TimedOut.into()))??;
    Ok(Session::new(ws, Side::Client, Limits::CLIENT))
}

/// Keeps the kernel's unsent bytes on `tcp` to [`NOTSENT_LOWAT`] and sends small writes at
/// once (no Nagle delay).
pub fn tune(tcp: &tokio::net::TcpStream) -> std::io::Result<()> {
    tcp.set_nodelay(true)?;
    socket2::SockRef::from(tcp).set_tcp_notsent_lowat(NOTSENT_LOWAT)
}

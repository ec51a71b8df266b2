//! The gateway at a public name or address: HTTPS with a certificate browsers trust, the
//! plain-HTTP port answering ACME http-01 challenges and sending everyone else to HTTPS.
//!
//! Browsers expose WebTransport and WebCodecs only in a secure context: a page over plain
//! HTTP is one at `127.0.0.1` and nowhere else. So a stack reached by a name serves the page
//! over HTTPS ([`Https::https_listen`]), and its plain port redirects strangers there. The
//! host's own connections (loopback, the container network's gateway) are still served over
//! plain HTTP, so `ghost` commands and a reverse proxy on the host need no certificate.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// HTTPS settings. Without [`Https::https_listen`] the gateway speaks plain HTTP only, as a
/// loopback stack does.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args, serde::Serialize)]
pub struct Https {
    /// Serve HTTPS here (the page, the API: every route) with the certificate `https.pem`
    /// and key `https.key` of --tls-dir, which the supervisor puts there (from ACME or the
    /// operator) and renews; a new pair is taken for new connections.
    #[arg(long, env = "GHOST_GATEWAY_HTTPS_LISTEN", requires = "dir")]
    pub https_listen: Option<SocketAddr>,
    /// The name or address viewers open, `HOST` or `HOST:PORT` (the bound HTTPS port when
    /// none is given): plain HTTP from anywhere but this host is redirected to
    /// `https://HOST[:PORT]/` (ACME challenges excepted).
    #[arg(long, env = "GHOST_GATEWAY_HTTPS_ADVERTISE")]
    pub https_advertise: Option<String>,
    /// A directory of ACME http-01 challenge responses, one file per token, served at
    /// `/.well-known/acme-challenge/TOKEN`.
    #[arg(long, env = "GHOST_GATEWAY_ACME_CHALLENGES")]
    pub acme_challenges: Option<PathBuf>,
}

/// Who the plain-HTTP listener serves rather than redirects.
#[derive(Clone)]
pub(crate) struct Redirect {
    /// `https://HOST[:PORT]`, no trailing `/`.
    pub url: String,
    /// The host's own address besides loopback.
    pub local: Option<std::net::IpAddr>,
}

/// Sends plain-HTTP requests from strangers to the HTTPS address (308, which keeps the
/// method and body); ACME challenges and the host's own requests are served.
pub(crate) async fn redirect_strangers(
    State(to): State<Redirect>,
    request: Request,
    next: Next,
) -> Response {
    let from_host = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|ConnectInfo(peer)| identity::peer::from_host(peer.ip(), to.local.as_slice()));
    let path = request.uri().path();
    if from_host || path.starts_with(server::challenge::PREFIX) {
        return next.run(request).await;
    }
    let target = format!(
        "{}{}",
        to.url,
        request.uri().path_and_query().map_or("/", |p| p.as_str())
    );
    match HeaderValue::from_str(&target) {
        Ok(location) => (
            StatusCode::PERMANENT_REDIRECT,
            [(header::LOCATION, location)],
            format!("this stack is served over HTTPS: {target}\n"),
        )
            .into_response(),
        Err(_) => (StatusCode::BAD_REQUEST, "bad request target\n").into_response(),
    }
}

/// Adds `Strict-Transport-Security` to every HTTPS answer: a browser that saw the stack
/// over HTTPS never tries plain HTTP at its name again (browsers ignore it for bare IPs).
pub(crate) async fn hsts(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000"),
    );
    response
}

/// `router` as the HTTPS listener serves it.
pub(crate) fn secure(router: Router) -> Router {
    router.layer(axum::middleware::map_response(hsts))
}

/// The certificate pair in `tls_dir` the HTTPS listener serves, following its files.
pub fn certificate(tls_dir: &Path) -> Result<Arc<identity::Reloading>, crate::Error> {
    let files = identity::Files::in_dir(tls_dir);
    identity::Reloading::load(&files.https_cert, &files.https_key)
        .map(Arc::new)
        .map_err(|source| crate::Error::Certificate {
            dir: tls_dir.to_path_buf(),
            source: Box::new(source),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    async fn ask(from: &str, uri: &str) -> Response {
        let router = Router::new()
            .route("/streams", get(|| async { "[]" }))
            .merge(server::challenge::routes(std::env::temp_dir()))
            .layer(axum::middleware::from_fn_with_state(
                Redirect {
                    url: "https://ghost.test:8443".into(),
                    local: Some("172.18.0.1".parse().expect("ip")),
                },
                redirect_strangers,
            ));
        let mut request = Request::builder()
            .uri(uri)
            .body(Body::empty())
            .expect("request");
        let peer: SocketAddr = from.parse().expect("addr");
        request.extensions_mut().insert(ConnectInfo(peer));
        router.oneshot(request).await.expect("answer")
    }

    #[tokio::test]
    async fn plain_http_sends_strangers_to_https_and_serves_the_host() {
        let moved = ask("203.0.113.7:40000", "/streams?x=1").await;
        assert_eq!(moved.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(
            moved.headers()[header::LOCATION],
            "https://ghost.test:8443/streams?x=1"
        );
        for host in ["127.0.0.1:40000", "[::1]:40000", "172.18.0.1:40000"] {
            assert_eq!(
                ask(host, "/streams").await.status(),
                StatusCode::OK,
                "{host}"
            );
        }
        // A CA's challenge request is never redirected (an unknown token is a 404).
        let challenge = ask("203.0.113.7:40000", "/.well-known/acme-challenge/abc").await;
        assert_eq!(challenge.status(), StatusCode::NOT_FOUND);
    }
}

//! The web app viewers open: the list of live streams at `/`, a watch page at
//! `/watch/{id or name}`, and their scripts and style under `/app/`. Plain HTML and
//! JavaScript modules, embedded in the binary: nothing is fetched from anywhere else, and
//! the gateway carries no media (the page gets it from a relay over WebTransport).

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Scripts load from this origin only; media comes from relays over WebTransport or
/// WebSocket, which `connect-src` governs, and reaches a `<video>` element (the Media Source
/// Extensions decoder) as a `blob:` URL, which `media-src` does.
const POLICY: &str = "default-src 'self'; connect-src 'self' https: wss: ws:; media-src 'self' blob:; object-src 'none'; \
                      base-uri 'none'; frame-ancestors 'none'";

fn page(body: impl Into<axum::body::Body>, content_type: &'static str) -> Response {
    page_with(body, content_type, HeaderValue::from_static(POLICY))
}

/// A page with the content security policy `policy`.
fn page_with(
    body: impl Into<axum::body::Body>,
    content_type: &'static str,
    policy: HeaderValue,
) -> Response {
    let body: axum::body::Body = body.into();
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Small files that change with the binary: always revalidate, never serve stale code.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

const HTML: &str = "text/html; charset=utf-8";

/// `GET /`: the streams that are live now.
pub async fn index() -> Response {
    page(include_str!("web/index.html"), HTML)
}

/// `GET /watch/{id or name}`: the player; the script reads the stream from the path.
pub async fn watch(Path(_stream): Path<String>) -> Response {
    page(include_str!("web/watch.html"), HTML)
}

/// The watch route of a gateway that also serves HTTPS at `https_url`: the page names that
/// address (`<meta name="ghost-https">`), so one opened over plain HTTP links the right
/// port.
pub fn watch_at<S: Clone + Send + Sync + 'static>(
    https_url: &str,
) -> axum::routing::MethodRouter<S> {
    let meta = format!(
        "<meta name=\"ghost-https\" content=\"{}\">\n</head>",
        https_url.replace(['"', '<', '>', '&'], "")
    );
    let html =
        axum::body::Bytes::from(include_str!("web/watch.html").replacen("</head>", &meta, 1));
    let policy = HeaderValue::from_str(&relays_only(https_url))
        .unwrap_or_else(|_| HeaderValue::from_static(POLICY));
    axum::routing::get(
        move |Path(_stream): Path<String>| async move { page_with(html, HTML, policy) },
    )
}

/// The watch page's policy at a public name: connections to this origin and to the relays,
/// which are advertised at the same host (any port), and nowhere else. An IPv6 address,
/// which a policy cannot name, keeps [`POLICY`]'s `https:`.
fn relays_only(https_url: &str) -> String {
    let authority = https_url.trim_start_matches("https://");
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    };
    if host.is_empty() || host.contains(['[', ':', ';', ' ', '\'', '"']) {
        return POLICY.to_string();
    }
    POLICY.replace(
        "connect-src 'self' https: wss: ws:",
        &format!("connect-src 'self' https://{host}:* wss://{host}:*"),
    )
}

/// `GET /app/{file}`: the scripts and the style sheet, and nothing else.
pub async fn asset(Path(file): Path<String>) -> Response {
    let js = "text/javascript; charset=utf-8";
    match file.as_str() {
        "list.js" => page(include_str!("web/list.js"), js),
        "watch.js" => page(include_str!("web/watch.js"), js),
        "wire.js" => page(include_str!("web/wire.js"), js),
        "ws.js" => page(include_str!("web/ws.js"), js),
        "mse.js" => page(include_str!("web/mse.js"), js),
        "mp4.js" => page(include_str!("web/mp4.js"), js),
        "app.css" => page(include_str!("web/app.css"), "text/css; charset=utf-8"),
        _ => (StatusCode::NOT_FOUND, "no such file\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_a_public_name_the_page_may_connect_to_its_relays_only() {
        assert!(
            relays_only("https://ghost.test:8443")
                .contains("connect-src 'self' https://ghost.test:* wss://ghost.test:*;")
        );
        assert!(
            relays_only("https://203.0.113.7")
                .contains("connect-src 'self' https://203.0.113.7:* wss://203.0.113.7:*;")
        );
        assert_eq!(relays_only("https://[2001:db8::1]:443"), POLICY);
    }
}

//! The web app viewers open: the list of live streams at `/`, a watch page at
//! `/watch/{id or name}`, and their scripts and style under `/app/`. Plain HTML and
//! JavaScript modules, embedded in the binary: nothing is fetched from anywhere else, and
//! the gateway carries no media (the page gets it from a relay over WebTransport).

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Scripts load from this origin only; media comes from relays over WebTransport, which
/// `connect-src` governs.
const POLICY: &str = "default-src 'self'; connect-src 'self' https:; object-src 'none'; \
                      base-uri 'none'; frame-ancestors 'none'";

fn page(body: impl Into<axum::body::Body>, content_type: &'static str) -> Response {
    let body: axum::body::Body = body.into();
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Small files that change with the binary: always revalidate, never serve stale code.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
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
    axum::routing::get(move |Path(_stream): Path<String>| async move { page(html, HTML) })
}

/// `GET /app/{file}`: the scripts and the style sheet, and nothing else.
pub async fn asset(Path(file): Path<String>) -> Response {
    let js = "text/javascript; charset=utf-8";
    match file.as_str() {
        "list.js" => page(include_str!("web/list.js"), js),
        "watch.js" => page(include_str!("web/watch.js"), js),
        "wire.js" => page(include_str!("web/wire.js"), js),
        "mp4.js" => page(include_str!("web/mp4.js"), js),
        "app.css" => page(include_str!("web/app.css"), "text/css; charset=utf-8"),
        _ => (StatusCode::NOT_FOUND, "no such file\n").into_response(),
    }
}

//! ACME http-01 challenge responses (RFC 8555 §8.3), served from a directory of files named
//! by token: the supervisor writes one per pending challenge and removes it once the CA has
//! answered, and whoever holds the stack's plain-HTTP port serves them (the viewer gateway,
//! or the supervisor itself while no stack runs yet).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// Where challenge responses are served from.
pub const PREFIX: &str = "/.well-known/acme-challenge/";

/// A response is a token, a dot and a 43-character thumbprint: well under this.
const MAX_FILE: u64 = 1024;

/// The route `GET /.well-known/acme-challenge/{token}`, answered from the files in `dir`.
pub fn routes(dir: PathBuf) -> Router {
    Router::new()
        .route(&format!("{PREFIX}{{token}}"), get(challenge))
        .with_state(Arc::new(dir))
}

/// Whether `token` can name a challenge: base64url, as RFC 8555 makes them, so nothing else
/// (no `..`, no `/`) ever names a file.
pub fn valid_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 256
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

async fn challenge(
    State(dir): State<Arc<PathBuf>>,
    axum::extract::Path(token): axum::extract::Path<String>,
) -> Response {
    if !valid_token(&token) {
        return (StatusCode::NOT_FOUND, "no such challenge\n").into_response();
    }
    match read(&dir.join(&token)).await {
        Some(body) => {
            tracing::info!(%token, "answered an ACME http-01 challenge");
            ([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response()
        }
        None => (StatusCode::NOT_FOUND, "no such challenge\n").into_response(),
    }
}

async fn read(path: &Path) -> Option<String> {
    let meta = tokio::fs::metadata(path).await.ok()?;
    if !meta.is_file() || meta.len() > MAX_FILE {
        return None;
    }
    tokio::fs::read_to_string(path).await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_base64url_tokens_name_files() {
        assert!(valid_token("LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"));
        for bad in ["", "..", "a/b", "a.b", "%2e%2e", &"a".repeat(257)] {
            assert!(!valid_token(bad), "{bad:?} was taken");
        }
    }
}

//! `GET /`: a small demo page, one self-contained HTML file (no build step,
//! no CDN), so it works offline; and `GET /clients/groupcast.js`, the
//! JavaScript client it uses (`clients/js/groupcast.js`, an ES module any
//! page may import from here).

use axum::Router;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;

use super::state::AppState;

const PAGE: &str = include_str!("demo.html");

/// The client, compiled into the binary: the page and its client always
/// come from the same build, so they speak the same protocol revision.
const CLIENT: &str = include_str!("../../clients/js/groupcast.js");

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/clients/groupcast.js", get(client))
}

/// The module with the MIME type browsers require of module scripts, and
/// `no-cache` (revalidate each load): a deploy of a new binary must not
/// leave pages on an old client.
async fn client() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        CLIENT,
    )
}

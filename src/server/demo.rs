//! `GET /`: a small demo page, one self-contained HTML file (no build step,
//! no CDN), so it works offline; and `GET /clients/groupcast.js`, the
//! JavaScript client it uses (`clients/js/groupcast.js`, an ES module any
//! page may import from here).

use axum::http::header;
use axum::response::{Html, IntoResponse};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::state::AppState;

const PAGE: &str = include_str!("demo.html");

/// The client, compiled into the binary: the page and its client always
/// come from the same build, so they speak the same protocol revision.
const CLIENT: &str = include_str!("../../clients/js/groupcast.js");

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(page))
        .routes(routes!(client))
}

/// The demo page.
#[utoipa::path(
    get,
    path = "/",
    tag = "demo",
    summary = "The demo page",
    responses((status = 200, description = "The page", content_type = "text/html", body = String)),
)]
async fn page() -> Html<&'static str> {
    Html(PAGE)
}

/// The module with the MIME type browsers require of module scripts, and
/// `no-cache` (revalidate each load): a deploy of a new binary must not
/// leave pages on an old client.
#[utoipa::path(
    get,
    path = "/clients/groupcast.js",
    tag = "demo",
    summary = "The JavaScript client, an ES module",
    responses((status = 200, description = "The module", content_type = "text/javascript", body = String)),
)]
async fn client() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        CLIENT,
    )
}

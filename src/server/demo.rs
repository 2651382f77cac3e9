//! `GET /`: a small demo page, one self-contained HTML file (no build step,
//! no CDN), so it works offline.

use axum::Router;
use axum::response::Html;
use axum::routing::get;

use super::AppState;

const PAGE: &str = include_str!("demo.html");

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/", get(|| async { Html(PAGE) }))
}

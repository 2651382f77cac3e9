//! `GET /admin`: the operator's page, behind the API key.
//!
//! One self-contained HTML file (`admin.html`: no CDN, no build step, it
//! works offline) compiled into the binary. It holds no data: everything
//! it shows it reads from the node's own HTTP API and `/metrics` every two
//! seconds, cluster-wide where the API is (nodes, groups with their
//! members per node, a group's presence, users and recent history,
//! workers), and what it changes (publish, disconnect a session or a user)
//! goes through the API too. So the page can show nothing the key's holder
//! could not ask the API for.
//!
//! A browser cannot add `Authorization: Bearer` to a page it navigates to,
//! so a request without the key is answered 401 with an HTTP Basic
//! challenge: the browser asks its user, who gives the API key as the
//! password, and then sends it with the page's own API calls (see
//! [`crate::auth::http::api_key`] for why only with those).

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::state::AppState;

const PAGE: &str = include_str!("admin.html");

/// The realm of the challenge: what the browser shows its user.
const CHALLENGE: &str =
    "Basic realm=\"groupcast admin: the API key is the password\", charset=\"UTF-8\"";

/// `/admin`, without its guard: [`super::router`] puts it behind the same
/// API-key check as the API, then [`ask_for_the_key`] around that.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(admin_page))
}

/// The admin page.
#[utoipa::path(
    get,
    path = "/admin",
    tag = "admin",
    summary = "The admin page (HTML), behind the API key",
    description = "Needs the API key: as `Authorization: Bearer <key>`, or as the password of \
                   HTTP Basic credentials, which a browser asks for after the 401's challenge.",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The page", content_type = "text/html", body = String),
        (status = 401, description = "No key, or not one of the node's: a Basic challenge \
                                      (`WWW-Authenticate`) and a short page saying what to give",
         content_type = "text/html", body = String),
        (status = 403, description = "Basic credentials on a request another site made the \
                                      browser send (`cross_site_credentials`)",
         body = crate::http_error::ErrorBody),
    ),
)]
async fn admin_page() -> Html<&'static str> {
    Html(PAGE)
}

/// Turns the API-key guard's 401 into what a browser understands: a Basic
/// challenge (the browser asks for the key) and a short page that says
/// what to type, in place of the API's JSON.
pub(super) async fn ask_for_the_key(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if response.status() != StatusCode::UNAUTHORIZED {
        return response;
    }
    let mut refused = (
        StatusCode::UNAUTHORIZED,
        Html(
            "<!doctype html><title>groupcast admin</title>\
             <p>The admin page needs the node's API key: reload and give it as the \
             password (any user name), or send <code>Authorization: Bearer &lt;api key&gt;</code>.</p>",
        ),
    )
        .into_response();
    refused.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(CHALLENGE),
    );
    refused
}

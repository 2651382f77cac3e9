//! The HTTP side: axum routers over a [`Hub`](crate::Hub).
//!
//! * [`ws_router`] — only `GET /ws/{*group}`, for mounting the hub into an
//!   application's own `Router`;
//! * [`router`] — everything the `groupcast` binary serves: WebSockets, the
//!   HTTP API, health, metrics, debug state, the admin page (`/admin`,
//!   behind the API key) and the demo page, and their OpenAPI description
//!   at `/api/openapi.json` (`openapi.rs`: every route is added with its
//!   description, as `.routes(routes!(handler))`);
//! * [`admin_router`] — health, readiness and metrics alone, for a separate
//!   admin port.
//!
//! Security (tokens, Origin allowlist, API keys, CORS) is described in
//! [`crate::auth`].
//!
//! Both need the connection's address: serve them with [`serve`] (which
//! also times out half-sent requests), or with axum's
//! `into_make_service_with_connect_info::<SocketAddr>()` (without either,
//! sessions simply have no remote address).

mod admin;
mod api;
mod bodies;
mod demo;
mod group_paths;
mod listen;
mod openapi;
mod ops;
mod state;

pub use crate::wire::MAX_READ_CHUNK;
#[doc(hidden)]
pub use api::parse_publish;
pub use listen::{ServeOptions, serve};
use state::AppState;

use std::sync::Arc;

use axum::http::{StatusCode, Uri};
use axum::routing::get;
use axum::{Extension, Router};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::Hub;
use crate::auth::http::{ApiKeyGuard, require_api_key};
use crate::auth::{ApiKeys, CorsPolicy};
use crate::http_error::ApiError;
use crate::transport::{sse, websocket};

/// Settings of the full router.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The largest HTTP API body accepted, in bytes.
    pub api_max_body: usize,
    /// Keys for `/api/*` and `/debug/state`; none: open (see
    /// [`crate::auth::api_key`]).
    pub api_keys: Arc<ApiKeys>,
    /// CORS for `/api/*` (default: off).
    pub cors: CorsPolicy,
    /// Whether `/debug/state` is served.
    pub debug_endpoint: bool,
    /// Whether `/healthz`, `/readyz` and `/metrics` are served on this
    /// router; false when they live on [`admin_router`] instead.
    pub health_endpoints: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            api_max_body: 1024 * 1024,
            api_keys: Arc::new(ApiKeys::open()),
            cors: CorsPolicy::Off,
            debug_endpoint: true,
            health_endpoints: true,
        }
    }
}

/// Only the WebSocket endpoint, `GET /ws/{*group}`: merge it into your own
/// `Router` to serve a hub next to your application.
pub fn ws_router(hub: Hub) -> Router {
    Router::new()
        .route("/ws", get(websocket::upgrade_without_group))
        .route("/ws/", get(websocket::no_group))
        .route("/ws/{*group}", get(websocket::upgrade))
        .route("/sse/", get(sse::no_group))
        .route("/sse/{*group}", get(sse::subscribe))
        .with_state(hub)
}

/// The full server: WebSockets, HTTP API, health, metrics, debug, demo,
/// and the OpenAPI description of them all at `/api/openapi.json`.
///
/// The router and its description are built from the same routes: each
/// is added with its description (`routes!`), so the two cannot differ.
pub fn router(hub: Hub, options: ServerOptions) -> Router {
    let state = AppState { hub: hub.clone() };
    // What an API key protects: the API and the debug view.
    let mut protected = api::routes(options.api_max_body);
    if options.debug_endpoint {
        protected = protected.merge(ops::debug_routes());
    }
    let (protected, mut spec) = protected.split_for_parts();
    openapi::behind_api_key(&mut spec);
    // The 405 set on the routes before they are wrapped, so that the
    // layers (CORS answering a preflight) come first.
    let protected = protected.method_not_allowed_fallback(method_not_allowed);
    // `route_layer`: only matched routes ask for a key, so an unknown path
    // is still a 404, not a 401.
    let guard = ApiKeyGuard {
        keys: options.api_keys.clone(),
        hub,
    };
    // The admin page: the same guard, its refusal turned into a challenge
    // a browser answers (see `admin.rs`).
    let (admin, admin_spec) = admin::routes().split_for_parts();
    spec.merge(admin_spec);
    let admin = admin
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(axum::middleware::from_fn_with_state(
            guard.clone(),
            require_api_key,
        ))
        .layer(axum::middleware::from_fn(admin::ask_for_the_key));
    let mut protected =
        protected.route_layer(axum::middleware::from_fn_with_state(guard, require_api_key));
    // CORS outermost, so a browser's preflight (which carries no key) is
    // answered before the key check.
    if let Some(cors) = options.cors.layer() {
        protected = protected.layer(cors);
    }
    let mut open = OpenApiRouter::new()
        .routes(routes!(openapi::openapi_json))
        .merge(demo::routes())
        .merge(transport_routes());
    if options.health_endpoints {
        open = open.merge(ops::health_routes());
    }
    let (open, open_spec) = open.split_for_parts();
    spec.merge(open_spec);
    let spec = openapi::finish(spec);
    let router = protected
        .merge(admin)
        .merge(open.method_not_allowed_fallback(method_not_allowed))
        .fallback(no_route)
        .layer(Extension(openapi::Spec(Arc::new(spec))))
        .with_state(state);
    // Group names with `/` in them, made one `{group}` segment before the
    // routes are matched (`group_paths.rs`).
    Router::new().fallback_service(tower::util::MapRequest::new(
        router,
        group_paths::one_segment,
    ))
}

/// The transports, as the full router serves them (the same handlers as
/// [`ws_router`], described, with `{group}` made one segment first).
fn transport_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(websocket::upgrade_without_group))
        .routes(routes!(websocket::no_group))
        .routes(routes!(websocket::upgrade))
        .routes(routes!(sse::no_group))
        .routes(routes!(sse::subscribe))
}

/// A path the router does not serve: JSON like every other error. Under
/// `/api/groups/` every path with a group matches a route once its
/// slashes are encoded, so one that matches none has an empty group
/// (`/api/groups//messages`): a bad name, as the API says of any other.
async fn no_route(uri: Uri) -> ApiError {
    if uri.path().starts_with("/api/groups/") {
        return ApiError::bad_group(crate::GroupNameError::Empty);
    }
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_route",
        "no such route: GET /api/openapi.json describes the ones there are",
    )
}

/// A path served, but not for this method.
async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this path does not take this method: GET /api/openapi.json describes the ones it takes",
    )
}

/// Only `/healthz`, `/readyz` and `/metrics`, for a separate admin
/// listener (`--admin-listen`) that only the orchestrator and the scraper
/// can reach; pair it with `ServerOptions::health_endpoints = false`.
///
/// It takes the same `options` as [`router`] so that both are built alike,
/// though none of them concerns these three routes today.
pub fn admin_router(hub: Hub, options: ServerOptions) -> Router {
    let _ = options;
    let (router, _) = ops::health_routes().split_for_parts();
    router.with_state(AppState { hub })
}

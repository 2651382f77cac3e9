//! The HTTP side: axum routers over a [`Hub`](crate::Hub).
//!
//! * [`ws_router`] — only `GET /ws/{*group}`, for mounting the hub into an
//!   application's own `Router`;
//! * [`router`] — everything the `groupcast` binary serves: WebSockets, the
//!   HTTP API, health, metrics, debug state and the demo page.
//!
//! Both need the connection's address: serve them with
//! `into_make_service_with_connect_info::<SocketAddr>()` (without it,
//! sessions simply have no remote address).

mod api;
mod demo;
mod ops;
mod ws;

use axum::Router;
use axum::routing::get;
use serde::Serialize;

use crate::Hub;

/// What the server lets clients do with the messages they send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientMessages {
    /// Forwarded to the sender's own group (melody's chat).
    #[default]
    Group,
    /// Ignored: server push only (ws-notifier).
    None,
}

/// Settings of the full router.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// What happens to messages clients send (shown to the demo page; the
    /// binary installs the matching handler).
    pub client_messages: ClientMessages,
    /// The largest HTTP API body accepted, in bytes.
    pub api_max_body: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            client_messages: ClientMessages::Group,
            api_max_body: 1024 * 1024,
        }
    }
}

/// Shared by every handler of the full router.
#[derive(Clone)]
pub(crate) struct AppState {
    pub hub: Hub,
    pub options: ServerOptions,
}

/// Only the WebSocket endpoint, `GET /ws/{*group}`: merge it into your own
/// `Router` to serve a hub next to your application.
pub fn ws_router(hub: Hub) -> Router {
    Router::new()
        .route("/ws/{*group}", get(ws::upgrade))
        .with_state(hub)
}

/// The full server: WebSockets, HTTP API, health, metrics, debug, demo.
pub fn router(hub: Hub, options: ServerOptions) -> Router {
    let state = AppState {
        hub: hub.clone(),
        options: options.clone(),
    };
    Router::new()
        .merge(api::routes(options.api_max_body))
        .merge(ops::routes())
        .merge(demo::routes())
        .with_state(state)
        .merge(ws_router(hub))
}

//! What the HTTP handlers share.

use crate::hub::Hub;

/// Shared by every handler of the full router. Only the hub: every
/// [`ServerOptions`] setting is applied when the router is built (which
/// routes exist, which layers wrap them), and what a handler reports
/// about the server's behaviour comes from the hub's [`Config`](crate::Config),
/// which is what the hub applies.
#[derive(Clone)]
pub(crate) struct AppState {
    pub hub: Hub,
}

/// The transports' handlers take the hub alone (`ws_router` has no other
/// state); in the full router they get it from here.
impl axum::extract::FromRef<AppState> for Hub {
    fn from_ref(state: &AppState) -> Hub {
        state.hub.clone()
    }
}

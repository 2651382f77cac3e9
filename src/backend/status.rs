//! Whether a backend works, connection by connection.

use serde::Serialize;

/// Whether the backend is usable, for `/readyz`, `/metrics` and the API.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BackendStatus {
    /// The mode: `"local"`, `"redis"` (one Redis), `"sharded"`,
    /// `"cluster"` or `"sentinel"`.
    pub kind: &'static str,
    /// Whether messages can flow to and from other nodes now.
    pub connected: bool,
    /// Channels subscribed now (confirmed by the server).
    pub subscriptions: Vec<String>,
    /// The last error, while not connected; for a backend of several
    /// connections, what is wrong with the ones that are down (a sharded
    /// backend stays `connected` while one data shard is down).
    pub last_error: Option<String>,
    /// Every connection to a server and what it is for (empty standalone).
    pub connections: Vec<ConnectionStatus>,
}

/// One connection of a backend to one server, for `/api/info`, `/metrics`
/// and `/debug/state`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct ConnectionStatus {
    /// What it is for: `redis`, `shard 0`, `primary`, ...
    pub role: String,
    /// `host:port` of the server (never a URL: it may hold a password).
    pub redis: String,
    /// Whether it works now.
    pub connected: bool,
    /// Channels it is subscribed to now.
    pub subscriptions: usize,
}

//! Transports: how a session's messages reach a client, and the client's
//! reach the hub.
//!
//! A transport owns only what is its own: the handshake, how it reads what
//! the client sends, how it encodes a queued message (built once per
//! message and shared by every member that uses the same encoding: see
//! `outbound::Encoding`), and how it signals a close. Everything else about
//! a session's life — admission, joining and leaving, catch-up from
//! history, the application's handlers, rate limits and refreshes — is the
//! same for every transport and lives in [`lifecycle`].
//!
//! | file | job |
//! | --- | --- |
//! | `lifecycle.rs` | a session's life, for every transport |
//! | `subscriptions.rs` | many groups over one `groupcast.v1` connection: `subscribe` / `unsubscribe` |
//! | `writer.rs` | the vectored writer: a batch of shared buffers, one `writev` |
//! | `websocket/` | RFC 6455: the upgrade, frames, permessage-deflate, close codes |
//! | `sse/` | Server-Sent Events: an event stream per session, resumed with `Last-Event-ID` |
//!
//! A new transport is a new directory here that calls [`lifecycle`] and
//! [`writer`], takes a free encoding slot in `outbound.rs`, and maps a
//! [`CloseReason`](crate::CloseReason) to its own signal.

pub(crate) mod lifecycle;
pub(crate) mod sse;
pub(crate) mod subscriptions;
pub(crate) mod websocket;
pub(crate) mod writer;

use axum::http::HeaderName;
use tokio_util::sync::CancellationToken;

/// The response header that names the node serving a session: behind a
/// load balancer, this is how a client (or a test) tells the replicas
/// apart.
pub(crate) const NODE_HEADER: HeaderName = HeaderName::from_static("x-groupcast-node");

/// Ends one HTTP connection from inside a response: for a transport whose
/// body hyper writes (Server-Sent Events), which is not polled at all
/// while its client does not read, so it cannot end a stalled connection
/// from inside. The accept loop (`server/listen.rs`) puts one in every
/// request's extensions and drops the connection when it fires.
#[derive(Clone, Default)]
pub(crate) struct ConnectionAbort(CancellationToken);

impl ConnectionAbort {
    /// Ends the connection.
    pub(crate) fn abort(&self) {
        self.0.cancel();
    }

    /// Resolves once the connection must end.
    pub(crate) async fn aborted(&self) {
        self.0.cancelled().await;
    }
}

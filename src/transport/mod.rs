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
//! | `writer.rs` | the vectored writer: a batch of shared buffers, one `writev` |
//! | `websocket/` | RFC 6455: the upgrade, frames, permessage-deflate, close codes |
//!
//! A new transport is a new directory here that calls [`lifecycle`] and
//! [`writer`], takes a free encoding slot in `outbound.rs`, and maps a
//! [`CloseReason`](crate::CloseReason) to its own signal.

pub(crate) mod lifecycle;
pub(crate) mod websocket;
pub(crate) mod writer;

//! # groupcast
//!
//! A clustered WebSocket group broadcaster. Clients connect to
//! `/ws/<group>`; everything published to a group reaches every member of
//! it, on every node of the cluster. Each node keeps only its own sessions
//! and, in cluster mode, subscribes to one Redis channel per group it holds.
//!
//! The pieces, in the order data flows through them:
//!
//! * [`server`] — axum: upgrades `/ws/<group>`, runs one task per
//!   connection (writes shared frames, reads client frames), serves the
//!   HTTP API.
//! * [`wire`] — WebSocket frames built once per broadcast, client frames
//!   read strictly, permessage-deflate compressed once.
//! * [`Hub`] — the façade: handlers, membership, sending
//!   (`hub.to(group).except(id).send(msg)`, see [`Selection`]).
//! * `registry` — this node's group → sessions map; fan-out pushes into
//!   session queues and never awaits a socket.
//! * [`Session`] — one connection: id, group, keys, bounded queue.
//! * [`backend`] — the seam to other nodes (pub/sub, presence, leases):
//!   [`backend::local::Standalone`] or [`backend::redis::RedisOptions`]
//!   (one Redis).
//! * [`envelope`] — the wire format on Redis.
//! * [`auth`] — who may connect to which group, publish, and call the API:
//!   tokens, Origin allowlist, API keys (`docs/security.md`).
//!
//! See `docs/architecture.md` for the why.

pub mod auth;
pub mod backend;
mod backoff;
pub mod broadcast;
pub mod config;
mod delivery;
pub mod envelope;
mod error;
pub mod group;
pub mod history;
mod hub;
pub mod limits;
pub mod memory;
mod message;
pub mod metrics;
mod outbound;
mod poll_gate;
pub mod protocol;
mod registry;
pub mod resume;
mod selection;
pub mod server;
mod session;
mod session_id;
pub mod wire;
pub mod workers;

pub use backend::{IntoBackend, Position};
pub use broadcast::{Broadcast, KeyFilter, Target};
pub use config::{ClientMessages, Config, ConfigError, ParseSettingError, QueueFullPolicy};
pub use error::{BackendError, HubError, SessionError};
pub use group::{GroupName, GroupNameError, IntoGroupName};
pub use hub::{GroupInfo, Hub, HubBuilder};
pub use limits::LimitRejection;
pub use message::{Message, Utf8Bytes};
pub use selection::{Selection, Sent};
pub use session::{Session, SessionId};
pub use wire::{CloseReason, close_code};
pub use workers::{Worker, WorkerContext, WorkerInfo, WorkerOptions};

//! # groupcast
//!
//! A clustered WebSocket group broadcaster. Clients connect to
//! `/ws/<group>`; everything published to a group reaches every member of
//! it, on every node of the cluster. Each node keeps only its own sessions
//! and, in cluster mode, subscribes to one Redis channel per group it holds.
//!
//! What an application uses:
//!
//! * [`Hub`] — the façade: handlers, membership, sending
//!   (`hub.to(group).except(id).send(msg)`, see [`Selection`]), built with
//!   a [`Config`] and a backend;
//! * [`Session`] — one connection: id, group, keys, bounded queue;
//! * [`Message`], [`Broadcast`] and [`KeyFilter`] — what is sent, to whom;
//! * [`backend`] — the seam to other nodes and its settings:
//!   [`backend::local::Standalone`], [`backend::redis::RedisOptions`] (one
//!   Redis), [`backend::sharded::ShardedOptions`],
//!   [`backend::cluster::ClusterOptions`], [`backend::sentinel::SentinelOptions`];
//! * [`server`] — axum routers: `/ws/<group>`, the HTTP API, health;
//! * [`workers`] — a task per group while it has members anywhere;
//! * [`auth`] — who may connect to which group, publish, and call the API:
//!   tokens, Origin allowlist, API keys (`docs/security.md`);
//! * [`history`] — which groups keep history, for resuming.
//!
//! The wire formats (`wire`: WebSocket frames, permessage-deflate;
//! `envelope`: the format on Redis) and the resume internals are public
//! for the tests, fuzz targets and load tool only, and hidden from these
//! docs.
//!
//! See `docs/architecture.md` for the why.

pub mod auth;
pub mod backend;
mod backoff;
pub mod broadcast;
mod close;
pub mod config;
mod control;
mod delivery;
mod disconnect;
// The wire formats: public so that the tests, the fuzz targets and the load
// tool run the very code the server runs, but not part of the documented
// API (an application never needs them).
#[doc(hidden)]
pub mod envelope;
mod error;
pub mod group;
mod group_path;
pub mod history;
mod history_reads;
mod history_tail;
mod http_error;
mod hub;
pub mod limits;
pub mod memory;
mod message;
pub mod metrics;
mod outbound;
mod poll_gate;
mod presence;
pub mod protocol;
mod registry;
#[doc(hidden)]
pub mod resume;
mod selection;
pub mod server;
mod session;
mod session_id;
mod transport;
#[doc(hidden)]
pub mod webhooks;
pub mod wire;
pub mod workers;

pub use backend::control::Who;
pub use backend::{Cursor, IntoBackend, Member, MemberPage, Position, PresenceStats, UserCount};
pub use broadcast::{Broadcast, KeyFilter, Target};
pub use close::{CloseKind, CloseReason, is_final_code};
pub use config::{ClientMessages, Config, ConfigError, ParseSettingError, QueueFullPolicy};
pub use disconnect::{DisconnectError, DisconnectOptions, Disconnected, MAX_REASON_BYTES};
pub use error::{BackendError, HubError, SessionError};
pub use group::{GroupName, GroupNameError, IntoGroupName};
pub use hub::{GroupInfo, Hub, HubBuilder};
pub use limits::LimitRejection;
pub use message::{Message, Utf8Bytes};
pub use selection::{Selection, Sent};
pub use session::{Session, SessionId};
pub use wire::close_code;
pub use workers::{Worker, WorkerContext, WorkerInfo, WorkerOptions};

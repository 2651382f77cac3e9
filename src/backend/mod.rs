//! The backend: everything a hub needs from "the other nodes".
//!
//! A hub delivers every broadcast to its own sessions itself. What it cannot
//! do alone is reach the sessions of other nodes, know which other nodes
//! exist, and agree with them on who runs a group's worker. A [`Backend`]
//! supplies exactly that:
//!
//! * **pub/sub** — [`Backend::publish`] carries an encoded envelope to the
//!   other nodes on a [`Channel`]; [`Backend::subscribe`] /
//!   [`Backend::unsubscribe`] tell it which group channels this node holds
//!   (the registry's first join and last leave), and what arrives goes to
//!   the [`Inbox`] as an [`Inbound`], in order per channel;
//! * **node presence** — [`Backend::nodes`], the cluster view
//!   ([`presence`]);
//! * **worker leases** — [`Backend::leases`] ([`leases`]);
//! * **history** — for groups a `--history` rule names:
//!   [`Backend::publish_with_history`] appends and publishes in one atomic
//!   step, [`Backend::history`] reads pages back ([`history`]).
//!
//! The backends: [`local::Standalone`] (one process, nothing to tell
//! anyone), [`redis::RedisOptions`] (one Redis) and
//! [`sharded::ShardedOptions`] (N independent Redis, each group on one),
//! [`cluster::ClusterOptions`] (a Redis Cluster, sharded pub/sub) and
//! [`sentinel::SentinelOptions`] (one primary, followed through Sentinel). A hub is built with a
//! value that implements [`IntoBackend`]; `docs/architecture.md`, "Adding a
//! backend", says what a new one needs (Redis Cluster, N shards and
//! Sentinel are each a new file here plus a flag).
//!
//! What every backend reuses rather than rewrites: channel naming
//! ([`channels`]), the wanted-set and linger state machine
//! (`subscriptions.rs`), the backoff (`crate::backoff`) and the cluster
//! view's sums ([`presence::group_totals`]).

pub mod channels;
pub mod cluster;
pub mod error;
mod future;
pub mod history;
mod inbound;
pub mod leases;
pub mod local;
mod memory_history;
pub mod presence;
mod publish;
pub mod redis;
mod seam;
pub mod sentinel;
pub mod sharded;
mod status;
pub(crate) mod subscriptions;

pub use self::error::BackendError;
pub use self::future::BoxFuture;
pub use self::history::{HistoryEntry, HistoryPage, HistoryQuery};
pub use self::inbound::{BackendEvents, Channel, Inbound, Inbox, Position};
pub use self::leases::{LeaseHolder, LeaseStore};
pub use self::presence::{LocalGroups, NodeInfo};
pub use self::publish::{PublishAck, Published};
pub use self::seam::{Backend, BackendContext, IntoBackend};
pub use self::status::{BackendStatus, ConnectionStatus};

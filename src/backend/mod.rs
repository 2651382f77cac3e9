//! The backend: everything a hub needs from "the other nodes".
//!
//! A hub delivers every broadcast to its own sessions itself. What it cannot
//! do alone is reach the sessions of other nodes, know which other nodes
//! exist, and agree with them on who runs a group's worker. A [`Backend`]
//! supplies exactly that, as three parts, each a trait of its own file:
//!
//! * **the broker** ([`Broker`], `broker.rs`) — [`Broker::publish`]
//!   carries an encoded envelope to the other nodes on a [`Channel`];
//!   [`Broker::subscribe`] / [`Broker::unsubscribe`] tell it which group
//!   channels this node holds (the registry's first join and last leave),
//!   and what arrives goes to the [`Inbox`] as an [`Inbound`], in order per
//!   channel, through the typed handler [`BackendEvents`]; for groups a
//!   `--history` rule names, [`Broker::publish_with_history`] appends and
//!   publishes in one atomic step, [`Broker::history`] reads pages back
//!   ([`history`]);
//! * **the cluster view** ([`ClusterView`], `cluster_view.rs`) —
//!   [`ClusterView::nodes`], every live node and its groups ([`presence`]);
//! * **worker leases** ([`LeaseStore`], [`leases`]);
//! * **control between nodes** ([`control`]) — a request every other node
//!   runs (disconnect a session or a user) and their answers, sent with
//!   [`Broker::send_control`] and heard through
//!   [`BackendEvents::on_control`];
//! * **per-group presence** ([`PresenceStore`], `presence_store.rs`) —
//!   who is in a group on every node, a page at a time, and its counts
//!   ([`member`]).
//!
//! Why parts rather than one trait: each backend is made of pieces that do
//! one of these jobs (on Redis, a link publishes and subscribes, the
//! presence heartbeats, the leases are scripts), and a single trait made
//! every backend restate which piece answers which call. Now each piece
//! implements its part itself; the hub asks the part it means
//! (`backend.broker().publish(..)`), and what involves all three — the
//! order of a shutdown, the tasks they run — is written once, in
//! [`Backend`] (`seam.rs`, `tasks.rs`). Centrifuge splits its engine the
//! same way (`Broker`, `PresenceManager`, `BrokerEventHandler`).
//!
//! The backends: [`local::Standalone`] (one process, nothing to tell
//! anyone), [`redis::RedisOptions`] (one Redis) and
//! [`sharded::ShardedOptions`] (N independent Redis, each group on one),
//! [`cluster::ClusterOptions`] (a Redis Cluster, sharded pub/sub) and
//! [`sentinel::SentinelOptions`] (one primary, followed through Sentinel).
//! A hub is built with a value that implements [`IntoBackend`];
//! `docs/architecture.md`, "Adding a backend", says what a new one needs
//! (Redis Cluster, N shards and Sentinel are each a new folder here plus a
//! flag).
//!
//! What every backend reuses rather than rewrites: channel naming
//! ([`channels`]), the wanted-set and linger state machine
//! (`subscriptions.rs`), the backoff (`crate::backoff`), the cluster view's
//! sums ([`presence::group_totals`]), the shutdown ([`Backend::shutdown`]);
//! and every Redis backend, the Redis pieces in [`redis`] (a link, its
//! subscriber and publisher, the presence, the leases, the option checks).

pub mod broker;
pub mod channels;
pub mod cluster;
pub mod cluster_view;
pub mod control;
pub mod error;
mod future;
pub mod history;
mod inbound;
pub mod leases;
pub mod local;
mod local_changes;
pub mod member;
pub(crate) mod memory_history;
pub mod presence;
pub mod presence_store;
mod publish;
pub mod redis;
mod seam;
pub mod sentinel;
pub mod sharded;
mod status;
pub(crate) mod subscriptions;
mod tasks;
pub mod transition;

pub use self::broker::Broker;
pub use self::cluster_view::ClusterView;
pub use self::error::BackendError;
pub use self::future::BoxFuture;
pub use self::history::{HistoryEntry, HistoryPage, HistoryQuery};
pub use self::inbound::{BackendEvents, Channel, Inbound, Inbox, Position};
pub use self::leases::{LeaseHolder, LeaseStore};
pub use self::member::{
    Cursor, LocalMembers, Member, MemberPage, NoMembers, PresenceStats, UserCount,
};
pub use self::presence::{LocalGroups, NodeInfo};
pub use self::presence_store::PresenceStore;
pub use self::publish::{PublishAck, Published};
pub use self::seam::{Backend, BackendContext, IntoBackend};
pub use self::status::{BackendStatus, ConnectionStatus};
pub use self::transition::{PresenceChange, PresenceChanges, ignore_changes};

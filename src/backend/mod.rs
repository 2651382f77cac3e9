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
pub mod history;
pub mod leases;
pub mod local;
mod memory_history;
pub mod presence;
pub mod redis;
pub mod sentinel;
pub mod sharded;
pub(crate) mod subscriptions;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::oneshot;

use crate::error::BackendError;
use crate::group::GroupName;
use crate::history::HistoryLimits;
use crate::metrics::Metrics;

pub use self::history::{HistoryEntry, HistoryPage, HistoryQuery};
pub use self::leases::{LeaseHolder, LeaseStore};
pub use self::presence::{LocalGroups, NodeInfo};

/// A boxed future, for the object-safe traits of this module.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a message travels.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Channel {
    /// The channel of one group (`group:<name>` by default).
    Group(GroupName),
    /// The channel every node listens to: broadcast-all, lists of sessions.
    Cluster,
}

/// A message's place in its group's history: the offset in the group's
/// stream, and the epoch of that stream (a new epoch means the earlier
/// history is gone). Given by backends that keep history; `None` elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Position {
    /// 1, 2, 3, ... within one epoch.
    pub offset: u64,
    /// Changes whenever the history was lost.
    pub epoch: Arc<str>,
}

/// One message the backend read, with what it knows about it.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// The channel it arrived on.
    pub channel: Channel,
    /// The bytes as published (an envelope, or a raw payload).
    pub payload: Bytes,
    /// Its history position, when the backend's transport carries one.
    pub position: Option<Position>,
}

impl Inbound {
    /// A message without a history position.
    pub fn new(channel: Channel, payload: Bytes) -> Self {
        Inbound {
            channel,
            payload,
            position: None,
        }
    }
}

/// Receives every message the backend reads, in the order it read them.
///
/// It must not block: the hub's implementation only pushes into session
/// queues. Per-channel order is kept because a backend calls it from one
/// task per connection.
pub type Inbox = Arc<dyn Fn(Inbound) + Send + Sync>;

/// What a backend is given when the hub starts it.
#[derive(Clone)]
pub struct BackendContext {
    /// This node's id.
    pub node_id: String,
    /// Where incoming messages go.
    pub inbox: Inbox,
    /// The hub's metrics, for the backend's own counters.
    pub metrics: Arc<Metrics>,
    /// This node's groups and local member counts, for presence.
    pub local_groups: LocalGroups,
    /// Which groups keep history (for what a backend sets up for
    /// publishers outside groupcast, like the Redis Function).
    pub history: crate::history::HistoryPolicy,
}

impl BackendContext {
    /// This node as it is right now, for the cluster view.
    pub fn local_node(&self) -> NodeInfo {
        NodeInfo::local(&self.node_id, &self.local_groups)
    }
}

/// What a publish achieved once it left the node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    /// Where the message stands in its group's history, when the backend
    /// keeps one for that group.
    pub position: Option<Position>,
}

/// The answer to a publish: resolves when the message has left the node
/// (or could not). Dropping it is fine: the publish still happens, in order.
pub struct PublishAck(Option<oneshot::Receiver<Result<Published, BackendError>>>);

impl PublishAck {
    /// An ack that is already done (nothing to send).
    pub fn done() -> Self {
        PublishAck(None)
    }

    /// An ack that resolves when `rx` does.
    pub fn pending(rx: oneshot::Receiver<Result<Published, BackendError>>) -> Self {
        PublishAck(Some(rx))
    }

    /// Waits for the outcome.
    pub async fn wait(self) -> Result<Published, BackendError> {
        match self.0 {
            None => Ok(Published::default()),
            Some(rx) => rx.await.unwrap_or(Err(BackendError::Closed)),
        }
    }
}

/// Whether the backend is usable, for `/readyz`, `/metrics` and the API.
#[derive(Debug, Clone, Serialize)]
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
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
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

/// A backend chosen at run time (the binary's `--redis-mode`).
impl IntoBackend for Box<dyn IntoBackend> {
    fn start(self: Box<Self>, context: BackendContext) -> Result<Arc<dyn Backend>, BackendError> {
        <dyn IntoBackend as IntoBackend>::start(*self, context)
    }
}

/// A started backend. See the module docs.
pub trait Backend: Send + Sync + 'static {
    /// Whether other nodes exist at all (false standalone, which lets the
    /// hub skip encoding envelopes).
    fn is_clustered(&self) -> bool;

    /// Sends `payload` on `channel`. Publishes leave in call order.
    fn publish(&self, channel: Channel, payload: Bytes) -> PublishAck;

    /// Appends `payload` to `group`'s history (keeping `limits`) and
    /// publishes it on the group's channel with its position, in one atomic
    /// step, in call order with [`Backend::publish`]. The message reaches
    /// this node's members too through the inbox, positioned like everyone
    /// else's. The ack carries the position.
    fn publish_with_history(
        &self,
        group: &GroupName,
        limits: HistoryLimits,
        payload: Bytes,
    ) -> PublishAck;

    /// Reads a page of `group`'s history.
    fn history<'a>(
        &'a self,
        group: &'a GroupName,
        query: HistoryQuery,
    ) -> BoxFuture<'a, Result<HistoryPage, BackendError>>;

    /// The node now has members in `group`: listen to its channel. Returns
    /// at once; [`Backend::subscribed`] waits for the confirmation.
    fn subscribe(&self, group: &GroupName);

    /// The node's last member of `group` left: stop listening (a backend
    /// may wait a little first, in case someone joins again).
    fn unsubscribe(&self, group: &GroupName);

    /// Resolves once the backend is confirmed to listen to `group`'s
    /// channel (after [`Backend::subscribe`]), so that whatever is
    /// published from then on reaches this node. Fails when that cannot be
    /// confirmed in the backend's command timeout.
    fn subscribed<'a>(&'a self, group: &'a GroupName) -> BoxFuture<'a, Result<(), BackendError>>;

    /// Whether the backend works now.
    fn status(&self) -> BackendStatus;

    /// Every live node of the cluster, this one included, sorted by id.
    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeInfo>, BackendError>>;

    /// Where group workers' leases live.
    fn leases(&self) -> Arc<dyn LeaseStore>;

    /// Stops the backend: sends what is queued, withdraws this node's
    /// presence and closes connections.
    fn shutdown(&self) -> BoxFuture<'_, ()>;
}

/// What a hub is built with ([`HubBuilder::backend`](crate::HubBuilder::backend)):
/// a backend's settings, started once the hub knows its context.
pub trait IntoBackend: Send + 'static {
    /// Checks the settings and starts the backend. A backend that talks to
    /// a server connects in the background and reports its state in
    /// [`Backend::status`]; only invalid settings fail here.
    fn start(self: Box<Self>, context: BackendContext) -> Result<Arc<dyn Backend>, BackendError>;
}

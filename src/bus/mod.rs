//! The bus: how a node hears about broadcasts started elsewhere.
//!
//! The hub delivers every broadcast to its own sessions first, then hands
//! the encoded envelope to the bus, which carries it to the other nodes.
//! Messages arriving from the bus go to the [`Inbox`], which fans them out
//! locally. The bus also learns which groups this node holds
//! ([`Bus::subscribe`] / [`Bus::unsubscribe`]), so it can listen to exactly
//! those channels.
//!
//! Two buses exist: [`local::LocalBus`] (standalone: no other nodes) and
//! [`redis::RedisBus`] (Redis pub/sub). A third transport is a new file
//! implementing [`Bus`]; nothing else changes.

pub mod local;
pub mod redis;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::oneshot;

use crate::error::BusError;
use crate::group::GroupName;
use crate::metrics::Metrics;

/// A boxed future, for the object-safe trait below.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a message travels.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Channel {
    /// The channel of one group (`group:<name>` by default).
    Group(GroupName),
    /// The channel every node listens to: broadcast-all, lists of sessions.
    Cluster,
}

/// Receives every message the bus reads, in the order it read them.
///
/// It must not block: the hub's implementation only pushes into session
/// queues. Per-channel order is kept because the bus calls it from one task.
pub type Inbox = Arc<dyn Fn(Channel, Bytes) + Send + Sync>;

/// What a bus is given when the hub starts it.
#[derive(Clone)]
pub struct BusContext {
    /// This node's id.
    pub node_id: String,
    /// Where incoming messages go.
    pub inbox: Inbox,
    /// The hub's metrics, for the bus's own counters.
    pub metrics: Arc<Metrics>,
    /// This node's groups and local member counts, for presence heartbeats.
    pub local_groups: Arc<dyn Fn() -> Vec<(GroupName, usize)> + Send + Sync>,
}

/// The answer to a publish: resolves when the message has left the node
/// (or could not). Dropping it is fine: the publish still happens, in order.
pub struct PublishAck(Option<oneshot::Receiver<Result<(), BusError>>>);

impl PublishAck {
    /// An ack that is already done (nothing to send).
    pub fn done() -> Self {
        PublishAck(None)
    }

    /// An ack that resolves when `rx` does.
    pub fn pending(rx: oneshot::Receiver<Result<(), BusError>>) -> Self {
        PublishAck(Some(rx))
    }

    /// Waits for the outcome.
    pub async fn wait(self) -> Result<(), BusError> {
        match self.0 {
            None => Ok(()),
            Some(rx) => rx.await.unwrap_or(Err(BusError::Closed)),
        }
    }
}

/// Whether the bus is usable, for `/readyz`, `/metrics` and the API.
#[derive(Debug, Clone, Serialize)]
pub struct BusStatus {
    /// `"local"` or `"redis"`.
    pub kind: &'static str,
    /// Whether messages can flow to and from other nodes now.
    pub connected: bool,
    /// Channels subscribed now.
    pub subscriptions: Vec<String>,
    /// The last error, while not connected.
    pub last_error: Option<String>,
}

/// One node of the cluster, as its heartbeat describes it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct NodeInfo {
    /// The node's id.
    pub node_id: String,
    /// Its groups and their local member counts.
    pub groups: std::collections::BTreeMap<String, usize>,
    /// Its sessions in all.
    pub sessions: usize,
    /// When it last sent a heartbeat (Unix milliseconds).
    pub last_seen_ms: u64,
}

/// The link between nodes. See the module docs.
pub trait Bus: Send + Sync + 'static {
    /// Whether other nodes exist at all (false for the local bus, which
    /// lets the hub skip encoding envelopes).
    fn is_clustered(&self) -> bool;

    /// Sends `payload` on `channel`. Publishes leave in call order.
    fn publish(&self, channel: Channel, payload: Bytes) -> PublishAck;

    /// The node now has members in `group`: listen to its channel.
    fn subscribe(&self, group: &GroupName);

    /// The node's last member of `group` left: stop listening (a bus may
    /// wait a little first, in case someone joins again).
    fn unsubscribe(&self, group: &GroupName);

    /// Whether the bus works now.
    fn status(&self) -> BusStatus;

    /// Every live node of the cluster, or `None` when standalone.
    fn nodes(&self) -> BoxFuture<'_, Result<Option<Vec<NodeInfo>>, BusError>>;

    /// Stops the bus: withdraws this node's presence and closes connections.
    fn shutdown(&self) -> BoxFuture<'_, ()>;
}

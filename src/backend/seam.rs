//! The seam itself: the trait every backend implements, and what it is
//! given when the hub starts it.

use std::sync::Arc;

use bytes::Bytes;

use super::error::BackendError;
use super::future::BoxFuture;
use super::history::{HistoryPage, HistoryQuery};
use super::inbound::{Channel, Inbox};
use super::leases::LeaseStore;
use super::presence::{LocalGroups, NodeInfo};
use super::publish::PublishAck;
use super::status::BackendStatus;
use crate::group::GroupName;
use crate::history::HistoryLimits;
use crate::metrics::Metrics;

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

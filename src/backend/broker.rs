//! The broker: the part of a backend that carries broadcasts to the other
//! nodes and keeps the history of the groups that have one.
//!
//! Publishing, subscribing and history are one part rather than three
//! because they share one ordered path: an append to a group's history is
//! published on the group's channel in the same step, in call order with
//! the plain publishes, and a subscription is confirmed by the same
//! connection that then delivers. Which nodes exist (the
//! [`ClusterView`](super::ClusterView)) and who runs a group's worker (the
//! [`LeaseStore`](super::LeaseStore)) are separate parts: they are read and
//! written at other times, by other callers, and a backend may keep them
//! elsewhere (the sharded backend keeps them on shard 0 while its groups
//! are spread over every shard). Centrifuge splits its engine the same way
//! (`Broker`, `PresenceManager`).
//!
//! A broker does not shut itself down: it gives the steps that are its own
//! ([`Broker::flush`], [`Broker::close`]) and
//! [`Backend::shutdown`](super::Backend::shutdown) runs them in order with
//! the other parts' steps.

use std::time::Duration;

use bytes::Bytes;

use super::error::BackendError;
use super::future::BoxFuture;
use super::history::{HistoryPage, HistoryQuery};
use super::inbound::Channel;
use super::publish::PublishAck;
use super::status::BackendStatus;
use crate::group::GroupName;
use crate::history::HistoryLimits;

/// Carries messages between nodes and keeps history. See the module docs.
///
/// What a broker hears it hands to the hub's
/// [`BackendEvents`](super::BackendEvents), which it was given at start in
/// the [`BackendContext`](super::BackendContext).
pub trait Broker: Send + Sync + 'static {
    /// Whether other nodes exist at all. Every broker that talks to a
    /// server says yes; the standalone one says no, which lets the hub skip
    /// encoding envelopes nobody will read.
    fn is_clustered(&self) -> bool {
        true
    }

    /// Sends `payload` on `channel`. Publishes leave in call order.
    fn publish(&self, channel: Channel, payload: Bytes) -> PublishAck;

    /// Appends `payload` to `group`'s history (keeping `limits`) and
    /// publishes it on the group's channel with its position, in one atomic
    /// step, in call order with [`Broker::publish`]. The message reaches
    /// this node's members too through the inbox, positioned like everyone
    /// else's. The ack carries the position.
    fn publish_with_history(
        &self,
        group: &GroupName,
        limits: HistoryLimits,
        payload: Bytes,
    ) -> PublishAck;

    /// Sends an encoded control message (`control.rs`) to every other
    /// node, each of which hands it to its
    /// [`BackendEvents::on_control`](super::BackendEvents::on_control).
    /// Every broker carries it on the cluster channel, which every node
    /// listens to in every mode; a broker that has no other nodes drops it.
    fn send_control(&self, control: Bytes) -> PublishAck {
        if self.is_clustered() {
            self.publish(Channel::Cluster, control)
        } else {
            PublishAck::done()
        }
    }

    /// Reads a page of `group`'s history.
    fn history<'a>(
        &'a self,
        group: &'a GroupName,
        query: HistoryQuery,
    ) -> BoxFuture<'a, Result<HistoryPage, BackendError>>;

    /// The node now has members in `group`: listen to its channel. Returns
    /// at once; [`Broker::subscribed`] waits for the confirmation.
    fn subscribe(&self, group: &GroupName);

    /// The node's last member of `group` left: stop listening (a broker
    /// may wait a little first, in case someone joins again).
    fn unsubscribe(&self, group: &GroupName);

    /// Resolves once the broker is confirmed to listen to `group`'s
    /// channel (after [`Broker::subscribe`]), so that whatever is published
    /// from then on reaches this node. Fails when that cannot be confirmed
    /// in the broker's command timeout.
    fn subscribed<'a>(&'a self, group: &'a GroupName) -> BoxFuture<'a, Result<(), BackendError>>;

    /// Whether the broker works now, connection by connection.
    fn status(&self) -> BackendStatus;

    /// Shutdown, first step: waits until everything published before this
    /// call has left, at most `budget`; false when it did not. A broker
    /// that queues nothing is done at once.
    fn flush(&self, _budget: Duration) -> BoxFuture<'_, bool> {
        Box::pin(async { true })
    }

    /// Shutdown, last step (after the tasks stopped and the node left the
    /// cluster view): closes the connections. Later publishes fail with
    /// [`BackendError::Closed`] and [`Broker::status`] says so.
    fn close(&self) {}
}

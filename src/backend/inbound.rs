//! What travels between nodes and what a backend hands the hub: the
//! channel, the message as read, and its place in its group's history.

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

use super::control::Control;
use crate::group::GroupName;

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

/// What a backend hears, handed to the hub: one method per kind of event,
/// so that each reaches the hub typed (centrifuge's `BrokerEventHandler`).
/// Messages with their positions, and control between nodes (a request
/// to disconnect sessions, a node's answer: `control.rs`); presence events
/// are the method to come.
///
/// No method may block: the hub's implementation only pushes into
/// session queues. Per-channel order is kept because a backend calls it
/// from one task per connection.
pub trait BackendEvents: Send + Sync + 'static {
    /// A message read on `inbound.channel`, in the order it was read.
    fn on_message(&self, inbound: Inbound);

    /// A control message from another node, read on the cluster channel
    /// (never delivered to a session). A handler that only wants messages
    /// (a test, a tool) ignores it.
    fn on_control(&self, control: Control) {
        let _ = control;
    }

    /// The backend listens again after its subscriber connection was lost
    /// (every channel resubscribed): what was published in between was
    /// not heard. History groups find their gaps themselves; this is for
    /// what keeps no history (the join/leave frames a snapshot's holder
    /// relies on).
    fn on_resubscribed(&self) {}
}

/// A closure is a handler of messages (tests, tools).
impl<F: Fn(Inbound) + Send + Sync + 'static> BackendEvents for F {
    fn on_message(&self, inbound: Inbound) {
        self(inbound)
    }
}

/// Where a backend sends what it hears.
pub type Inbox = Arc<dyn BackendEvents>;

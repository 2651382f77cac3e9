//! What travels between nodes and what a backend hands the hub: the
//! channel, the message as read, and its place in its group's history.

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

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

/// Receives every message the backend reads, in the order it read them.
///
/// It must not block: the hub's implementation only pushes into session
/// queues. Per-channel order is kept because a backend calls it from one
/// task per connection.
pub type Inbox = Arc<dyn Fn(Inbound) + Send + Sync>;

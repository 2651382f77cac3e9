//! The standalone bus: one node, no Redis.
//!
//! The hub has already delivered every broadcast to its own sessions, and
//! there is no one else to tell, so publishing is a no-op. The set of
//! "subscriptions" is kept anyway so that `/debug/state` looks the same in
//! both modes.

use std::collections::BTreeSet;

use bytes::Bytes;
use parking_lot::Mutex;

use super::{BoxFuture, Bus, BusStatus, Channel, NodeInfo, PublishAck};
use crate::error::BusError;
use crate::group::GroupName;

/// The in-process bus of a standalone node.
#[derive(Default)]
pub struct LocalBus {
    groups: Mutex<BTreeSet<GroupName>>,
}

impl LocalBus {
    /// A new local bus.
    pub fn new() -> Self {
        LocalBus::default()
    }
}

impl Bus for LocalBus {
    fn is_clustered(&self) -> bool {
        false
    }

    fn publish(&self, _channel: Channel, _payload: Bytes) -> PublishAck {
        PublishAck::done()
    }

    fn subscribe(&self, group: &GroupName) {
        self.groups.lock().insert(group.clone());
    }

    fn unsubscribe(&self, group: &GroupName) {
        self.groups.lock().remove(group);
    }

    fn status(&self) -> BusStatus {
        BusStatus {
            kind: "local",
            connected: true,
            subscriptions: self.groups.lock().iter().map(|g| g.to_string()).collect(),
            last_error: None,
        }
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Option<Vec<NodeInfo>>, BusError>> {
        Box::pin(async { Ok(None) })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

//! The standalone backend: one node, no Redis.
//!
//! The hub has already delivered every broadcast to its own sessions, and
//! there is no one else to tell, so publishing is a no-op, a subscription is
//! confirmed at once, the cluster view is this node alone, and leases live
//! in this process ([`LocalLeases`]). History lives in memory
//! (`memory_history.rs`), with the semantics of the Redis streams: an append
//! is delivered to the members through the inbox, under the same lock, so
//! they see offsets in order. The wanted channels are kept anyway
//! (with the same state machine as every other backend, without a linger)
//! so that `/debug/state` looks the same in every mode.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;

use super::channels::ChannelNames;
use super::leases::{LeaseStore, LocalLeases};
use super::memory_history::MemoryHistory;
use super::subscriptions::Subscriptions;
use crate::backend::error::BackendError;
use crate::backend::future::BoxFuture;
use crate::backend::history::HistoryPage;
use crate::backend::history::HistoryQuery;
use crate::backend::inbound::Channel;
use crate::backend::inbound::Inbound;
use crate::backend::presence::NodeInfo;
use crate::backend::publish::PublishAck;
use crate::backend::publish::Published;
use crate::backend::seam::Backend;
use crate::backend::seam::BackendContext;
use crate::backend::seam::IntoBackend;
use crate::backend::status::BackendStatus;
use crate::group::GroupName;
use crate::history::HistoryLimits;

/// The standalone backend's settings (there are none): the default of
/// [`HubBuilder`](crate::HubBuilder).
#[derive(Debug, Clone, Copy, Default)]
pub struct Standalone;

impl IntoBackend for Standalone {
    fn start(self: Box<Self>, context: BackendContext) -> Result<Arc<dyn Backend>, BackendError> {
        context.metrics.bus_up.set(1);
        Ok(Arc::new(LocalBackend {
            context,
            names: ChannelNames::default(),
            subscriptions: Mutex::new(Subscriptions::new(Duration::ZERO)),
            leases: Arc::new(LocalLeases::default()),
            history: MemoryHistory::default(),
        }))
    }
}

/// The started standalone backend.
struct LocalBackend {
    context: BackendContext,
    names: ChannelNames,
    subscriptions: Mutex<Subscriptions>,
    leases: Arc<LocalLeases>,
    history: MemoryHistory,
}

impl Backend for LocalBackend {
    fn is_clustered(&self) -> bool {
        false
    }

    fn publish(&self, _channel: Channel, _payload: Bytes) -> PublishAck {
        PublishAck::done()
    }

    fn publish_with_history(
        &self,
        group: &GroupName,
        limits: HistoryLimits,
        payload: Bytes,
    ) -> PublishAck {
        let inbox = &self.context.inbox;
        let position = self
            .history
            .append(group, limits, payload, |position, payload| {
                inbox.on_message(Inbound {
                    channel: Channel::Group(group.clone()),
                    payload,
                    position: Some(position),
                })
            });
        let (ack, rx) = tokio::sync::oneshot::channel();
        let _ = ack.send(Ok(Published {
            position: Some(position),
        }));
        PublishAck::pending(rx)
    }

    fn history<'a>(
        &'a self,
        group: &'a GroupName,
        query: HistoryQuery,
    ) -> BoxFuture<'a, Result<HistoryPage, BackendError>> {
        let page = self.history.read(group, query);
        Box::pin(async move { Ok(page) })
    }

    fn subscribe(&self, group: &GroupName) {
        let channel = self.names.group(group);
        self.subscriptions.lock().join(channel, group.clone());
    }

    fn unsubscribe(&self, group: &GroupName) {
        let channel = self.names.group(group);
        self.subscriptions.lock().leave(channel, group.clone());
    }

    fn subscribed<'a>(&'a self, _group: &'a GroupName) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async { Ok(()) })
    }

    fn status(&self) -> BackendStatus {
        let mut subscriptions: Vec<String> = self
            .subscriptions
            .lock()
            .wanted()
            .map(|channel| {
                // Shown by group name, as before: there is no wire here.
                channel
                    .strip_prefix(self.names.group_prefix())
                    .unwrap_or(channel)
                    .to_string()
            })
            .collect();
        subscriptions.sort();
        BackendStatus {
            kind: "local",
            connected: true,
            subscriptions,
            last_error: None,
            connections: Vec::new(),
        }
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeInfo>, BackendError>> {
        let node = self.context.local_node();
        Box::pin(async move { Ok(vec![node]) })
    }

    fn leases(&self) -> Arc<dyn LeaseStore> {
        self.leases.clone()
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

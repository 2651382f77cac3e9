//! The standalone backend: one node, no Redis.
//!
//! The hub has already delivered every broadcast to its own sessions, and
//! there is no one else to tell, so publishing is a no-op and a
//! subscription is confirmed at once (`LocalBroker`), the cluster view is
//! this node alone (`ThisNode`), group presence is this node's registry
//! read live ([`LocalPresence`]), and leases live in this process
//! ([`LocalLeases`]). History lives in memory (`memory_history.rs`), with
//! the semantics of the Redis streams: an append is delivered to the
//! members through the inbox, under the same lock, so they see offsets in
//! order. The wanted channels are kept anyway
//! (with the same state machine as every other backend, without a linger)
//! so that `/debug/state` looks the same in every mode.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;

use super::broker::Broker;
use super::channels::ChannelNames;
use super::cluster_view::ClusterView;
use super::leases::LocalLeases;
use super::local_changes::LocalChanges;
use super::member::{self, Cursor, LocalMembers, Member, MemberPage, PresenceStats, UserCount};
use super::memory_history::MemoryHistory;
use super::presence_store::PresenceStore;
use super::subscriptions::Subscriptions;
use super::transition::PresenceChanges;
use crate::backend::error::BackendError;
use crate::backend::future::BoxFuture;
use crate::backend::history::HistoryPage;
use crate::backend::history::HistoryQuery;
use crate::backend::inbound::{Channel, Inbound, Inbox};
use crate::backend::presence::NodeInfo;
use crate::backend::publish::PublishAck;
use crate::backend::publish::Published;
use crate::backend::seam::{Backend, BackendContext, IntoBackend};
use crate::backend::status::BackendStatus;
use crate::group::GroupName;
use crate::history::HistoryLimits;

/// The standalone backend's settings (there are none): the default of
/// [`HubBuilder`](crate::HubBuilder).
#[derive(Debug, Clone, Copy, Default)]
pub struct Standalone;

impl IntoBackend for Standalone {
    fn start(self: Box<Self>, context: BackendContext) -> Result<Backend, BackendError> {
        context.metrics.bus_up.set(1);
        let broker = LocalBroker {
            inbox: context.inbox.clone(),
            names: ChannelNames::default(),
            subscriptions: Mutex::new(Subscriptions::new(Duration::ZERO)),
            history: MemoryHistory::default(),
        };
        let presence = LocalPresence::new(
            context.members.clone(),
            context.node_id.clone(),
            context.presence_grace,
            context.presence_changes.clone(),
        );
        Ok(Backend::new(
            Arc::new(broker),
            Arc::new(ThisNode(context)),
            Arc::new(LocalLeases::default()),
            Arc::new(presence),
        ))
    }
}

/// The standalone broker: no one to publish to, history in memory.
struct LocalBroker {
    /// Where a history group's appends are delivered.
    inbox: Inbox,
    names: ChannelNames,
    subscriptions: Mutex<Subscriptions>,
    history: MemoryHistory,
}

impl Broker for LocalBroker {
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
        let inbox = &self.inbox;
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
}

/// The standalone cluster view: this node alone, computed live.
struct ThisNode(BackendContext);

impl ClusterView for ThisNode {
    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeInfo>, BackendError>> {
        let node = self.0.local_node();
        Box::pin(async move { Ok(vec![node]) })
    }
}

/// The standalone presence store: this node's members, read live from the
/// registry; nothing to write, nothing expires. Joins and leaves make the
/// group's transitions (`local_changes.rs`).
pub struct LocalPresence {
    members: Arc<dyn LocalMembers>,
    changes: LocalChanges,
}

impl LocalPresence {
    /// The store of `members` on `node`, reporting transitions to `changes` (a
    /// user's leave and a vacancy after `grace`).
    pub fn new(
        members: Arc<dyn LocalMembers>,
        node: String,
        grace: Duration,
        changes: PresenceChanges,
    ) -> Self {
        LocalPresence {
            members,
            changes: LocalChanges::new(node, grace, changes),
        }
    }
}

impl PresenceStore for LocalPresence {
    fn joined(&self, group: &GroupName, id: &crate::session_id::SessionId) {
        let sub = self.members.member(group, id).and_then(|m| m.sub);
        self.changes.joined(group, id, sub);
    }

    fn left(&self, group: &GroupName, id: &crate::session_id::SessionId) {
        self.changes.left(group, id);
    }

    fn members<'a>(
        &'a self,
        group: &'a GroupName,
        cursor: &'a Cursor,
        limit: usize,
    ) -> BoxFuture<'a, Result<MemberPage, BackendError>> {
        // The members the transitions know, at their position: a page
        // consistent with the join/leave frames (see `MemberPage::seq`).
        // Each is in the registry from before its join was reported to
        // after its leave was; one that left since the snapshot is shown
        // with what the transitions know of it.
        let (seq, known) = self.changes.snapshot(group);
        let members = known
            .into_iter()
            .map(|(id, sub)| {
                self.members.member(group, &id).unwrap_or_else(|| Member {
                    id,
                    node: self.changes.node().to_string(),
                    sub,
                    connected_at_ms: 0,
                    keys: Default::default(),
                })
            })
            .collect();
        let mut page = member::page_of(members, cursor, limit);
        page.seq = seq;
        Box::pin(async move { Ok(page) })
    }

    fn users<'a>(
        &'a self,
        group: &'a GroupName,
    ) -> BoxFuture<'a, Result<Vec<UserCount>, BackendError>> {
        let users = member::users_of(&self.members.members(group));
        Box::pin(async move { Ok(users) })
    }

    fn stats<'a>(
        &'a self,
        group: &'a GroupName,
    ) -> BoxFuture<'a, Result<PresenceStats, BackendError>> {
        let stats = member::stats_of(&self.members.members(group));
        Box::pin(async move { Ok(stats) })
    }
}

//! The seam itself: the backend the hub holds, what it is given when the
//! hub starts it, and the one place its parts are shut down in order.
//!
//! A backend is four parts ([`Broker`], [`ClusterView`], [`LeaseStore`],
//! [`PresenceStore`]) that each backend makes of its own pieces, plus the tasks those pieces
//! run. [`Backend`] is a plain struct rather than a fourth trait so that
//! nothing has to restate "publish goes to the link, nodes to the presence,
//! leases to the lease store" once per backend: the hub asks the part it
//! means (`backend.broker().publish(..)`), and [`Backend::shutdown`] is
//! written once, here, for every backend.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::broker::Broker;
use super::cluster_view::ClusterView;
use super::error::BackendError;
use super::inbound::Inbox;
use super::leases::LeaseStore;
use super::member::LocalMembers;
use super::presence::{LocalGroups, NodeInfo};
use super::presence_store::PresenceStore;
use super::tasks::Tasks;
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
    /// This node's groups that keep presence (`Config::presence`), for
    /// the presence store's writes.
    pub presence_groups: LocalGroups,
    /// This node's members of a group, for per-group presence.
    pub members: Arc<dyn LocalMembers>,
    /// Which groups keep history (for what a backend sets up for
    /// publishers outside groupcast, like the Redis Function).
    pub history: crate::history::HistoryPolicy,
    /// How long a user's leave and a group's vacancy wait for a comeback
    /// before they are final (`Config::presence_grace`).
    pub presence_grace: Duration,
    /// Where the presence store reports what its writes changed.
    pub presence_changes: super::transition::PresenceChanges,
}

impl BackendContext {
    /// This node as it is right now, for the cluster view.
    pub fn local_node(&self) -> NodeInfo {
        NodeInfo {
            counters: super::presence::NodeCounters::of(&self.metrics),
            ..NodeInfo::local(&self.node_id, &self.local_groups)
        }
    }
}

/// What a hub is built with ([`HubBuilder::backend`](crate::HubBuilder::backend)):
/// a backend's settings, started once the hub knows its context.
pub trait IntoBackend: Send + 'static {
    /// Checks the settings and starts the backend. A backend that talks to
    /// a server connects in the background and reports its state in its
    /// broker's [`status`](Broker::status); only invalid settings (and a
    /// missing Tokio runtime) fail here.
    fn start(self: Box<Self>, context: BackendContext) -> Result<Backend, BackendError>;
}

/// A backend chosen at run time (the binary's `--redis-mode`).
impl IntoBackend for Box<dyn IntoBackend> {
    fn start(self: Box<Self>, context: BackendContext) -> Result<Backend, BackendError> {
        <dyn IntoBackend as IntoBackend>::start(*self, context)
    }
}

/// A started backend: its four parts and their tasks. See the module docs.
pub struct Backend {
    broker: Arc<dyn Broker>,
    cluster: Arc<dyn ClusterView>,
    leases: Arc<dyn LeaseStore>,
    presence: Arc<dyn PresenceStore>,
    /// What the parts run in the background (none standalone). Dropping
    /// the backend cancels them, shut down or not.
    tasks: Option<Tasks>,
    /// Set by the first `shutdown`; later calls return at once.
    shut_down: AtomicBool,
}

impl Backend {
    /// A backend of these parts, with no background tasks of its own.
    pub fn new(
        broker: Arc<dyn Broker>,
        cluster: Arc<dyn ClusterView>,
        leases: Arc<dyn LeaseStore>,
        presence: Arc<dyn PresenceStore>,
    ) -> Self {
        Backend {
            broker,
            cluster,
            leases,
            presence,
            tasks: None,
            shut_down: AtomicBool::new(false),
        }
    }

    /// The same backend, owning the tasks its parts run: shutdown stops
    /// them, and so does dropping it.
    pub(crate) fn with_tasks(mut self, tasks: Tasks) -> Self {
        self.tasks = Some(tasks);
        self
    }

    /// Publishing, subscribing and history.
    pub fn broker(&self) -> &dyn Broker {
        &*self.broker
    }

    /// The broker, owned: for a read that must outlive its caller's borrow
    /// (a history read merged for several readers).
    pub(crate) fn broker_handle(&self) -> Arc<dyn Broker> {
        self.broker.clone()
    }

    /// Which nodes are alive.
    pub fn cluster(&self) -> &dyn ClusterView {
        &*self.cluster
    }

    /// Who is in each group, cluster-wide.
    pub fn presence(&self) -> &dyn PresenceStore {
        &*self.presence
    }

    /// Where group workers' leases live (a handle the workers keep).
    pub fn leases(&self) -> Arc<dyn LeaseStore> {
        self.leases.clone()
    }

    /// Stops the backend, each part's step in its place:
    ///
    /// 1. the broker sends what is queued ([`Broker::flush`]);
    /// 2. every background task stops — the heartbeat among them, so that
    ///    a late beat cannot write back the entry step 3 removes;
    /// 3. this node leaves the cluster view ([`ClusterView::withdraw`]) and
    ///    its members leave their groups' presence
    ///    ([`PresenceStore::withdraw`]);
    /// 4. the broker closes its connections ([`Broker::close`]): step 3
    ///    still needed them.
    ///
    /// Each step waits at most the backend's command timeout. Calling it
    /// again does nothing.
    pub async fn shutdown(&self) {
        if self.shut_down.swap(true, Ordering::AcqRel) {
            return;
        }
        let budget = self.tasks.as_ref().map_or(Duration::ZERO, Tasks::budget);
        if !self.broker.flush(budget).await {
            tracing::warn!("shutdown: queued publishes did not all leave in time");
        }
        if let Some(tasks) = &self.tasks {
            tasks.stop().await;
        }
        if let Err(error) = self.cluster.withdraw().await {
            tracing::warn!(%error, "shutdown: could not remove this node's presence");
        }
        if let Err(error) = self.presence.withdraw().await {
            tracing::warn!(%error, "shutdown: could not remove this node's group members");
        }
        self.broker.close();
        tracing::info!(mode = self.broker.status().kind, "backend stopped");
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use parking_lot::Mutex;

    use super::*;
    use crate::backend::future::BoxFuture;
    use crate::backend::history::{HistoryPage, HistoryQuery};
    use crate::backend::inbound::Channel;
    use crate::backend::leases::LocalLeases;
    use crate::backend::local::LocalPresence;
    use crate::backend::member::NoMembers;
    use crate::backend::publish::PublishAck;
    use crate::backend::status::BackendStatus;
    use crate::group::GroupName;
    use crate::history::HistoryLimits;

    /// The shutdown steps, in the order the parts were asked for them.
    type Steps = Arc<Mutex<Vec<&'static str>>>;

    /// A broker and a cluster view that only write their shutdown steps
    /// down.
    struct Parts(Steps);

    impl Broker for Parts {
        fn publish(&self, _: Channel, _: Bytes) -> PublishAck {
            PublishAck::done()
        }

        fn publish_with_history(&self, _: &GroupName, _: HistoryLimits, _: Bytes) -> PublishAck {
            PublishAck::done()
        }

        fn history<'a>(
            &'a self,
            _: &'a GroupName,
            _: HistoryQuery,
        ) -> BoxFuture<'a, Result<HistoryPage, BackendError>> {
            Box::pin(async { Ok(HistoryPage::default()) })
        }

        fn subscribe(&self, _: &GroupName) {}

        fn unsubscribe(&self, _: &GroupName) {}

        fn subscribed<'a>(&'a self, _: &'a GroupName) -> BoxFuture<'a, Result<(), BackendError>> {
            Box::pin(async { Ok(()) })
        }

        fn status(&self) -> BackendStatus {
            BackendStatus {
                kind: "test",
                connected: true,
                subscriptions: Vec::new(),
                last_error: None,
                connections: Vec::new(),
            }
        }

        fn flush(&self, _: Duration) -> BoxFuture<'_, bool> {
            self.0.lock().push("flush");
            Box::pin(async { true })
        }

        fn close(&self) {
            self.0.lock().push("close");
        }
    }

    impl ClusterView for Parts {
        fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeInfo>, BackendError>> {
            Box::pin(async { Ok(Vec::new()) })
        }

        fn withdraw(&self) -> BoxFuture<'_, Result<(), BackendError>> {
            self.0.lock().push("withdraw");
            Box::pin(async { Ok(()) })
        }
    }

    /// A backend of [`Parts`] writing to `steps`, with one task that
    /// writes "task stopped" when it is cancelled.
    fn backend(steps: &Steps) -> Backend {
        let mut tasks = Tasks::on_current_runtime(Duration::from_secs(5)).expect("in a runtime");
        let (token, stopped) = (tasks.token(), steps.clone());
        let task = async move {
            token.cancelled().await;
            stopped.lock().push("task stopped");
        };
        tasks.spawn(task, tracing::Span::none());
        Backend::new(
            Arc::new(Parts(steps.clone())),
            Arc::new(Parts(steps.clone())),
            Arc::new(LocalLeases::default()),
            Arc::new(LocalPresence::new(
                Arc::new(NoMembers),
                "test".into(),
                Duration::ZERO,
                crate::backend::ignore_changes(),
            )),
        )
        .with_tasks(tasks)
    }

    #[tokio::test]
    async fn shutdown_runs_each_parts_step_in_order_once() {
        let steps = Steps::default();
        let backend = backend(&steps);
        backend.shutdown().await;
        let order = ["flush", "task stopped", "withdraw", "close"];
        assert_eq!(*steps.lock(), order);
        backend.shutdown().await;
        assert_eq!(*steps.lock(), order, "a second shutdown does nothing");
    }

    #[tokio::test]
    async fn a_backend_dropped_without_shutdown_stops_its_tasks() {
        let steps = Steps::default();
        drop(backend(&steps));
        let stopped = async {
            while steps.lock().is_empty() {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), stopped)
            .await
            .expect("the task was cancelled");
        assert_eq!(*steps.lock(), ["task stopped"], "no shutdown step ran");
    }
}

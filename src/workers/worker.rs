//! The worker as an application writes it ([`Worker`], its
//! [`WorkerContext`] with the hub to broadcast with, the demo [`ticker`]),
//! and the hub's side of the seam: [`Hub::notify`] binds a worker to the
//! hub and hands it to a supervisor, and the hub is the supervisors'
//! [`WorkerHost`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::supervisor::{Job, WorkerHost, WorkerInfo, WorkerResult};
use crate::backend::leases::LeaseHolder;
use crate::backend::presence::now_ms;
use crate::backend::{BoxFuture, NodeInfo};
use crate::error::{BackendError, HubError};
use crate::group::{GroupName, IntoGroupName};
use crate::hub::Hub;

type Factory = Arc<dyn Fn(WorkerContext) -> BoxFuture<'static, WorkerResult> + Send + Sync>;

/// What a running worker is given.
#[derive(Clone)]
pub struct WorkerContext {
    /// The group it works for.
    pub group: GroupName,
    /// The hub, to broadcast with.
    pub hub: Hub,
    /// Cancelled when the worker must stop; a worker should return soon
    /// after. (It is aborted at its next await anyway once the lease is at
    /// risk, so no two nodes ever run it at once.)
    pub stop: CancellationToken,
}

/// A worker definition: how to start one, and for how long it may run.
#[derive(Clone)]
pub struct Worker {
    factory: Factory,
    ttl: Option<Duration>,
}

impl Worker {
    /// A worker started by calling `f` (again after each failure).
    pub fn new<F, Fut>(f: F) -> Self
    where
        F: Fn(WorkerContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = WorkerResult> + Send + 'static,
    {
        Worker {
            factory: Arc::new(move |ctx| Box::pin(f(ctx))),
            ttl: None,
        }
    }

    /// Stops the worker this long after it started, even if the group
    /// still has members (ws-notifier's `timeout`). It starts again only
    /// after the group has emptied and filled again.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
}

/// ws-notifier's demo worker: sends `{"tick":n,"node":..,"at_ms":..}` to
/// the group every `period`.
pub fn ticker(period: Duration) -> Worker {
    Worker::new(move |ctx: WorkerContext| async move {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut tick: u64 = 0;
        loop {
            tokio::select! {
                _ = ctx.stop.cancelled() => return Ok(()),
                _ = interval.tick() => {}
            }
            tick += 1;
            let text =
                serde_json::json!({ "tick": tick, "node": ctx.hub.node_id(), "at_ms": now_ms() })
                    .to_string();
            ctx.hub.to(&ctx.group).send(text)?;
        }
    })
}

impl Hub {
    /// Runs `worker` for `group` while the group has members anywhere in
    /// the cluster, on exactly one node (ws-notifier: `Notify`). Registering
    /// the same group again is a no-op; returns whether this call
    /// registered it. See [`crate::workers`].
    pub fn notify(&self, group: impl IntoGroupName, worker: Worker) -> Result<bool, HubError> {
        let group = group.into_group_name()?;
        if self.is_shutting_down() {
            return Err(HubError::ShuttingDown);
        }
        let hub = self.clone();
        let bound = group.clone();
        let factory = worker.factory;
        let job = Job {
            start: Arc::new(move |stop| {
                factory(WorkerContext {
                    group: bound.clone(),
                    hub: hub.clone(),
                    stop,
                })
            }),
            ttl: worker.ttl,
        };
        Ok(self
            .worker_supervisors()
            .register(Arc::new(self.clone()), group, job))
    }

    /// The workers running on this node.
    pub fn workers(&self) -> Vec<WorkerInfo> {
        self.worker_supervisors().running()
    }

    /// Who holds the worker lease of each group registered here,
    /// cluster-wide.
    pub async fn worker_leases(&self) -> Result<Vec<LeaseHolder>, BackendError> {
        self.worker_supervisors().holders().await
    }
}

impl WorkerHost for Hub {
    fn node_id(&self) -> &str {
        Hub::node_id(self)
    }

    fn member_count(&self, group: &GroupName) -> usize {
        Hub::member_count(self, group)
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeInfo>, BackendError>> {
        Box::pin(Hub::nodes(self))
    }

    fn shutdown_token(&self) -> CancellationToken {
        Hub::shutdown_token(self)
    }
}

//! The supervisors: one task per registered group on every node, racing
//! for the group's lease and running its worker while the group has
//! members anywhere (see the module docs of `workers`). Below the hub in
//! the layers: what it needs of its node is [`WorkerHost`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::backend::leases::{LeaseHolder, LeaseStore, LeaseToken};
use crate::backend::presence::{group_totals, now_ms};
use crate::backend::{BoxFuture, NodeInfo};
use crate::backoff::Backoff;
use crate::error::BackendError;
use crate::group::GroupName;
use crate::metrics::Metrics;

/// What a worker returns: an error is logged, counted, and the worker is
/// restarted after a backoff.
pub type WorkerResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// What a supervisor starts: a worker already bound to its hub and group,
/// given only the token that stops it (see `workers/worker.rs`).
pub(crate) type Start =
    Arc<dyn Fn(CancellationToken) -> BoxFuture<'static, WorkerResult> + Send + Sync>;

/// A worker as its supervisor runs it: how to start it, and for how long
/// it may run.
pub(crate) struct Job {
    pub start: Start,
    pub ttl: Option<Duration>,
}

/// What a supervisor needs of its node. The hub implements it
/// (`workers/worker.rs`); the supervisors never see the hub itself, which
/// keeps this file below it in the layers.
pub(crate) trait WorkerHost: Send + Sync + 'static {
    /// This node's id (the lease's holder).
    fn node_id(&self) -> &str;
    /// This node's members of `group`.
    fn member_count(&self, group: &GroupName) -> usize;
    /// Every live node, for members elsewhere.
    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeInfo>, BackendError>>;
    /// Cancelled at shutdown.
    fn shutdown_token(&self) -> CancellationToken;
}

/// Timing of leases and workers.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// How long a lease lives without renewal. A dead holder is replaced
    /// within this plus one poll (a third of it).
    pub lease_ttl: Duration,
    /// How long a group must be empty cluster-wide before its worker stops.
    pub linger: Duration,
    /// First delay before restarting a failed worker.
    pub backoff_min: Duration,
    /// Largest delay before restarting a failed worker.
    pub backoff_max: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            lease_ttl: Duration::from_secs(6),
            linger: Duration::from_secs(5),
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
        }
    }
}

/// A worker this node runs, as `/debug/state` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WorkerInfo {
    /// The group.
    pub group: GroupName,
    /// This node.
    pub node: String,
    /// `running`, `backoff` (restarting after a failure), `expired` (its
    /// time-to-live ended) or `finished` (it returned by itself).
    pub state: &'static str,
    /// When this node took the lease (Unix milliseconds).
    pub since_ms: u64,
    /// Restarts after failures since the lease was taken.
    pub restarts: u32,
}

/// Every node's supervisors, and the leases they compete for.
pub(crate) struct Workers {
    leases: Arc<dyn LeaseStore>,
    options: WorkerOptions,
    metrics: Arc<Metrics>,
    registered: Mutex<HashMap<GroupName, Arc<Notify>>>,
    running: Arc<Mutex<HashMap<GroupName, WorkerInfo>>>,
    view: Arc<ClusterView>,
}

/// The cluster view as the supervisors see it: read at most once per half
/// poll for all of them together, rather than once per group per poll.
/// (Its data is only as fresh as the nodes' heartbeats anyway.)
struct ClusterView {
    max_age: Duration,
    last: tokio::sync::Mutex<Option<(Instant, Arc<Vec<NodeInfo>>)>>,
}

impl ClusterView {
    /// The nodes, from a read younger than `max_age` when there is one.
    /// One caller reads while the others wait for its answer.
    async fn nodes(&self, host: &dyn WorkerHost) -> Result<Arc<Vec<NodeInfo>>, BackendError> {
        let mut last = self.last.lock().await;
        if let Some((at, nodes)) = last.as_ref()
            && at.elapsed() < self.max_age
        {
            return Ok(nodes.clone());
        }
        let nodes = Arc::new(host.nodes().await?);
        *last = Some((Instant::now(), nodes.clone()));
        Ok(nodes)
    }
}

impl Workers {
    pub(crate) fn new(
        leases: Arc<dyn LeaseStore>,
        options: WorkerOptions,
        metrics: Arc<Metrics>,
    ) -> Self {
        let view = Arc::new(ClusterView {
            max_age: options.lease_ttl / 6,
            last: tokio::sync::Mutex::new(None),
        });
        Workers {
            leases,
            options,
            metrics,
            registered: Mutex::new(HashMap::new()),
            running: Arc::new(Mutex::new(HashMap::new())),
            view,
        }
    }

    /// Starts supervising `group` (once; later calls are no-ops).
    pub(crate) fn register(&self, host: Arc<dyn WorkerHost>, group: GroupName, job: Job) -> bool {
        let wake = {
            let mut registered = self.registered.lock();
            if registered.contains_key(&group) {
                return false;
            }
            let wake = Arc::new(Notify::new());
            registered.insert(group.clone(), wake.clone());
            wake
        };
        let supervisor = Supervisor {
            host,
            group,
            job,
            leases: self.leases.clone(),
            options: self.options.clone(),
            metrics: self.metrics.clone(),
            running: self.running.clone(),
            view: self.view.clone(),
            wake,
        };
        tokio::spawn(supervisor.run());
        true
    }

    /// A member joined `group` locally: let its supervisor act now.
    pub(crate) fn wake(&self, group: &GroupName) {
        if let Some(wake) = self.registered.lock().get(group) {
            wake.notify_one();
        }
    }

    pub(crate) fn running(&self) -> Vec<WorkerInfo> {
        let mut list: Vec<_> = self.running.lock().values().cloned().collect();
        list.sort_by(|a, b| a.group.cmp(&b.group));
        list
    }

    /// Who holds the lease of each group registered here.
    pub(crate) async fn holders(&self) -> Result<Vec<LeaseHolder>, BackendError> {
        let groups: Vec<GroupName> = self.registered.lock().keys().cloned().collect();
        self.leases.holders(&groups).await
    }
}

/// The lease this node holds for a group, and its worker.
struct Held {
    token: LeaseToken,
    /// When the last successful acquire/renew was *sent*: Redis keeps the
    /// lease at least until `renewed_at + ttl`.
    renewed_at: Instant,
    since_ms: u64,
    task: Option<(JoinHandle<WorkerResult>, CancellationToken)>,
    started_at: Instant,
    restarts: u32,
    restart_at: Option<Instant>,
    state: &'static str,
}

struct Supervisor {
    host: Arc<dyn WorkerHost>,
    group: GroupName,
    job: Job,
    leases: Arc<dyn LeaseStore>,
    options: WorkerOptions,
    metrics: Arc<Metrics>,
    running: Arc<Mutex<HashMap<GroupName, WorkerInfo>>>,
    view: Arc<ClusterView>,
    wake: Arc<Notify>,
}

impl Supervisor {
    async fn run(self) {
        let shutdown = self.host.shutdown_token();
        let ttl = self.options.lease_ttl;
        let poll = ttl / 3;
        // Stop a quarter TTL before Redis could hand the lease to another.
        let margin = ttl / 4;
        let mut held: Option<Held> = None;
        let mut last_wanted: Option<Instant> = None;

        loop {
            let fence_at = held.as_ref().map(|h| h.renewed_at + ttl - margin);
            let restart_at = held.as_ref().and_then(|h| h.restart_at);
            let next = [Some(Instant::now() + poll), fence_at, restart_at]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or_else(|| Instant::now() + poll);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep_until(next.into()) => {}
            }

            let now = Instant::now();
            // Fence first: never run past the safe deadline.
            if held
                .as_ref()
                .is_some_and(|h| now >= h.renewed_at + ttl - margin)
            {
                tracing::warn!(group = %self.group, "lease not renewed in time: stopping the worker");
                self.metrics.worker_leases_lost.inc();
                self.drop_lease(&mut held, false).await;
                continue;
            }

            let local = self.host.member_count(&self.group);
            let wanted_now = local > 0 || (held.is_some() && self.cluster_members().await > 0);
            if wanted_now {
                last_wanted = Some(now);
            }
            let wanted = last_wanted.is_some_and(|t| now.duration_since(t) < self.options.linger);

            match held.as_mut() {
                None => {
                    // Only nodes with members compete: no members, no worker.
                    if local > 0 {
                        held = self.try_acquire().await;
                    }
                }
                Some(h) => {
                    if !wanted {
                        tracing::info!(group = %self.group, "group empty cluster-wide: stopping its worker");
                        self.drop_lease(&mut held, true).await;
                        continue;
                    }
                    let sent = Instant::now();
                    let budget = (h.renewed_at + ttl - margin)
                        .saturating_duration_since(sent)
                        .min(poll);
                    match tokio::time::timeout(
                        budget,
                        self.leases.renew(&self.group, &h.token, ttl),
                    )
                    .await
                    {
                        Ok(Ok(true)) => h.renewed_at = sent,
                        Ok(Ok(false)) => {
                            tracing::warn!(group = %self.group, "lease lost to another node: stopping the worker");
                            self.metrics.worker_leases_lost.inc();
                            self.drop_lease(&mut held, false).await;
                            continue;
                        }
                        Ok(Err(error)) => {
                            tracing::warn!(group = %self.group, %error, "lease renewal failed; retrying")
                        }
                        Err(_) => {
                            tracing::warn!(group = %self.group, "lease renewal timed out; retrying")
                        }
                    }
                }
            }
            if let Some(h) = held.as_mut() {
                self.tend(h).await;
            }
        }
        self.drop_lease(&mut held, true).await;
    }

    /// Members of the group across the cluster.
    async fn cluster_members(&self) -> usize {
        match self.view.nodes(&*self.host).await {
            Ok(nodes) => group_totals(&nodes)
                .get(self.group.as_str())
                .map_or(0, |total| total.members),
            // Cannot tell: assume members remain rather than flap.
            Err(_) => 1,
        }
    }

    async fn try_acquire(&self) -> Option<Held> {
        let since_ms = now_ms();
        let token = LeaseToken::new(self.host.node_id(), since_ms);
        let sent = Instant::now();
        match self
            .leases
            .acquire(&self.group, &token, self.options.lease_ttl)
            .await
        {
            Ok(true) => {
                tracing::info!(group = %self.group, "took the worker lease");
                Some(Held {
                    token,
                    renewed_at: sent,
                    since_ms,
                    task: None,
                    started_at: Instant::now(),
                    restarts: 0,
                    restart_at: Some(Instant::now()),
                    state: "starting",
                })
            }
            Ok(false) => None,
            Err(error) => {
                tracing::warn!(group = %self.group, %error, "cannot reach the lease store");
                None
            }
        }
    }

    /// Starts, restarts, or retires the worker of a held lease.
    async fn tend(&self, h: &mut Held) {
        let now = Instant::now();
        // A finished task: success ends it, failure schedules a restart.
        if h.task.as_ref().is_some_and(|(task, _)| task.is_finished())
            && let Some((task, _)) = h.task.take()
        {
            {
                let outcome = match task.await {
                    Ok(Ok(())) => None,
                    Ok(Err(error)) => Some(error.to_string()),
                    Err(join) if join.is_panic() => Some("the worker panicked".to_string()),
                    Err(join) => Some(join.to_string()),
                };
                match outcome {
                    None => h.state = "finished",
                    Some(error) => {
                        self.metrics.worker_failures.inc();
                        let backoff =
                            Backoff::new(self.options.backoff_min, self.options.backoff_max)
                                .delay_after(h.restarts);
                        tracing::error!(group = %self.group, %error, ?backoff, "worker failed; restarting after backoff");
                        h.restarts += 1;
                        h.restart_at = Some(now + backoff);
                        h.state = "backoff";
                    }
                }
            }
        }
        if let Some(ttl) = self.job.ttl
            && now.duration_since(h.started_at) >= ttl
            && h.state != "expired"
        {
            tracing::info!(group = %self.group, "worker time-to-live ended");
            stop(h.task.take());
            h.restart_at = None;
            h.state = "expired";
        }
        if h.restart_at.is_some_and(|at| now >= at) && h.task.is_none() {
            h.restart_at = None;
            let stop = CancellationToken::new();
            h.task = Some((tokio::spawn((self.job.start)(stop.clone())), stop));
            h.state = "running";
            self.metrics.worker_starts.inc();
            tracing::info!(group = %self.group, restarts = h.restarts, "worker started");
        }
        self.running.lock().insert(
            self.group.clone(),
            WorkerInfo {
                group: self.group.clone(),
                node: self.host.node_id().to_string(),
                state: h.state,
                since_ms: h.since_ms,
                restarts: h.restarts,
            },
        );
    }

    /// Stops the worker at once and forgets the lease (releasing it in the
    /// store when we may still hold it).
    async fn drop_lease(&self, held: &mut Option<Held>, release: bool) {
        let Some(mut h) = held.take() else { return };
        stop(h.task.take());
        self.running.lock().remove(&self.group);
        if release && let Err(error) = self.leases.release(&self.group, &h.token).await {
            tracing::warn!(group = %self.group, %error, "could not release the lease; it will expire");
        }
    }
}

/// Cancels a worker and aborts it at its next await.
fn stop(task: Option<(JoinHandle<WorkerResult>, CancellationToken)>) {
    if let Some((task, token)) = task {
        token.cancel();
        task.abort();
    }
}

//! The single-Redis backend: how the nodes of a cluster hear each other
//! through one Redis server.
//!
//! Every node holds only its own sessions. For each group that has at least
//! one local member, the node SUBSCRIBEs to the group's channel
//! (`group:<name>`); it is also always subscribed to one cluster channel,
//! for broadcasts to everyone and to lists of sessions. A broadcast is
//! delivered to local sessions by the hub and PUBLISHed here once; Redis
//! hands it to every node that listens, and their inboxes fan it out.
//!
//! One file per job, each task owning its state so that nothing takes a
//! lock across an await:
//!
//! | file | job |
//! | --- | --- |
//! | `options.rs` | the settings and their defaults, checked once |
//! | `subscriber.rs` | the subscriber connection: wanted set, reconnect and resubscribe, health pings |
//! | `publisher.rs` | the ordered publisher: pipelines of PUBLISH in call order |
//! | `presence.rs` | heartbeats and the cluster view (a hash and a sorted set, no SCAN) |
//! | `leases.rs` | worker leases (`SET NX PX`, fenced scripts) |
//! | `history.rs` | a stream per history group, appended and published by one script |
//! | `function.rs` | `FCALL groupcast_publish`: the same append for publishers outside groupcast |
//! | `pool.rs` | the one pool publishing, presence and leases share |
//! | `target.rs` | which server a link talks to: fixed, or the primary Sentinel names |
//! | `link.rs` | one server's subscriber, publisher and pool together (the sharded backend has one per shard) |
//! | `errors.rs` | Redis errors as [`BackendError`]s |

pub(crate) mod errors;
pub mod function;
pub(crate) mod history;
pub(crate) mod inbound;
mod leases;
pub(crate) mod link;
pub(crate) mod link_state;
pub(crate) mod options;
pub(crate) mod pool;
mod presence;
pub(crate) mod publisher;
pub(crate) mod subscriber;
pub(crate) mod target;

pub use self::options::RedisOptions;

pub(crate) use self::errors::command_error;
pub(crate) use self::leases::RedisLeases;
pub(crate) use self::link::{LinkStart, RedisLink};
pub(crate) use self::options::redact;
pub(crate) use self::presence::Presence;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::channels::ChannelNames;
use super::leases::LeaseStore;
use crate::backend::error::BackendError;
use crate::backend::future::BoxFuture;
use crate::backend::history::HistoryPage;
use crate::backend::history::HistoryQuery;
use crate::backend::inbound::Channel;
use crate::backend::presence::NodeInfo;
use crate::backend::publish::PublishAck;
use crate::backend::seam::Backend;
use crate::backend::seam::BackendContext;
use crate::backend::seam::IntoBackend;
use crate::backend::status::BackendStatus;
use crate::group::GroupName;
use crate::history::HistoryLimits;

impl IntoBackend for RedisOptions {
    /// Validates the options and starts the backend's tasks. Returns at
    /// once: the connection to Redis is made in the background, and
    /// [`status`](Backend::status) says `connected: false` until it is.
    ///
    /// Must be called inside a Tokio runtime.
    fn start(self: Box<Self>, context: BackendContext) -> Result<Arc<dyn Backend>, BackendError> {
        Ok(Arc::new(RedisBackend::start(*self, context)?))
    }
}

/// A backend on one Redis server at a time: the single-Redis backend, and
/// the Sentinel backend (the same on a link whose server the Sentinels
/// name; `backend/sentinel/`). See the module docs.
pub struct RedisBackend {
    /// `"redis"` or `"sentinel"`, for `status()`.
    kind: &'static str,
    /// The link's role in `status().connections`: `redis`, `primary`.
    role: &'static str,
    options: RedisOptions,
    names: ChannelNames,
    link: RedisLink,
    presence: Arc<Presence>,
    leases: Arc<RedisLeases>,
    /// Stops every task: on shutdown, and when the backend is dropped.
    cancel: CancellationToken,
    /// Set by the first `shutdown`; later calls return at once.
    shut_down: AtomicBool,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl RedisBackend {
    /// Validates `options` and starts the backend's tasks (see
    /// [`IntoBackend::start`]).
    pub fn start(options: RedisOptions, context: BackendContext) -> Result<Self, BackendError> {
        let names = options.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BackendError::NoRuntime)?;
        let cancel = CancellationToken::new();
        let wake_presence = Arc::new(Notify::new());
        let span = tracing::info_span!("redis_backend", node = %context.node_id);
        let mut tasks = Vec::new();
        let link = RedisLink::start(
            LinkStart {
                options: &options,
                names: &names,
                context: &context,
                listen_cluster: true,
                wake_presence: wake_presence.clone(),
                cancel: &cancel,
                span: span.clone(),
                mode: "redis",
                role: "redis".into(),
            },
            &mut tasks,
        )?;
        let presence = Arc::new(
            Presence::new(
                link.pool.clone(),
                context.clone(),
                &options.presence_key,
                options.presence_ttl,
            )
            .with_function(function::library_for(&context.history, &names)),
        );
        let leases = Arc::new(RedisLeases::new(
            link.pool.clone(),
            options.lease_prefix.clone(),
        ));
        tasks.push(
            runtime.spawn(
                presence
                    .clone()
                    .run(options.heartbeat_interval, wake_presence, cancel.clone())
                    .instrument(span),
            ),
        );
        Ok(RedisBackend::assemble(
            ("redis", "redis"),
            options,
            names,
            (link, presence, leases),
            cancel,
            tasks,
        ))
    }

    /// A backend of started parts: a link, the presence and the leases on
    /// its pool, the token that stops `tasks`.
    pub(crate) fn assemble(
        (kind, role): (&'static str, &'static str),
        options: RedisOptions,
        names: ChannelNames,
        (link, presence, leases): (RedisLink, Arc<Presence>, Arc<RedisLeases>),
        cancel: CancellationToken,
        tasks: Vec<JoinHandle<()>>,
    ) -> Self {
        RedisBackend {
            kind,
            role,
            options,
            names,
            link,
            presence,
            leases,
            cancel,
            shut_down: AtomicBool::new(false),
            tasks: Mutex::new(tasks),
        }
    }
}

impl Backend for RedisBackend {
    fn is_clustered(&self) -> bool {
        true
    }

    fn publish(&self, channel: Channel, payload: Bytes) -> PublishAck {
        self.link.publish(channel, payload)
    }

    fn publish_with_history(
        &self,
        group: &GroupName,
        limits: HistoryLimits,
        payload: Bytes,
    ) -> PublishAck {
        self.link.publish_with_history(group, limits, payload)
    }

    fn history<'a>(
        &'a self,
        group: &'a GroupName,
        query: HistoryQuery,
    ) -> BoxFuture<'a, Result<HistoryPage, BackendError>> {
        Box::pin(self.link.history.read(group, query))
    }

    fn subscribe(&self, group: &GroupName) {
        self.link.subscribe(group);
    }

    fn unsubscribe(&self, group: &GroupName) {
        self.link.unsubscribe(group);
    }

    fn subscribed<'a>(&'a self, group: &'a GroupName) -> BoxFuture<'a, Result<(), BackendError>> {
        let channel = self.names.group(group);
        Box::pin(async move {
            self.link
                .state
                .confirmed(&channel, self.options.command_timeout)
                .await
        })
    }

    fn status(&self) -> BackendStatus {
        let link = self.link.state.snapshot();
        BackendStatus {
            kind: self.kind,
            connected: link.connected,
            connections: vec![self.link.connection_status(self.role, &link)],
            subscriptions: link.subscribed,
            last_error: link.last_error,
        }
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeInfo>, BackendError>> {
        Box::pin(self.presence.nodes())
    }

    fn leases(&self) -> Arc<dyn LeaseStore> {
        self.leases.clone()
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if self.shut_down.swap(true, Ordering::AcqRel) {
                return;
            }
            let budget = self.options.command_timeout;
            // 1. Everything published before shutdown leaves, in order.
            if !self.link.flush(budget).await {
                tracing::warn!("shutdown: queued publishes did not all leave in time");
            }
            // 2. Stop the tasks (the heartbeat first of all: a late beat
            //    must not re-create the entry removed below).
            self.cancel.cancel();
            let tasks = std::mem::take(&mut *self.tasks.lock());
            let _ = timeout(budget, futures_util::future::join_all(tasks)).await;
            // 3. Leave the cluster view at once rather than after the TTL.
            if let Err(error) = self.presence.withdraw().await {
                tracing::warn!(%error, "shutdown: could not remove this node's presence");
            }
            self.link.pool.close();
            self.link.state.set_broken(&BackendError::Closed);
            tracing::info!(mode = self.kind, "Redis backend stopped");
        })
    }
}

impl Drop for RedisBackend {
    /// Dropped without `shutdown` (or after it): stop the tasks. The
    /// presence entry is left for the readers to prune, as if the node had
    /// died.
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

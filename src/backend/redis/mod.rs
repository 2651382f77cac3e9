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
//! | `history.rs` | a stream per history group, appended and published by one script |
//! | `function.rs` | `FCALL groupcast_publish`: the same append for publishers outside groupcast |
//! | `leases.rs` | worker leases (`SET NX PX`, fenced scripts) |
//! | `pool.rs` | the one pool publishing, presence and leases share |
//! | `errors.rs` | Redis errors as [`BackendError`]s |

mod errors;
pub mod function;
mod history;
mod leases;
mod options;
mod pool;
mod presence;
mod publisher;
mod subscriber;

pub use self::options::RedisOptions;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use self::history::RedisHistory;
use self::leases::RedisLeases;
use self::options::redact;
use self::pool::RedisPool;
use self::presence::Presence;
use self::publisher::{Outgoing, Publisher};
use self::subscriber::{Command, LinkState, Subscriber, SubscriberSettings};
use super::channels::ChannelNames;
use super::leases::LeaseStore;
use super::subscriptions::Subscriptions;
use super::{
    Backend, BackendContext, BackendStatus, BoxFuture, Channel, HistoryPage, HistoryQuery,
    IntoBackend, NodeInfo, PublishAck, Published,
};
use crate::backoff::Backoff;
use crate::error::BackendError;
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

/// The started single-Redis backend. See the module docs.
pub struct RedisBackend {
    options: RedisOptions,
    names: ChannelNames,
    state: Arc<LinkState>,
    commands: mpsc::UnboundedSender<Command>,
    publishes: mpsc::Sender<Outgoing>,
    presence: Arc<Presence>,
    leases: Arc<RedisLeases>,
    history: Arc<RedisHistory>,
    pool: RedisPool,
    /// Whether a full publish queue was logged (log once per episode).
    queue_full_logged: AtomicBool,
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
        if options.is_tls() {
            // TLS: rustls needs a process-wide crypto provider. Ours is
            // ring; if the application installed one already, keep it.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = redis::Client::open(options.url.as_str())
            .map_err(|e| BackendError::InvalidUrl(format!("{}: {e}", redact(&options.url))))?;
        let address = client.get_connection_info().addr().to_string();
        let pool = RedisPool::new(&client, &options)?;

        let state = Arc::new(LinkState::new(context.metrics.clone()));
        let cancel = CancellationToken::new();
        let (connects, _) = watch::channel(0u64);
        let presence = Arc::new(Presence::new(
            pool.clone(),
            context.clone(),
            &options.presence_key,
            options.presence_ttl,
        ));
        let leases = Arc::new(RedisLeases::new(pool.clone(), options.lease_prefix.clone()));
        let history = Arc::new(RedisHistory::new(pool.clone(), names.clone()));

        let (commands, commands_rx) = mpsc::unbounded_channel();
        let (publishes, publishes_rx) = mpsc::channel(options.publish_queue_len);
        let subscriber = Subscriber {
            settings: SubscriberSettings {
                client,
                address,
                names: names.clone(),
                command_timeout: options.command_timeout,
                health_interval: options.health_interval,
                backoff: Backoff::new(options.backoff_min, options.backoff_max),
            },
            inbox: context.inbox.clone(),
            state: state.clone(),
            commands: commands_rx,
            cancel: cancel.clone(),
            connects: connects.clone(),
            wanted: Subscriptions::new(options.unsubscribe_linger),
            last_epoch: None,
        };
        let publisher = Publisher {
            pool: pool.clone(),
            queue: publishes_rx,
            names: names.clone(),
            history: history.clone(),
            metrics: context.metrics.clone(),
            failed_in_a_row: 0,
        };
        let span = tracing::info_span!("redis_backend", node = %context.node_id);
        let mut tasks = vec![
            runtime.spawn(subscriber.run().instrument(span.clone())),
            runtime.spawn(publisher.run(cancel.clone()).instrument(span.clone())),
            runtime.spawn(
                presence
                    .clone()
                    .run(
                        options.heartbeat_interval,
                        connects.subscribe(),
                        cancel.clone(),
                    )
                    .instrument(span.clone()),
            ),
        ];
        if !context.history.is_empty() {
            let library = function::library(&context.history, &names);
            tasks.push(
                runtime.spawn(
                    load_function_on_connect(
                        pool.clone(),
                        library,
                        connects.subscribe(),
                        cancel.clone(),
                    )
                    .instrument(span),
                ),
            );
        }
        Ok(RedisBackend {
            options,
            names,
            state,
            commands,
            publishes,
            presence,
            leases,
            history,
            pool,
            queue_full_logged: AtomicBool::new(false),
            cancel,
            shut_down: AtomicBool::new(false),
            tasks: Mutex::new(tasks),
        })
    }
}

impl Backend for RedisBackend {
    fn is_clustered(&self) -> bool {
        true
    }

    fn publish(&self, channel: Channel, payload: Bytes) -> PublishAck {
        self.enqueue(|ack| Outgoing::Publish {
            channel,
            payload,
            ack,
        })
    }

    fn publish_with_history(
        &self,
        group: &GroupName,
        limits: HistoryLimits,
        payload: Bytes,
    ) -> PublishAck {
        self.enqueue(|ack| Outgoing::History {
            group: group.clone(),
            limits,
            payload,
            ack,
        })
    }

    fn history<'a>(
        &'a self,
        group: &'a GroupName,
        query: HistoryQuery,
    ) -> BoxFuture<'a, Result<HistoryPage, BackendError>> {
        Box::pin(self.history.read(group, query))
    }

    fn subscribe(&self, group: &GroupName) {
        // Fails only once the subscriber has stopped (shutdown): nothing to do.
        let _ = self.commands.send(Command::Subscribe(group.clone()));
    }

    fn unsubscribe(&self, group: &GroupName) {
        let _ = self.commands.send(Command::Unsubscribe(group.clone()));
    }

    fn subscribed<'a>(&'a self, group: &'a GroupName) -> BoxFuture<'a, Result<(), BackendError>> {
        let channel = self.names.group(group);
        Box::pin(async move {
            self.state
                .confirmed(&channel, self.options.command_timeout)
                .await
        })
    }

    fn status(&self) -> BackendStatus {
        let link = self.state.snapshot();
        BackendStatus {
            kind: "redis",
            connected: link.connected,
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
            let (done, flushed) = oneshot::channel();
            let flush = async {
                if self.publishes.send(Outgoing::Flush(done)).await.is_ok() {
                    let _ = flushed.await;
                }
            };
            if timeout(budget, flush).await.is_err() {
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
            self.pool.close();
            self.state.set_broken(&BackendError::Closed);
            tracing::info!("Redis backend stopped");
        })
    }
}

impl RedisBackend {
    /// Puts one job on the publisher's queue without waiting; a full or
    /// closed queue fails the job through its own ack.
    fn enqueue(
        &self,
        job: impl FnOnce(oneshot::Sender<Result<Published, BackendError>>) -> Outgoing,
    ) -> PublishAck {
        let (ack, rx) = oneshot::channel();
        let item = job(ack);
        let (item, error) = match self.publishes.try_send(item) {
            Ok(()) => {
                self.queue_full_logged.store(false, Ordering::Relaxed);
                return PublishAck::pending(rx);
            }
            Err(mpsc::error::TrySendError::Full(item)) => {
                if !self.queue_full_logged.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        capacity = self.options.publish_queue_len,
                        "the Redis publish queue is full; publishes reach this node only"
                    );
                }
                (
                    item,
                    BackendError::QueueFull(self.options.publish_queue_len),
                )
            }
            Err(mpsc::error::TrySendError::Closed(item)) => (item, BackendError::Closed),
        };
        // It never reached the queue: fail it through its own ack.
        self.state.metrics().bus_publish_errors.inc();
        if let Outgoing::Publish { ack, .. } | Outgoing::History { ack, .. } = item {
            let _ = ack.send(Err(error));
        }
        PublishAck::pending(rx)
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

/// Loads the Redis Function on every (re)connect: a Redis that restarted
/// without persistence forgot it. Failures are logged, not fatal: only
/// publishers outside groupcast need it.
async fn load_function_on_connect(
    pool: RedisPool,
    library: String,
    mut connects: watch::Receiver<u64>,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = connects.changed() => if changed.is_err() { return },
        }
        match function::load(&pool, &library).await {
            Ok(()) => tracing::debug!("loaded the Redis Function {}", function::FUNCTION_NAME),
            Err(error) => tracing::warn!(
                %error,
                "cannot load the Redis Function {} (FCALL publishing with history); needs Redis 7 and FUNCTION LOAD rights",
                function::FUNCTION_NAME
            ),
        }
    }
}

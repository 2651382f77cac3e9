//! A link: one Redis deployment as a node uses it — its subscriber, its
//! ordered publisher, its pool and its history — and the [`Broker`] of
//! every Redis backend.
//!
//! The single-Redis and the Sentinel backend have one link to one server;
//! the sharded backend has one per shard and routes each group to its
//! shard's (`backend/sharded/`); the Redis Cluster backend has one link
//! whose subscriber keeps a connection per primary and whose pool routes
//! by slot (`backend/cluster/`). What differs between them is given to
//! [`RedisLink::start`] — the pool, the subscriber task, how `status()`
//! lists the connections — and everything else is made here, once: the
//! state, the publish queue and its publisher, the history scripts, and
//! the broker's methods on top of them. Nothing here knows which backend
//! it serves.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};

use super::connections::Connections;
use super::history::RedisHistory;
use super::link_state::LinkState;
use super::listener::{Listener, SubscriptionCommand};
use super::options::{RedisOptions, prepare_tls, redact};
use super::pool::RedisPool;
use super::publisher::{PublishQueue, Publisher};
use super::subscriber::{Subscriber, SubscriberSettings};
use super::target::{CurrentServer, Server};
use crate::backend::broker::Broker;
use crate::backend::channels::ChannelNames;
use crate::backend::error::BackendError;
use crate::backend::future::BoxFuture;
use crate::backend::history::{HistoryPage, HistoryQuery};
use crate::backend::inbound::Channel;
use crate::backend::publish::PublishAck;
use crate::backend::seam::BackendContext;
use crate::backend::status::BackendStatus;
use crate::backend::subscriptions::Subscriptions;
use crate::backend::tasks::Tasks;
use crate::backoff::Backoff;
use crate::group::GroupName;
use crate::history::HistoryLimits;

/// A link's publishing and subscribing, as the hub's broker. See the
/// module docs.
pub(crate) struct RedisLink {
    /// The backend's mode, `status().kind`.
    kind: &'static str,
    names: ChannelNames,
    /// How long `subscribed()` waits for Redis to confirm.
    command_timeout: Duration,
    state: Arc<LinkState>,
    connections: Connections,
    pool: RedisPool,
    /// History groups' streams, each in its channel's slot.
    history: Arc<RedisHistory>,
    /// To the subscriber task.
    commands: mpsc::UnboundedSender<SubscriptionCommand>,
    /// To the publisher task.
    publishes: PublishQueue,
    /// Notified by the subscriber on every (re)connect, for the presence
    /// on this link's pool: it beats at once (and loads the Function).
    reconnected: Arc<Notify>,
}

/// What a link — and the presence on its pool — is started with.
pub(crate) struct LinkStart<'a> {
    pub(crate) options: &'a RedisOptions,
    pub(crate) names: &'a ChannelNames,
    pub(crate) context: &'a BackendContext,
    /// For the logs: `redis_backend`, `redis_shard`, ...
    pub(crate) span: tracing::Span,
    /// The backend's mode (`redis`, `sharded`, `sentinel`, `cluster`):
    /// `status().kind`, and `mode` in `groupcast_redis_connection_up`.
    pub(crate) mode: &'static str,
    /// This link's `role` (`redis`, `shard 2`, `primary`, `subscriber`)
    /// and `redis` (`host:port`, `primary of mymaster`, the seeds) in
    /// `groupcast_redis_connection_up`.
    pub(crate) role: String,
    pub(crate) label: String,
}

impl RedisLink {
    /// A link to the one server `target` names — fixed, or the primary
    /// Sentinel names, which may change — with one subscriber connection
    /// (`subscriber.rs`), which also hears the cluster channel when
    /// `listen_cluster`.
    pub(crate) fn on_server(
        start: &LinkStart<'_>,
        target: Arc<CurrentServer>,
        listen_cluster: bool,
        tasks: &mut Tasks,
    ) -> Self {
        let options = start.options;
        let settings = SubscriberSettings {
            target: target.clone(),
            command_timeout: options.command_timeout,
            health_interval: options.health_interval,
            backoff: Backoff::new(options.backoff_min, options.backoff_max),
            listen_cluster,
        };
        let pool = RedisPool::for_target(target.clone(), options.command_timeout);
        let connections = Connections::One {
            target,
            role: start.role.clone(),
        };
        let subscriber = |listener| Subscriber { settings, listener }.run();
        RedisLink::start(start, pool, connections, subscriber, tasks)
    }

    /// A link on `pool`, whose subscriber connections `connections` lists:
    /// makes the link's state, its queue and publisher, its history, and
    /// the [`Listener`] that `subscriber` turns into the subscriber task.
    /// Both tasks go to `tasks`.
    ///
    /// On a Redis Cluster pool, publishing is SPUBLISH (sharded pub/sub, a
    /// message travels to its slot's primary only); elsewhere PUBLISH.
    pub(crate) fn start<F, Run>(
        start: &LinkStart<'_>,
        pool: RedisPool,
        connections: Connections,
        subscriber: F,
        tasks: &mut Tasks,
    ) -> Self
    where
        F: FnOnce(Listener) -> Run,
        Run: Future<Output = ()> + Send + 'static,
    {
        let options = start.options;
        let metrics = &start.context.metrics;
        let (publish, queue_target) = if pool.is_cluster() {
            ("SPUBLISH", "the Redis Cluster".to_string())
        } else {
            ("PUBLISH", start.label.clone())
        };
        let state = Arc::new(LinkState::new(
            metrics.clone(),
            vec![
                ("mode".to_string(), start.mode.to_string()),
                ("role".to_string(), start.role.clone()),
                ("redis".to_string(), start.label.clone()),
            ],
        ));
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let reconnected = Arc::new(Notify::new());
        let (publishes, queue) =
            PublishQueue::new(options.publish_queue_len, queue_target, metrics.clone());
        let history = Arc::new(RedisHistory::new(
            pool.clone(),
            start.names.clone(),
            start.context.history.clone(),
            publish,
        ));
        let listener = Listener::new(
            start.names.clone(),
            start.context.inbox.clone(),
            state.clone(),
            commands_rx,
            tasks.token(),
            reconnected.clone(),
            Subscriptions::new(options.unsubscribe_linger),
        );
        let publisher = Publisher {
            pool: pool.clone(),
            queue,
            names: start.names.clone(),
            history: history.clone(),
            command: publish,
            metrics: metrics.clone(),
            failed_in_a_row: 0,
        };
        tasks.spawn(subscriber(listener), start.span.clone());
        tasks.spawn(publisher.run(tasks.token()), start.span.clone());
        RedisLink {
            kind: start.mode,
            names: start.names.clone(),
            command_timeout: options.command_timeout,
            state,
            connections,
            pool,
            history,
            commands,
            publishes,
            reconnected,
        }
    }

    /// The pool publishing uses, for the presence and the leases that live
    /// on the same server(s).
    pub(crate) fn pool(&self) -> RedisPool {
        self.pool.clone()
    }

    /// Notified on every (re)connect of this link's subscriber.
    pub(crate) fn reconnected(&self) -> Arc<Notify> {
        self.reconnected.clone()
    }

    fn command(&self, command: SubscriptionCommand) {
        // Fails only once the subscriber has stopped (shutdown): nothing
        // to do.
        let _ = self.commands.send(command);
    }
}

impl Broker for RedisLink {
    fn publish(&self, channel: Channel, payload: Bytes) -> PublishAck {
        self.publishes.publish(channel, payload)
    }

    fn publish_with_history(
        &self,
        group: &GroupName,
        limits: HistoryLimits,
        payload: Bytes,
    ) -> PublishAck {
        self.publishes.publish_with_history(group, limits, payload)
    }

    fn history<'a>(
        &'a self,
        group: &'a GroupName,
        query: HistoryQuery,
    ) -> BoxFuture<'a, Result<HistoryPage, BackendError>> {
        Box::pin(self.history.read(group, query))
    }

    fn subscribe(&self, group: &GroupName) {
        self.command(SubscriptionCommand::Subscribe(group.clone()));
    }

    fn unsubscribe(&self, group: &GroupName) {
        self.command(SubscriptionCommand::Unsubscribe(group.clone()));
    }

    fn subscribed<'a>(&'a self, group: &'a GroupName) -> BoxFuture<'a, Result<(), BackendError>> {
        let channel = self.names.group(group);
        Box::pin(async move { self.state.confirmed(&channel, self.command_timeout).await })
    }

    fn status(&self) -> BackendStatus {
        self.connections.status(self.kind, self.state.snapshot())
    }

    fn flush(&self, budget: Duration) -> BoxFuture<'_, bool> {
        Box::pin(self.publishes.flush(budget))
    }

    fn close(&self) {
        self.pool.close();
        self.state.set_broken(&BackendError::Closed);
    }
}

/// The one server `options.url` names, for good: the single-Redis
/// backend's, a shard's. Fails on a URL redis-rs cannot read (the password
/// left out of the error).
pub(crate) fn fixed_server(options: &RedisOptions) -> Result<Arc<CurrentServer>, BackendError> {
    prepare_tls([&options.url]);
    let client = redis::Client::open(options.url.as_str())
        .map_err(|e| BackendError::InvalidUrl(format!("{}: {e}", redact(&options.url))))?;
    let address = client.get_connection_info().addr().to_string();
    let pool = RedisPool::build(&client, options)?;
    Ok(Arc::new(CurrentServer::fixed(Server {
        client,
        address,
        pool,
    })))
}

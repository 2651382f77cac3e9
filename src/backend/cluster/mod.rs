//! The Redis Cluster backend: sharded pub/sub (SSUBSCRIBE / SPUBLISH).
//!
//! Classic PUBLISH on a Redis Cluster is copied to every node, so it gets
//! slower with every primary added. Sharded pub/sub sends a message only
//! to the primary that owns its channel's slot (and its replicas), so the
//! cluster's pub/sub capacity grows with its primaries. Here:
//!
//! * **publishing, presence, leases** go through redis-rs's cluster
//!   connection (`RedisPool::cluster`), which routes by slot and follows
//!   MOVED/ASK; the publisher sends SPUBLISH, one pipeline per slot;
//! * **subscribing** is ours ([`subscriber`]): one RESP3 connection per
//!   primary the node needs, each channel subscribed alone on its slot's
//!   primary, our own wanted set reconciled against what the server
//!   pushes — it follows a reshard (the server's unprompted `sunsubscribe`)
//!   and a failover (the connection drops; the slot map names the promoted
//!   replica);
//! * **keys**: every script touches keys of one slot — presence's two keys
//!   share the hash tag `{groupcast:nodes}`, a lease is one key — so the
//!   single-Redis scripts run unchanged.
//!
//! `status().connected` (what `/readyz` answers): the slot map was read
//! and the cluster channel is subscribed. While a primary is down and not
//! yet replaced, the groups in its slots hear nothing (its connection
//! shows `connected: false` in `status().connections` and
//! `groupcast_redis_connection_up`); the others carry on.

mod options;
pub mod slot;
mod subscriber;
pub(crate) mod topology;

pub use self::options::ClusterOptions;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use redis::IntoConnectionInfo;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use self::subscriber::{ClusterSubscriber, ClusterSubscriberSettings, PrimaryConnections};
use super::channels::ChannelNames;
use super::leases::LeaseStore;
use super::redis::history::RedisHistory;
use super::redis::link_state::LinkState;
use super::redis::pool::RedisPool;
use super::redis::publisher::{PublishQueue, Publisher};
use super::redis::subscriber::SubscriptionCommand;
use super::redis::{Presence, RedisLeases, redact};
use super::subscriptions::Subscriptions;
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
use crate::backoff::Backoff;
use crate::group::GroupName;
use crate::history::HistoryLimits;

impl IntoBackend for ClusterOptions {
    /// Validates the options and starts the backend's tasks. Returns at
    /// once; the cluster is discovered in the background.
    fn start(self: Box<Self>, context: BackendContext) -> Result<Arc<dyn Backend>, BackendError> {
        Ok(Arc::new(ClusterBackend::start(*self, context)?))
    }
}

/// The started Redis Cluster backend. See the module docs.
pub struct ClusterBackend {
    options: ClusterOptions,
    names: ChannelNames,
    state: Arc<LinkState>,
    primaries: Arc<PrimaryConnections>,
    commands: mpsc::UnboundedSender<SubscriptionCommand>,
    publishes: PublishQueue,
    pool: RedisPool,
    presence: Arc<Presence>,
    leases: Arc<RedisLeases>,
    /// History groups' streams, each in its channel's slot.
    history: Arc<RedisHistory>,
    cancel: CancellationToken,
    shut_down: AtomicBool,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl ClusterBackend {
    /// Validates `options` and starts the tasks (see [`IntoBackend::start`]).
    pub fn start(options: ClusterOptions, context: BackendContext) -> Result<Self, BackendError> {
        let names = options.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BackendError::NoRuntime)?;
        let redis = &options.redis;
        if options.seeds.iter().any(|s| {
            s.get(..9)
                .is_some_and(|p| p.eq_ignore_ascii_case("rediss://"))
        }) {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let mut seeds = Vec::with_capacity(options.seeds.len());
        for url in &options.seeds {
            let info = url
                .as_str()
                .into_connection_info()
                .map_err(|e| BackendError::InvalidUrl(format!("{}: {e}", redact(url))))?;
            seeds.push(info);
        }
        let seed_addrs: Vec<String> = seeds.iter().map(|i| i.addr().to_string()).collect();
        let cluster_client = redis::cluster::ClusterClientBuilder::new(seeds.clone())
            .connection_timeout(redis.command_timeout)
            .response_timeout(redis.command_timeout)
            .build()
            .map_err(|e| BackendError::InvalidOptions(e.to_string()))?;
        let config = redis::cluster::ClusterConfig::new()
            .set_connection_timeout(redis.command_timeout)
            .set_response_timeout(redis.command_timeout);
        let connection = cluster_client.get_pending_async_connection_with_config(config);
        let pool = RedisPool::cluster(connection, redis.command_timeout);

        let state = Arc::new(LinkState::new(
            context.metrics.clone(),
            vec![
                ("mode".to_string(), "cluster".to_string()),
                ("role".to_string(), "subscriber".to_string()),
                ("redis".to_string(), seed_addrs.join(",")),
            ],
        ));
        let primaries = Arc::new(PrimaryConnections::default());
        let cancel = CancellationToken::new();
        let wake_presence = Arc::new(Notify::new());
        let presence = Arc::new(Presence::new(
            pool.clone(),
            context.clone(),
            &redis.presence_key,
            redis.presence_ttl,
        ));
        let leases = Arc::new(RedisLeases::new(pool.clone(), redis.lease_prefix.clone()));
        // The append SPUBLISHes: a script may publish to its keys' slot.
        let history = Arc::new(RedisHistory::new(
            pool.clone(),
            names.clone(),
            context.history.clone(),
            "SPUBLISH",
        ));
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let (publishes, publishes_rx) = PublishQueue::new(
            redis.publish_queue_len,
            "the Redis Cluster".into(),
            context.metrics.clone(),
        );
        let subscriber = ClusterSubscriber {
            settings: ClusterSubscriberSettings {
                seed: seeds[0].clone(),
                seeds: seed_addrs,
                names: names.clone(),
                command_timeout: redis.command_timeout,
                health_interval: redis.health_interval,
                backoff: Backoff::new(redis.backoff_min, redis.backoff_max),
                client_name: format!("groupcast-sub:{}", context.node_id),
            },
            inbox: context.inbox.clone(),
            state: state.clone(),
            primaries: primaries.clone(),
            commands: commands_rx,
            cancel: cancel.clone(),
            wake_presence: wake_presence.clone(),
            wanted: Subscriptions::new(redis.unsubscribe_linger),
            last_epoch: None,
        };
        let publisher = Publisher {
            pool: pool.clone(),
            queue: publishes_rx,
            names: names.clone(),
            history: history.clone(),
            command: "SPUBLISH",
            metrics: context.metrics.clone(),
            failed_in_a_row: 0,
        };
        let span = tracing::info_span!("redis_cluster", node = %context.node_id);
        let tasks = vec![
            runtime.spawn(subscriber.run().instrument(span.clone())),
            runtime.spawn(publisher.run(cancel.clone()).instrument(span.clone())),
            runtime.spawn(
                presence
                    .clone()
                    .run(redis.heartbeat_interval, wake_presence, cancel.clone())
                    .instrument(span),
            ),
        ];
        Ok(ClusterBackend {
            options,
            names,
            state,
            primaries,
            commands,
            publishes,
            pool,
            presence,
            leases,
            history,
            cancel,
            shut_down: AtomicBool::new(false),
            tasks: Mutex::new(tasks),
        })
    }
}

impl Backend for ClusterBackend {
    fn is_clustered(&self) -> bool {
        true
    }

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
        let _ = self
            .commands
            .send(SubscriptionCommand::Subscribe(group.clone()));
    }

    fn unsubscribe(&self, group: &GroupName) {
        let _ = self
            .commands
            .send(SubscriptionCommand::Unsubscribe(group.clone()));
    }

    fn subscribed<'a>(&'a self, group: &'a GroupName) -> BoxFuture<'a, Result<(), BackendError>> {
        let channel = self.names.group(group);
        Box::pin(async move {
            self.state
                .confirmed(&channel, self.options.redis.command_timeout)
                .await
        })
    }

    fn status(&self) -> BackendStatus {
        let link = self.state.snapshot();
        let connections = self.primaries.snapshot();
        let down: Vec<String> = connections
            .iter()
            .filter(|c| !c.connected)
            .map(|c| format!("primary {} down", c.redis))
            .collect();
        let last_error = link
            .last_error
            .or_else(|| (!down.is_empty()).then(|| down.join("; ")));
        BackendStatus {
            kind: "cluster",
            connected: link.connected,
            subscriptions: link.subscribed,
            last_error,
            connections,
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
            let budget = self.options.redis.command_timeout;
            if !self.publishes.flush(budget).await {
                tracing::warn!("shutdown: queued publishes did not all leave in time");
            }
            self.cancel.cancel();
            let tasks = std::mem::take(&mut *self.tasks.lock());
            let _ = timeout(budget, futures_util::future::join_all(tasks)).await;
            if let Err(error) = self.presence.withdraw().await {
                tracing::warn!(%error, "shutdown: could not remove this node's presence");
            }
            self.pool.close();
            self.state.set_broken(&BackendError::Closed);
            tracing::info!("Redis Cluster backend stopped");
        })
    }
}

impl Drop for ClusterBackend {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

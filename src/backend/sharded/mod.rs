//! The sharded backend: N independent Redis servers, each group on one of
//! them (client-side sharding).
//!
//! One Redis delivers some hundreds of thousands of pub/sub messages a
//! second; past that, groups are spread over N servers that know nothing
//! of each other. Every node computes the same shard for a group
//! ([`hash`]: jump consistent hash of FNV-1a-64 of its name), so a group's
//! publishes and its subscribers meet on one server, and each server
//! carries about 1/N of the traffic.
//!
//! * **Per shard** one [`RedisLink`]: a subscriber connection for the
//!   groups of that shard this node holds, an ordered publisher, a pool.
//!   A group always goes through the same link, so per-publisher order
//!   holds exactly as on one Redis.
//! * **Shard 0** also carries what is not a group's: the cluster channel
//!   (broadcast-all, session lists), node presence and worker leases. They
//!   are small, and one place for them keeps the cluster view and the
//!   leases consistent (a lease split over shards could be held twice).
//! * **A shard down** affects only its groups: their publishes fail
//!   (counted in `groupcast_bus_publish_errors_total`, logged once per
//!   outage with the shard's address) and its members hear nothing until
//!   it is back, when the link resubscribes them. `status().connected` —
//!   what `/readyz` answers — follows shard 0 alone: every node shares the
//!   same shards, so failing readiness for a data shard would take every
//!   node out of the load balancer and every group down with it. The down
//!   shards are named in `status().last_error` and in
//!   `groupcast_redis_connection_up{role="shard N"}`. Shard 0 down: not
//!   ready (no cluster view, no leases, no broadcast-all), as on one Redis.

pub mod hash;
mod options;

pub use self::options::ShardedOptions;

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
use super::redis::{LinkStart, Presence, RedisLeases, RedisLink};
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

impl IntoBackend for ShardedOptions {
    /// Validates the options and starts one link per shard. Returns at
    /// once; the connections are made in the background.
    fn start(self: Box<Self>, context: BackendContext) -> Result<Arc<dyn Backend>, BackendError> {
        Ok(Arc::new(ShardedBackend::start(*self, context)?))
    }
}

/// The started sharded backend. See the module docs.
pub struct ShardedBackend {
    options: ShardedOptions,
    names: ChannelNames,
    /// One per shard, in the order of `options.urls`.
    links: Vec<RedisLink>,
    presence: Arc<Presence>,
    leases: Arc<RedisLeases>,
    cancel: CancellationToken,
    shut_down: AtomicBool,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl ShardedBackend {
    /// Validates `options` and starts the links (see [`IntoBackend::start`]).
    pub fn start(options: ShardedOptions, context: BackendContext) -> Result<Self, BackendError> {
        let names = options.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| BackendError::NoRuntime)?;
        let cancel = CancellationToken::new();
        let wake_presence = Arc::new(Notify::new());
        let mut tasks = Vec::new();
        let mut links = Vec::with_capacity(options.urls.len());
        for index in 0..options.urls.len() {
            let shard = options
                .shard(index)
                .ok_or_else(|| BackendError::InvalidOptions(format!("no shard {index}")))?;
            // Only shard 0's reconnects matter to presence, which lives there.
            let wake = if index == 0 {
                wake_presence.clone()
            } else {
                Arc::new(Notify::new())
            };
            let link = RedisLink::start(
                LinkStart {
                    options: &shard,
                    names: &names,
                    context: &context,
                    listen_cluster: index == 0,
                    wake_presence: wake,
                    cancel: &cancel,
                    span: tracing::info_span!("redis_shard", node = %context.node_id, shard = index),
                    mode: "sharded",
                    role: format!("shard {index}"),
                },
                &mut tasks,
            )?;
            links.push(link);
        }
        let control = &links[0];
        let presence = Arc::new(Presence::new(
            control.pool.clone(),
            context.clone(),
            &options.redis.presence_key,
            options.redis.presence_ttl,
        ));
        let leases = Arc::new(RedisLeases::new(
            control.pool.clone(),
            options.redis.lease_prefix.clone(),
        ));
        let span = tracing::info_span!("redis_shard", node = %context.node_id, shard = 0);
        tasks.push(
            runtime.spawn(
                presence
                    .clone()
                    .run(
                        options.redis.heartbeat_interval,
                        wake_presence,
                        cancel.clone(),
                    )
                    .instrument(span),
            ),
        );
        tracing::info!(
            shards = links.len(),
            addresses = ?links.iter().map(|l| l.target.address()).collect::<Vec<_>>(),
            "sharded Redis backend: groups by jump hash; cluster channel, presence and leases on shard 0"
        );
        Ok(ShardedBackend {
            options,
            names,
            links,
            presence,
            leases,
            cancel,
            shut_down: AtomicBool::new(false),
            tasks: Mutex::new(tasks),
        })
    }

    fn link_of(&self, group: &GroupName) -> &RedisLink {
        // shard_of is below the number of links, which is never zero.
        let index = self.options.shard_of(group).min(self.links.len() - 1);
        &self.links[index]
    }
}

impl Backend for ShardedBackend {
    fn is_clustered(&self) -> bool {
        true
    }

    fn publish(&self, channel: Channel, payload: Bytes) -> PublishAck {
        let link = match &channel {
            Channel::Group(group) => self.link_of(group),
            Channel::Cluster => &self.links[0],
        };
        link.publish(channel, payload)
    }

    fn publish_with_history(
        &self,
        group: &GroupName,
        limits: HistoryLimits,
        payload: Bytes,
    ) -> PublishAck {
        self.link_of(group)
            .publish_with_history(group, limits, payload)
    }

    fn history<'a>(
        &'a self,
        group: &'a GroupName,
        query: HistoryQuery,
    ) -> BoxFuture<'a, Result<HistoryPage, BackendError>> {
        Box::pin(self.link_of(group).history.read(group, query))
    }

    fn subscribe(&self, group: &GroupName) {
        self.link_of(group).subscribe(group);
    }

    fn unsubscribe(&self, group: &GroupName) {
        self.link_of(group).unsubscribe(group);
    }

    fn subscribed<'a>(&'a self, group: &'a GroupName) -> BoxFuture<'a, Result<(), BackendError>> {
        let channel = self.names.group(group);
        Box::pin(async move {
            self.link_of(group)
                .state
                .confirmed(&channel, self.options.redis.command_timeout)
                .await
        })
    }

    fn status(&self) -> BackendStatus {
        let mut subscriptions = Vec::new();
        let mut connections = Vec::with_capacity(self.links.len());
        let mut down = Vec::new();
        let mut connected = false;
        for (index, link) in self.links.iter().enumerate() {
            let snapshot = link.state.snapshot();
            if index == 0 {
                connected = snapshot.connected;
            }
            if !snapshot.connected {
                down.push(format!(
                    "shard {index} ({}) down: {}",
                    link.target.address(),
                    snapshot.last_error.as_deref().unwrap_or("connecting")
                ));
            }
            connections.push(link.connection_status(&format!("shard {index}"), &snapshot));
            subscriptions.extend(snapshot.subscribed);
        }
        subscriptions.sort();
        BackendStatus {
            kind: "sharded",
            connected,
            subscriptions,
            last_error: (!down.is_empty()).then(|| down.join("; ")),
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
            // 1. Everything published before shutdown leaves, every shard
            //    at once.
            let flushed =
                futures_util::future::join_all(self.links.iter().map(|l| l.flush(budget))).await;
            if flushed.contains(&false) {
                tracing::warn!("shutdown: queued publishes did not all leave in time");
            }
            // 2. Stop the tasks, the heartbeat among them.
            self.cancel.cancel();
            let tasks = std::mem::take(&mut *self.tasks.lock());
            let _ = timeout(budget, futures_util::future::join_all(tasks)).await;
            // 3. Leave the cluster view at once.
            if let Err(error) = self.presence.withdraw().await {
                tracing::warn!(%error, "shutdown: could not remove this node's presence");
            }
            for link in &self.links {
                link.pool.close();
                link.state.set_broken(&BackendError::Closed);
            }
            tracing::info!("sharded Redis backend stopped");
        })
    }
}

impl Drop for ShardedBackend {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

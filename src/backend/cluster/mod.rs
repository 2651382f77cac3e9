//! The Redis Cluster backend: sharded pub/sub (SSUBSCRIBE / SPUBLISH).
//!
//! Classic PUBLISH on a Redis Cluster is copied to every node, so it gets
//! slower with every primary added. Sharded pub/sub sends a message only
//! to the primary that owns its channel's slot (and its replicas), so the
//! cluster's pub/sub capacity grows with its primaries. Here:
//!
//! * **publishing, presence, leases** go through redis-rs's cluster
//!   connection (`RedisPool::cluster`), which routes by slot and follows
//!   MOVED/ASK; the publisher sends SPUBLISH, one pipeline per slot. The
//!   link around it — queue, publisher, history, the broker's methods — is
//!   the one every Redis backend uses (`redis/link.rs`), given this pool
//!   and this subscriber;
//! * **subscribing** is ours ([`subscriber`]): one RESP3 connection per
//!   primary the node needs, each channel subscribed alone on its slot's
//!   primary, our own wanted set reconciled against what the server
//!   pushes — it follows a reshard (the server's unprompted `sunsubscribe`)
//!   and a failover (the connection drops; the slot map names the promoted
//!   replica);
//! * **keys**: every script touches keys of one slot — presence's two keys
//!   share the hash tag `{groupcast:nodes}`, a group's presence keys the
//!   hash tag of its channel (`{group:<g>}`, its history's too), a lease
//!   is one key — so the single-Redis scripts run unchanged.
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

use redis::IntoConnectionInfo;

use self::subscriber::{ClusterSubscriber, ClusterSubscriberSettings};
use super::redis::connections::{Connections, PrimaryConnections};
use super::redis::pool::RedisPool;
use super::redis::{
    GroupPresence, LinkStart, Presence, RedisLeases, RedisLink, group_presence_on, prepare_tls,
    redact,
};
use crate::backend::error::BackendError;
use crate::backend::seam::{Backend, BackendContext, IntoBackend};
use crate::backend::tasks::Tasks;
use crate::backoff::Backoff;

impl IntoBackend for ClusterOptions {
    /// Validates the options and starts the backend's tasks. Returns at
    /// once; the cluster is discovered in the background.
    fn start(self: Box<Self>, context: BackendContext) -> Result<Backend, BackendError> {
        let names = self.validate()?;
        let mut tasks = Tasks::on_current_runtime(self.redis.command_timeout)?;
        let redis = &self.redis;
        prepare_tls(&self.seeds);
        let mut seeds = Vec::with_capacity(self.seeds.len());
        for url in &self.seeds {
            let info = url
                .as_str()
                .into_connection_info()
                .map_err(|e| BackendError::InvalidUrl(format!("{}: {e}", redact(url))))?;
            seeds.push(info);
        }
        let Some(seed) = seeds.first().cloned() else {
            return Err(BackendError::InvalidOptions("no seed node".into()));
        };
        let seed_addrs: Vec<String> = seeds.iter().map(|i| i.addr().to_string()).collect();
        let cluster_client = redis::cluster::ClusterClientBuilder::new(seeds)
            .connection_timeout(redis.command_timeout)
            .response_timeout(redis.command_timeout)
            .build()
            .map_err(|e| BackendError::InvalidOptions(e.to_string()))?;
        let config = redis::cluster::ClusterConfig::new()
            .set_connection_timeout(redis.command_timeout)
            .set_response_timeout(redis.command_timeout);
        let connection = cluster_client.get_pending_async_connection_with_config(config);
        let pool = RedisPool::cluster(connection, redis.command_timeout);

        let start = LinkStart {
            options: redis,
            names: &names,
            context: &context,
            span: tracing::info_span!("redis_cluster", node = %context.node_id),
            mode: "cluster",
            role: "subscriber".into(),
            label: seed_addrs.join(","),
        };
        let primaries = Arc::new(PrimaryConnections::default());
        let settings = ClusterSubscriberSettings {
            seed,
            seeds: seed_addrs,
            command_timeout: redis.command_timeout,
            health_interval: redis.health_interval,
            backoff: Backoff::new(redis.backoff_min, redis.backoff_max),
            client_name: format!("groupcast-sub:{}", context.node_id),
        };
        let subscriber = |listener| {
            ClusterSubscriber {
                settings,
                primaries: primaries.clone(),
                listener,
            }
            .run()
        };
        let connections = Connections::Primaries(primaries.clone());
        let link = RedisLink::start(&start, pool.clone(), connections, subscriber, &mut tasks);
        let presence = Presence::start(&link, &start, None, &mut tasks);
        let members =
            GroupPresence::start(group_presence_on(&start, vec![pool.clone()]), &mut tasks);
        let leases = RedisLeases::new(pool, redis.lease_prefix.clone());
        Ok(Backend::new(Arc::new(link), presence, Arc::new(leases), members).with_tasks(tasks))
    }
}

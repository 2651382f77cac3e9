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
//! * **Per shard** one link (`redis/link.rs`): a subscriber connection for
//!   the groups of that shard this node holds, an ordered publisher, a
//!   pool. A group always goes through the same link, so per-publisher
//!   order holds exactly as on one Redis. The backend's broker is the
//!   links together (`ShardedBroker`): it routes each call to the link of
//!   its group, and adds the links' statuses up.
//! * **Per-group presence** is on the group's shard, like its channel
//!   and its history (`redis/group_presence.rs`, routed by the same hash).
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
use std::time::Duration;

use bytes::Bytes;

use super::redis::{
    GroupPresence, GroupPresenceStart, LinkStart, Presence, RedisLeases, RedisLink, fixed_server,
    group_presence_on,
};
use crate::backend::broker::Broker;
use crate::backend::error::BackendError;
use crate::backend::future::BoxFuture;
use crate::backend::history::HistoryPage;
use crate::backend::history::HistoryQuery;
use crate::backend::inbound::Channel;
use crate::backend::publish::PublishAck;
use crate::backend::seam::{Backend, BackendContext, IntoBackend};
use crate::backend::status::BackendStatus;
use crate::backend::tasks::Tasks;
use crate::group::GroupName;
use crate::history::HistoryLimits;

impl IntoBackend for ShardedOptions {
    /// Validates the options and starts one link per shard. Returns at
    /// once; the connections are made in the background.
    fn start(self: Box<Self>, context: BackendContext) -> Result<Backend, BackendError> {
        let names = self.validate()?;
        let mut tasks = Tasks::on_current_runtime(self.redis.command_timeout)?;
        let mut shards = Vec::with_capacity(self.urls.len());
        for index in 0..self.urls.len() {
            let shard = self
                .shard(index)
                .ok_or_else(|| BackendError::InvalidOptions(format!("no shard {index}")))?;
            let target = fixed_server(&shard)?;
            shards.push((shard, target));
        }
        let starts: Vec<LinkStart<'_>> = shards
            .iter()
            .enumerate()
            .map(|(index, (shard, target))| LinkStart {
                options: shard,
                names: &names,
                context: &context,
                span: tracing::info_span!("redis_shard", node = %context.node_id, shard = index),
                mode: "sharded",
                role: format!("shard {index}"),
                label: target.address(),
            })
            .collect();
        let links: Vec<RedisLink> = starts
            .iter()
            .zip(&shards)
            .enumerate()
            .map(|(index, (start, (_, target)))| {
                RedisLink::on_server(start, target.clone(), index == 0, &mut tasks)
            })
            .collect();
        let (Some(control), Some(control_link)) = (starts.first(), links.first()) else {
            return Err(BackendError::InvalidOptions("no shard".into()));
        };
        let presence = Presence::start(control_link, control, None, &mut tasks);
        let router = self.clone();
        let members = GroupPresence::start(
            GroupPresenceStart {
                route: Arc::new(move |group| router.shard_of(group)),
                ..group_presence_on(control, links.iter().map(RedisLink::pool).collect())
            },
            &mut tasks,
        );
        let leases = RedisLeases::new(control_link.pool(), self.redis.lease_prefix.clone());
        tracing::info!(
            shards = links.len(),
            addresses = ?shards.iter().map(|(_, target)| target.address()).collect::<Vec<_>>(),
            "sharded Redis backend: groups by jump hash; cluster channel, presence and leases on shard 0"
        );
        let broker = ShardedBroker {
            options: *self,
            links,
        };
        Ok(Backend::new(Arc::new(broker), presence, Arc::new(leases), members).with_tasks(tasks))
    }
}

/// The sharded backend's broker: one link per shard, each group on its
/// shard's, the cluster channel on shard 0's. See the module docs.
struct ShardedBroker {
    options: ShardedOptions,
    /// One per shard, in the order of `options.urls`; never empty (the
    /// options were validated, and the backend starts only then).
    links: Vec<RedisLink>,
}

impl ShardedBroker {
    fn link_of(&self, group: &GroupName) -> &RedisLink {
        // shard_of is below the number of links, which is never zero.
        let index = self.options.shard_of(group).min(self.links.len() - 1);
        &self.links[index]
    }
}

impl Broker for ShardedBroker {
    fn publish(&self, channel: Channel, payload: Bytes) -> PublishAck {
        let link = match &channel {
            Channel::Group(group) => self.link_of(group),
            // Shard 0 carries what is not a group's; there is one.
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
        self.link_of(group).history(group, query)
    }

    fn subscribe(&self, group: &GroupName) {
        self.link_of(group).subscribe(group);
    }

    fn unsubscribe(&self, group: &GroupName) {
        self.link_of(group).unsubscribe(group);
    }

    fn subscribed<'a>(&'a self, group: &'a GroupName) -> BoxFuture<'a, Result<(), BackendError>> {
        self.link_of(group).subscribed(group)
    }

    /// The shards' statuses added up. `connected` is shard 0's alone (see
    /// the module docs); the shards that are down are named in
    /// `last_error`.
    fn status(&self) -> BackendStatus {
        let mut subscriptions = Vec::new();
        let mut connections = Vec::with_capacity(self.links.len());
        let mut down = Vec::new();
        let mut connected = false;
        for (index, shard) in self.links.iter().map(Broker::status).enumerate() {
            if index == 0 {
                connected = shard.connected;
            }
            if !shard.connected {
                let address = shard.connections.first().map_or("unknown", |c| &c.redis);
                down.push(format!(
                    "shard {index} ({address}) down: {}",
                    shard.last_error.as_deref().unwrap_or("connecting")
                ));
            }
            connections.extend(shard.connections);
            subscriptions.extend(shard.subscriptions);
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

    /// Every shard's queue at once.
    fn flush(&self, budget: Duration) -> BoxFuture<'_, bool> {
        let flushes = self.links.iter().map(move |link| link.flush(budget));
        Box::pin(async move {
            futures_util::future::join_all(flushes)
                .await
                .into_iter()
                .all(|flushed| flushed)
        })
    }

    fn close(&self) {
        for link in &self.links {
            link.close();
        }
    }
}
